"""The ledger as runs use it: execution records, call states, keys, resume and replay.

A small in-memory "outbox" integration stands in for a service: ``send`` deduplicates by an
idempotency key (as a sending API does), ``post`` is a write without one, ``peek`` a read. Its
client can be told to lose the answer of the next request after carrying it out, or to fail
before sending.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from luabridge import (
    AccountSettings,
    Action,
    ActionInput,
    ActionResult,
    APIError,
    Bridge,
    CallContext,
    ConfigError,
    Example,
    Integration,
    TransportError,
)
from luabridge.ledger import LedgerError, SQLiteLedger
from luabridge.ledger.journal import KEY_PREFIX, derive_key

SECRET = "outbox-secret-key-0123456789"


class Outbox:
    """One account's outbox: what was delivered, by key, and the faults planned."""

    def __init__(self, settings: AccountSettings) -> None:
        self.api_key = settings.api_key
        self.delivered: list[dict[str, Any]] = []
        self.keys: set[str] = set()
        self.lose_answer = 0  # carry out the next N requests, then fail as if cut
        self.crash = 0  # raise a bug (not an IntegrationError) after carrying out the next N
        self.refuse = 0  # refuse the next N requests without carrying them out
        self.lock = threading.Lock()

    def deliver(self, item: dict[str, Any], key: str | None) -> bool:
        """Carry ``item`` out; False when its key was already carried out."""
        with self.lock:
            if self.refuse:
                self.refuse -= 1
                raise APIError("the outbox is full", code="outbox.full", status=400)
            if key is not None and key in self.keys:
                return False
            if key is not None:
                self.keys.add(key)
            self.delivered.append(item)
            if self.lose_answer:
                self.lose_answer -= 1
                raise TransportError(
                    "connection lost after sending",
                    code="outbox.connection_error",
                    delivered="unknown",
                )
            if self.crash:
                self.crash -= 1
                raise RuntimeError("local bookkeeping failed")
            return True

    def close(self) -> None:
        pass


class SendIn(ActionInput):
    to: str = Field(description="recipient")
    body: str = Field("", description="text")
    key: str | None = Field(None, description="idempotency key")


class PostIn(ActionInput):
    to: str = Field(description="recipient")


class WaitIn(ActionInput):
    seconds: float = Field(description="how long the service takes to answer")


class Sent(ActionResult):
    key: str | None = Field(None, description="the key sent")
    deduplicated: bool | None = Field(None, description="already carried out")
    n: int | None = Field(None, description="how many items the outbox holds")


def _send(ctx: CallContext, p: SendIn) -> dict[str, Any]:
    fresh = ctx.client.deliver({"to": p.to, "body": p.body, "key": p.key}, p.key)
    return {"key": p.key, "deduplicated": not fresh, "n": len(ctx.client.delivered)}


def _post(ctx: CallContext, p: PostIn) -> dict[str, Any]:
    ctx.client.deliver({"to": p.to}, None)
    return {"n": len(ctx.client.delivered)}


def _wait(ctx: CallContext, p: WaitIn) -> dict[str, Any]:
    ctx.client.deliver({"waited": p.seconds}, None)
    time.sleep(p.seconds)
    return {"n": len(ctx.client.delivered)}


def _peek(ctx: CallContext, p: ActionInput) -> dict[str, Any]:
    return {"n": len(ctx.client.delivered)}


def _plan(ctx: CallContext, p: Any) -> dict[str, Any]:
    return {"method": "POST", "url": "https://outbox.invalid/send", "json": p.model_dump()}


OUTBOX = Integration(
    name="outbox",
    title="Outbox",
    env_prefix="OUTBOX",
    default_base_url="https://outbox.invalid",
    open_client=Outbox,
    actions=(
        Action(
            name="send",
            summary="Send a message (deduplicated by key).",
            input=SendIn,
            output=Sent,
            effect="write",
            handler=_send,
            plan=_plan,
            idempotency_param="key",
            examples=(Example('app.integrations.outbox.send({to = "a"})'),),
        ),
        Action(
            name="post",
            summary="Post a message (no key).",
            input=PostIn,
            output=Sent,
            effect="write",
            handler=_post,
            plan=_plan,
            examples=(Example('app.integrations.outbox.post({to = "a"})'),),
        ),
        Action(
            name="wait",
            summary="A write whose answer takes a while.",
            input=WaitIn,
            output=Sent,
            effect="write",
            handler=_wait,
            plan=_plan,
            examples=(Example("app.integrations.outbox.wait({seconds = 1})"),),
        ),
        Action(
            name="peek",
            summary="Count the messages.",
            input=ActionInput,
            output=Sent,
            effect="read",
            handler=_peek,
            examples=(Example("app.integrations.outbox.peek()"),),
        ),
    ),
)

