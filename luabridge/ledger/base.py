"""The ledger interface: what a run ledger stores and the operations every implementation offers.

A ledger keeps one :class:`ExecutionRecord` per execution id and, per execution, one
:class:`CallEntry` per action call in sequence order. The dispatcher writes a call's ``sending``
state before its request leaves and its outcome after, so any later process can tell which
writes were done. Implementations: :class:`luabridge.ledger.SQLiteLedger` (embedded, the
default); a shared store for a fleet subclasses :class:`Ledger` the same way. Everything stored
is already redacted: a ledger never sees a secret.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from luabridge.errors import LuabridgeError

__all__ = [
    "TRANSITIONS",
    "CallEntry",
    "CallState",
    "ExecutionRecord",
    "ExecutionStatus",
    "Ledger",
    "LedgerError",
    "Outcome",
    "canonical_json",
    "check_transition",
    "digest",
]


class LedgerError(LuabridgeError, OSError):
    """The ledger cannot be opened, read or written, or a write breaks its rules (an unknown
    execution, a duplicate sequence number, a state change that is not allowed)."""


class ExecutionStatus(enum.StrEnum):
    """Where an execution stands."""

    #: A process is running it (or died while running it: see ``ExecutionRecord.host``).
    RUNNING = "running"
    #: The script returned normally.
    SUCCEEDED = "succeeded"
    #: The script ended in an error (a Lua error, a limit, a refused call).
    FAILED = "failed"
    #: The worker running it died, or its host died and a later look found it abandoned.
    CRASHED = "crashed"


class CallState(enum.StrEnum):
    """Where one call stands. ``sending`` is written before the request leaves."""

    #: About to send, or sending: the outcome is not known yet.
    SENDING = "sending"
    #: The remote side did it (or had already done it: a deduplicated send).
    SUCCEEDED = "succeeded"
    #: The remote side said no, or nothing was sent; repeating it sends it again.
    FAILED = "failed"
    #: The request may have been carried out but no answer came (cut connection, deadline).
    UNKNOWN = "unknown"


#: The state changes a ledger accepts: an outcome after ``sending``, and ``sending`` again for
#: any call that did not succeed (a resumed execution tries it once more).
TRANSITIONS: Mapping[CallState, frozenset[CallState]] = {
    CallState.SENDING: frozenset({CallState.SUCCEEDED, CallState.FAILED, CallState.UNKNOWN}),
    CallState.FAILED: frozenset({CallState.SENDING}),
    CallState.UNKNOWN: frozenset({CallState.SENDING}),
    CallState.SUCCEEDED: frozenset(),
}


def canonical_json(value: Any) -> str:
    """``value`` as compact JSON with sorted keys: equal data always gives equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    """SHA-256 (hex) of a string, or of the canonical JSON of anything else."""
    text = value if isinstance(value, str) else canonical_json(value)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ExecutionRecord:
    """One execution as the ledger holds it.

    - ``execution_id``: the run's id (``bridge.run(..., execution_id=...)`` or a generated one)
    - ``status``: an :class:`ExecutionStatus` value
    - ``script_hash`` / ``input_hash``: :func:`digest` of the source and of the input, so a
      resume can tell that it runs the same script on the same input
    - ``policy``: ``{"allow": [...], "dry_run": bool, "limits": {...}}``
    - ``accounts``: the accounts granted to the run, ``{integration: [names]}``
    - ``started_at`` / ``ended_at``: Unix times (``ended_at`` None while running)
    - ``usage``: the run's usage (wall time, instructions, memory, output, calls)
    - ``resumed``: how many times the execution was resumed (0 for a first run)
    - ``error``: the run's error (``{"type", "message", "line"}``), when it failed
    - ``host`` / ``pid``: where it runs or last ran, to tell an abandoned run from a live one
    - ``calls`` / ``writes``: how many calls it made and how many of them were writes (filled
      by reads of the ledger; not stored)
    """

    execution_id: str
    status: str
    script_hash: str
    input_hash: str
    policy: dict[str, Any]
    accounts: dict[str, list[str]]
    started_at: float
    ended_at: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    resumed: int = 0
    error: dict[str, Any] | None = None
    host: str = ""
    pid: int = 0
    calls: int = 0
    writes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "script_hash": self.script_hash,
            "input_hash": self.input_hash,
            "policy": self.policy,
            "accounts": self.accounts,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "usage": self.usage,
            "resumed": self.resumed,
            "error": self.error,
            "host": self.host,
            "pid": self.pid,
            "calls": self.calls,
            "writes": self.writes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class CallEntry:
    """One action call of an execution.

    - ``seq``: its place in the execution (1, 2, ...), the same on every run of the script
    - ``integration`` / ``account`` / ``action`` / ``effect``: what was called
    - ``params``: the parameters, redacted; ``params_hash``: :func:`digest` of them unredacted
      (without the idempotency key), so a resume can tell the same call from another
    - ``state``: a :class:`CallState` value
    - ``idempotency_key``: the key the request carried, if the action takes one
    - ``result``: the result table the script got (redacted), once known
    - ``started_at`` / ``ended_at``: Unix times of the last attempt
    - ``attempts``: how many times it was sent (resumes add one each)
    """

    seq: int
    integration: str
    account: str
    action: str
    effect: str
    params: Any
    params_hash: str
    state: str = CallState.SENDING.value
    idempotency_key: str | None = None
    result: Any = None
    started_at: float = 0.0
    ended_at: float | None = None
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "integration": self.integration,
            "account": self.account,
            "action": self.action,
            "effect": self.effect,
            "params": self.params,
            "params_hash": self.params_hash,
            "state": self.state,
            "idempotency_key": self.idempotency_key,
            "result": self.result,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "attempts": self.attempts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallEntry:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Outcome:
    """A call's outcome waiting to be written (see :meth:`Ledger.settle_and_append`).

    - ``seq``: the call
    - ``state``: ``succeeded``, ``failed`` or ``unknown``
    - ``result``: the result the script got (redacted), or None
    - ``at``: the Unix time the call ended
    """

    seq: int
    state: str
    result: Any
    at: float


