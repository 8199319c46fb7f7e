"""What the commands share: option parsing, exit codes, and the bridge each command runs on."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from luabridge.accounts import AccountSettings, load_accounts, read_config_file
from luabridge.effects import EFFECTS
from luabridge.errors import LuabridgeError

if TYPE_CHECKING:
    from luabridge.action import Integration
    from luabridge.bridge import Bridge, Isolation
    from luabridge.pool import WorkerPool

__all__ = [
    "CHUNK_PREFIX",
    "EMULATOR_ACCOUNTS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "NO_ACCOUNT_HINT",
    "UsageProblem",
    "allow_option",
    "command_bridge",
    "config_path",
    "configured_bridge",
    "fail",
    "guard",
    "integration_of",
    "json_value",
    "limits_option",
    "policy_options",
    "read_source",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the script or the action failed
EXIT_USAGE = 2  # usage or configuration error (click uses 2 for its own usage errors too)

#: The accounts ``--emulator`` configures when no config file names any: one emulator team each.
EMULATOR_ACCOUNTS = ("default", "marketing", "transactional")

CHUNK_PREFIX = re.compile(r"^script\.lua:\d+: ")
NO_ACCOUNT_HINT = "set LOOPS_API_KEY or use --emulator"

F = TypeVar("F", bound=Callable[..., Any])


class UsageProblem(click.ClickException):
    """A usage or configuration error: printed as ``Error: ...`` on stderr, exit code 2."""

    exit_code = EXIT_USAGE


# -- option parsing ---------------------------------------------------------------------------


def read_source(value: str, what: str) -> str:
    """The text behind ``@file`` / ``@-`` (standard input)."""
    if value == "@-":
        return sys.stdin.read()
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {str(path)!r}: {exc.strerror or exc}; give an existing file after '@'",
            param_hint=what,
        ) from exc


def json_value(value: str | None, what: str) -> Any:
    """``--input`` / ``--data``: inline JSON, ``@file`` or ``@-``."""
    if value is None:
        return None
    text = read_source(value, what) if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"not valid JSON ({exc}); pass a JSON document such as "
            '\'{"email": "ada@example.com"}\', or @file.json to read one from a file',
            param_hint=what,
        ) from exc


def allow_option(values: Sequence[str]) -> set[str]:
    """``--allow write,destructive`` (repeatable) as a set of effect tags."""
    effects = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(effects - set(EFFECTS))
    if unknown:
        from luabridge.dispatch import suggest

        hint = "".join(suggest(u, EFFECTS) for u in unknown[:1])
        raise click.BadParameter(
            f"unknown effect {', '.join(map(repr, unknown))}{hint}; "
            f"use one or more of {', '.join(EFFECTS)}, e.g. --allow write,destructive",
            param_hint="'--allow'",
        )
    return effects | {"read"}


def limits_option(
    timeout: float | None, memory: int | None, max_calls: int | None
) -> dict[str, Any]:
    given = {"timeout": timeout, "memory": None if memory is None else memory * 1024 * 1024}
    given["calls"] = max_calls
    return {k: v for k, v in given.items() if v is not None}


def policy_options(fn: F) -> F:
    """The options ``run`` and ``call`` share: policy, limits, accounts, isolation."""
    options = [
        click.option(
            "--allow",
            multiple=True,
            metavar="EFFECTS",
            help="Effects the run may perform besides read: write, destructive "
            "(comma-separated or repeated). Default: read only.",
        ),
        click.option(
            "--dry-run", is_flag=True, help="Perform reads; validate and record writes, send none."
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            metavar="S",
            help="Wall-clock limit in seconds (default 5).",
        ),
        click.option(
            "--memory",
            type=click.IntRange(min=1),
            metavar="MB",
            help="Lua heap limit in MiB (default 64).",
        ),
        click.option(
            "--max-calls",
            type=click.IntRange(min=1),
            metavar="N",
            help="Most action calls the run may make (default 100).",
        ),
        click.option(
            "--config",
            type=click.Path(dir_okay=False),
            metavar="FILE",
            help="Config file naming accounts (default: ./luabridge.toml when it exists).",
        ),
        click.option(
            "--emulator",
            is_flag=True,
            help="Start a local, seeded Loops emulator and point every account at it.",
        ),
        click.option(
            "--isolation",
            type=click.Choice(["process", "inprocess"]),
            default="process",
            show_default=True,
            help="Run in a killable worker process, or in this process (faster, and cannot "
            "stop a script stuck inside one C call).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# -- bridges ----------------------------------------------------------------------------------


def config_path(config: str | None) -> str | None:
    if config is not None:
        return config
    return "luabridge.toml" if Path("luabridge.toml").is_file() else None


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn configuration errors into exit code 2 with their message."""
    try:
        yield
    except LuabridgeError as exc:
        raise UsageProblem(str(exc)) from exc


