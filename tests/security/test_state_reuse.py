"""Attacks on state reuse: one Lua state serves run after run, so each case tries to leave
something in it for the next run, through every object the runs of a state share.

A state keeps its trusted part (the bootstrap, the encoder, ``app``'s code) from run to run;
each run gets a fresh environment built by ``prepare`` (docs/threat-model.md, "One state, many
runs"). Every case runs a poisoning script and then a probe on the **same** state, checked by
identity in-process and by the worker's pid (a pool of one worker) under process isolation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from attacklib import one_state_bridge  # the deployment's fake keys

from luabridge import Bridge, sandbox
from luabridge.limits import Limits


@pytest.fixture(params=["inprocess", "process"], name="bridge")
def bridge_fixture(request: pytest.FixtureRequest, loops_emulator: Any) -> Iterator[Bridge]:
    bridge = one_state_bridge(request.param, loops_emulator.base_url, timeout=5)
    yield bridge
    bridge.close()


class SameState:
    """Checks that two runs were served by one Lua state (in-process: by identity; in a worker:
    one worker, which keeps its state, with the same pid)."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.before = self._which()

    def _which(self) -> Any:
        if self.bridge.isolation == "process":
            return tuple(self.bridge._worker_pool().pids())
        assert len(sandbox._idle) >= 1
        return sandbox._idle[-1]

    def check(self) -> None:
        assert self._which() is self.before or self._which() == self.before


def pair(bridge: Bridge, poison: str, probe: str, **probe_options: Any) -> tuple[Any, Any]:
    """Run ``poison`` and then ``probe`` on one state; both results."""
    same = SameState(bridge)
    first = bridge.run(poison, allow=probe_options.pop("poison_allow", None))
    second = bridge.run(probe, **probe_options)
    same.check()
    return first, second


def test_globals_and_library_copies_do_not_carry_over(bridge: Bridge) -> None:
    poison = """
    leftover = "secret"
    _G.other = "secret"
    rawset(_G, "raw", "secret")
    string.upper = function() return "PWNED" end
    string.secret = "secret"
    table.concat = function() return "PWNED" end
    table.secret = "secret"
    math.floor = function() return -1 end
    math.pi = 3
    os.time = function() return -1 end
    os.secret = "secret"
    coroutine.wrap = nil
    coroutine.secret = "secret"
    bit.band = nil
    return 1
    """
    probe = """
    return {rawget(_G, "leftover") or "clean", rawget(_G, "other") or "clean",
      rawget(_G, "raw") or "clean", ("a"):upper(), ("x").secret or "clean",
      string.secret or "clean", table.concat({"c", "d"}), table.secret or "clean",
      math.floor(1.5), math.pi > 3.14, os.time() > 0, os.secret or "clean",
      type(coroutine.wrap), coroutine.secret or "clean", bit.band(3, 1)}
    """
    first, second = pair(bridge, poison, probe)
    assert first.ok and second.ok, (first.error, second.error)
    assert second.value == [
        "clean", "clean", "clean", "A", "clean", "clean", "cd", "clean",
        1, True, True, "clean", "function", "clean", 1,
    ]  # fmt: skip


def test_string_metatable_points_at_the_new_run(bridge: Bridge) -> None:
    """The string metatable is the VM's own: a run's string copy behind it (and anything put
    into that copy) is replaced by the next run's."""
    poison = """
    string.leak = function() return "secret" end
    local ok = pcall(function() getmetatable("").__index = {leak = "secret"} end)
    local ok2 = pcall(setmetatable, "", {})
    return {ok, ok2, ("x"):leak()}
    """
    probe = 'return {("x").leak == nil, getmetatable("") == false, ("ab"):rep(2)}'
    first, second = pair(bridge, poison, probe)
    assert first.ok and first.value == [False, False, "secret"], first.error
    assert second.ok and second.value == [True, True, "abab"], second.error


def test_builtin_functions_hold_nothing(bridge: Bridge) -> None:
    """The C functions (shared by all runs of a state) cannot be given fields, environments or
    metatables by a script."""
    poison = """
    local tries = {
      function() print.x = 1 end,
      function() string.byte.x = 1 end,
      function() setmetatable(assert, {}) end,
      function() setfenv(ipairs, {}) end,
      function() getfenv(1).x = 1 end,
      function() debug.setmetatable(print, {__index = {x = "secret"}}) end,
    }
    local held = 0
    for _, f in ipairs(tries) do if pcall(f) then held = held + 1 end end
    return held
    """
    probe = "return {pcall(function() return string.byte.x end), type(getmetatable(print))}"
    first, second = pair(bridge, poison, probe)
    assert first.ok and first.value == 0, first.error
    assert second.ok and second.value == [False, "nil"], second.error


