"""The SQLite ledger's spool files: what a claimed execution writes, and who folds it when.

The contract suite runs every ledger operation through spool files too ("sqlite-spooled");
these tests look at what only spooling does: the file on disk, folding by readers, a writer
killed with SIGKILL, folding exactly once, a folder that cannot hold the file, a torn line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from records import running, sent

from luabridge.ledger import (
    CallEntry,
    ExecutionRecord,
    LedgerError,
    Outcome,
    SQLiteLedger,
    spool as spool_module,
)
from luabridge.ledger.spool import spool_dir, spool_files


def execution(execution_id: str = "exec-1") -> ExecutionRecord:
    return running(execution_id)


def call(seq: int, state: str = "sending") -> CallEntry:
    return sent(
        seq,
        params={"email": "ada@example.com", "event_name": f"e{seq}"},
        params_hash=f"hash-{seq}",
        state=state,
        idempotency_key=f"lb1-key-{seq}",
        started_at=time.time(),
    )


def done(seq: int, state: str = "succeeded") -> Outcome:
    return Outcome(seq, state, {"success": True, "seq": seq}, time.time())


def rows(path: Path, execution_id: str = "exec-1") -> list[tuple[int, str, int]]:
    """The calls as the database file holds them now, read past the ledger (no folding)."""
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT seq, state, attempts FROM calls WHERE execution_id = ? ORDER BY seq",
            (execution_id,),
        ).fetchall()
    finally:
        db.close()


def folding_rows(path: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT name, folded FROM spools").fetchall()
    finally:
        db.close()


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[SQLiteLedger]:
    """A ledger on ``path`` running ``exec-1`` (claimed), whose call 1 is ``sending``."""
    with SQLiteLedger(path) as ledger:
        ledger.create_execution(execution())
        ledger.claim("exec-1", {})
        ledger.append_call("exec-1", call(1))
        yield ledger


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


def test_claimed_calls_go_to_the_spool_until_read(path: Path) -> None:
    with claimed(path) as ledger:
        ledger.settle_and_append("exec-1", done(1), call(2))
        ledger.update_call("exec-1", 2, state="unknown")
        (file,) = spool_files(spool_dir(path), "exec-1")
        assert len(file.read_bytes().splitlines()) == 3
        assert oct(file.stat().st_mode & 0o777) == "0o600"
        assert rows(path) == []  # nothing committed yet: the lines are the record
        seen = [(c.seq, c.state, c.result) for c in ledger.get_calls("exec-1")]
        assert seen == [(1, "succeeded", {"success": True, "seq": 1}), (2, "unknown", None)]
        assert rows(path) == [(1, "succeeded", 1), (2, "unknown", 1)]  # the read folded them
        assert file.exists()  # the run goes on: its file stays
        ledger.update_execution("exec-1", status="succeeded", ended_at=time.time())
        assert spool_files(spool_dir(path)) == []
        # The file's folding record goes with the next run's end (one commit per run end).
        assert [name for name, _ in folding_rows(path)] == [file.name]
        record = ledger.get_execution("exec-1")
        assert record is not None and (record.calls, record.writes) == (2, 2)
        ledger.create_execution(execution("exec-2"))
        ledger.claim("exec-2", {})
        ledger.append_call("exec-2", call(1))
        ledger.update_execution("exec-2", status="succeeded")
        assert [name for name, _ in folding_rows(path)] != [file.name]
        assert len(folding_rows(path)) == 1
        # A run that made no call ends without a transaction for its spool.
        ledger.create_execution(execution("exec-3"))
        ledger.claim("exec-3", {})
        ledger.update_execution("exec-3", status="succeeded")
        assert len(folding_rows(path)) == 1 and spool_files(spool_dir(path)) == []
    assert folding_rows(path) == []  # closing the ledger dropped the last one


def test_spooled_writes_keep_the_rules(path: Path) -> None:
    with SQLiteLedger(path) as ledger:
        ledger.create_execution(execution())
        ledger.append_call("exec-1", call(1))  # before the claim: straight to the database
        ledger.claim("exec-1", {1: "sending"})
        (file,) = spool_files(spool_dir(path), "exec-1")
        with pytest.raises(LedgerError, match="already has a call 1"):
            ledger.append_call("exec-1", call(1))
        with pytest.raises(LedgerError, match="has no call 7"):
            ledger.update_call("exec-1", 7, state="succeeded")
        with pytest.raises(LedgerError, match="cannot go from 'sending' to 'sending'"):
            ledger.update_call("exec-1", 1, state="sending")
        # Both parts of a settle are checked before anything is written.
        with pytest.raises(LedgerError, match="already has a call 1"):
            ledger.settle_and_append("exec-1", done(1), call(1))
        assert file.read_bytes() == b""
        ledger.update_call("exec-1", 1, state="failed")
        ledger.update_call("exec-1", 1, state="sending")  # a resume tries it again
        ledger.update_call("exec-1", 1, state="succeeded")
        (entry,) = ledger.get_calls("exec-1")
        assert (entry.state, entry.attempts) == ("succeeded", 2)


def test_a_line_is_folded_exactly_once(path: Path) -> None:
    """Readers fold a live run's file over and over; every line counts once (a second
    ``sending`` would count a second attempt)."""
    with SQLiteLedger(path) as writer, SQLiteLedger(path) as reader:
        writer.create_execution(execution())
        writer.claim("exec-1", {})
        writer.append_call("exec-1", call(1))
        writer.update_call("exec-1", 1, state="failed")
        assert [c.attempts for c in reader.get_calls("exec-1")] == [1]
        writer.update_call("exec-1", 1, state="sending")
        for _ in range(3):
            assert [(c.state, c.attempts) for c in reader.get_calls("exec-1")] == [("sending", 2)]
        writer.update_call("exec-1", 1, state="succeeded")
        assert len(reader.list_executions()) == 1
        writer.update_execution("exec-1", status="succeeded")
        assert rows(path) == [(1, "succeeded", 2)]


def test_writer_folds_every_so_many_lines(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("luabridge.ledger.sqlite.FOLD_EVERY", 3)
    with claimed(path) as ledger:
        for seq in range(2, 8):
            ledger.settle_and_append("exec-1", done(seq - 1), call(seq))
        # Seven lines: the first six were folded by the writer itself, without a read.
        assert [seq for seq, _, _ in rows(path)] == [1, 2, 3, 4, 5, 6]


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from luabridge.ledger import CallEntry, ExecutionRecord, Outcome, SQLiteLedger
    ledger = SQLiteLedger(sys.argv[1])
    ledger.create_execution(ExecutionRecord(
        execution_id="exec-1", status="running", script_hash="s", input_hash="i",
        policy={}, accounts={}, started_at=time.time()))
    ledger.claim("exec-1", {})
    def call(seq):
        return CallEntry(seq=seq, integration="loops", account="default", action="send_event",
                         effect="write", params={"n": seq}, params_hash=str(seq))
    ledger.append_call("exec-1", call(1))
    for seq in range(2, 41):
        ledger.settle_and_append("exec-1", Outcome(seq - 1, "succeeded", {"n": seq - 1}, 1.0),
                                 call(seq))
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_a_killed_writers_lines_survive_and_its_file_goes(path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with SQLiteLedger(path) as reader:
            # The writer is alive: its file is folded, not removed.
            assert len(reader.get_calls("exec-1")) == 40
            assert len(spool_files(spool_dir(path))) == 1
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            calls = reader.get_calls("exec-1")
            assert [c.state for c in calls] == ["succeeded"] * 39 + ["sending"]
            assert all(c.attempts == 1 for c in calls)
            # Its writer is gone: folded to the end, the file and its folding record go.
            assert spool_files(spool_dir(path)) == []
            assert folding_rows(path) == []
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_a_file_folded_but_not_removed_is_not_applied_twice(path: Path) -> None:
    """A writer killed between its last fold and removing its file."""
    with claimed(path) as ledger:
        ledger.update_call("exec-1", 1, state="failed")
        ledger.update_call("exec-1", 1, state="sending")
        assert ledger.get_calls("exec-1")[0].attempts == 2
        spool = ledger._spools.pop("exec-1")  # as if the process had died here
        spool.close()
        assert [(c.state, c.attempts) for c in ledger.get_calls("exec-1")] == [("sending", 2)]
        assert spool_files(spool_dir(path)) == []


@pytest.mark.parametrize(
    ("kept", "cut", "warned"),
    [
        ("half", True, False),  # the torn part is cut off the file
        ("half", False, True),  # it cannot be: the next line ends it, and a reader skips it
        ("all but the newline", False, True),  # ended so that it is no JSON: not revived
    ],
)
def test_a_torn_write_is_not_kept(
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kept: str,
    cut: bool,
    warned: bool,
) -> None:
    """A write the disk took only part of (a full disk): the change is refused, and the next
    line and everything before it are intact."""
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2] if kept == "half" else data[:-1])

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    with claimed(path) as ledger:
        monkeypatch.setattr(spool_module.os, "write", short_write)
        if not cut:
            monkeypatch.setattr(spool_module.os, "ftruncate", no_truncate)
        with pytest.raises(LedgerError, match=r"spool file .*only \d+ of \d+ bytes"):
            ledger.settle_and_append("exec-1", done(1), call(2))
        monkeypatch.setattr(spool_module.os, "write", real_write)
        ledger.update_call("exec-1", 1, state="failed")
        ledger.append_call("exec-1", call(2))
        with caplog.at_level(logging.WARNING):
            calls = ledger.get_calls("exec-1")
        assert [(c.seq, c.state) for c in calls] == [(1, "failed"), (2, "sending")]
        assert ("skipped a damaged line" in caplog.text) is warned
        assert "changed nothing" not in caplog.text


def test_a_damaged_record_is_skipped(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with claimed(path) as ledger:
        file = ledger._spools["exec-1"].path
        with open(file, "a") as handle:
            handle.write('["u", "exec-1"]\n["zz", "exec-1"]\n[]\n["a", "exec-1", 9]\n')
            handle.write(json.dumps(["a", "exec-1", *[None] * 13]) + "\n")
        ledger.update_call("exec-1", 1, state="succeeded")
        with caplog.at_level(logging.WARNING):
            assert [c.state for c in ledger.get_calls("exec-1")] == ["succeeded"]
        assert "skipped a malformed record" in caplog.text
        assert "changed nothing" in caplog.text
        assert "damaged line" in caplog.text


def test_a_folder_that_cannot_hold_the_spool_writes_straight_through(path: Path) -> None:
    spool_dir(path).write_text("a file where the folder would go")
    with claimed(path) as ledger:
        assert rows(path) == [(1, "sending", 1)]
        assert [c.seq for c in ledger.get_calls("exec-1")] == [1]
        assert len(ledger.list_executions()) == 1


def test_a_forked_child_leaves_its_parents_spool_alone(path: Path) -> None:
    """A child that writes, and closes its copy of the ledger, neither writes to nor folds
    away nor removes the file its parent is still writing."""
    with claimed(path) as ledger:
        (file,) = spool_files(spool_dir(path))
        before = file.read_bytes()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            code = 0
            try:
                ledger.update_call("exec-1", 1, state="succeeded")
            except LedgerError:
                code = 3  # no claim here: the database, which has no call 1 yet, refuses
            ledger.close()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3
        assert file.exists() and file.read_bytes() == before
        ledger.settle_and_append("exec-1", done(1), call(2))
        ledger.update_call("exec-1", 2, state="succeeded")
        ledger.update_execution("exec-1", status="succeeded")
        assert rows(path) == [(1, "succeeded", 1), (2, "succeeded", 1)]


def test_a_claim_held_by_another_process_is_refused(path: Path) -> None:
    """Two processes resuming one execution at once: the second may not send anything."""
    with SQLiteLedger(path) as first, SQLiteLedger(path) as second:
        first.create_execution(execution())
        first.claim("exec-1", {})
        with pytest.raises(LedgerError, match="being run by another process"):
            second.claim("exec-1", {})
        first.update_execution("exec-1", status="failed")
        second.claim("exec-1", {})  # the first run is over: no file of it is left
        second.append_call("exec-1", call(1))
        assert len(spool_files(spool_dir(path))) == 1


def test_a_change_after_the_runs_end_goes_to_the_database(path: Path) -> None:
    """A host call that finishes on its own thread after the run ended (its deadline)."""
    with claimed(path) as ledger:
        spool = ledger._spools["exec-1"]
        ledger.update_execution("exec-1", status="failed")
        assert not spool.open and spool_files(spool_dir(path)) == []
        ledger.update_call("exec-1", 1, state="succeeded")
        assert rows(path) == [(1, "succeeded", 1)]


def test_folding_records_of_removed_files_are_pruned(path: Path) -> None:
    with SQLiteLedger(path) as ledger:
        ledger.create_execution(execution())
    db = sqlite3.connect(path)
    db.execute("INSERT INTO spools (name, folded) VALUES ('gone-0000.spool', 10)")
    db.commit()
    db.close()
    with SQLiteLedger(path) as ledger:
        assert len(ledger.list_executions()) == 1
    assert folding_rows(path) == []


def test_a_second_claim_keeps_the_first_files_lines(path: Path) -> None:
    with claimed(path) as ledger:
        ledger.claim("exec-1", {1: "sending"})
        assert rows(path) == [(1, "sending", 1)]
        assert len(spool_files(spool_dir(path))) == 1


def test_closing_the_ledger_folds_and_removes_its_files(path: Path) -> None:
    ledger = SQLiteLedger(path)
    ledger.create_execution(execution())
    ledger.claim("exec-1", {})
    ledger.append_call("exec-1", call(1))
    ledger.close()
    assert rows(path) == [(1, "sending", 1)]
    assert spool_files(spool_dir(path)) == []


def test_a_first_schema_file_gains_the_folding_table(path: Path) -> None:
    with SQLiteLedger(path) as ledger:
        ledger.create_execution(execution())
    db = sqlite3.connect(path)
    db.execute("DROP TABLE spools")  # as the first schema left it
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with SQLiteLedger(path) as ledger:
        assert ledger.get_execution("exec-1") is not None
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT COUNT(*) FROM spools").fetchone()[0] == 0
    finally:
        db.close()


def _line(ledger: SQLiteLedger, record: list[object]) -> None:
    with open(ledger._spools["exec-1"].path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _fields(seq: int) -> list[object]:
    entry = call(seq)
    return [
        seq, entry.integration, entry.account, entry.action, entry.effect, entry.params,
        entry.params_hash, "sending", entry.idempotency_key, None, 1.0, None, 1,
    ]  # fmt: skip


def test_a_refused_settle_keeps_its_new_call_out(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Either both parts of a settle-and-append record are folded, or neither."""
    with claimed(path) as ledger:
        _line(ledger, ["s", "exec-1", 1, "sending", None, 2.0, *_fields(2)])  # not allowed
        with caplog.at_level(logging.WARNING):
            assert [(c.seq, c.state) for c in ledger.get_calls("exec-1")] == [(1, "sending")]
        assert "changed nothing" in caplog.text


