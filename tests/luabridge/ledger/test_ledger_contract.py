"""The contract every ledger implementation keeps, run once per implementation.

``ledger_store`` is parametrized over the implementations; it yields a function that opens a
new handle on one fresh, empty store (two handles stand for two processes sharing it).
``ledger`` is the first handle. To put another implementation under the contract, add its
name to ``IMPLEMENTATIONS`` and a branch to ``_opener``; nothing else changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from luabridge.ledger import (
    CallEntry,
    CallState,
    ExecutionRecord,
    ExecutionStatus,
    Ledger,
    LedgerError,
    Outcome,
    RedisLedger,
    SQLiteLedger,
    digest,
)

#: The implementations the contract suite runs against ("sqlite-spooled": SQLite with every
#: execution claimed by the handle that creates it, so its calls go through spool files).
IMPLEMENTATIONS = ["sqlite", "sqlite-spooled", "redis"]

Opener = Callable[[], Ledger]


def _opener(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """A function opening handles on one fresh store; ``request`` can reach a server fixture
    (``request.getfixturevalue(...)``) for an implementation that needs one."""
    if kind == "sqlite":
        path = tmp_path / "ledger.sqlite3"
        return lambda: SQLiteLedger(path)
    if kind == "sqlite-spooled":
        path = tmp_path / "ledger.sqlite3"
        return lambda: _ClaimingLedger(path)
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        return lambda: RedisLedger(url)
    raise AssertionError(f"no opener for ledger implementation {kind!r}")


class _ClaimingLedger(SQLiteLedger):
    """Claims every execution it creates, as a run does (see ``open_journal``)."""

    def create_execution(self, record: ExecutionRecord) -> None:
        super().create_execution(record)
        self.claim(record.execution_id, {})


@pytest.fixture(params=IMPLEMENTATIONS)
def ledger_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens handles on one fresh store of the implementation; all are closed afterwards."""
    opened: list[Ledger] = []
    make = _opener(str(request.param), request, tmp_path)

    def open_handle() -> Ledger:
        handle = make()
        opened.append(handle)
        return handle

    try:
        yield open_handle
    finally:
        for handle in opened:
            handle.close()


@pytest.fixture
def ledger(ledger_store: Opener) -> Ledger:
    return ledger_store()


def execution(execution_id: str = "exec-1", *, started_at: float | None = None) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id,
        status=ExecutionStatus.RUNNING.value,
        script_hash=digest("return 1"),
        input_hash=digest({"email": "a@b.co"}),
        policy={"allow": ["read", "write"], "dry_run": False, "limits": {"calls": 100}},
        accounts={"notes": ["default"]},
        started_at=time.time() if started_at is None else started_at,
        host="host-a",
        pid=1234,
    )


def call(seq: int, *, effect: str = "write", key: str | None = None) -> CallEntry:
    params = {"title": f"note {seq}", "token": "[REDACTED]"}
    return CallEntry(
        seq=seq,
        integration="notes",
        account="default",
        action="add_note",
        effect=effect,
        params=params,
        params_hash=digest(params),
        idempotency_key=key,
        started_at=time.time(),
    )


def test_ledger_execution_round_trip(ledger: Ledger) -> None:
    record = execution()
    ledger.create_execution(record)
    got = ledger.get_execution("exec-1")
    assert got is not None
    assert got.to_dict() == {**record.to_dict(), "calls": 0, "writes": 0}


def test_ledger_get_execution_unknown_is_none(ledger: Ledger) -> None:
    assert ledger.get_execution("nope") is None
    assert ledger.get_calls("nope") == []


def test_ledger_create_execution_twice_refused(ledger: Ledger) -> None:
    ledger.create_execution(execution())
    with pytest.raises(LedgerError, match="already in the ledger"):
        ledger.create_execution(execution())


def test_ledger_update_execution_changes_only_given_fields(ledger: Ledger) -> None:
    ledger.create_execution(execution())
    ledger.update_execution(
        "exec-1",
        status="failed",
        usage={"wall_ms": 12.5, "calls": 2},
        error={"type": "RuntimeError", "message": "boom", "line": 3},
        ended_at=1000.0,
    )
    got = ledger.get_execution("exec-1")
    assert got is not None
    assert (got.status, got.usage, got.ended_at) == (
        "failed",
        {"wall_ms": 12.5, "calls": 2},
        1000.0,
    )
    assert got.error == {"type": "RuntimeError", "message": "boom", "line": 3}
    assert (got.host, got.pid, got.resumed) == ("host-a", 1234, 0)
    ledger.update_execution(
        "exec-1", status="running", resumed=1, ended_at=0, error={}, host="host-b", pid=7
    )
    got = ledger.get_execution("exec-1")
    assert got is not None
    assert (got.status, got.resumed, got.ended_at, got.error) == ("running", 1, None, None)
    assert (got.host, got.pid) == ("host-b", 7)


