"""The worker pool: hard kills, crash reports, recycling, OS limits, secrets, parity, threads."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import Field

from luabridge import (
    ActionInput,
    ActionResult,
    Bridge,
    CallContext,
    ConfigError,
    Example,
    Integration,
    pool as worker_module,
)
from luabridge.action import Action
from luabridge.errors import ERROR_TYPES
from luabridge.limits import Limits
from luabridge.pool import WorkerPool
from luabridge.sandbox import Reply


def _fixtures() -> ModuleType:
    """This directory's conftest, loaded by path: another test directory may own the name."""
    spec = importlib.util.spec_from_file_location(
        "luabridge_runtime_fixtures", Path(__file__).with_name("conftest.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


_conf = _fixtures()
NOTES, NOTES_KEYS, make_bridge = _conf.NOTES, _conf.NOTES_KEYS, _conf.make_bridge

C_STALL = 'return string.find(string.rep("a", 200000), "a-b")'
DOCS = Path(__file__).parents[2] / "docs"


class NullHost:
    """A host with no integrations, for driving a :class:`WorkerPool` directly."""

    spec: dict[str, Any]

    def __init__(self) -> None:
        self.spec = {}

    def call(self, integration: str, account: str, action: str, params: str) -> Reply:
        return ("raise", "no actions here", "RuntimeError")

    def help(self, topic: str | None) -> Reply:
        return ("ok", "no help", None)

    def schema(self, name: str) -> Reply:
        return ("raise", "no schemas", "RuntimeError")

    def accounts(self, name: str) -> Reply:
        return ("ok", [], None)

    def explain(self, integration: str, account: str | None, name: str | None) -> str:
        return "unknown name"


def pool_of(bridge: Bridge) -> WorkerPool:
    pool = bridge._worker_pool()
    assert isinstance(pool, WorkerPool)
    return pool


def wait_for_idle(pool: WorkerPool, count: int, timeout: float = 20.0) -> list[int]:
    """The idle workers' pids once ``count`` of them are up."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = pool.pids(busy=False)
        if len(pids) >= count:
            return pids
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} idle workers after {timeout} s")


def wait_for_busy(pool: WorkerPool, timeout: float = 10.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        busy = pool.pids(busy=True)
        if busy:
            return busy[0]
        time.sleep(0.01)
    raise AssertionError("no worker became busy")


@pytest.fixture
def one_worker() -> Iterator[Bridge]:
    """A process-isolated notes bridge with a single worker, so its pid is unambiguous."""
    b = make_bridge(isolation="process", workers=1)
    yield b
    b.close()


@pytest.fixture
def null_pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(size=1, max_runs=3)
    yield pool
    pool.close()


@pytest.fixture
def lone_pool() -> Iterator[WorkerPool]:
    """One worker and no reserve: a run that loses its worker waits for a fresh one."""
    pool = WorkerPool(size=1, reserve=False)
    yield pool
    pool.close()


def run_in_pool(pool: WorkerPool, source: str, **limits: Any) -> Any:
    return pool.run(source, None, NullHost(), Limits(**limits), time.monotonic())


# -- hard kill of a script stuck in C ---------------------------------------------------------


def test_worker_c_call_stall_timeout_replaces_worker(one_worker: Bridge) -> None:
    """A pathological string.find never returns to the VM; the kill still ends it in time."""
    pool = pool_of(one_worker)
    (before,) = wait_for_idle(pool, 1)
    t0 = time.monotonic()
    result = one_worker.run(C_STALL, limits={"timeout": 1})
    elapsed = time.monotonic() - t0
    assert not result.ok and result.error is not None
    assert result.error.type == "TimeoutError"
    assert elapsed < 1 + 1.0, elapsed
    after = one_worker.run('return "next"')
    assert after.ok and after.value == "next"
    assert before not in pool.pids()


def test_worker_c_call_stall_inprocess_not_bounded_by_kill() -> None:
    """In-process runs have no kill: a stall runs past the timeout, then ends as TimeoutError."""
    b = make_bridge(isolation="inprocess")
    t0 = time.monotonic()
    result = b.run('return string.find(string.rep("a", 12000), "a-b")', limits={"timeout": 0.05})
    elapsed = time.monotonic() - t0
    b.close()
    assert elapsed > 0.05
    assert not result.ok and result.error is not None
    assert result.error.type == "TimeoutError"


# -- crashes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL, signal.SIGABRT])
def test_worker_crash_reported_and_replaced(one_worker: Bridge, sig: signal.Signals) -> None:
    """A worker that dies mid-run (a native crash, the OOM killer) is a clean WorkerCrashError."""
    pool = pool_of(one_worker)
    wait_for_idle(pool, 1)
    box: list[Any] = []
    thread = threading.Thread(
        target=lambda: box.append(
            one_worker.run("while true do end", limits={"timeout": 10, "instructions": 10**12})
        )
    )
    t0 = time.monotonic()
    thread.start()
    pid = wait_for_busy(pool)
    time.sleep(0.1)
    os.kill(pid, sig)
    thread.join(10)
    assert time.monotonic() - t0 < 5
    (result,) = box
    assert not result.ok and result.error is not None
    assert result.error.type == "WorkerCrashError"
    assert sig.name in result.error.message
    assert "WorkerCrashError" in ERROR_TYPES
    after = one_worker.run("return 41 + 1")
    assert after.ok and after.value == 42
    assert pid not in pool.pids()


def test_worker_crash_error_type_documented() -> None:
    for page in ("threat-model.md", "guide-scripts.md"):
        assert "WorkerCrashError" in (DOCS / page).read_text(), page


def test_worker_dead_while_idle_is_replaced_before_the_next_run(one_worker: Bridge) -> None:
    pool = pool_of(one_worker)
    (pid,) = wait_for_idle(pool, 1)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    result = one_worker.run('return "fresh"')
    assert result.ok and result.value == "fresh"


# -- recycling --------------------------------------------------------------------------------


def test_worker_recycled_after_max_runs(null_pool: WorkerPool) -> None:
    seen = []
    for _ in range(4):
        (pid,) = wait_for_idle(null_pool, 1)
        outcome = run_in_pool(null_pool, "return 1")
        assert outcome.ok and outcome.value == 1
        seen.append(pid)
    assert seen[0] == seen[1] == seen[2]
    assert seen[3] != seen[0]


def _reserve_pid(pool: WorkerPool, timeout: float = 20.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with pool._cond:
            if pool._reserve:
                return pool._reserve[0].proc.pid
        time.sleep(0.02)
    raise AssertionError(f"no reserve worker after {timeout} s")


def test_worker_reserve_takes_the_place_of_a_retired_worker(null_pool: WorkerPool) -> None:
    """Once a worker has served a run a successor waits in reserve; when the worker retires
    (after max_runs), the next run goes to that successor at once, not to a worker started then."""
    (first,) = wait_for_idle(null_pool, 1)
    assert run_in_pool(null_pool, "return 1").ok
    reserve = _reserve_pid(null_pool)
    assert reserve != first and reserve not in null_pool.pids()
    for _ in range(2):
        assert run_in_pool(null_pool, "return 1").ok
    outcome = run_in_pool(null_pool, "return 1")
    assert outcome.ok
    assert null_pool.pids() == [reserve]
    assert _reserve_pid(null_pool) not in (first, reserve)  # and the next one is on its way


def test_worker_reserve_replaces_a_killed_worker_and_dies_with_the_pool() -> None:
    pool = WorkerPool(size=1, max_runs=100)
    try:
        (first,) = wait_for_idle(pool, 1)
        assert run_in_pool(pool, "return 1").ok
        reserve = _reserve_pid(pool)
        stall = 'return string.find(string.rep("a", 200000), "a-b")'
        outcome = run_in_pool(pool, stall, timeout=0.2)
        assert outcome.error is not None and outcome.error["type"] == "TimeoutError"
        assert pool.pids() == [reserve]  # the killed worker's place, taken at once
        assert run_in_pool(pool, "return 2").value == 2
        spare = _reserve_pid(pool)
        assert spare not in (first, reserve)
    finally:
        pool.close()
    end = time.monotonic() + 10
    while time.monotonic() < end and (os.path.exists(f"/proc/{spare}") and _alive(spare)):
        time.sleep(0.05)
    assert not _alive(spare), "the reserve worker outlived its pool"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_worker_recycled_after_memory_error(null_pool: WorkerPool) -> None:
    (pid,) = wait_for_idle(null_pool, 1)
    outcome = run_in_pool(null_pool, "local t = {} while true do t[#t + 1] = {} end")
    assert outcome.error is not None and outcome.error["type"] == "MemoryError"
    (new_pid,) = wait_for_idle(null_pool, 1)
    assert new_pid != pid


def test_worker_pool_size_zero_refused() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerPool(size=0)


def test_prestart_starts_the_workers_before_the_first_run() -> None:
    b = make_bridge(isolation="process", workers=2, prestart=True)
    try:
        assert b._pool is not None, "prestart left the pool to the first run"
        wait_for_idle(b._pool, 2)
        assert b.run("return 40 + 2").value == 42
    finally:
        b.close()


def test_prestart_with_the_constructor_and_without_process_isolation() -> None:
    b = Bridge(integrations=[_conf.NOTES], isolation="process", workers=1, prestart=True)
    try:
        wait_for_idle(pool_of(b), 1)
    finally:
        b.close()
    inproc = make_bridge(isolation="inprocess", prestart=True)
    assert inproc._pool is None
    inproc.close()


_BAD_CONFIG_HOST = """
import sys, threading, time
sys.path.insert(0, sys.argv[2])
from workerprocs import worker_children
from luabridge import Bridge, ConfigError
try:
    Bridge.from_config(sys.argv[1], integrations=[], workers=2, prestart=True)
except ConfigError as exc:
    print("ConfigError:", exc, flush=True)
def unkilled():
    # A worker the pool has killed may still show as running for a while on a loaded
    # machine (a SIGKILL takes effect when the process next leaves the kernel); it counts as
    # stopped once the signal is pending.
    left = set()
    for pid in worker_children():
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        pending = [int(line.split()[1], 16) for line in status.splitlines()
                   if line.startswith(("SigPnd:", "ShdPnd:"))]
        if not any(mask & (1 << 8) for mask in pending):
            left.add(pid)
    return left
def starting():
    # A starter thread may still be spawning a worker that it kills as soon as it sees the pool
    # closed: wait for the starters too, so that one cannot appear after the check.
    return any(t.name == "luabridge-worker-start" for t in threading.enumerate())
end = time.monotonic() + 20
while True:
    left = unkilled()
    if (not left and not starting()) or time.monotonic() > end:
        break
    time.sleep(0.05)
print("left:", sorted(left), flush=True)
"""


def test_prestarted_workers_stopped_when_the_config_is_bad(tmp_path: Path) -> None:
    # In a process of its own: another test's open pool may start a replacement worker of
    # its own meanwhile, which would look like a leak here.
    import subprocess

    config = tmp_path / "luabridge.toml"
    config.write_text("[limits]\ntimeout = -1\n")
    here = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", _BAD_CONFIG_HOST, str(config), here],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ConfigError:" in done.stdout and "timeout" in done.stdout, done.stdout
    assert "left: []" in done.stdout, done.stdout


def test_bridge_runs_in_a_pool_it_is_given_and_closes_it() -> None:
    pool = WorkerPool(size=1)
    b = make_bridge(isolation="process", workers=1, pool=pool)
    assert b._pool is pool
    assert b.run("return 6 * 7").value == 42
    b.close()
    assert pool._closed


def test_bridge_given_a_pool_for_inprocess_runs_refuses_and_closes_it() -> None:
    pool = WorkerPool(size=1)
    with pytest.raises(ConfigError, match="worker pool was given"):
        Bridge(integrations=[_conf.NOTES], isolation="inprocess", pool=pool)
    assert pool._closed


def test_given_pool_closed_when_the_config_is_bad(tmp_path: Path) -> None:
    config = tmp_path / "luabridge.toml"
    config.write_text("[limits]\ntimeout = -1\n")
    pool = WorkerPool(size=1)
    with pytest.raises(ConfigError, match="timeout"):
        Bridge.from_config(config, integrations=[_conf.NOTES], pool=pool)
    assert pool._closed


def test_bridge_with_a_pool_and_a_bad_isolation_names_the_isolation() -> None:
    pool = WorkerPool(size=1)
    with pytest.raises(ConfigError, match="isolation must be 'process' or 'inprocess'"):
        Bridge(integrations=[_conf.NOTES], isolation="bogus", pool=pool)  # type: ignore[arg-type]
    assert pool._closed


def test_worker_that_fails_its_start_gives_its_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A garbled ready message (any error while starting) frees the slot; nothing hangs."""

    def garbled(self: Any, timeout: float) -> None:
        raise ValueError("not a ready frame")

    monkeypatch.setattr(worker_module._Worker, "wait_ready", garbled)
    pool = WorkerPool(size=1)
    try:
        end = time.monotonic() + 20
        while (pool._count or pool._starting) and time.monotonic() < end:
            time.sleep(0.02)
        assert (pool._count, pool._starting, pool._idle) == (0, set(), [])
    finally:
        pool.close()


def test_closed_worker_exits_at_once_with_status_zero(null_pool: WorkerPool) -> None:
    assert run_in_pool(null_pool, "return 1").ok
    (worker,) = null_pool._idle
    started = time.monotonic()
    null_pool.close()
    assert worker.proc.wait(5) == 0
    assert time.monotonic() - started < 1.0


# -- the worker's process environment --------------------------------------------------------


def _limits_of(pid: int) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        parts = line.split()
        # "Max open files  32  32  files": the name is everything before the two numbers.
        for i, part in enumerate(parts):
            if part.isdigit() or part == "unlimited":
                rows[" ".join(parts[:i])] = (parts[i], parts[i + 1])
                break
    return rows


def test_worker_os_limits_applied() -> None:
    pool = WorkerPool(size=1, address_space=1 << 30)
    try:
        (pid,) = wait_for_idle(pool, 1)
        limits = _limits_of(pid)
    finally:
        pool.close()
    assert limits["Max core file size"] == ("0", "0")
    assert int(limits["Max open files"][0]) <= 32
    assert limits["Max address space"][0] == str(1 << 30)
    if os.geteuid() != 0:
        assert limits["Max processes"][0] == "0"


def test_worker_stdin_is_dev_null(one_worker: Bridge) -> None:
    (pid,) = wait_for_idle(pool_of(one_worker), 1)
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    # stdout and stderr are discarded too: a worker cannot write to the host's terminal.
    assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/2") == "/dev/null"


def test_worker_environment_holds_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets in the parent's environment are not inherited by workers."""
    monkeypatch.setenv("LOOPS_API_KEY", "env-canary-loops-key-1234567890")
    monkeypatch.setenv("SOME_TOKEN", "env-canary-token-0987654321")
    b = make_bridge(isolation="process", workers=1)
    try:
        (pid,) = wait_for_idle(pool_of(b), 1)
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        b.close()
    names = {item.split(b"=", 1)[0].decode() for item in environ.split(b"\0") if item}
    assert b"env-canary" not in environ
    for key in NOTES_KEYS.values():
        assert key.encode() not in environ
    assert not {n for n in names if "KEY" in n or "TOKEN" in n or "SECRET" in n}


def test_worker_never_receives_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every frame the parent sends or receives is free of key values, echoing actions included."""
    frames: list[str] = []
    real_send, real_recv = worker_module._send, worker_module._recv

    def send(sock: Any, message: dict[str, Any]) -> None:
        frames.append(json.dumps(message))
        real_send(sock, message)

    def recv(sock: Any, deadline: float | None = None) -> dict[str, Any]:
        message = real_recv(sock, deadline)
        frames.append(json.dumps(message))
        return message

    monkeypatch.setattr(worker_module, "_send", send)
    monkeypatch.setattr(worker_module, "_recv", recv)
    b = make_bridge(isolation="process", workers=1)
    src = """
    local n = app.integrations.notes
    local a = n.echo_key()
    local b = n.work.echo_key()
    local c = n.leak_key()
    local ok, e = pcall(n.get_note, {note_id = 5})
    print(a.key_echo, b.key_echo, c.error, e)
    return {a.key_echo, b.key_echo, c.error, tostring(e), app.help("notes")}
    """
    try:
        result = b.run(src, allow={"read"})
    finally:
        b.close()
    assert result.ok, result.error
    assert len(result.calls) == 4
    text = "\n".join(frames)
    assert '"op": "host"' in text and '"op": "done"' in text
    for key in NOTES_KEYS.values():
        assert key not in text
        assert key not in json.dumps(result.value) + result.output


# -- host calls are under the kill deadline too ------------------------------------------------


class SlowIn(ActionInput):
    seconds: float = Field(description="How long to take")


class SlowOut(ActionResult):
    slept: float | None = Field(None, description="seconds slept")


def _slow(ctx: CallContext, p: SlowIn) -> dict[str, Any]:
    time.sleep(p.seconds)
    return {"slept": p.seconds}


SLOW = Integration(
    name="slow",
    title="Slow",
    env_prefix="SLOW",
    default_base_url="https://slow.invalid",
    open_client=lambda settings: NOTES.open_client(settings),
    docs_notes="An action that takes as long as asked.",
    actions=(
        Action(
            name="wait",
            summary="Take a while.",
            input=SlowIn,
            output=SlowOut,
            effect="read",
            handler=_slow,
            examples=(Example("app.integrations.slow.wait({seconds = 0})"),),
        ),
    ),
)


def test_worker_slow_host_call_bounded_by_timeout() -> None:
    """A host call that outlives the run's timeout does not hold the run past timeout + 1 s."""
    b = Bridge.from_config(
        environ={"SLOW_API_KEY": "slow-key"}, integrations=[SLOW], isolation="process"
    )
    try:
        assert b.run("return 1").ok  # the pool is up: what follows is the run's own time
        t0 = time.monotonic()
        result = b.run("return app.integrations.slow.wait({seconds = 4})", limits={"timeout": 1})
        elapsed = time.monotonic() - t0
        assert not result.ok and result.error is not None
        assert result.error.type == "TimeoutError"
        assert elapsed < 2.0, elapsed
        quick = b.run("return app.integrations.slow.wait({seconds = 0}).slept")
        assert quick.ok and quick.value == 0
    finally:
        b.close()


def test_worker_queue_wait_not_counted_against_timeout(one_worker: Bridge) -> None:
    """A run waiting for a busy worker gets its whole timeout once it starts."""
    wait_for_idle(pool_of(one_worker), 1)
    with ThreadPoolExecutor(2) as ex:
        # The instruction budget is lifted so that the hog ends on its clock, not on its count.
        limits = {"timeout": 1.5, "instructions": 10**12}
        hog = ex.submit(one_worker.run, "while true do end", limits=limits)
        time.sleep(0.2)
        queued = ex.submit(
            one_worker.run,
            "local s = 0 for i = 1, 1e5 do s = s + i end return s",
            limits={"timeout": 1},
        )
        assert queued.result().ok, queued.result().error
        assert queued.result().value == 5000050000
        assert hog.result().error is not None
        assert hog.result().error.type == "TimeoutError"


# -- same shape in both isolations -------------------------------------------------------------

PARITY = {
    "value": 'print("hi", 1, true) return {a = 1, list = {1, 2, app.null}, s = "x"}',
    "calls": """
        local n = app.integrations.notes
        local c = n.create_note({title = "t", tags = {"x"}})
        local g = n.get_note({note_id = c.note_id})
        local missing = n.get_note({note_id = "nope"})
        return {c.note_id, g.title, missing.success, missing.status}
    """,
    "runtime_error": 'print("before")\nerror("boom")',
    "error_table": "error({})",
    "error_nil": "error()",
    "syntax_error": "return +",
    "binary_chunk": "\27LJ\2",
    "validation_error": "local r = app.integrations.notes.get_note({note_id = 5})",
    "unknown_parameter": 'return app.integrations.notes.get_note({noteid = "x"})',
    "permission_error": 'return app.integrations.notes.create_note({title = "x"})',
    "unknown_account": "return app.integrations.notes.nope.get_note",
    "output_limit": 'while true do print(string.rep("x", 100)) end',
    "instruction_limit": "local i = 0 while true do i = i + 1 end",
    "memory_limit": 'local t = {} while true do t[#t + 1] = string.rep("m", 1000) .. #t end',
    "call_limit": "for i = 1, 10 do app.integrations.notes.list_notes() end",
    "result_limit": 'return string.rep("r", 5000)',
    "undefined_global": "return io.open",
    "input": "local input = ... return input",
}


def _shape(result: Any) -> dict[str, Any]:
    calls = []
    for c in result.calls:
        d = c.to_dict()
        d.pop("duration_ms", None)
        calls.append(d)
    return {
        "ok": result.ok,
        "value": result.value,
        "error": None if result.error is None else result.error.to_dict(),
        "output": result.output,
        "calls": calls,
        "usage_keys": sorted(result.usage),
    }


@pytest.fixture(scope="module")
def twin_bridges() -> Iterator[tuple[Bridge, Bridge]]:
    limits = {"instructions": 5_000_000, "output_bytes": 2000, "calls": 5, "result_bytes": 1000}
    inproc = make_bridge(isolation="inprocess", limits=limits)
    proc = make_bridge(isolation="process", limits=limits)
    yield inproc, proc
    inproc.close()
    proc.close()


@pytest.mark.parametrize("name", sorted(PARITY))
def test_worker_results_match_inprocess(twin_bridges: tuple[Bridge, Bridge], name: str) -> None:
    """The same script through both isolations gives the same result, error, output and calls."""
    inproc, proc = twin_bridges
    allow = {"read", "write"} if name == "calls" else None
    inp = {"email": "a@b.co", "n": [1, 2.5, None, {"k": "v"}]}
    a = _shape(inproc.run(PARITY[name], input=inp, allow=allow))
    b = _shape(proc.run(PARITY[name], input=inp, allow=allow))
    assert a == b


# -- usage ------------------------------------------------------------------------------------

USAGE_SCRIPT = """
local s = 0
for i = 1, 200000 do s = s + i end
local hoard = {}
for i = 1, 1000 do hoard[i] = string.rep("m", 8000) .. i end
print(string.rep("o", 99))
print("done")
app.integrations.notes.list_notes()
app.integrations.notes.list_notes({limit = 2})
return s
"""


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_worker_usage_reported(isolation: str) -> None:
    """wall_ms, instructions, peak_memory, output_bytes and calls describe what the run used."""
    b = make_bridge(isolation=isolation)
    try:
        b.run("return 1")  # the pool is up, so wall time is the run's own
        t0 = time.monotonic()
        result = b.run(USAGE_SCRIPT)
        elapsed_ms = (time.monotonic() - t0) * 1000
        trivial = b.run("return 1")
    finally:
        b.close()
    assert result.ok, result.error
    usage = result.usage
    assert set(usage) >= {"wall_ms", "instructions", "peak_memory", "output_bytes", "calls"}
    assert 0 < usage["wall_ms"] <= elapsed_ms + 1
    # 200k loop iterations are at least 400k VM instructions; the count is per 1000.
    assert 400_000 <= usage["instructions"] <= 50_000_000
    assert usage["instructions"] % 1000 == 0
    assert 8_000_000 <= usage["peak_memory"] <= 64 * 1024 * 1024
    assert usage["output_bytes"] == len(result.output.encode()) == 100 + 5
    assert usage["calls"] == len(result.calls) == 2
    assert trivial.usage["instructions"] < usage["instructions"]
    assert trivial.usage["peak_memory"] < usage["peak_memory"]
    assert trivial.usage["calls"] == 0 and trivial.usage["output_bytes"] == 0


def test_worker_usage_reported_for_killed_run(one_worker: Bridge) -> None:
    result = one_worker.run(C_STALL, limits={"timeout": 0.5})
    assert result.error is not None and result.error.type == "TimeoutError"
    assert 500 <= result.usage["wall_ms"] <= 2000
    assert result.usage["calls"] == 0


# -- threads ----------------------------------------------------------------------------------


def test_worker_parallel_runs_from_threads() -> None:
    """Forty runs from eight threads through two workers: each gets its own answer."""
    b = make_bridge(isolation="process", workers=2)
    src = """
    local input = ...
    local s = 0
    for i = 1, input.n do s = s + i end
    print("run", input.id)
    return {id = input.id, sum = s}
    """
    try:
        with ThreadPoolExecutor(8) as ex:
            futures = {i: ex.submit(b.run, src, {"id": i, "n": 1000 + i}) for i in range(40)}
            results = {i: f.result() for i, f in futures.items()}
        pids = pool_of(b).pids()
    finally:
        b.close()
    for i, r in results.items():
        n = 1000 + i
        assert r.ok, r.error
        assert r.value == {"id": i, "sum": n * (n + 1) // 2}
        assert r.output == f"run\t{i}\n"
    assert len(pids) <= 2


# -- a worker that goes bad while idle, and timeouts worded by their cause ---------------------

HOG = {"timeout": 1.5, "instructions": 10**12}


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (no process, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it has stopped: a stop signal takes effect when a thread
    of the process next handles it, which on a loaded machine can be a while."""
    os.kill(pid, signal.SIGSTOP)
    end = time.monotonic() + 10
    while not worker_module._is_stopped(pid):
        assert time.monotonic() < end, f"{pid} did not stop"
        time.sleep(0.005)


def test_worker_stopped_while_idle_is_replaced_before_the_run(one_worker: Bridge) -> None:
    """An idle worker that was SIGSTOPped does not answer the hand-over; the run goes to a
    fresh worker instead of failing with a TimeoutError that blames the script."""
    pool = pool_of(one_worker)
    (pid,) = wait_for_idle(pool, 1)
    stop(pid)
    try:
        for expected in ("first", "second"):
            result = one_worker.run(f"return '{expected}'", limits={"timeout": 1})
            assert result.ok, result.error
            assert result.value == expected
        assert _gone(pid)
        assert pid not in pool.pids()
        # The wait for the acknowledgement and the fresh worker is queue time, not run time.
        assert result.usage["queue_ms"] >= 0
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_worker_stopped_while_idle_with_a_large_run_frame(one_worker: Bridge) -> None:
    """A run frame larger than the socket's buffer cannot block on a stopped worker."""
    pool = pool_of(one_worker)
    (pid,) = wait_for_idle(pool, 1)
    stop(pid)
    try:
        big = "x" * (4 * 1024 * 1024)
        result = one_worker.run("local input = ... return #input", big, limits={"timeout": 2})
        assert result.ok, result.error
        assert result.value == len(big)
        assert _gone(pid)
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_worker_acknowledges_a_large_input_before_decoding_it(
    monkeypatch: pytest.MonkeyPatch, null_pool: WorkerPool
) -> None:
    """Decoding a big input takes the worker a while; it acknowledges the run first, so a
    healthy worker is never taken for a stopped one."""
    monkeypatch.setattr(worker_module, "_ANSWER_WAIT", 0.05)
    monkeypatch.setattr(worker_module, "_TRANSFER_RATE", 1e12)
    wait_for_idle(null_pool, 1)
    (pid,) = null_pool.pids()
    items = list(range(300_000))
    outcome = null_pool.run(
        "local input = ... return #input",
        items,
        NullHost(),
        Limits(timeout=10, memory=256 << 20),
        time.monotonic(),
    )
    assert outcome.ok, outcome.error
    assert outcome.value == len(items)
    assert null_pool.pids() == [pid]


def test_worker_stopped_mid_run_timeout_names_the_stop(one_worker: Bridge) -> None:
    pool = pool_of(one_worker)
    wait_for_idle(pool, 1)
    with ThreadPoolExecutor(1) as ex:
        running = ex.submit(one_worker.run, "while true do end", limits=HOG)
        pid = wait_for_busy(pool)
        time.sleep(0.1)
        stop(pid)
        result = running.result(10)
    assert result.error is not None and result.error.type == "TimeoutError"
    assert f"the worker process (pid {pid}) was stopped (SIGSTOP" in result.error.message
    assert "string.find" not in result.error.message
    assert one_worker.run("return 1").ok


def test_worker_c_call_stall_timeout_names_the_script(one_worker: Bridge) -> None:
    result = one_worker.run(C_STALL, limits={"timeout": 0.5})
    assert result.error is not None and result.error.type == "TimeoutError"
    assert "the script did not yield (for example a long string.find)" in result.error.message


def test_worker_wedged_timeout_names_the_wedge() -> None:
    """A worker that uses no CPU while its run's time runs out is wedged, not busy in C."""
    import subprocess

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fake = type("W", (), {"proc": sleeper})()
        cause = WorkerPool._stall_cause(fake, 0.0, time.monotonic() - 2)  # type: ignore[arg-type]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert f"the worker process (pid {sleeper.pid}) was wedged, not running the script" in cause


def test_worker_slow_host_call_timeout_names_the_call() -> None:
    b = Bridge.from_config(
        environ={"SLOW_API_KEY": "slow-key"}, integrations=[SLOW], isolation="process"
    )
    with b:
        result = b.run("return app.integrations.slow.wait({seconds = 3})", limits={"timeout": 1})
    assert result.error is not None and result.error.type == "TimeoutError"
    assert "still serving the script's call to slow.wait" in result.error.message
    assert "string.find" not in result.error.message


def test_worker_host_calls_are_served_off_the_runs_thread_by_a_reused_helper(
    lone_pool: WorkerPool,
) -> None:
    """Every host call of a run is served by one long-lived helper thread (not the run's own
    thread, nor a new thread per call or per run); a run whose call is stuck past the kill
    time is given up, its helper left to finish in the background, and the next run gets
    another helper and does not wait."""
    threads: list[threading.Thread] = []

    class Host:
        spec: dict[str, Any] = {}  # noqa: RUF012 - a test double

        def help(self, topic: str | None) -> list[Any]:
            threads.append(threading.current_thread())
            if topic == "stuck":
                time.sleep(1.5)
            return ["ok", "x", None]

    fast = Limits(timeout=5)
    for _ in range(3):
        outcome = lone_pool.run(
            "for i = 1, 4 do app.help('a') end return 1", None, Host(), fast, time.monotonic()
        )
        assert outcome.ok, outcome.error
    assert len(threads) == 12 and all(t is threads[0] for t in threads)
    assert threads[0] is not threading.current_thread()
    stuck = lone_pool.run(
        "return app.help('stuck')", None, Host(), Limits(timeout=0.2), time.monotonic()
    )
    assert stuck.error is not None and stuck.error["type"] == "TimeoutError"
    assert "still serving the script's call to app.help" in stuck.error["message"]
    began = time.monotonic()
    outcome = lone_pool.run("app.help('a') return 2", None, Host(), fast, time.monotonic())
    assert outcome.ok and outcome.value == 2, outcome.error
    assert time.monotonic() - began < 1.0
    assert threads[-1] is not threads[-2]  # another helper, while the stuck one sleeps


def test_worker_interrupted_run_is_given_up_and_its_worker_replaced(
    lone_pool: WorkerPool,
) -> None:
    """Ctrl-C in the run's thread while a helper serves the run's host calls: no call is
    served after it, and the worker is replaced, not left busy (the pool stays usable)."""
    import signal

    calls: list[float] = []

    class Host:
        spec: dict[str, Any] = {}  # noqa: RUF012 - a test double

        def help(self, topic: str | None) -> list[Any]:
            calls.append(time.monotonic())
            time.sleep(0.05)
            return ["ok", "x", None]

    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.4, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    script = "for i = 1, 60 do app.help('a') end return 1"
    with pytest.raises(KeyboardInterrupt):
        lone_pool.run(script, None, Host(), Limits(timeout=10), time.monotonic())
    interrupted = time.monotonic()
    time.sleep(0.5)
    assert [c for c in calls if c > interrupted + 0.06] == []
    assert lone_pool.pids(busy=True) == []
    outcome = lone_pool.run("return 2", None, Host(), Limits(timeout=5), time.monotonic())
    assert outcome.ok and outcome.value == 2, outcome.error


def test_worker_run_whose_helper_cannot_start_replaces_its_worker(
    lone_pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from luabridge import pool as pool_module

    class NoThread:
        def __init__(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(pool_module, "_IDLE_CALLERS", [])
    monkeypatch.setattr(pool_module, "_HostCaller", NoThread)
    with pytest.raises(RuntimeError, match="new thread"):
        run_in_pool(lone_pool, "return app.help('a')", timeout=5)
    assert lone_pool.pids(busy=True) == []
    monkeypatch.undo()
    outcome = run_in_pool(lone_pool, "return 3", timeout=5)
    assert outcome.ok and outcome.value == 3, outcome.error


def test_worker_no_answer_from_any_worker_is_a_clean_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers that never acknowledge a run are each replaced; after three the run fails with a
    message saying so, and no worker is left busy."""
    monkeypatch.setattr(worker_module, "_ANSWER_WAIT", 0.3)
    stopped: list[int] = []
    ready = worker_module._Worker.wait_ready

    def ready_then_stopped(self: Any, timeout: float) -> None:
        ready(self, timeout)
        stopped.append(self.proc.pid)
        stop(self.proc.pid)

    monkeypatch.setattr(worker_module._Worker, "wait_ready", ready_then_stopped)
    pool = WorkerPool(size=1)
    try:
        result = run_in_pool(pool, "return 1", timeout=1)
        assert result.error is not None and result.error["type"] == "WorkerCrashError"
        assert "3 worker processes in a row" in result.error["message"]
        assert "did not acknowledge the run within 0.3 s" in result.error["message"]
        assert pool._busy == set()
        assert all(_gone(pid) for pid in stopped[:3])
    finally:
        pool.close()
        for pid in stopped:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


# -- the queue ---------------------------------------------------------------------------------


def test_worker_queue_timeout_trips(one_worker: Bridge) -> None:
    pool = pool_of(one_worker)
    wait_for_idle(pool, 1)
    with ThreadPoolExecutor(2) as ex:
        hog = ex.submit(one_worker.run, "while true do end", limits=HOG)
        wait_for_busy(pool)
        t0 = time.monotonic()
        queued = one_worker.run("return 1", limits={"queue_timeout": 0.3})
        waited = time.monotonic() - t0
        assert hog.result().error is not None
    assert queued.error is not None and queued.error.type == "QueueTimeoutError"
    assert "no worker was free within the queue timeout (0.3 s; limits.queue_timeout)" in (
        queued.error.message
    )
    assert "1 of 1 workers were busy" in queued.error.message
    assert 0.3 <= waited < 1.2
    assert queued.usage["queue_ms"] >= 300 and queued.calls == []
    assert "QueueTimeoutError" in ERROR_TYPES
    assert one_worker.run("return 2").value == 2


def test_worker_queue_wait_reported_in_usage(one_worker: Bridge) -> None:
    pool = pool_of(one_worker)
    wait_for_idle(pool, 1)
    with ThreadPoolExecutor(2) as ex:
        hog = ex.submit(one_worker.run, "while true do end", limits={**HOG, "timeout": 0.6})
        wait_for_busy(pool)
        queued = one_worker.run("return 1")
        hog.result()
    assert queued.ok, queued.error
    assert queued.usage["queue_ms"] >= 200
    alone = one_worker.run("return 1")
    assert alone.usage["queue_ms"] < queued.usage["queue_ms"]


def test_close_with_runs_queued_raises_closed_error() -> None:
    """Runs still waiting for a worker when the bridge closes get the bridge's closed error."""
    from luabridge import ClosedError

    b = make_bridge(isolation="process", workers=1)
    pool = pool_of(b)
    wait_for_idle(pool, 1)
    with ThreadPoolExecutor(3) as ex:
        hog = ex.submit(b.run, "while true do end", limits=HOG)
        wait_for_busy(pool)
        queued = [ex.submit(b.run, "return 1") for _ in range(2)]
        time.sleep(0.2)
        b.close()
        for future in queued:
            with pytest.raises(ClosedError, match="this Bridge was closed; create a new one"):
                future.result(5)
        assert hog.result(5).error is not None
    assert issubclass(ClosedError, RuntimeError)
    with pytest.raises(ClosedError, match="this Bridge was closed"):
        b.run("return 1")


def test_close_lets_runs_record_their_end_in_the_ledger(tmp_path: Path) -> None:
    """The ledger closes after the runs in flight wrote their end: the one that was running
    is ``succeeded``, the ones close refused are ``failed`` with ClosedError, none ``crashed``."""
    from luabridge import ClosedError
    from luabridge.ledger.sqlite import SQLiteLedger

    path = tmp_path / "ledger.sqlite3"
    b = make_bridge(isolation="process", workers=1, ledger=path)
    pool = pool_of(b)
    wait_for_idle(pool, 1)
    spin = "local t = os.clock() while os.clock() - t < 1 do end return 'done'"
    with ThreadPoolExecutor(3) as ex:
        first = ex.submit(b.run, spin, execution_id="close-first")
        wait_for_busy(pool)
        queued = [ex.submit(b.run, "return 1", execution_id=f"close-q{i}") for i in range(2)]
        time.sleep(0.2)
        b.close()
        assert first.result(10).ok
        for future in queued:
            with pytest.raises(ClosedError):
                future.result(10)
    with SQLiteLedger(path) as ledger:
        done = ledger.get_execution("close-first")
        assert done is not None and done.status == "succeeded"
        for i in range(2):
            refused = ledger.get_execution(f"close-q{i}")
            assert refused is not None and refused.status == "failed"
            assert refused.error is not None and refused.error["type"] == "ClosedError"


# -- workers never outlive their host ----------------------------------------------------------

_HOST = """
import json, sys, threading, time
from luabridge.limits import Limits
from luabridge.pool import WorkerPool
sys.path.insert(0, sys.argv[1])
from test_worker import NullHost

pool = WorkerPool(size=2)
while len(pool.pids(busy=False)) < 2:
    time.sleep(0.02)
limits = Limits(timeout=60, instructions=10**12)
stall = 'return string.find(string.rep("a", 400000), "a-b")'
threading.Thread(target=pool.run, args=(stall, None, NullHost(), limits, time.monotonic())).start()
while not pool.pids(busy=True):
    time.sleep(0.02)
print(json.dumps(pool.pids()), flush=True)
time.sleep(120)
"""


def test_workers_die_with_a_host_killed_by_sigkill(tmp_path: Path) -> None:
    """kill -9 of the host: its workers, the idle one and the one stuck in a C call, are gone
    within seconds (they once stayed at 95% CPU for minutes)."""
    import subprocess

    host = subprocess.Popen(
        [sys.executable, "-c", _HOST, str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        assert host.stdout is not None
        pids = json.loads(host.stdout.readline())
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
        time.sleep(0.3)  # the busy one is inside string.find now
        host.kill()
        host.wait()
        end = time.monotonic() + 5
        while not all(_gone(p) for p in pids) and time.monotonic() < end:
            time.sleep(0.05)
        assert all(_gone(p) for p in pids), [p for p in pids if not _gone(p)]
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if host.stdout is not None:
            host.stdout.close()
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_pool_in_a_forked_child_starts_its_own_workers(null_pool: WorkerPool) -> None:
    """A process forked after this one started workers (a prefork server) has no spawner
    thread of its own yet: its first pool starts one, and its runs work."""
    assert run_in_pool(null_pool, "return 1").ok  # this process's spawner thread is running
    import warnings

    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns about fork() in a process with threads: that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            pool = WorkerPool(size=1)
            outcome = run_in_pool(pool, "return 6 * 7", timeout=5)
            pool.close()
            os.write(write_end, json.dumps(outcome.value).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        end = time.monotonic() + 30
        while (done := os.waitpid(child, os.WNOHANG))[0] == 0:
            if time.monotonic() > end:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                raise AssertionError("the forked child hung")
            time.sleep(0.02)
        status = done[1]
        answer = os.read(read_end, 100)
    finally:
        os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(answer) == 42


def _raw_worker() -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """A worker process without a pool: the parent's end of its socket, and the process. The
    test speaks frames to it; no address-space limit and no parent to watch are passed."""
    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "luabridge.worker", str(child.fileno()), "0"],
        pass_fds=(child.fileno(),),
        stdout=subprocess.DEVNULL,
    )
    child.close()
    return parent, proc


def test_worker_exits_when_its_socket_closes_mid_run() -> None:
    """Without the parent-death signal (another OS, a parent that is still alive), a worker
    stuck in a C call still exits as soon as the parent's end of its socket closes."""
    from luabridge import frames

    parent, proc = _raw_worker()
    try:
        assert frames.recv(parent, time.monotonic() + 30)["op"] == "ready"
        limits = Limits(timeout=60, instructions=10**12).as_dict()
        stall = 'return string.find(string.rep("a", 400000), "a-b")'
        frames.send(parent, {"op": "run", "source": stall, "input": None, "limits": limits,
                             "spec": {}})  # fmt: skip
        assert frames.recv(parent, time.monotonic() + 5)["op"] == "started"
        time.sleep(0.3)
        t0 = time.monotonic()
        parent.close()
        assert proc.wait(5) == 0
        assert time.monotonic() - t0 < 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_worker_acknowledges_in_the_done_frame_or_first() -> None:
    """A run over within the acknowledgement delay carries ``started`` in its ``done`` frame; a
    longer one (here a loop, then a C call that never yields) sends ``started`` on its own first,
    from the timer; a run that calls the host sends it before the first host frame."""
    from luabridge import frames

    parent, proc = _raw_worker()
    limits = Limits(timeout=30, instructions=10**12).as_dict()

    def run(source: str) -> list[dict[str, Any]]:
        sent = time.monotonic()
        frames.send(parent, {"op": "run", "source": source, "input": None, "limits": limits,
                             "spec": {}})  # fmt: skip
        got = []
        while True:
            message = frames.recv(parent, time.monotonic() + 20)
            got.append(message)
            if message["op"] == "host":
                frames.send(parent, {"op": "reply", "result": "no such name"})
            if message["op"] == "done":
                break
        first = got[0]
        assert sent <= first["started"] <= time.monotonic()
        return got

    try:
        assert frames.recv(parent, time.monotonic() + 30)["op"] == "ready"
        (done,) = run("return 1")
        assert done["op"] == "done" and done["outcome"]["value"] == 1 and "cpu" in done
        slow = run("local x = 0 for i = 1, 1e7 do x = x + i end return x")
        assert [m["op"] for m in slow] == ["started", "done"] and "started" not in slow[1]
        stall = run('return string.find(string.rep("a", 20000), "a-b")')
        assert [m["op"] for m in stall] == ["started", "done"]
        host = run("return pcall(function() return app.integrations.nothing end)")
        assert [m["op"] for m in host][:2] == ["started", "host"]
    finally:
        parent.close()
        proc.wait(10)


def test_worker_cpu_backstop_ends_the_process() -> None:
    """RLIMIT_CPU really ends a worker stuck in a C call (SIGXCPU is not caught or ignored):
    here the limit is lowered from outside to one second past what the worker has used."""
    import resource

    from luabridge import frames

    parent, proc = _raw_worker()
    try:
        assert frames.recv(parent, time.monotonic() + 30)["op"] == "ready"
        limits = Limits(timeout=60, instructions=10**12).as_dict()
        stall = 'return string.find(string.rep("a", 400000), "a-b")'
        frames.send(parent, {"op": "run", "source": stall, "input": None, "limits": limits,
                             "spec": {}})  # fmt: skip
        started = frames.recv(parent, time.monotonic() + 5)
        time.sleep(0.3)  # past the worker's own setrlimit for this run
        used = started["cpu"] + 1
        _soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_CPU)
        resource.prlimit(proc.pid, resource.RLIMIT_CPU, (int(used) + 1, hard))
        assert proc.wait(20) == -signal.SIGXCPU
    finally:
        parent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_worker_cpu_backstop_set_per_run(null_pool: WorkerPool) -> None:
    assert run_in_pool(null_pool, "return 1", timeout=2).ok
    (pid,) = null_pool.pids(busy=False)
    soft, _hard = _limits_of(pid)["Max cpu time"]
    assert soft != "unlimited"
    assert 2 + 5 <= int(soft) <= 2 + 5 + 30  # the timeout and margin past the CPU used so far


def test_worker_host_call_name_of_a_malformed_frame_is_still_a_name() -> None:
    """A host frame whose args are not a list (only a broken worker sends one) gets the
    usual InternalError reply from the host side, so naming it must not raise."""
    from luabridge.pool import _call_name

    assert _call_name({"method": "call", "args": {"a": 1}}) == "app.call"
    assert _call_name({"method": "call", "args": ["loops", "default", "send_event"]}) == (
        "loops.send_event"
    )
