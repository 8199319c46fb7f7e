"""The public entry point: :class:`Bridge` runs scripts and :class:`RunResult` reports them.

A bridge owns the configured accounts, one client per account, the default limits and the
worker pool. Each ``run`` gets its own dispatcher (policy, granted accounts, call records), so
one bridge can serve many threads at once without runs seeing each other.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from luabridge.accounts import AccountSettings
from luabridge.action import Integration, SupportsClose
from luabridge.config import Settings, load_settings
from luabridge.convert import copy_json
from luabridge.dispatch import CallRecord, Dispatcher, RunPolicy, WriteGuard
from luabridge.docs import (
    action_schema,
    help_text,
    render_luals,
    render_markdown,
    render_schema_bundle,
)
from luabridge.effects import parse_allow, suggest
from luabridge.errors import (
    ClosedError,
    ConfigError,
    ExpiredPlanError,
    LuabridgeError,
    PlanError,
    ScriptError,
    UnknownPlanError,
    ValidationError,
    error_class,
)
from luabridge.ledger.base import digest
from luabridge.ledger.journal import Journal, check_execution_id, open_journal
from luabridge.limits import DEFAULT_LIMITS, Limits
from luabridge.plans import (
    DEFAULT_PLAN_TTL,
    ApplyResult,
    LedgerPlanStore,
    MemoryPlanStore,
    Plan,
    PlanGuard,
    PlanStore,
    iso_time,
    new_plan_id,
)
from luabridge.redact import Redactor
from luabridge.registry import BrokenPack, discover_integrations
from luabridge.sandbox import RunOutcome, execute, settle_idle, source_error

if TYPE_CHECKING:
    from luabridge.ledger.base import Ledger
    from luabridge.pool import WorkerPool

__all__ = ["Bridge", "Isolation", "RunError", "RunResult", "discover_integrations"]

Isolation = Literal["process", "inprocess"]

#: Seconds close() waits for runs in flight to record their end before closing the ledger.
_CLOSE_WAIT = 30.0

_CLOSED = "this Bridge was closed; create a new one to run more scripts"
_log = logging.getLogger(__name__)


class _State(enum.Enum):
    OPEN = "open"  # runs are accepted
    CLOSED = "closed"  # close() was called: clients and workers are gone


@dataclass(frozen=True)
class RunError:
    """Why a run failed: ``type`` (see ``luabridge.errors.ERROR_TYPES``), ``message``, ``line``."""

    type: str
    message: str
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "line": self.line}


@dataclass
class RunResult:
    """The outcome of one run.

    - ``ok``: true when the script returned normally
    - ``value``: its return value as JSON-compatible Python (``None`` on failure)
    - ``error``: a :class:`RunError` when ``ok`` is false
    - ``output``: what the script printed
    - ``calls``: every action call, as :class:`luabridge.dispatch.CallRecord`
    - ``execution_id``: this run's id
    - ``usage``: wall time, instructions, peak Lua memory, output bytes, calls and the time
      spent waiting for a free worker (``queue_ms``), for billing and tuning limits
    - ``resumed``: true when this run resumed an execution the ledger already held (its
      recorded writes were replayed, not sent again)
    """

    ok: bool
    value: Any
    error: RunError | None
    output: str
    calls: list[CallRecord]
    execution_id: str
    usage: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False

    def raise_for_error(self) -> None:
        """Raise the matching ``ScriptError`` subclass when the run failed (for hosts that prefer
        exceptions: ``bridge.run(src).raise_for_error()``)."""
        if self.error is not None:
            cls = error_class(self.error.type)
            if issubclass(cls, ScriptError):
                raise cls(self.error.message, line=self.error.line)
            raise cls(self.error.message)

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON envelope."""
        return {
            "ok": self.ok,
            "result": self.value,
            "error": None if self.error is None else self.error.to_dict(),
            "output": self.output,
            "calls": [c.to_dict() for c in self.calls],
            "meta": {
                "executionId": self.execution_id,
                "resumed": self.resumed,
                "durationMs": self.usage.get("wall_ms"),
                "usage": self.usage,
            },
        }


def _close_journal(
    journal: Journal, status: str, usage: Mapping[str, Any], error: Mapping[str, Any] | None
) -> None:
    """Write the execution's end; a ledger that fails now cannot change the run, so it is
    only logged (the record stays ``running``, which ``luabridge runs`` shows as abandoned)."""
    try:
        journal.close(status, usage=usage, error=error)
    except LuabridgeError as exc:
        _log.warning("the run ledger could not record the end of %s: %s", journal.execution_id, exc)


