"""The ``luabridge`` command line: run scripts, read the docs, call one action, serve the emulator.

It is a thin layer over :class:`luabridge.Bridge` (runs, docs, schemas, accounts), built from
``luabridge.config`` like every bridge; it names no integration (each pack declares its own
emulator and extra commands). Exit codes: 0 success, 1 the script or action
failed, 2 usage or configuration error. ``--json`` prints exactly one JSON document on standard
output; everything meant for people (errors, hints) goes to standard error.

The command group lives in ``luabridge.cli.app`` and is loaded on first use of its names here:
:func:`main` first starts the worker process of a ``run`` or ``call`` in a worker
(``luabridge.cli.prestart``), then imports click and the commands while that worker starts.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageProblem",
    "cli",
    "main",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("luabridge.cli.app"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``luabridge``."""
    from luabridge.cli import prestart

    args = sys.argv[1:] if argv is None else list(argv)
    prestart.start(args)
    try:
        from luabridge.cli.app import cli

        cli.main(args=args, prog_name="luabridge")
    finally:
        prestart.discard()
