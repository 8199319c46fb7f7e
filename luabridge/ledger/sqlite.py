"""The embedded ledger: one SQLite file, shared by every thread and process of a host.

It relies only on ``sqlite3``. The file runs in WAL mode with ``synchronous = NORMAL``: each
state change is one short transaction that survives the process being killed (the commit is in
the operating system's hands before the request leaves), at a cost of tens of microseconds.
Connections are lent out per transaction, so a host that serves each call on a fresh thread
leaves none behind.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from luabridge.ledger.base import (
    TRANSITIONS,
    CallEntry,
    ExecutionRecord,
    Ledger,
    LedgerError,
    Outcome,
    check_transition,
)
from luabridge.sqlitefile import ConnectionLender

__all__ = ["SQLiteLedger"]

_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    script_hash TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    policy TEXT NOT NULL,            -- JSON
    accounts TEXT NOT NULL,          -- JSON
    started_at REAL NOT NULL,
    ended_at REAL,
    usage TEXT NOT NULL,             -- JSON
    resumed INTEGER NOT NULL,
    error TEXT,                      -- JSON or NULL
    host TEXT NOT NULL,
    pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_start ON executions (started_at);
CREATE TABLE IF NOT EXISTS calls (
    execution_id TEXT NOT NULL REFERENCES executions (execution_id),
    seq INTEGER NOT NULL,
    integration TEXT NOT NULL,
    account TEXT NOT NULL,
    action TEXT NOT NULL,
    effect TEXT NOT NULL,
    params TEXT NOT NULL,            -- JSON, redacted
    params_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    idempotency_key TEXT,
    result TEXT,                     -- JSON, redacted
    started_at REAL NOT NULL,
    ended_at REAL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,              -- JSON
    expires_at REAL NOT NULL
);
"""

_EXECUTION_COLUMNS: Final = (
    "execution_id, status, script_hash, input_hash, policy, accounts, started_at, ended_at, "
    "usage, resumed, error, host, pid"
)
_COUNTS: Final = (
    "(SELECT COUNT(*) FROM calls c WHERE c.execution_id = e.execution_id), "
    "(SELECT COUNT(*) FROM calls c WHERE c.execution_id = e.execution_id AND c.effect != 'read')"
)
_CALL_COLUMNS: Final = (
    "seq, integration, account, action, effect, params, params_hash, state, idempotency_key, "
    "result, started_at, ended_at, attempts"
)