THREE_SENDS = """
local input = ...
local out = {}
for i = 1, 3 do
  local r = app.integrations.outbox.send({to = "user" .. i, body = input.body})
  out[i] = r
end
return out
"""


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    with SQLiteLedger(tmp_path / "ledger.sqlite3") as made:
        yield made


@pytest.fixture
def bridge(ledger: SQLiteLedger) -> Iterator[Bridge]:
    accounts = {"outbox": {"default": AccountSettings(name="default", api_key=SECRET, base_url="")}}
    # The bridge closes the ledger it is given; the test's own handle stays open.
    with Bridge(
        integrations=[OUTBOX],
        accounts=accounts,
        isolation="inprocess",
        ledger=SQLiteLedger(ledger.path),
    ) as made:
        yield made


def outbox(bridge: Bridge) -> Outbox:
    client = bridge._client("outbox", "default")
    assert isinstance(client, Outbox)
    return client


def run(bridge: Bridge, source: str = THREE_SENDS, **options: Any) -> Any:
    options.setdefault("input", {"body": f"hello {SECRET}"})
    options.setdefault("allow", "write")
    return bridge.run(source, **options)


def test_run_records_execution_and_calls(bridge: Bridge, ledger: SQLiteLedger) -> None:
    result = run(bridge, execution_id="job-1")
    assert result.ok and not result.resumed
    record = ledger.get_execution("job-1")
    assert record is not None
    assert (record.status, record.resumed, record.calls, record.writes) == ("succeeded", 0, 3, 3)
    assert record.policy["allow"] == ["read", "write"] and record.accounts == {
        "outbox": ["default"]
    }
    assert record.usage["calls"] == 3 and record.ended_at is not None
    entries = ledger.get_calls("job-1")
    assert [(e.seq, e.action, e.state) for e in entries] == [
        (1, "send", "succeeded"),
        (2, "send", "succeeded"),
        (3, "send", "succeeded"),
    ]
    assert entries[0].params == {"to": "user1", "body": "hello [REDACTED]"}
    assert entries[0].idempotency_key == result.calls[0].idempotency_key
    assert entries[0].result["key"] == entries[0].idempotency_key


def test_run_ledger_holds_no_secret(bridge: Bridge, ledger: SQLiteLedger) -> None:
    run(bridge, execution_id="job-1")
    raw = ledger.path.read_bytes() + Path(f"{ledger.path}-wal").read_bytes()
    assert SECRET.encode() not in raw


def test_caller_key_holding_a_secret_redacted(bridge: Bridge, ledger: SQLiteLedger) -> None:
    source = "local input = ...; return app.integrations.outbox.send({to = 'a', key = input.k})"
    result = run(bridge, source, input={"k": f"k-{SECRET}"}, execution_id="job-k")
    assert result.calls[0].idempotency_key == "k-[REDACTED]"
    assert ledger.get_calls("job-k")[0].idempotency_key == "k-[REDACTED]"
    raw = ledger.path.read_bytes() + Path(f"{ledger.path}-wal").read_bytes()
    assert SECRET.encode() not in raw
    assert outbox(bridge).keys == {f"k-{SECRET}"}  # the service got the script's real key


def test_keys_derived_from_execution_place_and_params(bridge: Bridge) -> None:
    first = run(bridge, execution_id="job-1")
    keys = [c.idempotency_key for c in first.calls]
    assert all(k.startswith(KEY_PREFIX) and len(k) <= 100 for k in keys)
    assert len(set(keys)) == 3
    canonical = {"to": "user1", "body": f"hello {SECRET}"}
    assert keys[0] == derive_key("job-1", 1, canonical)
    other = run(bridge, execution_id="job-2")
    assert keys[0] != other.calls[0].idempotency_key


