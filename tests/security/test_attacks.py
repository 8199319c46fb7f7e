"""The sandbox's own attack suite: one or more cases for every attack class of the threat model.

Each case is a script and the outcome it must reach: a set of acceptable error types, an exact
value, or ``CONTAINED`` (any clean outcome). ``conftest.attack`` adds the rules every case
shares: it ends within its timeout plus one second, leaves no marker, leaks no secret or Python
internals, stays small, leaves the input alone, and the next runs on the same bridge work.
Timings are printed with ``-s`` (``[attack-timing]`` lines); the slowest is the kill of a
script stuck in one C call.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from attacklib import (  # noqa: F401 (fixtures)
    KEYS,
    MIB,
    attack,
    guarded_secrets_fixture,
    hostile_bridge,
    shared_bridge_fixture,
)

from luabridge import Bridge

CONTAINED = "contained"
CPU = {"TimeoutError", "InstructionLimitError"}
BLOCKED = {"RuntimeError"}
REFUSED = {"ValidationError"}


@dataclass(frozen=True)
class Case:
    source: str
    expect: Any  # a set of error types, CONTAINED, or ("value", v)
    timeout: float = 1.0
    memory: bool = False  # check the worker's peak RSS (< 1 GiB)

    def __post_init__(self) -> None:
        if self.memory and self.timeout < 2.0:
            # Filling 64 MiB takes up to a second when workers are being replaced alongside.
            object.__setattr__(self, "timeout", 2.0)


def value(v: Any) -> tuple[str, Any]:
    return ("value", v)


ESCAPES = {
    "loadstring_bytecode": Case('return loadstring("\\27LJ\\2\\0")()', BLOCKED),
    "load_reader": Case("return load(function() return nil end)", BLOCKED),
    "dofile_stdin": Case("return dofile()", BLOCKED),
    "binary_chunk_source": Case("\27LJ\2\0\0\0", {"SyntaxError"}),
    "string_dump": Case("return string.dump(print)", BLOCKED),
    "string_dump_method": Case('return ("").dump(function() end)', BLOCKED),
    "string_metatable_fields": Case(
        'return ("x").__index == nil and ("x").__metatable == nil and ("x").dump == nil',
        value(True),
    ),
    "getmetatable_string": Case('return getmetatable("")', value(False)),
    "require_ffi": Case('return require("ffi")', BLOCKED),
    "package_preload_ffi": Case("return package.preload.ffi", BLOCKED),
    "jit_on": Case("jit.on() return 1", BLOCKED),
    "jit_util": Case('return require("jit.util")', BLOCKED),
    "debug_sethook": Case("debug.sethook() return 1", BLOCKED),
    "debug_getregistry": Case("return debug.getregistry()", BLOCKED),
    "getfenv_zero": Case("return getfenv(0)", BLOCKED),
    "setfenv_print": Case("setfenv(print, {}) return 1", BLOCKED),
    "newproxy": Case("return newproxy(true)", BLOCKED),
    "collectgarbage_stop": Case('collectgarbage("stop") return 1', BLOCKED),
    "rawset_app": Case('rawset(app, "x", 1) return 1', BLOCKED),
    "app_assign": Case("app.integrations = {} return 1", BLOCKED),
    "app_global_replace": Case("app = {} return 1", BLOCKED),
    "namespace_assign": Case("app.integrations.loops.get_current_user = print return 1", BLOCKED),
    "account_assign": Case("app.integrations.loops.default.x = 1 return 1", BLOCKED),
    "python_global": Case("return python.eval('1')", BLOCKED),
    "python_attr_on_binding": Case(
        "return app.integrations.loops.get_current_user.__self__", BLOCKED
    ),
    "python_attr_on_app": Case("return app.__class__", BLOCKED),
    "python_attr_on_json": Case("return app.json.__globals__", BLOCKED),
    "binding_is_plain_function": Case(
        'return type(app.integrations.loops.get_current_user) .. ":" .. '
        "tostring(app.integrations.loops.get_current_user):sub(1, 9)",
        value("function:function:"),
    ),
    "os_exit": Case("os.exit(0)", BLOCKED),
    "os_execute": Case('os.execute("touch /tmp/pwned-attack-os") return 1', BLOCKED),
    "io_popen": Case('io.popen("touch /tmp/pwned-attack-io") return 1', BLOCKED),
    "math_randomseed": Case("math.randomseed(1) return 1", BLOCKED),
    "coroutine_wrap_hook_dodge": Case(
        "local f = coroutine.wrap(function() while true do end end) f()", CPU
    ),
    "coroutine_pcall_swallow": Case(
        "while true do pcall(coroutine.wrap(function() while true do end end)) end", CPU
    ),
    "coroutine_yield_loop": Case(
        "local co = coroutine.create(function() while true do coroutine.yield() end end)\n"
        "while true do coroutine.resume(co) end",
        CPU,
    ),
    "coroutine_nesting": Case(
        "local function f() return coroutine.wrap(f)() end return f()", BLOCKED
    ),
    "xpcall_handler_loop": Case(
        "xpcall(function() while true do end end, function() while true do end end) return 1",
        CPU,
    ),
    "pcall_error_loop": Case('for i = 1, 1e12 do pcall(error, "x") end', CPU),
    "write_policy": Case(
        'return app.integrations.loops.create_contact({email = "x@y.co"})', {"PermissionError"}
    ),
    "ungranted_account": Case(
        "return app.integrations.loops.marketing.get_current_user()", BLOCKED
    ),
}

#: The standard functions that touch metatables and raw fields, and LuaJIT's bit library: every
#: table the sandbox shares is protected, a script's own metamethods run only for the script, and
#: the trusted code (encoder, bindings, print) never runs one on its behalf.
METATABLES = {
    "string_metatable_write": Case('getmetatable("").__index = {} return 1', BLOCKED),
    "setmetatable_string": Case('return setmetatable("", {})', BLOCKED),
    "string_library_hijack": Case(
        'setmetatable(string, {__index = function() return function() return "hijacked" end end})\n'
        'return ("a"):nothing()',
        value("hijacked"),
    ),
    "getmetatable_shared": Case(
        "local L = app.integrations.loops\n"
        "return {getmetatable(app), getmetatable(app.integrations), getmetatable(L),\n"
        "  getmetatable(L.default), getmetatable(app.json), getmetatable(_G),\n"
        "  getmetatable(app.null), getmetatable(app.array{}), getmetatable(app.object{})}",
        value([False, False, False, False, False, False, "app.null", "app.array", "app.object"]),
    ),
    "setmetatable_app": Case("setmetatable(app, {}) return 1", BLOCKED),
    "setmetatable_integrations": Case("setmetatable(app.integrations, {}) return 1", BLOCKED),
    "setmetatable_namespace": Case("setmetatable(app.integrations.loops, {}) return 1", BLOCKED),
    "setmetatable_account": Case(
        "setmetatable(app.integrations.loops.default, {}) return 1", BLOCKED
    ),
    "setmetatable_json": Case("setmetatable(app.json, {}) return 1", BLOCKED),
    "setmetatable_null": Case("setmetatable(app.null, {}) return 1", BLOCKED),
    "setmetatable_env": Case("setmetatable(_G, {}) return 1", BLOCKED),
    "setmetatable_marker": Case("setmetatable(app.array{}, {}) return 1", BLOCKED),
    "rawset_integrations": Case('rawset(app.integrations, "loops", {}) return 1', BLOCKED),
    "rawset_namespace": Case(
        'rawset(app.integrations.loops, "find_contact", print) return 1', BLOCKED
    ),
    "rawset_account": Case(
        'rawset(app.integrations.loops.default, "find_contact", print) return 1', BLOCKED
    ),
    "rawset_json": Case('rawset(app.json, "encode", print) return 1', BLOCKED),
    "rawset_null": Case('rawset(app.null, "x", 1) return 1', BLOCKED),
    "rawset_global_app": Case('rawset(_G, "app", {}) return 1', BLOCKED),
    "rawget_proxies_empty": Case(
        'return {rawget(app, "integrations") == nil, rawget(app.integrations, "loops") == nil,\n'
        '  rawget(app.integrations.loops, "find_contact") == nil, rawget(_G, "app") == nil}',
        value([True, True, True, True]),
    ),
    "rawequal_null": Case(
        "return rawequal(app.null, app.null) and not rawequal(app.null, {})", value(True)
    ),
    "result_table_metatable": Case(
        "local r = app.integrations.loops.get_current_user()\n"
        'setmetatable(r, {__index = function() return "mine" end})\n'
        "return {r.nothing, app.integrations.loops.get_current_user().nothing == nil}",
        value(["mine", True]),
    ),
    "result_metamethods_not_run": Case(
        'local boom = function() error("a metamethod ran") end\n'
        "return setmetatable({a = 1}, {__index = boom, __newindex = boom, __tostring = boom,\n"
        "  __len = boom, __eq = boom, __call = boom, __concat = boom, __pairs = boom})",
        value({"a": 1}),
    ),
    "fake_marker": Case(
        'return setmetatable({a = 1}, {__metatable = "app.array"})', value({"a": 1})
    ),
    "params_metamethods_not_run": Case(
        'local boom = function() error("a metamethod ran") end\n'
        "local p = setmetatable({email = 'ada@example.com'}, {__index = boom, __pairs = boom})\n"
        "return type(app.integrations.loops.find_contact(p).success)",
        value("boolean"),
    ),
    "gc_metamethod_never_runs": Case(
        "local ran = false\n"
        "for i = 1, 2e4 do setmetatable({}, {__gc = function() ran = true end}) end\n"
        "local junk = {} for i = 1, 2e5 do junk[i % 100] = {i} end\n"
        "return ran",
        value(False),
    ),
    "index_table_loop": Case(
        "local a, b = {}, {} setmetatable(a, {__index = b}) setmetatable(b, {__index = a})\n"
        "return a.x",
        BLOCKED,
    ),
    "newindex_table_loop": Case(
        "local a, b = {}, {} setmetatable(a, {__newindex = b}) setmetatable(b, {__newindex = a})\n"
        "a.x = 1 return 1",
        BLOCKED,
    ),
    "index_function_recursion": Case(
        "local t = setmetatable({}, {__index = function(s, k) return s[k .. 'x'] end})\nreturn t.x",
        {"RuntimeError", "MemoryError", *CPU},
    ),
    "index_function_loop": Case(
        "local t = setmetatable({}, {__index = function() while true do end end}) return t.x", CPU
    ),
    "tostring_metamethod_loop_in_print": Case(
        "print(setmetatable({}, {__tostring = function() while true do end end}))", CPU
    ),
    "tostring_metamethod_recursion": Case(
        "local t t = setmetatable({}, {__tostring = function() return tostring(t) end})\nprint(t)",
        {"RuntimeError", "MemoryError", *CPU},
    ),
    "eq_metamethod_in_sort": Case(
        "local mt = {__lt = function() while true do end end}\n"
        "table.sort({setmetatable({}, mt), setmetatable({}, mt)}) return 1",
        CPU,
    ),
    "call_metamethod_pcall_swallow": Case(
        "local t = setmetatable({}, {__call = function() while true do end end})\n"
        "while true do pcall(t) end",
        CPU,
    ),
    "bit_huge_values": Case(
        "local h = bit.tohex(-1, 2^31)\n"
        "return {bit.tobit(2^53 + 7), bit.tobit(math.huge), bit.tobit(-math.huge),\n"
        "  bit.tobit(0/0), bit.band(2^63, 1), bit.lshift(1, 2^40), #h, h:sub(-8),\n"
        "  #bit.tohex(255, -2^31), bit.bswap(2^70), bit.rol(1, -2^52), bit.bor(1e300, 2)}",
        value([4, 0, 0, 0, 0, 1, 254, "FFFFFFFF", 254, 0, 1, -2013235810]),
    ),
    "bit_bad_arguments": Case('return bit.band("x", {})', BLOCKED),
    "bit_loop": Case("local x = 0 while true do x = bit.bxor(x, bit.lshift(x, 1) + 1) end", CPU),
}

CPU_AND_MEMORY = {
    "jit_for_loop": Case("local x = 0 for i = 1, 1e15 do x = x + i % 7 end return x", CPU),
    "while_true": Case("while true do end", CPU),
    "repeat_until": Case("repeat local x = 1 until false", CPU),
    "goto_loop": Case("::top:: goto top", CPU),
    "find_quadratic": Case('return string.find(string.rep("a", 200000), "a-b")', {"TimeoutError"}),
    "find_plain_quadratic": Case(
        'local s = string.rep("a", 3e7) return s:find(string.rep("a", 1e7) .. "b", 1, true)',
        {"TimeoutError", "MemoryError"},
    ),
    "match_lazy_lazy": Case(
        'return string.match(string.rep("a", 5000), ".-.-.-b")', {"TimeoutError"}
    ),
    "match_greedy": Case('return string.match(string.rep("a", 1e5), ".*.*b")', {"TimeoutError"}),
    "gmatch_quadratic": Case(
        'for m in string.gmatch(string.rep("a", 1e5), "a-b") do end return 1', {"TimeoutError"}
    ),
    "gsub_quadratic": Case(
        'return (string.gsub(string.rep("a", 1e5), "a-b", ""))', {"TimeoutError"}
    ),
    "gsub_callback_recursion": Case(
        'local function f() return (string.gsub("a", "a", f)) end return f()', BLOCKED
    ),
    "rep_huge": Case('return #string.rep("x", 2^31)', {"MemoryError"}, memory=True),
    "rep_huge_sep": Case('return #string.rep("ab", 3e7, ",")', {"MemoryError"}, memory=True),
    "rep_method_huge": Case('return #("x"):rep(2^30)', {"MemoryError"}, memory=True),
    "rep_then_concat": Case(
        'local s = string.rep("x", 6e7) return #(s .. "y")', {"MemoryError"}, memory=True
    ),
    "concat_doubling": Case(
        'local s = "x" while true do s = s .. s end', {"MemoryError"}, memory=True
    ),
    "table_concat_huge": Case(
        'local t = {} for i = 1, 2e4 do t[i] = "x" end return #table.concat(t, ("y"):rep(1e4))',
        {"MemoryError"},
        memory=True,
    ),
    "table_growth": Case(
        "local t = {} while true do t[#t + 1] = {1, 2, 3} end", {"MemoryError"}, memory=True
    ),
    "coroutine_bomb": Case(
        "local t = {} while true do t[#t + 1] = coroutine.create(print) end",
        {"MemoryError"},
        memory=True,
    ),
    "memory_error_swallowed": Case(
        'local ok = pcall(function() local s = "x" while true do s = s .. s end end) return ok',
        {"MemoryError"},
        memory=True,
    ),
    "memory_full_then_call": Case(
        "local h = {} pcall(function() while true do h[#h + 1] = {1, 2} end end)\n"
        "return app.integrations.loops.get_current_user()",
        {"MemoryError"},
        memory=True,
    ),
    "json_decode_bomb": Case(
        'return #app.json.decode("[" .. string.rep("1,", 1e7) .. "1]")',
        {"MemoryError"},
        memory=True,
    ),
    "json_decode_deep": Case(
        'return app.json.decode(string.rep("[", 1e5) .. string.rep("]", 1e5))', REFUSED
    ),
    "deep_recursion": Case(
        "local function f(n) return 1 + f(n + 1) end return f(1)", {"RuntimeError", "MemoryError"}
    ),
    "tail_call_loop": Case("local function f(n) return f(n + 1) end return f(1)", CPU),
    "format_width": Case('return string.format("%99999d", 1)', BLOCKED),
    "format_huge_arg": Case(
        'return #string.format("%s%s", string.rep("x", 3e7), string.rep("y", 3e7))',
        {"MemoryError"},
        memory=True,
    ),
    "os_date_long": Case('return #os.date(string.rep("%c", 5e6))', {"MemoryError"}, memory=True),
    "sort_comparator_loop": Case(
        "table.sort({3, 2, 1}, function() while true do end end) return 1", CPU
    ),
    "sort_bad_comparator": Case(
        "local t = {} for i = 1, 100 do t[i] = i end\n"
        "table.sort(t, function() return true end) return 1",
        CONTAINED,
    ),
    "unpack_huge": Case("return select('#', unpack({}, 1, 1e8))", BLOCKED),
    "call_flood": Case(
        "for i = 1, 1e6 do pcall(app.integrations.loops.get_current_user) end",
        {"CallLimitError"},
        timeout=2.0,
    ),
    "help_huge_name": Case('return app.help(string.rep("loops.x", 1e6))', BLOCKED),
    "explain_huge_name": Case(
        'return app.integrations.loops.default[string.rep("x", 3e6)]', BLOCKED
    ),
}

OUTPUT = {
    "print_many_small": Case(
        'for i = 1, 1e7 do print("x") end', {"OutputLimitError", "TimeoutError"}, timeout=2.0
    ),
    "print_one_huge": Case('print(string.rep("x", 2e6))', {"OutputLimitError"}),
    "print_many_args": Case(
        'local t = {} for i = 1, 5000 do t[i] = ("a"):rep(300) end print(unpack(t))',
        {"OutputLimitError"},
    ),
    "print_tostring_metamethods": Case(
        "print(app, app.null, app.integrations, app.integrations.loops, "
        "app.integrations.loops.default, app.json) return 1",
        value(1),
    ),
    "print_tostring_override": Case(
        'tostring = function() return ("x"):rep(1e6) end print(1) return tostring(2):len()',
        value(1000000),
    ),
    "print_after_pcall_limit": Case(
        'pcall(function() while true do print(("z"):rep(1000)) end end) return "swallowed"',
        {"OutputLimitError"},
    ),
    "result_huge": Case('return string.rep("R", 2e6)', {"ResultLimitError"}),
    "result_many_items": Case(
        "local t = {} for i = 1, 1e6 do t[i] = i end return t", {"ResultLimitError"}
    ),
    "error_huge_message": Case('error(string.rep("e", 5e6))', BLOCKED),
}

HOST_CONFUSION = {
    "return_cycle": Case("local t = {} t.t = t return t", REFUSED),
    "return_deep": Case("local t = {} for i = 1, 2e5 do t = {t} end return t", REFUSED),
    "return_dag": Case(
        'local d = {"x"} for i = 1, 40 do d = {a = d, b = d} end return d', {"ResultLimitError"}
    ),
    "return_mixed_keys": Case("return {1, 2, x = 3}", REFUSED),
    "return_sparse": Case("return {[1] = 1, [2^31] = 2}", REFUSED),
    "return_table_key": Case("return {[{}] = 1}", REFUSED),
    "return_float_key": Case("return {[1.5] = 1}", REFUSED),
    "return_bool_key": Case("return {[true] = 1}", REFUSED),
    "return_nan": Case("return 0/0", REFUSED),
    "return_inf": Case("return {x = -math.huge}", REFUSED),
    "return_function": Case("return print", REFUSED),
    "return_coroutine": Case("return coroutine.create(print)", REFUSED),
    "return_app": Case("return app", REFUSED),
    "return_binding": Case("return {f = app.integrations.loops.get_current_user}", REFUSED),
    "return_namespace": Case("return app.integrations.loops", REFUSED),
    "return_null": Case("return {app.null, 1}", value([None, 1])),
    "return_invalid_utf8_key": Case('return {["\\200k"] = 1}', REFUSED),
    "return_nul_key": Case('return {["a\\0b"] = 1}', REFUSED),
    "return_many_values": Case("return 1, 2, 3", value(1)),
    "args_weird": Case(
        "local L = app.integrations.loops\n"
        "local cyc = {} cyc.self = cyc\n"
        "local deep = {} for i = 1, 1e5 do deep = {deep} end\n"
        'local dag = {"x"} for i = 1, 40 do dag = {a = dag, b = dag} end\n'
        "local vals = {cyc, deep, dag, 0/0, math.huge, '\\255', print, coroutine.create(print),\n"
        "  app, app.null, {[2^31] = 1}, string.rep('x', 5e6), {[{}] = 1}, {1, x = 2}}\n"
        "local n = 0\n"
        "for _, v in ipairs(vals) do\n"
        "  local ok1 = pcall(L.find_contact, {email = v})\n"
        "  local ok2 = pcall(L.find_contact, v)\n"
        "  local ok3 = pcall(L.find_contact, {email = 'a@b.co'}, v)\n"
        "  if not (ok1 or ok2 or ok3) then n = n + 1 end\n"
        "end\n"
        "return n",
        value(14),
        timeout=2.0,
    ),
    "line_search_many_call_sites": Case(
        "local L = app.integrations.loops\nlocal s = [["
        + "find_contact({x = 1}) " * 45000
        + "]]\nreturn L.find_contact({bogus = 1})",
        REFUSED,
    ),
    "empty_shape_scan_hostile_source": Case(
        # Under the 256 KB past which the scan is skipped.
        "local s = [["
        + "a[a[" * 20000
        + "for a, " * 6000
        + "x = x + " * 6000
        + "a[b] = " * 6000
        + "]]\nreturn {a = {}}",
        value({"a": {}}),
    ),
    "args_huge_key": Case(
        'return app.integrations.loops.find_contact({[string.rep("e", 9e5)] = 1})', REFUSED
    ),
    "args_too_large": Case(
        'return app.integrations.loops.find_contact({email = string.rep("e", 2e6)})', REFUSED
    ),
    "error_table": Case("error({code = 1})", BLOCKED),
    "error_nil": Case("error(nil)", BLOCKED),
    "error_function": Case("error(print)", BLOCKED),
    "error_coroutine": Case("error(coroutine.create(print))", BLOCKED),
    "error_app": Case("error(app)", BLOCKED),
    "error_null": Case("error(app.null)", BLOCKED),
    "error_rethrow_binding_error": Case(
        "local ok, e = pcall(app.integrations.loops.find_contact, 5) error(e)", REFUSED
    ),
    "error_number": Case("error(42)", BLOCKED),
    "input_mutation": Case(
        'local input = ... input.email = "pwned" input.n = nil input.x = {} return input.email',
        value("pwned"),
    ),
    "stdlib_poison": Case(
        'string.upper = nil table.concat = nil math.floor = nil return "poisoned"',
        value("poisoned"),
    ),
}

LEAKS = {
    "os_getenv": Case('return os.getenv("LOOPS_API_KEY")', BLOCKED),
    "io_open_environ": Case('return io.open("/proc/self/environ"):read("*a")', BLOCKED),
    "tostring_everything": Case(
        "local L = app.integrations.loops\n"
        "return {tostring(app), tostring(L), tostring(L.default), tostring(L.get_current_user),\n"
        "  tostring(app.json), tostring(app.null), tostring(print), tostring(coroutine.running())}",
        CONTAINED,
    ),
    "help_and_accounts": Case(
        'return {app.help(), app.help("loops"), app.help("loops.find_contact"),\n'
        '  app.json.encode(app.accounts("loops")),\n'
        '  app.json.encode(app.schema("loops.find_contact"))}',
        CONTAINED,
    ),
    "action_reply_and_error": Case(
        "local L = app.integrations.loops\n"
        "local r = L.get_current_user()\n"
        "local ok, e = pcall(L.find_contact, {emial = 'x'})\n"
        "local ok2, e2 = pcall(L.get_contact_property, {bogus = true})\n"
        "print(app.json.encode(r), e, e2)\n"
        "return {r, e, e2}",
        CONTAINED,
    ),
    "walk_reachable": Case(
        "local seen, out = {}, {}\n"
        "local function walk(v, d)\n"
        "  if d > 10 then return end\n"
        "  local t = type(v)\n"
        '  if t == "string" then out[#out + 1] = v:sub(1, 200) return end\n'
        '  if t == "function" or t == "userdata" then out[#out + 1] = tostring(v) return end\n'
        '  if t ~= "table" or seen[v] then return end\n'
        "  seen[v] = true\n"
        "  for k, x in pairs(v) do walk(k, d + 1) walk(x, d + 1) end\n"
        "end\n"
        "walk(_G, 0) walk(string, 0) walk(app, 0)\n"
        "return table.concat(out, '\\n')",
        CONTAINED,
    ),
    "error_from_unknown_name": Case(
        "local ok, e = pcall(function() return app.integrations.loops.marketing end)\n"
        "local ok2, e2 = pcall(function() return app.integrations.nope end)\n"
        "error(tostring(e) .. tostring(e2))",
        BLOCKED,
    ),
    "key_by_name_in_params": Case(
        'return app.integrations.loops.find_contact({email = "LOOPS_API_KEY"})', CONTAINED
    ),
}

# The encoder runs with the JIT on and the count hook paused (docs/threat-model.md, layer 6):
# it must bound its own work, and nothing compiled may outlive it.
_WIDE = "local t = {} for i = 1, 5e3 do t[i] = {id = i, name = 'n' .. i, score = i / 7} end\n"
ENCODER = {
    "dag_result": Case(
        'local d = {"x"} for i = 1, 60 do d = {a = d, b = d} end return d', {"ResultLimitError"}
    ),
    "dag_params": Case(
        'local d = {"x"} for i = 1, 60 do d = {a = d, b = d} end\n'
        "return app.integrations.loops.find_contact({email = d})",
        REFUSED,
    ),
    "dag_json_encode": Case(
        'local d = {"x"} for i = 1, 60 do d = {a = d, b = d} end return app.json.encode(d)',
        REFUSED,
    ),
    "wide_table_result": Case(
        "local t = {} for i = 1, 2e6 do t[i] = 1 end return t", {"ResultLimitError"}
    ),
    "wide_empty_tables": Case(
        "local t = {} for i = 1, 4e5 do t[i] = {} end return t", {"ResultLimitError"}
    ),
    "huge_string_result": Case('return {s = string.rep("x", 2e7)}', {"ResultLimitError"}),
    "huge_key_params": Case(
        'return app.integrations.loops.find_contact({[string.rep("k", 2e7)] = 1})', REFUSED
    ),
    "huge_string_positional": Case(
        'return app.integrations.loops.find_contact(string.rep("x", 2e7))', REFUSED
    ),
    "cycle_wide": Case(_WIDE + "t[#t + 1] = t return t", REFUSED),
    "deep_wide": Case(
        _WIDE + "local d = {} for i = 1, 1e5 do d = {d} end t[#t + 1] = d return t", REFUSED
    ),
    "invalid_utf8_late": Case(_WIDE + 't[#t].name = "\\255" return t', REFUSED),
    "escapes_everywhere": Case(
        _WIDE + 'for i = 1, #t, 3 do t[i].name = "q\\"b\\\\n\\1\\127" end\n'
        "local back = app.json.decode(app.json.encode(t))\n"
        "return back[1].name == t[1].name and back[2].name == t[2].name",
        value(True),
    ),
    "metatable_traps_wide": Case(
        "local function spin() while true do end end\n"
        "local trap = {__index = spin, __len = spin, __tostring = spin, __pairs = spin}\n"
        "local t = {} for i = 1, 2e4 do t[i] = setmetatable({id = i}, trap) end\n"
        "return #app.json.encode(t)",
        value(len(",".join(f'{{"id":{i}}}' for i in range(1, 20001))) + 2),
    ),
}


# The trusted decoder (lua/json.lua) builds large values the host sends in, with the JIT on and
# the hook paused; app.json.decode lets a script choose what it gets (Python parses the script's
# text, checks it, writes it again with json.dumps, and the decoder reads that). 600 items put
# each value over the size where the decoder takes over.
_ITEMS = 'string.rep("1,", 600)'


def _nest(levels: str) -> str:
    """Lua building JSON text: 600 items, then ``levels`` arrays nested in one another."""
    return f'"[" .. {_ITEMS} .. string.rep("[", {levels}) .. string.rep("]", {levels}) .. "]"'


_ROWS = 'string.format(\'{"id":%d,"name":"n%d"}\', i, i)'
DECODER = {
    "deep_over_cap": Case(f"return app.json.decode({_nest('64')})", REFUSED),
    "deep_at_cap": Case(
        f"local v = app.json.decode({_nest('63')})\n"
        "local d, t = 0, v[601] while type(t) == 'table' do d = d + 1 t = t[1] end return d",
        value(63),
    ),
    "python_recursion": Case(f"return app.json.decode({_nest('1e5')})", REFUSED),
    "huge_string": Case(
        f'local v = app.json.decode("[" .. {_ITEMS} .. \'"\' .. string.rep("x", 8e6) .. \'"]\')\n'
        "return #v[601]",
        value(8_000_000),
        timeout=2.0,
    ),
    "huge_escaped_string": Case(
        "local s = '\"' .. string.rep(\"\\\\n\\\\u0001\", 1e6) .. '\"]'\n"
        f'local v = app.json.decode("[" .. {_ITEMS} .. s)\n'
        'return #v[601] == 2e6 and v[601]:sub(1, 2) == "\\n\\1"',
        value(True),
        timeout=2.0,
    ),
    "many_keys": Case(
        "local p = {} for i = 1, 2e5 do p[i] = string.format('\"k%d\":%d', i, i) end\n"
        'local v = app.json.decode("{" .. table.concat(p, ",") .. "}")\n'
        "local n = 0 for _ in pairs(v) do n = n + 1 end return {n, v.k77777}",
        value([200000, 77777]),
        timeout=2.0,
    ),
    "memory_full": Case(
        "local keep = {} for i = 1, 40 do keep[i] = string.rep(tostring(i), 1e6) end\n"
        f"local p = {{}} for i = 1, 2e5 do p[i] = {_ROWS} end\n"
        'return #app.json.decode("[" .. table.concat(p, ",") .. "]")',
        {"MemoryError"},
        timeout=2.0,
    ),
}


ALL = {
    **{f"escape-{k}": v for k, v in ESCAPES.items()},
    **{f"metatable-{k}": v for k, v in METATABLES.items()},
    **{f"cpu-mem-{k}": v for k, v in CPU_AND_MEMORY.items()},
    **{f"output-{k}": v for k, v in OUTPUT.items()},
    **{f"host-{k}": v for k, v in HOST_CONFUSION.items()},
    **{f"leak-{k}": v for k, v in LEAKS.items()},
    **{f"encoder-{k}": v for k, v in ENCODER.items()},
    **{f"decoder-{k}": v for k, v in DECODER.items()},
}


@pytest.mark.parametrize("name", list(ALL))
def test_attack(shared_bridge: Bridge, name: str, capfd: pytest.CaptureFixture[str]) -> None:
    case = ALL[name]
    done = attack(shared_bridge, case.source, capfd, timeout=case.timeout)
    result = done.result
    etype = result.error.type if result.error else "ok"
    print(f"\n[attack-timing] {name} {done.elapsed:.3f}s {etype}")
    if isinstance(case.expect, set):
        assert not result.ok, f"succeeded with {result.value!r}"
        assert result.error is not None and result.error.type in case.expect, result.error
    elif isinstance(case.expect, tuple):
        assert result.ok, result.error
        assert result.value == case.expect[1]
    if case.memory:
        assert done.peak_rss < 1024 * MIB, f"peak RSS {done.peak_rss / MIB:.0f} MiB"


def test_attack_state_does_not_survive_runs(shared_bridge: Bridge) -> None:
    """Globals, library patches and namespace caches of one run are gone in the next."""
    poison = """
    leftover = "from the last run"
    string.upper = function() return "PWNED" end
    string.PWNED = true
    table.concat = nil
    math.pi = 3
    os.time = nil
    coroutine.wrap = nil
    return 1
    """
    check = """
    return {"clean", ("a"):upper(), string.upper("b"),
      tostring(string.PWNED), table.concat({"c", "d"}), math.pi > 3.14, type(os.time()),
      type(coroutine.wrap)}
    """
    assert shared_bridge.run(poison).ok
    for _ in range(3):  # whichever worker serves it
        result = shared_bridge.run(check)
        assert result.ok, result.error
        assert result.value == ["clean", "A", "B", "nil", "cd", True, "number", "function"]
        undefined = shared_bridge.run("return leftover")
        assert (
            undefined.error is not None and "undefined global 'leftover'" in undefined.error.message
        )


def test_attack_limit_cannot_be_swallowed_and_returned(shared_bridge: Bridge) -> None:
    """A script that catches the timeout twenty times and then returns still ends in the limit."""
    src = """
    local caught = 0
    for i = 1, 20 do
      local ok = pcall(function() while true do end end)
      if not ok then caught = caught + 1 end
    end
    return "caught " .. caught
    """
    r = shared_bridge.run(src, limits={"timeout": 1})
    assert r.error is not None and r.error.type in CPU


# What follows each encode is a loop the JIT would compile: with a small instruction limit it
# must end in InstructionLimitError, raised by the count hook. Had a trace or the JIT outlived
# the encoder, the hook would not fire and only the worker kill would end the run (TimeoutError).
AFTER_ENCODE = {
    "json_encode": _WIDE + "local s = app.json.encode(t)\n",
    "binding_params": _WIDE
    + "pcall(app.integrations.loops.find_contact, {email = 0/0, rows = t})\n",
    "failed_encode": _WIDE + "t[#t + 1] = t pcall(app.json.encode, t)\n",
    "coroutine": _WIDE + "coroutine.wrap(function() app.json.encode(t) end)()\n",
    "over_budget": _WIDE + 'pcall(app.json.encode, {t, string.rep("x", 2e6)})\n',
    "json_decode": _WIDE + "local back = app.json.decode(app.json.encode(t))\n",
    "failed_decode": _WIDE
    + 'local s = app.json.encode(t) pcall(app.json.decode, s:sub(1, -2) .. ",1e400]")\n',
}
_HOT = "local x = 0 for i = 1, 1e15 do x = x + i % 7 end\nlocal function f(n) return n + 1 end\n"


@pytest.mark.parametrize("name", list(AFTER_ENCODE))
def test_attack_hook_counts_again_after_encoding(
    shared_bridge: Bridge, name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    for loop in (
        _HOT,
        "local function f(n) return n + 1 end local n = 0 while true do n = f(n) end\n",
    ):
        done = attack(
            shared_bridge,
            AFTER_ENCODE[name] + loop,
            capfd,
            timeout=2.0,
            limits={"instructions": 20_000_000},
        )
        error = done.result.error
        assert error is not None and error.type == "InstructionLimitError", error


# -- concurrency under attack ------------------------------------------------------------------

# Under this much CPU contention a bomb may use up its second before it fills the heap.
BOMB = {"MemoryError", "TimeoutError"}
HOSTILE = [
    ("while true do end", {"TimeoutError", "InstructionLimitError"}),
    ('return string.find(string.rep("a", 200000), "a-b")', {"TimeoutError"}),
    ('local s = "x" while true do s = s .. s end', BOMB),
    ('return string.match(string.rep("a", 5000), ".-.-.-b")', {"TimeoutError"}),
    ('for i = 1, 1e7 do print("flood") end', {"OutputLimitError", "TimeoutError"}),
    ("local t = {} while true do t[#t + 1] = {} end", BOMB),
]
NORMAL = """
local input = ...
local words = {}
for w in input.text:gmatch("%a+") do words[#words + 1] = w:upper() end
local s = 0
for i = 1, input.n do s = s + i end
print("job", input.id)
return {id = input.id, words = table.concat(words, "-"), sum = s}
"""


def test_attack_mixed_with_normal_runs_from_threads(
    loops_emulator: Any, guarded_secrets: list[str]
) -> None:
    """Hostile runs (loops, C stalls, memory bombs, floods) and normal runs share a pool of two
    workers from eight threads; every normal run succeeds with its own correct result."""
    bridge = hostile_bridge(loops_emulator.base_url)
    try:
        assert bridge.run("return 1").ok
        jobs: list[tuple[str, Any, Any]] = []
        for i in range(24):
            if i % 4 == 1:
                src, types = HOSTILE[(i // 4) % len(HOSTILE)]
                jobs.append(("hostile", src, types))
            else:
                jobs.append(("normal", NORMAL, {"id": i, "text": f"alpha beta {i}", "n": 1000 + i}))
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as ex:
            futures = []
            for kind, src, extra in jobs:
                if kind == "hostile":
                    futures.append(ex.submit(bridge.run, src, limits={"timeout": 1}))
                else:
                    futures.append(ex.submit(bridge.run, src, extra, limits={"timeout": 2}))
            results = [f.result() for f in futures]
        elapsed = time.monotonic() - t0
    finally:
        bridge.close()
    for (kind, _src, extra), r in zip(jobs, results, strict=True):
        if kind == "hostile":
            assert not r.ok and r.error is not None and r.error.type in extra, r.error
        else:
            n = extra["n"]
            assert r.ok, (extra, r.error)
            assert r.value == {
                "id": extra["id"],
                "words": "ALPHA-BETA",
                "sum": n * (n + 1) // 2,
            }
            assert r.output == f"job\t{extra['id']}\n"
    for key in KEYS.values():
        assert all(key not in (r.output + str(r.value) + str(r.error)) for r in results)
    print(f"\n[attack-timing] mixed-24-runs {elapsed:.3f}s")
