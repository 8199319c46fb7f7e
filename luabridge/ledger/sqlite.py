"""The embedded ledger: one SQLite file, shared by every thread and process of a host.

It relies only on ``sqlite3``. The file runs in WAL mode with ``synchronous = NORMAL``: each
change is one short transaction that survives the process being killed (the commit is in the
operating system's hands before it returns). Connections are lent out per transaction, so a
host that serves each call on a fresh thread leaves none behind.

The calls of an execution that this process runs (see :meth:`SQLiteLedger.claim`) are written
to the run's spool file first, one line per change, and folded into the database later: a line
is as durable as a commit and costs a fraction of one (see :mod:`luabridge.ledger.spool`).
Every read folds the spool files of what it reads first, so readers never see the difference.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
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
from luabridge.ledger.spool import (
    FOLD_EVERY,
    Spool,
    read_lines,
    spool_dir,
    spool_files,
    writer_gone,
)
from luabridge.sqlitefile import ConnectionLender

__all__ = ["SQLiteLedger"]

_log = logging.getLogger(__name__)

#: 1: executions, calls, plans; 2: and how far each spool file has been folded.
_SCHEMA_VERSION: Final = 2
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
CREATE TABLE IF NOT EXISTS spools (
    name TEXT PRIMARY KEY,           -- the file's name in the spool folder
    folded INTEGER NOT NULL          -- bytes of it already in the tables above
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
_INTO_CALLS: Final = (
    f"INTO calls (execution_id, {_CALL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: The same without the check that the execution exists (known when its other call was found).
_APPEND_KNOWN: Final = "INSERT " + _INTO_CALLS
#: A folded spool record's new call (see ``_fold_file``); a call already there is left alone.
_APPEND_FOLDED: Final = "INSERT OR IGNORE " + _INTO_CALLS
#: Drops the folding record of a spool file that is gone.
_FORGET: Final = "DELETE FROM spools WHERE name = ?"


def _entry_fields(entry: CallEntry) -> list[Any]:
    """A call's fields in ``_CALL_COLUMNS`` order, as a spool record carries them."""
    return [
        entry.seq,
        entry.integration,
        entry.account,
        entry.action,
        entry.effect,
        entry.params,
        entry.params_hash,
        entry.state,
        entry.idempotency_key,
        entry.result,
        entry.started_at or time.time(),
        entry.ended_at,
        entry.attempts,
    ]


def _row(execution_id: str, fields: list[Any]) -> tuple[Any, ...]:
    """The ``calls`` row of ``_entry_fields``: its JSON columns as text."""
    (seq, integration, account, action, effect, params, params_hash, state, key, result,
     started_at, ended_at, attempts) = fields  # fmt: skip
    return (
        execution_id,
        seq,
        integration,
        account,
        action,
        effect,
        _dumps(params),
        params_hash,
        state,
        key,
        None if result is None else _dumps(result),
        started_at,
        ended_at,
        attempts,
    )


def _append_params(execution_id: str, entry: CallEntry) -> tuple[Any, ...]:
    return (*_row(execution_id, _entry_fields(entry)), execution_id)


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


class _Replay(Exception):
    """The batched fold cannot stand for the records one by one (see ``_fold_file``)."""