def test_keys_same_without_ledger_for_same_execution(ledger: SQLiteLedger) -> None:
    """Without a ledger the keys are still derived, so a rerun of an execution id is
    deduplicated by the service itself."""
    accounts = {"outbox": {"default": AccountSettings(name="default", api_key=SECRET, base_url="")}}
    with Bridge(integrations=[OUTBOX], accounts=accounts, isolation="inprocess") as plain:
        first = run(plain, execution_id="job-1")
        again = run(plain, execution_id="job-1")
        assert [c.idempotency_key for c in first.calls] == [c.idempotency_key for c in again.calls]
        assert [r["deduplicated"] for r in again.value] == [True, True, True]
        assert len(outbox(plain).delivered) == 3
        assert not again.resumed


def test_caller_key_wins(bridge: Bridge) -> None:
    result = run(bridge, 'return app.integrations.outbox.send({to = "a", key = "mine-1"})')
    assert result.value["key"] == "mine-1" and result.calls[0].idempotency_key == "mine-1"


def test_resume_replays_recorded_writes(bridge: Bridge, ledger: SQLiteLedger) -> None:
    run(bridge, execution_id="job-1")
    again = run(bridge, execution_id="job-1")
    assert again.ok and again.resumed
    assert [c.replayed for c in again.calls] == [True, True, True]
    assert [r["replayed"] for r in again.value] == [True, True, True]
    assert again.to_dict()["meta"]["resumed"] is True
    assert again.calls[0].to_dict()["replayed"] is True
    assert len(outbox(bridge).delivered) == 3
    record = ledger.get_execution("job-1")
    assert record is not None and (record.resumed, record.status) == (1, "succeeded")
    assert [e.attempts for e in ledger.get_calls("job-1")] == [1, 1, 1]


def test_resume_reads_run_again(bridge: Bridge, ledger: SQLiteLedger) -> None:
    source = "app.integrations.outbox.post({to = 'a'}); return app.integrations.outbox.peek().n"
    assert run(bridge, source, execution_id="job-1").value == 1
    outbox(bridge).delivered.append({"to": "someone else"})
    again = run(bridge, source, execution_id="job-1")
    assert again.value == 2
    assert [c.replayed for c in again.calls] == [True, False]


def test_resume_resends_unknown_send_with_same_key(bridge: Bridge, ledger: SQLiteLedger) -> None:
    box = outbox(bridge)
    box.lose_answer = 1
    first = run(bridge, execution_id="job-1")
    lost = first.value[0]
    assert (lost["success"], lost["delivered"]) == (False, "unknown")
    assert lost["idempotency_key"] == first.calls[0].idempotency_key
    assert first.calls[0].outcome == "unknown"
    assert [e.state for e in ledger.get_calls("job-1")] == ["unknown", "succeeded", "succeeded"]
    again = run(bridge, execution_id="job-1")
    assert again.value[0]["success"] is True and again.value[0]["deduplicated"] is True
    assert again.calls[0].idempotency_key == first.calls[0].idempotency_key
    assert len(box.delivered) == 3
    entries = ledger.get_calls("job-1")
    assert [e.state for e in entries] == ["succeeded"] * 3
    assert entries[0].attempts == 2


def test_resume_unknown_write_without_key_reported(bridge: Bridge, ledger: SQLiteLedger) -> None:
    """A write with no key whose earlier outcome is unknown is never sent again."""
    box = outbox(bridge)
    box.crash = 1
    source = "return app.integrations.outbox.post({to = 'a'})"
    first = run(bridge, source, execution_id="job-1")
    assert first.value["code"] == "luabridge.internal_error"
    assert first.value["delivered"] == "unknown"
    assert ledger.get_calls("job-1")[0].state == "unknown"
    again = run(bridge, source, execution_id="job-1")
    assert again.value["success"] is False
    assert again.value["code"] == "outbox.outcome_unknown"
    assert "Check in outbox" in again.value["error"]
    assert again.calls[0].outcome == "unknown"
    assert len(box.delivered) == 1


def test_resume_failed_write_sent_again(bridge: Bridge, ledger: SQLiteLedger) -> None:
    """A write the service refused did nothing, so a resume sends it again."""
    outbox(bridge).refuse = 1
    first = run(bridge, execution_id="job-1")
    assert first.value[0]["code"] == "outbox.full" and "delivered" not in first.value[0]
    assert first.calls[0].outcome == "failed"
    assert ledger.get_calls("job-1")[0].state == "failed"
    again = run(bridge, execution_id="job-1")
    assert again.value[0]["success"] is True and not again.value[0]["deduplicated"]
    assert [c.replayed for c in again.calls] == [False, True, True]
    assert ledger.get_calls("job-1")[0].attempts == 2
    assert len(outbox(bridge).delivered) == 3


