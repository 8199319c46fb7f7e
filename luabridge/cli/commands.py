"""The core commands: run, docs, schema, actions, accounts, call and emulator."""

from __future__ import annotations

import json
import shlex
import sys
from typing import TYPE_CHECKING, Any

import click

from luabridge.cli.options import (
    CHUNK_PREFIX,
    EXIT_FAILED,
    EXIT_OK,
    allow_option,
    command_bridge,
    fail,
    guard,
    json_value,
    limits_option,
    policy_options,
    read_script,
)
from luabridge.cli.render import dumps, name_chunk, report_error, summary

if TYPE_CHECKING:
    pass


__all__ = [
    "accounts",
    "actions",
    "call",
    "docs",
    "emulator",
    "run",
    "schema",
]


@click.command()
@click.argument("script", metavar="FILE|-")
@click.option(
    "--input",
    "input_",
    metavar="JSON|@file",
    help="The script's input (its first argument, `local input = ...`).",
)
@policy_options
@click.option(
    "--execution-id",
    metavar="ID",
    help="Name the execution; an id the run ledger already holds is resumed (recorded writes "
    "are not sent again).",
)
@click.option(
    "--force-resume",
    is_flag=True,
    help="Resume --execution-id even though the script or input differ from the recorded ones.",
)
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
    execution_id: str | None,
    force_resume: bool,
    as_json: bool,
) -> None:
    """Run a Lua script (FILE, or - for standard input).

    With --dry-run the writes are planned, not sent, and kept as a plan (15 minutes):
    `luabridge apply PLAN_ID` sends exactly those writes (--json prints plan_id).

    With --execution-id the run is recorded under that id in the run ledger; running the same
    id again (after a crash, say) resumes it: writes that were done are replayed from the
    record, sends of unknown outcome go again with the same idempotency key.

    \b
    Examples:
      luabridge run docs/examples/onboarding.lua --emulator --allow write
      echo 'return app.help()' | luabridge run -
    """
    if script == "-" and input_ == "@-":
        fail("--input @- and a script read from - cannot both use standard input")
    if execution_id is not None and not execution_id:
        fail("--execution-id needs a non-empty ID, for example --execution-id order-1001")
    if force_resume and not execution_id:
        fail("--force-resume needs --execution-id ID: the execution to resume")
    source = read_script(script)
    label = "<stdin>" if script == "-" else script
    value = json_value(input_, "'--input'")
    effects = allow_option(allow)
    limits = limits_option(timeout, memory, max_calls)
    from luabridge.plans import MemoryPlanStore

    plan = None
    kept = True
    with command_bridge(config, isolation=isolation, emulator=emulator, limits=limits) as bridge:
        if execution_id and not dry_run and isinstance(bridge.plans, MemoryPlanStore):
            click.echo(
                f"note: the run ledger is off, so execution {execution_id!r} is not recorded "
                "and cannot be resumed (its sends still carry idempotency keys derived from "
                "the id); turn the ledger on (see luabridge.toml's ledger setting) to resume runs",
                err=True,
            )
        with guard():
            if dry_run:
                plan = bridge.plan(source, value, allow=effects)
                kept = not isinstance(bridge.plans, MemoryPlanStore)
                assert plan.run is not None
                result = plan.run
            else:
                result = bridge.run(
                    source,
                    value,
                    allow=effects,
                    execution_id=execution_id,
                    resume="force" if force_resume else None,
                )
    if as_json:
        envelope = result.to_dict()
        if envelope["error"] is not None:
            envelope["error"]["message"] = name_chunk(envelope["error"]["message"], label)
        if plan is not None and plan.ok:
            envelope["plan_id"] = plan.plan_id
            envelope["plan"] = plan.summary()
        click.echo(json.dumps(envelope, ensure_ascii=False))
    else:
        shown = result.output
        if result.output:
            click.echo(result.output, nl=not result.output.endswith("\n"))
        if result.ok and result.value is not None:
            shown = dumps(result.value)
            click.echo(shown)
        lines = summary(result.calls)
        for line in lines[0 if shown else 1 :]:
            click.echo(line)
    report_error(result, source, label)
    if plan is not None and plan.ok and not kept:
        click.echo(
            "the run ledger is off, so this plan is not kept for luabridge apply; turn the "
            "ledger on (see luabridge.toml's ledger setting) to apply plans from the CLI",
            err=True,
        )
    elif plan is not None and plan.ok and not plan.writes:
        click.echo(
            f"plan {plan.plan_id}: no writes planned, so there is nothing to apply", err=True
        )
    elif plan is not None and plan.ok:
        count = len(plan.writes)
        # The apply needs the same accounts: the same --config, and --emulator if planned there.
        command = ["luabridge", "apply", plan.plan_id]
        if config:
            command += ["--config", config]
        if emulator:
            command.append("--emulator")
        click.echo(
            f"plan {plan.plan_id}: {count} write{'s' if count != 1 else ''} planned, valid "
            f"until {plan.summary()['expires_at']}; send exactly "
            f"{'these' if count != 1 else 'this'} with: {shlex.join(command)}",
            err=True,
        )
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)


