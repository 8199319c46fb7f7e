"""The fleet end to end: real redis-server, real ``luabridge worker`` processes, the emulator.

Nothing is mocked and Celery runs for real (no eager mode): runs are queued in Redis, picked up
by worker nodes started as subprocesses, and their requests counted by the emulator at its real
limit of 10 requests per second per team.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fleetprocs import WorkerNode, max_per_window

from integrations.loops.emulator.seed import DEMO_KEYS

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

pytestmark = pytest.mark.slow

TEAM = "marketing"


def fleet_env(redis_url: str, emulator: EmulatorServer, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "LUABRIDGE_"))}
    env.update(
        LUABRIDGE_REDIS_URL=redis_url,
        LOOPS_API_KEY=DEMO_KEYS[TEAM],
        LOOPS_BASE_URL=emulator.base_url,
        LUABRIDGE_LOOPS_DIRECTORY=str(folder / "contacts.sqlite3"),
        LUABRIDGE_LEDGER=str(folder / "ledger.sqlite3"),
    )
    return env


@pytest.fixture
def fleet_timeout() -> float:
    """The fleet's ``[limits] timeout`` (a test parametrizes it to change it)."""
    return 5.0


@pytest.fixture
def fleet_folder(tmp_path: Path, fleet_timeout: float) -> Path:
    """The working directory of the workers and of the test's submitter, with its config."""
    config = f"[limits]\ntimeout = {fleet_timeout}\n"
    (tmp_path / "luabridge.toml").write_text(config, encoding="utf-8")
    return tmp_path


@pytest.fixture
def nodes(
    redis_url: str, emulator: EmulatorServer, fleet_folder: Path
) -> Iterator[list[WorkerNode]]:
    """Two worker nodes of two processes each."""
    env = fleet_env(redis_url, emulator, fleet_folder)
    started: list[WorkerNode] = []
    try:
        for name in ("a", "b"):
            started.append(WorkerNode(fleet_folder, env, 2, name).start())
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def fleet_app(redis_url: str, emulator: EmulatorServer, fleet_folder: Path) -> Iterator[Any]:
    """The test's submitter: a Celery app of the same configuration as the workers."""
    from luabridge.config import load_settings
    from luabridge.tasks import close_app, create_app

    settings = load_settings(
        fleet_folder / "luabridge.toml", environ=fleet_env(redis_url, emulator, fleet_folder)
    )
    app = create_app(settings)
    yield app
    close_app(app)


def arrivals(emulator: EmulatorServer) -> list[tuple[float, dict[str, Any]]]:
    """The team's requests with the time each reached the emulator (its log time less the
    time it took to answer)."""
    found = []
    for entry in emulator.requests():
        if entry["team"] != TEAM:
            continue
        at = datetime.datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).timestamp()
        found.append((at - entry["durationMs"] / 1000, entry))
    return found


LOOKUPS = """
local input = ...
for i = 1, input.n do
  local r = app.integrations.loops.find_contact({email = input.tag .. "-" .. i .. "@example.com"})
  if not r.success then error(r.code .. ": " .. r.error) end
end
return input.tag
"""


@pytest.mark.parametrize("fleet_timeout", [20.0])
def test_fleet_four_processes_keep_to_one_team_limit(
    nodes: list[WorkerNode], fleet_app: Any, emulator: EmulatorServer
) -> None:
    """4 worker processes (2 nodes x 2) share one team for about 10 s: the emulator never
    sees more than 10 requests in a second, refuses none, and the team gets >= 9/s."""
    from luabridge.tasks import submit

    results = [
        submit(LOOKUPS, {"n": 25, "tag": f"task{t}"}, limits={"timeout": 20}, app=fleet_app)
        for t in range(4)
    ]
    envelopes = [r.get(timeout=60) for r in results]
    assert [e["ok"] for e in envelopes] == [True] * 4, envelopes
    seen = arrivals(emulator)
    assert len(seen) == 100
    assert {e["status"] for _, e in seen} == {200}
    times = [t for t, _ in seen]
    assert max_per_window(times) <= 10
    assert (len(times) - 1) / (max(times) - min(times)) >= 9.0
    # The four runs ran side by side, in four processes: each had requests in the first second.
    first = min(times)
    early = {e["query"].split("-")[0] for t, e in seen if t < first + 1.0}
    assert early == {f"email=task{t}" for t in range(4)}