def test_coroutines_left_suspended_are_unreachable(bridge: Bridge) -> None:
    poison = """
    keep = coroutine.create(function() while true do coroutine.yield("secret") end end)
    coroutine.resume(keep)
    local w = coroutine.wrap(function() coroutine.yield("secret") end)
    w()
    held = w
    -- A coroutine nested 50 deep, left suspended at the end of the run.
    local function nest(n)
      if n == 0 then coroutine.yield("deep") return end
      local co = coroutine.wrap(nest)
      co(n - 1)
    end
    local deep = coroutine.wrap(nest)
    deep(50)
    return 1
    """
    probe = """
    local ok = pcall(function() return keep end)
    -- The nesting cap counts from zero again: 99 levels still work.
    local function nest(n)
      if n == 0 then return "bottom" end
      return coroutine.wrap(nest)(n - 1)
    end
    return {ok, rawget(_G, "held") == nil, nest(99), coroutine.running() == nil}
    """
    first, second = pair(bridge, poison, probe)
    assert first.ok, first.error
    assert second.ok and second.value == [False, True, "bottom", True], second.error


def test_limit_tripped_inside_a_coroutine_leaves_the_next_run_whole(bridge: Bridge) -> None:
    poison = """
    local co = coroutine.wrap(function()
      coroutine.wrap(function() while true do end end)()
    end)
    co()
    """
    probe = "local s = 0 for i = 1, 1000 do s = s + i end return s"
    first, second = pair(bridge, poison, probe)
    assert first.error is not None and first.error.type == "InstructionLimitError"
    assert second.ok and second.value == 500500, second.error


def test_instruction_budget_and_output_start_from_zero(bridge: Bridge) -> None:
    poison = """
    print(string.rep("x", 900000))
    local n = 0 for i = 1, 3e6 do n = n + 1 end
    return n
    """
    probe = """
    print(string.rep("y", 900000))
    local n = 0 for i = 1, 3e6 do n = n + 1 end
    return n
    """
    limits = {"instructions": 20_000_000, "output_bytes": 1_000_000}
    same = SameState(bridge)
    first = bridge.run(poison, limits=limits)
    second = bridge.run(probe, limits=limits)
    same.check()
    assert first.ok and second.ok, (first.error, second.error)
    assert second.output == "y" * 900000 + "\n"
    assert abs(second.usage["instructions"] - first.usage["instructions"]) <= 2000
    assert second.usage["output_bytes"] == first.usage["output_bytes"]