def test_invalid_call_not_recorded(bridge: Bridge, ledger: SQLiteLedger) -> None:
    source = "local input = ...; return app.integrations.outbox.send({to = input.to})"
    bad = run(bridge, source, input={"to": 1}, execution_id="job-x")
    assert not bad.ok and bad.error.type == "ValidationError"
    assert ledger.get_calls("job-x") == []


def test_resume_different_script_refused(bridge: Bridge) -> None:
    run(bridge, execution_id="job-1")
    with pytest.raises(ConfigError, match=r'different script; .*resume="force"'):
        run(bridge, THREE_SENDS + "\n", execution_id="job-1")
    with pytest.raises(ConfigError, match="different input"):
        run(bridge, execution_id="job-1", input={"body": "other"})


def test_resume_force_runs_anyway(bridge: Bridge) -> None:
    run(bridge, execution_id="job-1")
    forced = run(bridge, THREE_SENDS + "\n", execution_id="job-1", resume="force")
    assert forced.resumed and [c.replayed for c in forced.calls] == [True, True, True]


def test_resume_diverging_call_is_a_new_call(bridge: Bridge, ledger: SQLiteLedger) -> None:
    run(bridge, execution_id="job-1", input={"body": "a"})
    changed = run(bridge, execution_id="job-1", input={"body": "b"}, resume="force")
    assert [c.replayed for c in changed.calls] == [False, False, False]
    assert [c.seq for c in changed.calls] == [4, 5, 6]
    assert len(outbox(bridge).delivered) == 6
    assert len(ledger.get_calls("job-1")) == 6


def test_dry_run_not_recorded(bridge: Bridge, ledger: SQLiteLedger) -> None:
    result = run(bridge, execution_id="job-1", dry_run=True)
    assert result.ok and ledger.get_execution("job-1") is None
    assert result.calls[0].idempotency_key == derive_key(
        "job-1", 1, {"to": "user1", "body": f"hello {SECRET}"}
    )


def test_failed_run_recorded_failed(bridge: Bridge, ledger: SQLiteLedger) -> None:
    result = run(
        bridge, "app.integrations.outbox.post({to = 'a'}); error('boom')", execution_id="j"
    )
    assert not result.ok
    record = ledger.get_execution("j")
    assert record is not None and record.status == "failed"
    assert record.error is not None and "boom" in record.error["message"]


