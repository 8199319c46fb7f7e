"""``luabridge run --execution-id`` and ``luabridge runs [show ID]``, in-process with CliRunner
against a fresh ``--emulator``, each test with a ledger file of its own."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from luabridge.cli import cli

SENDS = """
for i = 1, 3 do
  local r = app.integrations.loops.send_event({email = "ada@example.com", event_name = "e" .. i})
  assert(r.success, r.error)
end
return "sent"
"""


@pytest.fixture(autouse=True)
def ledger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in list(os.environ):
        if var.startswith("LOOPS_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "ledger.sqlite3"
    monkeypatch.setenv("LUABRIDGE_LEDGER", str(path))
    (tmp_path / "s.lua").write_text(SENDS, encoding="utf-8")
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run(*args: str) -> tuple[Result, dict[str, Any]]:
    result = invoke(
        "run",
        "s.lua",
        "--emulator",
        "--isolation",
        "inprocess",
        "--allow",
        "write",
        "--json",
        *args,
    )
    return result, json.loads(result.stdout)


def test_run_execution_id_recorded_and_resumed() -> None:
    result, first = run("--execution-id", "order-1")
    assert result.exit_code == 0 and first["meta"]["executionId"] == "order-1"
    assert first["meta"]["resumed"] is False
    assert [c["seq"] for c in first["calls"]] == [1, 2, 3]
    result, again = run("--execution-id", "order-1")
    assert result.exit_code == 0 and again["meta"]["resumed"] is True
    assert [c.get("replayed") for c in again["calls"]] == [True, True, True]


def test_run_resume_text_summary_says_replayed() -> None:
    run("--execution-id", "order-1")
    result = invoke(
        "run",
        "s.lua",
        "--emulator",
        "--isolation",
        "inprocess",
        "--allow",
        "write",
        "--execution-id",
        "order-1",
    )
    assert result.exit_code == 0
    assert "3 replayed from the run ledger (not sent again)" in result.stdout
    assert "replayed" in result.stdout.splitlines()[-1]


def test_run_resume_other_input_usage_error() -> None:
    run("--execution-id", "order-1")
    result, envelope = run("--execution-id", "order-1", "--input", '{"other": 1}')
    assert result.exit_code == 2
    assert envelope["error"]["type"] == "UsageError"
    assert "different input" in envelope["error"]["message"]
    assert "--force-resume" in envelope["error"]["message"]
    result, envelope = run("--execution-id", "order-1", "--input", '{"other": 1}', "--force-resume")
    assert result.exit_code == 0 and envelope["meta"]["resumed"] is True


def test_run_force_resume_needs_execution_id() -> None:
    result, envelope = run("--force-resume")
    assert result.exit_code == 2 and "needs --execution-id" in envelope["error"]["message"]


@pytest.mark.parametrize(("value", "match"), [("", "non-empty"), ("a" * 201, "201 characters")])
def test_run_bad_execution_id_usage_error(value: str, match: str) -> None:
    result, envelope = run("--execution-id", value)
    assert result.exit_code == 2 and match in envelope["error"]["message"]


def test_runs_lists_recent_executions() -> None:
    run("--execution-id", "order-1")
    run("--execution-id", "order-2")
    run("--execution-id", "order-1")
    result = invoke("runs", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["execution_id"] for r in rows] == ["order-2", "order-1"]
    assert rows[1] | {"started_at": None, "duration_ms": None} == {
        "execution_id": "order-1",
        "status": "succeeded",
        "started_at": None,
        "duration_ms": None,
        "calls": 3,
        "writes": 3,
        "resumed": 1,
    }
    text = invoke("runs").stdout.splitlines()
    assert text[0].split() == ["EXECUTION", "STATUS", "STARTED", "DURATION", "CALLS", "WRITES"]
    assert text[2].split()[:2] == ["order-1", "succeeded"] and "(resumed 1x)" in text[2]
    assert len(json.loads(invoke("runs", "--limit", "1", "--json").stdout)) == 1


def test_runs_show_execution_with_calls() -> None:
    run("--execution-id", "order-1")
    result = invoke("runs", "show", "order-1", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["execution"]["execution_id"] == "order-1"
    assert data["execution"]["status"] == "succeeded"
    assert [(c["seq"], c["action"], c["state"]) for c in data["calls"]] == [
        (1, "send_event", "succeeded"),
        (2, "send_event", "succeeded"),
        (3, "send_event", "succeeded"),
    ]
    assert data["calls"][0]["idempotency_key"].startswith("lb1-")
    # The same time format as luabridge runs --json.
    listed = json.loads(invoke("runs", "--json").stdout)[0]
    assert data["execution"]["started_at"] == listed["started_at"]
    iso = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
    assert re.match(iso, data["execution"]["ended_at"]) and re.match(iso, listed["started_at"])
    assert all(re.match(iso, c["started_at"]) for c in data["calls"])
    text = invoke("runs", "show", "order-1").stdout
    assert "execution order-1: succeeded" in text
    assert "loops.default.send_event" in text and "key lb1-" in text


def test_runs_show_holds_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key given to a script as input is redacted by value in the record and the output."""
    from integrations.loops.emulator import DEMO_KEYS, EmulatorServer

    server = EmulatorServer().start()
    try:
        key = DEMO_KEYS["default"]
        monkeypatch.setenv("LOOPS_API_KEY", key)
        monkeypatch.setenv("LOOPS_BASE_URL", server.base_url)
        source = (
            "local input = ...\nreturn app.integrations.loops.send_event("
            "{email = 'ada@example.com', event_name = 'e', properties = {note = input.k}})"
        )
        (tmp_path / "k.lua").write_text(source, encoding="utf-8")
        result = invoke(
            "run",
            "k.lua",
            "--isolation",
            "inprocess",
            "--allow",
            "write",
            "--json",
            "--execution-id",
            "secret-1",
            "--input",
            json.dumps({"k": key}),
        )
        assert result.exit_code == 0, result.stderr
        shown = invoke("runs", "show", "secret-1", "--json").stdout
        assert key not in shown and "[REDACTED]" in shown
    finally:
        server.stop()
    assert key.encode() not in (tmp_path / "ledger.sqlite3").read_bytes()


