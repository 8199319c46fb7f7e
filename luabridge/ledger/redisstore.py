"""The shared ledger: executions and calls kept in the fleet's Redis.

Every worker of a fleet records into the same Redis (``LUABRIDGE_REDIS_URL``, see
:mod:`luabridge.fleet`), so a task redelivered to another machine resumes from what the first
one wrote. It relies on ``redis`` (the ``fleet`` extra). Keys, under ``luabridge:ledger:``:

- ``exec:<id>``: the execution record as JSON (without the counted ``calls``/``writes``);
- ``calls:<id>``: a hash of sequence number to the call entry as JSON;
- ``by-start``: a sorted set of execution ids scored by start time, for ``list_executions``;
- ``plan:<id>``: a saved plan as JSON, expiring with the plan.

Each change is one atomic server-side script (``EVALSHA``), so a change costs one round trip
and has been applied by Redis when the method returns (a call's ``sending`` is in Redis before
its request leaves). A change that reads before it writes (a call's new state, an execution's
new fields) is a compare-and-set: the handle computes the new JSON from the value it last wrote
or read, and the script stores it only if that value is still the one in Redis; otherwise it
answers with the current value, which the handle checks again (the transition rules included)
and retries from. The scripts never parse the JSON, so what is stored is exactly what the
handle wrote. How durable a change is depends on the Redis server's persistence: run it with
``appendonly yes`` (see docs/fleet.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from luabridge.errors import ConfigError
from luabridge.fleet import describe_url, redis_client
from luabridge.ledger.base import (
    CallEntry,
    ExecutionRecord,
    Ledger,
    LedgerError,
    Outcome,
    check_transition,
)

if TYPE_CHECKING:
    import redis

__all__ = ["KEY_PREFIX", "RedisLedger"]

#: Prefix of every key the ledger writes.
KEY_PREFIX: Final = "luabridge:ledger:"
_COUNTED: Final = ("calls", "writes")

#: Executions whose last known records a handle keeps, to skip the read of a compare-and-set.
_CACHED: Final = 256

T = TypeVar("T")
# A stored value as redis-py answers it (bytes: the ledger's clients do not decode).
_Raw = bytes | str

# A new execution: refused (0) when the id is held.
_CREATE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""

# A new call: -1 when the execution is unknown, 0 when the sequence number is taken.
_APPEND: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""

# Compare-and-set of one hash field (a call): 1 when stored; else the current value (nil when
# there is none), for the caller to check and retry from.
_SET_CALL: Final = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current ~= ARGV[2] then
  return current
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# An earlier call's outcome (compare-and-set, as _SET_CALL) and a new call, both or neither:
# -1 when the execution is unknown, 0 when the new call's sequence number is taken, 1 when
# both are stored, else the outcome's call as it is now (nil when there is none).
_SETTLE_AND_APPEND: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current ~= ARGV[2] then
  return current
end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3], ARGV[4], ARGV[5])
return 1
"""

# Compare-and-set of an execution record, and its start time in the index when ARGV[3] is set.
_SET_EXECUTION: Final = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return current
end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
end
return 1
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _call_change(
    execution_id: str,
    seq: int,
    state: str,
    result: Any,
    idempotency_key: str | None,
    at: float | None,
) -> Callable[[Any], dict[str, Any]]:
    """The change of call ``seq`` to ``state`` (see ``Ledger.update_call``), for a
    compare-and-set: old entry (None when missing) -> new entry, or ``LedgerError``."""
    now = time.time() if at is None else at

    def change(old: Any) -> dict[str, Any]:
        if old is None:
            raise LedgerError(f"execution {execution_id!r} has no call {seq}")
        check_transition(execution_id, seq, old["state"], state)
        stored = dict(old)
        stored["state"] = state
        if result is not None:
            stored["result"] = result
        if idempotency_key is not None:
            stored["idempotency_key"] = idempotency_key
        if state == "sending":
            stored["attempts"] = int(stored.get("attempts", 1)) + 1
            stored["started_at"], stored["ended_at"] = now, None
        else:
            stored["ended_at"] = now
        return stored

    return change


class _Known:
    """What a handle last saw of one execution: its record and its calls, raw and parsed."""

    __slots__ = ("calls", "execution")

    def __init__(self) -> None:
        self.execution: tuple[_Raw, Any] | None = None
        self.calls: dict[int, tuple[_Raw, Any]] = {}


