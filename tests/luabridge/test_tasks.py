"""Tests of ``luabridge.tasks`` that need no worker: timings, app settings, what ``submit``
refuses before anything is queued, what it queues in a real Redis, and the task body."""

from __future__ import annotations

import base64
import json
import re
import types
from collections.abc import Iterator

import pytest
from conftest import NOTES, NOTES_KEYS

from luabridge import tasks
from luabridge.config import Settings, load_settings
from luabridge.errors import ConfigError
from luabridge.limits import DEFAULT_LIMITS, Limits


def notes_settings(redis_url: str | None, **file: object) -> Settings:
    env = {"NOTES_API_KEY": NOTES_KEYS["default"]}
    if redis_url:
        env["LUABRIDGE_REDIS_URL"] = redis_url
    settings = load_settings("/dev/null", environ=env, integrations=[NOTES])
    if file:
        import dataclasses

        settings = dataclasses.replace(settings, file=file)
    return settings


@pytest.fixture
def app(redis_url: str) -> Iterator[object]:
    made = tasks.create_app(notes_settings(redis_url))
    yield made
    tasks.close_app(made)


def test_fleet_timings_default() -> None:
    timings = tasks.fleet_timings(DEFAULT_LIMITS)
    assert timings == tasks.FleetTimings(
        max_timeout=5.0, soft_time_limit=6.0, time_limit=8.0, visibility_timeout=18, redelivery=23
    )


def test_fleet_timings_follow_the_longest_run() -> None:
    timings = tasks.fleet_timings(Limits(timeout=60))
    assert (timings.time_limit, timings.visibility_timeout) == (63.0, 73)


def test_create_app_without_redis_refused() -> None:
    with pytest.raises(ConfigError, match=r"no Redis is configured.*LUABRIDGE_REDIS_URL"):
        tasks.create_app(notes_settings(None))


def test_create_app_delivery_settings() -> None:
    settings = notes_settings("redis://127.0.0.1:1/0", fleet={"queue": "runs-eu"})
    app = tasks.create_app(settings)
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_track_started is False  # nothing reads STARTED; it cost a write per task
    assert conf.broker_transport_options["visibility_timeout"] == 18
    assert conf.broker_transport_options["unacked_restore_interval"] == tasks.RESTORE_INTERVAL
    assert conf.task_default_queue == "runs-eu"
    assert tasks.TASK_NAME in app.tasks
    assert tasks.app_settings(app) is settings


def test_app_settings_of_a_foreign_app_refused() -> None:
    import celery

    with pytest.raises(ConfigError, match="not made by luabridge"):
        tasks.app_settings(celery.Celery(set_as_current=False))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"limits": {"timeout": 6}}, "longer than the fleet's longest run"),
        ({"limits": {"nope": 1}}, "unknown limit"),
        ({"allow": ["explode"]}, "explode"),
        ({"input": {"x": float("nan")}}, "must be JSON data"),
        ({"input": {"x": object()}}, "must be JSON data"),
        ({"execution_id": ""}, "execution_id must be a non-empty string"),
        ({"execution_id": "x" * 201}, "at most 200"),
    ],
)
def test_submit_bad_options_refused_before_queueing(
    options: dict[str, object], match: str, app: object, redis_url: str
) -> None:
    import redis

    with pytest.raises(ConfigError, match=match):
        tasks.submit("return 1", app=app, **options)  # type: ignore[arg-type]
    assert redis.Redis.from_url(redis_url).llen(tasks.DEFAULT_QUEUE) == 0


def test_submit_queues_the_run_under_its_execution_id(app: object, redis_url: str) -> None:
    import redis

    result = tasks.submit(
        "return input",
        {"a": 1},
        allow="write",
        accounts={"notes": "default"},
        limits=Limits(timeout=2),
        execution_id="order-1001",
        app=app,
    )
    assert result.execution_id == "order-1001"
    assert re.fullmatch(r"order-1001~[0-9a-f]{12}", result.id)
    again = tasks.submit("return input", {"a": 1}, execution_id="order-1001", app=app)
    assert again.execution_id == "order-1001" and again.id != result.id
    queued = redis.Redis.from_url(redis_url).lrange(tasks.DEFAULT_QUEUE, 0, -1)
    assert len(queued) == 2
    message = json.loads(queued[-1])  # the first one queued
    headers = message["headers"]
    assert (headers["id"], headers["task"]) == (result.id, tasks.TASK_NAME)
    assert json.loads(base64.b64decode(message["body"]))[1]["execution_id"] == "order-1001"
    # What Celery shows of the arguments (inspect, events) is their size, not their text.
    assert headers["argsrepr"] == "(<script of 12 characters>,)"
    assert headers["kwargsrepr"].startswith("{input=<8 bytes of JSON>, allow=['read', 'write']")
    assert "return input" not in headers["kwargsrepr"] + headers["argsrepr"]
    assert headers["timelimit"] == [5.0, 3.0]  # hard, soft: the run's 2 s plus 3 s / 1 s


def test_submit_of_a_new_execution_uses_its_id_as_the_task_id(app: object) -> None:
    result = tasks.submit("return 1", app=app)
    assert re.fullmatch(r"exec_[0-9a-f]{32}", result.id) and result.execution_id == result.id


def test_execution_id_of_a_task_id() -> None:
    assert tasks.execution_id_of("order-1~0123456789ab") == "order-1"
    assert tasks.execution_id_of("a~0123456789ab~0123456789ab") == "a~0123456789ab"
    assert tasks.execution_id_of("exec_" + "f" * 32) == "exec_" + "f" * 32
    assert tasks.execution_id_of("order-1~0123") == "order-1~0123"


def test_failure_envelope_shape() -> None:
    envelope = tasks.failure_envelope("exec-1", "TimeoutError", "too slow")
    assert set(envelope) == {"ok", "result", "error", "output", "calls", "meta"}
    assert envelope["error"] == {"type": "TimeoutError", "message": "too slow", "line": None}
    assert envelope["meta"]["executionId"] == "exec-1"


@pytest.fixture
def worker_process() -> Iterator[None]:
    """This process set up as a worker process would be (settings, then its bridge)."""
    tasks._WORKER_SETTINGS[:] = [notes_settings(None)]
    try:
        yield
    finally:
        tasks._stop_process()
        tasks._WORKER_SETTINGS.clear()


def test_run_task_runs_on_the_process_bridge(worker_process: None) -> None:
    """The task body runs the script under the task's id and returns the run envelope."""
    import uuid

    tasks._start_process()
    task_id = f"exec-task-{uuid.uuid4().hex}"
    request = types.SimpleNamespace(request=types.SimpleNamespace(id=task_id))
    envelope = tasks._run_task(request, "local input = ...; return input.n * 2", {"n": 21})
    assert (envelope["ok"], envelope["result"]) == (True, 42)
    assert envelope["meta"]["executionId"] == task_id
    request.request.id = f"exec-task-{uuid.uuid4().hex}"
    limited = tasks._run_task(request, "return 1", allow=["read"], limits={"timeout": 1})
    assert limited["ok"] is True
    # A task queued by submit names its execution in its arguments, whatever its task id.
    request.request.id = "named~0123456789ab"
    named = tasks._run_task(request, "return 2", execution_id=f"named-{uuid.uuid4().hex}")
    assert named["meta"]["executionId"].startswith("named-")


def test_run_task_outside_a_worker_refused() -> None:
    request = types.SimpleNamespace(request=types.SimpleNamespace(id="x"))
    with pytest.raises(ConfigError, match="luabridge worker"):
        tasks._run_task(request, "return 1")
