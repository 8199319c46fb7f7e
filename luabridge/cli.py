"""The ``luabridge`` command line: run scripts, read the docs, call one action, serve the emulator.

It is a thin layer over :class:`luabridge.Bridge` (runs, docs, schemas, accounts) and the Loops
emulator (``integrations.loops.emulator``). Exit codes: 0 success, 1 the script or action
failed, 2 usage or configuration error. ``--json`` prints exactly one JSON document on standard
output; everything meant for people (errors, hints) goes to standard error.
"""

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

from luabridge import __version__
from luabridge.accounts import AccountSettings, load_accounts, read_config_file
from luabridge.effects import EFFECTS
from luabridge.errors import LuabridgeError

# The bridge, the action metadata and the docs import pydantic and, through the bridge, the
# integration packs (about 0.1 s in all). The commands import them where they need them, so
# that `run` and `call` can start their worker process first and have it ready meanwhile.
if TYPE_CHECKING:
    from luabridge.action import Integration
    from luabridge.bridge import Bridge, Isolation, RunResult
    from luabridge.dispatch import CallRecord
    from luabridge.worker import WorkerPool

__all__ = [
    "EMULATOR_ACCOUNTS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageProblem",
    "cli",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the script or the action failed
EXIT_USAGE = 2  # usage or configuration error (click uses 2 for its own usage errors too)

#: The accounts ``--emulator`` configures when no config file names any: one emulator team each.
EMULATOR_ACCOUNTS = ("default", "marketing", "transactional")

_CHUNK_PREFIX = re.compile(r"^script\.lua:\d+: ")
_NO_ACCOUNT_HINT = "set LOOPS_API_KEY or use --emulator"

F = TypeVar("F", bound=Callable[..., Any])


class UsageProblem(click.ClickException):
    """A usage or configuration error: printed as ``Error: ...`` on stderr, exit code 2."""

    exit_code = EXIT_USAGE


# -- option parsing ---------------------------------------------------------------------------


def _read_source(value: str, what: str) -> str:
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


def _json_value(value: str | None, what: str) -> Any:
    """``--input`` / ``--data``: inline JSON, ``@file`` or ``@-``."""
    if value is None:
        return None
    text = _read_source(value, what) if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"not valid JSON ({exc}); pass a JSON document such as "
            '\'{"email": "ada@example.com"}\', or @file.json to read one from a file',
            param_hint=what,
        ) from exc


def _allow(values: Sequence[str]) -> set[str]:
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


def _limits(timeout: float | None, memory: int | None, max_calls: int | None) -> dict[str, Any]:
    given = {"timeout": timeout, "memory": None if memory is None else memory * 1024 * 1024}
    given["calls"] = max_calls
    return {k: v for k, v in given.items() if v is not None}


def _policy_options(fn: F) -> F:
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


def _config_path(config: str | None) -> str | None:
    if config is not None:
        return config
    return "luabridge.toml" if Path("luabridge.toml").is_file() else None


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    """Turn configuration errors into exit code 2 with their message."""
    try:
        yield
    except LuabridgeError as exc:
        raise UsageProblem(str(exc)) from exc


