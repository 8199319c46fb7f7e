"""The sandbox: what scripts can and cannot reach, and every limit tripping cleanly."""

from __future__ import annotations

import pytest

from luabridge import Bridge

FORBIDDEN = [
    "os.execute",
    "os.getenv",
    "os.exit",
    "os.remove",
    "io",
    "require",
    "load",
    "loadstring",
    "dofile",
    "loadfile",
    "debug",
    "jit",
    "ffi",
    "package",
    "collectgarbage",
    "newproxy",
    "getfenv",
    "setfenv",
    "string.dump",
    "python",
    "math.randomseed",
    "module",
    "gcinfo",
]


@pytest.mark.parametrize("name", FORBIDDEN)
def test_sandbox_forbidden_capability_missing(bridge: Bridge, name: str) -> None:
    """Each forbidden global or library function is absent (a nil field or an undefined global)."""
    head, _, tail = name.partition(".")
    if tail:
        result = bridge.run(f"return {head}.{tail} == nil")
        assert result.ok and result.value is True, result.error
    else:
        result = bridge.run(f"return {head}")
        assert not result.ok
        assert result.error is not None and result.error.type == "RuntimeError"
        assert f"undefined global '{head}'" in result.error.message


def test_sandbox_string_metatable_hidden(bridge: Bridge) -> None:
    result = bridge.run('return ("x").dump == nil and ("abc"):upper()')
    assert result.ok and result.value == "ABC"


def test_sandbox_allowed_globals_work(bridge: Bridge) -> None:
    src = """
    local t = {}
    for i, v in ipairs({3, 1, 2}) do table.insert(t, v) end
    table.sort(t)
    local ok = pcall(error, "x")
    local co = coroutine.wrap(function(a) coroutine.yield(a + 1) end)
    return {sorted = t, ok = ok, co = co(1), floor = math.floor(2.5), t = type(os.time()),
            n = select("#", 1, 2), s = string.format("%05.1f", 3.14159), u = unpack({7})}
    """
    result = bridge.run(src)
    assert result.ok, result.error
    assert result.value == {
        "sorted": [1, 2, 3],
        "ok": False,
        "co": 2,
        "floor": 2,
        "t": "number",
        "n": 2,
        "s": "003.1",
        "u": 7,
    }


def test_sandbox_globals_do_not_leak_between_runs(bridge: Bridge) -> None:
    first = bridge.run("leaked = 42; string.upper = function() return 'PWNED' end; return 1")
    assert first.ok
    second = bridge.run("return {rawleak = _G.leaked == nil, up = ('a'):upper()}")
    assert not second.ok or second.value == {"rawleak": True, "up": "A"}
    third = bridge.run("return ('a'):upper()")
    assert third.ok and third.value == "A"


def test_sandbox_app_is_read_only(bridge: Bridge) -> None:
    for src in (
        "app.integrations.notes.get_note = nil",
        "app.integrations.notes = {}",
        "app.null = 1",
        "app = {}",
        "app.integrations.notes.default.list_notes = print",
    ):
        result = bridge.run(src)
        assert not result.ok, src
        assert result.error is not None and "read-only" in result.error.message


def test_sandbox_binary_chunk_refused(bridge: Bridge) -> None:
    result = bridge.run("\x1bLJ\x02garbage")
    assert result.error is not None and result.error.type == "SyntaxError"
    assert "binary" in result.error.message


def test_sandbox_syntax_error_has_line(bridge: Bridge) -> None:
    result = bridge.run("local a = 1\nlocal b = = 2\n")
    assert result.error is not None
    assert result.error.type == "SyntaxError"
    assert result.error.line == 2


def test_sandbox_runtime_error_has_line(bridge: Bridge) -> None:
    result = bridge.run("local a = 1\n\nerror('boom')\n")
    assert result.error is not None
    assert (result.error.type, result.error.line) == ("RuntimeError", 3)
    assert result.error.message == "script.lua:3: boom"


@pytest.mark.parametrize(
    ("src", "fragment"),
    [
        ("error({code = 1})", "error object is a table"),
        ("error(nil)", "without a message"),
        ("error(loadstring)", "undefined global"),
        ("error(string.rep('e', 100000))", "truncated"),
    ],
)
def test_sandbox_odd_error_objects_reported(bridge: Bridge, src: str, fragment: str) -> None:
    result = bridge.run(src)
    assert result.error is not None and result.error.type == "RuntimeError"
    assert fragment in result.error.message
    assert len(result.error.message) < 9000


