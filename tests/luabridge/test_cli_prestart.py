"""The console script starts the worker of `run` and `call` before it imports click."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from luabridge.cli import prestart

#: Runs main() with the given arguments and prints, on its last line of standard error, what the
#: pools made during it looked like: whether click was imported when each was made, whether it
#: keeps a reserve, and whether it was closed by the time main() returned.
PROBE = textwrap.dedent(
    """
    import json, sys
    from luabridge.pool import WorkerPool

    made = []
    real_init = WorkerPool.__init__

    def recording_init(self, *args, **kwargs):
        made.append((self, "click" in sys.modules))
        real_init(self, *args, **kwargs)

    WorkerPool.__init__ = recording_init
    from luabridge.cli import main, prestart

    code = 0
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    pools = [
        {"click": click, "reserve": pool._reserves, "closed": pool._closed}
        for pool, click in made
    ]
    print(json.dumps({"code": code, "pools": pools, "left": prestart._pool is not None}),
          file=sys.stderr)
    """
)


def probe(tmp_path: Path, *args: str, stdin: str = "return 1") -> tuple[str, dict]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LUABRIDGE_LEDGER": "off",
        "LUABRIDGE_LOOPS_DIRECTORY": str(tmp_path / "contacts.sqlite3"),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("args", "isolated"),
    [
        (["run", "x.lua"], True),
        (["run", "-", "--isolation", "process"], True),
        (["run", "-", "--isolation=process"], True),
        (["call", "loops", "--action", "get_current_user"], True),
        (["run", "x.lua", "--isolation", "inprocess"], False),
        (["run", "x.lua", "--isolation=inprocess"], False),
        (["run", "--help"], False),
        (["run", "x.lua", "-h"], False),
        (["--version"], False),
        (["docs"], False),
        (["mcp"], False),
        ([], False),
    ],
)
def test_which_arguments_start_a_worker_early(args: list[str], isolated: bool) -> None:
    assert prestart._isolated_run(args) is isolated


def test_run_starts_its_worker_before_click_and_uses_it(tmp_path: Path) -> None:
    out, seen = probe(tmp_path, "run", "-", "--json")
    assert seen["code"] == 0 and json.loads(out)["result"] == 1
    # One pool: made before click was imported, without a reserve, closed with the bridge.
    assert seen["pools"] == [{"click": False, "reserve": False, "closed": True}]
    assert seen["left"] is False


def test_a_usage_error_closes_the_worker_started_early(tmp_path: Path) -> None:
    _, seen = probe(tmp_path, "run", "missing.lua")
    assert seen["code"] == 2
    assert seen["pools"] == [{"click": False, "reserve": False, "closed": True}]
    assert seen["left"] is False


def test_inprocess_and_help_start_no_worker(tmp_path: Path) -> None:
    out, seen = probe(tmp_path, "run", "-", "--isolation", "inprocess", "--json")
    assert seen["code"] == 0 and json.loads(out)["result"] == 1
    assert seen["pools"] == []
    _, seen = probe(tmp_path, "run", "--help")
    assert seen["code"] == 0 and seen["pools"] == []


def test_a_misread_isolation_still_runs_where_click_says(tmp_path: Path) -> None:
    """The look-ahead reads `--isolation` inside another option's value as the option; the
    early pool then goes unused and is closed, and the run is in-process as click parsed it."""
    _, seen = probe(tmp_path, "run", "-", "--input", "--isolation=process", "--json")
    assert seen["code"] == 2  # the input is not JSON: a usage error, and no worker left
    assert seen["pools"] == [{"click": False, "reserve": False, "closed": True}]
    _, seen = probe(
        tmp_path, "run", "-", "--isolation", "inprocess", "--execution-id", "--isolation=process"
    )
    assert seen["code"] == 0
    assert seen["pools"] == [{"click": False, "reserve": False, "closed": True}]
    assert seen["left"] is False