def _check_workers(workers: object) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
        raise ConfigError(f"workers must be a whole number from 1 to 1024, got {workers!r}")


def _start_pool(workers: int) -> WorkerPool:
    from luabridge.pool import WorkerPool

    _check_workers(workers)
    return WorkerPool(size=workers)


class Bridge:
    """Runs Lua scripts in a sandbox with ``app.integrations.*`` bound to real APIs.

    - ``integrations``: the packs to expose (default: every installed pack)
    - ``accounts``: ``{integration: {name: AccountSettings}}``; see :meth:`from_config`
    - ``default_accounts``: ``{integration: name}`` of the account the bare namespace uses
    - ``limits``: default :class:`Limits` of every run (see ``luabridge.limits``)
    - ``isolation``: ``"process"`` (default: each run in a killable worker process) or
      ``"inprocess"`` (faster; cannot stop a script stuck in one C call, see the threat model)
    - ``workers``: size of the worker pool (default 2)
    - ``prestart``: start the worker processes now, while the integrations load, rather than at
      the first run (default False; a one-shot caller such as the CLI saves most of a worker's
      start-up this way, a long-lived host gains nothing)
    - ``pool``: a ``luabridge.pool.WorkerPool`` started by the caller, to run in instead of
      starting one (process isolation only); the bridge owns it from then on and closes it,
      also when the constructor fails
    - ``plans``: where :meth:`plan` keeps plans for :meth:`apply` (default: in the
      ``ledger`` when there is one, else in memory; see ``luabridge.plans``);
      ``plan_ttl``: how long a plan can be applied (default 900 s)
    - ``ledger``: the run ledger (see ``docs/ledger.md``): a ``luabridge.ledger.Ledger``, or
      the path of a SQLite ledger file (opened at the first run that needs it); None (the
      default here; :meth:`from_settings` uses the configured one) records nothing. The bridge
      closes it with itself

    Example::

        bridge = Bridge.from_config()
        result = bridge.run("return app.integrations.loops.get_current_user()")
        print(result.ok, result.value)
    """

    def __init__(
        self,
        *,
        integrations: Sequence[Integration] | None = None,
        accounts: Mapping[str, Mapping[str, AccountSettings]] | None = None,
        default_accounts: Mapping[str, str | None] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        isolation: Isolation = "process",
        workers: int = 2,
        prestart: bool = False,
        pool: WorkerPool | None = None,
        plans: PlanStore | None = None,
        plan_ttl: float = DEFAULT_PLAN_TTL,
        ledger: Ledger | str | os.PathLike[str] | None = None,
    ) -> None:
        self._ledger_source = ledger
        self._ledger_handle: Ledger | None = None
        if plans is None:
            # Plans go where the runs are journaled, through the same connection.
            plans = MemoryPlanStore() if ledger is None else LedgerPlanStore(self._plan_ledger)
        self.plans: PlanStore = plans
        self.plan_ttl = plan_ttl
        self._plan_lock = threading.Lock()
        if isolation not in ("process", "inprocess"):
            if pool is not None:
                pool.close()
            raise ConfigError(f"isolation must be 'process' or 'inprocess', got {isolation!r}")
        if isolation != "process" and pool is not None:
            pool.close()
            raise ConfigError(f"a worker pool was given for isolation={isolation!r}; drop it")
        try:
            _check_workers(workers)
        except ConfigError:
            if pool is not None:
                pool.close()
            raise
        self._workers = workers
        if pool is None and prestart and isolation == "process":
            pool = _start_pool(workers)
        self._pool: WorkerPool | None = pool
        try:
            self._setup(integrations, accounts, default_accounts, limits, isolation)
        except BaseException:
            if self._pool is not None:
                self._pool.close()
            raise

    def _setup(
        self,
        integrations: Sequence[Integration] | None,
        accounts: Mapping[str, Mapping[str, AccountSettings]] | None,
        default_accounts: Mapping[str, str | None] | None,
        limits: Limits | Mapping[str, Any] | None,
        isolation: Isolation,
    ) -> None:
        integs = discover_integrations() if integrations is None else list(integrations)
        self.integrations: dict[str, Integration] = {i.name: i for i in integs}
        self.accounts: dict[str, dict[str, AccountSettings]] = {
            name: dict((accounts or {}).get(name, {})) for name in self.integrations
        }
        self.default_accounts: dict[str, str | None] = {}
        for name in self.integrations:
            given = (default_accounts or {}).get(name)
            if given is None and "default" in self.accounts[name]:
                given = "default"
            self.default_accounts[name] = given
        self.limits = DEFAULT_LIMITS.merged(dict(limits) if isinstance(limits, Mapping) else limits)
        #: Installed packs that failed to load (see ``luabridge.registry``); set by from_config.
        self.broken: list[BrokenPack] = []
        self.isolation: Isolation = isolation
        self._clients: dict[tuple[str, str], SupportsClose] = {}
        self._lock = threading.Lock()
        self._state = _State.OPEN
        # Runs between opening their ledger record and writing its end: close() waits for
        # them, so the ledger is not closed under a run that still has to record how it ended.
        self._recording = 0
        self._recorded = threading.Condition()
        self._redactor = Redactor(
            a.api_key for accs in self.accounts.values() for a in accs.values()
        )

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        integrations: Sequence[Integration] | None = None,
        **options: Any,
    ) -> Bridge:
        """A bridge whose accounts come from the environment and ``luabridge.toml``.

        ``path`` names the config file; without it, ``luabridge.toml`` in the working directory
        is read when it exists. ``options`` go to the constructor (``limits``, ``isolation``,
        ``workers``, ``prestart``...).
        """
        pool = options.get("pool")
        if (
            pool is None
            and options.get("prestart")
            and options.get("isolation", "process") == "process"
        ):
            # Before the integrations are imported, so that the workers start meanwhile.
            pool = options["pool"] = _start_pool(options.get("workers", 2))
        try:
            return cls._from_config(path, environ, integrations, options)
        except BaseException:
            if pool is not None:
                pool.close()
            raise

    @classmethod
    def _from_config(
        cls,
        path: str | os.PathLike[str] | None,
        environ: Mapping[str, str] | None,
        integrations: Sequence[Integration] | None,
        options: dict[str, Any],
    ) -> Bridge:
        settings = load_settings(
            path, environ=environ, integrations=integrations, limits=options.pop("limits", None)
        )
        return cls.from_settings(settings, **options)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Bridge:
        """A bridge built from :func:`luabridge.config.load_settings`; ``options`` go to the
        constructor (``isolation``, ``workers``, ``pool``, ``ledger``...); the run ledger is
        the configured one unless ``ledger`` is given: in the fleet's Redis when
        ``settings.redis_url`` is set (see ``luabridge.fleet``), else ``settings.ledger``."""
        ledger: Ledger | os.PathLike[str] | None = settings.ledger
        if ledger is not None and settings.redis_url is not None and "ledger" not in options:
            # A fleet shares one ledger in its Redis, so that any worker can resume a run.
            from luabridge.ledger.redisstore import RedisLedger

            ledger = RedisLedger(settings.redis_url)
        options.setdefault("ledger", ledger)
        bridge = cls(
            integrations=settings.integrations,
            accounts=settings.accounts,
            default_accounts=settings.default_accounts,
            limits=settings.limits,
            **options,
        )
        bridge.broken = list(settings.broken)
        return bridge

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every client and stop the workers; the bridge cannot run scripts afterwards."""
        with self._lock:
            if self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
            clients, self._clients = list(self._clients.values()), {}
            pool, self._pool = self._pool, None
            ledger, self._ledger_handle = self._ledger_handle, None
            if ledger is None and not isinstance(self._ledger_source, str | os.PathLike):
                ledger = self._ledger_source
            self._ledger_source = None
        if pool is not None:
            pool.close()
        with self._recorded:
            # A run is bounded by its time limit; the wait is bounded too, so a stuck run
            # cannot hang close() (its record then stays ``running``, shown as abandoned).
            self._recorded.wait_for(lambda: self._recording == 0, timeout=_CLOSE_WAIT)
        for client in clients:
            client.close()
        if ledger is not None:
            ledger.close()
        close_plans = getattr(self.plans, "close", None)
        if close_plans is not None:
            close_plans()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        accs = {n: sorted(a) for n, a in self.accounts.items()}
        return (
            f"Bridge(integrations={sorted(self.integrations)}, accounts={accs}, "
            f"isolation={self.isolation!r})"
        )

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise ClosedError(_CLOSED)

    def _client(self, integration: str, account: str) -> SupportsClose:
        key = (integration, account)
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            self._check_open()
            client = self._clients.get(key)
            if client is None:
                settings = self.accounts[integration][account]
                integ = self.integrations[integration]
                if integ.needs_key and not settings.api_key:
                    where = settings.key_source or integ.key_variable(account)
                    raise ConfigError(
                        f"{integration} account '{account}' has no API key; set {where}"
                    )
                client = self.integrations[integration].open_client(settings)
                self._clients[key] = client
        return client

    # -- runs -----------------------------------------------------------------------------------

    def _grants(self, accounts: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]]:
        granted: dict[str, list[str]] = {}
        for name in self.integrations:
            granted[name] = sorted(self.accounts[name])
        if accounts is None:
            return granted
        for name, wanted in accounts.items():
            if name not in self.integrations:
                raise ConfigError(
                    f"accounts: unknown integration '{name}'{suggest(name, self.integrations)}; "
                    f"known: {', '.join(self.integrations) or 'none'}"
                )
            wanted_list = [wanted] if isinstance(wanted, str) else list(wanted)
            configured = self.accounts[name]
            integ = self.integrations[name]
            for acc in wanted_list:
                if acc not in configured:
                    # How to configure it: its key variable (or the config file), the emulator.
                    how = (
                        f"set {integ.key_variable(acc)}"
                        if integ.needs_key
                        else f"name it in luabridge.toml under [{name}.accounts.{acc}]"
                    )
                    if integ.emulator is not None:
                        how += " or use --emulator"
                    raise ConfigError(
                        f"accounts: {name} account '{acc}' is not configured"
                        f"{suggest(acc, configured)}; configured: "
                        f"{', '.join(sorted(configured)) or 'none'}; to configure it, {how}"
                    )
            granted[name] = sorted(set(wanted_list))
        for name in self.integrations:
            if name not in accounts:
                granted[name] = []
        return granted

    def run(
        self,
        source: str,
        input: Any = None,
        *,
        allow: Iterable[str] | str | None = None,
        dry_run: bool = False,
        accounts: Mapping[str, Iterable[str]] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        execution_id: str | None = None,
        resume: Literal["force"] | None = None,
    ) -> RunResult:
        """Run ``source`` with ``input`` as its first argument; never raises for script errors.

        - ``allow``: effects the run may perform besides ``read`` (``{"write"}``,
          ``{"write", "destructive"}``); read-only by default
        - ``dry_run``: run everything, perform reads, plan writes without sending them
        - ``accounts``: ``{"loops": ["default"]}`` grants only those accounts; an integration
          not named gets none; ``None`` grants every configured account
        - ``limits``: overrides of the bridge's limits for this run
        - ``execution_id``: the execution's name (default: a new ``exec_<hex>``). With a
          ledger, an id it already holds is **resumed**: writes recorded as done return their
          recorded result without sending, sends whose outcome is unknown go again with the
          same idempotency key, other writes whose outcome is unknown fail with
          ``<integration>.outcome_unknown`` (see ``docs/ledger.md``)
        - ``resume``: ``"force"`` resumes an execution even though its script or input differ
          from the recorded ones (refused otherwise)

        Raises ``ConfigError`` for bad options (unknown effect, account or limit, a limit out of
        its range, an execution that cannot be resumed), ``ClosedError`` once the bridge is
        closed, also for a run still waiting for a worker when ``close()`` is called, and
        ``luabridge.ledger.LedgerError`` when the ledger fails before the run starts.
        """
        return self._run(
            source,
            input,
            allow=allow,
            dry_run=dry_run,
            accounts=accounts,
            limits=limits,
            execution_id=execution_id,
            resume=resume,
        )

    def _run(
        self,
        source: str,
        input: Any,
        *,
        allow: Iterable[str] | str | None,
        dry_run: bool,
        accounts: Mapping[str, Iterable[str]] | None,
        limits: Limits | Mapping[str, Any] | None,
        write_guard: WriteGuard | None = None,
        execution_id: str | None = None,
        resume: Literal["force"] | None = None,
    ) -> RunResult:
        self._check_open()
        policy_allow = parse_allow(allow)
        run_limits = self.limits.merged(dict(limits) if isinstance(limits, Mapping) else limits)
        granted = self._grants(accounts)
        if resume not in (None, "force"):
            raise ConfigError(f"resume must be None or 'force', got {resume!r}")
        fresh = execution_id is None
        if execution_id is None:
            execution_id = "exec_" + uuid.uuid4().hex
        else:
            execution_id = check_execution_id(execution_id)
        started = time.monotonic()
        policy = RunPolicy(
            allow=policy_allow,
            dry_run=bool(dry_run),
            max_calls=run_limits.calls,
            deadline=started + run_limits.timeout,
            execution_id=execution_id,
        )
        dispatcher = Dispatcher(
            integrations=self.integrations,
            granted=granted,
            defaults=self.default_accounts,
            policy=policy,
            client_for=self._client,
            redactor=self._redactor,
            help_text=lambda topic: help_text(self.integrations, granted, topic),
            schema_of=self._schema_by_name,
            write_guard=write_guard,
        )
        try:
            # The same checks in both isolation modes: a worker would otherwise see NaN or a
            # non-string key only after JSON had mangled or refused it.
            input_copy = copy_json(input, path="input")
        except ValidationError as exc:
            refused = RunOutcome(False, error={"type": exc.error_type, "message": str(exc)})
            return self._result(refused, dispatcher, execution_id)
        bad_source = source_error(source, run_limits)
        if bad_source is not None:
            # Before a worker is taken: a 50 MB script is refused without being sent anywhere.
            refused = RunOutcome(False, error=bad_source, usage={"wall_ms": 0.0})
            return self._result(refused, dispatcher, execution_id)
        if dry_run:
            return self._record_run(source, input_copy, dispatcher, run_limits, started)
        with self._recorded:
            self._recording += 1
        try:
            ledger = self._ledger()
            if ledger is None:
                return self._record_run(source, input_copy, dispatcher, run_limits, started)
            dispatcher.journal = open_journal(
                ledger,
                execution_id,
                script_hash=digest(source),
                input_hash=digest(input_copy),
                policy={
                    "allow": sorted(policy_allow),
                    "dry_run": False,
                    "limits": run_limits.as_dict(),
                },
                accounts=granted,
                force=resume == "force",
                fresh=fresh,
            )
            # Opening the execution does not count against the run's time limit.
            started = time.monotonic()
            dispatcher.restart_clock(started)
            return self._record_run(source, input_copy, dispatcher, run_limits, started)
        finally:
            with self._recorded:
                self._recording -= 1
                self._recorded.notify_all()

    def _record_run(
        self,
        source: str,
        input_copy: Any,
        dispatcher: Dispatcher,
        run_limits: Limits,
        started: float,
    ) -> RunResult:
        """Execute the run and write its end to its ledger record, if it has one."""
        execution_id = dispatcher.policy.execution_id
        try:
            outcome = self._execute(source, input_copy, dispatcher, run_limits, started)
            result = self._result(outcome, dispatcher, execution_id)
        except ClosedError as exc:
            # Refused by close() before it ran: recorded as that, not as a crash.
            if dispatcher.journal is not None:
                refused: dict[str, Any] = {"type": "ClosedError", "message": str(exc), "line": None}
                _close_journal(dispatcher.journal, "failed", {}, refused)
            raise
        except BaseException:
            if dispatcher.journal is not None:
                _close_journal(dispatcher.journal, "crashed", {}, None)
            raise
        if dispatcher.journal is not None:
            error = None if result.error is None else result.error.to_dict()
            if result.ok:
                status = "succeeded"
            elif result.error is not None and result.error.type == "WorkerCrashError":
                status = "crashed"
            else:
                status = "failed"
            _close_journal(dispatcher.journal, status, result.usage, error)
        return result

    def _execute(
        self, source: str, input_copy: Any, dispatcher: Dispatcher, limits: Limits, started: float
    ) -> RunOutcome:
        if self.isolation == "process":
            pool = self._worker_pool()
            try:
                return pool.run(source, input_copy, dispatcher, limits, started)
            except ClosedError:
                # close() came while the run waited for a worker: the bridge's own words.
                raise ClosedError(_CLOSED) from None
        try:
            return execute(source, input_copy, host=dispatcher, limits=limits, started=started)
        finally:
            # The run's garbage is collected now, on this run's caller's time: left for the
            # next run to settle, it was charged to that run's timeout.
            settle_idle()

    def _ledger(self) -> Ledger | None:
        """The ledger, opened on first use from a path (None when the bridge has none)."""
        source = self._ledger_source
        if source is None or not isinstance(source, str | os.PathLike):
            return source
        with self._lock:
            self._check_open()
            if self._ledger_handle is None:
                from luabridge.ledger.sqlite import SQLiteLedger

                self._ledger_handle = SQLiteLedger(source)
            return self._ledger_handle

    def _plan_ledger(self) -> Ledger:
        ledger = self._ledger()
        assert ledger is not None  # only used when the bridge was given one
        return ledger

    # -- plan, then apply -------------------------------------------------------------------------

    def plan(
        self,
        source: str,
        input: Any = None,
        *,
        allow: Iterable[str] | str | None = None,
        accounts: Mapping[str, Iterable[str]] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        ttl: float | None = None,
    ) -> Plan:
        """Dry-run ``source`` and keep what it would send as a :class:`luabridge.plans.Plan`.

        The options are those of :meth:`run`; ``ttl`` overrides the bridge's ``plan_ttl``.
        ``plan.result`` is the dry run's envelope and ``plan.writes`` the writes it would send;
        give ``plan.plan_id`` to :meth:`apply` to send exactly those.
        """
        self._check_open()
        policy_allow = parse_allow(allow)
        granted = self._grants(accounts)
        run_limits = self.limits.merged(dict(limits) if isinstance(limits, Mapping) else limits)
        result = self._run(
            source, input, allow=policy_allow, dry_run=True, accounts=granted, limits=run_limits
        )
        try:
            kept_input = copy_json(input, path="input")
        except ValidationError:
            kept_input = None  # the dry run failed on it, so the plan cannot be applied
        now = time.time()
        plan = Plan(
            plan_id=new_plan_id(),
            source=source,
            input=kept_input,
            allow=sorted(policy_allow),
            accounts=granted,
            limits=run_limits.as_dict(),
            writes=[
                {
                    "integration": c.integration,
                    "account": c.account,
                    "action": c.action,
                    "effect": c.effect,
                    "params": c.params,
                    "request": c.request,
                }
                for c in result.calls
                if c.outcome == "dry_run"
            ],
            reads=[c.to_dict() for c in result.calls if c.effect == "read"],
            result=result.to_dict(),
            targets=self._targets(granted),
            created_at=now,
            expires_at=now + (self.plan_ttl if ttl is None else ttl),
            run=result,
        )
        self.plans.save(plan)
        return plan

    def apply(
        self,
        plan_id: str,
        *,
        allow: Iterable[str] | str | None = None,
        accounts: Mapping[str, Iterable[str]] | None = None,
    ) -> ApplyResult:
        """Run a plan's script and input for real, sending only the writes it planned.

        Before each write is sent it is compared with the plan's write at the same position;
        the first that differs, or that the plan does not have, stops the run unsent with
        ``PlanMismatchError`` (``ApplyResult.mismatch`` shows both). The run has the plan's
        policy and limits; ``allow`` and ``accounts``, when given, are a ceiling (a server's
        policy): a plan that needs more is refused. Raises ``UnknownPlanError``,
        ``ExpiredPlanError`` or ``PlanError`` (already applied, its dry run failed, made for
        other accounts, or over the ceiling) before anything runs.
        """
        self._check_open()
        ceiling = None if allow is None else parse_allow(allow)
        granted = None if accounts is None else self._grants(accounts)
        with self._plan_lock:
            plan = self.plans.load(plan_id)
            if plan is None:
                raise UnknownPlanError(
                    f"unknown plan id {plan_id!r}; plans come from a dry run "
                    "(execute_lua with dry_run = true, luabridge run --dry-run, Bridge.plan) and "
                    "are kept where that bridge keeps them; dry-run the script to get one"
                )
            now = time.time()
            if plan.applied_at is not None:
                raise PlanError(
                    f"plan {plan_id} was already applied at {iso_time(plan.applied_at)}; a plan "
                    "is applied once: dry-run the script again for a new plan"
                )
            if now >= plan.expires_at:
                span = plan.expires_at - plan.created_at
                after = f"{span:.3g} seconds" if span < 120 else f"{span / 60:.3g} minutes"
                raise ExpiredPlanError(
                    f"plan {plan_id} expired at {iso_time(plan.expires_at)} ({after} after "
                    "its dry run); dry-run the script again for a new plan"
                )
            if not plan.ok:
                error = plan.result.get("error") or {}
                raise PlanError(
                    f"plan {plan_id} comes from a dry run that failed ({error.get('type')}: "
                    f"{error.get('message')}); fix the script and dry-run it again"
                )
            self._check_ceiling(plan, ceiling, granted)
            targets = self._targets(plan.accounts)
            self._check_targets(plan, targets)
            plan.applied_at = now
            self.plans.save(plan)
        guard = PlanGuard(plan, targets)
        result = self._run(
            plan.source,
            plan.input,
            allow=plan.allow,
            dry_run=False,
            accounts=plan.accounts,
            limits=plan.limits,
            write_guard=guard,
        )
        unsent = plan.writes[guard.sent :]
        return ApplyResult(
            plan=plan, result=result, sent=guard.sent, mismatch=guard.mismatch, unsent=unsent
        )

    def _targets(self, granted: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
        return {
            name: {
                acc: {
                    "base_url": self.accounts[name][acc].base_url,
                    "emulated": self.accounts[name][acc].source == "--emulator",
                }
                for acc in accs
                if acc in self.accounts.get(name, {})
            }
            for name, accs in granted.items()
            if accs
        }

    def _check_ceiling(
        self,
        plan: Plan,
        allow: frozenset[str] | None,
        granted: Mapping[str, Sequence[str]] | None,
    ) -> None:
        if allow is not None and not set(plan.allow) <= allow:
            extra = ", ".join(sorted(set(plan.allow) - allow))
            refused = PlanError(
                f"plan {plan.plan_id} was made allowing {extra}, which this apply does not "
                f"allow (only {', '.join(sorted(allow))}); apply it where that is allowed"
            )
            refused.beyond_policy = True
            raise refused
        if granted is None:
            return
        for name, accs in plan.accounts.items():
            beyond = sorted(set(accs) - set(granted.get(name, [])))
            if beyond:
                refused = PlanError(
                    f"plan {plan.plan_id} may use {name} account(s) {', '.join(beyond)}, which "
                    "this apply does not grant; apply it where they are granted"
                )
                refused.beyond_policy = True
                raise refused

    def _check_targets(self, plan: Plan, targets: Mapping[str, Mapping[str, Any]]) -> None:
        for name, accs in plan.targets.items():
            for acc, then in accs.items():
                now = targets.get(name, {}).get(acc)
                if now is None:
                    where = (
                        "it was planned against an emulator: apply it with one (CLI: add "
                        "--emulator, and the --config it was planned with if any)"
                        if then.get("emulated")
                        else "apply it with the configuration it was planned with (CLI: the "
                        "same --config)"
                    )
                    raise PlanError(
                        f"plan {plan.plan_id} uses {name} account '{acc}', which this bridge "
                        f"does not have; {where}"
                    )
                if now["base_url"] != then["base_url"] and not (
                    now["emulated"] and then["emulated"]
                ):
                    raise PlanError(
                        f"plan {plan.plan_id} was made for {name} account '{acc}' at "
                        f"{then['base_url']}, and this bridge sends it to {now['base_url']}; "
                        "apply it with the configuration it was planned with"
                    )

    def _worker_pool(self) -> WorkerPool:
        with self._lock:
            # A run that passed _check_open while another thread closed the bridge must not
            # start a pool that nothing would close.
            self._check_open()
            if self._pool is None:
                self._pool = _start_pool(self._workers)
            return self._pool

    def _result(self, outcome: RunOutcome, dispatcher: Dispatcher, execution_id: str) -> RunResult:
        red = self._redactor
        error = None
        if outcome.error is not None:
            err = outcome.error
            error = RunError(
                type=str(err.get("type") or "InternalError"),
                message=red.text(str(err.get("message") or "")),
                line=err.get("line"),
            )
        calls = dispatcher.snapshot()
        usage = dict(outcome.usage)
        usage["calls"] = len(calls)
        usage.setdefault("queue_ms", 0.0)
        journal = dispatcher.journal
        return RunResult(
            ok=outcome.ok and error is None,
            value=red.data(outcome.value) if outcome.ok else None,
            error=error,
            output=red.text(outcome.output),
            calls=calls,
            execution_id=execution_id,
            usage=usage,
            resumed=journal is not None and journal.resumed,
        )

    # -- docs and introspection ------------------------------------------------------------------

    def integration(self, name: str) -> Integration:
        """The integration called ``name``; ``ConfigError`` (with a "did you mean") if none."""
        integ = self.integrations.get(name)
        if integ is None:
            broken = next((b for b in self.broken if b.name == name), None)
            if broken is not None:
                raise ConfigError(f"integration '{name}' is installed but broken: {broken.error}")
            raise ConfigError(
                f"unknown integration '{name}'{suggest(name, self.integrations)}; "
                f"known: {', '.join(self.integrations) or 'none'}"
            )
        return integ

    def resolve_account(self, integration: str, account: str | None = None) -> str:
        """The account a call of ``integration`` would use (``account``, else the default);
        ``ConfigError`` saying how to configure it when there is none or it has no key."""
        integ = self.integration(integration)
        configured = self.accounts[integration]
        if not configured:
            raise ConfigError(f"no {integ.title} account is configured; {integ.setup_hint()}")
        name = account or self.default_accounts.get(integration)
        if name is None:
            raise ConfigError(
                f"no default {integ.title} account; name one "
                f"(configured: {', '.join(sorted(configured))})"
            )
        settings = configured.get(name)
        if settings is None:
            raise ConfigError(
                f"{integration} account '{name}' is not configured{suggest(name, configured)}; "
                f"configured: {', '.join(sorted(configured))}"
            )
        if integ.needs_key and not settings.has_key:
            where = settings.key_source or integ.key_variable(name)
            raise ConfigError(f"{integration} account '{name}' has no API key; set {where}")
        return name

    def docs(
        self, integration: str | None = None, action: str | None = None, *, format: str = "markdown"
    ) -> str:
        """The reference as ``markdown``, ``json`` (schemas) or ``luals`` (type stubs).

        ``integration`` None: every integration (markdown: the overview that ``app.help()``
        gives). ``integration`` may also be ``"loops.send_event"`` for one action.
        """
        if format not in ("markdown", "json", "luals"):
            raise ConfigError(f"unknown docs format {format!r}; use markdown, json or luals")
        accounts: dict[str, Sequence[str]] = {n: sorted(a) for n, a in self.accounts.items()}
        if integration is None:
            integs = list(self.integrations.values())
            if format == "markdown":
                return help_text(self.integrations, accounts, None)
            if format == "json":
                bundles = {i.name: render_schema_bundle(i) for i in integs}
                return json.dumps(bundles, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            return render_luals(integs, accounts)
        if action is None and "." in integration:
            integration, _, action = integration.partition(".")
        integ = self.integration(integration)
        if action is not None and integ.action(action) is None:
            raise ConfigError(
                f"unknown action '{integration}.{action}'{suggest(action, integ.action_names)}; "
                f"actions: {', '.join(integ.action_names)}"
            )
        mine = accounts[integration]
        if format == "markdown":
            if action is None:
                return render_markdown(integ, mine)
            return help_text(self.integrations, {integration: mine}, f"{integration}.{action}")
        if format == "json":
            if action is None:
                return json.dumps(render_schema_bundle(integ), indent=2) + "\n"
            return json.dumps(self.schema(integration, action), indent=2) + "\n"
        return render_luals([integ], {integration: mine})

    def schema(self, integration: str, action: str) -> dict[str, Any]:
        """Input and output JSON schema of one action."""
        integ = self.integration(integration)
        act = integ.action(action)
        if act is None:
            raise ConfigError(
                f"unknown action '{integration}.{action}'{suggest(action, integ.action_names)}; "
                f"actions: {', '.join(integ.action_names)}"
            )
        return action_schema(integ, act)

    def _schema_by_name(self, name: str) -> dict[str, Any]:
        integration, _, action = name.partition(".")
        if not action:
            raise ConfigError(f"expected '<integration>.<action>', got '{name}'")
        return self.schema(integration, action)

    def actions(self, integration: str | None = None) -> list[dict[str, str]]:
        """Name, effect and summary of every action (of one integration, or all)."""
        names = [integration] if integration else list(self.integrations)
        return [
            {"integration": n, "action": a.name, "effect": a.effect, "summary": a.summary}
            for n in names
            for a in self.integration(n).actions
        ]

    def account_info(self) -> list[dict[str, Any]]:
        """Configured accounts and whether a key is present (never the key itself)."""
        rows = []
        for name, accs in self.accounts.items():
            for acc in sorted(accs.values(), key=lambda a: a.name):
                rows.append(
                    {
                        "integration": name,
                        "account": acc.name,
                        "default": self.default_accounts.get(name) == acc.name,
                        "needs_key": self.integrations[name].needs_key,
                        "has_key": acc.has_key,
                        "key_source": acc.key_source,
                        "base_url": acc.base_url,
                    }
                )
        return rows
