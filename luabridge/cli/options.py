"""What the commands share: option parsing, exit codes, and the bridge each command runs on."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from luabridge.errors import LuabridgeError

if TYPE_CHECKING:
    from luabridge.bridge import Bridge, Isolation
    from luabridge.pool import WorkerPool

__all__ = [
    "CHUNK_PREFIX",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageProblem",
    "account_option",
    "allow_option",
    "command_bridge",
    "fail",
    "guard",
    "json_value",
    "limits_option",
    "policy_options",
    "read_script",
    "read_source",
    "server_options",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the script or the action failed
EXIT_USAGE = 2  # usage or configuration error (click uses 2 for its own usage errors too)

CHUNK_PREFIX = re.compile(r"^script\.lua:\d+: ")

F = TypeVar("F", bound=Callable[..., Any])


class UsageProblem(click.ClickException):
    """A usage or configuration error: printed as ``Error: ...`` on stderr, exit code 2."""

    exit_code = EXIT_USAGE


# -- option parsing ---------------------------------------------------------------------------


def _stdin_bytes(what: str) -> bytes:
    """All of standard input, or a usage error when there is none to read (``<&-``)."""
    stream = sys.stdin
    if stream is None:
        raise UsageProblem(
            f"{what}: standard input is closed; pipe the text in "
            "(echo 'return 1' | luabridge run -), or name a file instead of -"
        )
    try:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            data: bytes = buffer.read()
            return data
        return str(stream.read()).encode("utf-8", "surrogateescape")
    except (OSError, ValueError) as exc:
        raise UsageProblem(f"{what}: cannot read standard input ({exc})") from exc


def _utf8(data: bytes, what: str) -> str:
    """``data`` as text, or a usage error naming the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageProblem(
            f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, "
            f"line {line}); save it as UTF-8"
        ) from exc


def read_script(script: str) -> str:
    """The script behind ``FILE`` or ``-`` (standard input), as text."""
    if script == "-":
        return _utf8(_stdin_bytes("the script"), "the script read from standard input")
    try:
        data = Path(script).read_bytes()
    except OSError as exc:
        raise UsageProblem(f"cannot read script {script!r}: {exc.strerror or exc}") from exc
    return _utf8(data, f"script {script!r}")


def read_source(value: str, what: str) -> str:
    """The text behind ``@file`` / ``@-`` (standard input)."""
    if value == "@-":
        return _utf8(_stdin_bytes(what), f"{what} (standard input)")
    path = Path(value[1:])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {str(path)!r}: {exc.strerror or exc}; give an existing file after '@'",
            param_hint=what,
        ) from exc
    return _utf8(data, f"{what} file {str(path)!r}")


def json_value(value: str | None, what: str) -> Any:
    """``--input`` / ``--data``: inline JSON, ``@file`` or ``@-``."""
    if value is None:
        return None
    text = read_source(value, what) if value.startswith("@") else value
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise click.BadParameter(
            "is nested too deeply to read (about a thousand levels); a script's input may "
            "nest at most 64 levels",
            param_hint=what,
        ) from exc
    except ValueError as exc:
        raise click.BadParameter(
            f"not valid JSON ({exc}); pass a JSON document such as "
            '\'{"email": "ada@example.com"}\', or @file.json to read one from a file',
            param_hint=what,
        ) from exc


def allow_option(values: Sequence[str]) -> frozenset[str]:
    """``--allow write,destructive`` (repeatable) as a set of effect tags."""
    from luabridge.effects import parse_allow

    try:
        return parse_allow(values)
    except LuabridgeError as exc:
        raise click.BadParameter(str(exc).removeprefix("allow: "), param_hint="'--allow'") from exc


def limits_option(
    timeout: float | None, memory: int | None, max_calls: int | None
) -> dict[str, Any]:
    """The limits given as flags, each checked against its range (a usage error naming the
    flag, in the flag's own unit, when it is outside)."""
    from luabridge.limits import DEFAULT_LIMITS, LIMIT_RANGES, describe_range

    given = {"timeout": timeout, "memory": None if memory is None else memory * 1024 * 1024}
    given["calls"] = max_calls
    flags = {"timeout": "--timeout", "memory": "--memory", "calls": "--max-calls"}
    for name, value in given.items():
        if value is None:
            continue
        try:
            DEFAULT_LIMITS.merged({name: value})
        except LuabridgeError as exc:
            if name == "memory":
                _kind, low, high = LIMIT_RANGES["memory"]
                text = f"must be a whole number of MiB from {int(low) >> 20} to {int(high) >> 20}"
                text += f", got {memory}"
            else:
                text = f"must be {describe_range(name)}, got {value}"
            raise click.BadParameter(text, param_hint=f"'{flags[name]}'") from exc
    return {k: v for k, v in given.items() if v is not None}


