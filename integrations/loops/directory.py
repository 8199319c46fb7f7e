"""The contact directory: a local SQLite record of the Loops contacts this integration has seen.

The Loops API can neither list contacts nor fetch one by its id (reference, section 8), so the
integration keeps its own record, per account, of every contact it creates, updates, finds,
fetches or deletes. ``list_contacts`` pages over it and ``get_contact`` resolves ids through it.
It relies only on ``sqlite3``; one file serves every account, process and thread of a workspace.

Recording a contact after a call is written behind: ``upsert`` queues the row and a writer
thread of the directory commits the queue, one transaction for whatever has piled up, while the
calling thread goes on with its next request. Every other method waits for the queue to be
written first, so this process always reads what it recorded; another process sees a row a
moment later. A process killed with SIGKILL can lose the rows still queued (find_contact records
a contact again); ``close`` and the interpreter's exit write them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
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


#: Seconds the writer waits for more rows before it writes what is queued, and the rows that
#: make it write at once.
_LINGER: Final = 0.05
_BATCH: Final = 256
#: One queued upsert: account, contact (a copy), replace, when it was seen.
_Row = tuple[str, dict[str, Any], bool, float]


class _WriteBehind:
    """The queue of rows ``upsert`` has accepted and the thread that commits them.

    ``write`` commits a batch in one transaction (it raises ``DirectoryError``). A batch that
    cannot be written is dropped and its failure kept, to be reported once by the next
    ``failure()``; it is also logged. After a fork the child starts with an empty queue (the
    parent writes what it had queued) and a new thread of its own.
    """

    def __init__(self, write: Any) -> None:
        self._write = write
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Row] = []
        self._urgent = False  # someone waits for the queue: write it without lingering
        self._busy = False  # a batch is taken and not yet committed
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._failure: DirectoryError | None = None

    def put(self, row: _Row) -> None:
        with self._cond:
            if self._stopped:
                raise DirectoryError("the contact directory has been closed")
            self._queue.append(row)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="loops-directory-writer", daemon=True
                )
                self._thread.start()
            elif len(self._queue) == 1 or len(self._queue) >= _BATCH:
                self._cond.notify()  # the first row wakes the writer, a full batch ends its wait

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._stopped:
                        return
                    self._cond.wait()
                # Linger a moment so that a run making many calls gets one transaction for
                # many rows: each is then a few times cheaper, and this thread takes the
                # interpreter lock from the calls far less often.
                deadline = time.monotonic() + _LINGER
                while not (self._urgent or self._stopped or len(self._queue) >= _BATCH):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._queue, self._busy = self._queue, [], True
                self._urgent = False
            failure = None
            try:
                self._write(batch)
            except DirectoryError as exc:
                failure = exc
            except Exception as exc:  # the thread must outlive any bug in one batch
                failure = DirectoryError(f"recording contacts failed ({type(exc).__name__}: {exc})")
            if failure is not None:
                ids = ", ".join(str(row[1].get("id")) for row in batch[:5])
                more = f" and {len(batch) - 5} more" if len(batch) > 5 else ""
                _log.warning("could not record contact(s) %s%s: %s", ids, more, failure)
                failure = DirectoryError(
                    f"an earlier contact ({ids}{more}) could not be recorded: {failure}"
                )
            with self._cond:
                self._busy = False
                if failure is not None:
                    self._failure = failure
                self._cond.notify_all()

    def drain(self) -> None:
        """Wait until every queued row is committed (or its batch failed)."""
        with self._cond:
            if self._queue:
                self._urgent = True
                self._cond.notify_all()
            while self._queue or self._busy:
                self._cond.wait()

    def failure(self) -> DirectoryError | None:
        """The failure of a batch since the last call, once."""
        with self._cond:
            failure, self._failure = self._failure, None
            return failure

    def stop(self) -> None:
        """Write what is queued, then end the thread; ``put`` refuses rows from then on."""
        with self._cond:
            self._stopped = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        failure = self.failure()
        if failure is not None:
            _log.warning("closing the contact directory: %s", failure)


#: Every open directory's queue: written at the interpreter's exit, reset in a forked child.
_QUEUES: weakref.WeakSet[_WriteBehind] = weakref.WeakSet()


def _stop_all() -> None:
    for queue in list(_QUEUES):
        queue.stop()


def _reset_all_in_child() -> None:
    for queue in list(_QUEUES):
        queue._reset()


atexit.register(_stop_all)
os.register_at_fork(after_in_child=_reset_all_in_child)


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
        self._behind = _WriteBehind(self._write_rows)
        _QUEUES.add(self._behind)
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
        self._behind.stop()
        self._lender.close()

    def flush(self) -> None:
        """Wait until every contact ``upsert`` accepted is committed; raises the
        ``DirectoryError`` of one that could not be (once)."""
        self._behind.drain()
        failure = self._behind.failure()
        if failure is not None:
            raise failure

    def _write_rows(self, rows: list[_Row]) -> None:
        with self._transaction() as db:
            for account_id, contact, replace, now in rows:
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

        The row is written behind (see the module's notes): this returns once it is queued.
        It raises the ``DirectoryError`` of an earlier row that could not be written, if one
        has not been reported yet (this row is queued all the same).
        """
        contact_id = contact.get("id")
        if not isinstance(contact_id, str) or not contact_id:
            raise ValueError(f"a contact needs a non-empty string 'id' to be recorded: {contact!r}")
        row = dict(contact)
        lists = row.get("mailingLists")
        if isinstance(lists, Mapping):
            row["mailingLists"] = dict(lists)  # the caller may change its own copy later
        self._behind.put((account_id, row, replace, time.time()))
        failure = self._behind.failure()
        if failure is not None:
            raise failure

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
        self._behind.drain()
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM contacts WHERE account = ? AND (email = ? OR user_id = ? OR "
                "contact_id = ?)",
                (account_id, _norm_email(email), _norm_user_id(user_id), contact_id),
            )
            return cursor.rowcount

    def get(self, account_id: str, contact_id: str) -> dict[str, Any] | None:
        """The stored contact with this id, or None when the account never saw it."""
        self._behind.drain()
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
        self._behind.drain()
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
        self._behind.drain()
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
        self._behind.drain()
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT source, synced_at FROM sync WHERE account = ?", (account_id,)
            ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    def mark_synced(self, account_id: str, source: str, *, at: float | None = None) -> None:
        """Record that ``source`` (``webhooks``, ``import``, ``emulator``) filled the account's
        rows at ``at`` (default: now)."""
        self._behind.drain()
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
        self._behind.drain()
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
        self._behind.drain()
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
