"""Integration packs are plugins: found through their entry point, isolated when broken.

The sample pack in tests/packs/luabridge-notes is installed with pip from its own directory
(the ``notes_pack`` fixture) and must then be listed, documented, typed, callable from Lua and
offered its own commands, with nothing copied into this repository. Its second entry point
fails to import, and everything else must keep working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from luabridge import Bridge, ConfigError
from luabridge.config import load_settings
from luabridge.registry import discover

BROKEN_ERROR = "ImportError: this pack fails to import on purpose"


def cli(pack: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``luabridge ARGS`` in a fresh process that can see the sample pack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "NOTES_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(pack), *sys.path])
    return subprocess.run(
        [sys.executable, "-m", "luabridge", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_actions_lists_the_pack_and_reports_the_broken_one(notes_pack: Path) -> None:
    proc = cli(notes_pack, "actions")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"notes.add_note", "notes.list_notes", "notes.delete_note"} <= set(names)
    assert "loops.send_event" in names
    assert f"broken: BROKEN (not loaded): {BROKEN_ERROR}" in proc.stderr


def test_docs_schema_and_stubs_of_the_pack(notes_pack: Path) -> None:
    markdown = cli(notes_pack, "docs", "notes")
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout.startswith("# Notes — Lua API Reference")
    assert "## add_note" in markdown.stdout and "## Where notes live" in markdown.stdout
    one = cli(notes_pack, "docs", "notes.delete_note")
    assert "destructive" in one.stdout and "## add_note" not in one.stdout
    schema = json.loads(cli(notes_pack, "schema", "notes", "--action", "add_note").stdout)
    assert schema["input"]["required"] == ["text"]
    stubs = cli(notes_pack, "docs", "notes", "--format", "luals").stdout
    assert "notes" in stubs and "add_note" in stubs


def test_lua_calls_the_pack_next_to_loops(notes_pack: Path) -> None:
    script = """
    local notes = app.integrations.notes
    local note = notes.add_note({text = "call Ada", tags = {"todo"}})
    local found = notes.list_notes({tag = "todo"})
    local lists = app.integrations.loops.list_mailing_lists()
    return {id = note.id, found = #found.notes, lists = lists.success, help = app.help("notes")}
    """
    proc = cli(notes_pack, "run", "-", "--allow", "write", "--emulator", "--json", stdin=script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["ok"], envelope["error"]
    result = envelope["result"]
    assert (result["id"], result["found"], result["lists"]) == ("note_1", 1, True)
    assert result["help"].startswith("# Notes — Lua API Reference")


def test_pack_commands_are_offered_under_its_name(notes_pack: Path) -> None:
    proc = cli(notes_pack, "notes", "about")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "notes: a keyless, in-memory sample pack for luabridge"
    assert "notes" in cli(notes_pack, "--help").stdout


def test_a_keyless_pack_never_asks_for_a_key(notes_pack: Path) -> None:
    proc = cli(notes_pack, "accounts", "--config", "/dev/null")
    assert proc.returncode == 0, proc.stderr
    assert "NOTES_API_KEY" not in proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("notes"))
    assert "not needed" in row
    call = cli(notes_pack, "call", "notes", "--action", "list_notes", "--config", "/dev/null")
    assert call.returncode == 0, call.stderr
    assert json.loads(call.stdout)["data"] == {"success": True, "notes": []}


def test_discovery_keeps_the_broken_pack_aside(notes_discovered: Path) -> None:
    packs, broken = discover()
    assert [p.name for p in packs] == ["loops", "notes"]
    assert [(b.name, b.error) for b in broken] == [("broken", BROKEN_ERROR)]
    with Bridge.from_config("/dev/null", environ={}, isolation="inprocess") as bridge:
        assert [b.name for b in bridge.broken] == ["broken"]
        result = bridge.run(
            "local n = app.integrations.notes\n"
            'n.add_note({text = "a"})\n'
            "return #n.list_notes().notes",
            allow={"write"},
        )
        assert result.ok, result.error
        assert result.value == 1
        with pytest.raises(ConfigError, match="installed but broken: " + BROKEN_ERROR):
            bridge.docs("broken")


def test_explicit_integrations_still_win(notes_discovered: Path) -> None:
    """``Bridge(integrations=[...])`` exposes exactly those, whatever is installed."""
    packs = {p.name: p for p in discover()[0]}
    with Bridge(integrations=[packs["notes"]], isolation="inprocess") as bridge:
        assert list(bridge.integrations) == ["notes"]


def test_a_target_that_is_not_an_integration_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry point naming something else, or a name clash, is broken, never loaded."""
    dist = tmp_path / "odd_pack-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: odd-pack\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[luabridge.integrations]\n"
        "odd = odd_pack:integration\n"
        "renamed = odd_pack:other\n"
        "loops = odd_pack:loops\n"
    )
    (tmp_path / "odd_pack.py").write_text(
        "from integrations.loops import integration as loops\n"
        "import dataclasses\n"
        "integration = 42\n"
        "other = dataclasses.replace(loops, name='other')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        packs, broken = discover(refresh=True)
        errors: dict[str, Any] = {b.name: b.error for b in broken}
        assert [p.name for p in packs] == ["loops"]
        assert errors["odd"] == "TypeError: odd_pack:integration is a int, not an Integration"
        assert "named 'renamed' but its Integration is named 'other'" in errors["renamed"]
        assert errors["loops"] == "ValueError: another installed pack is already named 'loops'"
    finally:
        monkeypatch.undo()
        sys.modules.pop("odd_pack", None)
        discover(refresh=True)


def test_keyless_pack_gets_a_default_account(notes_discovered: Path) -> None:
    settings = load_settings("/dev/null", environ={})
    assert list(settings.accounts["notes"]) == ["default"]
    assert settings.default_accounts["notes"] == "default"
    assert settings.accounts["loops"] == {}
