"""Tests of ``integrations.loops.directory``: the SQLite record behind list/get_contact."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from integrations.loops import directory as directory_module, integration
from integrations.loops.actions import LoopsAccount, open_account
from integrations.loops.client import LoopsClient
from integrations.loops.directory import (
    _BATCH as BATCH,
    ENV_VAR,
    ContactDirectory,
    DirectoryError,
    EarlierContactsLost,
    account_identity,
    default_directory_path,
)
from integrations.loops.emulator.seed import (
    ADA_CONTACT_ID,
    ADA_EMAIL,
    ADA_USER_ID,
    ALAN_CONTACT_ID,
    ALAN_EMAIL,
    DEMO_KEYS,
    GRACE_CONTACT_ID,
    GRACE_EMAIL,
)
from luabridge.accounts import AccountSettings
from luabridge.action import CallContext
from luabridge.errors import IntegrationError

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[3]
A = account_identity("default", "http://loops.test/api/v1", "key-a")
B = account_identity("default", "http://loops.test/api/v1", "key-b")


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[ContactDirectory]:
    with ContactDirectory(tmp_path / "contacts.sqlite3") as opened:
        yield opened


def test_account_identity_stable_and_secret_free() -> None:
    one = account_identity("marketing", "http://x/api/v1/", "secret-key")
    assert one == account_identity("marketing", "http://x/api/v1", "secret-key")
    assert one.startswith("marketing:") and len(one) == len("marketing:") + 12
    assert "secret" not in one
    assert one != account_identity("marketing", "http://x/api/v1", "other-key")
    assert one != account_identity("marketing", "http://y/api/v1", "secret-key")
    assert one != account_identity("default", "http://x/api/v1", "secret-key")


def test_default_path_env_override(tmp_path: Path) -> None:
    target = tmp_path / "mine.sqlite3"
    assert default_directory_path({ENV_VAR: str(target)}) == target


def test_default_path_xdg_then_home() -> None:
    xdg = default_directory_path({"XDG_DATA_HOME": "/data"})
    assert xdg == Path("/data/luabridge/loops-contacts.sqlite3")
    home = default_directory_path({})
    assert home == Path.home() / ".local/share/luabridge/loops-contacts.sqlite3"


def test_directory_creates_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "contacts.sqlite3"
    with ContactDirectory(path) as directory:
        directory.upsert(A, {"id": "c1", "email": "jane@example.com"})
    assert path.exists()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_directory_unwritable_folder_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DirectoryError) as info:
        ContactDirectory(blocker / "contacts.sqlite3")
    message = str(info.value)
    assert "cannot create the folder" in message
    assert ENV_VAR in message


def test_directory_path_is_a_folder_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot open"):
        ContactDirectory(tmp_path)


def test_upsert_then_get(directory: ContactDirectory) -> None:
    directory.upsert(A, {"id": "c1", "email": "jane@example.com", "firstName": "Jane"})
    assert directory.get(A, "c1") == {"id": "c1", "email": "jane@example.com", "firstName": "Jane"}
    assert directory.get(A, "missing") is None


def test_upsert_merges_partial_updates(directory: ContactDirectory) -> None:
    directory.upsert(A, {"id": "c1", "email": "jane@example.com", "mailingLists": {"l1": True}})
    directory.upsert(A, {"id": "c1", "lastName": "Doe", "mailingLists": {"l1": False, "l2": True}})
    assert directory.get(A, "c1") == {
        "id": "c1",
        "email": "jane@example.com",
        "lastName": "Doe",
        "mailingLists": {"l2": True},
    }


def test_upsert_null_property_cleared(directory: ContactDirectory) -> None:
    directory.upsert(A, {"id": "c1", "email": "a@b.co", "plan": "pro", "firstName": "A"})
    directory.upsert(A, {"id": "c1", "plan": None, "firstName": None})
    assert directory.get(A, "c1") == {"id": "c1", "email": "a@b.co", "firstName": None}


def test_upsert_replace_takes_snapshot(directory: ContactDirectory) -> None:
    directory.upsert(A, {"id": "c1", "email": "jane@example.com", "plan": "pro"})
    directory.upsert(A, {"id": "c1", "email": "jane@example.com"}, replace=True)
    assert directory.get(A, "c1") == {"id": "c1", "email": "jane@example.com"}


def test_upsert_without_id_refused(directory: ContactDirectory) -> None:
    with pytest.raises(ValueError, match="'id'"):
        directory.upsert(A, {"email": "jane@example.com"})


def test_upsert_drops_stale_rows_with_same_identity(directory: ContactDirectory) -> None:
    """A contact deleted and created again elsewhere gets a new id; the old row must go."""
    directory.upsert(A, {"id": "old", "email": "Jane@Example.com", "userId": "u1"})
    directory.upsert(A, {"id": "new", "email": "jane@example.com"})
    assert directory.get(A, "old") is None
    directory.upsert(A, {"id": "newer", "email": "other@example.com", "userId": "u9"})
    directory.upsert(A, {"id": "newest", "email": "x@example.com", "userId": "u9"})
    assert directory.get(A, "newer") is None
    assert directory.page(A, 50, 0)[1] == 2


def test_lookup_by_email_any_case_or_user_id(directory: ContactDirectory) -> None:
    directory.upsert(A, {"id": "c1", "email": "Jane@Example.com", "userId": "u1"})
    assert directory.lookup(A, email="jane@EXAMPLE.com") == directory.get(A, "c1")
    assert directory.lookup(A, user_id="u1") == directory.get(A, "c1")
    assert directory.lookup(A, user_id="u2") is None


def test_page_stable_first_seen_order(directory: ContactDirectory) -> None:
    for n in range(7):
        directory.upsert(A, {"id": f"c{n}", "email": f"p{n}@example.com"})
    directory.upsert(A, {"id": "c0", "firstName": "Updated"})  # keeps its place
    rows, total = directory.page(A, 3, 0)
    assert total == 7
    assert [r["id"] for r in rows] == ["c0", "c1", "c2"]
    assert rows[0]["firstName"] == "Updated"
    assert [r["id"] for r in directory.page(A, 3, 3)[0]] == ["c3", "c4", "c5"]
    assert [r["id"] for r in directory.page(A, 3, 6)[0]] == ["c6"]
    assert directory.page(A, 3, 9) == ([], 7)


def test_page_negative_refused(directory: ContactDirectory) -> None:
    with pytest.raises(ValueError):
        directory.page(A, 10, -1)


def test_remove_by_each_identifier(directory: ContactDirectory) -> None:
    directory.upsert(A, {"id": "c1", "email": "one@example.com"})
    directory.upsert(A, {"id": "c2", "email": "two@example.com", "userId": "u2"})
    directory.upsert(A, {"id": "c3", "email": "three@example.com"})
    assert directory.remove(A, email="ONE@example.com") == 1
    assert directory.remove(A, user_id="u2") == 1
    assert directory.remove(A, contact_id="c3") == 1
    assert directory.remove(A, contact_id="c3") == 0
    assert directory.page(A, 50, 0) == ([], 0)


def test_remove_without_identifier_refused(directory: ContactDirectory) -> None:
    with pytest.raises(ValueError):
        directory.remove(A)


def test_two_accounts_isolated(directory: ContactDirectory) -> None:
    directory.upsert(A, {"id": "c1", "email": "jane@example.com"})
    directory.upsert(B, {"id": "c9", "email": "jane@example.com"})
    assert directory.get(A, "c9") is None
    assert directory.get(B, "c1") is None
    assert directory.remove(A, email="jane@example.com") == 1
    assert directory.page(B, 50, 0) == ([{"id": "c9", "email": "jane@example.com"}], 1)


def test_closed_directory_refuses_use(tmp_path: Path) -> None:
    directory = ContactDirectory(tmp_path / "c.sqlite3")
    directory.get(A, "c1")
    directory.close()
    directory.close()
    with pytest.raises(DirectoryError, match="has been closed"):
        directory.get(A, "c1")


def test_concurrent_writers_8_threads(directory: ContactDirectory) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(50):
                directory.upsert(A, {"id": f"t{worker}-{n}", "email": f"t{worker}.{n}@x.co"})
                directory.upsert(A, {"id": f"t{worker}-{n}", "firstName": "again"})
                directory.page(A, 10, 0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows, total = directory.page(A, 50, 0)
    assert total == 400
    assert all(row["firstName"] == "again" for row in rows)


_WRITER = """
import sys
from integrations.loops.directory import ContactDirectory
path, account, prefix = sys.argv[1:4]
with ContactDirectory(path) as directory:
    for n in range(150):
        directory.upsert(account, {"id": f"{prefix}-{n}", "email": f"{prefix}.{n}@x.co"})
        directory.page(account, 5, 0)
