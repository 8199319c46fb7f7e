"""Runs on a fleet: the Celery application, its run task, and :func:`submit`.

Celery (with Redis as broker and result backend) carries each run from a submitter to a worker
process, which runs it through the one :class:`~luabridge.Bridge` it holds (process isolation
inside, as everywhere). The broker URL is the fleet's Redis (``LUABRIDGE_REDIS_URL`` or
``[fleet] redis_url``, see :mod:`luabridge.fleet`); submitters and workers read the same
``luabridge.toml``, so they agree on it and on the limits.

Delivery: the task id is the execution id, followed by ``~`` and 12 hex digits new for each
submission when the submitter named the execution (``execution_id=``): a resubmission then never
shares a result key with an earlier run of the same execution that may still be going. The
execution id is in the task's arguments too, which is where a worker takes it from, and
:attr:`FleetResult.execution_id` (or :func:`execution_id_of` of a task id) gives it back. Tasks
are acknowledged after they end (``acks_late``)
and put back when the process running them dies (``reject_on_worker_lost``). When a whole worker
node dies its unacknowledged tasks go back to the queue once Redis's *visibility timeout* has
passed, and any live worker looks for such tasks every ``RESTORE_INTERVAL`` seconds; the ledger
makes the rerun resume instead of repeating writes. Times, for a fleet whose ``[limits]
timeout`` is ``T`` seconds (see :func:`fleet_timings`):

- a task's soft time limit is ``T + 1`` (by then the bridge has ended any run itself), its hard
  limit ``T + 3``, so a stuck task is killed by Celery too;
- the visibility timeout is the hard limit plus ``VISIBILITY_MARGIN`` (10 s), so a task that is
  still running is never handed to a second worker; a run may ask for a shorter timeout, never
  a longer one;
- after a node dies, its tasks run again within ``visibility timeout + RESTORE_INTERVAL``:
  20 s with the default 5 s timeout.

Needs the ``fleet`` extra: ``pip install 'luabridge[fleet]'``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

try:
    import celery
    from celery.result import AsyncResult
except ImportError as exc:  # pragma: no cover - the dev extra always has it
    raise ImportError(
        "luabridge.tasks needs Celery and redis; install the fleet extra: "
        "pip install 'luabridge[fleet]'"
    ) from exc

from luabridge.config import Settings, load_settings
from luabridge.effects import parse_allow
from luabridge.errors import BackendError, ConfigError
from luabridge.fleet import describe_url, fleet_section, redis_client
from luabridge.limits import Limits

if TYPE_CHECKING:
    from luabridge.bridge import Bridge

__all__ = [
    "DEFAULT_QUEUE",
    "RESTORE_INTERVAL",
    "TASK_NAME",
    "VISIBILITY_MARGIN",
    "FleetResult",
    "FleetTimings",
    "app_settings",
    "close_app",
    "create_app",
    "default_app",
    "execution_id_of",
    "failure_envelope",
    "fleet_timings",
    "release_result",
    "run_worker",
    "submit",
]

#: The registered name of the run task.
TASK_NAME: Final = "luabridge.run"
#: The queue runs go to unless ``[fleet] queue`` names another.
DEFAULT_QUEUE: Final = "luabridge"
#: Seconds added to a task's hard time limit to make the visibility timeout.
VISIBILITY_MARGIN: Final = 10.0
#: Seconds between two looks of a worker for tasks whose node died.
RESTORE_INTERVAL: Final = 5
#: The bridge ends any run within its timeout plus this (worker kill included).
_SOFT_MARGIN: Final = 1.0
_HARD_MARGIN: Final = 3.0
_MAX_ID: Final = 200
#: What follows a named execution's id in the task id of one submission of it.
_ATTEMPT: Final = re.compile(r"~[0-9a-f]{12}\Z")


def execution_id_of(task_id: str) -> str:
    """The execution id of a run task's id (the task id less its submission suffix, if any)."""
    return _ATTEMPT.sub("", task_id, count=1)


class FleetResult(AsyncResult):  # type: ignore[misc]
    """The Celery result of one submission, which also knows the execution it runs."""

    @property
    def execution_id(self) -> str:
        """The run's execution id (``.id`` is the Celery task id, see :func:`submit`)."""
        return execution_id_of(str(self.id))