def test_sandbox_input_is_first_argument_and_a_copy(bridge: Bridge) -> None:
    data = {"email": "a@b.co", "tags": ["x"], "nested": {"n": 1}}
    result = bridge.run(
        "local input = ... input.email = 'changed' input.tags[1] = 'y' return input", input=data
    )
    assert result.ok
    assert result.value == {"email": "changed", "tags": ["y"], "nested": {"n": 1}}
    assert data == {"email": "a@b.co", "tags": ["x"], "nested": {"n": 1}}


def test_sandbox_print_captured(bridge: Bridge, capfd: pytest.CaptureFixture[str]) -> None:
    result = bridge.run("print('hello', 1, true, nil) print() return 0")
    assert result.output == "hello\t1\ttrue\tnil\n\n"
    assert capfd.readouterr().out == ""


# -- limits -------------------------------------------------------------------------------------

LIMIT_CASES = [
    ("while true do end", {"timeout": 0.3, "instructions": 10**12}, "TimeoutError"),
    ("while true do end", {"instructions": 200_000}, "InstructionLimitError"),
    (
        "local x = 0 for i = 1, 1e15 do x = x + i % 7 end",
        {"instructions": 200_000},
        "InstructionLimitError",
    ),
    ("local t = {} while true do t[#t + 1] = {1, 2, 3} end", {"memory": 8 << 20}, "MemoryError"),
    ("local s = 'x' while true do s = s .. s end", {"memory": 8 << 20}, "MemoryError"),
    ("return #string.rep('ab', 2 ^ 29)", {}, "MemoryError"),
    ("while true do print('flood') end", {"output_bytes": 1000}, "OutputLimitError"),
    ("for i = 1, 10 do app.integrations.notes.list_notes() end", {"calls": 3}, "CallLimitError"),
    ("return string.rep('R', 5000)", {"result_bytes": 1000}, "ResultLimitError"),
]


@pytest.mark.parametrize(("src", "limits", "error_type"), LIMIT_CASES)
def test_limit_trips_with_own_error_then_bridge_recovers(
    bridge: Bridge, src: str, limits: dict[str, float], error_type: str
) -> None:
    result = bridge.run(src, limits=limits)
    assert not result.ok
    assert result.error is not None
    assert result.error.type == error_type, result.error
    after = bridge.run("return 'PROBE-OK'")
    assert after.ok and after.value == "PROBE-OK"


def test_timeout_from_the_hook_says_which_limit(bridge: Bridge) -> None:
    """The hook's own TimeoutError (not the worker kill's), before and after an encode."""
    for src in ("while true do end", "local s = app.json.encode({1, 2, 3}) while true do end"):
        result = bridge.run(src, limits={"timeout": 0.3, "instructions": 10**12})
        assert result.error is not None and result.error.type == "TimeoutError", result.error
        assert result.error.message.startswith("time limit reached (0.3 s)"), result.error


@pytest.mark.parametrize(
    "src",
    [
        "while true do pcall(function() while true do end end) end",
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
        "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
        "while true do local f = coroutine.wrap(function() while true do end end) pcall(f) end",
        "while true do pcall(string.gsub, 'aaa', 'a', function() while true do end end) end",
        "xpcall(function() while true do end end, function() while true do end end) return 1",
        "local ok = pcall(function() while true do end end) return 'caught: ' .. tostring(ok)",
    ],
)
def test_limit_cannot_be_swallowed(bridge: Bridge, src: str) -> None:
    """Once tripped, a limit ends the run whatever the script does to catch it."""
    result = bridge.run(src, limits={"instructions": 500_000})
    assert result.error is not None
    assert result.error.type == "InstructionLimitError"


def test_limit_memory_error_cannot_be_swallowed(bridge: Bridge) -> None:
    src = (
        "local h = {} pcall(function() while true do h[#h + 1] = {1, 2} end end) return 'survived'"
    )
    result = bridge.run(src, limits={"memory": 8 << 20})
    assert result.error is not None and result.error.type == "MemoryError"


