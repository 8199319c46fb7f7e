"""docs/examples/crash_and_resume.py runs as docs/ledger.md shows: a host killed part-way, the
execution resumed in a new process, every event stored once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_crash_and_resume_example_stores_each_event_once() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "crash_and_resume.py")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    killed = re.search(r"killed the first run after (\d+) of 20 events", proc.stdout)
    assert killed is not None and 1 <= int(killed.group(1)) < 20, proc.stdout
    assert "events stored: 20 (expected 20)" in proc.stdout
    assert "replayed from the run ledger" in proc.stdout
    assert re.search(r"order-1001\s+succeeded", proc.stdout)