SEND = """
local input = ...
local r = app.integrations.loops.send_event({email = input.email, event_name = "fleet_signup"})
if not r.success then error(r.code .. ": " .. r.error) end
return r
"""


def test_fleet_node_killed_mid_run_every_task_done_once(
    nodes: list[WorkerNode], fleet_app: Any, emulator: EmulatorServer, redis_url: str
) -> None:
    """40 sends across two nodes; one node is SIGKILLed while its two processes each have a
    send in flight (the emulator holds the first four sends for 2 s, then carries them out).
    Its tasks are redelivered and resume from the Redis ledger: all 40 succeed, the emulator
    holds exactly 40 events (the two sends in flight at the kill are not repeated, Loops'
    idempotency answers for them), and it answered no 429."""
    from luabridge.ledger import RedisLedger
    from luabridge.tasks import submit

    emulator.add_fault("slow", count=4, delay=2.0, path="/events/send")
    results = [
        submit(SEND, {"email": f"user{n}@example.com"}, allow="write", app=fleet_app)
        for n in range(40)
    ]
    team = emulator.state.team(TEAM)

    def sent() -> int:
        return sum(1 for e in team.snapshot("events") if e["eventName"] == "fleet_signup")

    def in_flight(ledger: RedisLedger) -> int:
        return sum(
            1
            for r in results
            for call in ledger.get_calls(r.id)
            if call.action == "send_event" and call.state == "sending"
        )

    with RedisLedger(redis_url) as ledger:
        deadline = time.monotonic() + 30
        while in_flight(ledger) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_flight(ledger) == 4 and sent() == 0
    # "sending" is written before the wait for a rate-limit slot: give the four requests the
    # 0.4 s their slots take to reach the emulator, where they wait out the fault.
    time.sleep(0.8)
    assert sent() == 0
    nodes[0].kill()
    killed = time.monotonic()
    envelopes = [r.get(timeout=120) for r in results]
    failed = [e for e in envelopes if not e["ok"]]
    assert failed == []
    assert sent() == 40
    assert 429 not in {e["status"] for _, e in arrivals(emulator)}
    # The dead node's two sends had reached Loops; their resumed runs sent them again with the
    # same key, and Loops' answer (409, key already used) counts as delivered.
    deduplicated = [e for e in envelopes if e["result"].get("deduplicated")]
    assert len(deduplicated) == 2
    # Those tasks came back only once their visibility timeout (18 s for a 5 s fleet) passed.
    assert time.monotonic() - killed >= 8