def test_limit_result_encoded_after_garbage_is_collected(bridge: Bridge) -> None:
    """The encoder runs with the collector paused; when the heap is full of garbage the script
    dropped just before returning, it collects and encodes again instead of failing. 22 MiB
    lies in the window where encoding with the collector paused (and, before the pause, with
    it running) ran out of memory, and a full collection first leaves room."""
    src = """
    local t = {}
    for i = 1, 100000 do t[i] = "item number " .. i end
    local junk = {}
    for i = 1, 6 do junk[i] = string.rep(tostring(i), 2e6) end
    junk = nil
    return t
    """
    result = bridge.run(src, limits={"memory": 22 << 20, "result_bytes": 8 << 20})
    assert result.ok, result.error
    assert len(result.value) == 100_000 and result.value[-1] == "item number 100000"
    # A heap full of live data still fails as a memory error of the conversion.
    kept = src.replace("junk = nil", "kept = junk")
    result = bridge.run(kept, limits={"memory": 22 << 20, "result_bytes": 8 << 20})
    assert result.error is not None and result.error.type == "MemoryError", result.error
    assert "while converting result" in result.error.message


def test_limit_output_counts_bytes_not_calls(bridge: Bridge) -> None:
    ok = bridge.run("for i = 1, 10 do print('0123456789') end", limits={"output_bytes": 110})
    assert ok.ok and len(ok.output) == 110
    over = bridge.run("for i = 1, 11 do print('0123456789') end", limits={"output_bytes": 110})
    assert over.error is not None and over.error.type == "OutputLimitError"
    assert len(over.output) <= 110


def test_limit_usage_reported(bridge: Bridge) -> None:
    result = bridge.run("local s = 0 for i = 1, 100000 do s = s + i end print(s) return s")
    assert result.ok
    usage = result.usage
    assert usage["instructions"] >= 100_000
    assert usage["peak_memory"] > 0
    assert usage["output_bytes"] == len("5000050000\n")
    assert usage["wall_ms"] > 0
    assert usage["calls"] == 0


def test_limit_gsub_callback_depth_capped(bridge: Bridge) -> None:
    result = bridge.run("local function f() return (string.gsub('a', 'a', f)) end return f()")
    assert result.error is not None and "nested deeper than 20" in result.error.message


def test_limit_coroutine_nesting_capped(bridge: Bridge) -> None:
    # Not a tail call, so that the frame of the line that called the wrapper still exists.
    src = "local function f()\n  local r = coroutine.wrap(f)()\n  return r\nend\nreturn f()"
    result = bridge.run(src)
    assert result.error is not None
    assert "nested deeper than 100" in result.error.message
    assert (result.error.line, "<python>" in result.error.message) == (2, False)
    resumed = bridge.run(
        "local function f()\n  local co = coroutine.create(f)\n"
        "  local ok, err = coroutine.resume(co)\n  if not ok then error(err, 0) end\nend\n"
        "return f()"
    )
    assert resumed.error is not None and "nested deeper than 100" in resumed.error.message
    assert "<python>" not in resumed.error.message


def test_limit_legit_recursion_and_gsub_allowed(bridge: Bridge) -> None:
    src = """
    local function depth(n) if n == 0 then return 0 end return 1 + depth(n - 1) end
    return {depth(1000), (("hello world"):gsub("%w+", function(w) return w:upper() end))}
    """
    result = bridge.run(src)
    assert result.ok and result.value == [1000, "HELLO WORLD"]


def test_limit_overrides_rejected_when_unknown(bridge: Bridge) -> None:
    from luabridge import ConfigError

    with pytest.raises(ConfigError, match="unknown limit"):
        bridge.run("return 1", limits={"timeuot": 1})
    with pytest.raises(ConfigError, match="must be a number of seconds over 0"):
        bridge.run("return 1", limits={"timeout": 0})


def test_sandbox_setmetatable_classes_and_defaults(bridge: Bridge) -> None:
    """The usual class and default-table idioms work, and an instance converts as its fields."""
    src = """
    local Point = {}
    Point.__index = Point
    function Point.new(x, y) return setmetatable({x = x, y = y}, Point) end
    function Point:sum() return self.x + self.y end
    local p = Point.new(2, 3)
    local counts = setmetatable({}, {__index = function() return 0 end})
    counts.a = counts.a + 1
    return {p:sum(), getmetatable(p) == Point, counts.a, counts.b, p}
    """
    result = bridge.run(src)
    assert result.ok, result.error
    assert result.value == [5, True, 1, 0, {"x": 2, "y": 3}]


