"""The shared ledger: executions and calls kept in the fleet's Redis.

Every worker of a fleet records into the same Redis (``LUABRIDGE_REDIS_URL``, see
:mod:`luabridge.fleet`), so a task redelivered to another machine resumes from what the first
one wrote. It relies on ``redis`` (the ``fleet`` extra). Keys, under ``luabridge:ledger:``:

- ``exec:<id>``: the execution record as JSON (without the counted ``calls``/``writes``);
- ``calls:<id>``: a hash of sequence number to the call entry as JSON;
- ``by-start``: a sorted set of execution ids scored by start time, for ``list_executions``;
- ``plan:<id>``: a saved plan as JSON, expiring with the plan.

Each change is one Redis transaction (``WATCH`` then ``MULTI``/``EXEC``: a read-check-write
that is retried when another process changed the same key meanwhile). How durable it is depends
on the Redis server's persistence: run it with ``appendonly yes`` (see docs/fleet.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from luabridge.errors import ConfigError
from luabridge.fleet import describe_url, redis_client
from luabridge.ledger.base import (
    CallEntry,
    ExecutionRecord,
    Ledger,
    LedgerError,
    check_transition,
)

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

__all__ = ["KEY_PREFIX", "RedisLedger"]

#: Prefix of every key the ledger writes.
KEY_PREFIX: Final = "luabridge:ledger:"
_COUNTED: Final = ("calls", "writes")

T = TypeVar("T")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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
        self._lock = threading.Lock()
        self._closed = False

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

    def _transaction(self, what: str, keys: list[str], body: Callable[[Pipeline], None]) -> None:
        """``body`` as one optimistic transaction over ``keys``: it reads after ``WATCH``,
        then queues its writes after ``pipe.multi()``; retried if a key changed meanwhile."""
        self._run(what, lambda r: r.transaction(body, *keys))

    # -- executions -----------------------------------------------------------------------------

    def create_execution(self, record: ExecutionRecord) -> None:
        stored = {k: v for k, v in record.to_dict().items() if k not in _COUNTED}
        key = self._key("exec", record.execution_id)

        def body(pipe: Pipeline) -> None:
            if pipe.exists(key):
                raise LedgerError(
                    f"execution {record.execution_id!r} is already in the ledger; run it "
                    "again to resume it, or use a new execution id"
                )
            pipe.multi()
            pipe.set(key, _dumps(stored))
            pipe.zadd(self._key("by-start"), {record.execution_id: record.started_at})

        self._transaction("writing to", [key], body)

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
        key = self._key("exec", execution_id)

        def body(pipe: Pipeline) -> None:
            raw = pipe.get(key)
            if raw is None:
                raise LedgerError(f"execution {execution_id!r} is not in the ledger")
            stored = json.loads(raw)
            stored.update(changes)
            pipe.multi()
            pipe.set(key, _dumps(stored))
            if started_at is not None:
                pipe.zadd(self._key("by-start"), {execution_id: started_at})

        self._transaction("writing to", [key], body)

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

        def body(pipe: Pipeline) -> None:
            if not pipe.exists(exec_key):
                raise LedgerError(f"execution {execution_id!r} is not in the ledger")
            if pipe.hexists(calls_key, str(entry.seq)):
                raise LedgerError(f"execution {execution_id!r} already has a call {entry.seq}")
            pipe.multi()
            pipe.hset(calls_key, str(entry.seq), _dumps(data))

        self._transaction("writing to", [exec_key, calls_key], body)

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
        now = time.time() if at is None else at
        calls_key = self._key("calls", execution_id)

        def body(pipe: Pipeline) -> None:
            raw = pipe.hget(calls_key, str(seq))
            if raw is None:
                raise LedgerError(f"execution {execution_id!r} has no call {seq}")
            stored = json.loads(raw)
            check_transition(execution_id, seq, stored["state"], state)
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
            pipe.multi()
            pipe.hset(calls_key, str(seq), _dumps(stored))

        self._transaction("writing to", [calls_key], body)

    def get_calls(self, execution_id: str) -> list[CallEntry]:
        raw = self._run("reading", lambda r: r.hvals(self._key("calls", execution_id)))
        calls = [CallEntry.from_dict(json.loads(c)) for c in raw]
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
