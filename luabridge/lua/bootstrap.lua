-- Trusted bootstrap of one luabridge Lua state; loaded by luabridge/sandbox.py.
--
-- It runs before any script, captures the real library functions in locals, turns the JIT off,
-- hides the VM-wide string metatable, and returns `prepare(limits...)`, which builds the sandbox
-- environment for one run and returns the runner, and `settle()`, which collects a finished
-- run's garbage. A state serves several runs (see sandbox.py): everything a script can reach
-- is built afresh by `prepare`, and the few VM-wide things a script can touch (the string
-- metatable's __index, the math.random state, the JIT, the hook) are reset by it, so nothing
-- of one run reaches the next. Scripts never see this chunk's locals: the
-- sandbox has no debug, getfenv or loaders, so upvalues stay out of reach. Scripts do get
-- setmetatable, getmetatable and the raw functions: every metatable the sandbox shares (the
-- string metatable, the environment, app and its namespaces, app.null, the shape markers) is
-- protected with __metatable, rawset refuses the read-only tables, and the trusted code reads
-- script tables with raw access only, so a script's metamethods run only for the script.
--
-- Limits live here (count hook, output cap, depth caps, conversion budgets). Once a limit trips,
-- the hook raises in every script frame and every wrapper that can catch an error (pcall,
-- xpcall, coroutine.resume/wrap, gsub callbacks) re-raises it, so a script cannot swallow it.

-- The encoder (json.lua) and the app namespace (app.lua) are separate chunks, passed in as
-- bytecode by sandbox.py and loaded here, after the clean-up below. `service` is the one Python
-- callable of the state (every host operation, by name) and `clock` the host's monotonic clock;
-- both live only in upvalues.
local json_code, app_code, service, clock = ...

local jit = jit
if jit then jit.off(); jit.flush() end
local jit_on, jit_never = jit and jit.on or function() end, jit and jit.off or function() end
local jit_flush = jit and jit.flush or function() end

local type, next, pairs, ipairs, select, tostring, tonumber = type, next, pairs, ipairs, select, tostring, tonumber
local error, pcall, xpcall, unpack = error, pcall, xpcall, unpack
local rawget, rawset, rawequal, setmetatable, getmetatable = rawget, rawset, rawequal, setmetatable, getmetatable
local loadstring, setfenv, collectgarbage = loadstring, setfenv, collectgarbage
local sethook, gethook, getinfo, getregistry = debug.sethook, debug.gethook, debug.getinfo, debug.getregistry
local dgetmetatable, dsetmetatable = debug.getmetatable, debug.setmetatable
local lib_bit = bit
local sbyte, schar, sfind, sformat, sgsub, srep, ssub, smatch = string.byte, string.char, string.find, string.format, string.gsub, string.rep, string.sub, string.match
local sgmatch = string.gmatch
local tconcat, tinsert, tsort = table.concat, table.insert, table.sort
local mfloor, mhuge = math.floor, math.huge
local co_create, co_resume, co_status, co_running = coroutine.create, coroutine.resume, coroutine.status, coroutine.running
local co_yield = coroutine.yield
local math_randomseed = math.randomseed
-- The VM-wide string metatable: each run points its __index at that run's string copy.
local smt = dgetmetatable("")
smt.__metatable = false

-- LuaJIT's table.new, for the trusted decoder (json.lua), taken before the preloads go.
local table_new
do
  local ok, f = pcall(require, "table.new")
  if ok and type(f) == "function" then table_new = f end
end

-- Defence in depth: nothing below is reachable from scripts, but a state that never held these
-- cannot leak them.
do
  local reg = getregistry()
  if type(reg.POBJECT) == "table" then reg.POBJECT.__metatable = false end
  local loaded = reg._LOADED
  if type(loaded) == "table" then
    loaded.python = nil; loaded.ffi = nil; loaded.jit = nil
    for k in pairs(loaded) do if type(k) == "string" and ssub(k, 1, 4) == "jit." then loaded[k] = nil end end
  end
  if type(reg._PRELOAD) == "table" then
    for k in pairs(reg._PRELOAD) do reg._PRELOAD[k] = nil end
  end
  python = nil
end

local make_encoder = assert(loadstring(json_code, "=json.lua"))(table_new)
local make_app = assert(loadstring(app_code, "=app.lua"))()

local SCRIPT_SOURCE = "@script.lua"
local STEP = 1000                       -- instructions between two hook calls
local MEMORY_MESSAGE = "not enough memory"

local function pack(...) return {n = select("#", ...), ...} end

-- Lua stack headroom. A script can call into the trusted code with its Lua stack nearly full
-- (deep recursion), and a "stack overflow" raised by the trusted code's own set-up or clean-up
-- (outside its pcall) would leave the hook off, the collector stopped, the JIT on or the
-- memory headroom of a host call in place. Every trusted entry point that changes VM state or
-- calls into Python first checks, under pcall, that about 600 more slots fit; with that much
-- left, its clean-up and lupa's pushes cannot overflow.
-- The probe has unpack fill 600 slots (about a microsecond). A probe of three nested calls of a
-- 190-slot function cost a fifth of that, but each collection between runs took 7 us longer with
-- it in the state (a trivial run's settle 22 to 29 us).
local NO_ITEMS = {}
local function stack_probe() return select("#", unpack(NO_ITEMS, 1, 600)) end
local function stack_ok() return (pcall(stack_probe)) end
local STACK_MESSAGE = "stack overflow (too little Lua stack left to call into the sandbox's trusted code; recurse less deeply)"
-- What the string metatable's __index points at between runs (see settle).
local NO_STRING = {}

-- Fixes for what scripts written for Lua 5.3+ or other languages most often contain, by a
-- pattern of the failing line (see syntax_message).
local SYNTAX_HINTS = {
  {"//", "'//' (floor division) is Lua 5.3; LuaJIT is Lua 5.1: write math.floor(a / b) (and comments start with --)"},
  {"!=", "'!=' is not Lua: write ~= for 'not equal'"},
  {"[%+%-%*/]=", "Lua has no compound assignment: write x = x + 1"},
  {"<<", "'<<' is Lua 5.3; LuaJIT is Lua 5.1: write bit.lshift(a, n)"},
  {">>", "'>>' is Lua 5.3; LuaJIT is Lua 5.1: write bit.rshift(a, n)"},
  {"[%w_%)%]]%s*&%s*[%w_%(]", "'&' is Lua 5.3; LuaJIT is Lua 5.1: write bit.band(a, b)"},
  {"[%w_%)%]]%s*|%s*[%w_%(]", "'|' is Lua 5.3; LuaJIT is Lua 5.1: write bit.bor(a, b)"},
  {"[%w_%)%]]%s*~%s*[%w_%(]", "'~' (xor) is Lua 5.3; LuaJIT is Lua 5.1: write bit.bxor(a, b)"},
}

local HAS = "assert error ipairs next pairs pcall select tonumber tostring type unpack xpcall print " ..
  "setmetatable getmetatable rawget rawset rawequal string table math bit os coroutine app"
-- Names scripts reach for that the sandbox does not have, and what to write instead.
local JSON_HINT = "JSON is built in: app.json.encode(value) and app.json.decode(text)"
local MISSING = {
  require = "the sandbox loads no modules; " .. JSON_HINT .. ", and string, table, math, bit, os " ..
    "(time, clock, date, difftime) and coroutine are already there",
  json = JSON_HINT, cjson = JSON_HINT, dkjson = JSON_HINT,
  arg = "a script gets its input as the chunk's arguments, not in 'arg': write " ..
    "'local input = ...' on the first line and read input.email, input.name and so on",
}

local function copy(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

-- A finished run's garbage collected; returns the heap's size in KB, which sandbox.py compares
-- with the size of the state before its first run. A full collection only halves the VM's
-- string buffer and string table after a run that built large strings, so it is repeated (at
-- most four times) until the heap is down to `target` KB.
local function settle(target)
  -- The finished run's string copy is no longer reachable through the string metatable: it is
  -- collected here with the rest, and nothing the run stored in it survives into the next run.
  smt.__index = NO_STRING
  local kb
  for _ = 1, 4 do
    collectgarbage("collect")
    kb = collectgarbage("count")
    if target == nil or kb <= target then break end
  end
  return kb
end

-- One run's environment and runner, built afresh on every call. The limits come as numbers.
local function prepare(max_instructions, deadline, timeout, max_output, max_result, max_args, max_depth, memory_limit)
  -- What a previous run of this state may have left in the VM (a run that ended inside the
  -- encoder or the decoder leaves the JIT on, the hook off and the collector paused): the JIT
  -- off, no hook, the collector running, the random sequence of a fresh state.
  jit_never(); jit_flush()
  sethook()
  collectgarbage("restart")
  math_randomseed(0)

  -- Run state. `tripped` holds the error type of the limit that ended the run.
  local tripped, tripped_msg = nil, nil
  local hook_calls, peak_kb = 0, 0
  local out, out_n, out_bytes = {}, 0, 0
  local raised = {}            -- message -> error type, for errors raised by bindings
  local gsub_depth, co_depth = 0, 0

  local function trip(kind, msg)
    if not tripped then tripped, tripped_msg = kind, msg end
    error(tripped_msg, 0)
  end

  local function timeout_message()
    return sformat("time limit reached (%.3g s); raise the timeout or do less work per run", timeout)
  end

  local function hook()
    if tripped then
      local info = getinfo(2, "S")
      if info and info.source == SCRIPT_SOURCE then error(tripped_msg, 0) end
      return
    end
    hook_calls = hook_calls + 1
    local kb = collectgarbage("count")
    if kb > peak_kb then peak_kb = kb end
    local kind, msg
    if hook_calls * STEP > max_instructions then
      kind, msg = "InstructionLimitError", sformat("instruction limit reached (%d instructions); raise limits.instructions or do less work per run", max_instructions)
    elseif clock() > deadline then
      kind, msg = "TimeoutError", timeout_message()
    end
    if kind then
      tripped, tripped_msg = kind, msg
      local info = getinfo(2, "S")
      if info and info.source == SCRIPT_SOURCE then error(msg, 0) end
    end
  end

  local function is_memory_error(e) return e == MEMORY_MESSAGE end

  -- Only the trusted encoder runs with the JIT on, and with the count hook paused (a hook call
  -- while a trace is recorded aborts the trace); it bounds its own work (see json.lua). Turning
  -- the JIT off discards every trace and puts the hook back, which checks the clock within its
  -- next 1000 instructions; the runner checks it after encoding the result.
  local hooked = false
  local function encoder_enter()
    if gethook() ~= nil then hooked = true; sethook() end
    jit_on()
  end
  local function encoder_leave()
    jit_never(); jit_flush()
    if hooked then hooked = false; sethook(hook, "", STEP) end
  end

  -- After any protected call: a tripped limit or a memory error ends the run.
  local function after_protected(r)
    if tripped then error(tripped_msg, 0) end
    -- Defence in depth: script code never runs without the count hook. Should trusted code have
    -- been left half-way (it checks its stack room so that it cannot be), the hook, the
    -- collector and the interpreter are put back here, at the script's next protected call.
    if gethook() == nil then
      jit_never(); jit_flush(); collectgarbage("restart"); hooked = false
      sethook(hook, "", STEP)
    end
    if not r[1] and is_memory_error(r[2]) then
      trip("MemoryError", sformat("memory limit reached (%d bytes); use less memory per run", memory_limit))
    end
    return unpack(r, 1, r.n)
  end

  ---------------------------------------------------------------------------
  -- Value markers shared with the converter.
  local null = setmetatable({}, {__metatable = "app.null", __tostring = function() return "app.null" end,
    __newindex = function() error("app.null is read-only", 2) end})
  local array_mt = {__metatable = "app.array"}
  local object_mt = {__metatable = "app.object"}


  ---------------------------------------------------------------------------
  -- Lua -> JSON text (json.lua): raw access only, with budgets.
  -- The read-only tables app.lua hands out: `protected[t]` is the name of each (rawset refuses
  -- them, the encoder will not convert them) and `listings[t]` what pairs() and next() show for
  -- it (a function that builds the name -> value table on first use, or that table).
  local protected = {[null] = "app.null"}
  local listings = {}

  local _, try_encode, try_decode = make_encoder(null, protected, array_mt, object_mt, dgetmetatable, max_depth, is_memory_error,
    function() return tripped, tripped_msg end, encoder_enter, encoder_leave, stack_ok, STACK_MESSAGE)


  ---------------------------------------------------------------------------
  -- The sandbox's versions of functions that can catch errors or recurse in C.
  local function s_pcall(f, ...)
    return after_protected(pack(pcall(f, ...)))
  end
  local function s_xpcall(f, handler, ...)
    -- Once a limit has tripped, the script's message handler is no longer called: a handler
    -- that loops would otherwise be re-entered for every error the hook raises inside it.
    local h = handler
    if type(handler) == "function" then
      h = function(e)
        if tripped then return tripped_msg end
        return handler(e)
      end
    end
    return after_protected(pack(xpcall(f, h, ...)))
  end
  local function s_resume(co, ...)
    if co_depth >= 100 then error("coroutine.resume: coroutines nested deeper than 100 levels", 2) end
    co_depth = co_depth + 1
    local r = pack(co_resume(co, ...))
    co_depth = co_depth - 1
    return after_protected(r)
  end
  local function s_wrap(f)
    local co = co_create(f)
    return function(...)
      -- Checked here too, so that the error points at the script's line, not at this one.
      if co_depth >= 100 then error("coroutine.wrap: coroutines nested deeper than 100 levels", 2) end
      local r = pack(s_resume(co, ...))
      if r[1] then return unpack(r, 2, r.n) end
      error(r[2], 0)
    end
  end
  local function s_gsub(s, pattern, repl, n)
    if type(repl) ~= "function" then return sgsub(s, pattern, repl, n) end
    if gsub_depth >= 20 then error("string.gsub: callbacks nested deeper than 20 levels", 2) end
    gsub_depth = gsub_depth + 1
    local r = pack(pcall(sgsub, s, pattern, repl, n))
    gsub_depth = gsub_depth - 1
    after_protected(r)
    if not r[1] then error(r[2], 0) end
    return r[2], r[3]
  end
  local function s_rep(s, n, sep)
    if type(n) == "number" and n > 1 and (type(s) == "string" or type(s) == "number") then
      local total = #tostring(s) * n
      if type(sep) == "string" or type(sep) == "number" then total = total + #tostring(sep) * (n - 1) end
      if total > memory_limit then
        trip("MemoryError", sformat("string.rep would build %.0f bytes, over the memory limit of %d bytes", total, memory_limit))
      end
    end
    return srep(s, n, sep)
  end

  local function s_print(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    local line = tconcat(parts, "\t") .. "\n"
    out_bytes = out_bytes + #line
    if out_bytes > max_output then
      trip("OutputLimitError", sformat("output limit reached (%d bytes printed); print less or raise limits.output_bytes", max_output))
    end
    out_n = out_n + 1; out[out_n] = line
  end

  ---------------------------------------------------------------------------
  -- Library copies for this run. Each run gets its own tables, so changes die with the run.
  local s_string = {}
  for _, k in ipairs({"byte", "char", "find", "format", "gmatch", "len", "lower", "match", "reverse", "sub", "upper"}) do
    s_string[k] = string[k]
  end
  s_string.gsub, s_string.rep = s_gsub, s_rep
  local s_table = {insert = table.insert, remove = table.remove, concat = table.concat, sort = table.sort,
    maxn = table.maxn, unpack = unpack}
  local s_math = copy(math); s_math.randomseed = nil
  local s_os = {time = os.time, clock = os.clock, date = os.date, difftime = os.difftime}
  local s_coroutine = {create = co_create, resume = s_resume, wrap = s_wrap, yield = co_yield,
    status = co_status, running = co_running, isyieldable = coroutine.isyieldable}
  local s_bit = copy(lib_bit)

  -- The VM-wide string metatable now points at this run's copy (it cannot be read by scripts).
  smt.__index = s_string


  -- Errors raised for the script carry the error type the host told us.
  -- The script's source, for guess_line.
  local script_source

  -- The line a failing binding call was written on. Lua blames the frame that called the
  -- binding, which is the wrong line after a tail call (`return loops.x{...}`, in the main chunk
  -- or in a helper function): Lua has dropped that frame, and the frame left is the helper's
  -- caller, or none. So the frame's line is kept only when its text names the action; otherwise
  -- the script's call sites of the action are the candidates (the name followed by `(`, `{` or
  -- a string), narrowed by the parameter names of the failing call. Returns the line, or nil and
  -- the candidate lines.
  local function line_text(n)
    local pos, line = 1, 1
    while line < n do
      local nl = sfind(script_source, "\n", pos, true)
      if not nl then return nil end
      pos, line = nl + 1, line + 1
    end
    local nl = sfind(script_source, "\n", pos, true)
    return ssub(script_source, pos, nl and nl - 1 or #script_source)
  end
  local function call_line(name, keys, info)
    local framed = info and info.source == SCRIPT_SOURCE and info.currentline > 0 and info.currentline or nil
    if type(name) ~= "string" or not script_source or not smatch(name, "^[%a_][%w_]*$") then return framed end
    local word = "%f[%w_]" .. name .. "%f[^%w_]"
    if framed then
      local text = line_text(framed)
      if text and sfind(text, word) then return framed end
    end
    local sites, best, best_n = 0, {}, -1
    local pos, line, counted = 1, 1, 1
    -- At most 200 call sites are looked at, and newlines are counted once, from the last site
    -- on: a script that names the action many times costs linear time here, not quadratic.
    while sites < 200 do
      local s, e = sfind(script_source, word, pos)
      if not s then break end
      pos = e + 1
      local rest = ssub(script_source, e + 1, e + 400)
      local open = smatch(rest, "^%s*([%({\"'%[])")
      if open then
        local _, newlines = sgsub(ssub(script_source, counted, s), "\n", "")
        line, counted = line + newlines, s + 1
        local args = smatch(rest, "^%s*(%b())") or smatch(rest, "^%s*(%b{})") or ssub(rest, 1, 200)
        local n = 0
        for _, key in ipairs(keys or {}) do
          if smatch(key, "^[%a_][%w_]*$") and (sfind(args, "%f[%w_]" .. key .. "%s*=")
              or sfind(args, "%[%s*[\"']" .. key .. "[\"']%s*%]")) then
            n = n + 1
          end
        end
        sites = sites + 1
        if n > best_n then best, best_n = {line}, n
        elseif n == best_n and best[#best] ~= line then best[#best + 1] = line end
      end
    end
    -- Past the cap the failing call may be one not looked at: no guess is better than a wrong one.
    if sites == 0 or sites >= 200 then return framed end
    if #best == 1 then return best[1] end
    return nil, best
  end

  -- Raise a script mistake, blamed on the script line `level` frames up; `name` (an action
  -- name) and `keys` (the parameter names of the call) find the call's own line when a tail
  -- call has hidden it (see call_line).
  local function raise(kind, msg, level, name, keys)
    local info = getinfo(level + 1, "Sl")
    local framed = info and info.source == SCRIPT_SOURCE and info.currentline > 0 and info.currentline or nil
    local line, candidates = call_line(name, keys, info)
    if line and line ~= framed then
      msg = sformat("script.lua:%d: %s", line, msg); level = -1
    elseif not line and candidates then
      local shown = tconcat(candidates, ", ", 1, #candidates > 10 and 10 or #candidates)
      if #candidates > 10 then shown = shown .. sformat(" and %d more", #candidates - 10) end
      msg = sformat("script.lua: %s (the failing call is one of the %s calls on lines %s)", msg, name, shown)
      level = -1
    end
    raised[msg] = kind
    error(msg, level + 1)
  end

  -- Empty tables in the result: `{}` has no shape of its own, so the script's text decides.
  -- A name the script fills with string keys (`counts[name] = ...`, `stats.total = ...`) is a
  -- map, unless it is also appended to (`table.insert(t, v)`, `t[#t + 1] = v`); an empty table
  -- returned under such a name (`{counts = counts}`, or a key assigned from one, `by_source =
  -- counts`), or returned itself (`return counts`), comes back as an object. Worked out once,
  -- and only when a result holds an empty table.
  local object_names
  local function find_object_names()
    local src = script_source or ""
    -- The patterns run in C, where the hook cannot stop them: past 256 KB of source the plain
    -- rule (an empty table is an array) holds, which keeps this under a tenth of a second.
    if #src > 262144 then return {}, false end
    local counters, lists, maps, names = {}, {}, {}, {}
    -- Number-valued keys: numeric for loops, the index of ipairs, and `n = n + 1` counters.
    for v in sgmatch(src, "for%s+([%a_][%w_]*)%s*=") do counters[v] = true end
    for v in sgmatch(src, "for%s+([%a_][%w_]*)%s*,%s*[%a_][%w_]*%s+in%s+ipairs") do counters[v] = true end
    for v, w in sgmatch(src, "([%a_][%w_]*)%s*=%s*([%a_][%w_]*)%s*%+") do
      if v == w then counters[v] = true end
    end
    for v in sgmatch(src, "table%.insert%s*%(%s*([%a_][%w_]*)") do lists[v] = true end
    for v in sgmatch(src, "([%a_][%w_]*)%s*%[%s*#") do lists[v] = true end
    -- A key without brackets of its own, on one line: every match attempt ends at the next
    -- bracket, so a hostile source costs linear time.
    for v, k in sgmatch(src, "([%a_][%w_]*)%s*%[([^%[%]\n]*)%]%s*=[^=]") do
      if not smatch(k, "^%s*#") and not smatch(k, "^%s*[%d%.%-]") and not counters[smatch(k, "^%s*([%a_][%w_]*)%s*$") or ""] then
        maps[v] = true
      end
    end
    for v in sgmatch(src, "([%a_][%w_]*)%.[%a_][%w_]*%s*=[^=]") do maps[v] = true end
    for v in next, lists do maps[v] = nil end
    for v in next, maps do names[v] = true end
    for key, v in sgmatch(src, "([%a_][%w_]*)%s*=%s*([%a_][%w_]*)%s*[,;}\n]") do
      if maps[v] then names[key] = true end
    end
    local root = smatch(src, "return%s+([%a_][%w_]*)%s*;?%s*$")
    return names, root and maps[root] or false
  end
  local function empty_object(key)
    if not object_names then
      local names, root = find_object_names()
      object_names = {names = names, root = root}
    end
    if key == nil then return object_names.root end
    return type(key) == "string" and object_names.names[key] == true
  end

  -- A syntax error, with the fix for what scripts written for Lua 5.3+ or other languages
  -- most often contain.
  local function syntax_message(source, cerr)
    local line = tonumber(smatch(cerr, "^script%.lua:(%d+):"))
    if not line then return cerr end
    script_source = source
    local text = line_text(line)
    if not text then return cerr end
    -- Strip strings first, so that a URL's // or an "a != b" inside quotes is no hint.
    text = sgsub(sgsub(text, '"[^"]*"', '""'), "'[^']*'", "''")
    for _, h in ipairs(SYNTAX_HINTS) do
      if sfind(text, h[1]) then return cerr .. "; " .. h[2] end
    end
    return cerr
  end

  local OK, RAISE, LIMIT = "ok", "raise", "limit"

  local function call_host(op, ...)
    if not stack_ok() then raise("RuntimeError", STACK_MESSAGE, 2) end
    local status, a, b = service(op, ...)
    service("restore")
    if status == OK then return a end
    if status == LIMIT then trip(b, a) end
    -- Level 2: our callers tail-call us, so the frame above this one is the script's.
    raise(b or "RuntimeError", a, 2)
  end

  local app = make_app({
    service = service, trip = trip, raise = raise, call_host = call_host, try_encode = try_encode,
    stack_ok = stack_ok, stack_message = STACK_MESSAGE,
    null = null, array_mt = array_mt, object_mt = object_mt, max_args = max_args, max_result = max_result,
    protected = protected, listings = listings, raw_getmetatable = dgetmetatable,
    raw_setmetatable = dsetmetatable,
  })

  -- next() and pairs() see through the namespace proxies (which hold no fields of their own) to
  -- their listing; every other table is iterated as it is.
  local function listing_of(t)
    local l = listings[t]
    if type(l) == "function" then l = l(); listings[t] = l end
    return l
  end
  local function s_next(t, k)
    local l = listings[t]
    if l ~= nil then return next(listing_of(t), k) end
    return next(t, k)
  end
  local function s_pairs(t)
    if listings[t] ~= nil then return s_next, t, nil end
    return pairs(t)
  end

  ---------------------------------------------------------------------------
  -- The script environment: an allow-list. Reading a name that is not defined raises.
  local env = {}
  -- Both raise through `raise`, which names the script's line also when the script tail-calls
  -- them (`return rawset(...)`), where Lua's own position would be missing.
  local function s_rawset(t, k, v)
    local name = type(t) == "table" and protected[t]
    if name then raise("RuntimeError", sformat("rawset: %s is read-only (cannot set '%s')", name, tostring(k)), 2, "rawset") end
    if rawequal(t, env) and k == "app" then raise("RuntimeError", "global 'app' is read-only", 2, "rawset") end
    return rawset(t, k, v)
  end
  local function s_setmetatable(t, mt)
    local msg
    if type(t) ~= "table" then
      msg = sformat("bad argument #1 to 'setmetatable' (table expected, got %s)", type(t))
    elseif mt ~= nil and type(mt) ~= "table" then
      msg = sformat("bad argument #2 to 'setmetatable' (nil or table expected, got %s)", type(mt))
    else
      local m = dgetmetatable(t)
      if m == nil or rawget(m, "__metatable") == nil then return setmetatable(t, mt) end
      msg = "cannot change a protected metatable"
    end
    raise("RuntimeError", msg, 2, "setmetatable")
  end
  local base = {
    assert = assert, error = error, ipairs = ipairs, next = s_next, pairs = s_pairs, pcall = s_pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
    xpcall = s_xpcall, print = s_print,
    setmetatable = s_setmetatable, getmetatable = getmetatable, rawget = rawget, rawset = s_rawset,
    rawequal = rawequal,
    string = s_string, table = s_table, math = s_math, os = s_os, coroutine = s_coroutine, bit = s_bit,
    app = app, _VERSION = _VERSION,
  }
  base._G = env
  setmetatable(env, {
    __index = function(_, k)
      local v = base[k]
      if v ~= nil then return v end
      local hint = MISSING[k]
      if hint then error(sformat("undefined global '%s': %s", tostring(k), hint), 2) end
      error(sformat("undefined global '%s' (the sandbox has: %s)", tostring(k), HAS), 2)
    end,
    __newindex = function(t, k, v)
      if k == "app" then error("global 'app' is read-only", 2) end
      rawset(t, k, v)
    end,
    __metatable = false,
  })

  local function message_of(e)
    local t = type(e)
    if t == "string" then return e end
    if t == "nil" then return "nil (error() was called without a message)" end
    if t == "number" or t == "boolean" then return tostring(e) end
    return sformat("(error object is a %s value; pass a string to error())", t)
  end

  -- Instructions, peak memory and output bytes, as three numbers (cheaper for the host to read
  -- than a table).
  local function usage()
    local kb = collectgarbage("count")
    if kb > peak_kb then peak_kb = kb end
    return hook_calls * STEP, peak_kb * 1024, out_bytes
  end

  -- The runner: compile, run under the hook, convert the result. Returns a status and fields;
  -- it never raises except when the heap itself is exhausted. Returned with it: what the host
  -- needs to build values in this state (app.null, makers of marked empty tables, and the
  -- trusted JSON decoder for large values, see json.lua).
  local function new_object() return setmetatable({}, object_mt) end
  local function new_array() return setmetatable({}, array_mt) end
  return function(source, input)
    if sbyte(source, 1) == 27 then
      return "error", "SyntaxError", "binary (precompiled) chunks are not accepted; send Lua source text", tconcat(out), usage()
    end
    local chunk, cerr = loadstring(source, SCRIPT_SOURCE)
    if not chunk then
      -- The compiler ran out of memory: that is the memory limit (and the state is closed), not
      -- a mistake in the script.
      if is_memory_error(cerr) then
        return "error", "MemoryError", sformat("memory limit reached while compiling the script (%d bytes); send a smaller script, or pass large data as the input", memory_limit), "", usage()
      end
      return "error", "SyntaxError", syntax_message(source, cerr), "", usage()
    end
    script_source = source
    -- The script's functions are never compiled, even while the encoder has the JIT on: a
    -- trace that reached one would run it without the count hook.
    jit_never(chunk, true)
    setfenv(chunk, env)
    sethook(hook, "", STEP)
    local r = pack(xpcall(chunk, function(e) return e end, input))
    -- A script that spent its time inside one C call (where the hook never runs) and then
    -- returned at once still ran out of time: the outcome is the time limit, not its value.
    if not tripped and clock() > deadline then
      tripped, tripped_msg = "TimeoutError", timeout_message()
    end
    local ok, text, kind, msg
    if r[1] and not tripped then
      ok, text, msg = try_encode(r[2], "result", max_result, empty_object)
      if not ok then kind = text end
    end
    sethook()
    if not tripped and clock() > deadline then tripped, tripped_msg = "TimeoutError", timeout_message() end
    local output = tconcat(out)
    if tripped then return "error", tripped, tripped_msg, output, usage() end
    if not r[1] then
      local m = message_of(r[2])
      if is_memory_error(m) then
        return "error", "MemoryError", sformat("memory limit reached (%d bytes); use less memory per run", memory_limit), output, usage()
      end
      local etype = "RuntimeError"
      for raised_msg, rkind in next, raised do
        if #m >= #raised_msg and ssub(m, -#raised_msg) == raised_msg then etype = rkind; break end
      end
      if #m > 8192 then m = ssub(m, 1, 8192) .. "... (truncated)" end
      return "error", etype, m, output, usage()
    end
    if not ok then return "error", kind, msg, output, usage() end
    return "ok", text, nil, output, usage()
  end, null, new_object, new_array, try_decode
end

return prepare, settle
