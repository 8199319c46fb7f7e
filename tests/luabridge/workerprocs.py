"""Finding the worker processes a test left behind."""

from __future__ import annotations

import os
from pathlib import Path


def worker_children() -> set[int]:
    """Live (not zombie) worker processes whose parent is this test process."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"luabridge.worker" in cmdline:
            found.add(int(stat.parent.name))
    return found
