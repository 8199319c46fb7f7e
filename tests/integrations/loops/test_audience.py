"""``luabridge loops import-contacts``: an audience CSV export into the contact directory.

The command runs in-process with click's CliRunner, with the account configured through the
environment; the directory is then read back with ``list_contacts`` through the Lua surface.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from integrations.loops.audience import read_audience
from integrations.loops.emulator import ADA_CONTACT_ID, DEMO_KEYS, EmulatorServer
from luabridge import Bridge
from luabridge.cli import cli

EXPORT = """\
Contact ID,Email,First Name,Last Name,User Group,Source,Subscribed,plan,seats,Favourite Colour
ccontactada00000000000001,ada@example.com,Ada,Lovelace,founders,API,true,pro,5,blue
,grace@example.com,Grace,Hopper,,Form,yes,team,,
,,NoEmail,,,,,,,
,bob(at)example.com,Bob,,,,,,,
,ada@example.com,Dup,,,,,,,
,carl@example.com,Carl,,,,maybe,,,
"""


@pytest.fixture
def env(tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("LOOPS_API_KEY", "LOOPS_BASE_URL", "LUABRIDGE_LOOPS_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOOPS_API_KEY", DEMO_KEYS["default"])
    monkeypatch.setenv("LOOPS_BASE_URL", emulator.base_url)
    monkeypatch.setenv("LUABRIDGE_LOOPS_DIRECTORY", str(tmp_path / "contacts.sqlite3"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "audience.csv").write_text(EXPORT, encoding="utf-8")
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["loops", "import-contacts", *args], catch_exceptions=False)


def listing() -> dict[str, Any]:
    with Bridge.from_config(isolation="inprocess") as bridge:
        result = bridge.run("return app.integrations.loops.list_contacts{}")
    assert result.ok, result.error
    assert isinstance(result.value, dict)
    return result.value


def test_import_contacts_reports_added_and_rejected_with_lines(env: Path) -> None:
    result = invoke("audience.csv")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "Imported audience.csv into Loops account 'default': 2 added, 0 updated, "
        "0 unchanged, 4 rejected"
    )
    assert lines[1:5] == [
        "  line 4: no email (the email cell is empty)",
        "  line 5: 'bob(at)example.com' is not an email address",
        "  line 6: ada@example.com is already on line 2",
        "  line 7: subscribed must be true or false (got 'maybe')",
    ]
    assert "Columns not imported: Favourite Colour" in lines[5]
    value = listing()
    assert value["source"] == "import" and value["total"] == 2
    ada = next(c for c in value["contacts"] if c["email"] == "ada@example.com")
    assert ada["id"] == ADA_CONTACT_ID
    assert (ada["first_name"], ada["user_group"], ada["properties"]) == (
        "Ada",
        "founders",
        {"plan": "pro", "seats": 5},
    )


def test_import_contacts_twice_changes_nothing(env: Path) -> None:
    invoke("audience.csv")
    before = listing()["contacts"]
    result = invoke("audience.csv", "--json")
    report = json.loads(result.output)
    assert (report["added"], report["updated"], report["unchanged"]) == (0, 0, 2)
    assert listing()["contacts"] == before


def test_import_contacts_updates_changed_rows(env: Path) -> None:
    invoke("audience.csv")
    (env / "changed.csv").write_text(
        "Email,First Name\nada@example.com,Augusta\nnew@example.com,New\n", encoding="utf-8"
    )
    result = invoke("changed.csv", "--json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert (report["added"], report["updated"], report["rejected"]) == (1, 1, [])
    names = {c["email"]: c["first_name"] for c in listing()["contacts"]}
    assert names["ada@example.com"] == "Augusta" and names["new@example.com"] == "New"


def test_import_contacts_unknown_account_is_a_usage_error(env: Path) -> None:
    result = invoke("audience.csv", "--account", "nope")
    assert result.exit_code == 2
    assert "unknown Loops account 'nope'; configured: default" in result.output


def test_import_contacts_without_email_column_is_a_usage_error(env: Path) -> None:
    (env / "bad.csv").write_text("Name\nAda\n", encoding="utf-8")
    result = invoke("bad.csv")
    assert result.exit_code == 2 and "no email column" in result.output


def test_import_contacts_not_utf8_says_how_to_save_it(env: Path) -> None:
    (env / "latin.csv").write_bytes("Email,Name\na@b.co,Ada\nz@b.co,Jos\xe9\n".encode("latin-1"))
    result = invoke("latin.csv")
    assert result.exit_code == 2
    assert "line 3 is not UTF-8 (byte 0xe9)" in result.output
    assert "save the file as UTF-8" in result.output and "codec" not in result.output


def test_import_contacts_created_at_is_left_out_not_called_unknown(env: Path) -> None:
    (env / "export.csv").write_text(
        "Email,First Name,Created At\nc@b.co,Cy,2026-01-02T03:04:05Z\n", encoding="utf-8"
    )
    result = invoke("export.csv")
    assert result.exit_code == 0, result.output
    assert "Columns Loops sets itself, left out: Created At" in result.output
    assert "Columns not imported" not in result.output
    parsed = read_audience("Email,createdAt\nc@b.co,2026-01-02\n")
    assert parsed.rows == [(2, {"email": "c@b.co"})] and parsed.skipped == ["createdAt"]


def test_read_audience_maps_keys_and_labels() -> None:
    parsed = read_audience("email,firstName,User Id,subscribed,vip\nA@b.co,A,u1,no,true\n")
    assert parsed.rows == [
        (2, {"email": "A@b.co", "firstName": "A", "userId": "u1", "subscribed": False, "vip": True})
    ]
    assert parsed.unmapped == [] and parsed.rejected == []


def test_read_audience_empty_file() -> None:
    with pytest.raises(ValueError, match="empty"):
        read_audience("")


def test_imported_row_without_id_resolves_to_the_real_contact(env: Path) -> None:
    """A row exported without an id gets a local id that get_contact still resolves (through
    its email); the real contact then replaces the local row."""
    invoke("audience.csv")
    grace = next(c for c in listing()["contacts"] if c["email"] == "grace@example.com")
    assert grace["id"].startswith("local_")
    src = f'return app.integrations.loops.get_contact{{contact_id = "{grace["id"]}"}}'
    with Bridge.from_config(isolation="inprocess") as bridge:
        result = bridge.run(src)
    assert result.ok, result.error
    assert result.value["success"] is True
    real_id = result.value["contact"]["id"]
    assert not real_id.startswith("local_")
    ids = {c["email"]: c["id"] for c in listing()["contacts"]}
    assert ids["grace@example.com"] == real_id
