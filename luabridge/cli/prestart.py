"""Starting the worker process of a one-run command before the command line is parsed.

``luabridge run`` and ``luabridge call`` run in a worker process unless ``--isolation
inprocess`` is given, and a worker takes about 45 ms of CPU to start: as long as the command
itself needs to import click, its commands, the bridge and the integration packs. :func:`start`
looks at the raw arguments before any of that is imported and, when the command is one of
these two in a worker, starts a one-worker pool at once, so that both starts overlap from the
beginning; ``command_bridge`` takes that pool (:func:`take`) only when click's own parsing
comes to the same isolation, and :func:`discard` closes one that no command took (a usage
error, ``--help``, an argument the look-ahead misread). The look-ahead only decides when the
worker starts, never whether a run is isolated: that is click's parse, as always.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from luabridge.pool import WorkerPool

__all__ = ["discard", "start", "take"]

#: The commands whose one run goes to a worker started here.
_COMMANDS = ("run", "call")
_NO_RUN = ("--help", "-h", "--version")

_lock = threading.Lock()
_pool: WorkerPool | None = None


def _isolated_run(args: Sequence[str]) -> bool:
    """Whether ``args`` read as ``run`` or ``call`` in a worker (the default isolation)."""
    if not args or args[0] not in _COMMANDS or any(a in _NO_RUN for a in args):
        return False
    isolation = "process"
    for i, arg in enumerate(args):
        if arg == "--isolation" and i + 1 < len(args):
            isolation = args[i + 1]
        elif arg.startswith("--isolation="):
            isolation = arg.partition("=")[2]
    return isolation == "process"


def start(args: Sequence[str]) -> None:
    """Start a one-worker pool now when ``args`` read as a run in a worker."""
    global _pool
    if not _isolated_run(args):
        return
    from luabridge.pool import WorkerPool

    with _lock:
        if _pool is None:
            # No reserve worker: the command runs one script, and a reserve started after
            # that run would only be killed when the command exits.
            _pool = WorkerPool(size=1, reserve=False)


def take(workers: int) -> WorkerPool | None:
    """The pool :func:`start` started, once, if it has ``workers`` workers (else None)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None and pool.size != workers:
        pool.close()
        return None
    return pool


def discard() -> None:
    """Close the pool :func:`start` started if no command took it."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()
