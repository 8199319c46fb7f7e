"""Records the ledger tests build: imported by the test modules beside this file."""

from __future__ import annotations

import time

from luabridge.ledger import CallEntry, ExecutionRecord


def running(execution_id: str, **fields: object) -> ExecutionRecord:
    """A running execution with an empty policy; ``fields`` set any other field."""
    values: dict[str, object] = {
        "execution_id": execution_id,
        "status": "running",
        "script_hash": "s",
        "input_hash": "i",
        "policy": {},
        "accounts": {},
        "started_at": time.time(),
        **fields,
    }
    return ExecutionRecord(**values)  # type: ignore[arg-type]


def sent(seq: int, **fields: object) -> CallEntry:
    """Call ``seq``, a ``send_event`` of the default Loops account; ``fields`` set the rest."""
    values: dict[str, object] = {
        "seq": seq,
        "integration": "loops",
        "account": "default",
        "action": "send_event",
        "effect": "write",
        "params": {"email": "a@b.co"},
        "params_hash": "p",
        **fields,
    }
    return CallEntry(**values)  # type: ignore[arg-type]