@dataclass(frozen=True)
class FleetTimings:
    """The times a fleet derives from its longest run (``[limits] timeout``), in seconds.

    - ``max_timeout``: the longest timeout a submitted run may ask for
    - ``soft_time_limit`` / ``time_limit``: Celery's limits for a run of ``max_timeout``
    - ``visibility_timeout``: how long Redis keeps a delivered task from other workers
    - ``redelivery``: the longest wait before a dead node's task runs again
    """

    max_timeout: float
    soft_time_limit: float
    time_limit: float
    visibility_timeout: int
    redelivery: int


def _task_limits(timeout: float) -> tuple[float, float]:
    return timeout + _SOFT_MARGIN, timeout + _HARD_MARGIN


def fleet_timings(limits: Limits) -> FleetTimings:
    """The fleet's timings for runs of at most ``limits.timeout`` seconds."""
    soft, hard = _task_limits(limits.timeout)
    visibility = math.ceil(hard + VISIBILITY_MARGIN)
    return FleetTimings(
        max_timeout=limits.timeout,
        soft_time_limit=soft,
        time_limit=hard,
        visibility_timeout=visibility,
        redelivery=visibility + RESTORE_INTERVAL,
    )


# Each app carries the settings it was made from (submit checks limits against them; a worker
# process builds its bridge from them), under this attribute.
_SETTINGS_ATTR: Final = "luabridge_settings"


def create_app(settings: Settings | None = None) -> celery.Celery:
    """A Celery app for the fleet described by ``settings`` (default: ``load_settings()``).

    Raises ``ConfigError`` when no Redis is configured.
    """
    settings = load_settings() if settings is None else settings
    url = settings.redis_url
    if url is None:
        raise ConfigError(
            "no Redis is configured for the fleet; set LUABRIDGE_REDIS_URL=redis://host:6379/0 "
            'or redis_url = "redis://..." in the [fleet] table of luabridge.toml'
        )
    queue = fleet_section(settings.file, settings.path or "luabridge.toml").get(
        "queue", DEFAULT_QUEUE
    )
    timings = fleet_timings(settings.limits)
    transport = {
        "visibility_timeout": timings.visibility_timeout,
        # kombu scans for abandoned tasks every interval * throttle seconds (100 s by
        # default); one scan every RESTORE_INTERVAL keeps redelivery near the visibility
        # timeout.
        "unacked_restore_interval": RESTORE_INTERVAL,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 60,
    }
    app = celery.Celery("luabridge", set_as_current=False)
    app.conf.update(
        broker_url=url,
        result_backend=url,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": timings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # No STARTED state: nothing reads it, and storing it cost every task one more write
        # to the result backend and its submitter one more message to decode.
        task_track_started=False,
        task_soft_time_limit=timings.soft_time_limit,
        task_time_limit=timings.time_limit,
        # One task per process at a time: a prefetched task would wait behind a running one
        # while its visibility timeout runs.
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # The stored result is the run's envelope only (redacted by value like every output):
        # an extended result would keep the task's arguments, that is the script's source and
        # its input, with any secret in them, in celery-task-meta-<id>.
        result_extended=False,
    )
    # A refused run (ConfigError: bad options, a resume refused) is the submitter's mistake,
    # logged in one line rather than as an unexpected error with a traceback.
    app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        throws=(ConfigError,),
        # The worker's log line of a finished task shows the start of its envelope, not up
        # to 1 KB of it (Celery's default) made on every task.
        resultrepr_maxsize=200,
    )(_run_task)
    setattr(app, _SETTINGS_ATTR, settings)
    return app


_DEFAULT: list[celery.Celery] = []
_DEFAULT_LOCK = threading.Lock()


def default_app() -> celery.Celery:
    """The app of this process's configuration (``load_settings()``), made once."""
    with _DEFAULT_LOCK:
        if not _DEFAULT:
            _DEFAULT.append(create_app())
        return _DEFAULT[0]


def app_settings(app: celery.Celery) -> Settings:
    """The settings ``app`` was made from (by :func:`create_app`)."""
    settings = getattr(app, _SETTINGS_ATTR, None)
    if not isinstance(settings, Settings):
        raise ConfigError("this Celery app was not made by luabridge.tasks.create_app")
    return settings