"""


def test_concurrent_writers_2_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), A, prefix],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("p1", "p2")
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
    with ContactDirectory(path) as directory:
        rows, total = directory.page(A, 50, 0)
        assert total == 300
        assert {row["id"].split("-")[0] for row in rows} <= {"p1", "p2"}


# --- the directory behind the actions, against the emulator ---------------------------------


def open_team(emulator: EmulatorServer, path: Path, team: str = "default") -> LoopsAccount:
    settings = AccountSettings(name=team, api_key=DEMO_KEYS[team], base_url=emulator.base_url)
    return open_account(settings, directory_path=path)


@pytest.fixture
def loops(emulator: EmulatorServer, tmp_path: Path) -> Iterator[LoopsAccount]:
    account = open_team(emulator, tmp_path / "contacts.sqlite3")
    yield account
    account.close()


def call(account: LoopsAccount, action: str, **params: Any) -> dict[str, Any]:
    """Run one action as the runtime does and return the result table."""
    spec = integration.action(action)
    assert spec is not None
    model = spec.input.model_validate(params, strict=True)
    ctx = CallContext("loops", account.name, account, time.monotonic() + 20, "test-run")
    try:
        produced = spec.handler(ctx, model)
        assert isinstance(produced, Mapping)
        data: dict[str, Any] = {"success": True, **produced}
    except IntegrationError as exc:
        data = exc.to_result()
    return spec.output.model_validate(data).model_dump(mode="json", exclude_none=True)


def emulated_contacts(emulator: EmulatorServer, team: str = "default") -> list[dict[str, Any]]:
    return list(emulator.team(team).snapshot("contacts"))


def test_get_contact_unknown_id_explains_what_to_do(loops: LoopsAccount) -> None:
    result = call(loops, "get_contact", contact_id=ADA_CONTACT_ID)
    assert result["success"] is False
    assert result["code"] == "loops.unknown_contact_id"
    assert "not in the local contact directory" in result["error"]
    assert "find_contact with email or user_id" in result["error"]


def test_find_then_get_contact_fresh_from_loops(loops: LoopsAccount) -> None:
    found = call(loops, "find_contact", email=ADA_EMAIL)
    assert found["contact"]["id"] == ADA_CONTACT_ID
    assert found["contact"]["properties"]["plan"] == "pro"
    with LoopsClient(api_key=DEMO_KEYS["default"], base_url=loops.client.base_url) as other:
        other.request("PUT", "/contacts/update", json={"email": ADA_EMAIL, "plan": "team"})
    result = call(loops, "get_contact", contact_id=ADA_CONTACT_ID)
    assert result["success"] is True
    assert result["contact"]["properties"]["plan"] == "team"
    assert result["contact"]["user_id"] == ADA_USER_ID


def test_get_contact_deleted_elsewhere_not_found_and_forgotten(loops: LoopsAccount) -> None:
    call(loops, "find_contact", email=GRACE_EMAIL)
    with LoopsClient(api_key=DEMO_KEYS["default"], base_url=loops.client.base_url) as other:
        other.request("POST", "/contacts/delete", json={"email": GRACE_EMAIL})
    result = call(loops, "get_contact", contact_id=GRACE_CONTACT_ID)
    assert (result["success"], result["code"]) == (False, "loops.not_found")
    assert "removed from the contact directory" in result["error"]
    assert call(loops, "list_contacts")["total"] == 0


def test_list_contacts_pages_the_directory_without_calling_loops(
    emulator: EmulatorServer, loops: LoopsAccount
) -> None:
    for n in range(3):
        assert call(loops, "create_contact", email=f"new{n}@example.com")["success"]
    call(loops, "find_contact", email=ADA_EMAIL)
    sent = len(emulator.requests())
    first = call(loops, "list_contacts", limit=3)
    assert [c["email"] for c in first["contacts"]] == [
        "new0@example.com",
        "new1@example.com",
        "new2@example.com",
    ]
    assert (first["total"], first["has_more"], first["next_offset"]) == (4, True, 3)
    second = call(loops, "list_contacts", limit=3, offset=first["next_offset"])
    assert [c["id"] for c in second["contacts"]] == [ADA_CONTACT_ID]
    assert second["has_more"] is False and "next_offset" not in second
    assert len(emulator.requests()) == sent


def test_update_contact_by_contact_id(emulator: EmulatorServer, loops: LoopsAccount) -> None:
    call(loops, "find_contact", user_id=ADA_USER_ID)
    result = call(loops, "update_contact", contact_id=ADA_CONTACT_ID, last_name="Byron")
    assert result == {"success": True, "id": ADA_CONTACT_ID}
    listed = call(loops, "list_contacts")["contacts"]
    assert [(c["id"], c["last_name"]) for c in listed] == [(ADA_CONTACT_ID, "Byron")]
    sent = emulator.requests()[-1]
    assert (sent["method"], sent["body"]) == ("PUT", {"email": ADA_EMAIL, "lastName": "Byron"})


def test_update_contact_changes_email_through_user_id(loops: LoopsAccount) -> None:
    call(loops, "find_contact", email=ADA_EMAIL)
    result = call(loops, "update_contact", contact_id=ADA_CONTACT_ID, email="ada@lovelace.dev")
    assert result["id"] == ADA_CONTACT_ID
    assert call(loops, "get_contact", contact_id=ADA_CONTACT_ID)["contact"]["email"] == (
        "ada@lovelace.dev"
    )


def test_update_contact_email_without_user_id_refused(loops: LoopsAccount) -> None:
    call(loops, "find_contact", email=GRACE_EMAIL)
    result = call(loops, "update_contact", contact_id=GRACE_CONTACT_ID, email="g@example.com")
    assert (result["success"], result["code"]) == (False, "loops.cannot_change_email")


def test_update_contact_stale_id_creates_nothing(
    emulator: EmulatorServer, loops: LoopsAccount
) -> None:
    call(loops, "find_contact", email=ALAN_EMAIL)
    with LoopsClient(api_key=DEMO_KEYS["default"], base_url=loops.client.base_url) as other:
        other.request("POST", "/contacts/delete", json={"email": ALAN_EMAIL})
    before = len(emulated_contacts(emulator))
    result = call(loops, "update_contact", contact_id=ALAN_CONTACT_ID, first_name="Al")
    assert result["code"] == "loops.not_found"
    assert len(emulated_contacts(emulator)) == before


def test_update_contact_by_email_upserts_and_records(loops: LoopsAccount) -> None:
    result = call(
        loops, "update_contact", email="fresh@example.com", custom_properties={"plan": "pro"}
    )
    assert result["success"] is True
    contact = call(loops, "get_contact", contact_id=result["id"])["contact"]
    assert (contact["email"], contact["properties"]) == ("fresh@example.com", {"plan": "pro"})


def test_delete_contact_by_contact_id(emulator: EmulatorServer, loops: LoopsAccount) -> None:
    created = call(loops, "create_contact", email="leaving@example.com")
    result = call(loops, "delete_contact", contact_id=created["id"])
    assert result["success"] is True and result["message"].startswith("Contact deleted")
    assert call(loops, "list_contacts")["total"] == 0
    assert "leaving@example.com" not in {c["email"] for c in emulated_contacts(emulator)}


def test_delete_contact_missing_forgets_it(loops: LoopsAccount) -> None:
    call(loops, "find_contact", email=GRACE_EMAIL)
    with LoopsClient(api_key=DEMO_KEYS["default"], base_url=loops.client.base_url) as other:
        other.request("POST", "/contacts/delete", json={"email": GRACE_EMAIL})
    result = call(loops, "delete_contact", email=GRACE_EMAIL)
    assert (result["code"], result["status"]) == ("loops.not_found", 404)
    assert call(loops, "list_contacts")["total"] == 0


def test_two_teams_share_the_file_not_the_rows(emulator: EmulatorServer, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    default, marketing = open_team(emulator, path), open_team(emulator, path, "marketing")
    try:
        call(default, "find_contact", email=ADA_EMAIL)
        call(marketing, "find_contact", email=GRACE_EMAIL)
        assert [c["email"] for c in call(default, "list_contacts")["contacts"]] == [ADA_EMAIL]
        assert [c["email"] for c in call(marketing, "list_contacts")["contacts"]] == [GRACE_EMAIL]
        assert call(marketing, "get_contact", contact_id=ADA_CONTACT_ID)["code"] == (
            "loops.unknown_contact_id"
        )
    finally:
        default.close()
        marketing.close()


def test_unwritable_directory_fails_only_directory_actions(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    account = open_team(emulator, blocker / "contacts.sqlite3")
    try:
        assert call(account, "get_current_user") == {"success": True, "team_name": "default"}
        created = call(account, "create_contact", email="still@example.com")
        assert created["success"] is True
        assert "the contact directory could not record it" in created["directory_error"]
        assert "cannot create the folder" in created["directory_error"]
        listed = call(account, "list_contacts")
        assert (listed["success"], listed["code"]) == (False, "loops.directory_unavailable")
        assert ENV_VAR in listed["error"]
    finally:
        account.close()


def test_open_account_default_path_from_env(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env.sqlite3"))
    settings = AccountSettings(name="default", api_key="k", base_url=emulator.base_url)
    account = integration.open_client(settings)
    assert isinstance(account, LoopsAccount)
    assert account.directory_path == tmp_path / "from-env.sqlite3"
    assert account.account_id == account_identity("default", emulator.base_url, "k")
    account.close()


def test_directory_damaged_file_advice_is_not_permissions(tmp_path: Path) -> None:
    """A file that is not a SQLite database is damaged: moving it aside helps, permissions
    do not."""
    path = tmp_path / "contacts.sqlite3"
    path.write_bytes(b"this is not a database, " * 200)
    with pytest.raises(DirectoryError) as info:
        ContactDirectory(path)
    message = str(info.value)
    assert "file is not a database" in message
    assert "is not a usable SQLite database (damaged, or another kind of file)" in message
    assert "move it aside" in message and ENV_VAR in message
    assert "permissions" not in message


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        ("attempt to write a readonly database", "fix the permissions of"),
        ("unable to open database file", "fix the permissions of"),
        ("database is locked", "held the directory's write lock for more than 10 s"),
        ("database disk image is malformed", "is not a usable SQLite database"),
    ],
)
def test_directory_advice_by_cause(tmp_path: Path, error: str, advice: str) -> None:
    with ContactDirectory(tmp_path / "c.sqlite3") as directory:
        message = str(directory._error("cannot write to it", sqlite3.OperationalError(error)))
    assert error in message and advice in message


def test_damaged_directory_writes_say_so_in_the_result(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Loops did the write, so the call succeeds; the result says the directory could not
    record it (a log line alone once hid that ids would not resolve)."""
    path = tmp_path / "contacts.sqlite3"
    path.write_bytes(b"garbage" * 1000)
    account = open_team(emulator, path)
    try:
        created = call(account, "create_contact", email="damaged@example.com")
        assert created["success"] is True and created["id"]
        assert (
            "Loops did it, but the contact directory could not record it"
            in (created["directory_error"])
        )
        assert "not a usable SQLite database" in created["directory_error"]
        assert any(c["email"] == "damaged@example.com" for c in emulated_contacts(emulator))
        found = call(account, "find_contact", email="damaged@example.com")
        assert found["contact"]["id"] == created["id"] and found["directory_error"]
        deleted = call(account, "delete_contact", email="damaged@example.com")
        assert deleted["success"] is True
        assert "could not forget the contact" in deleted["directory_error"]
    finally:
        account.close()