@pytest.mark.parametrize(
    ("execution_id", "match"),
    [("", "non-empty string"), ("x" * 201, "201 characters"), ("a\nb", "control character")],
)
def test_execution_id_checked(bridge: Bridge, execution_id: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run(bridge, execution_id=execution_id)


def test_resume_option_checked(bridge: Bridge) -> None:
    with pytest.raises(ConfigError, match="resume must be None or 'force'"):
        run(bridge, execution_id="j", resume="yes")


def test_execution_running_here_refused(bridge: Bridge) -> None:
    source = "app.integrations.outbox.peek(); return 1"
    from luabridge.ledger import journal

    journal._ACTIVE.add("busy")
    try:
        with pytest.raises(ConfigError, match="already running in this process"):
            run(bridge, source, execution_id="busy")
    finally:
        journal._ACTIVE.discard("busy")
    assert run(bridge, source, execution_id="busy").ok


def test_execution_running_in_live_process_refused(bridge: Bridge, ledger: SQLiteLedger) -> None:
    import os
    import socket
    import subprocess
    import sys

    run(bridge, execution_id="job-1")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ledger.update_execution(
            "job-1", status="running", host=socket.gethostname(), pid=sleeper.pid
        )
        with pytest.raises(ConfigError, match=f"still running in process {sleeper.pid}"):
            run(bridge, execution_id="job-1")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run(bridge, execution_id="job-1").resumed
    assert os.getpid() == ledger.get_execution("job-1").pid  # type: ignore[union-attr]


class _FailingLedger(SQLiteLedger):
    """A ledger whose call writes fail, as a full disk or a held lock would make them."""

    def append_call(self, execution_id: str, entry: Any) -> None:
        raise LedgerError("cannot write to the ledger (disk full)")

    def update_call(self, execution_id: str, seq: int, **changes: Any) -> None:
        raise LedgerError("cannot write to the ledger (disk full)")


def test_ledger_unavailable_nothing_sent(tmp_path: Path) -> None:
    """When the ledger cannot record ``sending``, the request does not leave."""
    accounts = {"outbox": {"default": AccountSettings(name="default", api_key=SECRET, base_url="")}}
    failing = _FailingLedger(tmp_path / "ledger.sqlite3")
    with Bridge(
        integrations=[OUTBOX], accounts=accounts, isolation="inprocess", ledger=failing
    ) as b:
        result = run(b, "return app.integrations.outbox.send({to = 'a'})", execution_id="j")
        assert result.value["code"] == "luabridge.ledger_unavailable"
        assert result.value["retryable"] is True
        assert "was not sent" in result.value["error"] and "disk full" in result.value["error"]
        assert result.calls[0].outcome == "failed"
        assert outbox(b).delivered == []


def test_ledger_outcome_write_fails_result_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The call went out; a ledger that cannot record its outcome is logged, and the script
    still gets the result (a resume resends by key, which the service deduplicates)."""

    class OutcomeFails(SQLiteLedger):
        def update_call(self, execution_id: str, seq: int, **changes: Any) -> None:
            raise LedgerError("cannot write to the ledger (disk full)")

    accounts = {"outbox": {"default": AccountSettings(name="default", api_key=SECRET, base_url="")}}
    handle = OutcomeFails(tmp_path / "ledger.sqlite3")
    with Bridge(
        integrations=[OUTBOX], accounts=accounts, isolation="inprocess", ledger=handle
    ) as b:
        result = run(b, "return app.integrations.outbox.send({to = 'a'})", execution_id="j")
        assert result.value["success"] is True
        assert "could not record the outcome" in caplog.text
        with SQLiteLedger(tmp_path / "ledger.sqlite3") as reader:
            assert reader.get_calls("j")[0].state == "sending"


def test_ledger_path_opened_lazily(tmp_path: Path) -> None:
    accounts = {"outbox": {"default": AccountSettings(name="default", api_key=SECRET, base_url="")}}
    path = tmp_path / "sub" / "ledger.sqlite3"
    with Bridge(integrations=[OUTBOX], accounts=accounts, isolation="inprocess", ledger=path) as b:
        assert not path.exists()
        run(b, "return app.integrations.outbox.peek().n", dry_run=True)
        assert not path.exists()
        assert run(b, "return app.integrations.outbox.peek().n", execution_id="j").ok
    with SQLiteLedger(path) as reader:
        record = reader.get_execution("j")
        assert record is not None and record.status == "succeeded"


def _process_bridge(ledger: SQLiteLedger) -> Bridge:
    accounts = {"outbox": {"default": AccountSettings(name="default", api_key=SECRET, base_url="")}}
    return Bridge(
        integrations=[OUTBOX],
        accounts=accounts,
        isolation="process",
        workers=1,
        ledger=SQLiteLedger(ledger.path),
    )


def test_call_in_progress_at_time_limit_is_in_calls(ledger: SQLiteLedger) -> None:
    """The run's time limit strikes while a write waits for its answer: the call is in
    result.calls as unknown, and the ledger gets its outcome once the answer comes."""
    source = "app.integrations.outbox.post({to = 'a'}); app.integrations.outbox.wait({seconds = 2})"
    with _process_bridge(ledger) as b:
        result = b.run(source, allow="write", execution_id="slow-1", limits={"timeout": 0.5})
        assert result.error is not None and result.error.type == "TimeoutError"
        assert [(c.action, c.outcome) for c in result.calls] == [
            ("post", "ok"),
            ("wait", "unknown"),
        ]
        assert "in progress" in (result.calls[1].error or "")
        assert ledger.get_calls("slow-1")[1].state == "sending"
        time.sleep(2.5)
        assert ledger.get_calls("slow-1")[1].state == "succeeded"
        record = ledger.get_execution("slow-1")
        assert record is not None and record.status == "failed"


def test_call_in_progress_when_worker_dies_is_in_calls(ledger: SQLiteLedger) -> None:
    """The worker is killed while the bridge serves its call: the call still finishes in the
    host, and the crashed run reports it with its outcome."""
    source = "app.integrations.outbox.wait({seconds = 1.5}); return 1"
    with _process_bridge(ledger) as b:
        pool = b._worker_pool()
        killer = threading.Timer(
            0.7, lambda: [os.kill(pid, signal.SIGKILL) for pid in pool.pids(busy=True)]
        )
        killer.start()
        result = b.run(source, allow="write", execution_id="died-1", limits={"timeout": 10})
        killer.join()
        assert result.error is not None and result.error.type == "WorkerCrashError"
        assert [(c.action, c.outcome) for c in result.calls] == [("wait", "ok")]
        assert ledger.get_calls("died-1")[0].state == "succeeded"
        record = ledger.get_execution("died-1")
        assert record is not None and record.status == "crashed"


class _WriteLog(SQLiteLedger):
    """A SQLite ledger that logs each call write it is asked for, with the states seen."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[str] = []

    def append_call(self, execution_id: str, entry: Any) -> None:
        self.writes.append(f"append {entry.seq}")
        super().append_call(execution_id, entry)

    def update_call(self, execution_id: str, seq: int, **changes: Any) -> None:
        self.writes.append(f"update {seq} {changes['state']}")
        super().update_call(execution_id, seq, **changes)

    def settle_and_append(self, execution_id: str, outcome: Any, entry: Any) -> None:
        self.writes.append(f"settle {outcome.seq} {outcome.state} + append {entry.seq}")
        super().settle_and_append(execution_id, outcome, entry)


def test_deferred_outcomes_ride_with_the_next_sending(tmp_path: Path) -> None:
    """A read's and a keyed send's outcome are written with the next call's ``sending`` (one
    transaction per call); a keyless write's outcome at once, since a resume cannot repeat
    it; the last deferred outcome with the run's end. Every call ends in its real state."""
    accounts = {"outbox": {"default": AccountSettings(name="default", api_key=SECRET, base_url="")}}
    handle = _WriteLog(tmp_path / "ledger.sqlite3")
    script = """
        local o = app.integrations.outbox
        o.send({to = "a"})
        o.send({to = "b"})
        o.post({to = "c"})
        o.peek()
        return true
    """
    with Bridge(
        integrations=[OUTBOX], accounts=accounts, isolation="inprocess", ledger=handle
    ) as b:
        assert run(b, script, execution_id="mix").ok
        assert handle.writes == [
            "append 1",
            "settle 1 succeeded + append 2",
            "settle 2 succeeded + append 3",
            "update 3 succeeded",
            "append 4",
            "update 4 succeeded",
        ]
    with SQLiteLedger(tmp_path / "ledger.sqlite3") as reader:
        assert [c.state for c in reader.get_calls("mix")] == ["succeeded"] * 4
        assert reader.get_execution("mix").status == "succeeded"  # type: ignore[union-attr]


def test_lost_deferred_outcome_resumes_as_delivered(tmp_path: Path) -> None:
    """A host that dies with a keyed send's outcome not yet written leaves it ``sending``; the
    resume sends it again with the same key, the service reports a duplicate, and the call is
    recorded as succeeded without a second delivery."""
    accounts = {"outbox": {"default": AccountSettings(name="default", api_key=SECRET, base_url="")}}

    class DiesBeforeTheEnd(SQLiteLedger):
        # While ``gone``, as if the host died after the send returned: no later call write
        # reaches the file.
        gone = True

        def update_call(self, execution_id: str, seq: int, **changes: Any) -> None:
            if self.gone:
                raise LedgerError("the host is gone")
            super().update_call(execution_id, seq, **changes)

    handle = DiesBeforeTheEnd(tmp_path / "ledger.sqlite3")
    with Bridge(
        integrations=[OUTBOX], accounts=accounts, isolation="inprocess", ledger=handle
    ) as b:
        first = run(b, "return app.integrations.outbox.send({to = 'a'})", execution_id="lost")
        assert first.value["success"] is True
        box = outbox(b)
        with SQLiteLedger(tmp_path / "ledger.sqlite3") as reader:
            assert reader.get_calls("lost")[0].state == "sending"
        # The resume runs on the same outbox (the service), with the ledger working again.
        handle.gone = False
        again = run(b, "return app.integrations.outbox.send({to = 'a'})", execution_id="lost")
        assert again.resumed
        assert again.value["success"] is True and again.value["deduplicated"] is True
        assert len(box.delivered) == 1
    with SQLiteLedger(tmp_path / "ledger.sqlite3") as reader:
        assert [c.state for c in reader.get_calls("lost")] == ["succeeded"]