def submit(
    source: str,
    input: Any = None,
    *,
    allow: Iterable[str] | str | None = None,
    dry_run: bool = False,
    accounts: Mapping[str, Iterable[str]] | None = None,
    limits: Limits | Mapping[str, Any] | None = None,
    execution_id: str | None = None,
    resume: Literal["force"] | None = None,
    app: celery.Celery | None = None,
) -> FleetResult:
    """Queue a run on the fleet and return its Celery result (``.execution_id`` is the
    execution id).

    The options are those of ``Bridge.run``; ``execution_id`` names the execution (default: a
    new ``exec_<hex>``), and submitting an id again resumes that execution where the ledger
    left it (``resume="force"``: even though its script or input changed, as in
    ``Bridge.run``). Each submission waits for its own run: the task id of a named execution
    is its id followed by ``~`` and 12 hex digits new for this submission, so a result of an
    earlier run of the same id, finished or still going, is never read as this one's (the
    task id of a generated id is the id itself). ``result.get()`` is the same envelope as
    ``luabridge run --json`` (``RunResult.to_dict()``). ``app`` defaults to
    :func:`default_app`.

    Raises ``ConfigError`` for bad options, checked here rather than on a worker: an unknown
    effect or limit, input that is not JSON, or a timeout longer than the fleet allows; and
    ``BackendError`` when the fleet's Redis does not answer (within 2 s).
    """
    app = default_app() if app is None else app
    settings = app_settings(app)
    effects = sorted(parse_allow(allow))
    overrides = limits.as_dict() if isinstance(limits, Limits) else dict(limits or {})
    run_limits = settings.limits.merged(overrides)
    timings = fleet_timings(settings.limits)
    if run_limits.timeout > timings.max_timeout:
        raise ConfigError(
            f"limits.timeout {run_limits.timeout:g} s is longer than the fleet's longest run "
            f"({timings.max_timeout:g} s, [limits] timeout): a longer task could be handed to "
            "a second worker while it runs. Raise [limits] timeout in the luabridge.toml of "
            "the workers and submitters, or ask for less."
        )
    if execution_id is not None and (
        not isinstance(execution_id, str) or not 0 < len(execution_id) <= _MAX_ID
    ):
        raise ConfigError(
            f"execution_id must be a non-empty string of at most {_MAX_ID} characters "
            f"(got {execution_id!r})"
        )
    granted = None
    if accounts is not None:
        granted = {
            name: [wanted] if isinstance(wanted, str) else sorted(wanted)
            for name, wanted in accounts.items()
        }
    kwargs = {
        "input": input,
        "allow": effects,
        "dry_run": bool(dry_run),
        "accounts": granted,
        "limits": overrides or None,
    }
    if resume not in (None, "force"):
        raise ConfigError(f'resume must be None or "force" (got {resume!r})')
    if resume is not None:
        kwargs["resume"] = resume
    try:
        input_size = len(json.dumps(input, allow_nan=False))
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the run's input and options must be JSON data: {exc}") from exc
    assert settings.redis_url is not None
    _check_reachable(settings.redis_url)
    soft, hard = _task_limits(run_limits.timeout)
    if execution_id is None:
        execution_id = task_id = "exec_" + uuid.uuid4().hex
    else:
        # A named execution may have been submitted before, and that run may still be going:
        # under the same task id its result would be read as this submission's.
        task_id = f"{execution_id}~{uuid.uuid4().hex[:12]}"
    kwargs["execution_id"] = execution_id
    # What Celery shows of the task's arguments (message headers, `celery inspect`, events):
    # their sizes, not the script and its input, which may hold secrets (and a repr of them
    # took a sixth of a submit's time).
    options = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "input")
    result: FleetResult = app.send_task(
        TASK_NAME,
        args=[source],
        kwargs=kwargs,
        task_id=task_id,
        soft_time_limit=soft,
        time_limit=hard,
        result_cls=functools.partial(FleetResult, app=app),
        argsrepr=f"(<script of {len(source)} characters>,)",
        kwargsrepr=f"{{input=<{input_size} bytes of JSON>, {options}}}",
    )
    return result


