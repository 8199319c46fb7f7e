"""The README's two set-up commands: the main job really runs, and CI runs the test command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

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


def _fleet_commands() -> list[str]:
    text = README.read_text(encoding="utf-8").split("### On a fleet", 1)[1]
    block = re.search(r"```console\n(.*?)```", text, flags=re.DOTALL)
    assert block is not None, "the README's fleet section has no console block"
    return [line[2:].strip() for line in block.group(1).splitlines() if line.startswith("$ ")]


def test_readme_fleet_commands_run(
    redis_url: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The README's worker and submit commands work as written, with its variables pointed at
    this run's redis-server and emulator."""
    import os
    import signal

    from integrations.loops.emulator.seed import DEMO_KEYS

    commands = _fleet_commands()
    assert commands[0].startswith("redis-server ") and "luabridge emulator" in commands[1]
    exported = " ".join(c for c in commands if c.startswith("export "))
    for name in ("LUABRIDGE_REDIS_URL", "LOOPS_API_KEY", "LOOPS_BASE_URL"):
        assert f"{name}=" in exported
    assert f"LOOPS_API_KEY={DEMO_KEYS['default']}" in exported
    worker = next(c for c in commands if c.startswith("luabridge worker")).rstrip("& ")
    submit = next(c for c in commands if c.startswith("luabridge submit"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "LUABRIDGE_R"))}
    env.update(
        LUABRIDGE_REDIS_URL=redis_url,
        LOOPS_API_KEY=DEMO_KEYS["default"],
        LOOPS_BASE_URL=emulator.base_url,
        LUABRIDGE_LOOPS_DIRECTORY=str(tmp_path / "contacts.sqlite3"),
    )
    log = (tmp_path / "worker.log").open("wb")
    node = subprocess.Popen(
        [sys.executable, "-m", *shlex.split(worker)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", *shlex.split(submit)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        log.close()
    assert done.returncode == 0, done.stderr + (tmp_path / "worker.log").read_text()
    assert "onboarded nia.okafor@example.com" in done.stdout
