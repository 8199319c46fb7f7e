"""The connection lender shared by the run ledger and the Loops contact directory."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from luabridge.sqlitefile import MAX_IDLE, ConnectionLender


class StoreError(Exception):
    pass


def lender(path: Path) -> ConnectionLender:
    return ConnectionLender(
        path,
        busy_timeout=2.0,
        error=lambda action, exc: StoreError(f"{action} the store: {exc}"),
        closed=lambda: StoreError("the store is closed"),
    )


def test_lender_reuses_a_returned_connection(tmp_path: Path) -> None:
    store = lender(tmp_path / "s.db")
    first = store.borrow()
    store.give_back(first)
    assert store.borrow() is first
    assert first.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_lender_keeps_at_most_max_idle(tmp_path: Path) -> None:
    store = lender(tmp_path / "s.db")
    borrowed = [store.borrow() for _ in range(MAX_IDLE + 3)]
    for connection in borrowed:
        store.give_back(connection)
    closed = 0
    for connection in borrowed:
        try:
            connection.execute("SELECT 1")
        except sqlite3.ProgrammingError:
            closed += 1
    assert closed == 3
    store.close()


def test_lender_transaction_rolls_back_and_words_the_error(tmp_path: Path) -> None:
    store = lender(tmp_path / "s.db")
    with store.transaction() as db:
        db.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(StoreError, match=r"^cannot write to the store: UNIQUE constraint"):
        with store.transaction() as db:
            db.execute("INSERT INTO t VALUES (2)")
            db.execute("INSERT INTO t VALUES (1)")
    with store.transaction(write=False) as db:
        assert db.execute("SELECT v FROM t").fetchall() == [(1,)]
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.borrow()


def test_lender_forked_child_opens_its_own(tmp_path: Path) -> None:
    """A connection opened before a fork is the parent's: the child never borrows it."""
    store = lender(tmp_path / "s.db")
    with store.transaction() as db:
        db.execute("CREATE TABLE t (who TEXT)")
    parents = store.borrow()
    store.give_back(parents)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            mine = store.borrow()
            if mine is not parents:
                mine.execute("INSERT INTO t VALUES ('child')")
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with store.transaction(write=False) as db:
        assert db.execute("SELECT who FROM t").fetchall() == [("child",)]
    assert store.borrow() is parents
    store.close()


_OPENER = """
import sys, time
from pathlib import Path
from luabridge.sqlitefile import ConnectionLender
path, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    pass
store = ConnectionLender(path, busy_timeout=5.0, error=lambda a, e: RuntimeError(f"{a}: {e}"),
                         closed=lambda: RuntimeError("closed"))
with store.transaction() as db:
    db.execute("CREATE TABLE IF NOT EXISTS t (v)")
    db.execute("INSERT INTO t VALUES (1)")
store.close()
"""


def test_lender_new_file_opened_by_many_processes_at_once(tmp_path: Path) -> None:
    """Switching a new file to WAL takes a moment of exclusive access, which SQLite refuses
    at once ("database is locked") to a second process opening it then: the lender waits up to
    its busy timeout instead, so every opener gets in. Several rounds, each on a new file."""
    import subprocess
    import sys
    import time

    for round_ in range(8):
        path = tmp_path / f"new-{round_}.db"
        start = time.time() + 0.5
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", _OPENER, str(path), str(start)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        for opener in openers:
            _, stderr = opener.communicate(timeout=60)
            assert opener.returncode == 0, stderr
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 6
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
