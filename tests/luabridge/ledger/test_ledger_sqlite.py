"""What only the SQLite ledger does: its file, its location settings, several processes at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from records import running

from luabridge.errors import ConfigError
from luabridge.ledger import (
    ENV_VAR,
    ExecutionRecord,
    LedgerError,
    SQLiteLedger,
    default_ledger_path,
    ledger_path,
)


def record(execution_id: str) -> ExecutionRecord:
    return running(execution_id, started_at=1.0)


def test_sqlite_ledger_file_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ledger.sqlite3"
    with SQLiteLedger(path) as ledger:
        ledger.create_execution(record("a"))
        assert repr(ledger) == f"SQLiteLedger({str(path)!r})"
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_sqlite_ledger_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not sqlite at all " * 100)
    with pytest.raises(LedgerError, match=r"not a luabridge ledger .*move it aside"):
        SQLiteLedger(path)


def test_sqlite_ledger_folder_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match=r"cannot create the folder.*LUABRIDGE_LEDGER"):
        SQLiteLedger(blocker / "ledger.sqlite3")


def test_sqlite_ledger_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(LedgerError, match="newer luabridge"):
        SQLiteLedger(path)


def test_sqlite_ledger_locked_names_the_cause(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = SQLiteLedger(path, busy_timeout=0.05)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LedgerError, match=r"held the ledger for more than 0\.05 s"):
            ledger.create_execution(record("a"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        ledger.close()


def test_sqlite_ledger_many_processes(tmp_path: Path) -> None:
    """Four processes append 50 calls each to one execution at once: none is lost."""
    path = tmp_path / "ledger.sqlite3"
    with SQLiteLedger(path) as ledger:
        ledger.create_execution(record("shared"))
    script = textwrap.dedent(
        """
        import sys
        from luabridge.ledger import CallEntry, SQLiteLedger
        ledger = SQLiteLedger(sys.argv[1])
        base = int(sys.argv[2]) * 1000
        for n in range(50):
            ledger.append_call("shared", CallEntry(seq=base + n, integration="x", account="a",
                action="y", effect="write", params={}, params_hash="h"))
            ledger.update_call("shared", base + n, state="succeeded")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(n)]) for n in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    with SQLiteLedger(path) as ledger:
        entries = ledger.get_calls("shared")
    assert len(entries) == 200
    assert {e.state for e in entries} == {"succeeded"}


def test_ledger_path_default(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    assert ledger_path({}, environ=env) == tmp_path / "luabridge" / "ledger.sqlite3"
    assert default_ledger_path(env) == tmp_path / "luabridge" / "ledger.sqlite3"
    assert default_ledger_path({}) == Path.home() / ".local/state/luabridge/ledger.sqlite3"


def test_ledger_path_env_wins(tmp_path: Path) -> None:
    env = {ENV_VAR: str(tmp_path / "env.sqlite3")}
    assert ledger_path({"ledger": "file.sqlite3"}, environ=env) == tmp_path / "env.sqlite3"
    assert ledger_path({}, environ={ENV_VAR: "off"}) is None


def test_ledger_path_from_file(tmp_path: Path) -> None:
    config = str(tmp_path / "luabridge.toml")
    assert ledger_path({"ledger": False}, environ={}) is None
    assert ledger_path({"ledger": "runs/l.sqlite3"}, config_name=config, environ={}) == (
        tmp_path / "runs" / "l.sqlite3"
    )
    assert ledger_path({"ledger": "/abs/l.sqlite3"}, environ={}) == Path("/abs/l.sqlite3")


@pytest.mark.parametrize("value", [0, "", " ", ["a"], {"path": "x"}])
def test_ledger_path_bad_value(value: object) -> None:
    with pytest.raises(ConfigError, match=r"ledger must be false .* got"):
        ledger_path({"ledger": value}, config_name="conf.toml", environ={})


def test_sqlite_ledger_new_file_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with SQLiteLedger(path) as ledger:
        ledger.create_execution(record("a"))
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes["ledger.sqlite3"] == 0o600
    assert modes.get("ledger.sqlite3-wal", 0o600) == 0o600


def test_sqlite_ledger_existing_file_mode_kept(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SQLiteLedger(path).close()
    path.chmod(0o640)
    SQLiteLedger(path).close()
    assert path.stat().st_mode & 0o777 == 0o640


def test_sqlite_ledger_file_cannot_be_made(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match=r"cannot create the ledger .*writable folder"):
        SQLiteLedger(tmp_path / ("x" * 300 + ".sqlite3"))  # a name too long for the filesystem