class _Folding:
    """The records of one fold, applied in order (see ``SQLiteLedger._fold_file``).

    Records: ``["a", execution_id, *fields]`` a new call (``_entry_fields``), ``["u",
    execution_id, seq, state, result, key, at]`` a state change, and ``["s", execution_id, seq,
    state, result, at, *fields]`` a state change and then a new call (``settle_and_append``).

    With ``batch``, a call that is new in this fold is kept as its fields, its later changes
    are made to them here by the rules ``_update`` follows in SQL, and all such calls are
    inserted by :meth:`finish` in one ``executemany``: a run's fold at its end was one statement
    per record before (12 ms for 500 calls, a quarter of what the ledger cost the run). Without
    it (the exact path a fold falls back to), every record is its own statements. A change to a
    call already in the database is made there at once.
    """

    def __init__(self, db: sqlite3.Connection, *, batch: bool) -> None:
        self.db = db
        self.batch = batch
        self.fresh: dict[tuple[str, int], list[Any]] = {}

    def apply(self, record: list[Any]) -> bool:
        """Apply one record; False when it changed nothing it should have."""
        kind, execution_id = record[0], record[1]
        if kind == "u":
            return self._change(execution_id, *record[2:7])
        if kind not in ("a", "s"):
            return False
        fields = list(record[6:] if kind == "s" else record[2:])
        # A malformed record is refused before any part of it is applied: thirteen fields,
        # none empty that the table requires. (One the batched insert still refuses sends the
        # whole fold down the record-by-record path: see SQLiteLedger._fold_file.)
        if len(fields) != 13 or None in (*fields[:8], fields[10], fields[12]):
            raise ValueError(f"a new call needs 13 fields with values, got {fields!r:.100}")
        if kind == "s" and not self._change(
            execution_id, record[2], record[3], record[4], None, record[5]
        ):
            return False  # as settle_and_append: neither part without the other
        if not self.batch:
            return bool(self.db.execute(_APPEND_FOLDED, _row(execution_id, fields)).rowcount)
        if (execution_id, fields[0]) in self.fresh:
            return False
        self.fresh[(execution_id, fields[0])] = fields
        return True

    def _change(
        self, execution_id: str, seq: int, state: str, result: Any, key: str | None, at: Any
    ) -> bool:
        fields = self.fresh.get((execution_id, seq))
        if fields is None:
            sql, params = _update(execution_id, seq, state, result, key, at)
            return bool(self.db.execute(sql, params).rowcount)
        if fields[7] not in _SOURCES.get(state, ()):
            return False
        fields[7] = state
        if result is not None:
            fields[9] = result
        if key is not None:
            fields[8] = key
        now = time.time() if at is None else at
        if state == "sending":
            fields[12] += 1
            fields[10], fields[11] = now, None
        else:
            fields[11] = now
        return True

    def finish(self) -> int:
        """Insert the new calls; how many of them the database already held (and kept)."""
        rows = [_row(execution_id, fields) for (execution_id, _), fields in self.fresh.items()]
        cursor = self.db.executemany(_APPEND_FOLDED, rows)
        return len(rows) - cursor.rowcount


#: What a malformed spool record raises when applied (a wrong shape, a value SQLite refuses).
_MALFORMED: Final = (
    IndexError,
    TypeError,
    ValueError,
    OverflowError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
)

