"""Crash a host in the middle of 20 sends, resume the execution in a new process, and count
what the (emulated) Loops team received: 20 events, none twice.

Run it from the repository root: python docs/examples/crash_and_resume.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from integrations.loops.emulator import DEMO_KEYS, EmulatorServer

SCRIPT = """
for i = 1, 20 do
  local r = app.integrations.loops.send_event({
    email = "ada@example.com", event_name = "step_" .. i,
  })
  assert(r.success, r.error)
end
return "all sent"
"""


def main() -> None:
    emulator = EmulatorServer().start()
    work = Path(tempfile.mkdtemp(prefix="luabridge-resume-"))
    (work / "job.lua").write_text(SCRIPT, encoding="utf-8")
    env = {
        **os.environ,
        "LOOPS_API_KEY": DEMO_KEYS["default"],
        "LOOPS_BASE_URL": emulator.base_url,
        "LUABRIDGE_LEDGER": str(work / "ledger.sqlite3"),
        "LUABRIDGE_LOOPS_DIRECTORY": str(work / "contacts.sqlite3"),
    }
    luabridge = [sys.executable, "-m", "luabridge"]
    run = [*luabridge, "run", str(work / "job.lua"), "--allow", "write"]
    run += ["--execution-id", "order-1001"]

    def events() -> int:
        return len(emulator.team("default").snapshot("events"))

    try:
        first = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while events() < 8 and first.poll() is None:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)  # the host dies mid-run, as a crash would
        first.wait()
        print(f"killed the first run after {events()} of 20 events")

        subprocess.run(run, env=env, check=True)  # the same execution id: a resume
        print(f"events stored: {events()} (expected 20)")
        subprocess.run([*luabridge, "runs"], env=env, check=True)
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
