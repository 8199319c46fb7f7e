"""Attacks on the edges of the trusted code: calls into it with the Lua stack nearly full,
values the host pushes that do not fit in the state, and what one run leaves for the next.

Each case failed before its fix (docs/threat-model.md, "Trusted code at its edges"): the count
hook left off after a stack overflow inside the encoder, a host call's memory headroom kept
after one at its restore, the process aborted or deadlocked by an input or an
``app.json.decode`` reply larger than the heap, a compile-time memory error reported as a
syntax error (and its state reused), a run's garbage collected on the next run's clock, and a
run's string copy surviving into the next run's peak memory. Crashes and hangs are tried in a
child process, so that the suite itself survives them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from attacklib import one_state_bridge  # the deployment's fake keys

from luabridge import Bridge, sandbox
from luabridge.limits import Limits


@pytest.fixture(params=["inprocess", "process"], name="bridge")
def bridge_fixture(request: pytest.FixtureRequest, loops_emulator: Any) -> Iterator[Bridge]:
    bridge = one_state_bridge(request.param, loops_emulator.base_url, timeout=20)
    yield bridge
    bridge.close()


# Calls `TARGET` with the Lua stack nearly full, at every depth around where the stack ends
# (LuaJIT's 65,500 slots), with 0-8 padding arguments so that one of them lands with only a
# few slots left; every error is caught by the script's own pcall.
_SCAN = """
local padt = {}
for i = 1, 300 do padt[i] = i end
local D, PAD = 0, 0
local function bottom(...) local r = TARGET; return r end
local function rec(n)
  if n == 0 then local r = bottom(unpack(padt, 1, PAD)); return r end
  local r = rec(n - 1)
  return r
end
for d = 21770, 21830 do
  for pad = 0, 8 do D, PAD = d, pad; pcall(rec, D) end
end
"""


def _scan(target: str) -> str:
    return _SCAN.replace("TARGET", target)


@pytest.mark.parametrize(
    "target", ["app.json.encode({1, {2}, 'x'})", "app.json.encode(app.json.decode(TEXT))"]
)
def test_trusted_call_at_a_full_stack_keeps_the_count_hook(bridge: Bridge, target: str) -> None:
    """A stack overflow raised by the encoder's (or decoder's) set-up used to escape its pcall:
    the hook stayed off (and the collector stopped, the JIT on) for the rest of the run."""
    text = "local TEXT = '[' .. string.rep('1,', 599) .. '1]'\n"
    script = (
        text
        + _scan(target)
        + """
    local x = 0
    for i = 1, 100000000 do x = x + 1 end
    return "ran " .. x .. " iterations"
    """
    )
    result = bridge.run(script, limits={"instructions": 50_000_000, "timeout": 20})
    assert not result.ok and result.error.type == "InstructionLimitError", (
        result.value,
        result.error,
    )


def test_trusted_call_at_a_full_stack_keeps_the_collector(bridge: Bridge) -> None:
    script = (
        _scan("app.json.encode({1, {2}, 'x'})")
        + """
    for i = 1, 300000 do local t = {i, i} end
    return 1
    """
    )
    result = bridge.run(script, limits={"instructions": 100_000_000})
    assert result.ok, result.error
    # 300,000 garbage tables are 20 MB; a running collector keeps the heap near its start.
    assert result.usage["peak_memory"] < 8_000_000, result.usage


@pytest.mark.parametrize("target", ["app.help('nosuchtopic')", "app.json.decode('[1]')"])
def test_host_call_at_a_full_stack_keeps_the_memory_limit(bridge: Bridge, target: str) -> None:
    """A stack overflow at the restore after a host call used to leave its 16 MiB headroom on:
    a run held 40 MiB under a 32 MiB limit."""
    script = (
        _scan(target)
        + """
    local t = {}
    for i = 1, 40 do t[i] = string.rep("m", 1024 * 1024 - 64) .. i end
    return "held " .. #t .. " MiB"
    """
    )
    result = bridge.run(script, limits={"memory": 32 << 20, "instructions": 100_000_000})
    assert not result.ok and result.error.type == "MemoryError", (result.value, result.error)
    assert result.usage["peak_memory"] <= (32 << 20) + (1 << 20), result.usage


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


def test_running_out_of_memory_while_compiling_is_a_memory_error(bridge: Bridge) -> None:
    """The compiler's "not enough memory" used to be a SyntaxError, and its state reused."""
    source = "local t = {" + ",".join(str(i) for i in range(150000)) + "} return #t"
    result = bridge.run(source, limits={"memory": 2 << 20})
    assert not result.ok and result.error.type == "MemoryError", result.error
    assert "compiling" in result.error.message
    if bridge.isolation == "inprocess":
        before = sandbox._idle[-1] if sandbox._idle else None
        bridge.run(source, limits={"memory": 2 << 20})
        assert before is None or before not in sandbox._idle
    assert bridge.run("return 2").value == 2