def _configured_bridge(
    config: str | None, isolation: str, pool: WorkerPool | None = None
) -> Bridge:
    from luabridge.bridge import Bridge

    with _guard():
        return Bridge.from_config(
            _config_path(config),
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

    path = _config_path(config)
    with _guard():
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
            with _guard():
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
def _bridge(config: str | None, isolation: str, emulator: bool) -> Iterator[Bridge]:
    """The command's bridge. With process isolation its worker process is started first, before
    the bridge's modules and the integrations are imported, so that it is ready when the run
    starts; the bridge takes the pool over (and this closes it if the bridge never came)."""
    pool = None
    if isolation == "process":
        from luabridge.worker import WorkerPool

        pool = WorkerPool(size=1)
    try:
        if emulator:
            with _emulator_bridge(config, isolation, pool) as bridge:
                yield bridge
        else:
            with _configured_bridge(config, isolation, pool) as bridge:
                yield bridge
    finally:
        if pool is not None:
            pool.close()


# -- output -----------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _lua_path(record: CallRecord) -> str:
    account = "" if record.account == "default" else f"{record.account}."
    return f"{record.integration}.{account}{record.action}"


def _call_line(record: CallRecord, width: int) -> str:
    name = _lua_path(record)
    if record.outcome == "dry_run":
        request = record.request or {}
        body = request.get("json")
        shown = "" if body is None else " " + json.dumps(body, ensure_ascii=False)
        target = f"{request.get('method', '?')} {request.get('url', '?')}"
        if request.get("params"):
            target += " " + json.dumps(request["params"], ensure_ascii=False)
        return f"  DRY RUN  {name}  {target}{shown}"
    tag = {"read": "read", "write": "WRITE", "destructive": "DELETE"}.get(record.effect, "?")
    outcome = {"ok": "ok", "failed": "FAILED"}.get(record.outcome, record.outcome.upper())
    line = f"  {tag:<7}  {name:<{width}}  {outcome:<7} {record.duration_ms:>5.0f} ms"
    if record.outcome != "ok":
        detail = " ".join(str(p) for p in (record.code, record.status) if p is not None)
        line += f"  {detail + ': ' if detail else ''}{record.error or ''}".rstrip()
    return line


def _summary(calls: Sequence[CallRecord]) -> list[str]:
    """The calls of a run, one line each, writes and dry-run plans easy to spot."""
    if not calls:
        return []
    sent = sum(1 for c in calls if c.effect != "read" and c.outcome in ("ok", "failed"))
    planned = sum(1 for c in calls if c.outcome == "dry_run")
    notes = []
    if sent:
        notes.append(f"{sent} write{'s' if sent != 1 else ''} sent")
    if planned:
        notes.append(f"{planned} planned and not sent (dry run)")
    head = f"{len(calls)} call{'s' if len(calls) != 1 else ''}"
    head = ", ".join([head, *notes]) + ":"
    width = max(len(_lua_path(c)) for c in calls)
    return ["", head, *(_call_line(c, width) for c in calls)]


def _report_error(result: RunResult, source: str | None, label: str) -> None:
    """``TypeName: message`` on stderr, then the script line it points at."""
    error = result.error
    if error is None:
        return
    click.echo(f"{error.type}: {error.message}", err=True)
    if error.line is not None and source is not None:
        lines = source.splitlines()
        if 0 < error.line <= len(lines):
            click.echo(f"  {label}:{error.line}: {lines[error.line - 1].strip()}", err=True)
    if "no account is available" in error.message:
        click.echo(f"hint: {_NO_ACCOUNT_HINT}", err=True)


def _fail(message: str) -> NoReturn:
    raise UsageProblem(message)


# -- commands ---------------------------------------------------------------------------------


def _usage_envelope(command: str | None, message: str) -> dict[str, Any]:
    """What ``--json`` prints for a usage error, shaped like the command's normal output."""
    error = {"type": "UsageError", "message": message}
    if command == "call":
        return {"data": None, "meta": {"executionId": None}, "error": error}
    if command == "run":
        return {
            "ok": False,
            "result": None,
            "error": {**error, "line": None},
            "output": "",
            "calls": [],
            "meta": {"executionId": None, "durationMs": None},
        }
    return {"ok": False, "error": error}


class _Group(click.Group):
    """The command group, which also reports usage errors as JSON where JSON was asked for.

    Under ``--json`` (and for ``call``, whose output is always JSON) a usage error is also a
    JSON document on standard output, with ``error.type`` ``UsageError``: a program that asked
    for JSON always gets exactly one document to parse, and the human message still goes to
    standard error with exit code 2.
    """

    def invoke(self, ctx: click.Context) -> Any:
        raw = list(ctx.meta.get("luabridge.args", ()))
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            command = next((a for a in raw if not a.startswith("-")), None)
            if exc.exit_code == EXIT_USAGE and ("--json" in raw or command == "call"):
                click.echo(_dumps(_usage_envelope(command, exc.format_message())))
            raise

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        raw = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["luabridge.args"] = raw
        return ctx


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="luabridge")
def cli() -> None:
    """Run sandboxed Lua scripts against SaaS APIs (Loops), read their docs, call actions.

    Exit codes: 0 success, 1 the script or action failed, 2 usage or configuration error.
    """