def release_result(result: AsyncResult) -> None:
    """Stop following ``result`` (its Redis subscription ends now, not whenever it is
    collected, when Redis may be gone); the run itself is not affected."""
    backend = result.backend
    if backend is not None:
        backend.remove_pending_result(result)
        result.backend = None


def close_app(app: celery.Celery) -> None:
    """Release the connections of a submitter's result backend (its client and its
    subscription). Broker connections stay in kombu's pool, which apps of one URL share."""
    backend = app._backend
    if backend is not None:
        consumer = getattr(backend, "result_consumer", None)
        if consumer is not None:
            consumer.stop()
        client = getattr(backend, "client", None)
        if client is not None:
            client.connection_pool.disconnect()
    app.close()


def _check_reachable(url: str) -> None:
    """One PING first: Celery would retry a dead Redis for 20 s before it gives up."""
    import redis

    try:
        redis_client(url, timeout=2.0).ping()
    except redis.RedisError as exc:
        raise BackendError(
            f"the fleet's Redis ({describe_url(url)}) did not take the run "
            f"({type(exc).__name__}: {exc}); check that it is running and that "
            "LUABRIDGE_REDIS_URL points at it"
        ) from exc


def failure_envelope(execution_id: str, error_type: str, message: str) -> dict[str, Any]:
    """The ``run --json`` envelope of a task that ended without a run result (refused
    options, a time limit, a lost worker)."""
    return {
        "ok": False,
        "result": None,
        "error": {"type": error_type, "message": message, "line": None},
        "output": "",
        "calls": [],
        "meta": {"executionId": execution_id, "durationMs": None, "usage": {}},
    }


# -- the worker side --------------------------------------------------------------------------

# The bridge of this worker process, made when the process starts (see run_worker).
_BRIDGE: list[Bridge] = []
_WORKER_SETTINGS: list[Settings] = []


def _process_bridge() -> Bridge:
    if not _BRIDGE:
        from luabridge.bridge import Bridge

        if not _WORKER_SETTINGS:
            raise ConfigError("the run task runs only in a worker started by luabridge worker")
        _BRIDGE.append(Bridge.from_settings(_WORKER_SETTINGS[0], isolation="process", workers=1))
    return _BRIDGE[0]


def _run_task(
    task: celery.Task,
    source: str,
    input: Any = None,
    allow: list[str] | None = None,
    dry_run: bool = False,
    accounts: dict[str, list[str]] | None = None,
    limits: dict[str, Any] | None = None,
    resume: Literal["force"] | None = None,
    execution_id: str | None = None,
) -> dict[str, Any]:
    """Run one script on this process's bridge; the result is ``RunResult.to_dict()``.

    ``execution_id`` comes with every task :func:`submit` queues; a task sent without it (by
    hand, with ``send_task``) runs the execution its task id names."""
    result = _process_bridge().run(
        source,
        input,
        allow=allow,
        dry_run=dry_run,
        accounts=accounts,
        limits=limits,
        resume=resume,
        execution_id=execution_id or execution_id_of(str(task.request.id)),
    )
    return result.to_dict()


def _start_process(**_: Any) -> None:
    _process_bridge()


def _stop_process(**_: Any) -> None:
    while _BRIDGE:
        _BRIDGE.pop().close()


def run_worker(
    app: celery.Celery, *, concurrency: int | None = None, loglevel: str = "INFO"
) -> None:
    """Serve runs until stopped: a prefork Celery worker of ``concurrency`` processes
    (default: one per CPU), each with one bridge. What ``luabridge worker`` calls."""
    from celery.signals import worker_process_init, worker_process_shutdown

    settings = app_settings(app)
    _WORKER_SETTINGS[:] = [settings]
    worker_process_init.connect(_start_process, weak=False)
    worker_process_shutdown.connect(_stop_process, weak=False)
    processes = concurrency or os.cpu_count() or 1
    queue = str(app.conf.task_default_queue)
    assert settings.redis_url is not None
    print(
        f"luabridge worker: {processes} process(es) on queue {queue!r} at "
        f"{describe_url(settings.redis_url)}",
        flush=True,
    )
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={processes}",
            f"--loglevel={loglevel}",
            f"--queues={queue}",
            f"--hostname=luabridge-{os.getpid()}@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
