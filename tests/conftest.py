"""Fixtures shared by the whole suite: one Loops emulator per test run, over real HTTP.

``loops_emulator`` starts a single ``EmulatorServer`` on 127.0.0.1 (OS-assigned port) for the
session, with the demo teams ``default``, ``marketing`` and ``transactional`` (keys in
``DEMO_KEYS``) and the default 10 requests/second limit. ``emulator`` hands the same server to
a test after resetting it, so every test starts from the seeded data with no faults, an empty
request log and fresh rate windows.

Every run the suite makes, in this process or in a subprocess, writes its ledger to a scratch
file (``LUABRIDGE_LEDGER`` is set for the whole session), never to the user's.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
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