def test_cli_submit_wait_prints_the_run_envelope(
    nodes: list[WorkerNode], redis_url: str, emulator: EmulatorServer, fleet_folder: Path
) -> None:
    """``luabridge submit --wait --json`` prints what ``luabridge run --json`` prints."""
    from click.testing import CliRunner

    from luabridge.cli import cli

    script = fleet_folder / "user.lua"
    script.write_text("print('hi')\nreturn app.integrations.loops.get_current_user()\n")
    env = fleet_env(redis_url, emulator, fleet_folder)
    config = str(fleet_folder / "luabridge.toml")
    runner = CliRunner()
    args = ["--config", config, "--json"]
    queued = runner.invoke(cli, ["submit", str(script), "--wait", *args], env=env)
    direct = runner.invoke(cli, ["run", str(script), *args], env=env)
    assert (queued.exit_code, direct.exit_code) == (0, 0), queued.output + direct.output
    fleet, local = json.loads(queued.stdout), json.loads(direct.stdout)
    assert set(fleet) == set(local) and set(fleet["meta"]) == set(local["meta"])
    assert (fleet["ok"], fleet["result"], fleet["output"]) == (True, local["result"], "hi\n")
    named = runner.invoke(
        cli,
        ["submit", str(script), "--execution-id", "cli-1", "--wait", "--config", config],
        env=env,
    )
    assert named.exit_code == 0 and '"success": true' in named.stdout
    # The fleet's runs are in its Redis ledger, which luabridge runs reads.
    shown = runner.invoke(cli, ["runs", "show", "cli-1", "--json", "--config", config], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["execution"]["execution_id"] == "cli-1"
    missing = runner.invoke(cli, ["runs", "show", "nope", "--config", config], env=env)
    assert missing.exit_code == 2 and "redis://127.0.0.1:" in missing.output
    failing = fleet_folder / "fail.lua"
    failing.write_text("error('no luck')\n")
    failed = runner.invoke(cli, ["submit", str(failing), "--wait", *args], env=env)
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["error"]["type"] == "RuntimeError"


def test_cli_submit_without_wait_prints_the_execution_id(
    redis_url: str, emulator: EmulatorServer, fleet_folder: Path
) -> None:
    from click.testing import CliRunner

    from luabridge.cli import cli

    script = fleet_folder / "one.lua"
    script.write_text("return 1\n")
    env = fleet_env(redis_url, emulator, fleet_folder)
    config = ["--config", str(fleet_folder / "luabridge.toml")]
    runner = CliRunner()
    plain = runner.invoke(cli, ["submit", str(script), "--execution-id", "job-7", *config], env=env)
    assert (plain.exit_code, plain.stdout) == (0, "job-7\n")
    as_json = runner.invoke(cli, ["submit", str(script), "--json", *config], env=env)
    assert json.loads(as_json.stdout)["state"] == "queued"
    waited = runner.invoke(
        cli, ["submit", str(script), "--wait", "--wait-timeout", "0.5", *config], env=env
    )
    assert waited.exit_code == 2 and "did not finish within 0.5 s" in waited.output


def test_cli_fleet_commands_without_redis_are_usage_errors(
    emulator: EmulatorServer, fleet_folder: Path
) -> None:
    import socket

    from click.testing import CliRunner

    from luabridge.cli import cli

    env = fleet_env("redis://127.0.0.1:1/0", emulator, fleet_folder)
    del env["LUABRIDGE_REDIS_URL"]
    runner = CliRunner()
    config = ["--config", str(fleet_folder / "luabridge.toml")]
    worker = runner.invoke(cli, ["worker", *config], env={**env, "LUABRIDGE_REDIS_URL": ""})
    assert worker.exit_code == 2 and "no Redis is configured" in worker.output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = fleet_folder / "one.lua"
    script.write_text("return 1\n")
    down = {**env, "LUABRIDGE_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    gone = runner.invoke(cli, ["submit", str(script), *config], env=down)
    assert gone.exit_code == 2 and "did not take the run" in gone.output


def test_fleet_task_time_limit_stops_a_task_and_the_worker_goes_on(
    nodes: list[WorkerNode], fleet_app: Any
) -> None:
    """Celery's time limits are a second bound behind the bridge's own: a task given limits
    shorter than its run is stopped by Celery, reported as a timeout, and the workers go on."""
    from luabridge.cli.fleet import _task_envelope
    from luabridge.tasks import TASK_NAME, submit

    busy = "local t = os.clock() while os.clock() - t < 4 do end return 1"
    limits = {"timeout": 5, "instructions": 10**11}
    stuck = fleet_app.send_task(
        TASK_NAME,
        args=[busy],
        kwargs={"limits": limits},
        soft_time_limit=0.5,
        time_limit=1.5,
    )
    envelope = _task_envelope(stuck, 30)
    assert envelope["ok"] is False
    assert envelope["error"]["type"] == "TimeoutError", envelope
    assert stuck.state == "FAILURE"
    after = [submit("return 7", app=fleet_app) for _ in range(4)]
    assert [r.get(timeout=30)["result"] for r in after] == [7] * 4


def test_cli_submit_wait_sees_its_own_run_of_a_known_execution_id(
    redis_url: str, emulator: EmulatorServer, fleet_folder: Path
) -> None:
    """Submitting a known execution id again waits for the new run (resumed, or refused as a
    usage error), never reads the result the earlier run left in Redis; --force-resume
    resumes a changed script."""
    from click.testing import CliRunner

    from luabridge.cli import cli

    env = fleet_env(redis_url, emulator, fleet_folder)
    first = fleet_folder / "first.lua"
    first.write_text(
        "app.integrations.loops.send_event({email = 'w@example.com', event_name = 'one'})\n"
        "return 'first'\n"
    )
    second = fleet_folder / "second.lua"
    second.write_text("return 'second'\n")
    args = ["--execution-id", "fl1", "--allow", "write", "--wait", "--json"]
    args += ["--config", str(fleet_folder / "luabridge.toml")]
    runner = CliRunner()

    def submit(script: Path, *extra: str) -> tuple[int, dict[str, Any]]:
        done = runner.invoke(cli, ["submit", str(script), *args, *extra], env=env)
        return done.exit_code, json.loads(done.stdout)

    node = WorkerNode(fleet_folder, env, 1, "w").start()
    try:
        code, ran = submit(first)
        assert (code, ran["result"], ran["meta"]["resumed"]) == (0, "first", False), ran
        code, refused = submit(second)
        assert code == 2, refused
        assert refused["ok"] is False and refused["error"]["type"] == "UsageError"
        assert "different script" in refused["error"]["message"]
        code, again = submit(first)
        assert (code, again["result"], again["meta"]["resumed"]) == (0, "first", True), again
        code, forced = submit(second, "--force-resume")
        assert (code, forced["result"], forced["meta"]["resumed"]) == (0, "second", True)
    finally:
        node.stop()
    events = emulator.team(TEAM).snapshot("events")
    assert [e["eventName"] for e in events] == ["one"]
    no_id = runner.invoke(cli, ["submit", str(first), "--force-resume"], env=env)
    assert no_id.exit_code == 2 and "needs --execution-id" in no_id.output


def test_submit_wait_never_reads_the_result_of_an_earlier_run_still_going(
    redis_url: str, emulator: EmulatorServer, fleet_folder: Path, fleet_app: Any
) -> None:
    """A known execution id submitted again while its first run is still going (queued behind
    it on a node of one process): the second submission gets its own run's result, not the
    first run's, which ends first."""
    from luabridge.tasks import release_result, submit

    slow = "local t = os.clock() while os.clock() - t < 1.5 do end return 'first'"
    limits = {"instructions": 10**11}
    env = fleet_env(redis_url, emulator, fleet_folder)
    node = WorkerNode(fleet_folder, env, 1, "r").start()
    try:
        first = submit(slow, execution_id="still-going", limits=limits, app=fleet_app)
        second = submit(
            "return 'second'", execution_id="still-going", resume="force", app=fleet_app
        )
        assert first.id != second.id
        assert first.execution_id == second.execution_id == "still-going"
        late, early = second.get(timeout=60), first.get(timeout=60)
        for result in (first, second):
            release_result(result)
    finally:
        node.stop()
    assert (early["result"], early["meta"]["resumed"]) == ("first", False), early
    assert (late["result"], late["meta"]["resumed"]) == ("second", True), late
    assert late["meta"]["executionId"] == "still-going"


def test_submit_resume_takes_only_force(fleet_app: Any) -> None:
    from luabridge.errors import ConfigError
    from luabridge.tasks import submit

    with pytest.raises(ConfigError, match='resume must be None or "force"'):
        submit("return 1", execution_id="r1", resume="always", app=fleet_app)  # type: ignore[arg-type]


def test_fleet_result_in_redis_holds_no_script_or_input(
    redis_url: str, emulator: EmulatorServer, fleet_folder: Path, fleet_app: Any
) -> None:
    """The result Celery keeps in Redis is the redacted envelope, never the task's arguments:
    a key written into the script or passed in the input is not in celery-task-meta-<id>."""
    import redis

    from luabridge.tasks import release_result, submit

    secret = DEMO_KEYS[TEAM]
    source = f"local k = '{secret}'\nlocal input = ...\nreturn #k + #input.token\n"
    env = fleet_env(redis_url, emulator, fleet_folder)
    node = WorkerNode(fleet_folder, env, 1, "s").start()
    try:
        result = submit(source, {"token": secret}, execution_id="secfl", app=fleet_app)
        envelope = result.get(timeout=30)
        release_result(result)
    finally:
        node.stop()
    assert envelope["ok"] is True and envelope["result"] == 2 * len(secret)
    stored = redis.Redis.from_url(redis_url).get(f"celery-task-meta-{result.id}")
    assert stored is not None
    text = stored.decode()
    assert secret not in text
    assert "local k" not in text and '"args"' not in text and '"kwargs"' not in text
