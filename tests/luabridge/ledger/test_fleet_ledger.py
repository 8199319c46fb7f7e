"""The Redis ledger's writes: one script per change, compare-and-set from what a handle last
saw, and the stored JSON exactly as written (the scripts never re-encode it)."""

from __future__ import annotations

import json
import time

import pytest
from records import running, sent

from luabridge.ledger import CallEntry, ExecutionRecord, LedgerError, Outcome, RedisLedger


def record(execution_id: str) -> ExecutionRecord:
    return running(execution_id, host="h", pid=1)


def call(seq: int) -> CallEntry:
    return sent(seq)


def commands(url: str) -> dict[str, int]:
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_each_change_is_one_script_call_without_watch(redis_url: str) -> None:
    def one_execution(ledger: RedisLedger, execution_id: str) -> None:
        ledger.create_execution(record(execution_id))
        for seq in (1, 2):
            ledger.append_call(execution_id, call(seq))
            ledger.update_call(execution_id, seq, state="succeeded", result={"ok": True})
        ledger.update_execution(execution_id, status="succeeded", ended_at=time.time())

    with RedisLedger(redis_url) as ledger:
        one_execution(ledger, "e0")  # the first use of each script loads it into Redis
        before = commands(redis_url)
        one_execution(ledger, "e1")
        after = commands(redis_url)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta.get("evalsha", 0) + delta.get("eval", 0) == 6
    assert delta.get("watch", 0) == 0 and delta.get("multi", 0) == 0


def test_a_stale_handle_checks_the_transition_against_redis(redis_url: str) -> None:
    """Handle one last saw call 1 as sending; another handle has since settled it. The first
    one's change is checked against what Redis holds, and refused."""
    with RedisLedger(redis_url) as one, RedisLedger(redis_url) as two:
        one.create_execution(record("e2"))
        one.append_call("e2", call(1))
        two.update_call("e2", 1, state="succeeded", result={"id": "from-two"})
        with pytest.raises(LedgerError, match="cannot go from 'succeeded' to 'failed'"):
            one.update_call("e2", 1, state="failed")
        [entry] = one.get_calls("e2")
    assert (entry.state, entry.result) == ("succeeded", {"id": "from-two"})


def test_a_stale_handle_keeps_the_other_handles_fields(redis_url: str) -> None:
    with RedisLedger(redis_url) as one, RedisLedger(redis_url) as two:
        one.create_execution(record("e3"))
        two.update_execution("e3", usage={"calls": 3}, resumed=2)
        one.update_execution("e3", error={"type": "X", "message": "m", "line": None})
        stored = two.get_execution("e3")
    assert stored is not None
    assert (stored.usage, stored.resumed, stored.error) == (
        {"calls": 3},
        2,
        {"type": "X", "message": "m", "line": None},
    )


def test_a_record_deleted_under_a_handle_is_reported(redis_url: str) -> None:
    import redis

    with RedisLedger(redis_url) as ledger:
        ledger.create_execution(record("e4"))
        ledger.append_call("e4", call(1))
        with redis.Redis.from_url(redis_url) as client:
            client.delete("luabridge:ledger:exec:e4", "luabridge:ledger:calls:e4")
        with pytest.raises(LedgerError, match="has no call 1"):
            ledger.update_call("e4", 1, state="succeeded")
        with pytest.raises(LedgerError, match="is not in the ledger"):
            ledger.update_execution("e4", status="failed")


def test_stored_json_is_exactly_what_was_written(redis_url: str) -> None:
    """Big integers, empty arrays and full-precision times come back as they went in."""
    import redis

    result = {"ids": [], "big": 12345678901234567, "at": 1764759600.123456, "t": "é"}
    with RedisLedger(redis_url) as ledger:
        ledger.create_execution(record("e5"))
        ledger.append_call("e5", call(1))
        ledger.update_call("e5", 1, state="succeeded", result=result, at=1764759601.654321)
        [entry] = ledger.get_calls("e5")
    assert entry.result == result and entry.ended_at == 1764759601.654321
    with redis.Redis.from_url(redis_url) as client:
        raw = client.hget("luabridge:ledger:calls:e5", "1")
    assert raw is not None and json.loads(raw)["result"] == result
    assert b'"ids":[]' in raw


def test_resume_after_another_handle_wrote_goes_on_from_redis(redis_url: str) -> None:
    """A redelivered run (another handle) reads the calls, then changes them in one script
    each; the first handle, meanwhile stale, is checked against what the second wrote."""
    with RedisLedger(redis_url) as one, RedisLedger(redis_url) as two:
        one.create_execution(record("e6"))
        one.append_call("e6", call(1))
        [seen] = two.get_calls("e6")
        assert seen.state == "sending"
        two.update_call("e6", 1, state="unknown")
        two.update_call("e6", 1, state="sending")
        two.update_call("e6", 1, state="succeeded", result={"n": 1})
        with pytest.raises(LedgerError, match="cannot go from 'succeeded'"):
            one.update_call("e6", 1, state="unknown")
        [entry] = one.get_calls("e6")
    assert (entry.state, entry.attempts, entry.result) == ("succeeded", 2, {"n": 1})


def test_settle_and_append_is_one_script_and_atomic(redis_url: str) -> None:
    """The outcome and the next call go in one script; when the append is refused (its
    sequence number is taken) the outcome is not written either, and a stale handle's outcome
    is checked against Redis."""
    with RedisLedger(redis_url) as ledger, RedisLedger(redis_url) as other:
        for execution_id in ("e7-warm", "e7"):  # the first use loads the script
            ledger.create_execution(record(execution_id))
            ledger.append_call(execution_id, call(1))
        ledger.settle_and_append("e7-warm", Outcome(1, "succeeded", None, 1.0), call(2))
        before = commands(redis_url)
        ledger.settle_and_append("e7", Outcome(1, "succeeded", {"n": 1}, 5.0), call(2))
        after = commands(redis_url)
        assert after["evalsha"] - before["evalsha"] == 1
        assert [(c.seq, c.state) for c in ledger.get_calls("e7")] == [
            (1, "succeeded"),
            (2, "sending"),
        ]
        ledger.append_call("e7", call(3))
        with pytest.raises(LedgerError, match="already has a call 3"):
            ledger.settle_and_append("e7", Outcome(2, "succeeded", None, 6.0), call(3))
        assert [c.state for c in other.get_calls("e7")] == ["succeeded", "sending", "sending"]
        other.update_call("e7", 2, state="unknown")
        with pytest.raises(LedgerError, match="cannot go from 'unknown' to 'succeeded'"):
            ledger.settle_and_append("e7", Outcome(2, "succeeded", None, 7.0), call(4))
        assert len(other.get_calls("e7")) == 3