@cli.command()
@click.argument("script", metavar="FILE|-")
@click.option(
    "--input",
    "input_",
    metavar="JSON|@file",
    help="The script's input (its first argument, `local input = ...`).",
)
@_policy_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON envelope and nothing else.")
def run(
    script: str,
    input_: str | None,
    allow: tuple[str, ...],
    dry_run: bool,
    timeout: float | None,
    memory: int | None,
    max_calls: int | None,
    config: str | None,
    emulator: bool,
    isolation: str,
    as_json: bool,
) -> None:
    """Run a Lua script (FILE, or - for standard input).

    \b
    Examples:
      luabridge run docs/examples/onboarding.lua --emulator --allow write
      echo 'return app.help()' | luabridge run -
    """
    if script == "-":
        source = sys.stdin.read()
        label = "<stdin>"
    else:
        try:
            source = Path(script).read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot read script {script!r}: {exc.strerror or exc}")
        label = script
    if script == "-" and input_ == "@-":
        _fail("--input @- and a script read from - cannot both use standard input")
    value = _json_value(input_, "'--input'")
    effects = _allow(allow)
    with _bridge(config, isolation, emulator) as bridge:
        with _guard():
            result = bridge.run(
                source,
                value,
                allow=effects,
                dry_run=dry_run,
                limits=_limits(timeout, memory, max_calls),
            )
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        shown = result.output
        if result.output:
            click.echo(result.output, nl=not result.output.endswith("\n"))
        if result.ok and result.value is not None:
            shown = _dumps(result.value)
            click.echo(shown)
        summary = _summary(result.calls)
        for line in summary[0 if shown else 1 :]:
            click.echo(line)
    _report_error(result, source, label)
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)


def _integration_of(bridge: Bridge, name: str) -> Integration:
    from luabridge.dispatch import suggest

    integ = bridge.integrations.get(name)
    if integ is None:
        known = ", ".join(bridge.integrations) or "none"
        _fail(f"unknown integration '{name}'{suggest(name, bridge.integrations)}; known: {known}")
    return integ


@cli.command()
@click.argument("topic", required=False, metavar="[INTEGRATION[.ACTION]]")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "json", "luals"]),
    default="markdown",
    show_default=True,
    help="Markdown reference, JSON schemas, or LuaLS type stubs.",
)
@click.option("--config", type=click.Path(dir_okay=False), metavar="FILE", help="Config file.")
def docs(topic: str | None, fmt: str, config: str | None) -> None:
    """The Lua API reference (the same text as app.help inside a script).

    \b
    Examples:
      luabridge docs                      the integrations and their actions
      luabridge docs loops                the whole Loops reference
      luabridge docs loops.send_event     one action
      luabridge docs loops --format luals LuaLS stubs for editors
    """
    from luabridge.docs import help_text, render_luals, render_schema_bundle

    with _configured_bridge(config, "inprocess") as bridge:
        accounts: dict[str, Sequence[str]] = {n: sorted(a) for n, a in bridge.accounts.items()}
        if topic is None:
            integs = list(bridge.integrations.values())
            if fmt == "markdown":
                text = help_text(bridge.integrations, accounts, None)
            elif fmt == "json":
                text = _dumps({i.name: render_schema_bundle(i) for i in integs}) + "\n"
            else:
                text = render_luals(integs, accounts)
        else:
            name, _, action = topic.partition(".")
            _integration_of(bridge, name)
            with _guard():
                text = bridge.docs(name, action or None, format=fmt)
    click.echo(text, nl=not text.endswith("\n"))


