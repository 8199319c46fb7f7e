"""Benchmarks against a peer sandbox: pydantic-monty, a pool of subprocess workers too.

Row 8 times a trivial run through luabridge's worker pool against a trivial run through a
``pydantic_monty.Monty`` pool (``checkout()`` then ``feed_run``); row 9 is a guard row on a
million-iteration loop, where LuaJIT should stay far ahead. Both rows need the ``bench`` extra
(``pip install -e ".[bench]"``); without it they are left out with a note.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from harness import Row, paired

from luabridge import Bridge

LUA_LOOP = "local x = 0 for i = 0, 999999 do x = x + i end return x"
PY_LOOP = "x = 0\nfor i in range(1000000):\n    x += i\nx"


def peer_rows(scale: float, note: Callable[[str], None]) -> list[Row]:
    try:
        import pydantic_monty
    except ImportError:
        note("8, 9: left out (pydantic-monty is not installed; pip install -e '.[bench]')")
        return []
    n = max(30, int(300 * scale))
    loops = max(3, int(10 * scale))
    rows: list[Row] = []
    # The run ledger off, as in rows 1 and 5: the row compares the sandboxes and their pools.
    pooled = Bridge.from_config(environ={}, isolation="process", workers=1, ledger=None)
    with pydantic_monty.Monty(min_processes=1, max_processes=1) as monty:
        for _ in range(4):  # both pools up and warm
            assert pooled.run("return 1+1").value == 2
            with monty.checkout() as session:
                assert session.feed_run("1 + 1") == 2

        def ours() -> None:
            for _ in range(n):
                pooled.run("return 1+1")

        def theirs() -> None:
            for _ in range(n):
                with monty.checkout() as session:
                    session.feed_run("1 + 1")

        timing = paired(ours, theirs, warmup=1, repeats=7)
        note(
            f"8: a trivial pooled run takes {statistics.median(timing.subject) / n * 1e6:.0f} us "
            f"in luabridge and {statistics.median(timing.baseline) / n * 1e6:.0f} us in monty"
        )
        rows.append(
            Row(
                "8",
                f"{n} trivial runs, luabridge pool vs pydantic-monty pool",
                timing,
                1.0,
                baseline_label="monty",
            )
        )

        def lua_loop() -> None:
            for _ in range(loops):
                result = pooled.run(LUA_LOOP, limits={"timeout": 30})
                assert result.ok, result.error

        def py_loop() -> None:
            for _ in range(loops):
                with monty.checkout() as session:
                    session.feed_run(PY_LOOP)

        timing = paired(lua_loop, py_loop, warmup=1, repeats=3)
        ours_ms = statistics.median(timing.subject) / loops * 1e3
        theirs_ms = statistics.median(timing.baseline) / loops * 1e3
        note(f"9: a 1e6-iteration loop: {ours_ms:.1f} ms in luabridge, {theirs_ms:.1f} in monty")
        rows.append(
            Row(
                "9",
                f"1e6-iteration loop x{loops}, luabridge vs pydantic-monty",
                timing,
                0.2,
                baseline_label="monty",
            )
        )
    pooled.close()
    return rows