def test_memory_of_a_finished_run_is_given_back(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that ends holding 40 MiB in globals leaves the next run the whole limit. (In
    process, the state is collected and reused here although its heap is past
    ``_BLOATED_BYTES``; a worker closes such a state, and the next test covers that.)"""
    monkeypatch.setattr(sandbox, "_BLOATED_BYTES", 1 << 40)
    hold = """
    big = {}
    for i = 1, 40 do big[i] = string.rep(string.char(64 + i % 26), 1024 * 1024) end
    return #big
    """
    limits = {"memory": 48 * 1024 * 1024}
    for _ in range(3):
        same = SameState(bridge)
        result = bridge.run(hold, limits=limits)
        same.check()
        assert result.ok and result.value == 40, result.error
        assert result.usage["peak_memory"] < 46 * 1024 * 1024


def test_random_sequence_is_a_fresh_states(bridge: Bridge) -> None:
    """A run cannot learn how many numbers an earlier run drew (nor steer them)."""
    fresh = sandbox._State()
    runner = fresh.start(sandbox._UNUSED, Limits(), 1e18)
    status, expected, *_ = runner(b"return {math.random(), math.random(1, 1000)}", None)
    fresh.close()
    assert status == b"ok"
    draws = "for i = 1, 12345 do math.random() end return 1"
    _, second = pair(bridge, draws, "return {math.random(), math.random(1, 1000)}")
    assert second.ok, second.error
    assert second.value == sandbox.decode_lua_json(expected)


def test_error_types_of_one_run_are_not_the_next_runs(bridge: Bridge) -> None:
    """A binding error's message is mapped to its type for that run only."""
    poison = "return app.integrations.loops.default.find_contact(5)"
    first = bridge.run(poison)
    assert first.error is not None and first.error.type == "ValidationError"
    message = first.error.message.split(": ", 1)[1]
    same = SameState(bridge)
    second = bridge.run("local m = ... error(m)", message)
    same.check()
    assert second.error is not None and second.error.message.endswith(message)
    assert second.error.type == "RuntimeError"


def test_grants_and_policy_are_the_new_runs(bridge: Bridge, loops_emulator: Any) -> None:
    """The namespace a run built for its granted accounts is not the next run's, and the next
    run's policy (read-only) holds even after a run that was allowed to write."""
    loops_emulator.reset()
    writer = """
    local m = app.integrations.loops.marketing
    app.integrations.loops.default.create_contact({email = "reuse@example.com"})
    return tostring(m)
    """
    probe = """
    local ok1 = pcall(function() return app.integrations.loops.marketing end)
    local create = app.integrations.loops.default.create_contact
    local ok2, err = pcall(create, {email = "again@example.com"})
    return {ok1, ok2, tostring(err):find("write") ~= nil}
    """
    same = SameState(bridge)
    first = bridge.run(writer, allow="write")
    second = bridge.run(probe, accounts={"loops": ["default"]})
    same.check()
    assert first.ok, first.error
    assert second.ok and second.value == [False, False, True], second.error


def test_hot_loop_after_the_jit_was_left_on_is_still_counted() -> None:
    """``prepare`` turns the JIT off again: had a run left it on (a script cannot reach
    ``jit``, but a run that ends inside the encoder leaves it on), the next run's trusted code
    would be compiled (the script's own chunk is also marked never to be compiled)."""
    state = sandbox._State()
    try:
        state.session.lua.execute("jit.on()")
        limits = Limits(instructions=20_000_000, timeout=10)
        runner = state.start(sandbox._UNUSED, limits, time.monotonic() + 10)
        assert state.session.lua.eval("(jit.status())") is False
        hot = b"local x = 0 for i = 1, 1e12 do x = x + i % 7 end return x"
        status, kind, *_ = runner(hot, None)
        assert (status, kind) == (b"error", b"InstructionLimitError")
    finally:
        state.close()


def test_a_state_that_keeps_memory_is_closed() -> None:
    """A state whose heap does not go back to its fresh size after a full collection is closed
    instead of reused (a guard against anything outliving its run)."""
    sandbox._idle.clear()
    assert sandbox.execute("return 1", None, host=sandbox._UNUSED, limits=Limits()).ok
    (state,) = sandbox._idle
    state.session.lua.execute("kept = string.rep('x', 1024 * 1024)")  # outside any run
    state.dirty = True
    assert sandbox.execute("return 2", None, host=sandbox._UNUSED, limits=Limits()).ok
    assert state not in sandbox._idle and state.session.lua is None


def test_a_state_left_with_a_large_heap_is_closed_without_a_collection() -> None:
    """A run that ends with more than ``_BLOATED_BYTES`` in its heap has its state closed,
    which frees it faster than a full collection would; a smaller run keeps its state."""
    sandbox._idle.clear()
    assert sandbox.execute("return 1", None, host=sandbox._UNUSED, limits=Limits()).ok
    (state,) = sandbox._idle
    small = "local t = {} for i = 1, 1000 do t[i] = {i} end return #t"
    assert sandbox.execute(small, None, host=sandbox._UNUSED, limits=Limits()).value == 1000
    assert sandbox._idle == [state] and not state.bloated
    collections: list[Any] = []
    collect = state.settle_fn

    def counted(*args: Any) -> Any:
        collections.append(args)
        return collect(*args)

    state.settle_fn = counted
    big = "local t = {} for i = 1, 8 do t[i] = string.rep('x', 1024 * 1024) .. i end return #t"
    assert sandbox.execute(big, None, host=sandbox._UNUSED, limits=Limits()).value == 8
    assert state.bloated and collections == [(state.floor_kb + sandbox._SETTLE_SLACK_KB,)]
    assert sandbox.execute("return 3", None, host=sandbox._UNUSED, limits=Limits()).value == 3
    assert state not in sandbox._idle and state.session.lua is None
    assert len(collections) == 1  # the small run's garbage was collected; the big run's not


def test_a_state_that_hit_the_memory_limit_is_not_reused() -> None:
    sandbox._idle.clear()
    assert sandbox.execute("return 1", None, host=sandbox._UNUSED, limits=Limits()).ok
    (state,) = sandbox._idle
    bomb = "local s = 'x' while true do s = s .. s end"
    outcome = sandbox.execute(bomb, None, host=sandbox._UNUSED, limits=Limits())
    assert outcome.error is not None and outcome.error["type"] == "MemoryError"
    assert state not in sandbox._idle and state.session.lua is None


def test_a_state_serves_a_bounded_number_of_runs() -> None:
    sandbox._idle.clear()
    assert sandbox.execute("return 1", None, host=sandbox._UNUSED, limits=Limits()).ok
    (state,) = sandbox._idle
    for _ in range(sandbox._STATE_RUNS + 1):
        assert sandbox.execute("return 1", None, host=sandbox._UNUSED, limits=Limits()).ok
    assert state not in sandbox._idle and state.runs == sandbox._STATE_RUNS


def test_the_previous_host_is_gone_between_runs() -> None:
    """Between runs a state's host is one that refuses everything: the last run's dispatcher
    (and its clients) is not kept alive by the state."""
    sandbox._idle.clear()

    class Host:
        spec: dict[str, Any] = {}  # noqa: RUF012 - a test double

    assert sandbox.execute("return 1", None, host=Host(), limits=Limits()).ok  # type: ignore[arg-type]
    (state,) = sandbox._idle
    assert state.session.host is sandbox._UNUSED and state.session.markers is None


def test_a_state_after_an_internal_error_is_not_reused() -> None:
    class Broken:
        spec: dict[str, Any] = {}  # noqa: RUF012 - a test double

        def help(self, topic: str | None) -> Any:
            raise ZeroDivisionError

    sandbox._idle.clear()
    assert sandbox.execute("return 1", None, host=sandbox._UNUSED, limits=Limits()).ok
    (state,) = sandbox._idle
    outcome = sandbox.execute("return app.help()", None, host=Broken(), limits=Limits())  # type: ignore[arg-type]
    assert outcome.error is not None and outcome.error["type"] == "InternalError"
    assert state not in sandbox._idle and state.session.lua is None