def test_ledger_update_execution_unknown_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="not in the ledger"):
        ledger.update_execution("nope", status="failed")
    with pytest.raises(LedgerError, match="not in the ledger"):
        ledger.update_execution("nope")


def test_ledger_calls_in_sequence_order(ledger: Ledger) -> None:
    ledger.create_execution(execution())
    for seq in (1, 3, 2):
        ledger.append_call("exec-1", call(seq, effect="read" if seq == 2 else "write"))
    entries = ledger.get_calls("exec-1")
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].state == CallState.SENDING.value
    assert entries[0].params == {"title": "note 1", "token": "[REDACTED]"}
    assert entries[0].attempts == 1 and entries[0].ended_at is None
    got = ledger.get_execution("exec-1")
    assert got is not None and (got.calls, got.writes) == (3, 2)


def test_ledger_append_call_duplicate_seq_refused(ledger: Ledger) -> None:
    ledger.create_execution(execution())
    ledger.append_call("exec-1", call(1))
    with pytest.raises(LedgerError, match="already has a call 1"):
        ledger.append_call("exec-1", call(1))


def test_ledger_append_call_unknown_execution_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="not in the ledger"):
        ledger.append_call("nope", call(1))


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "unknown"])
def test_ledger_call_outcome_after_sending(ledger: Ledger, outcome: str) -> None:
    ledger.create_execution(execution())
    ledger.append_call("exec-1", call(1))
    result = {"success": outcome == "succeeded", "idempotency_key": "k-1"}
    ledger.update_call("exec-1", 1, state=outcome, result=result, idempotency_key="k-1", at=50.0)
    (entry,) = ledger.get_calls("exec-1")
    assert (entry.state, entry.result, entry.idempotency_key) == (outcome, result, "k-1")
    assert entry.ended_at == 50.0


def test_ledger_settle_and_append_writes_both(ledger: Ledger) -> None:
    """A deferred outcome and the next call's ``sending`` go in together."""
    ledger.create_execution(execution())
    ledger.append_call("exec-1", call(1, key="k-1"))
    ledger.settle_and_append(
        "exec-1", Outcome(1, "succeeded", {"success": True}, 40.0), call(2, key="k-2")
    )
    first, second = ledger.get_calls("exec-1")
    assert (first.state, first.result, first.ended_at) == ("succeeded", {"success": True}, 40.0)
    assert (second.seq, second.state, second.idempotency_key) == (2, "sending", "k-2")


def test_ledger_settle_and_append_refusals(ledger: Ledger) -> None:
    """A settle that breaks the transitions, or an append under a taken ``seq``, is refused."""
    ledger.create_execution(execution())
    ledger.append_call("exec-1", call(1))
    ledger.update_call("exec-1", 1, state="succeeded")
    with pytest.raises(LedgerError, match="cannot go from 'succeeded' to 'failed'"):
        ledger.settle_and_append("exec-1", Outcome(1, "failed", None, 1.0), call(2))
    ledger.append_call("exec-1", call(2))
    with pytest.raises(LedgerError, match="already has a call 1"):
        ledger.settle_and_append("exec-1", Outcome(2, "succeeded", None, 1.0), call(1))


def test_sqlite_settle_and_append_is_atomic(tmp_path: Path) -> None:
    """SQLite writes both in one transaction: when the append is refused, the outcome is not
    written either (it stays for the caller to write on its own)."""
    with SQLiteLedger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.create_execution(execution())
        ledger.append_call("exec-1", call(1))
        ledger.append_call("exec-1", call(2))
        with pytest.raises(LedgerError, match="already has a call 1"):
            ledger.settle_and_append("exec-1", Outcome(2, "succeeded", None, 1.0), call(1))
        assert [c.state for c in ledger.get_calls("exec-1")] == ["sending", "sending"]
        with pytest.raises(LedgerError, match="no call 7"):
            ledger.settle_and_append("exec-1", Outcome(7, "succeeded", None, 1.0), call(3))
        assert len(ledger.get_calls("exec-1")) == 2


def test_ledger_call_resent_after_unknown_counts_attempts(ledger: Ledger) -> None:
    ledger.create_execution(execution())
    ledger.append_call("exec-1", call(1, key="k-1"))
    ledger.update_call("exec-1", 1, state="unknown", at=10.0)
    ledger.update_call("exec-1", 1, state="sending", at=20.0)
    (entry,) = ledger.get_calls("exec-1")
    assert (entry.state, entry.attempts, entry.started_at, entry.ended_at) == (
        "sending",
        2,
        20.0,
        None,
    )
    assert entry.idempotency_key == "k-1"
    ledger.update_call("exec-1", 1, state="succeeded", result={"success": True})
    (entry,) = ledger.get_calls("exec-1")
    assert entry.state == "succeeded" and entry.result == {"success": True}


