"""Real ``luabridge worker`` processes for the fleet tests, each in its own process group.

A worker node is started as a subprocess in a session of its own, so that ``kill()`` can
SIGKILL the whole node at once (its Celery pool and their Lua workers), as when a machine dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["WorkerNode", "max_per_window"]


def max_per_window(times: list[float], window: float = 1.0) -> int:
    """The most times found in any half-open window ``[t, t + window)``."""
    times = sorted(times)
    return max(
        (sum(1 for t in times[i:] if t < first + window) for i, first in enumerate(times)),
        default=0,
    )


class WorkerNode:
    """``luabridge worker --concurrency N`` in ``folder`` with ``env``; ``start()`` waits until
    Celery says it is ready. Its output is kept in ``folder/worker-<n>.log``."""

    def __init__(self, folder: Path, env: Mapping[str, str], concurrency: int, name: str) -> None:
        self.folder = folder
        self.env = dict(env)
        self.concurrency = concurrency
        self.log = folder / f"worker-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> WorkerNode:
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "luabridge", "worker", f"--concurrency={self.concurrency}"],
            cwd=self.folder,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if " ready." in text:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"luabridge worker did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole node: its main process, its pool and their workers."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of what is left of the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        # Children of the group may still be exiting; give them a moment.
        end = time.monotonic() + 5
        while time.monotonic() < end and _group_alive(self.proc.pid):
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