#: Every open ledger of this process, so that a forked child can drop what it inherited.
_LIVE: weakref.WeakSet[SQLiteLedger] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ledger in list(_LIVE):
        ledger._forget_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteLedger(Ledger):
    """A ledger in one SQLite file.

    - ``path``: the file; its folder is created when missing (see
      ``luabridge.ledger.default_ledger_path`` for the documented default)
    - ``busy_timeout``: seconds a writer waits for another process's transaction (default 10.0)

    Spool files (see :meth:`claim`) live in a folder beside the file, named after it with
    ``-spool`` added.

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
        self._spool_dir = spool_dir(self.path)
        #: The executions this process runs, by id (see :meth:`claim`).
        self._spools: dict[str, Spool] = {}
        self._spools_lock = threading.Lock()
        #: Names of spool files this ledger folded and removed whose folding records remain.
        self._removed: list[tuple[str]] = []
        _LIVE.add(self)
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
        with self._spools_lock:
            ids = list(self._spools)
        for execution_id in ids:
            with contextlib.suppress(LedgerError):
                self._release(execution_id)
        with self._spools_lock:
            left, self._spools = list(self._spools.values()), {}
        for spool in left:
            with spool.lock:
                spool.close()  # its fold failed: its lines stay for the next reader
        with self._spools_lock:
            removed, self._removed = self._removed, []
        if removed:
            with contextlib.suppress(LedgerError):
                self._forget_files([self._spool_dir / name for (name,) in removed])
        self._lender.close()

    # -- spool files ----------------------------------------------------------------------------

    def claim(self, execution_id: str, states: Mapping[int, str]) -> None:
        """Write the calls of ``execution_id`` to a spool file of this run from now on.

        The caller runs the execution and gives the state of each call the ledger holds, by
        sequence number; the rules the database enforces are checked against those. Raises
        ``LedgerError`` when another live process has claimed the execution (then this one
        must not send anything for it). The spool file is folded into the database when
        :meth:`update_execution` gives the execution a final status, every ``FOLD_EVERY``
        lines, and by every reader before it reads. A folder that cannot hold the file leaves
        the calls going straight to the database, which then checks the rules itself.
        """
        try:
            self._spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            claims = os.open(
                self._spool_dir / "claims.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            _log.debug("%s: no spool file for %s (%s)", self.location, execution_id, exc)
            return
        try:
            # Claims are made one at a time, so two processes resuming the same execution at
            # once cannot both pass the check below (each would otherwise send its calls).
            fcntl.flock(claims, fcntl.LOCK_EX)
            with self._spools_lock:
                earlier = self._spools.get(execution_id)
            for path in self._files(execution_id):
                if earlier is not None and path == earlier.path:
                    continue
                with writer_gone(path) as gone:
                    if not gone:
                        raise LedgerError(
                            f"execution {execution_id!r} is being run by another process on "
                            f"this host (it holds {str(path)!r}); wait for that run to end "
                            "before resuming it"
                        )
            try:
                spool = Spool(self._spool_dir, execution_id, dict(states))
            except OSError as exc:
                _log.debug("%s: no spool file for %s (%s)", self.location, execution_id, exc)
                return
            with self._spools_lock:
                self._spools[execution_id] = spool
        finally:
            os.close(claims)  # and with it the claims lock
        if earlier is not None:
            # A second claim without an end in between: the earlier file's lines still count.
            with earlier.lock:
                earlier.close()
            self._fold_paths([earlier.path])

    def _forget_inherited(self) -> None:
        """In a forked child: the parent's spool files are not the child's to write, fold
        away or remove, and a lock some other thread of the parent held is never released."""
        self._spools_lock = threading.Lock()
        self._removed = []
        spools, self._spools = self._spools, {}
        for spool in spools.values():
            spool.close()  # the parent's descriptor keeps the file's lock

    def _owned(self, execution_id: str) -> Spool | None:
        """This process's spool file for ``execution_id``, if it claimed it. Writers check,
        under its lock, that it is still open: a run's end closes it."""
        return self._spools.get(execution_id) if self._spools else None

    def _files(self, execution_id: str | None = None) -> list[Path]:
        try:
            return spool_files(self._spool_dir, execution_id)
        except OSError as exc:
            raise self._error(
                f"cannot list the spool folder {str(self._spool_dir)!r}", exc
            ) from exc

    def _spooled(self, spool: Spool, record: list[Any]) -> None:
        """Write ``record`` to ``spool``; fold the file once it holds ``FOLD_EVERY`` lines."""
        try:
            spool.write(record)
        except (OSError, TypeError, ValueError) as exc:
            raise self._error(f"cannot write to the spool file {str(spool.path)!r}", exc) from exc
        if spool.lines % FOLD_EVERY == 0:
            try:
                self._fold_paths([spool.path])
            except LedgerError as exc:
                _log.warning("%s: %s (it is folded later)", spool.path, exc)

    def _fold_file(self, db: sqlite3.Connection, path: Path) -> None:
        """Apply the lines of ``path`` not folded yet, and record how far it is folded; within
        the caller's write transaction, so each line is applied exactly once."""
        row = db.execute("SELECT folded FROM spools WHERE name = ?", (path.name,)).fetchone()
        if row is None and not path.exists():
            return  # folded to its end and removed by another process
        start = 0 if row is None else int(row[0])
        try:
            records, end = read_lines(path, start)
        except OSError as exc:
            raise self._error(f"cannot read the spool file {str(path)!r}", exc) from exc
        db.execute("SAVEPOINT fold")
        try:
            notes = self._fold_records(db, records, batch=True)
        except (_Replay, *_MALFORMED):
            # A new call the database already held (its later changes belong to that row), or
            # a value the batched insert refused: undo, and apply the records one at a time,
            # skipping only the ones that are wrong.
            db.execute("ROLLBACK TO fold")
            notes = self._fold_records(db, records, batch=False)
        db.execute("RELEASE fold")
        for note in notes:
            _log.warning("%s: %s", path, note)
        if row is None or end != start:
            db.execute(
                "INSERT INTO spools (name, folded) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET folded = excluded.folded",
                (path.name, end),
            )

    @staticmethod
    def _fold_records(
        db: sqlite3.Connection, records: list[list[Any]], *, batch: bool
    ) -> list[str]:
        """Apply ``records`` (see ``_Folding``); what to warn about. Batched, raises ``_Replay``
        or a ``_MALFORMED`` error when only the one-by-one path gives the exact result; one by
        one, each record is undone alone when it turns out malformed."""
        folding = _Folding(db, batch=batch)
        notes: list[str] = []
        for record in records:
            if not batch:
                db.execute("SAVEPOINT one")
            try:
                applied = folding.apply(record)
            except _MALFORMED as exc:
                # Only a write reported as failed, or a hand-edited file, leaves such a line.
                if not batch:
                    db.execute("ROLLBACK TO one")
                notes.append(f"skipped a malformed record ({exc}): {record!r:.200}")
                applied = True
            if not batch:
                db.execute("RELEASE one")
            if not applied:
                notes.append(f"a record changed nothing in the ledger: {record!r:.200}")
        if batch and folding.finish():
            raise _Replay
        return notes

    def _fold_paths(self, paths: list[Path], *, prune: bool = False) -> None:
        """Fold ``paths`` into the database; then remove those whose writer is gone. With
        ``prune`` (``paths`` is the whole folder), also drop the folding records of files that
        are no longer there (a process killed between removing a file and its record)."""
        if not paths and not prune:
            return
        with self._spools_lock:
            own = {spool.path for spool in self._spools.values()}
        with contextlib.ExitStack() as held:
            # A file's lock is taken before it is folded: a writer that is gone writes no more.
            gone = [p for p in paths if p not in own and held.enter_context(writer_gone(p))]
            with self._transaction() as db:
                for path in paths:
                    self._fold_file(db, path)
                if prune:
                    listed = {p.name for p in paths}
                    stale = [
                        (name,)
                        for (name,) in db.execute("SELECT name FROM spools").fetchall()
                        if name not in listed and not (self._spool_dir / name).exists()
                    ]
                    db.executemany(_FORGET, stale)
            for path in gone:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if gone:
            self._forget_files(gone)

    def _forget_files(self, paths: list[Path]) -> None:
        """Drop the folding records of removed files (a file name is never used twice)."""
        with self._transaction() as db:
            db.executemany(_FORGET, [(p.name,) for p in paths])

    def _fold_execution(self, execution_id: str) -> None:
        self._fold_paths(self._files(execution_id))

    def _release(self, execution_id: str) -> None:
        """Fold this run's spool file to its end and remove it: the run is over. A call still
        finishing on another thread (a host call past the deadline) waits for the file's lock
        and then writes straight to the database, which by then holds every line."""
        with self._spools_lock:
            spool = self._spools.get(execution_id)
        if spool is None:
            return
        with spool.lock:
            if not spool.open:
                return  # another thread ended it first
            if spool.lines:
                with self._spools_lock:
                    removed, self._removed = self._removed, []
                try:
                    with self._transaction() as db:
                        self._fold_file(db, spool.path)
                        # The folding records of files this ledger removed before: gone now,
                        # in the same commit (a run's end makes one transaction, not two).
                        db.executemany(_FORGET, removed)
                except LedgerError:
                    # The file stays this run's, open: a call still finishing on another thread
                    # writes its line there, and a later reader folds it all.
                    with self._spools_lock:
                        self._removed[:0] = removed
                    raise
            with self._spools_lock:
                self._spools.pop(execution_id, None)
            try:
                with contextlib.suppress(FileNotFoundError):
                    spool.path.unlink()
            finally:
                spool.close()
        # Its folding record may go only once the file is gone, so with the next run's end (or
        # when the ledger closes): a record dropped first would let a reader that still finds
        # the file fold it again from its start.
        with self._spools_lock:
            self._removed.append((spool.path.name,))

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
        self._fold_execution(execution_id)
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
        if status is not None and status != "running" and self._owned(execution_id):
            self._release(execution_id)  # the run is over: its calls go in first
        else:
            self._fold_execution(execution_id)
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
        self._fold_paths(self._files(), prune=True)
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {_EXECUTION_COLUMNS}, {_COUNTS} FROM executions e "
                "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (max(0, int(limit)),),
            ).fetchall()
        return [self._execution(row) for row in rows]

    # -- calls ----------------------------------------------------------------------------------

    def append_call(self, execution_id: str, entry: CallEntry) -> None:
        spool = self._owned(execution_id)
        if spool is not None:
            with spool.lock:
                if spool.open:
                    self._check_new(spool, entry)
                    self._spooled(spool, ["a", execution_id, *_entry_fields(entry)])
                    spool.states[entry.seq] = entry.state
                    return
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
        spool = self._owned(execution_id)
        if spool is not None:
            at = time.time() if at is None else at
            with spool.lock:
                if spool.open:
                    self._check_change(spool, seq, state)
                    self._spooled(
                        spool, ["u", execution_id, seq, state, result, idempotency_key, at]
                    )
                    spool.states[seq] = state
                    return
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

    @staticmethod
    def _check_new(spool: Spool, entry: CallEntry) -> None:
        if entry.seq in spool.states:
            raise LedgerError(f"execution {spool.execution_id!r} already has a call {entry.seq}")

    @staticmethod
    def _check_change(spool: Spool, seq: int, state: str) -> None:
        old = spool.states.get(seq)
        if old is None:
            raise LedgerError(f"execution {spool.execution_id!r} has no call {seq}")
        check_transition(spool.execution_id, seq, old, state)

    def settle_and_append(self, execution_id: str, outcome: Outcome, entry: CallEntry) -> None:
        spool = self._owned(execution_id)
        if spool is not None:
            # One line for both: either both are kept or neither is.
            with spool.lock:
                if spool.open:
                    self._check_change(spool, outcome.seq, outcome.state)
                    self._check_new(spool, entry)
                    record = ["s", execution_id, outcome.seq, outcome.state, outcome.result]
                    self._spooled(spool, [*record, outcome.at, *_entry_fields(entry)])
                    spool.states[outcome.seq] = outcome.state
                    spool.states[entry.seq] = entry.state
                    return
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
        self._fold_execution(execution_id)
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
