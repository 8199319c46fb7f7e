"""The ``luabridge`` command line, in-process with click's CliRunner and as a real process.

Network tests talk to the session's Loops emulator over HTTP (``emulator`` fixture), with the
accounts configured through the environment as a user would, or use ``--emulator``. Runs use
``--isolation inprocess`` unless the point is the worker process (the timeout tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from workerprocs import worker_children

from integrations.loops.emulator import ADA_CONTACT_ID, ADA_EMAIL, DEMO_KEYS, EmulatorServer
from integrations.loops.local import EMULATED_ACCOUNTS as EMULATOR_ACCOUNTS
from luabridge.cli import cli

ROOT = Path(__file__).resolve().parents[2]
STUCK_IN_C = 'return string.find(string.rep("a", 200000), "a-b")'


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)


def run_json(*args: str, stdin: str | None = None) -> tuple[Result, dict[str, Any]]:
    result = invoke("run", *args, "--isolation", "inprocess", "--json", stdin=stdin)
    return result, json.loads(result.stdout)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Loops account from the developer's environment, no luabridge.toml, no real directory."""
    for var in list(os.environ):
        if var.startswith("LOOPS_") or var == "LUABRIDGE_LOOPS_DIRECTORY":
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def loops_env(emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's emulator as the accounts default, marketing and transactional."""
    monkeypatch.setenv("LOOPS_API_KEY", DEMO_KEYS["default"])
    monkeypatch.setenv("LOOPS_API_KEY_MARKETING", DEMO_KEYS["marketing"])
    monkeypatch.setenv("LOOPS_API_KEY_TRANSACTIONAL", DEMO_KEYS["transactional"])
    monkeypatch.setenv("LOOPS_BASE_URL", emulator.base_url)
    monkeypatch.setenv("LUABRIDGE_LOOPS_DIRECTORY", str(tmp_path / "contacts.sqlite3"))
    return emulator


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- run --------------------------------------------------------------------------------------


def test_run_json_envelope_shape(tmp_path: Path) -> None:
    script = write(tmp_path / "s.lua", 'local input = ...\nprint("hi")\nreturn {n = input.n + 1}')
    result, envelope = run_json(script, "--input", '{"n": 41}')
    assert result.exit_code == 0
    assert list(envelope) == ["ok", "result", "error", "output", "calls", "meta"]
    assert envelope["ok"] is True and envelope["result"] == {"n": 42}
    assert envelope["error"] is None and envelope["output"] == "hi\n" and envelope["calls"] == []
    assert envelope["meta"]["executionId"].startswith("exec_")
    assert isinstance(envelope["meta"]["durationMs"], int | float)
    assert result.stderr == ""


def test_run_json_prints_one_document_even_when_the_script_fails() -> None:
    result, envelope = run_json("-", stdin='print("before")\nerror("boom")')
    assert result.exit_code == 1
    assert envelope["ok"] is False and envelope["result"] is None
    assert envelope["error"] == {"type": "RuntimeError", "message": "script.lua:2: boom", "line": 2}
    assert envelope["output"] == "before\n"
    assert "RuntimeError: script.lua:2: boom" in result.stderr


def test_run_human_output_and_error_line() -> None:
    result = invoke(
        "run", "-", "--isolation", "inprocess", stdin='print("hello")\nlocal x = nil + 1'
    )
    assert result.exit_code == 1
    assert result.stdout == "hello\n"
    assert result.stderr.startswith("RuntimeError: script.lua:2: ")
    assert "  <stdin>:2: local x = nil + 1" in result.stderr


def test_run_human_output_shows_value_then_calls(loops_env: EmulatorServer) -> None:
    source = (
        'print("looking")\n'
        'local r = app.integrations.loops.find_contact({email = "ada@example.com"})\n'
        "return {id = r.contact.id}\n"
    )
    result = invoke("run", "-", "--isolation", "inprocess", stdin=source)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "looking"
    assert json.loads("\n".join(lines[1:4])) == {"id": ADA_CONTACT_ID}
    assert lines[5] == "1 call:"
    assert lines[6].split()[:3] == ["read", "loops.find_contact", "ok"]


def test_run_reads_the_script_from_stdin() -> None:
    result, envelope = run_json("-", stdin="return 1 + 1")
    assert result.exit_code == 0 and envelope["result"] == 2


def test_run_input_from_file_and_from_stdin(tmp_path: Path) -> None:
    data = write(tmp_path / "in.json", '{"name": "Ada"}')
    script = write(tmp_path / "s.lua", "local input = ...\nreturn input.name")
    assert run_json(script, "--input", "@" + data)[1]["result"] == "Ada"
    assert run_json(script, "--input", "@-", stdin='{"name": "Grace"}')[1]["result"] == "Grace"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-", "--input", "{nope"], "not valid JSON"),
        (["-", "--input", "@missing.json"], "cannot read 'missing.json'"),
        (["-", "--input", "@-"], "cannot both use standard input"),
        (["missing.lua"], "cannot read script 'missing.lua'"),
        (["-", "--allow", "wrte"], "unknown effect 'wrte' (did you mean 'write'?)"),
        (["-", "--timeout", "0"], "--timeout"),
        (["-", "--memory", "0"], "--memory"),
        (["-", "--max-calls", "0"], "--max-calls"),
        (["-", "--isolation", "thread"], "--isolation"),
        (["-", "--config", "missing.toml"], "config file 'missing.toml' does not exist"),
        ([], "Missing argument"),
    ],
)
def test_run_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = invoke("run", *args, stdin="return 1")
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args", [["missing.lua"], ["-", "--allow", "wrte"], ["-", "--timeout", "0"], ["-", "--bogus"]]
)
def test_run_usage_errors_with_json_print_one_envelope(args: list[str]) -> None:
    """Under --json a usage error is still exactly one JSON document on stdout, plus stderr."""
    result = invoke("run", *args, "--json", stdin="return 1")
    assert result.exit_code == 2
    envelope = json.loads(result.stdout)
    assert set(envelope) == {"ok", "result", "error", "output", "calls", "meta"}
    assert envelope["ok"] is False and envelope["error"]["type"] == "UsageError"
    assert envelope["error"]["message"] in result.stderr