def test_healthy_directory_results_carry_no_directory_error(loops: LoopsAccount) -> None:
    created = call(loops, "create_contact", email="healthy@example.com")
    assert created["success"] is True and "directory_error" not in created


# -- the queue: upsert queues a row; the file's queue is written once due, or before any use --


def contact(i: int) -> dict[str, object]:
    return {"id": f"c{i}", "email": f"p{i}@example.com", "mailingLists": {"news": True}}


def rows_in(path: Path) -> int:
    """The rows committed to the file, read past this process's directory objects."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def slow_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue that only its length, a read or a close writes: no timing in the test."""
    monkeypatch.setattr(directory_module, "_LINGER", 600.0)


def hold_write_lock(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    return db


def release(lock: sqlite3.Connection) -> None:
    lock.execute("ROLLBACK")
    lock.close()


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_same_object_reads_every_row_it_queued(tmp_path: Path) -> None:
    """Rows queued from several threads are all there for the next read, with no flush."""
    with ContactDirectory(tmp_path / "c.sqlite3") as directory:

        def fill(start: int) -> None:
            for i in range(start, start + 100):
                directory.upsert(A, contact(i))

        threads = [threading.Thread(target=fill, args=(n * 100,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rows, total = directory.page(A, limit=1000, offset=0)
        assert total == 400 and len(rows) == 400
        assert directory.get(A, "c399") == contact(399)
        assert directory.lookup(A, email="P7@example.com") == contact(7)


def test_a_later_change_to_the_callers_dict_is_not_recorded(tmp_path: Path) -> None:
    with ContactDirectory(tmp_path / "c.sqlite3") as directory:
        given = contact(1)
        directory.upsert(A, given)
        given["email"] = "changed@example.com"
        given["mailingLists"]["news"] = False  # type: ignore[index]
        assert directory.get(A, "c1") == contact(1)


def test_remove_comes_after_the_queued_upsert(tmp_path: Path) -> None:
    with ContactDirectory(tmp_path / "c.sqlite3") as directory:
        for i in range(50):
            directory.upsert(A, contact(i))
        assert directory.remove(A, contact_id="c49") == 1
        assert directory.page(A, limit=100, offset=0)[1] == 49


def test_another_directory_on_the_same_file_sees_the_queue_first(tmp_path: Path) -> None:
    """The webhook receiver opens its own ContactDirectory: it reads what the account's
    queued, and a newer webhook is not overwritten later by an older queued row."""
    path = tmp_path / "c.sqlite3"
    with ContactDirectory(path) as calls, ContactDirectory(path) as hooks:
        calls.upsert(A, {"id": "c1", "email": "a@example.com", "firstName": "Old"})
        assert hooks.get(A, "c1") == {"id": "c1", "email": "a@example.com", "firstName": "Old"}
        calls.upsert(A, {"id": "c2", "firstName": "Old"})
        assert hooks.apply_webhook(A, "wh-1", upsert={"id": "c2", "firstName": "New"})
        calls.flush()
        assert calls.get(A, "c2") == {"id": "c2", "firstName": "New"}


def test_flush_commits_for_other_readers_and_close_writes_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    directory = ContactDirectory(path)
    for i in range(20):
        directory.upsert(A, contact(i))
    directory.flush()
    assert rows_in(path) == 20
    for i in range(20, 30):
        directory.upsert(A, contact(i))
    directory.close()
    assert rows_in(path) == 30
    with pytest.raises(DirectoryError, match="has been closed"):
        directory.upsert(A, contact(1))


@pytest.mark.usefixtures("slow_queue")
def test_a_full_queue_is_written_by_the_upsert_that_fills_it(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with ContactDirectory(path) as directory:
        for i in range(BATCH - 1):
            directory.upsert(A, contact(i))
        assert rows_in(path) == 0  # still queued
        directory.upsert(A, contact(BATCH))
        assert rows_in(path) == BATCH


def test_a_quiet_process_writes_its_queue_without_another_call(tmp_path: Path) -> None:
    """Another process sees a row within about 100 ms even when nothing follows it."""
    path = tmp_path / "c.sqlite3"
    with ContactDirectory(path) as directory:
        for i in range(3):
            directory.upsert(A, contact(i))
        wait_for(lambda: rows_in(path) == 3, 2.0)


@pytest.mark.usefixtures("slow_queue")
def test_a_queue_that_cannot_be_written_names_its_contacts(tmp_path: Path) -> None:
    """The upsert that writes a due queue fails with every contact it drops, its own too;
    what comes after is written."""
    path = tmp_path / "c.sqlite3"
    with ContactDirectory(path, busy_timeout=0.05) as directory:
        lock = hold_write_lock(path)
        for i in range(BATCH - 1):
            directory.upsert(A, contact(i))
        with pytest.raises(DirectoryError) as info:
            directory.upsert(A, contact(BATCH))
        release(lock)
        message = str(info.value)
        assert message.startswith("could not record the contact(s) c0, c1, c2, c3, c4 and 59 ")
        assert "database is locked" in message and "held the directory's write lock" in message
        directory.upsert(A, contact(1000))
        directory.flush()
        assert [r["id"] for r in directory.page(A, limit=100, offset=0)[0]] == ["c1000"]


def test_a_quiet_write_that_fails_is_reported_once_by_the_next_upsert(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    with ContactDirectory(path, busy_timeout=0.05) as directory:
        lock = hold_write_lock(path)
        directory.upsert(A, contact(1))
        wait_for(lambda: bool(directory._queue.lost))
        release(lock)
        with pytest.raises(EarlierContactsLost) as info:
            directory.upsert(A, contact(2))
        assert "could not record the contact(s) c1: " in str(info.value)
        assert "database is locked" in str(info.value)
        assert "could not record contacts: could not record the contact(s) c1" in caplog.text
        directory.flush()  # reported once: nothing left to raise
        assert directory.get(A, "c1") is None
        assert directory.get(A, "c2") == contact(2)


def test_a_create_after_a_lost_record_says_so_in_its_result(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The user-level contract: Loops did both creates; the second result says the first
    contact was lost (so its id will not resolve) and that the second one was recorded."""
    path = tmp_path / "contacts.sqlite3"
    account = open_team(emulator, path)
    account._directory = ContactDirectory(path, busy_timeout=0.05)
    try:
        lock = hold_write_lock(path)
        try:
            first = call(account, "create_contact", email="first@example.com")
            wait_for(lambda: bool(account.directory._queue.lost))
        finally:
            release(lock)
        assert first["success"] is True and "directory_error" not in first
        second = call(account, "create_contact", email="second@example.com")
        assert second["success"] is True
        error = second["directory_error"]
        assert error.startswith(
            "Loops did it and the contact directory queued it, but it lost contacts of "
            f"earlier calls: could not record the contact(s) {first['id']}: "
        )
        third = call(account, "create_contact", email="third@example.com")
        assert "directory_error" not in third
        listed = [c["email"] for c in call(account, "list_contacts")["contacts"]]
        assert listed == ["second@example.com", "third@example.com"]
    finally:
        account.close()


def test_closing_from_two_threads_at_once_writes_every_row(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    directory = ContactDirectory(path)
    for i in range(40):
        directory.upsert(A, contact(i))
    threads = [threading.Thread(target=directory.close) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert rows_in(path) == 40


def test_a_dropped_directory_leaves_no_thread_and_loses_no_row(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    before = threading.active_count()
    for n in range(20):
        ContactDirectory(path).upsert(A, contact(n))
    wait_for(lambda: rows_in(path) == 20)
    wait_for(lambda: threading.active_count() <= before)


def test_the_interpreters_exit_writes_the_queue(tmp_path: Path) -> None:
    """A process that never closes its directory still leaves every queued row behind."""
    path = tmp_path / "c.sqlite3"
    code = (
        "from integrations.loops.directory import ContactDirectory\n"
        f"d = ContactDirectory({str(path)!r})\n"
        "for i in range(50):\n"
        "    d.upsert('acct', {'id': f'c{i}', 'email': f'p{i}@example.com'})\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    assert rows_in(path) == 50


_FORKED: list[ContactDirectory] = []


def _child_writes(close: bool) -> None:
    directory = _FORKED[0]
    for i in range(1000, 1010):
        directory.upsert(A, contact(i))
    if close:
        directory.close()
    # else: a multiprocessing child ends with os._exit, past atexit


@pytest.mark.usefixtures("slow_queue")
@pytest.mark.parametrize("close", [True, False], ids=["closed", "left-open"])
def test_a_forked_child_writes_its_own_rows_and_not_its_parents(
    tmp_path: Path, close: bool
) -> None:
    """The parent forks with rows queued: the child writes only its own rows (also when it
    returns without closing), the parent its own, each exactly once."""
    path = tmp_path / "c.sqlite3"
    directory = ContactDirectory(path)
    _FORKED[:] = [directory]
    try:
        for i in range(10):
            directory.upsert(A, contact(i))
        child = multiprocessing.get_context("fork").Process(target=_child_writes, args=(close,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert rows_in(path) == 10  # the child's only: the parent's are still queued
        directory.flush()
        rows, total = directory.page(A, limit=100, offset=0)
        assert total == 20
        assert sorted(r["id"] for r in rows) == sorted(
            [f"c{i}" for i in range(10)] + [f"c{i}" for i in range(1000, 1010)]
        )
    finally:
        _FORKED.clear()
        directory.close()


def _child_opens_and_writes(path: str) -> None:
    directory = ContactDirectory(path)
    for i in range(5):
        directory.upsert(A, contact(i))
    # returns without closing: a forkserver child ends with os._exit too


def test_a_forkserver_child_that_opens_its_own_directory_writes_its_rows(tmp_path: Path) -> None:
    """The child imports this module after its fork: its first upsert registers the exit
    hook all the same."""
    path = tmp_path / "c.sqlite3"
    ContactDirectory(path).close()
    child = multiprocessing.get_context("forkserver").Process(
        target=_child_opens_and_writes, args=(str(path),)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert rows_in(path) == 5


def test_close_while_another_thread_upserts(tmp_path: Path) -> None:
    """No crash, and nothing queued after the close: every upsert either reached the file
    or was refused."""
    path = tmp_path / "c.sqlite3"
    directory = ContactDirectory(path)
    accepted: list[int] = []
    refused: list[str] = []

    def fill() -> None:
        for i in range(100_000):
            try:
                directory.upsert(A, contact(i))
            except DirectoryError as exc:
                refused.append(str(exc))
                return
            accepted.append(i)

    thread = threading.Thread(target=fill)
    thread.start()
    wait_for(lambda: len(accepted) > 300)
    directory.close()
    thread.join(30)
    assert refused and "has been closed" in refused[0]
    assert rows_in(path) == len(accepted)


def test_a_read_does_not_fail_for_a_contact_another_call_lost(tmp_path: Path) -> None:
    """A quiet write that failed is reported by flush and upsert, not by a removal or a
    read, which still do their own work."""
    path = tmp_path / "c.sqlite3"
    with ContactDirectory(path, busy_timeout=0.05) as directory:
        directory.upsert(A, contact(1))
        directory.flush()
        lock = hold_write_lock(path)
        directory.upsert(A, contact(2))
        wait_for(lambda: bool(directory._queue.lost))
        release(lock)
        assert directory.get(A, "c1") == contact(1)
        assert directory.remove(A, contact_id="c1") == 1
        with pytest.raises(DirectoryError, match=r"contact\(s\) c2: "):
            directory.flush()


def test_a_contact_json_cannot_hold_fails_its_own_upsert(tmp_path: Path) -> None:
    with ContactDirectory(tmp_path / "c.sqlite3") as directory:
        directory.upsert(A, contact(1))
        with pytest.raises(TypeError):
            directory.upsert(A, {"id": "c2", "when": object()})
        directory.flush()
        assert directory.get(A, "c1") == contact(1)