@click.command()
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
    with command_bridge(config) as bridge, guard():
        text = bridge.docs(topic, format=fmt)
    if topic is None and fmt == "markdown":
        # The overview is app.help()'s; its first line speaks to scripts, this one to the shell.
        first, _, rest = text.partition("\n")
        if first.startswith("luabridge: call app.help("):
            text = (
                "luabridge: the whole reference of one integration is `luabridge docs "
                "<integration>`, one action `luabridge docs <integration>.<action>`.\n"
                + rest.replace("; accounts in this run: ", "; accounts configured: ")
            )
    click.echo(text, nl=not text.endswith("\n"))


@click.command()
@click.argument("integration", metavar="INTEGRATION")
@click.option("--action", metavar="NAME", help="The action whose schemas to print.")
def schema(integration: str, action: str | None) -> None:
    """Input and output JSON schema of one action: luabridge schema INTEGRATION --action NAME."""
    with command_bridge() as bridge, guard():
        integ = bridge.integration(integration)
        if not action:
            fail(
                f"missing --action NAME; actions of {integration}: {', '.join(integ.action_names)}"
            )
        data = bridge.schema(integration, action)
    click.echo(dumps(data))


@click.command()
@click.argument("integration", required=False, metavar="[INTEGRATION]")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def actions(integration: str | None, as_json: bool) -> None:
    """Every action: name, effect tag and one-line summary; broken packs are listed too."""
    with command_bridge() as bridge, guard():
        rows = bridge.actions(integration)
        broken = [b for b in bridge.broken if integration in (None, b.name)]
    if as_json:
        click.echo(dumps(rows))
    else:
        width = max((len(r["integration"]) + len(r["action"]) + 1 for r in rows), default=0)
        for row in rows:
            name = f"{row['integration']}.{row['action']}"
            click.echo(f"{name:<{width}}  {row['effect']:<11}  {row['summary']}")
    for pack in broken:
        click.echo(f"{pack.name}: BROKEN (not loaded): {pack.error} [{pack.target}]", err=True)


