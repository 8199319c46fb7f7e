"""Connections to one SQLite file in WAL mode, lent out per transaction.

The run ledger and an integration's local stores (the Loops contact directory) share this:
each transaction borrows an idle connection (or opens one), and gives it back when it ends, so
a host that serves each call on a fresh thread leaves no connection behind, and a forked child
never uses a connection its parent opened.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

__all__ = ["ConnectionLender"]

#: Idle connections kept per file; more are closed when given back.
MAX_IDLE: Final = 8

#: How many times this process is a forked child of the one that imported this module. Counted
#: when the fork happens, rather than by comparing os.getpid() (a system call) twice per
#: transaction.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1
    # A lock held by another thread at the fork would be held for ever in the child.
    for lender in list(_LENDERS):
        lender._lock = threading.Lock()


#: Every lender of this process, for _forked.
_LENDERS: weakref.WeakSet[ConnectionLender] = weakref.WeakSet()


os.register_at_fork(after_in_child=_forked)


class ConnectionLender:
    """Lends connections to ``path`` (WAL, ``synchronous = NORMAL``, a busy timeout).

    - ``path``: the database file
    - ``busy_timeout``: seconds a writer waits for another connection's transaction
    - ``error``: makes the exception to raise from what failed (``"cannot open"``, ``"cannot
      read"`` or ``"cannot write to"``) and the ``sqlite3`` error behind it, so that each store
      names itself and words its own advice
    - ``closed``: makes the exception raised once :meth:`close` has been called

    Example::

        lender = ConnectionLender(path, busy_timeout=10.0, error=make_error, closed=make_closed)
        with lender.transaction() as db:
            db.execute("INSERT INTO notes (text) VALUES (?)", ("hello",))
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float,
        error: Callable[[str, BaseException], Exception],
        closed: Callable[[], Exception],
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._error = error
        self._closed_error = closed
        self._idle: list[sqlite3.Connection] = []
        self._connections: list[sqlite3.Connection] = []
        self._forks = _forks
        self._lock = threading.Lock()
        self._closed = False
        _LENDERS.add(self)

    def borrow(self) -> sqlite3.Connection:
        """An idle connection, or a new one; give it back with :meth:`give_back`."""
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._forks != _forks:
                # A forked child opens its own connections, never the parent's.
                self._forks, self._idle, self._connections = _forks, [], []
            if self._idle:
                return self._idle.pop()
            try:
                connection = sqlite3.connect(
                    self.path,
                    timeout=self.busy_timeout,
                    isolation_level=None,  # transactions are begun and committed explicitly
                    check_same_thread=False,  # lent to one thread at a time, closed from any
                )
                connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                self._use_wal(connection)
                connection.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise self._error("cannot open", exc) from exc
            self._connections.append(connection)
        return connection

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Put the file in WAL mode. Switching a new file needs a moment of exclusive access,
        and SQLite reports a second process opening the file at the same time as "database is
        locked" at once, without waiting for the busy timeout: so wait here, up to it."""
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.001
        while True:
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def give_back(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and self._forks == _forks and len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
            if connection in self._connections:
                self._connections.remove(connection)
        connection.close()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One short transaction; a writer takes the write lock up front (``BEGIN
        IMMEDIATE``), so two writers never deadlock upgrading a read."""
        db = self.borrow()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error("cannot write to" if write else "cannot read", exc) from exc
        finally:
            self.give_back(db)

    def close(self) -> None:
        """Close the idle connections; one lent out is closed when it is given back (closing
        it under a transaction in another thread would crash the process). Later borrowing
        raises the ``closed`` error."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for connection in idle:
                self._connections.remove(connection)
        for connection in idle:
            connection.close()
