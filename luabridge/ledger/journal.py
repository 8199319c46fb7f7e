"""The dispatcher's side of the ledger: one run's calls, their keys, and what a resume replays.

A :class:`Journal` belongs to one run of one execution. Before a call leaves, the dispatcher asks
it what the ledger already knows about the call at that place (:meth:`Journal.prior`), then
writes ``sending`` (:meth:`Journal.begin`) and, once the call is over, its outcome
(:meth:`Journal.finish`). :func:`derive_key` makes the idempotency key of a send from the
execution id, the call's sequence number and its canonical parameters, so every run of the same
execution sends the same logical request with the same key.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

from luabridge.errors import ConfigError
from luabridge.ledger.base import (
    CallEntry,
    CallState,
    ExecutionRecord,
    ExecutionStatus,
    Ledger,
    LedgerError,
    Outcome,
    canonical_json,
)

__all__ = [
    "KEY_PREFIX",
    "MAX_EXECUTION_ID",
    "Journal",
    "check_execution_id",
    "derive_key",
    "open_journal",
    "shown_status",
]

_log = logging.getLogger(__name__)

#: The longest execution id accepted (it goes into logs, file names and task ids).
MAX_EXECUTION_ID: Final = 200
#: Executions running in this process now, so that two threads never run the same one.
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()

#: Derived keys start with this, so a key in Loops' logs can be traced to a luabridge run.
KEY_PREFIX: Final = "lb1-"


def derive_key(execution_id: str, seq: int, params: Any, *, canonical: str | None = None) -> str:
    """The idempotency key of call ``seq`` of ``execution_id`` with these parameters (without
    the key itself): ``lb1-`` and 48 hex digits of SHA-256, well under Loops' 100 characters.
    ``canonical``: ``canonical_json(params)`` when the caller has it already."""
    if canonical is None:
        canonical = canonical_json(params)
    text = f"{execution_id}\n{seq}\n{canonical}"
    return KEY_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()[:48]


def check_execution_id(execution_id: object) -> str:
    """``execution_id`` if it is a usable id; ``ConfigError`` saying what is wrong otherwise."""
    if not isinstance(execution_id, str) or not execution_id.strip():
        raise ConfigError(
            f"execution_id must be a non-empty string, got {execution_id!r}; for example "
            'execution_id="order-1001"'
        )
    if len(execution_id) > MAX_EXECUTION_ID:
        raise ConfigError(
            f"execution_id is {len(execution_id)} characters long; the most is {MAX_EXECUTION_ID}"
        )
    if not execution_id.isprintable():
        raise ConfigError(
            f"execution_id {execution_id!r} holds a control character; use letters, digits "
            "and punctuation"
        )
    return execution_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shown_status(record: ExecutionRecord) -> str:
    """The status to show for ``record``: ``crashed`` for one still marked running by a process
    of this host that no longer exists (it died without writing its end), else its own."""
    if (
        record.status == ExecutionStatus.RUNNING.value
        and record.host == socket.gethostname()
        and record.pid
        and record.pid != os.getpid()
        and not _alive(record.pid)
    ):
        return ExecutionStatus.CRASHED.value
    return record.status


def open_journal(
    ledger: Ledger,
    execution_id: str,
    *,
    script_hash: str,
    input_hash: str,
    policy: Mapping[str, Any],
    accounts: Mapping[str, list[str]],
    force: bool = False,
    fresh: bool = False,
) -> Journal:
    """Start or resume ``execution_id`` in ``ledger`` and return the run's journal.

    A new id gets a ``running`` record. An id the ledger holds is resumed: its record is marked
    running again with one more resume, and its calls are handed to the journal for replay.
    Raises ``ConfigError`` when the execution is running elsewhere (this process, or a live
    process on this host), or when the script or input differ from the record and ``force`` is
    false; ``LedgerError`` when the ledger fails. ``fresh``: the id was just generated, so the
    ledger cannot hold it and is not asked (one read less per run).
    """
    with _ACTIVE_LOCK:
        if execution_id in _ACTIVE:
            raise ConfigError(
                f"execution {execution_id!r} is already running in this process; wait for that "
                "run to end before resuming it"
            )
        _ACTIVE.add(execution_id)
    try:
        return _open(
            ledger,
            execution_id,
            script_hash,
            input_hash,
            dict(policy),
            dict(accounts),
            force,
            fresh,
        )
    except BaseException:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(execution_id)
        raise


def _open(
    ledger: Ledger,
    execution_id: str,
    script_hash: str,
    input_hash: str,
    policy: dict[str, Any],
    accounts: dict[str, list[str]],
    force: bool,
    fresh: bool,
) -> Journal:
    host, pid, now = socket.gethostname(), os.getpid(), time.time()
    existing = None if fresh else ledger.get_execution(execution_id)
    if existing is None:
        ledger.create_execution(
            ExecutionRecord(
                execution_id=execution_id,
                status=ExecutionStatus.RUNNING.value,
                script_hash=script_hash,
                input_hash=input_hash,
                policy=policy,
                accounts=accounts,
                started_at=now,
                host=host,
                pid=pid,
            )
        )
        ledger.claim(execution_id, {})
        return Journal(ledger, execution_id, [])
    if (
        existing.status == ExecutionStatus.RUNNING.value
        and existing.host == host
        and existing.pid != pid
        and _alive(existing.pid)
    ):
        raise ConfigError(
            f"execution {execution_id!r} is still running in process {existing.pid} on this "
            "host; wait for it to end (or stop that process) before resuming it"
        )
    if not force:
        differ = [
            what
            for what, old, new in (
                ("script", existing.script_hash, script_hash),
                ("input", existing.input_hash, input_hash),
            )
            if old != new
        ]
        if differ:
            raise ConfigError(
                f"execution {execution_id!r} is in the ledger with a different "
                f"{' and '.join(differ)}; resuming it would replay its recorded writes for "
                'another job. Use a new execution id, or resume anyway with resume="force" '
                "(CLI: --force-resume)"
            )
    ledger.update_execution(
        execution_id,
        status=ExecutionStatus.RUNNING.value,
        resumed=existing.resumed + 1,
        ended_at=0,
        error={},
        host=host,
        pid=pid,
    )
    recorded = ledger.get_calls(execution_id)
    ledger.claim(execution_id, {entry.seq: entry.state for entry in recorded})
    return Journal(ledger, execution_id, recorded, resumed=True)


class Journal:
    """The record of one run of an execution, as the dispatcher writes it.

    - ``ledger``: where it goes; every method may raise its ``LedgerError``
    - ``execution_id``: the execution
    - ``recorded``: the calls the ledger held when this run started (empty for a first run)
    - ``resumed``: whether this run resumes an execution the ledger already held

    A resumed run replays by place: the call at sequence number ``n`` is compared with the one
    recorded at ``n`` (same integration, account, action and parameters). The first call that
    differs ends the replay: it and every later call of the run are new calls, numbered after
    the recorded ones.

    An outcome given to :meth:`finish` with ``defer=True`` (a read's, or a send's that carries
    an idempotency key) is written with the next call's ``sending``, or with the run's end: one
    commit per call instead of two. If the host dies before that, the call stays ``sending``,
    which a resume handles safely for exactly these calls: a read runs again, a keyed send goes
    again with the same key and a duplicate is reported as delivered.
    """

    def __init__(
        self,
        ledger: Ledger,
        execution_id: str,
        recorded: list[CallEntry],
        *,
        resumed: bool = False,
    ) -> None:
        self.ledger = ledger
        self.execution_id = execution_id
        self.resumed = resumed
        self._recorded: dict[int, CallEntry] = {entry.seq: entry for entry in recorded}
        self._next_fresh = max(self._recorded, default=0) + 1
        self._diverged = False
        self._lock = threading.Lock()
        self._pending: Outcome | None = None

    def place(
        self, position: int, integration: str, account: str, action: str, params_hash: str
    ) -> tuple[int, CallEntry | None]:
        """The sequence number of the call at ``position`` and what was recorded there (None
        for a new call)."""
        with self._lock:
            if not self._diverged:
                entry = self._recorded.get(position)
                if entry is None:
                    self._next_fresh = max(self._next_fresh, position + 1)
                    return position, None
                if (entry.integration, entry.account, entry.action, entry.params_hash) == (
                    integration,
                    account,
                    action,
                    params_hash,
                ):
                    return position, entry
                self._diverged = True
            seq = self._next_fresh
            self._next_fresh += 1
            return seq, None

    def begin(
        self,
        seq: int,
        prior: CallEntry | None,
        *,
        integration: str,
        account: str,
        action: str,
        effect: str,
        params: Any,
        params_hash: str,
        idempotency_key: str | None,
    ) -> None:
        """Write ``sending`` for the call, before its request leaves (with the outcome of the
        call before it, when that was deferred)."""
        now = time.time()
        if prior is None:
            entry = CallEntry(
                seq=seq,
                integration=integration,
                account=account,
                action=action,
                effect=effect,
                params=params,
                params_hash=params_hash,
                state=CallState.SENDING.value,
                idempotency_key=idempotency_key,
                started_at=now,
            )
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is None:
                self.ledger.append_call(self.execution_id, entry)
                return
            try:
                self.ledger.settle_and_append(self.execution_id, pending, entry)
            except LedgerError:
                # This call is not sent; the earlier outcome is still worth keeping.
                with contextlib.suppress(LedgerError):
                    self._write(pending)
                raise
            return
        self.flush()
        if prior.state == CallState.SENDING.value:
            # The run that wrote it died before the answer: that attempt's outcome is unknown.
            self.mark_unknown(seq)
        self.ledger.update_call(
            self.execution_id,
            seq,
            state=CallState.SENDING.value,
            idempotency_key=idempotency_key,
            at=now,
        )

    def mark_unknown(self, seq: int) -> None:
        """Record that the call at ``seq`` (in state ``sending``) has an unknown outcome."""
        self.flush()
        self.ledger.update_call(self.execution_id, seq, state=CallState.UNKNOWN.value)

    def finish(
        self, seq: int, state: str, result: Mapping[str, Any] | None, *, defer: bool = False
    ) -> None:
        """Write the call's outcome (``succeeded``, ``failed`` or ``unknown``); with ``defer``,
        keep it to be written with the next state change (only for calls that a resume may
        safely repeat: reads, and sends with an idempotency key)."""
        outcome = Outcome(seq, state, None if result is None else dict(result), time.time())
        try:
            self.flush()
        finally:
            if defer:
                with self._lock:
                    self._pending = outcome
            else:
                self._write(outcome)

    def flush(self) -> None:
        """Write a deferred outcome now, if there is one."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._write(pending)

    def _write(self, outcome: Outcome) -> None:
        self.ledger.update_call(
            self.execution_id,
            outcome.seq,
            state=outcome.state,
            result=outcome.result,
            at=outcome.at,
        )

    def close(
        self,
        status: str,
        *,
        usage: Mapping[str, Any],
        error: Mapping[str, Any] | None,
    ) -> None:
        """Write the execution's end (status, usage, error), after any deferred outcome, and
        let it be run again."""
        try:
            try:
                self.flush()
            except LedgerError as exc:
                # The call is over and its result given; the ledger keeps "sending", which a
                # resume handles safely for a deferred outcome (see the class docstring).
                _log.warning(
                    "the run ledger could not record the outcome of the last call of %s: %s",
                    self.execution_id,
                    exc,
                )
            finally:
                self.ledger.update_execution(
                    self.execution_id,
                    status=status,
                    usage=usage,
                    error=error or {},
                    ended_at=time.time(),
                )
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(self.execution_id)