def test_a_new_call_the_database_held_takes_its_later_changes(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The batched fold cannot stand for this one: it is replayed record by record."""
    with SQLiteLedger(path) as ledger:
        ledger.create_execution(execution())
        ledger.append_call("exec-1", call(1))  # in the database before the claim
        ledger.claim("exec-1", {})  # told nothing of it
        ledger.append_call("exec-1", call(1))
        ledger.update_call("exec-1", 1, state="succeeded")
        ledger.append_call("exec-1", call(2))
        with caplog.at_level(logging.WARNING):
            calls = ledger.get_calls("exec-1")
        assert [(c.seq, c.state, c.attempts) for c in calls] == [
            (1, "succeeded", 1),
            (2, "sending", 1),
        ]
        assert "changed nothing" in caplog.text  # the second append of call 1


def test_a_value_sqlite_refuses_skips_that_record_only(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with claimed(path) as ledger:
        bad = _fields(2)
        bad[1] = ["not", "a", "name"]  # SQLite cannot store a list
        _line(ledger, ["a", "exec-1", *bad])
        _line(ledger, ["a", "exec-1", *_fields(3)])
        ledger._spools["exec-1"].states[3] = "sending"
        ledger.update_call("exec-1", 3, state="succeeded")
        with caplog.at_level(logging.WARNING):
            calls = ledger.get_calls("exec-1")
        assert [(c.seq, c.state) for c in calls] == [(1, "sending"), (3, "succeeded")]
        assert "skipped a malformed record" in caplog.text
        assert len(ledger.list_executions()) == 1


def test_a_failed_fold_at_the_runs_end_keeps_the_file_open(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call finishing late on another thread still has its file to write to."""
    with claimed(path) as ledger:
        real = SQLiteLedger._fold_file

        def busy(self: SQLiteLedger, db: sqlite3.Connection, file: Path) -> None:
            raise LedgerError("the ledger is busy")

        monkeypatch.setattr(SQLiteLedger, "_fold_file", busy)
        with pytest.raises(LedgerError, match="busy"):
            ledger.update_execution("exec-1", status="succeeded")
        monkeypatch.setattr(SQLiteLedger, "_fold_file", real)
        ledger.update_call("exec-1", 1, state="succeeded")  # to the file, which is still open
        assert rows(path) == []
    assert rows(path) == [(1, "succeeded", 1)]  # closing the ledger folded it
    assert spool_files(spool_dir(path)) == []