class RedisLedger(Ledger):
    """A ledger in Redis, shared by every process and machine that uses the same server.

    - ``url``: the Redis URL (``redis://host:6379/0``)
    - ``prefix``: the key prefix (default ``luabridge:ledger:``), to keep several ledgers on one
      server apart
    - ``timeout``: seconds to wait for Redis before a call fails with ``LedgerError``
      (default 5.0)

    Example::

        with RedisLedger("redis://127.0.0.1:6379/0") as ledger:
            for record in ledger.list_executions(limit=5):
                print(record.execution_id, record.status)
    """

    def __init__(self, url: str, *, prefix: str = KEY_PREFIX, timeout: float = 5.0) -> None:
        self.url = url
        self.prefix = prefix
        self.location = describe_url(url)
        try:
            self._redis: redis.Redis = redis_client(url, timeout=timeout)
        except ConfigError as exc:
            raise LedgerError(str(exc)) from exc
        self._create = self._redis.register_script(_CREATE)
        self._append = self._redis.register_script(_APPEND)
        self._set_call = self._redis.register_script(_SET_CALL)
        self._set_execution = self._redis.register_script(_SET_EXECUTION)
        self._settle_and_append = self._redis.register_script(_SETTLE_AND_APPEND)
        self._lock = threading.Lock()
        self._closed = False
        # The records this handle last wrote or read, as stored (the raw JSON) and parsed, per
        # execution: the expected value of the next compare-and-set. Only a hint: a stale one
        # costs one more round trip, never a wrong write.
        self._known: OrderedDict[str, _Known] = OrderedDict()

    def __repr__(self) -> str:
        return f"RedisLedger({self.location!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}:{name}" if name else f"{self.prefix}{kind}"

    def _run(self, what: str, action: Callable[[redis.Redis], T]) -> T:
        """``action`` against Redis, with its failures as ``LedgerError``."""
        import redis

        with self._lock:
            if self._closed:
                raise LedgerError(f"{self!r} has been closed; open a new RedisLedger")
        try:
            return action(self._redis)
        except redis.RedisError as exc:
            raise LedgerError(
                f"{what} the ledger in Redis ({self.location}) failed ({type(exc).__name__}: "
                f"{exc}); check that Redis is running and that LUABRIDGE_REDIS_URL points at it"
            ) from exc

    def _known_of(self, execution_id: str) -> _Known:
        """This handle's records of ``execution_id`` (made empty when there are none)."""
        with self._lock:
            known = self._known.get(execution_id)
            if known is None:
                known = self._known[execution_id] = _Known()
                while len(self._known) > _CACHED:
                    self._known.popitem(last=False)
            else:
                self._known.move_to_end(execution_id)
            return known

    def _remember(self, execution_id: str, seq: int | None, raw: _Raw, parsed: Any) -> None:
        known = self._known_of(execution_id)
        with self._lock:
            if seq is None:
                known.execution = (raw, parsed)
            else:
                known.calls[seq] = (raw, parsed)

    def _forget(self, execution_id: str) -> None:
        with self._lock:
            self._known.pop(execution_id, None)

    def _compare_and_set(
        self,
        what: str,
        known: tuple[_Raw, Any] | None,
        read: Callable[[redis.Redis], _Raw | None],
        change: Callable[[Any], dict[str, Any]],
        store: Callable[[redis.Redis, _Raw, bytes], Any],
    ) -> tuple[bytes, dict[str, Any]]:
        """Apply ``change`` (old parsed record -> new record; it raises ``LedgerError`` to
        refuse) to a stored record, starting from ``known`` (else one read). ``store`` is the
        compare-and-set script: 1 when it wrote, else the value now stored (None: nothing).
        Returns what was written, raw and parsed."""

        def attempt(r: redis.Redis) -> tuple[bytes, dict[str, Any]]:
            current = known
            while True:
                if current is None:
                    raw = read(r)
                    if raw is None:
                        change(None)  # raises: the record is missing
                        raise AssertionError("change accepted a missing record")
                    current = (raw, json.loads(raw))
                new = change(current[1])
                encoded = _dumps(new).encode("utf-8")
                answer = store(r, current[0], encoded)
                if answer == 1:
                    return encoded, new
                if answer is None:
                    change(None)
                    raise AssertionError("change accepted a missing record")
                current = (answer, json.loads(answer))

        return self._run(what, attempt)

    # -- executions -----------------------------------------------------------------------------

    def create_execution(self, record: ExecutionRecord) -> None:
        stored = {k: v for k, v in record.to_dict().items() if k not in _COUNTED}
        key = self._key("exec", record.execution_id)
        raw = _dumps(stored).encode("utf-8")
        created = self._run(
            "writing to",
            lambda r: self._create(
                keys=[key, self._key("by-start")],
                args=[raw, record.execution_id, record.started_at],
                client=r,
            ),
        )
        if not created:
            raise LedgerError(
                f"execution {record.execution_id!r} is already in the ledger; run it "
                "again to resume it, or use a new execution id"
            )
        self._forget(record.execution_id)
        self._remember(record.execution_id, None, raw, stored)

    def _record(self, raw: bytes | str | None, calls: list[CallEntry]) -> ExecutionRecord | None:
        if raw is None:
            return None
        record = ExecutionRecord.from_dict(json.loads(raw))
        record.calls = len(calls)
        record.writes = sum(1 for c in calls if c.effect != "read")
        return record

    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        def read(r: redis.Redis) -> tuple[Any, Any]:
            pipe = r.pipeline(transaction=True)
            pipe.get(self._key("exec", execution_id))
            pipe.hvals(self._key("calls", execution_id))
            raw, calls = pipe.execute()
            return raw, calls

        raw, calls = self._run("reading", read)
        if raw is not None:
            self._remember(execution_id, None, raw, json.loads(raw))
        return self._record(raw, [CallEntry.from_dict(json.loads(c)) for c in calls])

    def update_execution(
        self,
        execution_id: str,
        *,
        status: str | None = None,
        usage: Mapping[str, Any] | None = None,
        error: Mapping[str, Any] | None = None,
        started_at: float | None = None,
        ended_at: float | None = None,
        resumed: int | None = None,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status
        if usage is not None:
            changes["usage"] = dict(usage)
        if error is not None:
            changes["error"] = dict(error) if error else None
        if started_at is not None:
            changes["started_at"] = started_at
        if ended_at is not None:
            changes["ended_at"] = ended_at or None
        if resumed is not None:
            changes["resumed"] = resumed
        if host is not None:
            changes["host"] = host
        if pid is not None:
            changes["pid"] = pid
        key, index = self._key("exec", execution_id), self._key("by-start")
        start = "" if started_at is None else repr(float(started_at))

        def change(old: Any) -> dict[str, Any]:
            if old is None:
                raise LedgerError(f"execution {execution_id!r} is not in the ledger")
            return {**old, **changes}

        with self._lock:
            entry = self._known.get(execution_id)
            known = None if entry is None else entry.execution
        raw, new = self._compare_and_set(
            "writing to",
            known,
            lambda r: r.get(key),
            change,
            lambda r, old, new: self._set_execution(
                keys=[key, index], args=[old, new, start, execution_id], client=r
            ),
        )
        if ended_at:
            # The run's end: nothing more is written for it until a resume reads it again.
            self._forget(execution_id)
        else:
            self._remember(execution_id, None, raw, new)

    def list_executions(self, limit: int = 20) -> list[ExecutionRecord]:
        count = max(0, int(limit))
        if count == 0:
            return []

        def read(r: redis.Redis) -> list[tuple[Any, Any]]:
            ids = r.zrevrange(self._key("by-start"), 0, count - 1)
            pipe = r.pipeline(transaction=False)
            for raw_id in ids:
                name = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                pipe.get(self._key("exec", name))
                pipe.hvals(self._key("calls", name))
            answers = pipe.execute()
            return list(zip(answers[::2], answers[1::2], strict=True))

        records = []
        for raw, calls in self._run("reading", read):
            record = self._record(raw, [CallEntry.from_dict(json.loads(c)) for c in calls])
            if record is not None:
                records.append(record)
        return records

    # -- calls ----------------------------------------------------------------------------------

    def append_call(self, execution_id: str, entry: CallEntry) -> None:
        exec_key, calls_key = self._key("exec", execution_id), self._key("calls", execution_id)
        data = entry.to_dict()
        data["started_at"] = entry.started_at or time.time()
        raw = _dumps(data).encode("utf-8")
        answer = self._run(
            "writing to",
            lambda r: self._append(keys=[exec_key, calls_key], args=[entry.seq, raw], client=r),
        )
        if answer == -1:
            raise LedgerError(f"execution {execution_id!r} is not in the ledger")
        if answer == 0:
            raise LedgerError(f"execution {execution_id!r} already has a call {entry.seq}")
        self._remember(execution_id, entry.seq, raw, data)

    def update_call(
        self,
        execution_id: str,
        seq: int,
        *,
        state: str,
        result: Any = None,
        idempotency_key: str | None = None,
        at: float | None = None,
    ) -> None:
        calls_key = self._key("calls", execution_id)
        field = str(seq)
        raw, new = self._compare_and_set(
            "writing to",
            self._known_call(execution_id, seq),
            lambda r: r.hget(calls_key, field),
            _call_change(execution_id, seq, state, result, idempotency_key, at),
            lambda r, old, new: self._set_call(keys=[calls_key], args=[field, old, new], client=r),
        )
        self._settled(execution_id, seq, state, raw, new)

    def settle_and_append(self, execution_id: str, outcome: Outcome, entry: CallEntry) -> None:
        # One script: the outcome and the next call's ``sending`` are stored together, or
        # neither is (and each refusal is the one update_call or append_call would give).
        exec_key, calls_key = self._key("exec", execution_id), self._key("calls", execution_id)
        field = str(outcome.seq)
        data = entry.to_dict()
        data["started_at"] = entry.started_at or time.time()
        appended = _dumps(data).encode("utf-8")
        refused: list[int] = []

        def store(r: redis.Redis, old: _Raw, new: bytes) -> Any:
            answer = self._settle_and_append(
                keys=[exec_key, calls_key],
                args=[field, old, new, entry.seq, appended],
                client=r,
            )
            if answer in (-1, 0):
                refused.append(answer)
                return 1  # nothing was written; reported below
            return answer

        raw, new = self._compare_and_set(
            "writing to",
            self._known_call(execution_id, outcome.seq),
            lambda r: r.hget(calls_key, field),
            _call_change(
                execution_id, outcome.seq, outcome.state, outcome.result, None, outcome.at
            ),
            store,
        )
        if refused == [-1]:
            raise LedgerError(f"execution {execution_id!r} is not in the ledger")
        if refused == [0]:
            raise LedgerError(f"execution {execution_id!r} already has a call {entry.seq}")
        self._settled(execution_id, outcome.seq, outcome.state, raw, new)
        self._remember(execution_id, entry.seq, appended, data)

    def _known_call(self, execution_id: str, seq: int) -> tuple[_Raw, Any] | None:
        with self._lock:
            entry = self._known.get(execution_id)
            return None if entry is None else entry.calls.get(seq)

    def _settled(self, execution_id: str, seq: int, state: str, raw: _Raw, new: Any) -> None:
        """Keep what was written of call ``seq``, if it may change again in this run."""
        if state == "sending":
            self._remember(execution_id, seq, raw, new)
            return
        # An outcome: the next change of this call, if any, comes from a resume, which reads
        # the calls again; the handle keeps only the calls in flight.
        with self._lock:
            entry = self._known.get(execution_id)
            if entry is not None:
                entry.calls.pop(seq, None)

    def get_calls(self, execution_id: str) -> list[CallEntry]:
        raw = self._run("reading", lambda r: r.hgetall(self._key("calls", execution_id)))
        calls = []
        for field, value in raw.items():
            data = json.loads(value)
            self._remember(execution_id, int(field), value, data)
            calls.append(CallEntry.from_dict(data))
        return sorted(calls, key=lambda c: c.seq)

    # -- plans ----------------------------------------------------------------------------------

    def save_plan(self, plan_id: str, plan: dict[str, Any], expires_at: float) -> None:
        left_ms = int((float(expires_at) - time.time()) * 1000)
        key = self._key("plan", plan_id)

        def write(r: redis.Redis) -> None:
            if left_ms <= 0:
                r.delete(key)
            else:
                r.set(key, _dumps(plan), px=left_ms)

        self._run("writing to", write)

    def load_plan(self, plan_id: str) -> dict[str, Any] | None:
        raw = self._run("reading", lambda r: r.get(self._key("plan", plan_id)))
        if raw is None:
            return None
        plan = json.loads(raw)
        return plan if isinstance(plan, dict) else None

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        # The connection pool is the process's (luabridge.fleet.redis_client), shared with the
        # rate limiter; closing only stops this handle.
        with self._lock:
            self._closed = True
