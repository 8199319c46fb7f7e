"""Benchmarks f1 and f2: runs on a fleet (``luabridge worker`` nodes on a real redis-server).

f1 times 200 automations of 5 actions through a node of 2 worker processes against a node of
1, with the emulator's and the client's rate limits off as in benchmark 3 (at Loops' 10
requests/s one team would take 100 s whatever the fleet does). f2 times the round trip of a
trivial script through the queue (``submit`` then its result) against ``bridge.run`` in this
process, and reports both absolute figures. It relies on redis-server, Celery and the bench
emulator; each node serves a queue of its own, so both stay up through the paired repeats.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from harness import Emulator, Row, paired

__all__ = ["fleet_rows"]

AUTOMATION = """
local input = ...
local loops = app.integrations.loops
local email = input.email
local made = loops.create_contact{email = email, first_name = input.name, source = "signup"}
local found = loops.find_contact{email = email}
loops.update_contact{email = email, user_group = "trial"}
loops.send_event{email = email, event_name = "signed_up", event_properties = {plan = "trial"}}
local check = loops.check_contact_suppression{email = email}
return {id = made.id, found = #found.contacts, suppressed = check.is_suppressed}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A redis-server without persistence on a free loopback port; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("f1, f2: redis-server is not installed (apt-get install -y redis-server)")
    port = _free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([exe, *args, "--dir", str(folder)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@contextmanager
def worker_node(folder: Path, env: dict[str, str], concurrency: int) -> Iterator[None]:
    """``luabridge worker --concurrency N`` in ``folder`` (its luabridge.toml names the queue)."""
    log = (folder / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "luabridge", "worker", f"--concurrency={concurrency}"],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 60
    while " ready." not in (folder / "worker.log").read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"a worker did not start:\n{(folder / 'worker.log').read_text()}")
        time.sleep(0.1)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _node_folder(tmp: Path, name: str, emulator: Emulator, redis_url: str) -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / "luabridge.toml").write_text(
        f'[fleet]\nredis_url = "{redis_url}"\nqueue = "{name}"\n\n'
        "[limits]\ntimeout = 30\n\n"
        "[loops.accounts.default]\n"
        'api_key_env = "LOOPS_API_KEY"\n'
        f'base_url = "{emulator.base_url}"\n'
        "rate_limit = 0\n"
    )
    return folder


def fleet_rows(
    tmp: Path, emulator: Emulator, scale: float, note: Callable[[str], None]
) -> list[Row]:
    from luabridge import Bridge
    from luabridge.config import load_settings
    from luabridge.tasks import close_app, create_app, release_result, submit

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPS_")}
    env["LOOPS_API_KEY"] = emulator.key
    env.pop("LUABRIDGE_REDIS_URL", None)
    rows: list[Row] = []
    with redis_server(tmp) as redis_url:
        one, two = (_node_folder(tmp, q, emulator, redis_url) for q in ("fleet1", "fleet2"))
        apps = [create_app(load_settings(f / "luabridge.toml", environ=env)) for f in (one, two)]
        admin = httpx.Client()

        def run_all(app: Any, items: list[dict[str, Any]]) -> None:
            from celery.result import ResultSet

            results = [submit(AUTOMATION, item, allow="write", app=app) for item in items]
            # One wait for the lot (every result arrives on the one subscription), rather than
            # a get() per result, each with its own turn of Celery's wait loop.
            envelopes = ResultSet(results, app=app).join_native(timeout=600)
            for result in results:
                release_result(result)
            for envelope in envelopes:
                if not envelope["ok"] or any(c["outcome"] != "ok" for c in envelope["calls"]):
                    raise SystemExit(
                        f"f1: an automation failed: {envelope['error']} {envelope['calls']}"
                    )

        n = max(40, int(200 * scale))
        with worker_node(one, env, 1), worker_node(two, env, 2):

            def batch(app: Any) -> Callable[[], None]:
                def go() -> None:
                    admin.post(f"{emulator.root_url}/__emulator/reset").raise_for_status()
                    tag = uuid.uuid4().hex[:8]
                    items = [
                        {"email": f"f{tag}{i}@example.com", "name": f"Person {i}"} for i in range(n)
                    ]
                    run_all(app, items)

                return go

            def warm() -> None:
                for app in apps:
                    admin.post(f"{emulator.root_url}/__emulator/reset").raise_for_status()
                    run_all(app, [{"email": f"w{i}@example.com", "name": "W"} for i in range(8)])

            # The ratio is 1 process's time / 2 processes' time: the speed-up of the second.
            timing = paired(batch(apps[0]), batch(apps[1]), repeats=3, warm=warm)
            rate = n * 5 / statistics.median(timing.baseline)
            note(f"f1: 2 worker processes made {rate:.0f} action calls/s ({n} automations)")
            rows.append(
                Row(
                    "f1",
                    f"{n} automations x5 actions, 2 worker processes vs 1 (fleet)",
                    timing,
                    1.6,
                    subject_label="1 process",
                    baseline_label="2 processes",
                    higher_is_better=True,
                )
            )

            trips = max(20, int(100 * scale))
            bridge = Bridge.from_config(one / "luabridge.toml", environ=env, isolation="inprocess")

            def queued() -> None:
                for _ in range(trips):
                    result = submit("return 1", app=apps[1])
                    if result.get(timeout=60)["result"] != 1:
                        raise SystemExit("f2: a trivial task failed")
                    release_result(result)

            def local() -> None:
                for _ in range(trips):
                    bridge.run("return 1")

            rt = paired(queued, local, repeats=5)
            per_trip = statistics.median(rt.subject) / trips * 1000
            per_run = statistics.median(rt.baseline) / trips * 1000
            note(
                f"f2: a trivial script through the queue takes {per_trip:.1f} ms from submit to "
                f"result; bridge.run in-process {per_run:.3f} ms (both journal to the Redis ledger)"
            )
            rows.append(
                Row(
                    "f2",
                    "trivial script: submit then result vs bridge.run in-process, ms per run",
                    rt,
                    200.0,
                    unit_scale=1000.0 / trips,
                )
            )
            bridge.close()
        admin.close()
        for app in apps:
            close_app(app)
    return rows