class _NothingWritten(Exception):
    """Rolls back a transaction whose statements changed no row (the caller says why)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


#: For each state, the states a call may come from (see ``TRANSITIONS``), as SQL markers.
_SOURCES: Final = {
    new.value: sorted(old.value for old, targets in TRANSITIONS.items() if new in targets)
    for new in {state for targets in TRANSITIONS.values() for state in targets}
}
_APPEND: Final = (
    f"INSERT INTO calls (execution_id, {_CALL_COLUMNS}) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM executions WHERE execution_id = ?)"
)
#: The same without the check that the execution exists (known when its other call was found).
_APPEND_KNOWN: Final = (
    f"INSERT INTO calls (execution_id, {_CALL_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _append_params(execution_id: str, entry: CallEntry) -> tuple[Any, ...]:
    return (
        execution_id,
        entry.seq,
        entry.integration,
        entry.account,
        entry.action,
        entry.effect,
        _dumps(entry.params),
        entry.params_hash,
        entry.state,
        entry.idempotency_key,
        None if entry.result is None else _dumps(entry.result),
        entry.started_at or time.time(),
        entry.ended_at,
        entry.attempts,
        execution_id,
    )


def _update(
    execution_id: str,
    seq: int,
    state: str,
    result: Any,
    idempotency_key: str | None,
    at: float | None,
) -> tuple[str, tuple[Any, ...]]:
    """The statement that moves a call to ``state``, its transition checked in the WHERE."""
    now = time.time() if at is None else at
    sources = _SOURCES.get(state, [])
    changes: dict[str, Any] = {"state": state}
    if result is not None:
        changes["result"] = _dumps(result)
    if idempotency_key is not None:
        changes["idempotency_key"] = idempotency_key
    assignments = ", ".join(f"{name} = ?" for name in changes)
    if state == "sending":
        assignments += ", attempts = attempts + 1, started_at = ?, ended_at = NULL"
    else:
        assignments += ", ended_at = ?"
    marks = ", ".join("?" for _ in sources) or "NULL"
    return (
        f"UPDATE calls SET {assignments} WHERE execution_id = ? AND seq = ? AND state IN ({marks})",
        (*changes.values(), now, execution_id, seq, *sources),
    )


class SQLiteLedger(Ledger):
    """A ledger in one SQLite file.

    - ``path``: the file; its folder is created when missing (see
      ``luabridge.ledger.default_ledger_path`` for the documented default)
    - ``busy_timeout``: seconds a writer waits for another process's transaction (default 10.0)

    Example::

        with SQLiteLedger("/tmp/ledger.sqlite3") as ledger:
            for record in ledger.list_executions(limit=5):
                print(record.execution_id, record.status)
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path).expanduser()
        self.location = str(self.path)
        self.busy_timeout = busy_timeout
        self._lender = ConnectionLender(
            self.path,
            busy_timeout=busy_timeout,
            error=lambda action, exc: self._error(f"{action} the ledger {self.location!r}", exc),
            closed=lambda: LedgerError(f"{self!r} has been closed; open a new SQLiteLedger"),
        )
        self._transaction = self._lender.transaction
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(f"cannot create the folder {str(self.path.parent)!r}", exc) from exc
        # The record names people (emails, ids) even with every secret redacted: a new file
        # is readable by its owner only, and SQLite gives its -wal/-shm files the same mode.
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise self._error(f"cannot create the ledger {self.location!r}", exc) from exc
        # A file that already has the schema is only read: opening it takes no write lock.
        with self._transaction(write=False) as db:
            version = self._check_version(db)
        if version == _SCHEMA_VERSION:
            return
        with self._transaction() as db:
            self._check_version(db)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _check_version(self, db: sqlite3.Connection) -> int:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger {self.location!r} was written by a newer luabridge (schema "
                f"{version}, this one reads {_SCHEMA_VERSION}); upgrade luabridge or point "
                "LUABRIDGE_LEDGER at another file"
            )
        return version

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.location!r})"

    # -- connections ----------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> LedgerError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            fix = (
                "the file is not a luabridge ledger (or it is damaged); move it aside, or point "
                'LUABRIDGE_LEDGER (or ledger = "..." in luabridge.toml) at another file'
            )
        elif "locked" in text or "busy" in text:
            fix = (
                f"another process held the ledger for more than {self.busy_timeout:g} s; try "
                "again, or give each host its own ledger file"
            )
        else:
            fix = (
                'point LUABRIDGE_LEDGER (or ledger = "..." in luabridge.toml) at a file in a '
                "writable folder, or turn the ledger off with ledger = false"
            )
        return LedgerError(f"{what} ({type(exc).__name__}: {text}): {fix}")

    def _statement(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one writing statement as its own transaction; the number of rows it changed."""
        db = self._lender.borrow()
        try:
            return db.execute(sql, params).rowcount
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise self._error(f"cannot write to the ledger {self.location!r}", exc) from exc
        finally:
            self._lender.give_back(db)

    def close(self) -> None:
        self._lender.close()

    # -- executions -----------------------------------------------------------------------------

    def create_execution(self, record: ExecutionRecord) -> None:
        with self._transaction() as db:
            try:
                db.execute(
                    f"INSERT INTO executions ({_EXECUTION_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.execution_id,
                        record.status,
                        record.script_hash,
                        record.input_hash,
                        _dumps(record.policy),
                        _dumps(record.accounts),
                        record.started_at,
                        record.ended_at,
                        _dumps(record.usage),
                        record.resumed,
                        None if record.error is None else _dumps(record.error),
                        record.host,
                        record.pid,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise LedgerError(
                    f"execution {record.execution_id!r} is already in the ledger; run it "
                    "again to resume it, or use a new execution id"
                ) from exc

    @staticmethod
    def _execution(row: tuple[Any, ...]) -> ExecutionRecord:
        return ExecutionRecord(
            execution_id=row[0],
            status=row[1],
            script_hash=row[2],
            input_hash=row[3],
            policy=json.loads(row[4]),
            accounts=json.loads(row[5]),
            started_at=row[6],
            ended_at=row[7],
            usage=json.loads(row[8]),
            resumed=row[9],
            error=None if row[10] is None else json.loads(row[10]),
            host=row[11],
            pid=row[12],
            calls=row[13],
            writes=row[14],
        )

    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT {_EXECUTION_COLUMNS}, {_COUNTS} FROM executions e WHERE execution_id = ?",
                (execution_id,),
            ).fetchone()
        return None if row is None else self._execution(row)

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
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status
        if usage is not None:
            changes["usage"] = _dumps(dict(usage))
        if error is not None:
            changes["error"] = _dumps(dict(error)) if error else None
        if started_at is not None:
            changes["started_at"] = started_at
        if ended_at is not None:
            changes["ended_at"] = ended_at or None
        if resumed is not None:
            changes["resumed"] = resumed
        if host is not None:
            changes["host"] = host
        if pid is not None:
            changes["pid"] = pid
        with self._transaction() as db:
            if changes:
                assignments = ", ".join(f"{name} = ?" for name in changes)
                cursor = db.execute(
                    f"UPDATE executions SET {assignments} WHERE execution_id = ?",
                    (*changes.values(), execution_id),
                )
                found = cursor.rowcount > 0
            else:
                found = (
                    db.execute(
                        "SELECT 1 FROM executions WHERE execution_id = ?", (execution_id,)
                    ).fetchone()
                    is not None
                )
            if not found:
                raise LedgerError(f"execution {execution_id!r} is not in the ledger")

    def list_executions(self, limit: int = 20) -> list[ExecutionRecord]:
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {_EXECUTION_COLUMNS}, {_COUNTS} FROM executions e "
                "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (max(0, int(limit)),),
            ).fetchall()
        return [self._execution(row) for row in rows]

    # -- calls ----------------------------------------------------------------------------------

    def append_call(self, execution_id: str, entry: CallEntry) -> None:
        # One statement, so one implicit transaction: this runs before every request leaves.
        try:
            added = self._statement(_APPEND, _append_params(execution_id, entry))
        except sqlite3.IntegrityError as exc:
            raise LedgerError(f"execution {execution_id!r} already has a call {entry.seq}") from exc
        if not added:
            raise LedgerError(f"execution {execution_id!r} is not in the ledger")

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
        # One statement, and the transition checked in it: the common case costs one commit.
        sql, params = _update(execution_id, seq, state, result, idempotency_key, at)
        if not self._statement(sql, params):
            self._refuse_update(execution_id, seq, state)

    def _refuse_update(self, execution_id: str, seq: int, state: str) -> None:
        """Raise the ``LedgerError`` that says why an update changed nothing."""
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT state FROM calls WHERE execution_id = ? AND seq = ?",
                (execution_id, seq),
            ).fetchone()
        if row is None:
            raise LedgerError(f"execution {execution_id!r} has no call {seq}")
        check_transition(execution_id, seq, row[0], state)
        raise LedgerError(  # pragma: no cover - another process changed it in between
            f"call {seq} of execution {execution_id!r} changed while it was being updated"
        )

    def settle_and_append(self, execution_id: str, outcome: Outcome, entry: CallEntry) -> None:
        # Both statements in one transaction: one commit for the two state changes.
        sql, params = _update(
            execution_id, outcome.seq, outcome.state, outcome.result, None, outcome.at
        )
        settled = added = 0
        try:
            with self._transaction() as db:
                settled = db.execute(sql, params).rowcount
                if settled:
                    added = db.execute(
                        _APPEND_KNOWN, _append_params(execution_id, entry)[:-1]
                    ).rowcount
                if not (settled and added):
                    raise _NothingWritten
        except _NothingWritten:
            if not settled:
                self._refuse_update(execution_id, outcome.seq, outcome.state)
            raise LedgerError(f"execution {execution_id!r} is not in the ledger") from None
        except LedgerError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise LedgerError(
                    f"execution {execution_id!r} already has a call {entry.seq}"
                ) from exc.__cause__
            raise

    def get_calls(self, execution_id: str) -> list[CallEntry]:
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {_CALL_COLUMNS} FROM calls WHERE execution_id = ? ORDER BY seq",
                (execution_id,),
            ).fetchall()
        return [
            CallEntry(
                seq=row[0],
                integration=row[1],
                account=row[2],
                action=row[3],
                effect=row[4],
                params=json.loads(row[5]),
                params_hash=row[6],
                state=row[7],
                idempotency_key=row[8],
                result=None if row[9] is None else json.loads(row[9]),
                started_at=row[10],
                ended_at=row[11],
                attempts=row[12],
            )
            for row in rows
        ]

    # -- plans ----------------------------------------------------------------------------------

    def save_plan(self, plan_id: str, plan: dict[str, Any], expires_at: float) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM plans WHERE expires_at <= ?", (time.time(),))
            db.execute(
                "INSERT INTO plans (plan_id, plan, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (plan_id) DO UPDATE SET plan = excluded.plan, "
                "expires_at = excluded.expires_at",
                (plan_id, _dumps(plan), float(expires_at)),
            )

    def load_plan(self, plan_id: str) -> dict[str, Any] | None:
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT plan, expires_at FROM plans WHERE plan_id = ?", (plan_id,)
            ).fetchone()
        if row is None or row[1] <= time.time():
            return None
        plan = json.loads(row[0])
        return plan if isinstance(plan, dict) else None