def test_run_bad_limit_in_config_is_a_usage_error(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[limits]\ntimeout = -1\n")
    result = invoke("run", "-", "--config", config, stdin="return 1")
    assert result.exit_code == 2
    assert "limits.timeout must be a number of seconds over 0 and at most 86400" in result.stderr


def test_run_usage_error_after_the_worker_started_leaves_no_worker(tmp_path: Path) -> None:
    """`run` starts its worker before it reads the config; a bad config still stops it."""
    before = worker_children()
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\ntimeout = -1\n")
    result = invoke("run", "-", "--config", str(config), stdin="return 1")
    assert result.exit_code == 2 and "timeout" in result.output
    end = time.monotonic() + 20
    while True:
        # Waiting for the pool's starter threads too: one may still be spawning a worker that
        # it kills as soon as it sees the pool closed.
        left = worker_children() - before
        starting = any(t.name == "luabridge-worker-start" for t in threading.enumerate())
        if (not left and not starting) or time.monotonic() > end:
            break
        time.sleep(0.05)
    assert left == set()


def test_cli_start_imports_neither_pydantic_nor_the_integrations() -> None:
    """What `luabridge run` needs before its worker starts is light; the rest comes later."""
    code = (
        "import sys, luabridge.cli\n"
        "print(sorted(m for m in ('pydantic', 'httpx', 'integrations.loops') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_without_accounts_says_how_to_configure_one() -> None:
    result = invoke(
        "run", "-", "--isolation", "inprocess", stdin="app.integrations.loops.get_current_user()"
    )
    assert result.exit_code == 1
    assert "set LOOPS_API_KEY or use --emulator" in result.stderr


def test_run_write_without_allow_write_fails_with_the_remedy(loops_env: EmulatorServer) -> None:
    source = 'return app.integrations.loops.create_contact({email = "new@example.com"})'
    result, envelope = run_json("-", stdin=source)
    assert result.exit_code == 1
    assert envelope["error"]["type"] == "PermissionError"
    assert "--allow write" in envelope["error"]["message"]
    assert envelope["calls"][0]["outcome"] == "refused"
    assert loops_env.requests() == []


def test_run_allow_write_sends_it(loops_env: EmulatorServer) -> None:
    source = 'return app.integrations.loops.create_contact({email = "new@example.com"})'
    result, envelope = run_json("-", "--allow", "write", stdin=source)
    assert result.exit_code == 0 and envelope["result"]["success"] is True
    assert loops_env.team("default").find_contact(email="new@example.com") is not None


def test_run_dry_run_sends_nothing(loops_env: EmulatorServer) -> None:
    source = (
        'local found = app.integrations.loops.find_contact({email = "ada@example.com"})\n'
        'local r = app.integrations.loops.update_contact({email = "ada@example.com", '
        'first_name = "Augusta"})\n'
        "return r\n"
    )
    result, envelope = run_json("-", "--allow", "write", "--dry-run", stdin=source)
    assert result.exit_code == 0
    assert envelope["result"] == {"success": True, "dry_run": True}
    read, planned = envelope["calls"]
    assert read["outcome"] == "ok" and planned["outcome"] == "dry_run"
    assert planned["request"]["method"] == "PUT"
    assert planned["request"]["json"] == {"email": "ada@example.com", "firstName": "Augusta"}
    assert [(r["method"], r["path"]) for r in loops_env.requests()] == [
        ("GET", "/api/v1/contacts/find")
    ]
    ada = loops_env.team("default").find_contact(email=ADA_EMAIL)
    assert ada is not None and ada.first_name == "Ada"


def test_run_dry_run_plan_is_easy_to_see(loops_env: EmulatorServer) -> None:
    source = 'app.integrations.loops.create_contact({email = "new@example.com"})'
    result = invoke(
        "run", "-", "--allow", "write", "--dry-run", "--isolation", "inprocess", stdin=source
    )
    assert result.exit_code == 0
    assert "1 call, 1 planned and not sent (dry run):" in result.stdout
    # The plan is the exact request, with the account's base URL.
    assert (
        f"  DRY RUN  loops.create_contact  POST {loops_env.base_url}/contacts/create "
        '{"email": "new@example.com"}' in result.stdout
    )


TWO_EVENTS = (
    "local input = ...\n"
    'app.integrations.loops.send_event({email = "ada@example.com", event_name = "signup"})\n'
    'app.integrations.loops.send_event({email = "ada@example.com", event_name = input.next})\n'
    'return "sent"\n'
)


def _writes(emulator: EmulatorServer) -> list[tuple[str, str, Any]]:
    return [
        (r["method"], r["path"], r["body"]) for r in emulator.requests() if r["method"] != "GET"
    ]


def test_run_dry_run_json_prints_a_plan_id_that_apply_sends(
    loops_env: EmulatorServer, tmp_path: Path
) -> None:
    script = write(tmp_path / "s.lua", TWO_EVENTS)
    result, envelope = run_json(
        script, "--allow", "write", "--dry-run", "--input", '{"next": "welcome"}'
    )
    assert result.exit_code == 0 and envelope["plan_id"].startswith("plan_")
    assert [w["request"]["json"]["eventName"] for w in envelope["plan"]["writes"]] == [
        "signup",
        "welcome",
    ]
    assert _writes(loops_env) == []
    applied = invoke("apply", envelope["plan_id"], "--isolation", "inprocess", "--json")
    assert applied.exit_code == 0, applied.stderr
    body = json.loads(applied.stdout)
    assert body["ok"] is True and body["plan"]["sent"] == 2 and body["plan"]["complete"]
    assert _writes(loops_env) == [
        ("POST", "/api/v1/events/send", w["request"]["json"]) for w in envelope["plan"]["writes"]
    ]
    again = invoke("apply", envelope["plan_id"], "--isolation", "inprocess")
    assert again.exit_code == 2 and "already applied" in again.stderr


def test_apply_that_differs_shows_planned_and_actual(
    loops_env: EmulatorServer, tmp_path: Path
) -> None:
    script = write(tmp_path / "s.lua", TWO_EVENTS)
    _, envelope = run_json(
        script, "--allow", "write", "--dry-run", "--input", '{"next": "welcome"}'
    )
    from luabridge.ledger.sqlite import SQLiteLedger

    with SQLiteLedger(os.environ["LUABRIDGE_LEDGER"]) as ledger:  # the suite's scratch ledger
        data = ledger.load_plan(envelope["plan_id"])
        assert data is not None
        data["input"] = {"next": "goodbye"}  # the script now takes another path
        ledger.save_plan(envelope["plan_id"], data, data["expires_at"])
    applied = invoke("apply", envelope["plan_id"], "--isolation", "inprocess")
    assert applied.exit_code == 1
    assert "PlanMismatchError: write 2 (loops.send_event) differs" in applied.stderr
    assert "<- differs" in applied.stderr and '"goodbye"' in applied.stderr
    assert [b["eventName"] for _, _, b in _writes(loops_env)] == ["signup"]


def test_run_dry_run_prints_how_to_apply(loops_env: EmulatorServer) -> None:
    result = invoke(
        "run",
        "-",
        "--allow",
        "write",
        "--dry-run",
        "--isolation",
        "inprocess",
        "--input",
        '{"next": "welcome"}',
        stdin=TWO_EVENTS,
    )
    assert "2 writes planned" in result.stderr and "luabridge apply plan_" in result.stderr


def test_run_dry_run_on_the_emulator_prints_an_apply_that_works(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[limits]\ntimeout = 10\n")
    source = 'app.integrations.loops.send_event({email = "a@example.com", event_name = "x"})'
    planned = invoke(
        "run",
        "-",
        "--emulator",
        "--config",
        config,
        "--allow",
        "write",
        "--dry-run",
        "--isolation",
        "inprocess",
        stdin=source,
    )
    assert planned.exit_code == 0, planned.stderr
    hint = planned.stderr.strip().splitlines()[-1]
    assert "1 write planned" in hint
    command = hint.split("send exactly this with: ")[1].split()
    assert command[:2] == ["luabridge", "apply"] and command[3:] == [
        "--config",
        config,
        "--emulator",
    ]
    # Without --emulator the apply is refused, and the error says what to add.
    bare = invoke("apply", command[2], "--isolation", "inprocess")
    assert bare.exit_code == 2
    assert "it was planned against an emulator: apply it with one (CLI: add --emulator" in (
        bare.stderr
    )
    applied = invoke(*command[1:], "--isolation", "inprocess")
    assert applied.exit_code == 0, applied.stderr


def test_run_dry_run_with_no_writes_has_nothing_to_apply(loops_env: EmulatorServer) -> None:
    result = invoke("run", "-", "--dry-run", "--isolation", "inprocess", stdin="return 1")
    assert result.exit_code == 0
    assert "no writes planned, so there is nothing to apply" in result.stderr
    assert "send exactly" not in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("apply", "bogus", "--json"), "unknown plan id 'bogus'"),
        (("runs", "show", "nosuch", "--json"), "no execution 'nosuch'"),
        (("run", "-", "--timeout", "1e10", "--json"), "Invalid value for '--timeout'"),
        (("run", "-", "--no-such-flag", "--json"), "No such option"),
    ],
)
def test_json_errors_are_the_run_envelope(args: tuple[str, ...], says: str) -> None:
    result = invoke(*args, stdin="return 1")
    assert result.exit_code == 2
    [line] = result.stdout.splitlines()  # one compact document
    envelope = json.loads(line)
    assert list(envelope) == ["ok", "result", "error", "output", "calls", "meta"]
    assert envelope["ok"] is False and envelope["error"]["type"] == "UsageError"
    assert says in envelope["error"]["message"] and envelope["error"]["line"] is None
    assert envelope["meta"] == {"executionId": None, "resumed": False, "durationMs": None}
    assert "Usage:" not in result.stderr and "Try " not in result.stderr
    assert result.stderr.startswith("Error: ") and says in result.stderr


