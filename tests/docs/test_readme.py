"""The README's two set-up commands: the main job really runs, and CI runs the test command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _setup_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [b.strip() for b in blocks if "pip install" in b]


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = _setup_commands()
    assert len(commands) == 2, commands
    assert all(c.startswith("python -m pip install -e ") for c in commands)
    assert "luabridge run" in commands[0] and "--emulator" in commands[0]


def test_readme_test_command_is_what_ci_runs() -> None:
    """`.ci/run` calls the README's test command verbatim, so the two cannot drift apart."""
    test_command = _setup_commands()[1]
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_main_job_runs() -> None:
    """The main job (after its install step) succeeds against the emulator, from a real process."""
    main_job = _setup_commands()[0].split("&&", 1)[1].strip()
    args = shlex.split(main_job)
    assert args[0] == "luabridge"
    done = subprocess.run(
        [sys.executable, "-m", "luabridge", *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "onboarded" in done.stdout and "2 writes sent" in done.stdout
