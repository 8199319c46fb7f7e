"""Benchmark rows ``mcp`` and ``mcp-b``: ``execute_lua("return 1")`` through ``luabridge mcp``.

The subject is one tool call's round trip through a real ``luabridge mcp`` process over stdio
(the official SDK's client, the server's worker process already started). ``mcp`` compares it
with what an agent without the server does: start one ``luabridge run`` process per script
(target: at least 20 times faster, ratio <= 0.05). ``mcp-b`` compares it with ``bridge.run`` in
this process, with the same isolation (a worker process), to show what the protocol costs in
absolute terms.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from anyio.from_thread import start_blocking_portal
from harness import Row, paired, peak_rss_kib
from mcp import Client, StdioServerParameters

from luabridge import Bridge

__all__ = ["agent_rows"]


def _children(parent: int, pattern: bytes) -> list[int]:
    """Pids of ``parent``'s children whose command line contains ``pattern``."""
    pids = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if pattern in cmdline:
                pids.append(int(pid))
    return pids


def agent_rows(tmp: Path, scale: float, note: Callable[[str], None]) -> list[Row]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPS_")}
    env["LUABRIDGE_LEDGER"] = str(tmp / "bench-ledger.sqlite3")
    exe = shutil.which("luabridge", path=str(Path(sys.executable).parent)) or "luabridge"
    script = tmp / "one.lua"
    script.write_text("return 1\n")
    calls = max(10, int(200 * scale))
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "luabridge", "mcp"], env=env, cwd=str(tmp)
    )
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Client(params)) as client,
    ):

        def through_server(n: int) -> Callable[[], None]:
            def go() -> None:
                for _ in range(n):
                    result = portal.call(client.call_tool, "execute_lua", {"code": "return 1"})
                    assert result.structured_content is not None
                    assert result.structured_content["result"] == 1

            return go

        def cli_process() -> None:
            subprocess.run(
                [exe, "run", str(script)], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL
            )

        # One CLI process against one tool call: the unit an agent pays for per script.
        vs_cli = paired(through_server(1), cli_process, warmup=2, repeats=9)
        with Bridge.from_config("/dev/null", environ=env, prestart=True, workers=1) as bridge:

            def in_process(n: int) -> Callable[[], None]:
                def go() -> None:
                    for _ in range(n):
                        assert bridge.run("return 1").value == 1

                return go

            vs_bridge = paired(through_server(calls), in_process(calls), warmup=1, repeats=7)
        server = _children(os.getpid(), b"luabridge mcp")
        for pid in server:
            workers = _children(pid, b"luabridge")
            sizes = ", ".join(f"{peak_rss_kib(w) / 1024:.1f}" for w in workers) or "none"
            note(
                f"memory: peak RSS of the `luabridge mcp` server process "
                f"{peak_rss_kib(pid) / 1024:.1f} MiB after the tool calls above (warm pool); "
                f"its worker processes: {sizes} MiB"
            )
    per_call = sorted(vs_bridge.subject)[len(vs_bridge.subject) // 2] / calls * 1000
    per_run = sorted(vs_bridge.baseline)[len(vs_bridge.baseline) // 2] / calls * 1000
    note(
        f"mcp: one execute_lua('return 1') through the stdio server takes {per_call:.2f} ms; "
        f"bridge.run('return 1') in this process (a worker process, like the server's) "
        f"{per_run:.2f} ms; the protocol and the extra process add {per_call - per_run:.2f} ms"
    )
    return [
        Row(
            "mcp",
            "`execute_lua('return 1')` over stdio vs one `luabridge run` process",
            vs_cli,
            0.05,
            baseline_label="luabridge run",
        ),
        Row(
            "mcp-b",
            f"{calls} x `execute_lua('return 1')` over stdio vs `bridge.run` in-process",
            vs_bridge,
            20.0,
            baseline_label="bridge.run",
        ),
    ]
