"""The fleet's commands: ``worker`` serves runs from the queue, ``submit`` queues one.

Both read the same configuration as every command (``luabridge.config``), and import Celery
only when they run, so the other commands never pay for it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import click

from luabridge.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    allow_option,
    fail,
    guard,
    json_value,
    limits_option,
)
from luabridge.cli.render import dumps

__all__ = ["submit", "worker"]

_CONFIG_HELP = "Config file (default: ./luabridge.toml when it exists)."


def _fleet_app(config: str | None, limits: dict[str, Any] | None = None) -> Any:
    from luabridge.config import load_settings
    from luabridge.tasks import create_app

    with guard():
        return create_app(load_settings(config, limits=limits))


@click.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    metavar="N",
    help="Worker processes, each running one script at a time (default: one per CPU).",
)
@click.option("--config", type=click.Path(dir_okay=False), metavar="FILE", help=_CONFIG_HELP)
@click.option(
    "--loglevel",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Celery's log level.",
)
def worker(concurrency: int | None, config: str | None, loglevel: str) -> None:
    """Serve runs from the fleet's queue (a Celery worker on the Redis of LUABRIDGE_REDIS_URL).

    \b
    Examples:
      LUABRIDGE_REDIS_URL=redis://127.0.0.1:6379/0 luabridge worker --concurrency 2
    """
    from luabridge.tasks import run_worker

    app = _fleet_app(config)
    run_worker(app, concurrency=concurrency, loglevel=loglevel.upper())


def _task_envelope(result: Any, wait_timeout: float) -> dict[str, Any]:
    """The ``run --json`` envelope of a finished task (a task that failed gets one too)."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from luabridge.tasks import execution_id_of, failure_envelope

    execution_id = execution_id_of(str(result.id))
    try:
        value = result.get(timeout=wait_timeout, propagate=False)
    except CeleryTimeout:
        fail(
            f"execution {execution_id} did not finish within {wait_timeout:g} s; it is still "
            "queued or running (a worker must be running: luabridge worker)"
        )
    if result.successful() and isinstance(value, dict):
        return value
    name = type(value).__name__
    kinds = {"SoftTimeLimitExceeded": "TimeoutError", "TimeLimitExceeded": "TimeoutError"}
    kinds |= {"ConfigError": "UsageError", "WorkerLostError": "WorkerCrashError"}
    return failure_envelope(execution_id, kinds.get(name, "InternalError"), f"{name}: {value}")


@click.command()
@click.argument("script", metavar="FILE|-")
@click.option(
    "--input", "input_", metavar="JSON|@file", help="The script's input (its first argument)."
)
@click.option(
    "--allow",
    multiple=True,
    metavar="EFFECTS",
    help="Effects the run may perform besides read: write, destructive. Default: read only.",
)
@click.option("--dry-run", is_flag=True, help="Perform reads; validate and record writes.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Wall-clock limit in seconds (at most the fleet's [limits] timeout).",
)
@click.option("--memory", type=click.IntRange(min=1), metavar="MB", help="Lua heap limit in MiB.")
@click.option("--max-calls", type=click.IntRange(min=1), metavar="N", help="Most action calls.")
@click.option("--execution-id", metavar="ID", help="Name the execution (resumes a known one).")
@click.option(
    "--force-resume",
    is_flag=True,
    help="Resume --execution-id even though its script or input changed.",
)
@click.option("--config", type=click.Path(dir_okay=False), metavar="FILE", help=_CONFIG_HELP)
@click.option("--wait", is_flag=True, help="Wait for the run and print its result.")
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="How long --wait waits (default: long enough for a redelivery after a worker dies).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else.")
def submit(
    script: str,
    input_: str | None,
    allow: tuple[str, ...],
    dry_run: bool,
    timeout: float | None,
    memory: int | None,
    max_calls: int | None,
    execution_id: str | None,
    force_resume: bool,
    config: str | None,
    wait: bool,
    wait_timeout: float | None,
    as_json: bool,
) -> None:
    """Queue a run of a Lua script (FILE, or - for standard input) on the fleet.

    Prints the execution id; with --wait, the run's result (--json: the same envelope as
    luabridge run --json) and exits 1 if the run failed.

    \b
    Examples:
      luabridge submit docs/examples/onboarding.lua --allow write --wait
      luabridge submit job.lua --input @order.json --execution-id order-1001 --json
    """
    from luabridge.tasks import close_app

    if script == "-":
        source = sys.stdin.read()
    else:
        try:
            source = Path(script).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read script {script!r}: {exc.strerror or exc}")
    value = json_value(input_, "'--input'")
    effects = allow_option(allow)
    limits = limits_option(timeout, memory, max_calls)
    if execution_id is not None and not execution_id:
        fail("--execution-id needs a non-empty ID, for example --execution-id order-1001")
    if force_resume and execution_id is None:
        fail("--force-resume needs --execution-id ID (the execution to resume)")
    app = _fleet_app(config)
    resume: Literal["force"] | None = "force" if force_resume else None
    run_id = (execution_id, resume)
    try:
        _submit(app, source, value, effects, dry_run, limits, run_id, wait, wait_timeout, as_json)
    finally:
        close_app(app)


def _submit(
    app: Any,
    source: str,
    value: Any,
    effects: frozenset[str],
    dry_run: bool,
    limits: dict[str, Any],
    run_id: tuple[str | None, Literal["force"] | None],
    wait: bool,
    wait_timeout: float | None,
    as_json: bool,
) -> None:
    from luabridge.tasks import app_settings, fleet_timings, release_result, submit as submit_run

    with guard():
        result = submit_run(
            source,
            value,
            allow=effects,
            dry_run=dry_run,
            limits=limits,
            execution_id=run_id[0],
            resume=run_id[1],
            app=app,
        )
    if not wait:
        release_result(result)
        if as_json:
            click.echo(json.dumps({"executionId": result.execution_id, "state": "queued"}))
        else:
            click.echo(result.execution_id)
        sys.exit(EXIT_OK)
    timings = fleet_timings(app_settings(app).limits)
    try:
        envelope = _task_envelope(
            result, wait_timeout or timings.redelivery + 2 * timings.time_limit
        )
    finally:
        release_result(result)
    if as_json:
        click.echo(json.dumps(envelope, ensure_ascii=False))
    else:
        if envelope.get("output"):
            click.echo(envelope["output"], nl=not envelope["output"].endswith("\n"))
        if envelope.get("ok") and envelope.get("result") is not None:
            click.echo(dumps(envelope["result"]))
        calls = envelope.get("calls") or []
        if calls:
            click.echo(f"{len(calls)} call{'s' if len(calls) != 1 else ''} ({result.execution_id})")
    error = envelope.get("error")
    if error:
        click.echo(f"{error['type']}: {error['message']}", err=True)
    if error and error.get("type") == "UsageError":
        # The worker refused the run's options (a resume of a changed script, say).
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_OK if envelope.get("ok") else EXIT_FAILED)