def configured_bridge(config: str | None, isolation: str, pool: WorkerPool | None = None) -> Bridge:
    from luabridge.bridge import Bridge

    with guard():
        return Bridge.from_config(
            config_path(config),
            isolation=cast("Isolation", isolation),
            workers=1,
            pool=pool,
        )


def _emulated_accounts(
    config: Mapping[str, Any], path: str | None
) -> tuple[dict[str, AccountSettings], str | None]:
    """The Loops accounts of ``--emulator``: those the config file names (checked as usual),
    else ``default``, ``marketing`` and ``transactional``; and the default account's name."""
    named, default = load_accounts(
        env_prefix="LOOPS",
        integration="loops",
        default_base_url="",
        environ={},
        config=config,
        config_path=path or "luabridge.toml",
    )
    if named:
        return named, default
    blank = {
        name: AccountSettings(name=name, api_key=None, base_url="") for name in EMULATOR_ACCOUNTS
    }
    return blank, "default"


@contextlib.contextmanager
def _emulator_bridge(
    config: str | None, isolation: str, pool: WorkerPool | None = None
) -> Iterator[Bridge]:
    """A bridge whose Loops accounts are separate, seeded teams of a local emulator.

    The emulator runs in this process on a free loopback port; the contact directory goes to
    a temporary file, so an emulator run never touches the user's real one.
    """
    from integrations.loops.actions import open_account
    from integrations.loops.emulator import EmulatorServer, EmulatorStartError
    from luabridge.bridge import Bridge, discover_integrations

    path = config_path(config)
    with guard():
        config_data = read_config_file(path) if path else {}
        named, default = _emulated_accounts(config_data, path)
    # Each account is its own team with a fresh key, so accounts stay as isolated as real ones.
    keys = {name: f"emu_{name}_{secrets.token_hex(12)}" for name in named}
    try:
        server = EmulatorServer(keys=keys, seed=True).start()
    except (EmulatorStartError, ValueError) as exc:
        raise UsageProblem(f"the Loops emulator could not start: {exc}") from exc
    try:
        with tempfile.TemporaryDirectory(prefix="luabridge-emulator-") as tmp:
            directory = Path(tmp) / "loops-contacts.sqlite3"
            integrations: list[Integration] = []
            for integ in discover_integrations():
                if integ.name == "loops":
                    opener = functools.partial(open_account, directory_path=directory)
                    integ = dataclasses.replace(integ, open_client=opener)
                integrations.append(integ)
            accounts = {
                name: dataclasses.replace(
                    settings,
                    api_key=keys[name],
                    base_url=server.base_url,
                    source="--emulator",
                    key_source="--emulator (generated)",
                )
                for name, settings in named.items()
            }
            limits = config_data.get("limits")
            with guard():
                bridge = Bridge(
                    integrations=integrations,
                    accounts={"loops": accounts},
                    default_accounts={"loops": default},
                    limits=dict(limits) if isinstance(limits, Mapping) else None,
                    isolation=cast("Isolation", isolation),
                    workers=1,
                    pool=pool,
                )
            with bridge:
                yield bridge
    finally:
        server.stop()


@contextlib.contextmanager
def command_bridge(config: str | None, isolation: str, emulator: bool) -> Iterator[Bridge]:
    """The command's bridge. With process isolation its worker process is started first, before
    the bridge's modules and the integrations are imported, so that it is ready when the run
    starts; the bridge takes the pool over (and this closes it if the bridge never came)."""
    pool = None
    if isolation == "process":
        from luabridge.pool import WorkerPool

        pool = WorkerPool(size=1)
    try:
        if emulator:
            with _emulator_bridge(config, isolation, pool) as bridge:
                yield bridge
        else:
            with configured_bridge(config, isolation, pool) as bridge:
                yield bridge
    finally:
        if pool is not None:
            pool.close()


def fail(message: str) -> NoReturn:
    raise UsageProblem(message)


def integration_of(bridge: Bridge, name: str) -> Integration:
    from luabridge.dispatch import suggest

    integ = bridge.integrations.get(name)
    if integ is None:
        known = ", ".join(bridge.integrations) or "none"
        fail(f"unknown integration '{name}'{suggest(name, bridge.integrations)}; known: {known}")
    return integ
