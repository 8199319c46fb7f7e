"""What only the Redis ledger does: failures when Redis is gone, prefixes, plan expiry in Redis."""

from __future__ import annotations

import socket
import time

import pytest
from records import running

from luabridge.ledger import ExecutionRecord, LedgerError, RedisLedger


def record(execution_id: str) -> ExecutionRecord:
    return running(execution_id)


def test_redis_ledger_unreachable_is_ledger_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ledger = RedisLedger(f"redis://:hunter2@127.0.0.1:{port}/0", timeout=0.5)
    with pytest.raises(LedgerError, match="failed") as info:
        ledger.get_execution("x")
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(ledger)
    assert "LUABRIDGE_REDIS_URL" in str(info.value)


def test_redis_ledger_prefixes_kept_apart(redis_url: str) -> None:
    with RedisLedger(redis_url, prefix="a:") as one, RedisLedger(redis_url, prefix="b:") as two:
        one.create_execution(record("same-id"))
        assert two.get_execution("same-id") is None
        two.create_execution(record("same-id"))
        assert [r.execution_id for r in one.list_executions()] == ["same-id"]


def test_redis_ledger_plan_expires_in_redis(redis_url: str) -> None:
    import redis

    with RedisLedger(redis_url) as ledger:
        ledger.save_plan("p1", {"calls": []}, time.time() + 30)
        ledger.save_plan("p2", {"calls": []}, time.time() - 1)
        assert ledger.load_plan("p2") is None
    ttl = redis.Redis.from_url(redis_url).pttl("luabridge:ledger:plan:p1")
    assert 25_000 < ttl <= 30_000