def test_run_errors_name_the_file_that_was_run(tmp_path: Path) -> None:
    syntax = write(tmp_path / "syn.lua", "local x = 1\nreturn x +\n")
    result = invoke("run", syntax, "--isolation", "inprocess")
    assert result.exit_code == 1
    assert result.stderr.startswith("SyntaxError: syn.lua:3: ")
    runtime = write(tmp_path / "rt.lua", 'local x = 1\nerror("boom")\n')
    result, envelope = run_json(runtime)
    assert envelope["error"]["message"] == "rt.lua:2: boom"
    # Standard input keeps the chunk's own name, and so does a name unsafe to show.
    result, envelope = run_json("-", stdin='error("boom")')
    assert envelope["error"]["message"] == "script.lua:1: boom"
    odd = write(tmp_path / "a b\x1b.lua", 'error("boom")')
    result, envelope = run_json(odd)
    assert envelope["error"]["message"] == "script.lua:1: boom"


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--timeout", "-1", "must be a number of seconds over 0 and at most 86400, got -1.0"),
        ("--memory", "0", "must be a whole number of MiB from 1 to "),
        ("--max-calls", "-3", "must be a whole number from 1 to "),
    ],
)
def test_run_limit_flags_out_of_range_use_one_wording(flag: str, value: str, says: str) -> None:
    result, envelope = run_json("-", flag, value, stdin="return 1")
    assert result.exit_code == 2 and says in envelope["error"]["message"]
    assert "is not in the range" not in result.stderr