def test_ledger_call_resent_after_failed(ledger: Ledger) -> None:
    ledger.create_execution(execution())
    ledger.append_call("exec-1", call(1))
    ledger.update_call("exec-1", 1, state="failed", result={"success": False})
    ledger.update_call("exec-1", 1, state="sending")
    assert ledger.get_calls("exec-1")[0].attempts == 2


@pytest.mark.parametrize(
    ("path", "new"),
    [
        (["succeeded"], "sending"),
        (["succeeded"], "failed"),
        ([], "sending"),
        (["failed"], "succeeded"),
        (["unknown"], "failed"),
        ([], "delivered"),
    ],
)
def test_ledger_call_transition_refused(ledger: Ledger, path: list[str], new: str) -> None:
    ledger.create_execution(execution())
    ledger.append_call("exec-1", call(1))
    for state in path:
        ledger.update_call("exec-1", 1, state=state)
    before = ledger.get_calls("exec-1")[0]
    with pytest.raises(LedgerError, match="call 1 of execution 'exec-1'"):
        ledger.update_call("exec-1", 1, state=new)
    assert ledger.get_calls("exec-1")[0] == before


def test_ledger_update_call_unknown_refused(ledger: Ledger) -> None:
    ledger.create_execution(execution())
    with pytest.raises(LedgerError, match="has no call 4"):
        ledger.update_call("exec-1", 4, state="succeeded")


def test_ledger_list_executions_newest_first(ledger: Ledger) -> None:
    for n, started in enumerate([100.0, 300.0, 200.0]):
        ledger.create_execution(execution(f"exec-{n}", started_at=started))
    ledger.append_call("exec-2", call(1))
    listed = ledger.list_executions()
    assert [r.execution_id for r in listed] == ["exec-1", "exec-2", "exec-0"]
    assert [r.calls for r in listed] == [0, 1, 0]
    assert [r.execution_id for r in ledger.list_executions(limit=2)] == ["exec-1", "exec-2"]
    assert ledger.list_executions(limit=0) == []


def test_ledger_executions_kept_apart(ledger: Ledger) -> None:
    ledger.create_execution(execution("a"))
    ledger.create_execution(execution("b"))
    ledger.append_call("a", call(1))
    ledger.append_call("b", call(1))
    ledger.update_call("a", 1, state="succeeded")
    assert ledger.get_calls("b")[0].state == "sending"


def test_ledger_second_handle_sees_writes(ledger_store: Callable[[], Ledger]) -> None:
    """Two handles on one store stand for two processes: what one commits, the other reads."""
    first, second = ledger_store(), ledger_store()
    first.create_execution(execution())
    first.append_call("exec-1", call(1, key="k"))
    assert [e.seq for e in second.get_calls("exec-1")] == [1]
    second.update_call("exec-1", 1, state="succeeded", result={"success": True})
    assert first.get_calls("exec-1")[0].state == "succeeded"
    with pytest.raises(LedgerError):
        second.create_execution(execution())


def test_ledger_many_threads_append(ledger: Ledger) -> None:
    ledger.create_execution(execution())
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(25):
                seq = offset * 100 + n
                ledger.append_call("exec-1", call(seq))
                ledger.update_call("exec-1", seq, state="succeeded", result={"n": seq})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    entries = ledger.get_calls("exec-1")
    assert len(entries) == 200
    assert {e.state for e in entries} == {"succeeded"}


def test_ledger_plan_round_trip(ledger: Ledger) -> None:
    plan = {"source": "return 1", "writes": [{"action": "loops.send_event", "params": {}}]}
    ledger.save_plan("plan-1", plan, time.time() + 60)
    assert ledger.load_plan("plan-1") == plan
    ledger.save_plan("plan-1", {"replaced": True}, time.time() + 60)
    assert ledger.load_plan("plan-1") == {"replaced": True}


def test_ledger_plan_unknown_or_expired_is_none(ledger: Ledger) -> None:
    assert ledger.load_plan("nope") is None
    ledger.save_plan("old", {"a": 1}, time.time() - 1)
    assert ledger.load_plan("old") is None


def test_ledger_closed_refuses(ledger_store: Callable[[], Ledger]) -> None:
    handle = ledger_store()
    handle.close()
    handle.close()
    with pytest.raises(LedgerError):
        handle.get_execution("exec-1")
