"""``luabridge apply PLAN_ID``: send exactly the writes a dry run planned (see luabridge.plans)."""

from __future__ import annotations

import json
import sys

import click

from luabridge.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    UsageProblem,
    command_bridge,
)
from luabridge.cli.render import dumps, report_error, summary

__all__ = ["apply"]


@click.command()
@click.argument("plan_id", metavar="PLAN_ID")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Config file naming accounts (the one the plan was made with).",
)
@click.option(
    "--emulator",
    is_flag=True,
    help="Apply against a fresh emulator (for a plan made with --emulator).",
)
@click.option(
    "--isolation",
    type=click.Choice(["process", "inprocess"]),
    default="process",
    show_default=True,
    help="Run in a killable worker process, or in this process.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON envelope and nothing else.")
def apply(plan_id: str, config: str | None, emulator: bool, isolation: str, as_json: bool) -> None:
    """Run a planned script for real, sending only the writes its dry run showed.

    The plan (from `luabridge run FILE --dry-run`, kept in the run ledger) holds the script,
    its input, its --allow and limits. Before each write is sent it is compared with the plan;
    the first write that differs, or that the plan does not have, stops the run unsent (exit
    code 1) and the planned and actual writes are shown side by side. Plans can be applied
    once, within 15 minutes.

    \b
    Example:
      luabridge run signup.lua --allow write --dry-run --json   # prints plan_id
      luabridge apply plan_0123456789abcdef0123456789abcdef
    """
    from luabridge.errors import PlanError
    from luabridge.plans import render_mismatch

    with command_bridge(config, isolation=isolation, emulator=emulator) as b:
        try:
            applied = b.apply(plan_id)
        except PlanError as exc:
            raise UsageProblem(str(exc)) from exc
    result = applied.result
    if as_json:
        click.echo(json.dumps(applied.to_dict(), ensure_ascii=False))
    else:
        if result.output:
            click.echo(result.output, nl=not result.output.endswith("\n"))
        if result.ok and result.value is not None:
            click.echo(dumps(result.value))
        for line in summary(result.calls)[1:]:
            click.echo(line)
    report_error(result, applied.plan.source, "script")
    if applied.mismatch is not None:
        click.echo(render_mismatch(applied.mismatch), err=True)
    elif applied.unsent:
        click.echo(
            f"{len(applied.unsent)} planned write(s) were not sent: the script ended before "
            "reaching them",
            err=True,
        )
    else:
        click.echo(f"plan {plan_id}: {applied.sent} of {applied.planned} writes sent", err=True)
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)