def account_option(values: Sequence[str]) -> dict[str, list[str]] | None:
    """``--account INTEGRATION=NAME[,NAME]`` (repeatable) as a grant; None when not given."""
    if not values:
        return None
    granted: dict[str, list[str]] = {}
    for value in values:
        integration, sep, names = value.partition("=")
        accounts = [n.strip() for n in names.split(",") if n.strip()]
        if not sep or not integration.strip() or not accounts:
            raise click.BadParameter(
                f"expected INTEGRATION=ACCOUNT[,ACCOUNT], got {value!r}; for example "
                "--account <integration>=default",
                param_hint="'--account'",
            )
        granted.setdefault(integration.strip(), []).extend(accounts)
    return granted


def _policy_option_list() -> list[tuple[str, Callable[[F], F]]]:
    return [
        (
            "allow",
            click.option(
                "--allow",
                multiple=True,
                metavar="EFFECTS",
                help="Effects the run may perform besides read: write, destructive "
                "(comma-separated or repeated). Default: read only.",
            ),
        ),
        (
            "dry-run",
            click.option(
                "--dry-run",
                is_flag=True,
                help="Perform reads; validate and record writes, send none.",
            ),
        ),
        (
            "timeout",
            click.option(
                "--timeout",
                # Ranges are checked by limits_option, in the same words as the config's.
                type=float,
                metavar="S",
                help="Wall-clock limit in seconds (default 5).",
            ),
        ),
        (
            "memory",
            click.option(
                "--memory",
                type=int,
                metavar="MB",
                help="Lua heap limit in MiB (default 64).",
            ),
        ),
        (
            "max-calls",
            click.option(
                "--max-calls",
                type=int,
                metavar="N",
                help="Most action calls the run may make (default 100).",
            ),
        ),
        (
            "config",
            click.option(
                "--config",
                type=click.Path(dir_okay=False),
                metavar="FILE",
                help="Config file naming accounts (default: ./luabridge.toml when it exists).",
            ),
        ),
        (
            "emulator",
            click.option(
                "--emulator",
                is_flag=True,
                help="Start a local, seeded emulator of each service that has one and point its "
                "accounts at it (no key or network needed).",
            ),
        ),
        (
            "isolation",
            click.option(
                "--isolation",
                type=click.Choice(["process", "inprocess"]),
                default="process",
                show_default=True,
                help="Run in a killable worker process, or in this process (faster, and cannot "
                "stop a script stuck inside one C call).",
            ),
        ),
    ]


def policy_options(fn: F) -> F:
    """The options ``run`` and ``call`` share: policy, limits, accounts, isolation."""
    for _, option in reversed(_policy_option_list()):
        fn = option(fn)
    return fn


def server_options(fn: F) -> F:
    """The operator's options of ``mcp`` and ``serve``: those of ``run`` (without
    ``--dry-run``, which each tool call chooses) and ``--account``."""
    account = click.option(
        "--account",
        "accounts",
        multiple=True,
        metavar="INTEGRATION=NAME[,NAME]",
        help="Grant only these accounts to scripts (repeatable). Default: every configured one.",
    )
    options = [o for name, o in _policy_option_list() if name != "dry-run"]
    for option in reversed([options[0], account, *options[1:]]):
        fn = option(fn)
    return fn


# -- bridges ----------------------------------------------------------------------------------


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn configuration errors into exit code 2 with their message."""
    try:
        yield
    except LuabridgeError as exc:
        raise UsageProblem(str(exc)) from exc


@contextlib.contextmanager
def command_bridge(
    config: str | None = None,
    *,
    isolation: str = "inprocess",
    emulator: bool = False,
    limits: Mapping[str, Any] | None = None,
    workers: int = 1,
) -> Iterator[Bridge]:
    """The command's bridge, from ``luabridge.config`` like every other bridge.

    With ``emulator`` every integration that has an emulator runs against a fresh, seeded one
    (see ``luabridge.config.emulated_settings``). With process isolation the worker process is
    started first, before the bridge's modules and the integrations are imported, so that it is
    ready when the run starts (by the console script, before click is even imported: see
    ``luabridge.cli.prestart``); the bridge takes the pool over (and this closes it if the bridge
    never came).
    """
    pool: WorkerPool | None = None
    if isolation == "process":
        from luabridge.cli import prestart

        pool = prestart.take(workers)
        if pool is None:
            from luabridge.pool import WorkerPool

            pool = WorkerPool(size=workers)
    try:
        from luabridge.bridge import Bridge
        from luabridge.config import emulated_settings, load_settings

        with contextlib.ExitStack() as stack:
            with guard():
                settings = load_settings(config, limits=limits, emulator=emulator)
                if emulator:
                    settings = stack.enter_context(emulated_settings(settings))
                bridge = Bridge.from_settings(
                    settings,
                    isolation=cast("Isolation", isolation),
                    workers=workers,
                    pool=pool,
                )
            pool = None  # the bridge owns it now
            with bridge:
                yield bridge
    finally:
        if pool is not None:
            pool.close()


def fail(message: str) -> NoReturn:
    raise UsageProblem(message)
