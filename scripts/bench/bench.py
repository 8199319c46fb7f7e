"""The luabridge benchmarks: each one timed against a baseline measured in the same run.

It prints a Markdown table of ratios (luabridge / baseline, lower is better; benchmark 7 is a
speed-up, higher is better), then the figures reported without a target: peak memory and the
emulator's own capacity. ``scripts/bench/run`` runs it; docs/performance.md explains the rows.
It relies on luabridge, lupa, httpx and ``luabridge emulator`` (started as a child process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import lupa.luajit21 as lupa_jit
from harness import Emulator, Row, cpu_seconds, format_table, paired, peak_rss_kib
from peers import peer_rows

from integrations.loops import integration as loops_integration, open_account
from luabridge import AccountSettings, Bridge, Integration, Limits
from luabridge.sandbox import Reply, execute

KEY = "bench_key_0123456789"

#: Figures reported without a target, printed after the table.
NOTES: list[str] = []


def note(text: str) -> None:
    NOTES.append(text)
    print(f"  {text}", file=sys.stderr, flush=True)


def progress(text: str) -> None:
    rss = peak_rss_kib(os.getpid()) / 1024
    print(f"[{time.strftime('%H:%M:%S')}] (peak RSS {rss:.0f} MiB) {text}", file=sys.stderr)


#: Rows 1, 5 and 8 time the sandbox and the pool, so their bridges run without the run ledger
#: (on by default, a few SQLite statements per run); row 1's notes give its cost per run, row
#: l its cost per write call.
NO_LEDGER: dict[str, Any] = {"ledger": None}


@contextmanager
def workspace() -> Iterator[Path]:
    """A temporary folder that also holds the Loops contact directory of this run."""
    with tempfile.TemporaryDirectory(prefix="luabridge-bench-") as tmp:
        # The run ledger too: the benchmarks never write to the user's.
        files = {
            "LUABRIDGE_LOOPS_DIRECTORY": "contacts.sqlite3",
            "LUABRIDGE_LEDGER": "ledger.sqlite3",
        }
        old = {name: os.environ.get(name) for name in files}
        for name, file in files.items():
            os.environ[name] = str(Path(tmp) / file)
        try:
            yield Path(tmp)
        finally:
            for name, value in old.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def emulator_bridge(
    tmp: Path, emulator: Emulator, *, isolation: str = "inprocess", **options: Any
) -> Bridge:
    """A bridge whose default Loops account is the emulator team, client rate limit off."""
    config = tmp / "luabridge.toml"
    config.write_text(
        "[loops.accounts.default]\n"
        'api_key_env = "LOOPS_API_KEY"\n'
        f'base_url = "{emulator.base_url}"\n'
        "rate_limit = 0\n"
    )
    return Bridge.from_config(
        config,
        environ={"LOOPS_API_KEY": KEY, "LOOPS_BASE_URL": emulator.base_url},
        isolation=isolation,
        **options,
    )


def reset(http: httpx.Client, emulator: Emulator) -> None:
    http.post(f"{emulator.root_url}/__emulator/reset").raise_for_status()


def check_ok(result: Any) -> None:
    if not result.ok:
        raise SystemExit(f"a benchmark run failed: {result.error}")


# -- 1: a trivial run in-process ---------------------------------------------------------------


def bench_trivial(scale: float) -> list[Row]:
    """Row 1 against the runtime the sandbox needs; row 1a against a default LuaRuntime()."""
    n = max(20, int(200 * scale))
    bridge = Bridge.from_config(environ={}, isolation="inprocess", **NO_LEDGER)
    check_ok(bridge.run("return 1"))

    def subject() -> None:
        for _ in range(n):
            bridge.run("return 1")

    def minimal() -> None:
        for _ in range(n):
            lupa_jit.LuaRuntime(register_eval=False, register_builtins=False).execute("return 1")

    def default() -> None:
        for _ in range(n):
            lupa_jit.LuaRuntime().execute("return 1")

    timing = paired(subject, minimal, warmup=1, repeats=9)
    old_base = paired(subject, default, warmup=1, repeats=5)
    per_run = statistics.median(timing.subject) / n * 1e6
    note(f"1: bridge.run('return 1') in-process takes {per_run:.0f} us per run")
    # The same runs journaled in the run ledger (the workspace's SQLite file), as from_config
    # does by default.
    with Bridge.from_config(environ={}, isolation="inprocess") as journaled:
        check_ok(journaled.run("return 1"))

        def with_ledger() -> None:
            for _ in range(n):
                journaled.run("return 1")

        ledgered = paired(with_ledger, subject, warmup=1, repeats=5)
    extra = (statistics.median(ledgered.subject) - statistics.median(ledgered.baseline)) / n
    note(
        f"1: with the run ledger on (the default of from_config) a trivial run costs "
        f"{extra * 1e6:.0f} us more ({ledgered.ratio:.2f}x); rows 1, 5 and 8 run with it off"
    )
    bridge.close()
    return [
        Row("1", f'bridge.run("return 1") in-process vs a minimal LuaRuntime, x{n}', timing, 1.5),
        Row("1a", f'bridge.run("return 1") in-process vs LuaRuntime(), x{n}', old_base, 2.0),
    ]


# -- 2: 2,000 read calls, transport answering at once -------------------------------------------

_CURRENT_USER = json.dumps({"success": True, "teamName": "Bench team"}).encode()


def _instant(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=_CURRENT_USER, headers={"content-type": "application/json"})


def bench_read_calls(tmp: Path, scale: float) -> list[Row]:
    calls = max(200, int(2000 * scale))
    settings = AccountSettings(
        name="default", api_key=KEY, base_url="http://loops.invalid/api/v1", rate_limit=0
    )
    account = open_account(
        settings, directory_path=tmp / "mock.sqlite3", transport=httpx.MockTransport(_instant)
    )
    integ = Integration(
        name=loops_integration.name,
        title=loops_integration.title,
        actions=loops_integration.actions,
        open_client=lambda _settings: account,
        env_prefix=loops_integration.env_prefix,
        default_base_url=loops_integration.default_base_url,
    )
    bridge = Bridge(
        integrations=[integ],
        accounts={"loops": {"default": settings}},
        isolation="inprocess",
        limits={"calls": calls + 10, "timeout": 120},
    )
    script = f"""
        local loops = app.integrations.loops
        local team
        for i = 1, {calls} do team = loops.get_current_user().team_name end
        return team
    """
    check_ok(bridge.run(script))

    def subject() -> None:
        bridge.run(script)

    def baseline() -> None:
        request = account.client.request
        for _ in range(calls):
            request("GET", "/api-key")["teamName"]

    # 2a: what the same GET costs a script that uses httpx itself (row 3's kind of baseline).
    plain = httpx.Client(
        base_url=settings.base_url,
        headers={"Authorization": f"Bearer {KEY}", "Accept": "application/json"},
        transport=httpx.MockTransport(_instant),
    )

    def plain_baseline() -> None:
        get = plain.get
        for _ in range(calls):
            get("/api-key").json()["teamName"]

    timing = paired(subject, baseline, warmup=1, repeats=5)
    extra = (statistics.median(timing.subject) - statistics.median(timing.baseline)) / calls
    note(f"2: each read action costs {extra * 1e6:.0f} us on top of the client's own request")
    against_plain = paired(subject, plain_baseline, warmup=1, repeats=5)
    each = statistics.median(against_plain.subject) / calls
    note(
        f"2a: a read action takes {each * 1e6:.0f} us, the same GET with a plain httpx.Client "
        f"{statistics.median(against_plain.baseline) / calls * 1e6:.0f} us"
    )
    bridge.close()
    plain.close()
    return [
        Row("2", f"{calls} read actions, instant transport", timing, 1.3),
        Row(
            "2a",
            f"{calls} read actions vs a plain httpx.Client, instant transport",
            against_plain,
            1.3,
        ),
    ]


# -- 3: 500 create_contact against the emulator -------------------------------------------------


def _contacts(n: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {"email": f"{prefix}{i}@example.com", "first_name": f"Person {i}", "source": "bench"}
        for i in range(n)
    ]


def bench_creates(tmp: Path, emulator: Emulator, scale: float) -> Row:
    n = max(50, int(500 * scale))
    params = _contacts(n, "create")
    wire = [
        {"email": p["email"], "firstName": p["first_name"], "source": p["source"]} for p in params
    ]
    bridge = emulator_bridge(tmp, emulator, limits={"calls": n + 10, "timeout": 120})
    script = """
        local contacts = ...
        local loops = app.integrations.loops
        local made = 0
        for _, contact in ipairs(contacts) do
          if loops.create_contact(contact).success then made = made + 1 end
        end
        return made
    """
    http = httpx.Client(
        base_url=emulator.base_url,
        headers={"Authorization": f"Bearer {KEY}", "Accept": "application/json"},
    )
    admin = httpx.Client()

    def subject() -> None:
        reset(admin, emulator)
        result = bridge.run(script, input=params, allow={"write"})
        if result.value != n:
            raise SystemExit(f"3: expected {n} contacts created, got {result.value} {result.error}")

    def baseline() -> None:
        reset(admin, emulator)
        for body in wire:
            http.post("/contacts/create", json=body).raise_for_status()

    cpu0, wall0 = cpu_seconds(emulator.pid), time.perf_counter()
    timing = paired(subject, baseline, warmup=1, repeats=5)
    busy = (cpu_seconds(emulator.pid) - cpu0) / (time.perf_counter() - wall0)
    rate = n / statistics.median(timing.subject)
    note(
        f"3: luabridge drove {rate:.0f} creates/s; the emulator process was busy "
        f"{busy:.0%} of one core over the benchmark"
    )
    # Where a create's cost goes besides the request: the same runs without the run ledger
    # (row l measures it), then also without the contact directory's write.
    from integrations.loops.directory import ContactDirectory

    plain = emulator_bridge(tmp, emulator, limits={"calls": n + 10, "timeout": 120}, ledger=None)

    def unledgered() -> None:
        reset(admin, emulator)
        result = plain.run(script, input=params, allow={"write"})
        if result.value != n:
            raise SystemExit(f"3: expected {n} contacts created, got {result.value} {result.error}")

    def undirected() -> None:
        upsert = ContactDirectory.upsert
        ContactDirectory.upsert = lambda *_args, **_kwargs: None  # type: ignore[method-assign]
        try:
            unledgered()
        finally:
            ContactDirectory.upsert = upsert  # type: ignore[method-assign]

    per_call: list[str] = []
    for label, fn in (("the run ledger off", unledgered), ("also no directory write", undirected)):
        split = paired(fn, baseline, warmup=1, repeats=3)
        extra = (statistics.median(split.subject) - statistics.median(split.baseline)) / n
        per_call.append(f"{label} {split.ratio:.2f} ({extra * 1e6:.0f} us per create)")
    extra = (statistics.median(timing.subject) - statistics.median(timing.baseline)) / n
    note(
        f"3: each create costs {extra * 1e6:.0f} us on top of the plain client's request; with "
        + ", ".join(per_call)
    )
    plain.close()
    bridge.close()
    http.close()
    admin.close()
    # The target for the per-call rows (2 and 3) is 1.3 and 1.2.
    return Row("3", f"{n} create_contact via emulator", timing, 1.2)


# -- l: the run ledger's cost per write call ------------------------------------------------------


def bench_ledger(tmp: Path, emulator: Emulator, scale: float) -> Row:
    """``n`` send_event calls in one run, journaled in a SQLite ledger (each call's ``sending``
    with the previous call's outcome: one line of the run's spool file per call, folded into
    the database at the run's end) against the same run with the ledger off."""
    n = max(50, int(500 * scale))
    script = """
        local n = ...
        local loops = app.integrations.loops
        local sent = 0
        for i = 1, n do
          if loops.send_event({email = "ada@example.com", event_name = "e" .. i}).success then
            sent = sent + 1
          end
        end
        return sent
    """
    limits = {"calls": n + 10, "timeout": 120}
    recorded = emulator_bridge(tmp, emulator, limits=limits, ledger=tmp / "bench-ledger.sqlite3")
    plain = emulator_bridge(tmp, emulator, limits=limits, ledger=None)
    admin = httpx.Client()
    runs = iter(range(10**6))

    def once(bridge: Bridge) -> None:
        reset(admin, emulator)
        # A new execution each time, so that every call is journaled (none replayed).
        result = bridge.run(script, input=n, allow={"write"}, execution_id=f"bench-{next(runs)}")
        if result.value != n:
            raise SystemExit(f"l: expected {n} events sent, got {result.value} {result.error}")

    timing = paired(lambda: once(recorded), lambda: once(plain), warmup=1, repeats=7)
    per_call = (statistics.median(timing.subject) - statistics.median(timing.baseline)) / n
    note(f"l: the ledger added {per_call * 1e6:.0f} µs per send_event (one spool line each)")
    recorded.close()
    plain.close()
    admin.close()
    return Row("l", f"{n} send_event via emulator, ledger on vs off", timing, 1.10)


# -- 4: converting a 10,000-contact result ------------------------------------------------------


class _NoHost:
    """A host without integrations: benchmark 4 only moves values in and out of Lua."""

    spec: dict[str, Any] = {}  # noqa: RUF012 - the Host protocol names a plain attribute

    def call(self, integration: str, account: str, action: str, params: str) -> Reply:
        return ("raise", "no actions in this benchmark", "RuntimeError")

    def help(self, topic: str | None) -> Reply:
        return ("ok", "", None)

    def schema(self, name: str) -> Reply:
        return ("ok", {}, None)

    def accounts(self, name: str) -> Reply:
        return ("ok", [], None)

    def explain(self, integration: str, account: str | None, name: str | None) -> str:
        return "unknown name"


def find_rows(n: int) -> dict[str, Any]:
    """A ``find_contact``-shaped result holding ``n`` contacts (as the action returns them)."""
    rows = [
        {
            "id": f"cm{i:020d}",
            "email": f"person{i}@example.com",
            "first_name": f"Person {i}",
            "last_name": "Example",
            "source": "api",
            "subscribed": i % 3 != 0,
            "user_group": "trial" if i % 2 else "paid",
            "user_id": f"user-{i}",
            "mailing_lists": {"cm06f5v0e45nf0ml5754o9cix": True} if i % 4 == 0 else {},
            "opt_in_status": "accepted",
            "properties": {"plan": "pro", "seats": i % 50, "score": i / 7},
        }
        for i in range(n)
    ]
    return {"success": True, "contacts": rows, "contact": rows[0]}


def bench_convert(scale: float) -> Row:
    n = max(1000, int(10_000 * scale))
    data = find_rows(n)
    limits = Limits(
        memory=1024 * 1024 * 1024,
        result_bytes=256 * 1024 * 1024,
        instructions=10**10,
        timeout=120,
    )
    host = _NoHost()
    outcome = execute("local rows = ...; return rows", data, host=host, limits=limits)
    if outcome.value != data:
        raise SystemExit(f"4: the round trip changed the data: {outcome.error}")

    def subject() -> None:
        execute("local rows = ...; return rows", data, host=host, limits=limits)

    def baseline() -> None:
        json.loads(json.dumps(data))

    timing = paired(subject, baseline, warmup=1, repeats=7)
    return Row("4", f"{n}-contact result Python->Lua->Python", timing, 2.5)


# -- 5: process isolation -----------------------------------------------------------------------


def _children(pattern: str) -> list[int]:
    """Pids of this process's children whose command line contains ``pattern``."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if pattern.encode() in cmdline:
                pids.append(int(pid))
    return pids


def bench_process(scale: float) -> Row:
    n = max(50, int(500 * scale))
    pooled = Bridge.from_config(environ={}, isolation="process", workers=2, **NO_LEDGER)
    local = Bridge.from_config(environ={}, isolation="inprocess", **NO_LEDGER)
    for _ in range(4):  # wait until both workers are up and have served a run
        check_ok(pooled.run("return 1"))

    def subject() -> None:
        for _ in range(n):
            pooled.run("return 1")

    def baseline() -> None:
        for _ in range(n):
            local.run("return 1")

    timing = paired(subject, baseline, warmup=1, repeats=5)
    per_run = statistics.median(timing.subject) / n * 1e6
    note(f"5: a trivial run through the pool takes {per_run:.0f} us")
    workers = _children("luabridge.worker")
    rss = [peak_rss_kib(pid) for pid in workers]
    if rss:
        note(
            f"memory: peak RSS per worker process {statistics.median(rss) / 1024:.1f} MiB "
            f"({len(rss)} workers)"
        )
    pooled.close()
    local.close()
    return Row("5", f"{n} trivial runs, pool of 2 vs in-process", timing, 3.0)


# -- 6: the command line as a whole process -----------------------------------------------------


def _compile_bytecode() -> None:
    """Write the bytecode of luabridge and its packs, as installing the wheel does.

    The baseline's packages were installed by pip, which compiles them. An editable checkout
    has no bytecode of its own, and with PYTHONDONTWRITEBYTECODE set every process (the CLI
    and its worker) compiles each luabridge module again: about 50 ms of row 6 that no
    installed copy pays. ``__pycache__`` is ignored by git.
    """
    import compileall

    import integrations
    import luabridge

    for package in (luabridge, integrations):
        for folder in package.__path__:
            compileall.compile_dir(folder, quiet=1)


def bench_cli(tmp: Path) -> Row:
    _compile_bytecode()
    script = tmp / "hello.lua"
    script.write_text('print("hello, world")\n')
    exe = shutil.which("luabridge", path=str(Path(sys.executable).parent)) or "luabridge"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPS_")}
    cli = [exe, "run", str(script)]
    bare = [sys.executable, "-c", "import lupa, httpx, pydantic"]

    #: CPU seconds (user plus system) of each timed process and the processes it waited for,
    #: which a busy machine changes much less than the wall-clock time.
    cpu: dict[str, list[float]] = {}

    def run(cmd: list[str], label: str) -> Callable[[], None]:
        def go() -> None:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            cpu.setdefault(label, []).append(used)

        return go

    timing = paired(run(cli, "process"), run(bare, "baseline"), warmup=1, repeats=9)
    inproc = paired(
        run([*cli, "--isolation", "inprocess"], "inprocess"),
        run(bare, "baseline"),
        warmup=0,
        repeats=5,
    )
    note(
        f"6: with --isolation inprocess (no worker process to start) the ratio is "
        f"{inproc.ratio:.2f} (min-max {inproc.spread[0]:.2f}-{inproc.spread[1]:.2f})"
    )
    least = {label: min(used) * 1000 for label, used in cpu.items()}
    note(
        f"6: CPU time, least of the runs (the process and its worker): {least['process']:.0f} ms, "
        f"{least['inprocess']:.0f} ms with --isolation inprocess, baseline "
        f"{least['baseline']:.0f} ms (ratios {least['process'] / least['baseline']:.2f} and "
        f"{least['inprocess'] / least['baseline']:.2f})"
    )
    return Row("6", "`luabridge run hello.lua` process", timing, 1.3)


# -- 7: concurrent automations ------------------------------------------------------------------

AUTOMATION = """
local input = ...
local loops = app.integrations.loops
local email = input.email
local made = loops.create_contact{email = email, first_name = input.name, source = "signup"}
local found = loops.find_contact{email = email}
loops.update_contact{email = email, user_group = "trial", properties = {notes = "trial"}}
loops.send_event{email = email, event_name = "signed_up", event_properties = {plan = "trial"}}
local check = loops.check_contact_suppression{email = email}
return {id = made.id, found = #found.contacts, suppressed = check.is_suppressed}
"""


def bench_automations(tmp: Path, emulator: Emulator, scale: float, isolation: str) -> Row:
    n = max(40, int(200 * scale))
    inputs = [{"email": f"auto{i}@example.com", "name": f"Person {i}"} for i in range(n)]
    bridge = emulator_bridge(tmp, emulator, isolation=isolation, workers=8)
    admin = httpx.Client()
    reset(admin, emulator)
    check_ok(bridge.run(AUTOMATION, input=inputs[0], allow={"write"}))

    def one(item: dict[str, Any]) -> None:
        result = bridge.run(AUTOMATION, input=item, allow={"write"})
        if not result.ok or any(c.outcome != "ok" for c in result.calls):
            raise SystemExit(f"7: an automation failed: {result.error} {result.calls}")

    def serial() -> None:
        reset(admin, emulator)
        for item in inputs:
            one(item)

    host_busy: list[float] = []

    def threaded() -> None:
        reset(admin, emulator)
        cpu, wall = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, inputs))
        host_busy.append((time.process_time() - cpu) / (time.perf_counter() - wall))

    def warm() -> None:
        reset(admin, emulator)
        for item in inputs[:8]:
            one(item)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, inputs[8:24]))

    cpu0, wall0 = cpu_seconds(emulator.pid), time.perf_counter()
    # The ratio is serial time / threaded time: the speed-up of 8 threads over one.
    timing = paired(serial, threaded, repeats=3, warm=warm)
    busy = (cpu_seconds(emulator.pid) - cpu0) / (time.perf_counter() - wall0)
    rate = n * 5 / statistics.median(timing.baseline)
    note(
        f"7 ({isolation}): 8 threads made {rate:.0f} action calls/s; the emulator process was "
        f"busy {busy:.0%} of one core over the benchmark; this process (all its threads) "
        f"used {statistics.median(host_busy):.0%} of one core while 8 threads ran"
    )
    bridge.close()
    admin.close()
    return Row(
        "7" if isolation == "process" else "7b",
        f"{n} automations x5 actions, 8 threads vs 1 ({isolation})",
        timing,
        1.6,
        higher_is_better=True,
    )


# -- figures without a target --------------------------------------------------------------------


def report_memory() -> None:
    bridge = Bridge.from_config(environ={}, isolation="inprocess", **NO_LEDGER)
    bridge.run("return 1")
    tracemalloc.start()
    result = bridge.run("local t = {} for i = 1, 1000 do t[i] = i end return #t")
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lua_peak = result.usage.get("peak_memory", 0)
    note(
        f"memory: per in-process run, Lua heap peak {lua_peak / 1024:.0f} KiB and Python "
        f"allocations peak {py_peak / 1024:.0f} KiB (a 1,000-item loop); the host's RSS "
        f"peak is {peak_rss_kib(os.getpid()) / 1024:.0f} MiB after all benchmarks above"
    )
    bridge.close()


def report_emulator(emulator: Emulator, seconds: float) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}

    def hammer(stop_at: float) -> int:
        count = 0
        with httpx.Client(base_url=emulator.base_url, headers=headers) as http:
            while time.perf_counter() < stop_at:
                http.get("/api-key").raise_for_status()
                count += 1
        return count

    for clients in (1, 4):
        stop_at = time.perf_counter() + seconds
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            total = sum(pool.map(hammer, [stop_at] * clients))
        rps = total / (time.perf_counter() - start)
        note(f"emulator: {rps:.0f} requests/s on loopback with {clients} client thread(s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark numbers, e.g. 1,4")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="shrink the workloads (0.1 for a smoke test)"
    )
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    def wanted(number: str) -> bool:
        return not only or number in only

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    with workspace() as tmp:
        if wanted("1"):
            progress("1: trivial in-process run")
            rows.extend(bench_trivial(args.scale))
        if wanted("2"):
            progress("2: read actions on an instant transport")
            rows.extend(bench_read_calls(tmp, args.scale))
        if wanted("4"):
            progress("4: conversion of a 10,000-contact result")
            rows.append(bench_convert(args.scale))
        if wanted("5"):
            progress("5: process isolation")
            rows.append(bench_process(args.scale))
        if wanted("6"):
            progress("6: the command line as a process")
            rows.append(bench_cli(tmp))
        if wanted("3") or wanted("7") or wanted("e") or wanted("f") or wanted("l"):
            emulator = Emulator(KEY)
            try:
                if wanted("3"):
                    progress("3: create_contact against the emulator")
                    rows.append(bench_creates(tmp, emulator, args.scale))
                if wanted("7"):
                    progress("7: concurrent automations (process isolation)")
                    rows.append(bench_automations(tmp, emulator, args.scale, "process"))
                    progress("7b: concurrent automations (in-process)")
                    rows.append(bench_automations(tmp, emulator, args.scale, "inprocess"))
                if wanted("f"):
                    progress("f1, f2: runs on a fleet (redis-server, luabridge worker nodes)")
                    from fleet import fleet_rows

                    rows.extend(fleet_rows(tmp, emulator, args.scale, note))
                if wanted("l"):
                    progress("l: the run ledger's cost per send_event")
                    rows.append(bench_ledger(tmp, emulator, args.scale))
                if wanted("e"):
                    progress("emulator capacity")
                    report_emulator(emulator, 2.0 * min(1.0, args.scale * 2))
            finally:
                emulator.close()
        if wanted("8") or wanted("9"):
            progress("8, 9: the peer sandbox (pydantic-monty)")
            rows.extend(peer_rows(args.scale, note))
        if wanted("mcp"):
            progress("mcp: execute_lua through the stdio MCP server")
            from agent import agent_rows

            rows.extend(agent_rows(tmp, args.scale, note))
        if wanted("m"):
            report_memory()
    rows.sort(key=lambda r: r.number)
    print(format_table(rows))
    print()
    for text in NOTES:
        print(f"- {text}")
    print()
    print(
        f"total time {time.perf_counter() - started:.0f} s; 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)"
    )
    return 0 if all(r.holds for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
