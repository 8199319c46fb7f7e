-- Trusted Lua -> JSON encoder of a luabridge state; loaded by bootstrap.lua, never by scripts.
--
-- It reads tables with `next` and `rawget` only, never calls script code (no metamethod runs;
-- a metatable the script set is ignored, so a class instance converts as its own fields),
-- and keeps its own budgets: a byte budget per call and the run's depth cap. It fails with
-- error(ENCODE_FAIL) after setting the failure's kind and message, so callers go through the
-- protected `try_encode`.

local type, next, tostring, tonumber, pcall = type, next, tostring, tonumber, pcall
local collectgarbage, setmetatable = collectgarbage, setmetatable
local rawget, rawequal = rawget, rawequal
local error = error
local sbyte, schar, sfind, sformat, sgsub, smatch, ssub = string.byte, string.char, string.find, string.format, string.gsub, string.match, string.sub
local tconcat = table.concat
-- LuaJIT's table.new (a table with room for its entries), for the decoder: the bootstrap's
-- argument to this chunk.
local tnew = ... or function() return {} end
local mfloor, mhuge = math.floor, math.huge

-- `null`: the run's app.null; `protected`: the run's read-only tables (app and its namespaces),
-- by name, which never convert; `array_mt` / `object_mt`: the shape markers' metatables;
-- `raw_getmetatable`: debug.getmetatable (a script's __metatable field cannot fake a marker);
-- `max_depth`: the nesting cap; `is_memory_error(e)`: whether an error value is the heap's;
-- `limit_state()`: the tripped limit's kind and message, if any; `enter()` / `leave()` turn the
-- JIT compiler on for the encoder alone (and pause the count hook) and off again (which also
-- discards every trace, and puts the hook back); `stack_ok()` whether the Lua stack has room
-- for the trusted code's set-up and clean-up, and `stack_message` the error when it has not.
-- Returns encode(value, what, budget) and try_encode(value, what, budget).
--
-- The encoder runs with the JIT on: interpreted, it took most of the time of a large result.
-- A compiled trace never fires the count hook, so the encoder bounds its own work instead:
-- every string it writes is charged to the byte budget before it is scanned or escaped, a
-- table's entries are charged as soon as one pass of `next` has counted them (the memory limit
-- bounds that pass), and nesting stops at `max_depth`. It calls no script code, so no script code
-- runs while the JIT is on; the script's chunk is also marked never to be compiled.
return function(null, protected, array_mt, object_mt, raw_getmetatable, max_depth, is_memory_error, limit_state,
    enter, leave, stack_ok, stack_message)
  local ENCODE_FAIL = {}
  local fail_kind, fail_msg
  local ESC = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
  for i = 0, 31 do local c = schar(i); if not ESC[c] then ESC[c] = sformat("\\u%04x", i) end end
  ESC[schar(127)] = "\\u007f"

  local function utf8_ok(s)
    if not sfind(s, "[\128-\255]") then return true end
    local i, n = 1, #s
    while i <= n do
      local c = sbyte(s, i)
      if c < 0x80 then i = i + 1
      elseif c >= 0xC2 and c <= 0xDF then
        local c2 = sbyte(s, i + 1)
        if not c2 or c2 < 0x80 or c2 > 0xBF then return false end
        i = i + 2
      elseif c >= 0xE0 and c <= 0xEF then
        local c2, c3 = sbyte(s, i + 1, i + 2)
        if not c3 or c2 < 0x80 or c2 > 0xBF or c3 < 0x80 or c3 > 0xBF then return false end
        if (c == 0xE0 and c2 < 0xA0) or (c == 0xED and c2 > 0x9F) then return false end
        i = i + 3
      elseif c >= 0xF0 and c <= 0xF4 then
        local c2, c3, c4 = sbyte(s, i + 1, i + 3)
        if not c4 or c2 < 0x80 or c2 > 0xBF or c3 < 0x80 or c3 > 0xBF or c4 < 0x80 or c4 > 0xBF then return false end
        if (c == 0xF0 and c2 < 0x90) or (c == 0xF4 and c2 > 0x8F) then return false end
        i = i + 4
      else
        return false
      end
    end
    return true
  end

  -- `empty_object(key)` (optional) says whether an empty table found under `key` (nil for the
  -- root) is an object rather than an array; see bootstrap.lua.
  local function encode(root, what, budget, empty_object)
    local buf, nbuf, size = {}, 0, 0
    local path, visiting = {}, {}

    local function where()
      local parts = {what}
      local n = #path
      for i = 1, n do
        if n > 12 and i == 7 then parts[#parts + 1] = "..." end
        if n > 12 and i > 6 and i <= n - 4 then goto continue end
        local k = path[i]
        if type(k) == "number" then parts[#parts + 1] = sformat("[%d]", k)
        elseif #k > 40 then parts[#parts + 1] = sformat(".%s... (a %d-byte key)", ssub(k, 1, 24), #k)
        else parts[#parts + 1] = "." .. k end
        ::continue::
      end
      return tconcat(parts)
    end
    local function fail(kind, msg)
      fail_kind, fail_msg = kind, msg .. " (at " .. where() .. ")"
      error(ENCODE_FAIL, 0)
    end
    local function too_large()
      fail(what == "result" and "ResultLimitError" or "ValidationError",
        sformat("%s is larger than the limit of %d bytes", what, budget))
    end
    local function emit(s)
      size = size + #s
      if size > budget then too_large() end
      nbuf = nbuf + 1; buf[nbuf] = s
    end
    local function str(s)
      -- The size check comes first: validating a 50 MB string would take seconds of trusted
      -- code, where the hook does not raise.
      if size + #s + 2 > budget then too_large() end
      if not utf8_ok(s) then fail("ValidationError", "string is not valid UTF-8") end
      if sfind(s, '[%c"\\\127]') then s = sgsub(s, '[%c"\\\127]', ESC) end
      emit('"'); emit(s); emit('"')
    end

    -- Most strings are ASCII without control characters, quotes or backslashes: one search
    -- tells, and they need neither UTF-8 validation nor escaping, only one budget check.
    -- `close` is what follows the closing quote (a key's colon). False means: use str().
    local function plain(s, close)
      local grown = size + #s + 1 + #close
      if grown > budget then return false end
      -- Printable ASCII but the quote and the backslash. A loop over the bytes, which the JIT
      -- compiles, costs a tenth of a string.find with a set: Lua's matcher starts afresh at
      -- every position.
      for i = 1, #s do
        local c = sbyte(s, i)
        if c < 32 or c > 126 or c == 34 or c == 92 then return false end
      end
      size = grown
      local n = nbuf
      buf[n + 1] = '"'; buf[n + 2] = s; buf[n + 3] = close
      nbuf = n + 3
      return true
    end

    local value
    function value(v, depth)
      local t = type(v)
      if t == "string" then if not plain(v, '"') then str(v) end
      elseif t == "number" then
        if v ~= v then fail("ValidationError", "NaN cannot be converted; use a number or app.null")
        elseif v == mhuge or v == -mhuge then fail("ValidationError", "infinity cannot be converted; use a finite number")
        elseif v == mfloor(v) and v >= -9007199254740992 and v <= 9007199254740992 then emit(sformat("%.0f", v))
        else
          -- %.17g writes some integral floats past 2^53 without a point; keep them floats.
          local s = sformat("%.17g", v)
          if not sfind(s, "[.eEn]") then s = s .. ".0" end
          emit(s)
        end
      elseif t == "boolean" then emit(v and "true" or "false")
      elseif t == "nil" then emit("null")
      elseif t == "table" then
        if rawequal(v, null) then emit("null"); return end
        local pname = protected[v]
        if pname then fail("ValidationError", sformat("%s cannot be converted; pass the values you need from it", pname)) end
        if depth >= max_depth then fail("ValidationError", sformat("tables are nested deeper than %d levels", max_depth)) end
        if visiting[v] then fail("ValidationError", "table contains itself (a cycle); pass a copy without the loop") end
        local mt = raw_getmetatable(v)
        local shape
        if rawequal(mt, array_mt) then shape = "array"
        elseif rawequal(mt, object_mt) then shape = "object" end
        visiting[v] = true
        local n, count, has_str, has_other = 0, 0, false, nil
        for k in next, v do
          count = count + 1
          local kt = type(k)
          if kt == "string" then has_str = true
          elseif kt == "number" and k >= 1 and k == mfloor(k) then if k > n then n = k end
          else has_other = k end
        end
        -- Every entry writes at least one byte: charge them now, so that a table met again and
        -- again (a DAG) costs its budget, not only the counting pass.
        if size + count > budget then too_large() end
        if has_other ~= nil then
          fail("ValidationError", sformat("table has a %s key; keys must be strings (objects) or 1..n (arrays)", type(has_other)))
        end
        if shape == nil then
          if count == 0 and empty_object and empty_object(path[#path]) then shape = "object"
          else shape = (count == 0 or not has_str) and "array" or "object" end
        end
        if shape == "array" then
          if has_str then fail("ValidationError", "table mixes string keys and array items; use one or the other") end
          if n ~= count then
            -- Number keys with gaps are most often a map keyed by number (counts[id] = 1).
            local name = path[#path]
            name = type(name) == "string" and smatch(name, "^[%a_][%w_]*$") and name or "t"
            fail("ValidationError", sformat("table has number keys with gaps (%d entries, highest key %d), so it is neither a list nor an object; " ..
              "if the keys are ids or counts, use string keys (%s[tostring(k)] = v); if it is a list, fill the gaps with app.null", count, n, name))
          end
          emit("[")
          for i = 1, n do
            if i > 1 then emit(",") end
            path[#path + 1] = i
            value(rawget(v, i), depth + 1)
            path[#path] = nil
          end
          emit("]")
        else
          if count ~= 0 and n > 0 then fail("ValidationError", "table mixes string keys and array items; use one or the other") end
          emit("{")
          local first = true
          for k, x in next, v do
            if not first then emit(",") end
            first = false
            if not plain(k, '":') then
              if sfind(k, "%z") then fail("ValidationError", "key contains a NUL byte") end
              str(k); emit(":")
            end
            path[#path + 1] = k
            value(x, depth + 1)
            path[#path] = nil
          end
          emit("}")
        end
        visiting[v] = nil
      else
        fail("ValidationError", sformat("a %s cannot be converted; pass strings, numbers, booleans, tables or app.null", t))
      end
    end
    value(root, 0)
    return tconcat(buf)
  end

  -- The encoder's set-up runs inside the protected call: a "stack overflow" (or anything else)
  -- raised there is caught like the encoder's own errors. The clean-up after it runs at the
  -- caller's level, which stack_ok() has checked has room for it, so it always runs: the hook,
  -- the collector and the JIT are back as they were whatever the encoder did.
  local function encode_paused(v, what, budget, empty_object)
    enter()
    -- The collector is paused while encoding: the encoder makes almost no garbage (what it
    -- writes stays in `buf` until the end), and each collector step would mark the whole
    -- heap, the value being encoded included; on a 10,000-contact result that was a quarter
    -- of the encoder's time. The memory limit is the allocator's and holds all the same.
    collectgarbage("stop")
    return encode(v, what, budget, empty_object)
  end

  local function try_encode(v, what, budget, empty_object)
    if not stack_ok() then return false, "RuntimeError", stack_message end
    -- Nothing between here and leave() can raise: pcall catches every error of the encoder (a
    -- full heap and a stack overflow too), its two results need no allocation, no hook runs,
    -- and collectgarbage neither allocates nor raises. Only a full heap is tried again, after a
    -- full collection with the collector running, since garbage the script left behind may be
    -- what filled it.
    local ok, r = pcall(encode_paused, v, what, budget, empty_object)
    collectgarbage("restart")
    if not ok and is_memory_error(r) then
      collectgarbage("collect")
      ok, r = pcall(encode_paused, v, what, budget, empty_object)
      collectgarbage("restart")
    end
    leave()
    local tripped, tripped_msg = limit_state()
    if tripped then return false, tripped, tripped_msg end
    if ok then return true, r end
    if r == ENCODE_FAIL then return false, fail_kind, fail_msg end
    if is_memory_error(r) then return false, "MemoryError", "memory limit reached while converting " .. what end
    return false, "RuntimeError", tostring(r)
  end

  -- JSON text -> Lua value, for the large values the host sends in (a run's input, an action's
  -- result): Python writes the text with json.dumps (compact separators, no ASCII escaping)
  -- after checking every key and type itself, which costs a fraction of building the tables
  -- from Python one crossing at a time. The shapes are those of luabridge/convert.py: null in an
  -- object leaves the key out, null in an array is app.null, an empty object or array gets its
  -- marker. Anything unexpected fails the decode, and the host converts the value the slow way,
  -- which gives the exact error (or the same value), so this path never decides what is valid.
  --
  -- Like the encoder it runs with the JIT on, the count hook paused and the collector paused,
  -- and bounds itself: it reads the text once from left to right (every step moves `pos` on
  -- or fails), nesting stops at `max_depth`, and its memory is the text's and the tables', both
  -- under the state's memory limit. It calls no script code; the text is the host's.
  local DECODE_FAIL = {}
  local UNESC = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t"}

  local function decode(s)
    local pos = 1
    -- The next backslash at or after `pos` (n + 1 when there is none): strings before it need
    -- no unescaping, and finding it once per escape keeps the whole scan linear.
    local n = #s
    local sizes = {}  -- depth -> the entries of the last object decoded there
    local slash = sfind(s, "\\", 1, true) or n + 1
    local value

    local function dfail() error(DECODE_FAIL, 0) end

    -- The string whose opening quote is at `pos`.
    local function str()
      local start = pos + 1
      local close = sfind(s, '"', start, true)
      if not close then dfail() end
      if close < slash then
        pos = close + 1
        return ssub(s, start, close - 1)
      end
      local parts, np, i = {}, 0, start
      while true do
        local c = sbyte(s, i)
        if c == nil then dfail() end
        if c == 34 then break end
        if c == 92 then
          local e = sbyte(s, i + 1)
          local plain = UNESC[e]
          if plain then
            np = np + 1; parts[np] = plain; i = i + 2
          elseif e == 117 then
            local code = tonumber(ssub(s, i + 2, i + 5), 16)
            -- json.dumps writes \u only for control characters here; a surrogate (or
            -- anything odd) goes the slow way.
            if not code or code >= 0xD800 and code <= 0xDFFF or #ssub(s, i + 2, i + 5) ~= 4 then dfail() end
            if code < 0x80 then np = np + 1; parts[np] = schar(code)
            elseif code < 0x800 then np = np + 1; parts[np] = schar(0xC0 + mfloor(code / 64), 0x80 + code % 64)
            else np = np + 1; parts[np] = schar(0xE0 + mfloor(code / 4096), 0x80 + mfloor(code / 64) % 64, 0x80 + code % 64) end
            i = i + 6
          else
            dfail()
          end
        else
          local j = sfind(s, '[\\"]', i)
          if not j then dfail() end
          np = np + 1; parts[np] = ssub(s, i, j - 1); i = j
        end
      end
      pos = i + 1
      slash = sfind(s, "\\", pos, true) or n + 1
      return tconcat(parts, "", 1, np)
    end

    function value(depth)
      local c = sbyte(s, pos)
      if c == 34 then return str()
      elseif c == 123 then -- {
        if depth >= max_depth then dfail() end
        pos = pos + 1
        if sbyte(s, pos) == 125 then pos = pos + 1; return setmetatable({}, object_mt) end
        -- Rows of a list mostly have the keys of the row before: sized for as many (up to
        -- 32), the table is not rehashed as it fills.
        local t, any, count = tnew(0, sizes[depth] or 0), false, 0
        while true do
          if sbyte(s, pos) ~= 34 then dfail() end
          local k = str()
          if sbyte(s, pos) ~= 58 then dfail() end
          pos = pos + 1
          local v = value(depth + 1)
          if not rawequal(v, null) then t[k] = v; any = true end
          count = count + 1
          c = sbyte(s, pos)
          pos = pos + 1
          if c == 125 then break end
          if c ~= 44 then dfail() end
        end
        sizes[depth] = count <= 32 and count or 32
        if not any then return setmetatable(t, object_mt) end
        return t
      elseif c == 91 then -- [
        if depth >= max_depth then dfail() end
        pos = pos + 1
        if sbyte(s, pos) == 93 then pos = pos + 1; return setmetatable({}, array_mt) end
        local t, i = {}, 0
        while true do
          i = i + 1
          t[i] = value(depth + 1)
          c = sbyte(s, pos)
          pos = pos + 1
          if c == 93 then break end
          if c ~= 44 then dfail() end
        end
        return t
      elseif c == 116 then
        if ssub(s, pos, pos + 3) ~= "true" then dfail() end
        pos = pos + 4; return true
      elseif c == 102 then
        if ssub(s, pos, pos + 4) ~= "false" then dfail() end
        pos = pos + 5; return false
      elseif c == 110 then
        if ssub(s, pos, pos + 3) ~= "null" then dfail() end
        pos = pos + 4; return null
      else
        local e = pos
        c = sbyte(s, e)
        while c and (c >= 48 and c <= 57 or c == 45 or c == 43 or c == 46 or c == 101 or c == 69) do
          e = e + 1; c = sbyte(s, e)
        end
        if e == pos then dfail() end
        local num = tonumber(ssub(s, pos, e - 1))
        -- An integer too large for a double would come back as infinity: the slow way
        -- reports it.
        if not num or num ~= num or num == mhuge or num == -mhuge then dfail() end
        pos = e
        return num
      end
    end

    local v = value(0)
    if pos ~= n + 1 then dfail() end
    return v
  end

  -- Returns true and the value, or false when the host must convert the value itself. Called
  -- without text, it collects the garbage of a failed decode (the text and the tables built so
  -- far, which the host's call still held): the host's conversion that follows builds its
  -- tables outside any protected call, where a full heap is fatal.
  local function decode_paused(s)
    enter()
    collectgarbage("stop")
    return decode(s)
  end
  local function try_decode(s)
    if type(s) ~= "string" then collectgarbage("collect"); return false end
    -- As in try_encode: the set-up inside the pcall, the clean-up where there is stack for it.
    if not stack_ok() then return false end
    local ok, v = pcall(decode_paused, s)
    collectgarbage("restart")
    leave()
    if ok then return true, v end
    return false
  end

  return encode, try_encode, try_decode
end
