"""The contact directory: a local SQLite record of the Loops contacts this integration has seen.

The Loops API can neither list contacts nor fetch one by its id (reference, section 8), so the
integration keeps its own record, per account, of every contact it creates, updates, finds,
fetches or deletes. ``list_contacts`` pages over it and ``get_contact`` resolves ids through it.
It relies only on ``sqlite3``; one file serves every account, process and thread of a workspace.

Recording a contact after a call is written behind: ``upsert`` queues the row, and the queue of
the file is written in one transaction once it is 50 ms old or 64 rows long, by the upsert that
finds it due, by a timer when the process goes quiet, and always before any other method of any
directory of this process touches the file. So this process reads what it recorded, and another
process sees a row within about 100 ms. A process killed with SIGKILL can lose the rows still
queued (find_contact records a contact again); ``close`` and the interpreter's exit write them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from luabridge.errors import LuabridgeError
from luabridge.sqlitefile import ConnectionLender

from .wire import CONTACT_KEYS

_log = logging.getLogger(__name__)

__all__ = [
    "ENV_VAR",
    "LOCAL_ID_PREFIX",
    "ContactDirectory",
    "DirectoryError",
    "EarlierContactsLost",
    "account_identity",
    "default_directory_path",
]

#: The id prefix of an imported contact whose export had no id column; get_contact and the
#: actions taking a contact_id resolve it through its email.
LOCAL_ID_PREFIX: Final = "local_"
#: Environment variable holding the directory's file path; it overrides the default location.
ENV_VAR: Final = "LUABRIDGE_LOOPS_DIRECTORY"
_FILE_NAME: Final = "loops-contacts.sqlite3"
_SCHEMA_VERSION: Final = 1
#: Idle connections kept for reuse; more than this many transactions at once open extra ones.
_MAX_IDLE: Final = 8
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS contacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- first-seen order, the listing order
    account TEXT NOT NULL,                  -- account_identity(...)
    contact_id TEXT NOT NULL,               -- the id Loops gave the contact
    email TEXT,                             -- lower-cased, for matching
    user_id TEXT,
    data TEXT NOT NULL,                     -- JSON: the contact as last seen (Loops' keys)
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    UNIQUE (account, contact_id)
);
CREATE INDEX IF NOT EXISTS contacts_by_email ON contacts (account, email);
CREATE INDEX IF NOT EXISTS contacts_by_user_id ON contacts (account, user_id);
CREATE TABLE IF NOT EXISTS sync (
    account TEXT PRIMARY KEY,               -- account_identity(...)
    source TEXT NOT NULL,                   -- what filled it last: webhooks, import, emulator
    synced_at REAL NOT NULL                 -- Unix seconds
);
CREATE TABLE IF NOT EXISTS webhook_ids (
    account TEXT NOT NULL,
    webhook_id TEXT NOT NULL,               -- the webhook-id header of a delivery applied
    received_at REAL NOT NULL,
    PRIMARY KEY (account, webhook_id)
);
"""
#: Seconds a webhook id is remembered: far longer than the timestamp tolerance, so a replay
#: is refused either way.
_WEBHOOK_ID_TTL: Final = 7 * 24 * 3600.0


class DirectoryError(LuabridgeError, OSError):
    """The directory's file cannot be created, opened, read or written."""


def default_directory_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the directory lives: ``$LUABRIDGE_LOOPS_DIRECTORY`` if set, else
    ``$XDG_DATA_HOME/luabridge/loops-contacts.sqlite3``, else
    ``~/.local/share/luabridge/loops-contacts.sqlite3``."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "luabridge" / _FILE_NAME


def account_identity(name: str, base_url: str, api_key: str) -> str:
    """A stable key for one account's rows: its name and a short fingerprint of where it points.

    The fingerprint is the first 12 hex digits of SHA-256 over the base URL and the API key, so
    two teams (or the emulator and production) never share rows, and the key itself is never
    stored.
    """
    digest = hashlib.sha256(f"{base_url.rstrip('/')}\n{api_key}".encode()).hexdigest()
    return f"{name}:{digest[:12]}"


#: Keys Loops always returns, null or not; other keys are custom properties, which Loops leaves
#: out of a contact when they have no value.
_STANDARD_KEYS: Final = CONTACT_KEYS