def test_runs_show_unknown_usage_error() -> None:
    result = invoke("runs", "show", "nope", "--json")
    assert result.exit_code == 2
    envelope = json.loads(result.stdout)
    assert "no execution 'nope'" in envelope["error"]["message"]
    assert "luabridge runs lists" in envelope["error"]["message"]


def test_runs_empty_ledger_says_so(ledger_file: Path) -> None:
    result = invoke("runs")
    assert result.exit_code == 0 and "no runs recorded" in result.stderr
    assert not ledger_file.exists()
    assert json.loads(invoke("runs", "--json").stdout) == []


def test_runs_ledger_off_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUABRIDGE_LEDGER", "off")
    result = invoke("runs")
    assert result.exit_code == 2 and "the run ledger is off" in result.stderr


def test_run_ledger_off_records_nothing(
    ledger_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LUABRIDGE_LEDGER")
    (tmp_path / "luabridge.toml").write_text("ledger = false\n", encoding="utf-8")
    result, first = run("--execution-id", "order-1")
    assert result.exit_code == 0 and first["meta"]["resumed"] is False
    result, again = run("--execution-id", "order-1")
    assert again["meta"]["resumed"] is False
    # Nothing to resume from, but the keys are the same: the service deduplicates a rerun.
    keys = [c["idempotency_key"] for c in first["calls"]]
    assert keys == [c["idempotency_key"] for c in again["calls"]]
    assert not ledger_file.exists()
    # The id cannot be resumed, and the run says so (on stderr: the envelope stays alone).
    assert "the run ledger is off, so execution 'order-1' is not recorded" in result.stderr
    assert "cannot be resumed" in result.stderr


def test_run_and_submit_empty_execution_id_name_the_flag() -> None:
    for command in ("run", "submit"):
        result = invoke(command, "s.lua", "--execution-id", "")
        assert result.exit_code == 2, result.output
        assert "--execution-id needs a non-empty ID" in result.stderr
        assert "execution_id=" not in result.output


def test_runs_shows_abandoned_run_as_crashed(ledger_file: Path) -> None:
    import socket
    import subprocess
    import sys

    from luabridge.ledger import ExecutionRecord, SQLiteLedger

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with SQLiteLedger(ledger_file) as ledger:
        ledger.create_execution(
            ExecutionRecord(
                execution_id="died",
                status="running",
                script_hash="s",
                input_hash="i",
                policy={},
                accounts={},
                started_at=1.0,
                host=socket.gethostname(),
                pid=gone.pid,
            )
        )
    rows = json.loads(invoke("runs", "--json").stdout)
    assert rows[0]["status"] == "crashed"


def test_run_corrupt_ledger_usage_error(ledger_file: Path) -> None:
    ledger_file.write_bytes(b"not a database at all " * 50)
    result, envelope = run("--execution-id", "order-1")
    assert result.exit_code == 2
    assert "not a luabridge ledger" in envelope["error"]["message"]
    assert "move it aside" in envelope["error"]["message"]
    result = invoke("runs", "--json")
    assert result.exit_code == 2 and "not a luabridge ledger" in result.stdout
