"""``--emulator`` runs of the Loops pack: the contact directory starts from the team's audience.

Run as a user would, with the real ``luabridge`` command in a subprocess (worker processes
included), in a fresh working folder with no accounts and no directory of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from integrations.loops.emulator import EmulatorState

PAGING = """
local loops = app.integrations.loops
local count, offset, pages, first = 0, 0, 0, nil
repeat
  local page = loops.list_contacts{limit = 2, offset = offset}
  first = first or page
  pages = pages + 1
  count = count + #page.contacts
  offset = page.next_offset
until not page.has_more
return {count = count, pages = pages, total = first.total, source = first.source,
  synced = type(first.synced_at)}
"""


def seeded_contacts() -> int:
    return len(EmulatorState({"probe": ["probe_key"]}).team("probe").find_all())


def test_emulator_run_lists_the_seeded_audience(tmp_path: Path) -> None:
    script = tmp_path / "count.lua"
    script.write_text(PAGING, encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOOPS_") and k != "LUABRIDGE_LOOPS_DIRECTORY"
    }
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    proc = subprocess.run(
        [sys.executable, "-m", "luabridge", "run", "--emulator", "--json", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["result"]
    expected = seeded_contacts()
    assert expected >= 3
    assert result == {
        "count": expected,
        "pages": (expected + 1) // 2,
        "total": expected,
        "source": "emulator",
        "synced": "string",
    }
    # The user's own directory was never touched.
    assert not (tmp_path / "xdg").exists() or not any((tmp_path / "xdg").rglob("*.sqlite3"))