class Ledger(abc.ABC):
    """The operations every ledger offers; each one is its own durable transaction.

    Implementations must be safe to use from many threads at once, and from many processes
    sharing the same store. Every method raises :class:`LedgerError` when the store fails.
    """

    #: Where the ledger lives, for messages (a file path, a URL without credentials).
    location: str = ""

    # -- executions -----------------------------------------------------------------------------

    @abc.abstractmethod
    def create_execution(self, record: ExecutionRecord) -> None:
        """Store a new execution; ``LedgerError`` if its id is already held."""

    @abc.abstractmethod
    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        """The execution with this id (with ``calls`` and ``writes`` counted), or None."""

    @abc.abstractmethod
    def update_execution(
        self,
        execution_id: str,
        *,
        status: str | None = None,
        usage: Mapping[str, Any] | None = None,
        error: Mapping[str, Any] | None = None,
        started_at: float | None = None,
        ended_at: float | None = None,
        resumed: int | None = None,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        """Change the fields given (None leaves a field as it is); ``LedgerError`` if unknown.

        ``ended_at = 0`` clears the end time (a resumed execution is running again), and an
        ``error`` of ``{}`` clears the error."""

    @abc.abstractmethod
    def list_executions(self, limit: int = 20) -> list[ExecutionRecord]:
        """The most recently started executions, newest first (``calls``/``writes`` counted)."""

    # -- calls ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def append_call(self, execution_id: str, entry: CallEntry) -> None:
        """Store a new call (normally in state ``sending``); ``LedgerError`` if the execution
        is unknown or it already has a call with this ``seq``."""

    @abc.abstractmethod
    def update_call(
        self,
        execution_id: str,
        seq: int,
        *,
        state: str,
        result: Any = None,
        idempotency_key: str | None = None,
        at: float | None = None,
    ) -> None:
        """Move a call to ``state`` (see ``TRANSITIONS``); ``result`` and ``idempotency_key``
        are stored when given. Going back to ``sending`` counts an attempt and sets
        ``started_at`` to ``at``; an outcome sets ``ended_at`` to ``at``. ``LedgerError`` for
        an unknown call or a change ``TRANSITIONS`` does not allow."""

    def settle_and_append(self, execution_id: str, outcome: Outcome, entry: CallEntry) -> None:
        """Write an earlier call's ``outcome``, then append ``entry``, as one transaction where
        the store allows it (the journal uses this to write a read's or a keyed send's outcome
        together with the next call's ``sending``: one commit per call instead of two).

        This default makes two writes, the outcome first; a store that can make both at once
        overrides it, and then nothing is written when either part fails."""
        self.update_call(
            execution_id, outcome.seq, state=outcome.state, result=outcome.result, at=outcome.at
        )
        self.append_call(execution_id, entry)

    def claim(self, execution_id: str, states: Mapping[int, str]) -> None:
        """Say that this process now runs ``execution_id``, whose recorded calls have these
        states (by sequence number), until :meth:`update_execution` gives it a final status.
        A store may then record the execution's calls more cheaply, as long as every reader
        still sees them and each write is as durable when it returns. This default does
        nothing."""
        return None

    @abc.abstractmethod
    def get_calls(self, execution_id: str) -> list[CallEntry]:
        """Every call of the execution, in ``seq`` order (empty when unknown)."""

    # -- plans ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def save_plan(self, plan_id: str, plan: dict[str, Any], expires_at: float) -> None:
        """Store a dry run's plan under ``plan_id`` until the Unix time ``expires_at``
        (saving the same id again replaces it)."""

    @abc.abstractmethod
    def load_plan(self, plan_id: str) -> dict[str, Any] | None:
        """The plan saved under ``plan_id``, or None when it is unknown or has expired."""

    # -- lifecycle ------------------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; closing twice is harmless."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_transition(execution_id: str, seq: int, old: str, new: str) -> None:
    """Raise ``LedgerError`` unless a call may go from ``old`` to ``new``."""
    try:
        allowed = TRANSITIONS[CallState(old)]
        wanted = CallState(new)
    except ValueError as exc:
        raise LedgerError(
            f"call {seq} of execution {execution_id!r}: unknown state {new!r} or {old!r}; "
            f"states: {', '.join(s.value for s in CallState)}"
        ) from exc
    if wanted not in allowed:
        raise LedgerError(
            f"call {seq} of execution {execution_id!r} cannot go from {old!r} to {new!r}; "
            f"from {old!r} it can go to: {', '.join(sorted(allowed)) or 'nothing (final)'}"
        )