@cli.command()
@click.argument("integration", metavar="INTEGRATION")
@click.option("--action", metavar="NAME", help="The action whose schemas to print.")
def schema(integration: str, action: str | None) -> None:
    """Input and output JSON schema of one action: luabridge schema loops --action NAME."""
    with _configured_bridge(None, "inprocess") as bridge:
        integ = _integration_of(bridge, integration)
        if not action:
            _fail(
                f"missing --action NAME; actions of {integration}: {', '.join(integ.action_names)}"
            )
        with _guard():
            data = bridge.schema(integration, action)
    click.echo(_dumps(data))


@cli.command()
@click.argument("integration", required=False, metavar="[INTEGRATION]")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def actions(integration: str | None, as_json: bool) -> None:
    """Every action: name, effect tag and one-line summary."""
    with _configured_bridge(None, "inprocess") as bridge:
        if integration is not None:
            _integration_of(bridge, integration)
        rows = bridge.actions(integration)
    if as_json:
        click.echo(_dumps(rows))
        return
    width = max((len(r["integration"]) + len(r["action"]) + 1 for r in rows), default=0)
    for row in rows:
        name = f"{row['integration']}.{row['action']}"
        click.echo(f"{name:<{width}}  {row['effect']:<11}  {row['summary']}")


@cli.command()
@click.option("--config", type=click.Path(dir_okay=False), metavar="FILE", help="Config file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def accounts(config: str | None, as_json: bool) -> None:
    """Configured accounts and whether each has a key (the key itself is never shown)."""
    with _configured_bridge(config, "inprocess") as bridge:
        rows = bridge.account_info()
    if as_json:
        click.echo(_dumps(rows))
        return
    if not rows:
        click.echo(
            "No accounts are configured. Set LOOPS_API_KEY for the default account and "
            "LOOPS_API_KEY_<NAME> for named ones, or name them in luabridge.toml."
        )
        return
    header = ("INTEGRATION", "ACCOUNT", "DEFAULT", "KEY", "KEY FROM", "BASE URL")
    table = [header] + [
        (
            r["integration"],
            r["account"],
            "yes" if r["default"] else "",
            "present" if r["has_key"] else "MISSING",
            r["key_source"] or "-",
            r["base_url"],
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    missing = [r for r in rows if not r["has_key"]]
    for r in missing:
        click.echo(
            f"{r['integration']} account '{r['account']}' has no key; set "
            f"{r['key_source'] or 'its api_key_env variable'}",
            err=True,
        )


_CALL_SOURCE = """\
local call = ...
local namespace = app.integrations[call.integration]
if call.account then namespace = namespace[call.account] end
return namespace[call.action](call.params)
"""


def _check_call_account(bridge: Bridge, integ: Integration, account: str | None) -> None:
    from luabridge.dispatch import suggest

    configured = bridge.accounts[integ.name]
    if not configured:
        _fail(f"no {integ.title} account is configured; {_NO_ACCOUNT_HINT}")
    name = account or bridge.default_accounts.get(integ.name)
    if name is None:
        _fail(
            f"no default {integ.title} account; pass --account NAME "
            f"(configured: {', '.join(sorted(configured))})"
        )
    settings = configured.get(name)
    if settings is None:
        _fail(
            f"{integ.name} account '{name}' is not configured{suggest(name, configured)}; "
            f"configured: {', '.join(sorted(configured))}"
        )
    if not settings.has_key:
        suffix = "" if name == "default" else f"_{name.upper()}"
        where = settings.key_source or f"{integ.env_prefix}_API_KEY{suffix}"
        _fail(f"{integ.name} account '{name}' has no API key; set {where}")


@cli.command()
@click.argument("integration", metavar="INTEGRATION")
@click.option("--action", required=True, metavar="NAME", help="The action to call.")
@click.option(
    "--data", metavar="JSON|@file", help="The action's parameters as a JSON object (default {})."
)
@click.option("--account", metavar="A", help="The account to use (default: the default account).")
@_policy_options
def call(
    integration: str,
    action: str,
    data: str | None,
    account: str | None,
    allow: tuple[str, ...],
    dry_run: bool,
    timeout: float | None,
    memory: int | None,
    max_calls: int | None,
    config: str | None,
    emulator: bool,
    isolation: str,
) -> None:
    """Call one action and print {"data": <result>, "meta": {"executionId": ...}}.

    Exit code 1 when the result has success = false.

    \b
    Example:
      luabridge call loops --action find_contact --data '{"email": "ada@example.com"}'
    """
    params = _json_value(data, "'--data'")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise click.BadParameter(
            f"must be a JSON object of parameters, got {type(params).__name__}; "
            'e.g. \'{"email": "ada@example.com"}\'',
            param_hint="'--data'",
        )
    effects = _allow(allow)
    with _bridge(config, isolation, emulator) as bridge:
        from luabridge.dispatch import suggest

        integ = _integration_of(bridge, integration)
        if integ.action(action) is None:
            _fail(
                f"unknown action '{integration}.{action}'{suggest(action, integ.action_names)}; "
                f"actions: {', '.join(integ.action_names)} (see luabridge actions {integration})"
            )
        _check_call_account(bridge, integ, account)
        spec = {"integration": integration, "account": account, "action": action}
        with _guard():
            result = bridge.run(
                _CALL_SOURCE,
                {**spec, "params": params},
                allow=effects,
                dry_run=dry_run,
                limits=_limits(timeout, memory, max_calls),
            )
    meta: dict[str, Any] = {
        "executionId": result.execution_id,
        "durationMs": result.usage.get("wall_ms"),
    }
    planned = [c.request for c in result.calls if c.outcome == "dry_run"]
    if planned:
        meta["dryRun"] = True
        meta["request"] = planned[0]
    envelope: dict[str, Any] = {"data": result.value if result.ok else None, "meta": meta}
    if result.error is not None:
        message = _CHUNK_PREFIX.sub("", result.error.message)
        envelope["error"] = {"type": result.error.type, "message": message}
        click.echo(_dumps(envelope))
        click.echo(f"{result.error.type}: {message}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(_dumps(envelope))
    value = result.value
    if isinstance(value, dict) and value.get("success") is False:
        detail = " ".join(str(value[k]) for k in ("code", "status") if value.get(k) is not None)
        click.echo(f"{integration}.{action} failed: {detail}: {value.get('error')}", err=True)
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8787,
    show_default=True,
    help="TCP port (0 picks a free one).",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="KEY",
    help="An API key; each one is its own team. Without any: the demo teams default, "
    "marketing and transactional.",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Requests per second per team; 0 turns the limit off.",
)
@click.option("--no-seed", is_flag=True, help="Start with empty teams instead of the demo data.")
def emulator(host: str, port: int, keys: tuple[str, ...], rate_limit: int, no_seed: bool) -> None:
    """Serve the local Loops API emulator until interrupted (Ctrl+C).

    The first line printed is the base URL, then one line per API key.

    \b
    Example:
      luabridge emulator --port 8787
      LOOPS_BASE_URL=http://127.0.0.1:8787/api/v1 LOOPS_API_KEY=demo_key_default \\
        luabridge run script.lua
    """
    from integrations.loops.emulator import EmulatorStartError, serve_forever

    try:
        serve_forever(host, port, list(keys) or None, rate_limit, not no_seed)
    except (EmulatorStartError, ValueError) as exc:
        raise UsageProblem(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``luabridge``."""
    cli.main(args=None if argv is None else list(argv), prog_name="luabridge")