def _merge(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` laid over ``old`` the way Loops applies an update: mailing-list flags merge (only
    subscribed lists are kept) and a null custom property disappears."""
    merged = dict(old)
    for key, value in new.items():
        if value is None and key not in _STANDARD_KEYS:
            merged.pop(key, None)
        elif key == "mailingLists" and isinstance(value, Mapping):
            lists = dict(merged.get("mailingLists") or {})
            for list_id, subscribed in value.items():
                if subscribed:
                    lists[str(list_id)] = True
                else:
                    lists.pop(str(list_id), None)
            merged[key] = lists
        else:
            merged[key] = value
    return merged


def _norm_email(email: Any) -> str | None:
    return email.strip().lower() if isinstance(email, str) and email.strip() else None


def _norm_user_id(user_id: Any) -> str | None:
    return user_id if isinstance(user_id, str) and user_id else None


#: How long a queued row may wait: the next upsert after that writes the queue, and a timer
#: writes it this much later again when no upsert comes. Also the rows that make it write.
_LINGER: Final = 0.05
_BATCH: Final = 64
#: One queued upsert: the directory that queued it (its write), account, contact (a copy),
#: replace, when it was seen.
_Row = tuple[Any, str, dict[str, Any], bool, float]


class EarlierContactsLost(DirectoryError):
    """Contacts queued by earlier calls could not be written (the message names them); the
    contact of the call that gets this error was queued all the same."""


def _lost(rows: Sequence[_Row], exc: BaseException) -> str:
    ids = [str(row[2].get("id")) for row in rows]
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return f"{shown}: {exc}"


class _Queue:
    """The rows queued for one file by every ``ContactDirectory`` of this process open on it.

    Whoever touches the file next writes the queue first, in the thread that touches it: an
    upsert once the queue is ``_LINGER`` old or ``_BATCH`` long, any other method always, a
    timer when the process goes quiet, ``close`` and the interpreter's exit. ``lock`` is held
    for the whole write, so two writes never interleave and a fork never lands inside one
    (see ``_before_fork``). A write that fails drops its rows; a timer's failure is kept in
    ``lost`` for the next upsert or read to report.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[_Row] = []
        self.oldest = 0.0
        self.timer: threading.Timer | None = None
        self.lost: list[str] = []

    def put(
        self, directory: ContactDirectory, account_id: str, contact: dict[str, Any], replace: bool
    ) -> bool:
        """Queue an upsert by ``directory`` (refused once it is closed: checked under the lock
        ``close`` holds, so no row of a closed directory stays queued); True when the queue is
        due to be written now."""
        row = (directory._write_rows, account_id, contact, replace, time.time())
        with self.lock:
            if directory._closed:
                raise DirectoryError(f"{directory!r} has been closed; open a new ContactDirectory")
            now = time.monotonic()
            if not self.rows:
                self.oldest = now
                if self.timer is None:
                    self._arm()
            self.rows.append(row)
            return len(self.rows) >= _BATCH or now - self.oldest >= _LINGER

    def _arm(self) -> None:
        timer = threading.Timer(2 * _LINGER, self._quiet)
        timer.daemon = True
        try:
            timer.start()
        except RuntimeError:  # no new threads (the interpreter is shutting down): atexit writes
            return
        self.timer = timer

    def _quiet(self) -> None:
        with self.lock:
            self.timer = None
            if self.rows:
                if time.monotonic() - self.oldest < _LINGER:
                    self._arm()
                    return
                try:
                    self._write_locked(None)
                except DirectoryError as exc:
                    self.lost.append(str(exc))
                    _log.warning("could not record contacts: %s", exc)

    def write(self, write: Any) -> None:
        """Write the queue with ``write`` (a directory's), in this thread; raises
        ``DirectoryError`` naming the contacts that were dropped."""
        with self.lock:
            self._write_locked(write)

    def _write_locked(self, write: Any) -> None:
        rows, self.rows = self.rows, []
        if not rows:
            return
        try:
            (write or rows[-1][0])(rows)
        except Exception as exc:  # DirectoryError, or a bug in one row: never a stuck queue
            raise DirectoryError(f"could not record the contact(s) {_lost(rows, exc)}") from exc

    def take_lost(self) -> str | None:
        """What quiet writes lost since the last call, once; None when nothing was."""
        if not self.lost:
            return None
        with self.lock:
            lost, self.lost = self.lost, []
        return "; ".join(lost) or None


#: The queue of each file this process has open, by its real path.
_QUEUES: dict[str, _Queue] = {}
_QUEUES_LOCK = threading.Lock()


def _queue_for(path: Path) -> _Queue:
    key = os.path.realpath(path)
    with _QUEUES_LOCK:
        queue = _QUEUES.get(key)
        if queue is None:
            queue = _QUEUES[key] = _Queue()
        return queue


def _write_all() -> None:
    """Write every queue (at the interpreter's exit, or a forked multiprocessing child's)."""
    for queue in list(_QUEUES.values()):
        try:
            queue.write(None)
        except DirectoryError as exc:
            _log.warning("at exit: %s", exc)
        except Exception:  # one bad queue must not keep the others unwritten
            _log.exception("at exit: writing the contact directory failed")


def _before_fork() -> None:
    _QUEUES_LOCK.acquire()
    for queue in _QUEUES.values():
        queue.lock.acquire()


def _after_fork_in_parent() -> None:
    for queue in _QUEUES.values():
        queue.lock.release()
    _QUEUES_LOCK.release()


def _after_fork_in_child() -> None:
    """The parent writes what it had queued; the child starts empty, with fresh locks and no
    timer (its thread is not in the child)."""
    global _QUEUES_LOCK
    for queue in _QUEUES.values():
        queue.__init__()  # type: ignore[misc]  # in place: every directory holds its queue
    _QUEUES_LOCK = threading.Lock()


#: The process whose first upsert has registered the exit hook below (0: none yet).
_finalized_pid = 0


def _finalize_process() -> None:
    """A multiprocessing child (fork or forkserver) ends with os._exit, past atexit, but it
    runs the finalizers registered while it ran: so the first upsert of each process
    registers one that writes the queues, whenever multiprocessing is loaded."""
    global _finalized_pid
    _finalized_pid = os.getpid()
    mp = sys.modules.get("multiprocessing.util")
    if mp is not None:
        mp.Finalize(None, _write_all, exitpriority=10)


atexit.register(_write_all)
os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


class ContactDirectory:
    """The contacts of every account, as this integration last saw them, in one SQLite file.

    - ``path``: the database file; its folder is created when missing. Use
      ``default_directory_path()`` for the documented default.
    - ``busy_timeout``: seconds a writer waits for another one to finish (default 10.0)

    Contacts go in and come out with Loops' own keys (``id``, ``email``, ``firstName``,
    ``userId``, ``mailingLists``, custom properties). Rows are keyed by ``account_identity``.
    Safe for many threads (one connection each) and processes (WAL journal, busy timeout,
    short transactions). Example::

        with ContactDirectory(default_directory_path()) as directory:
            directory.upsert(account, {"id": "c1", "email": "jane@example.com"})
            rows, total = directory.page(account, limit=50, offset=0)
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout = busy_timeout
        # Connections are lent out per transaction rather than kept per thread: a host that
        # serves each action call on a new thread (the worker pool does) would otherwise leave
        # one open connection behind per call, with its memory and its file descriptor.
        where = repr(str(self.path))
        self._lender = ConnectionLender(
            self.path,
            busy_timeout=busy_timeout,
            error=lambda action, exc: self._error(f"{action} {where}", exc),
            closed=lambda: DirectoryError(f"{self!r} has been closed; open a new ContactDirectory"),
        )
        self._transaction = self._lender.transaction
        self._queue = _queue_for(self.path)
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(f"cannot create the folder {str(self.path.parent)!r}", exc) from exc
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def __repr__(self) -> str:
        return f"ContactDirectory({str(self.path)!r})"

    def __enter__(self) -> ContactDirectory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Write the queued rows, then close every connection this object opened. Closing
        twice is harmless."""
        # Under the file's queue lock: no write of the queue (by another thread, the timer or
        # another closer) is in progress while the connections close, and no row of this
        # object can be queued after this (see _Queue.put).
        queue = self._queue
        with queue.lock:
            self._closed = True
            try:
                queue._write_locked(self._write_rows)
            except DirectoryError as exc:
                _log.warning("closing the contact directory: %s", exc)
            finally:
                self._lender.close()

    def flush(self) -> None:
        """Write every queued contact of this file now; raises ``DirectoryError`` naming the
        contacts that could not be written (those queued here, or by a timer earlier)."""
        self._sync(report=True)

    def _sync(self, *, report: bool = False) -> None:
        """Write the file's queue before this object touches the file (see ``_Queue``). The
        lock is taken even when the queue looks empty: a write in progress in another thread
        has emptied it already, and what this object does must come after that write.
        ``report``: also raise what a quiet write lost (only ``flush`` does: a read or a
        removal is not to fail for another call's contacts)."""
        self._queue.write(self._write_rows)
        lost = self._queue.take_lost() if report else None
        if lost:
            raise DirectoryError(lost)

    def _write_rows(self, rows: list[_Row]) -> None:
        with self._transaction() as db:
            for _write, account_id, contact, replace, now in rows:
                self._upsert_row(db, account_id, contact, replace=replace, now=now)

    def _error(self, what: str, exc: BaseException) -> DirectoryError:
        return DirectoryError(
            f"{what} for the Loops contact directory ({type(exc).__name__}: {exc}). "
            + self._advice(exc)
        )

    def _advice(self, exc: BaseException) -> str:
        """How to fix what ``exc`` says, by its cause: a damaged file needs another remedy than
        a read-only folder or a held lock."""
        text = str(exc).lower()
        where = repr(str(self.path))
        if "not a database" in text or "malformed" in text:
            return (
                f"The file {where} is not a usable SQLite database (damaged, or another kind of "
                "file): move it aside and a fresh directory is created in its place (find_contact "
                f"records contacts again), or point {ENV_VAR} at another file."
            )
        if "locked" in text or "busy" in text:
            return (
                f"Another process held the directory's write lock for more than "
                f"{self.busy_timeout:g} s; try again when it is done, or point {ENV_VAR} at a "
                "file of this process's own."
            )
        return (
            f"Point {ENV_VAR} at a file in a writable folder, or fix the permissions of {where} "
            "and its folder."
        )

    def upsert(self, account_id: str, contact: Mapping[str, Any], *, replace: bool = False) -> None:
        """Record ``contact`` (it needs an ``id``) for ``account_id``.

        With ``replace`` (a full snapshot, as ``/contacts/find`` returns) the stored copy is
        replaced; otherwise the given fields are laid over it. Any other row of the account that
        claims the same email or userId is dropped: it describes a contact that no longer exists.

        The row is written behind (see the module's notes): queued, and written with the
        queue once it is due. Raises ``DirectoryError`` when that write fails (it names the
        contacts dropped, this one among them), or ``EarlierContactsLost`` when a write
        after earlier calls failed (this row is queued all the same).
        """
        contact_id = contact.get("id")
        if not isinstance(contact_id, str) or not contact_id:
            raise ValueError(f"a contact needs a non-empty string 'id' to be recorded: {contact!r}")
        row = dict(contact)
        lists = row.get("mailingLists")
        if isinstance(lists, Mapping):
            row["mailingLists"] = dict(lists)  # the caller may change its own copy later
        json.dumps(row)  # a value JSON cannot hold fails this call, not a later batch
        if _finalized_pid != os.getpid():
            _finalize_process()
        queue = self._queue
        if queue.put(self, account_id, row, replace):
            queue.write(self._write_rows)
        lost = queue.take_lost()
        if lost:
            raise EarlierContactsLost(lost)

    @staticmethod
    def _upsert_row(
        db: sqlite3.Connection,
        account_id: str,
        contact: Mapping[str, Any],
        *,
        replace: bool,
        now: float,
    ) -> str:
        """``upsert`` inside an open transaction; returns ``added``, ``updated`` or
        ``unchanged``."""
        contact_id = str(contact["id"])
        row = db.execute(
            "SELECT data FROM contacts WHERE account = ? AND contact_id = ?",
            (account_id, contact_id),
        ).fetchone()
        before = None if row is None else json.loads(row[0])
        old = {} if replace or before is None else before
        data = _merge(old, contact)
        email = _norm_email(data.get("email"))
        user_id = _norm_user_id(data.get("userId"))
        # One statement per identifier: SQLite cannot use both indexes for an OR here, and
        # the combined form scanned every row of the account on each upsert.
        for column, value in (("email", email), ("user_id", user_id)):
            if value is not None:
                db.execute(
                    f"DELETE FROM contacts WHERE account = ? AND {column} = ? AND contact_id != ?",
                    (account_id, value, contact_id),
                )
        db.execute(
            "INSERT INTO contacts (account, contact_id, email, user_id, data, first_seen, "
            "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, contact_id) DO "
            "UPDATE SET email = excluded.email, user_id = excluded.user_id, "
            "data = excluded.data, last_seen = excluded.last_seen",
            (account_id, contact_id, email, user_id, json.dumps(data), now, now),
        )
        if before is None:
            return "added"
        return "unchanged" if before == data else "updated"

    def remove(
        self,
        account_id: str,
        *,
        email: str | None = None,
        user_id: str | None = None,
        contact_id: str | None = None,
    ) -> int:
        """Forget the account's contacts matching any identifier given; returns how many."""
        if email is None and user_id is None and contact_id is None:
            raise ValueError("remove() needs an email, a user_id or a contact_id")
        self._sync()
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM contacts WHERE account = ? AND (email = ? OR user_id = ? OR "
                "contact_id = ?)",
                (account_id, _norm_email(email), _norm_user_id(user_id), contact_id),
            )
            return cursor.rowcount

    def get(self, account_id: str, contact_id: str) -> dict[str, Any] | None:
        """The stored contact with this id, or None when the account never saw it."""
        self._sync()
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT data FROM contacts WHERE account = ? AND contact_id = ?",
                (account_id, contact_id),
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def lookup(
        self, account_id: str, *, email: str | None = None, user_id: str | None = None
    ) -> dict[str, Any] | None:
        """The stored contact with this email (any case) or userId, or None."""
        self._sync()
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT data FROM contacts WHERE account = ? AND (email = ? OR user_id = ?) "
                "ORDER BY seq LIMIT 1",
                (account_id, _norm_email(email), _norm_user_id(user_id)),
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def page(self, account_id: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` contacts after skipping ``offset``, in first-seen order, and the
        account's total."""
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0 (got {limit}, {offset})")
        self._sync()
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT data FROM contacts WHERE account = ? ORDER BY seq LIMIT ? OFFSET ?",
                (account_id, limit, offset),
            ).fetchall()
            (total,) = db.execute(
                "SELECT COUNT(*) FROM contacts WHERE account = ?", (account_id,)
            ).fetchone()
        return [dict(json.loads(data)) for (data,) in rows], int(total)

    # -- filling the directory from what Loops offers (webhooks, audience exports) -------------

    def sync_state(self, account_id: str) -> tuple[str, float] | None:
        """``(source, synced_at)`` of the account's last fill from Loops, or None when the
        directory holds only what this integration has touched."""
        self._sync()
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT source, synced_at FROM sync WHERE account = ?", (account_id,)
            ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    def mark_synced(self, account_id: str, source: str, *, at: float | None = None) -> None:
        """Record that ``source`` (``webhooks``, ``import``, ``emulator``) filled the account's
        rows at ``at`` (default: now)."""
        self._sync()
        with self._transaction() as db:
            self._mark(db, account_id, source, time.time() if at is None else at)

    @staticmethod
    def _mark(db: sqlite3.Connection, account_id: str, source: str, at: float) -> None:
        db.execute(
            "INSERT INTO sync (account, source, synced_at) VALUES (?, ?, ?) ON CONFLICT "
            "(account) DO UPDATE SET source = excluded.source, synced_at = excluded.synced_at",
            (account_id, source, at),
        )

    def import_contacts(
        self, account_id: str, contacts: Sequence[Mapping[str, Any]], *, source: str
    ) -> dict[str, int]:
        """Lay every contact (Loops' keys, each with an ``id``) over the account's rows in one
        transaction and mark the account synced by ``source``; returns the counts of
        ``added``, ``updated`` and ``unchanged`` rows. Importing the same contacts again
        changes nothing (all ``unchanged``)."""
        counts = {"added": 0, "updated": 0, "unchanged": 0}
        self._sync()
        now = time.time()
        with self._transaction() as db:
            for contact in contacts:
                if not isinstance(contact.get("id"), str) or not contact["id"]:
                    raise ValueError(f"a contact needs a non-empty string 'id': {contact!r}")
                counts[self._upsert_row(db, account_id, contact, replace=False, now=now)] += 1
            self._mark(db, account_id, source, now)
        return counts

    def apply_webhook(
        self,
        account_id: str,
        webhook_id: str,
        *,
        upsert: Mapping[str, Any] | None = None,
        remove: Mapping[str, str | None] | None = None,
    ) -> bool:
        """Apply one verified webhook delivery exactly once: record ``webhook_id``, then lay
        ``upsert`` over the contact or ``remove`` it (``contact_id`` / ``email`` /
        ``user_id``), all in one transaction. Returns False, changing nothing, when the id was
        applied before (a replay)."""
        self._sync()
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "DELETE FROM webhook_ids WHERE account = ? AND received_at < ?",
                (account_id, now - _WEBHOOK_ID_TTL),
            )
            seen = db.execute(
                "SELECT 1 FROM webhook_ids WHERE account = ? AND webhook_id = ?",
                (account_id, webhook_id),
            ).fetchone()
            if seen:
                return False
            db.execute(
                "INSERT INTO webhook_ids (account, webhook_id, received_at) VALUES (?, ?, ?)",
                (account_id, webhook_id, now),
            )
            if upsert is not None:
                self._upsert_row(db, account_id, upsert, replace=False, now=now)
            if remove is not None:
                db.execute(
                    "DELETE FROM contacts WHERE account = ? AND (contact_id = ? OR email = ? "
                    "OR user_id = ?)",
                    (
                        account_id,
                        remove.get("contact_id"),
                        _norm_email(remove.get("email")),
                        _norm_user_id(remove.get("user_id")),
                    ),
                )
            self._mark(db, account_id, "webhooks", now)
        return True
