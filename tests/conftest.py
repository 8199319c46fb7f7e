"""Fixtures shared by the whole suite: one Loops emulator per test run, over real HTTP.

``loops_emulator`` starts a single ``EmulatorServer`` on 127.0.0.1 (OS-assigned port) for the
session, with the demo teams ``default``, ``marketing`` and ``transactional`` (keys in
``DEMO_KEYS``) and the default 10 requests/second limit. ``emulator`` hands the same server to
a test after resetting it, so every test starts from the seeded data with no faults, an empty
request log and fresh rate windows.

Every run the suite makes, in this process or in a subprocess, writes its ledger to a scratch
file (``LUABRIDGE_LEDGER`` is set for the whole session), never to the user's.
``redis_server`` starts a real ``redis-server`` on a free loopback port for the session, with
no persistence; ``redis_url`` hands a test an emptied database of it. Both skip when
``redis-server`` is not installed, unless ``LUABRIDGE_REQUIRE_REDIS`` is set (CI sets it), in
which case the run fails instead.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer


@pytest.fixture(scope="session", autouse=True)
def scratch_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's ledger file, in ``LUABRIDGE_LEDGER`` for every bridge the suite builds."""
    path = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    before = os.environ.get("LUABRIDGE_LEDGER")
    os.environ["LUABRIDGE_LEDGER"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("LUABRIDGE_LEDGER", None)
        else:
            os.environ["LUABRIDGE_LEDGER"] = before


@pytest.fixture(scope="session")
def loops_emulator() -> Iterator[EmulatorServer]:
    """The session's emulator; stops the whole run at once if it cannot start."""
    try:
        from integrations.loops.emulator import EmulatorServer

        server = EmulatorServer().start()
    except ImportError as exc:
        pytest.exit(
            f"The Loops emulator cannot be imported ({exc}). Install the project with its "
            "dependencies: pip install -e '.[dev]'.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    except Exception as exc:
        pytest.exit(
            f"The Loops emulator did not start: {exc}. Every network test needs it; check that "
            "127.0.0.1 accepts local connections and that uvicorn and starlette are installed.",
            returncode=pytest.ExitCode.INTERNAL_ERROR,
        )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator(loops_emulator: EmulatorServer) -> EmulatorServer:
    """The session's emulator, reset to its seeded state for this test."""
    loops_emulator.reset()
    return loops_emulator


#: The sample pack under tests/packs, installed by ``notes_pack`` (never shipped).
NOTES_PACK_SOURCE = Path(__file__).parent / "packs" / "luabridge-notes"


@pytest.fixture(scope="session")
def notes_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample pack, installed with pip from its own directory into a folder of its own.

    Returns that folder: put it on ``PYTHONPATH`` (subprocesses) or use ``pack_on_path``
    (this process) to make the pack discoverable. It is never installed into the environment
    the suite runs in, so every other test sees only the shipped packs.
    """
    target = tmp_path_factory.mktemp("notes-pack")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(NOTES_PACK_SOURCE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"pip could not install the sample pack:\n{proc.stderr}"
    return target


@contextlib.contextmanager
def pack_on_path(folder: Path) -> Iterator[None]:
    """Make the packs installed in ``folder`` discoverable by this process for a while."""
    from luabridge.registry import discover

    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        discover(refresh=True)
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.split(".")[0] == "luabridge_notes"]:
            del sys.modules[name]
        importlib.invalidate_caches()
        discover(refresh=True)


@pytest.fixture
def notes_discovered(notes_pack: Path) -> Iterator[Path]:
    """The sample pack, discoverable by this process during the test."""
    with pack_on_path(notes_pack):
        yield notes_pack


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``redis-server`` of this test run on 127.0.0.1 (no RDB, no AOF); yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        message = (
            "redis-server is not installed; install it (apt-get install -y redis-server) to run "
            "the fleet tests"
        )
        if os.environ.get("LUABRIDGE_REQUIRE_REDIS"):
            pytest.fail(message + " (LUABRIDGE_REQUIRE_REDIS is set)", pytrace=False)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("redis")
    for _attempt in range(5):
        port = _free_port()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(folder), "--loglevel", "warning"]
        proc = subprocess.Popen(
            [exe, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if _redis_answers(port):
                break
            time.sleep(0.02)
        if proc.poll() is None and _redis_answers(port):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("redis-server did not start on a free loopback port in 5 tries")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, emptied for this test."""
    import gc

    import redis

    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    yield redis_server
    # A Celery result unsubscribes from Redis when it is collected; collect this test's while
    # the server is still there to answer.
    gc.collect()