def test_sandbox_raw_functions_bypass_script_metamethods(bridge: Bridge) -> None:
    src = """
    local t = setmetatable({}, {__index = function() return "meta" end,
      __newindex = function() error("refused") end})
    rawset(t, "k", "raw")
    return {t.k, rawget(t, "missing") == nil, t.missing, rawequal(t, t), rawequal(t, {})}
    """
    result = bridge.run(src)
    assert result.ok, result.error
    assert result.value == ["raw", True, "meta", True, False]


def test_sandbox_bit_library(bridge: Bridge) -> None:
    src = """
    return {bit.band(0xff, 0x0f), bit.bor(1, 2), bit.bxor(3, 1), bit.bnot(0), bit.lshift(1, 4),
      bit.rshift(256, 4), bit.arshift(-16, 2), bit.tohex(255), bit.tobit(2^32 + 1)}
    """
    result = bridge.run(src)
    assert result.ok, result.error
    assert result.value == [15, 3, 2, -1, 16, 16, -4, "000000ff", 1]


def test_sandbox_bit_library_is_per_run(bridge: Bridge) -> None:
    assert bridge.run("bit.band = nil return 1").ok
    result = bridge.run("return bit.band(3, 1)")
    assert result.ok and result.value == 1, result.error


def test_sandbox_pairs_lists_app_and_its_namespaces(bridge: Bridge) -> None:
    """pairs() and next() see the fields of app, app.json and app.integrations."""
    src = """
    local function keys(t)
      local out = {}
      for k in pairs(t) do out[#out + 1] = k end
      table.sort(out)
      return table.concat(out, " ")
    end
    return {keys(app), keys(app.json), keys(app.integrations), next(app.json) ~= nil}
    """
    result = bridge.run(src)
    assert result.ok, result.error
    assert result.value == [
        "accounts array help integrations json null object schema",
        "decode encode",
        "notes",
        True,
    ]


def test_sandbox_next_walks_a_namespace_as_pairs_does(bridge: Bridge) -> None:
    """`next(t) == nil` is the usual emptiness test: on a namespace it sees what pairs lists."""
    src = """
    local ns = app.integrations.notes
    local by_pairs, by_next = {}, {}
    for k in pairs(ns) do by_pairs[#by_pairs + 1] = k end
    local k = next(ns)
    while k ~= nil do by_next[#by_next + 1] = k; k = next(ns, k) end
    table.sort(by_pairs); table.sort(by_next)
    return {next(ns) ~= nil, table.concat(by_pairs, " "), table.concat(by_next, " ")}
    """
    result = bridge.run(src)
    assert result.ok, result.error
    empty, listed, walked = result.value
    assert empty is True and listed and listed == walked


@pytest.mark.parametrize(
    ("src", "message"),
    [
        (
            'local x = 1\nreturn rawset(app.integrations.notes, "x", 1)',
            "read-only (cannot set 'x')",
        ),
        ("local x = 1\nreturn setmetatable(app, {})", "cannot change a protected metatable"),
        ('local x = 1\nreturn rawset(_G, "app", 1)', "global 'app' is read-only"),
        ('local x = 1\nreturn setmetatable("s", {})', "bad argument #1 to 'setmetatable'"),
        ("local x = 1\nlocal t = setmetatable({}, 5)", "bad argument #2 to 'setmetatable'"),
    ],
    ids=["rawset", "setmetatable", "rawset-global", "arg1", "arg2"],
)
def test_sandbox_rawset_setmetatable_errors_name_the_line(
    bridge: Bridge, src: str, message: str
) -> None:
    """Also when tail-called (`return rawset(...)`), where Lua itself gives no position."""
    result = bridge.run(src)
    assert result.error is not None and result.error.type == "RuntimeError"
    assert message in result.error.message
    assert result.error.line == 2, result.error
    assert ":2: " in result.error.message and "<python>" not in result.error.message


def test_sandbox_namespace_cannot_be_returned(bridge: Bridge) -> None:
    result = bridge.run("return {ns = app.integrations}")
    assert result.error is not None and result.error.type == "ValidationError"
    assert "app.integrations cannot be converted" in result.error.message
