"""The run ledger: a durable record of every execution and of each call's state.

:class:`Ledger` is the interface (see :mod:`luabridge.ledger.base`), :class:`SQLiteLedger` the
embedded default, :class:`RedisLedger` the one a fleet shares (selected by the fleet's Redis
URL). :func:`ledger_path` decides where the default file lives, from the
environment and ``luabridge.toml``; ``luabridge.config.load_settings`` calls it, so every front
door finds the same ledger. What runs write to it (keys, replay, resume) is
:mod:`luabridge.ledger.journal`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from luabridge.ledger.location import ENV_VAR, default_ledger_path, ledger_path

# The implementations are imported on first use (PEP 562): reading the configuration needs only
# the location, and a run without a ledger never imports sqlite3.
if TYPE_CHECKING:
    from luabridge.ledger.base import (
        CallEntry,
        CallState,
        ExecutionRecord,
        ExecutionStatus,
        Ledger,
        LedgerError,
        Outcome,
        canonical_json,
        digest,
    )
    from luabridge.ledger.redisstore import RedisLedger
    from luabridge.ledger.sqlite import SQLiteLedger

_HOMES: dict[str, str] = {
    "CallEntry": "luabridge.ledger.base",
    "CallState": "luabridge.ledger.base",
    "ExecutionRecord": "luabridge.ledger.base",
    "ExecutionStatus": "luabridge.ledger.base",
    "Ledger": "luabridge.ledger.base",
    "LedgerError": "luabridge.ledger.base",
    "Outcome": "luabridge.ledger.base",
    "RedisLedger": "luabridge.ledger.redisstore",
    "SQLiteLedger": "luabridge.ledger.sqlite",
    "canonical_json": "luabridge.ledger.base",
    "digest": "luabridge.ledger.base",
}

__all__ = [
    "ENV_VAR",
    "CallEntry",
    "CallState",
    "ExecutionRecord",
    "ExecutionStatus",
    "Ledger",
    "LedgerError",
    "Outcome",
    "RedisLedger",
    "SQLiteLedger",
    "canonical_json",
    "default_ledger_path",
    "digest",
    "ledger_path",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'luabridge.ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
