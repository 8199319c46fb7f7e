"""Crash and resume against the emulator: a host process is killed part-way through a script of
50 sends, a new process resumes the execution, and the emulator holds each send exactly once.

The host is a real process (``HOST`` below) running ``Bridge.from_config`` with a worker pool, a
SQLite ledger in the test's folder and the emulator's default team; it is stopped with SIGKILL
once the emulator has recorded some of its sends. Faults planned on the emulator (a connection
cut after the send was stored, 500s, 429s, an answer slower than the client waits) make the
crash land in every state a call can be in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from integrations.loops.emulator import DEMO_KEYS, WELCOME_TEMPLATE_ID
from luabridge.ledger import SQLiteLedger

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

pytestmark = pytest.mark.slow

HOST = textwrap.dedent(
    """
    import json, sys
    from luabridge import Bridge

    config, execution_id, action, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    source = open(sys.argv[5], encoding="utf-8").read()
    with Bridge.from_config(config, workers=1) as bridge:
        result = bridge.run(
            source,
            {"action": action, "n": n, "template": sys.argv[6]},
            allow="write",
            execution_id=execution_id,
            limits={"timeout": 120, "calls": 200},
        )
    print(json.dumps(result.to_dict()))
    """
)

SCRIPT = """
local input = ...
local loops = app.integrations.loops
local failed = {}
for i = 1, input.n do
  local r
  if input.action == "event" then
    r = loops.send_event({email = "ada@example.com", event_name = "step_" .. i})
  else
    r = loops.send_transactional_email({transactional_id = input.template,
      email = "ada@example.com", data_variables = {step = i}})
  end
  if not r.success then failed[#failed + 1] = {i = i, code = r.code, delivered = r.delivered} end
end
return {failed = failed}
"""

STORES = {"event": ("events", "/events/send"), "email": ("sends", "/transactional")}


def delivered(emulator: EmulatorServer, action: str) -> list[Any]:
    """What the emulator stored for the action: event names, or the step of each email."""
    store = STORES[action][0]
    rows = emulator.team("default").snapshot(store)
    if action == "event":
        return [row["eventName"] for row in rows]
    return [row["dataVariables"]["step"] for row in rows]


class Host:
    """Starts host processes for one execution, with their config, ledger and script."""

    def __init__(self, folder: Path, emulator: EmulatorServer, *, timeout: float = 10.0) -> None:
        self.folder = folder
        self.ledger = folder / "ledger.sqlite3"
        self.config = folder / "luabridge.toml"
        self.config.write_text(
            f'ledger = "{self.ledger}"\n'
            "[loops.accounts.default]\n"
            f'base_url = "{emulator.base_url}"\n'
            'api_key_env = "LOOPS_TEST_KEY"\n'
            f"timeout = {timeout}\n",
            encoding="utf-8",
        )
        (folder / "host.py").write_text(HOST, encoding="utf-8")
        (folder / "script.lua").write_text(SCRIPT, encoding="utf-8")

    def start(self, execution_id: str, action: str, n: int = 50) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "LOOPS_TEST_KEY": DEMO_KEYS["default"],
            "LUABRIDGE_LOOPS_DIRECTORY": str(self.folder / "contacts.sqlite3"),
        }
        env.pop("LUABRIDGE_LEDGER", None)  # the config file names the ledger
        return subprocess.Popen(
            [
                sys.executable,
                str(self.folder / "host.py"),
                str(self.config),
                execution_id,
                action,
                str(n),
                str(self.folder / "script.lua"),
                WELCOME_TEMPLATE_ID,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, execution_id: str, action: str) -> dict[str, Any]:
        proc = self.start(execution_id, action)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        envelope: dict[str, Any] = json.loads(out)
        return envelope


def kill_part_way(
    proc: subprocess.Popen[str], emulator: EmulatorServer, action: str, after: int
) -> int:
    """SIGKILL the host once the emulator holds ``after`` of its sends; how many it held."""
    deadline = time.monotonic() + 120
    while len(delivered(emulator, action)) < after:
        assert proc.poll() is None, f"the host ended before the kill: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "the host made no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()
    return len(delivered(emulator, action))


def check_exactly_once(
    emulator: EmulatorServer, host: Host, execution_id: str, action: str, envelope: dict[str, Any]
) -> None:
    assert envelope["ok"] is True, envelope["error"]
    assert envelope["result"]["failed"] == []
    got = delivered(emulator, action)
    expected = [f"step_{i}" for i in range(1, 51)] if action == "event" else list(range(1, 51))
    assert sorted(got, key=str) == sorted(expected, key=str), "a send is missing or doubled"
    assert len(got) == 50
    assert envelope["meta"]["resumed"] is True
    with SQLiteLedger(host.ledger) as ledger:
        entries = ledger.get_calls(execution_id)
        record = ledger.get_execution(execution_id)
    assert [e.seq for e in entries] == list(range(1, 51))
    assert {e.state for e in entries} == {"succeeded"}
    assert record is not None and record.status == "succeeded" and record.resumed == 1


@pytest.mark.parametrize("action", ["event", "email"])
def test_crash_and_resume_sends_each_once(
    emulator: EmulatorServer, tmp_path: Path, action: str
) -> None:
    host = Host(tmp_path, emulator)
    held = kill_part_way(host.start("order-1001", action), emulator, action, after=15)
    assert 15 <= held < 50
    envelope = host.finish("order-1001", action)
    check_exactly_once(emulator, host, "order-1001", action, envelope)
    replayed = sum(1 for c in envelope["calls"] if c.get("replayed"))
    assert held - 1 <= replayed <= held  # the call cut by the kill may be sent again


@pytest.mark.parametrize("action", ["event", "email"])
def test_crash_and_resume_with_faults_sends_each_once(
    emulator: EmulatorServer, tmp_path: Path, action: str
) -> None:
    """Cuts after the send was stored, 500s, 429s and an answer slower than the client waits,
    before and after the kill: still exactly once."""
    path = STORES[action][1]
    host = Host(tmp_path, emulator, timeout=1.5)
    for kind, count, delay in (
        ("cut_after", 2, 0.0),
        ("500", 2, 0.0),
        ("429", 2, 0.0),
        ("slow", 1, 3.0),
        ("cut_after", 1, 0.0),
    ):
        emulator.add_fault(kind, count=count, delay=delay, path=path, method="POST")
    held = kill_part_way(host.start("order-2002", action), emulator, action, after=20)
    assert held < 50
    for kind, count in (("cut_after", 1), ("500", 1), ("429", 1)):
        emulator.add_fault(kind, count=count, path=path, method="POST")
    envelope = host.finish("order-2002", action)
    check_exactly_once(emulator, host, "order-2002", action, envelope)
    statuses = [r["status"] for r in emulator.requests() if r["path"].endswith(path)]
    assert 409 in statuses  # a send that had reached Loops was sent again and deduplicated


def test_kill_while_sending_leaves_sending_then_resume_dedups(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The host dies while a send is in flight: the ledger says ``sending``, and the resumed
    run sends it again with the same key (Loops stores it once, whether or not the first
    attempt got through)."""
    host = Host(tmp_path, emulator, timeout=30)
    emulator.add_fault("slow", count=1, delay=3.0, path="/events/send", method="POST")
    proc = host.start("order-3003", "event", n=3)
    deadline = time.monotonic() + 60
    while True:
        with SQLiteLedger(host.ledger) if host.ledger.exists() else _nothing() as ledger:
            entries = [] if ledger is None else ledger.get_calls("order-3003")
        if entries and entries[0].state == "sending":
            break
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()
    assert delivered(emulator, "event") in ([], ["step_1"])
    envelope = json.loads(_run_to_end(host, "order-3003", 3))
    assert envelope["ok"] and envelope["meta"]["resumed"]
    assert envelope["calls"][0]["idempotency_key"] == entries[0].idempotency_key
    assert sorted(delivered(emulator, "event")) == ["step_1", "step_2", "step_3"]
    with SQLiteLedger(host.ledger) as ledger:
        first = ledger.get_calls("order-3003")[0]
    assert (first.state, first.attempts) == ("succeeded", 2)
    assert first.result is not None
    assert first.result["idempotency_key"] == entries[0].idempotency_key


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _run_to_end(host: Host, execution_id: str, n: int) -> str:
    proc = host.start(execution_id, "event", n=n)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_answer_past_deadline_is_delivery_unknown(emulator: EmulatorServer, tmp_path: Path) -> None:
    """The send is stored but its answer comes after the run's deadline: the result says
    delivered unknown with the key, the ledger says unknown, and a resume finishes it once."""
    host = Host(tmp_path, emulator, timeout=30)
    emulator.add_fault("slow", count=1, delay=2.5, path="/events/send", method="POST")
    source = (
        "local r = app.integrations.loops.send_event({email = 'ada@example.com', "
        "event_name = 'late'}); return r"
    )
    from luabridge import Bridge

    env = {"LOOPS_TEST_KEY": DEMO_KEYS["default"]}
    os.environ["LUABRIDGE_LOOPS_DIRECTORY"] = str(tmp_path / "contacts.sqlite3")
    try:
        with Bridge.from_config(
            host.config, environ=env, isolation="inprocess", ledger=host.ledger
        ) as bridge:
            first = bridge.run(source, allow="write", execution_id="late-1", limits={"timeout": 1})
            call = first.calls[0]
            assert call.outcome == "unknown"
            value = first.value if first.ok else None
            if value is not None:
                assert value["delivered"] == "unknown"
                assert value["idempotency_key"] == call.idempotency_key
            time.sleep(2.0)  # the emulator stores the send once its delay is over
            assert delivered(emulator, "event") == ["late"]
            with SQLiteLedger(host.ledger) as ledger:
                assert ledger.get_calls("late-1")[0].state == "unknown"
            again = bridge.run(source, allow="write", execution_id="late-1", limits={"timeout": 5})
    finally:
        del os.environ["LUABRIDGE_LOOPS_DIRECTORY"]
    assert again.ok and again.value["deduplicated"] is True, again.value
    assert delivered(emulator, "event") == ["late"]


@pytest.mark.parametrize("action", ["event", "email"])
def test_cut_after_processing_until_retries_run_out_is_delivery_unknown(
    emulator: EmulatorServer, tmp_path: Path, action: str
) -> None:
    """Every attempt is stored and its answer cut: the script gets success = false with
    delivered = "unknown" and the key (never "failed" or "check base_url"), the ledger says
    unknown, and resuming delivers nothing more."""
    path = STORES[action][1]
    host = Host(tmp_path, emulator, timeout=5)
    emulator.add_fault("cut_after", count=4, path=path, method="POST")
    from luabridge import Bridge

    env = {"LOOPS_TEST_KEY": DEMO_KEYS["default"]}
    task = {"action": action, "n": 1, "template": WELCOME_TEMPLATE_ID}
    os.environ["LUABRIDGE_LOOPS_DIRECTORY"] = str(tmp_path / "contacts.sqlite3")
    try:
        with Bridge.from_config(
            host.config, environ=env, isolation="inprocess", ledger=host.ledger
        ) as bridge:
            probe = "local input = ...\n" + (
                "return app.integrations.loops.send_event({email = 'ada@example.com', "
                "event_name = 'step_1'})"
                if action == "event"
                else "return app.integrations.loops.send_transactional_email({transactional_id "
                "= input.template, email = 'ada@example.com', data_variables = {step = 1}})"
            )
            first = bridge.run(probe, task, allow="write", execution_id="cut-1")
            assert first.ok, first.error
            value, call = first.value, first.calls[0]
            assert (value["success"], value["delivered"]) == (False, "unknown"), value
            assert value["code"] == "loops.connection_error"
            assert value["idempotency_key"] == call.idempotency_key
            assert "same idempotency_key" in value["error"] and "base_url" not in value["error"]
            assert call.outcome == "unknown"
            with SQLiteLedger(host.ledger) as ledger:
                assert ledger.get_calls("cut-1")[0].state == "unknown"
            assert len(delivered(emulator, action)) == 1
            again = bridge.run(probe, task, allow="write", execution_id="cut-1")
    finally:
        del os.environ["LUABRIDGE_LOOPS_DIRECTORY"]
    assert again.value["success"] is True and again.value["deduplicated"] is True
    assert len(delivered(emulator, action)) == 1


def test_cut_after_keyless_create_is_unknown_not_failed(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A create (no Idempotency-Key) reaches Loops and its answer is cut: it is sent once,
    reported delivered = "unknown" (not a loops.conflict failure), and the ledger says unknown,
    so a resume never sends it again as a "failed" write."""
    host = Host(tmp_path, emulator, timeout=5)
    emulator.add_fault("cut_after", count=1, path="/api/v1/contacts/create")
    from luabridge import Bridge

    env = {"LOOPS_TEST_KEY": DEMO_KEYS["default"]}
    os.environ["LUABRIDGE_LOOPS_DIRECTORY"] = str(tmp_path / "contacts.sqlite3")
    try:
        with Bridge.from_config(
            host.config, environ=env, isolation="inprocess", ledger=host.ledger
        ) as bridge:
            probe = "return app.integrations.loops.create_contact({email = 'cf1@example.com'})"
            first = bridge.run(probe, {}, allow="write", execution_id="cf1")
            assert first.ok, first.error
            assert (first.value["success"], first.value["delivered"]) == (False, "unknown")
            assert first.value["code"] != "loops.conflict"
            assert first.calls[0].outcome == "unknown"
            with SQLiteLedger(host.ledger) as ledger:
                assert ledger.get_calls("cf1")[0].state == "unknown"
    finally:
        del os.environ["LUABRIDGE_LOOPS_DIRECTORY"]
    creates = [e for e in emulator.requests() if e["path"].endswith("/contacts/create")]
    assert [e["status"] for e in creates] == [200]