def test_run_dry_run_without_a_ledger_says_the_plan_is_not_kept(
    loops_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUABRIDGE_LEDGER", "off")
    result = invoke("run", "-", "--dry-run", "--isolation", "inprocess", stdin="return 1")
    assert result.exit_code == 0 and "the run ledger is off" in result.stderr


def test_apply_unknown_plan_is_a_usage_error() -> None:
    result = invoke("apply", "plan_" + "0" * 32)
    assert result.exit_code == 2 and "unknown plan id" in result.stderr


@pytest.mark.parametrize("emulated", [False, True])
def test_run_bad_limits_in_config_is_a_usage_error(tmp_path: Path, emulated: bool) -> None:
    """--emulator reads the config through the same loader: a bad [limits] is refused too."""
    config = write(tmp_path / "c.toml", '[limits]\ntimeout = "soon"\n')
    flags = ["--emulator"] if emulated else []
    result, envelope = run_json("-", "--config", config, *flags, stdin="return 1")
    assert result.exit_code == 2
    assert envelope["error"]["type"] == "UsageError"
    assert f"{config} [limits]" in envelope["error"]["message"]


def test_run_max_calls_limit(loops_env: EmulatorServer) -> None:
    source = "for i = 1, 3 do app.integrations.loops.list_contacts() end"
    result, envelope = run_json("-", "--max-calls", "2", stdin=source)
    assert result.exit_code == 1 and envelope["error"]["type"] == "CallLimitError"


def test_run_memory_limit() -> None:
    source = "local t = {} for i = 1, 1e7 do t[i] = string.rep('x', 64) .. i end"
    result, envelope = run_json("-", "--memory", "8", stdin=source)
    assert result.exit_code == 1 and envelope["error"]["type"] == "MemoryError"


def test_run_timeout_inside_a_c_function_is_enforced() -> None:
    """A script stuck in one C call is stopped by killing its worker, in the JSON envelope too."""
    started = time.monotonic()
    result = invoke("run", "-", "--timeout", "1", "--json", stdin=STUCK_IN_C)
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    envelope = json.loads(result.stdout)
    assert envelope["ok"] is False and envelope["error"]["type"] == "TimeoutError"
    assert envelope["meta"]["durationMs"] <= 2000
    assert elapsed < 5, "worker start-up plus the timeout took far too long"


def test_run_timeout_in_a_real_process(tmp_path: Path) -> None:
    """``python -m luabridge run`` reports the timeout on stderr with exit code 1."""
    script = write(tmp_path / "stuck.lua", STUCK_IN_C)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "luabridge", "run", script, "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("TimeoutError: ")
    assert proc.stdout == ""
    assert time.monotonic() - started < 10


# -- run --emulator ---------------------------------------------------------------------------


def test_run_emulator_configures_three_seeded_teams(tmp_path: Path) -> None:
    source = (
        "local out = {}\n"
        'for _, a in ipairs(app.accounts("loops")) do\n'
        "  local loops = app.integrations.loops[a.name]\n"
        "  local found = loops.find_contact({email = 'ada@example.com'})\n"
        "  out[a.name] = {team = loops.get_current_user().team_name, ada = found.contact.id,\n"
        "    default = a.default}\n"
        "end\n"
        "return out\n"
    )
    result, envelope = run_json("-", "--emulator", stdin=source)
    assert result.exit_code == 0, envelope["error"]
    assert sorted(envelope["result"]) == sorted(EMULATOR_ACCOUNTS)
    for name, row in envelope["result"].items():
        assert row["team"] == name and row["ada"] == ADA_CONTACT_ID
        assert row["default"] is (name == "default")
    # The contact directory went to a temporary file, not the user's data folder.
    assert not (tmp_path / "xdg").exists()


def test_run_emulator_teams_are_separate() -> None:
    source = (
        'app.integrations.loops.marketing.create_contact({email = "only.marketing@example.com"})\n'
        "local l = app.integrations.loops\n"
        'return {mine = l.marketing.find_contact({email = "only.marketing@example.com"}).contact'
        ' ~= nil, theirs = l.find_contact({email = "only.marketing@example.com"}).contact ~= nil}'
    )
    result, envelope = run_json("-", "--emulator", "--allow", "write", stdin=source)
    assert result.exit_code == 0, envelope["error"]
    assert envelope["result"] == {"mine": True, "theirs": False}


def test_run_emulator_uses_the_accounts_a_config_file_names(tmp_path: Path) -> None:
    config = write(
        tmp_path / "lb.toml",
        '[loops.accounts.sales]\napi_key_env = "SALES_KEY"\ndefault = true\n\n'
        "[loops.accounts.support]\nrate_limit = 5\n",
    )
    source = (
        'local names = {} for _, a in ipairs(app.accounts("loops")) do '
        "names[#names + 1] = a.name .. (a.default and '*' or '') end\n"
        "return {names = names, me = app.integrations.loops.get_current_user().team_name}"
    )
    result, envelope = run_json("-", "--emulator", "--config", config, stdin=source)
    assert result.exit_code == 0, envelope["error"]
    assert envelope["result"] == {"names": ["sales*", "support"], "me": "sales"}


def test_run_emulator_checks_the_config_file(tmp_path: Path) -> None:
    config = write(tmp_path / "lb.toml", "[loops.accounts.Sales]\n")
    result = invoke("run", "-", "--emulator", "--config", config, stdin="return 1")
    assert result.exit_code == 2
    assert "account name 'Sales' is not valid" in result.stderr


# -- docs, schema, actions --------------------------------------------------------------------


def test_docs_loops_is_the_markdown_reference() -> None:
    result = invoke("docs", "loops")
    assert result.exit_code == 0
    assert result.stdout.startswith("# Loops — Lua API Reference\n")
    assert "## create_contact" in result.stdout and "## Multi-Account Usage" in result.stdout
    assert "No account is configured here yet" in result.stdout


def test_docs_lists_configured_accounts(loops_env: EmulatorServer) -> None:
    result = invoke("docs", "loops")
    assert "Accounts configured here: `default`, `marketing`, `transactional`." in result.stdout


def test_docs_one_action() -> None:
    result = invoke("docs", "loops.send_event")
    assert result.exit_code == 0
    assert result.stdout.startswith("## send_event\n")
    assert "## create_contact" not in result.stdout


def test_docs_overview_without_topic() -> None:
    result = invoke("docs")
    assert result.exit_code == 0
    assert "- loops: Loops" in result.stdout
    assert "loops.delete_contact [destructive]" in result.stdout
    # It speaks to the shell, not to a script.
    assert result.stdout.startswith(
        "luabridge: the whole reference of one integration is `luabridge docs <integration>`"
    )
    assert "app.help" not in result.stdout and "accounts in this run" not in result.stdout


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["loops", "--format", "json"], lambda out: json.loads(out)["actions"]["send_event"]),
        (["loops.find_contact", "--format", "json"], lambda out: json.loads(out)["input"]),
        (["--format", "json"], lambda out: json.loads(out)["loops"]["actions"]),
        (["loops", "--format", "luals"], lambda out: "---@meta" in out),
        (["--format", "luals"], lambda out: "---@class app" in out),
    ],
)
def test_docs_formats(args: list[str], check: Any) -> None:
    result = invoke("docs", *args)
    assert result.exit_code == 0
    assert check(result.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lops"], "unknown integration 'lops' (did you mean 'loops'?)"),
        (["loops.send_evnt"], "unknown action 'loops.send_evnt' (did you mean 'send_event'?)"),
        (["loops", "--format", "html"], "'html' is not one of"),
    ],
)
def test_docs_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = invoke("docs", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_schema_of_one_action() -> None:
    result = invoke("schema", "loops", "--action", "create_contact")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["name"] == "loops.create_contact" and schema["effect"] == "write"
    assert "email" in schema["input"]["required"]
    assert "id" in schema["output"]["properties"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["loops"], "missing --action NAME; actions of loops: get_current_user"),
        (["loops", "--action", "find_contcat"], "(did you mean 'find_contact'?)"),
        (["lops", "--action", "find_contact"], "unknown integration 'lops'"),
        ([], "Missing argument"),
    ],
)
def test_schema_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = invoke("schema", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_actions_lists_names_effects_and_summaries() -> None:
    result = invoke("actions")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert rows["loops.create_contact"] == "write"
    assert rows["loops.delete_contact"] == "destructive"
    assert rows["loops.find_contact"] == "read"
    assert "Create a new contact in Loops." in result.stdout


def test_actions_json() -> None:
    result = invoke("actions", "loops", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {"integration", "action", "effect", "summary"} <= set(rows[0])
    assert any(r["action"] == "send_event" and r["effect"] == "write" for r in rows)


def test_actions_unknown_integration_exits_2() -> None:
    result = invoke("actions", "lops")
    assert result.exit_code == 2 and "did you mean 'loops'?" in result.stderr


# -- call -------------------------------------------------------------------------------------


def test_call_prints_data_and_meta(loops_env: EmulatorServer) -> None:
    result = invoke(
        "call", "loops", "--action", "find_contact", "--data", '{"email": "ada@example.com"}',
        "--isolation", "inprocess",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"data", "meta"}
    assert out["data"]["success"] is True and out["data"]["contact"]["id"] == ADA_CONTACT_ID
    assert out["meta"]["executionId"].startswith("exec_")


def test_call_named_account_and_data_file(loops_env: EmulatorServer, tmp_path: Path) -> None:
    data = write(tmp_path / "d.json", "{}")
    result = invoke(
        "call", "loops", "--action", "get_current_user", "--data", "@" + data,
        "--account", "marketing", "--isolation", "inprocess",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["data"] == {"success": True, "team_name": "marketing"}


def test_call_remote_failure_exits_1(loops_env: EmulatorServer) -> None:
    result = invoke(
        "call", "loops", "--action", "send_transactional_email", "--allow", "write",
        "--data", '{"transactional_id": "nope", "email": "ada@example.com"}',
        "--isolation", "inprocess",
    )  # fmt: skip
    assert result.exit_code == 1
    data = json.loads(result.stdout)["data"]
    assert data["success"] is False and data["code"] == "loops.not_found"
    assert "loops.not_found 404" in result.stderr


def test_call_write_without_allow_fails_with_the_remedy(loops_env: EmulatorServer) -> None:
    result = invoke(
        "call", "loops", "--action", "create_contact", "--data", '{"email": "x@example.com"}',
        "--isolation", "inprocess",
    )  # fmt: skip
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["data"] is None and out["error"]["type"] == "PermissionError"
    assert "--allow write" in out["error"]["message"]
    assert result.stderr.startswith("PermissionError: loops.create_contact is a write action")
    assert loops_env.requests() == []


def test_call_dry_run_shows_the_request_and_sends_nothing(loops_env: EmulatorServer) -> None:
    result = invoke(
        "call", "loops", "--action", "delete_contact", "--data", '{"email": "ada@example.com"}',
        "--allow", "destructive", "--dry-run", "--isolation", "inprocess",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["data"] == {"success": True, "dry_run": True}
    assert out["meta"]["dryRun"] is True
    assert out["meta"]["request"]["method"] == "POST"
    assert out["meta"]["request"]["json"] == {"email": "ada@example.com"}
    assert loops_env.requests() == []


def test_call_invalid_parameter_names_the_fix(loops_env: EmulatorServer) -> None:
    result = invoke(
        "call", "loops", "--action", "find_contact", "--data", '{"emial": "ada@example.com"}',
        "--isolation", "inprocess",
    )  # fmt: skip
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ValidationError"
    assert error["message"].startswith("loops.find_contact: unknown parameter 'emial'")
    assert "did you mean 'email'?" in error["message"]


def test_call_emulator() -> None:
    result = invoke(
        "call", "loops", "--action", "list_mailing_lists", "--emulator",
        "--account", "transactional", "--isolation", "inprocess",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lists = json.loads(result.stdout)["data"]["mailing_lists"]
    assert {entry["name"] for entry in lists} == {"Newsletter", "Beta testers"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--action", "find_contact"], "no Loops account is configured; set LOOPS_API_KEY or use"),
        (["--action", "find_contact", "--data", "[1]"], "must be a JSON object of parameters"),
        (["--action", "find_contact", "--data", "{"], "not valid JSON"),
        (["--action", "find_contct", "--emulator"], "(did you mean 'find_contact'?)"),
        (["--action", "find_contact", "--emulator", "--account", "sales"], "configured: default"),
        ([], "Missing option '--action'"),
    ],
)
def test_call_usage_errors_exit_2(args: list[str], message: str) -> None:
    """The message goes to stderr; stdout, always JSON for ``call``, holds the error envelope."""
    result = invoke("call", "loops", *args, "--isolation", "inprocess")
    assert result.exit_code == 2
    assert message in result.stderr
    envelope = json.loads(result.stdout)
    assert envelope["data"] is None and envelope["meta"] == {"executionId": None}
    assert envelope["error"]["type"] == "UsageError"
    assert message in envelope["error"]["message"]


def test_call_account_without_key_says_which_variable(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[loops.accounts.default]\napi_key_env = "MY_LOOPS_KEY"\n')
    result = invoke("call", "loops", "--action", "get_current_user", "--config", config)
    assert result.exit_code == 2
    assert "loops account 'default' has no API key; set MY_LOOPS_KEY" in result.stderr


# -- accounts ---------------------------------------------------------------------------------


def test_accounts_lists_accounts_and_never_the_key(loops_env: EmulatorServer) -> None:
    result = invoke("accounts")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["INTEGRATION", "ACCOUNT", "DEFAULT", "KEY"]
    default = next(line for line in lines if " default " in line)
    assert "present" in default and "LOOPS_API_KEY" in default and "yes" in default
    assert len(lines) == 4
    for key in DEMO_KEYS.values():
        assert key not in result.stdout and key not in result.stderr


def test_accounts_json(loops_env: EmulatorServer) -> None:
    result = invoke("accounts", "--json")
    rows = json.loads(result.stdout)
    assert [r["account"] for r in rows] == ["default", "marketing", "transactional"]
    assert all(r["has_key"] for r in rows)
    assert DEMO_KEYS["default"] not in result.stdout


def test_accounts_none_configured() -> None:
    result = invoke("accounts")
    assert result.exit_code == 0
    assert "No accounts are configured. Loops: set LOOPS_API_KEY or use --emulator" in result.stdout
    assert json.loads(invoke("accounts", "--json").stdout) == []


def test_accounts_missing_key_names_the_variable(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[loops.accounts.ops]\napi_key_env = "OPS_LOOPS_KEY"\n')
    result = invoke("accounts", "--config", config)
    assert result.exit_code == 0
    assert "MISSING" in result.stdout
    assert "loops account 'ops' has no key; set OPS_LOOPS_KEY" in result.stderr


def test_accounts_bad_config_exits_2(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[loops.accounts.Bad-Name]\n")
    result = invoke("accounts", "--config", config)
    assert result.exit_code == 2 and "is not valid" in result.stderr


# -- emulator ---------------------------------------------------------------------------------


def test_emulator_port_in_use_exits_2(emulator: EmulatorServer) -> None:
    result = invoke("emulator", "--port", str(emulator.port))
    assert result.exit_code == 2
    assert "Pick another port" in result.stderr


def test_emulator_rejects_a_negative_rate_limit() -> None:
    result = invoke("emulator", "--rate-limit", "-1")
    assert result.exit_code == 2 and "--rate-limit" in result.stderr


def test_emulator_serves_until_interrupted(tmp_path: Path) -> None:
    """The real process: base URL and keys first, then it answers, then Ctrl+C stops it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "luabridge", "emulator", "--port", "0", "--key", "k_one",
         "--key", "k_two", "--no-seed", "--rate-limit", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        keys = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/v1")
        assert keys == ["k_one", "k_two"]
        response = httpx.get(base_url + "/lists", headers={"Authorization": "Bearer k_one"})
        assert response.status_code == 200 and response.json() == []
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# -- the program ------------------------------------------------------------------------------


def test_python_dash_m_luabridge(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "luabridge", "run", "-", "--json"],
        input="return {answer = 42}",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"] == {"answer": 42}


SUBPROCESS_CASES = [
    (["docs", "loops.send_event"], 0, "## send_event"),
    (["docs", "loops", "--format", "luals"], 0, "---@meta"),
    (["schema", "loops", "--action", "create_contact"], 0, '"input"'),
    (["actions", "loops"], 0, "loops.delete_contact"),
    (["accounts"], 0, "LOOPS_API_KEY"),
    (
        [
            "call",
            "loops",
            "--action",
            "find_contact",
            "--data",
            '{"email": "ada@example.com"}',
            "--emulator",
        ],
        0,
        '"executionId"',
    ),
    (["docs", "loops.nope"], 2, ""),
    (["schema", "loops"], 2, ""),
    (["actions", "lops"], 2, ""),
    (["call", "loops", "--action", "find_contact", "--data", "{"], 2, '"UsageError"'),
    (["accounts", "--config", "missing.toml"], 2, ""),
]


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    SUBPROCESS_CASES,
    ids=[" ".join(c[0][:3]) for c in SUBPROCESS_CASES],
)
def test_subcommand_as_a_real_process(
    tmp_path: Path, args: list[str], code: int, expected: str
) -> None:
    """Each subcommand from ``python -m luabridge``: its exit code and a line of its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPS_")}
    env.update(PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(tmp_path / "xdg"))
    proc = subprocess.run(
        [sys.executable, "-m", "luabridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == code, proc.stderr
    assert expected in proc.stdout
    if code == 2:
        assert proc.stderr.strip(), "a usage error says what was wrong on stderr"


def test_unknown_command_exits_2() -> None:
    result = invoke("rnu")
    assert result.exit_code == 2 and "No such command 'rnu'" in result.stderr


def test_help_and_version() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "docs", "schema", "actions", "call", "accounts", "emulator"):
        assert f"  {command} " in result.stdout
    assert invoke("--version").stdout.startswith("luabridge, version ")


# -- input that once ended in a traceback -------------------------------------------------------

#: name -> (files to write, arguments after `run`, stdin, exit code, words the error must hold)
BAD_INPUT: dict[str, tuple[dict[str, bytes], list[str], str | None, int, str]] = {
    "script_not_utf8": (
        {"s.lua": b'return "\xff"\n'},
        ["s.lua"],
        None,
        2,
        "script 's.lua' is not UTF-8 text (byte 0xff at offset 8, line 1); save it as UTF-8",
    ),
    "stdin_script_not_utf8": (
        {},
        ["-"],
        "\udcff",
        2,
        "the script read from standard input is not UTF-8 text (byte 0xff",
    ),
    "input_file_not_utf8": (
        {"in.json": b'{"a": "\xfe"}'},
        ["-", "--input", "@in.json"],
        "return 1",
        2,
        "'--input' file 'in.json' is not UTF-8 text (byte 0xfe at offset 7, line 1)",
    ),
    "input_nested_1000_deep": (
        {"deep.json": b"[" * 1000 + b"]" * 1000},
        ["-", "--input", "@deep.json"],
        "return 1",
        2,
        "'--input': is nested too deeply to read",
    ),
    "input_nested_100_deep": (
        {"deep.json": b"[" * 100 + b"]" * 100},
        ["-", "--input", "@deep.json"],
        "return 1",
        1,
        "nested deeper than 64 levels",
    ),
    "timeout_1e10": (
        {},
        ["-", "--timeout", "1e10"],
        "return 1",
        2,
        "'--timeout': must be a number of seconds over 0 and at most 86400, got 10000000000.0",
    ),
    "timeout_nan": ({}, ["-", "--timeout", "nan"], "return 1", 2, "'--timeout'"),
    "memory_huge": (
        {},
        ["-", "--memory", "99999999999999999999"],
        "return 1",
        2,
        "'--memory': must be a whole number of MiB from 1 to 1048576, got 99999999999999999999",
    ),
    "max_calls_huge": (
        {},
        ["-", "--max-calls", "1000000"],
        "return 1",
        2,
        "'--max-calls': must be a whole number from 1 to 100000, got 1000000",
    ),
    "config_not_utf8": (
        {"luabridge.toml": b'[limits]\ntimeout = "\xff"\n'},
        ["-"],
        "return 1",
        2,
        "config file 'luabridge.toml' is not UTF-8 text",
    ),
    "config_limit_out_of_range": (
        {"luabridge.toml": b"[limits]\ntimeout = 1e10\n"},
        ["-"],
        "return 1",
        2,
        "luabridge.toml [limits]: limits.timeout must be a number of seconds over 0",
    ),
    "script_50_mb": (
        {"big.lua": b"x" * (50 * 1024 * 1024)},
        ["big.lua"],
        None,
        1,
        "the script is too large (52428800 bytes; limits.source_bytes is 1048576)",
    ),
    "script_with_nul": (
        {"nul.lua": b"local a = 1\nreturn a\x00 + 2\n"},
        ["nul.lua"],
        None,
        1,
        "the script contains a NUL byte (line 2, column 9)",
    ),
}


@pytest.mark.parametrize(
    ("case", "isolation"),
    # Usage errors are found before any worker is involved: one isolation is enough for them.
    [(case, "inprocess") for case in sorted(BAD_INPUT)]
    + [(case, "process") for case in sorted(BAD_INPUT) if BAD_INPUT[case][3] == 1],
)
def test_run_bad_input_prints_one_envelope(tmp_path: Path, case: str, isolation: str) -> None:
    """Each input that once ended in a traceback is one JSON envelope, exit 2 or 1."""
    files, args, stdin, code, words = BAD_INPUT[case]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    runner = CliRunner()
    raw = None if stdin is None else stdin.encode("utf-8", "surrogateescape")
    result = runner.invoke(
        cli, ["run", *args, "--isolation", isolation, "--json"], input=raw, catch_exceptions=False
    )
    assert result.exit_code == code, result.output
    envelope = json.loads(result.stdout)
    assert set(envelope) == {"ok", "result", "error", "output", "calls", "meta"}
    assert envelope["ok"] is False
    assert words in envelope["error"]["message"]
    if code == 2:
        assert envelope["error"]["type"] == "UsageError"
    assert "Traceback" not in result.stderr
    assert words in result.stderr


def test_run_with_stdin_closed_is_a_usage_error(tmp_path: Path) -> None:
    """`luabridge run - <&-`: a real process with no standard input at all."""
    proc = subprocess.run(
        ["sh", "-c", 'exec "$0" -m luabridge run - --json <&-', sys.executable],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["error"]["type"] == "UsageError"
    assert "standard input is closed" in envelope["error"]["message"]
    assert "Traceback" not in proc.stderr


def test_call_data_not_utf8_or_too_deep_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_bytes(b'{"email": "\xff"}')
    (tmp_path / "deep.json").write_bytes(b"[" * 1000 + b"]" * 1000)
    for data, words in (("@bad.json", "is not UTF-8 text"), ("@deep.json", "nested too deeply")):
        result = invoke("call", "loops", "--action", "find_contact", "--data", data)
        assert result.exit_code == 2
        envelope = json.loads(result.stdout)
        assert envelope["error"]["type"] == "UsageError" and words in envelope["error"]["message"]
