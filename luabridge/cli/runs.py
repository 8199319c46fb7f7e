"""``luabridge runs``: the executions the run ledger holds, and one of them with its calls."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from luabridge.cli.options import UsageProblem, guard

if TYPE_CHECKING:
    from luabridge.ledger.base import ExecutionRecord, Ledger
    from luabridge.redact import Redactor

__all__ = ["runs"]


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _duration_ms(record: ExecutionRecord) -> float | None:
    """How long its last run took (a resumed execution's record spans several runs)."""
    if record.ended_at is None:
        return None
    wall = record.usage.get("wall_ms")
    if isinstance(wall, int | float):
        return float(wall)
    return round(max(0.0, record.ended_at - record.started_at) * 1000, 3)


def _duration(record: ExecutionRecord) -> str:
    ms = _duration_ms(record)
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


class _Ledger:
    """The configured ledger, opened for reading; the redactor of the configured keys."""

    def __init__(self, config: str | None) -> None:
        from luabridge.config import load_settings
        from luabridge.redact import Redactor

        with guard():
            settings = load_settings(config)
        if settings.ledger is None:
            raise UsageProblem(
                "the run ledger is off (ledger = false in the config file, or "
                "LUABRIDGE_LEDGER=off), so no run is recorded; turn it on to list runs"
            )
        self.path = settings.ledger
        self.where = str(settings.ledger)
        self.redactor: Redactor = Redactor(
            a.api_key for accs in settings.accounts.values() for a in accs.values()
        )
        self.ledger: Ledger | None = None
        if settings.redis_url is not None:
            # A fleet's runs are recorded in its Redis (see Bridge.from_settings).
            from luabridge.ledger.redisstore import RedisLedger

            self.ledger = RedisLedger(settings.redis_url)
            self.where = self.ledger.location
        elif self.path.exists():
            from luabridge.ledger.sqlite import SQLiteLedger

            with guard():
                self.ledger = SQLiteLedger(self.path)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def _summary_row(record: ExecutionRecord) -> dict[str, Any]:
    from luabridge.ledger.journal import shown_status

    return {
        "execution_id": record.execution_id,
        "status": shown_status(record),
        "started_at": _when(record.started_at),
        "duration_ms": _duration_ms(record),
        "calls": record.calls,
        "writes": record.writes,
        "resumed": record.resumed,
    }


@click.group(invoke_without_command=True)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=10000),
    default=20,
    show_default=True,
    help="How many executions to list, newest first.",
)
@click.option("--config", type=click.Path(dir_okay=False), metavar="FILE", help="Config file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def runs(ctx: click.Context, limit: int, config: str | None, as_json: bool) -> None:
    """Recent executions in the run ledger: id, status, start, duration, calls, writes.

    \b
    Examples:
      luabridge runs
      luabridge runs show order-1001 --json
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"config": config}
        return
    opened = _Ledger(config)
    try:
        with guard():
            records = [] if opened.ledger is None else opened.ledger.list_executions(limit)
    finally:
        opened.close()
    rows = [opened.redactor.data(_summary_row(r)) for r in records]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo(f"no runs recorded in {opened.where}", err=True)
        return
    width = max(len("EXECUTION"), *(len(r["execution_id"]) for r in rows))
    click.echo(
        f"{'EXECUTION':<{width}}  {'STATUS':<9}  {'STARTED':<20}  {'DURATION':>9}  CALLS  WRITES"
    )
    for record, row in zip(records, rows, strict=True):
        resumed = f"  (resumed {row['resumed']}x)" if row["resumed"] else ""
        click.echo(
            f"{row['execution_id']:<{width}}  {row['status']:<9}  {row['started_at']:<20}  "
            f"{_duration(record):>9}  {row['calls']:>5}  {row['writes']:>6}{resumed}"
        )


@runs.command()
@click.argument("execution_id", metavar="ID")
@click.option("--config", type=click.Path(dir_okay=False), metavar="FILE", help="Config file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def show(ctx: click.Context, execution_id: str, config: str | None, as_json: bool) -> None:
    """One execution with every call: sequence number, state, action, key, attempts."""
    from luabridge.ledger.journal import shown_status

    opened = _Ledger(config or (ctx.obj or {}).get("config"))
    try:
        with guard():
            record = None if opened.ledger is None else opened.ledger.get_execution(execution_id)
            entries = (
                []
                if record is None or opened.ledger is None
                else opened.ledger.get_calls(execution_id)
            )
    finally:
        opened.close()
    if record is None:
        raise UsageProblem(
            f"no execution {execution_id!r} in the run ledger at {opened.where}; "
            "luabridge runs lists the recent ones"
        )
    execution = {**record.to_dict(), "status": shown_status(record)}
    data = opened.redactor.data({"execution": execution, "calls": [e.to_dict() for e in entries]})
    if as_json:
        # Times in the format of luabridge runs --json (ISO 8601, UTC), null when not set.
        for item in (data["execution"], *data["calls"]):
            for field in ("started_at", "ended_at"):
                item[field] = _when(item[field]) if item.get(field) else None
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    ex = data["execution"]
    click.echo(f"execution {ex['execution_id']}: {ex['status']}")
    click.echo(f"  started   {_when(ex['started_at'])} on {ex['host'] or '?'} (pid {ex['pid']})")
    click.echo(f"  ended     {_when(ex['ended_at'])} ({_duration(record)})")
    click.echo(f"  allow     {', '.join(ex['policy'].get('allow', []))}")
    accounts = "; ".join(f"{k}: {', '.join(v)}" for k, v in ex["accounts"].items() if v)
    click.echo(f"  accounts  {accounts or 'none'}")
    click.echo(f"  resumed   {ex['resumed']} time(s)")
    if ex["error"]:
        click.echo(f"  error     {ex['error'].get('type')}: {ex['error'].get('message')}")
    click.echo(f"  calls     {ex['calls']} ({ex['writes']} writes)")
    for call in data["calls"]:
        key = f"  key {call['idempotency_key']}" if call["idempotency_key"] else ""
        tries = f"  {call['attempts']} attempts" if call["attempts"] > 1 else ""
        click.echo(
            f"  {call['seq']:>4}  {call['state']:<9}  {call['integration']}.{call['account']}."
            f"{call['action']}  ({call['effect']}){key}{tries}"
        )
        click.echo(f"        params {json.dumps(call['params'], ensure_ascii=False)}")
        if call["result"] is not None and call["state"] != "succeeded":
            click.echo(f"        result {json.dumps(call['result'], ensure_ascii=False)}")
