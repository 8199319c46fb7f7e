"""Attacks on the edges of the trusted code: values the host pushes that do not fit in the
state.

Each case failed before its fix (docs/threat-model.md, "Trusted code at its edges"): the process
aborted or deadlocked by an input or an ``app.json.decode`` reply larger than the heap. Crashes
and hangs are tried in a child process, so that the suite itself survives them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from attacklib import KEYS  # the deployment's fake keys

from luabridge import Bridge


@pytest.fixture(params=["inprocess", "process"], name="bridge")
def bridge_fixture(request: pytest.FixtureRequest, loops_emulator: Any) -> Iterator[Bridge]:
    environ = {**KEYS, "LOOPS_BASE_URL": loops_emulator.base_url}
    bridge = Bridge.from_config(
        environ=environ, isolation=request.param, workers=1, ledger=None, limits={"timeout": 20}
    )
    assert bridge.run("return 1").ok
    yield bridge
    bridge.close()


# A child process with a bridge, so that an abort or a deadlock fails the test, not the suite.
_CHILD = """
import json, sys
from luabridge import Bridge
case = json.loads(sys.argv[1])
bridge = Bridge(isolation=case["isolation"], integrations=[], ledger=None, workers=1)
inputs = {
    "distinct": ["x" * 100 + str(i) for i in range(30000)],
    "one_string": ["y" * (3 << 20)],
}
r = bridge.run(case["source"], input=inputs.get(case["input"]), limits=case["limits"])
after = bridge.run("return 'alive'")
print(json.dumps({"ok": r.ok, "type": r.error and r.error.type, "after": after.value}))
bridge.close()
"""


def _in_child(isolation: str, source: str, input: Any, limits: dict[str, Any]) -> dict[str, Any]:
    case = {"isolation": isolation, "source": source, "input": input, "limits": limits}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(case)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung (a deadlock in the bridge)")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
@pytest.mark.parametrize("input", ["distinct", "one_string"])
def test_an_input_larger_than_the_heap_is_a_memory_error(isolation: str, input: str) -> None:
    """An input that does not fit in limits.memory used to abort the process ("PANIC:
    unprotected error in call to Lua API"): lupa pushed it outside any protected call."""
    got = _in_child(isolation, "return #(...)", input, {"memory": 1 << 20})
    assert got == {"ok": False, "type": "MemoryError", "after": "alive"}


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
@pytest.mark.parametrize(("item", "n", "mib"), [("[1]", 1_000_000, 12), ("9e15", 1_000_000, 24)])
def test_a_decode_reply_larger_than_the_heap_is_a_memory_error(
    isolation: str, item: str, n: int, mib: int
) -> None:
    """``app.json.decode`` of a text whose value takes many times its size in Lua used to run
    out of memory inside lupa while Python built the reply, and the thread deadlocked on the
    GIL (in a worker: "wedged" until killed)."""
    source = """
    local s = "[" .. string.rep(ITEM, N, ",") .. "]"
    local v = app.json.decode(s)
    return #v
    """.replace("ITEM", json.dumps(item)).replace("N", str(n))
    got = _in_child(isolation, source, None, {"memory": mib << 20, "timeout": 20})
    assert got == {"ok": False, "type": "MemoryError", "after": "alive"}