def test_a_runs_garbage_is_not_collected_on_the_next_runs_clock(bridge: Bridge) -> None:
    """A run that left 256 MiB of small tables made the next run (0.2 s timeout) time out: the
    collections and the state's close (about a second) ran on its clock."""
    keep = """
    local t = {}
    for i = 1, (...).n do t[i] = {i} end
    string.keep = t
    return #t
    """
    first = bridge.run(keep, input={"n": 2_400_000}, limits={"memory": 256 << 20})
    assert first.ok, first.error
    if bridge.isolation == "inprocess":
        # Settled (here closed, its heap being large) before run() returned, not left for
        # the next run.
        assert not any(state.dirty or state.bloated for state in sandbox._idle)
    second = bridge.run('return "B"', limits={"timeout": 0.2})
    assert second.ok and second.value == "B", second.error


def test_the_string_copy_does_not_survive_into_the_next_run(bridge: Bridge) -> None:
    """What a run stored in its string copy (reachable through the string metatable while the
    state was settled) showed in the next run's peak memory: a covert channel."""
    signal = """
    local t = {}
    for i = 1, (...).kb do t[i] = string.rep("y", 1000) .. i end
    string.keep = t
    return (...).kb
    """
    probe = 'return "B"'
    peaks = {}
    for kb in (0, 100, 0, 100):
        same = bridge.run(signal, input={"kb": kb})
        assert same.ok, same.error
        after = bridge.run(probe)
        assert after.ok, after.error
        peaks.setdefault(kb, []).append(after.usage["peak_memory"])
    spread = max(peaks[100]) - min(peaks[0])
    assert spread < 20_000, peaks


class _HookRemover:
    """A host whose app.help removes the count hook and raises the memory limit behind the
    script's back, the way trusted code left half-way would; the backstops must undo both."""

    spec: dict[str, Any] = {}  # noqa: RUF012 - never mutated

    def __init__(self, lua: Any) -> None:
        self.lua = lua

    def help(self, topic: str | None) -> Any:
        self.lua.execute("debug.sethook()")
        return ("ok", "help", None)

    call = schema = accounts = help

    def explain(self, integration: str, account: str | None, name: str | None) -> str:
        return "unknown name"


def test_a_missing_hook_is_put_back_at_the_next_pcall() -> None:
    assert sandbox.execute("return 1", None, host=sandbox._UNUSED, limits=Limits()).ok
    lua = sandbox._idle[-1].session.lua
    source = """
    app.help()
    pcall(function() end)
    local x = 0
    for i = 1, 100000000 do x = x + 1 end
    return x
    """
    limits = Limits(instructions=5_000_000)
    outcome = sandbox.execute(source, None, host=_HookRemover(lua), limits=limits)
    assert not outcome.ok and outcome.error is not None, outcome.value
    assert outcome.error["type"] == "InstructionLimitError"


def test_the_hook_clock_takes_a_host_calls_headroom_away() -> None:
    state = sandbox._State()
    session = state.session
    session.limits = Limits(memory=32 << 20)
    session.lua.set_max_memory(48 << 20)
    session.raised = session.in_call = True
    session.tick()  # while Python builds a reply: the headroom stays
    assert session.lua.get_max_memory() == 48 << 20
    session.in_call = False
    session.tick()  # the restore after the reply did not come: the clock takes it away
    assert session.lua.get_max_memory() == 32 << 20
    state.close()