@click.command()
@click.option("--config", type=click.Path(dir_okay=False), metavar="FILE", help="Config file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def accounts(config: str | None, as_json: bool) -> None:
    """Configured accounts and whether each has a key (the key itself is never shown)."""
    with command_bridge(config) as bridge:
        rows = bridge.account_info()
        unconfigured = [
            f"{i.title}: {i.setup_hint()}"
            for name, i in bridge.integrations.items()
            if not bridge.accounts[name]
        ]
    if as_json:
        click.echo(dumps(rows))
        return
    if not rows:
        click.echo("No accounts are configured. " + "; ".join(unconfigured) + ".")
        click.echo("Named accounts can also be declared in luabridge.toml (see luabridge docs).")
        return
    header = ("INTEGRATION", "ACCOUNT", "DEFAULT", "KEY", "KEY FROM", "BASE URL")
    table = [header] + [
        (
            r["integration"],
            r["account"],
            "yes" if r["default"] else "",
            "present" if r["has_key"] else "MISSING" if r["needs_key"] else "not needed",
            r["key_source"] or "-",
            r["base_url"],
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r["needs_key"] and not r["has_key"]:
            click.echo(
                f"{r['integration']} account '{r['account']}' has no key; set "
                f"{r['key_source'] or 'its api_key_env variable'}",
                err=True,
            )
    for line in unconfigured:
        click.echo(f"No account configured for {line}", err=True)


_CALL_SOURCE = """\
local call = ...
local namespace = app.integrations[call.integration]
if call.account then namespace = namespace[call.account] end
return namespace[call.action](call.params)
"""


@click.command()
@click.argument("integration", metavar="INTEGRATION")
@click.option("--action", required=True, metavar="NAME", help="The action to call.")
@click.option(
    "--data", metavar="JSON|@file", help="The action's parameters as a JSON object (default {})."
)
@click.option("--account", metavar="A", help="The account to use (default: the default account).")
@policy_options
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
    params = json_value(data, "'--data'")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise click.BadParameter(
            f"must be a JSON object of parameters, got {type(params).__name__}; "
            'e.g. \'{"email": "ada@example.com"}\'',
            param_hint="'--data'",
        )
    effects = allow_option(allow)
    limits = limits_option(timeout, memory, max_calls)
    with command_bridge(config, isolation=isolation, emulator=emulator, limits=limits) as bridge:
        with guard():
            integ = bridge.integration(integration)
            if integ.action(action) is None:
                # The same message as a script gets, with where to look.
                bridge.schema(integration, action)
            bridge.resolve_account(integration, account)
        spec = {"integration": integration, "account": account, "action": action}
        with guard():
            result = bridge.run(
                _CALL_SOURCE, {**spec, "params": params}, allow=effects, dry_run=dry_run
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
        message = CHUNK_PREFIX.sub("", result.error.message)
        envelope["error"] = {"type": result.error.type, "message": message}
        click.echo(dumps(envelope))
        click.echo(f"{result.error.type}: {message}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(dumps(envelope))
    value = result.value
    if isinstance(value, dict) and value.get("success") is False:
        detail = " ".join(str(value[k]) for k in ("code", "status") if value.get(k) is not None)
        click.echo(f"{integration}.{action} failed: {detail}: {value.get('error')}", err=True)
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("integration", required=False, metavar="[INTEGRATION]")
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
    help="An API key; each one is its own team. Without any: the emulator's demo teams.",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Requests per second per team; 0 turns the limit off.",
)
@click.option("--no-seed", is_flag=True, help="Start with empty teams instead of the demo data.")
def emulator(
    integration: str | None,
    host: str,
    port: int,
    keys: tuple[str, ...],
    rate_limit: int,
    no_seed: bool,
) -> None:
    """Serve a service's local emulator until interrupted (Ctrl+C).

    INTEGRATION may be left out when only one installed integration has an emulator. The
    first line printed is the base URL, then one line per API key.

    \b
    Example:
      luabridge emulator --port 8787
      LOOPS_BASE_URL=http://127.0.0.1:8787/api/v1 LOOPS_API_KEY=demo_key_default \\
        luabridge run script.lua
    """
    with command_bridge() as bridge, guard():
        served = {n: i for n, i in bridge.integrations.items() if i.emulator and i.emulator.serve}
        if integration is None:
            if len(served) != 1:
                fail(
                    "name the integration whose emulator to serve: "
                    + (", ".join(served) or "no installed integration has one")
                )
            integration = next(iter(served))
        integ = bridge.integration(integration)
        if integ.emulator is None or integ.emulator.serve is None:
            fail(
                f"{integration} has no emulator to serve; integrations with one: "
                f"{', '.join(served) or 'none'}"
            )
        serve = integ.emulator.serve
    with guard():
        serve(host, port, list(keys), rate_limit, not no_seed)
