"""Fixtures shared by the whole suite: one Loops emulator per test run, over real HTTP.

``loops_emulator`` starts a single ``EmulatorServer`` on 127.0.0.1 (OS-assigned port) for the
session, with the demo teams ``default``, ``marketing`` and ``transactional`` (keys in
``DEMO_KEYS``) and the default 10 requests/second limit. ``emulator`` hands the same server to
a test after resetting it, so every test starts from the seeded data with no faults, an empty
request log and fresh rate windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer


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
