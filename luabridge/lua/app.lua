-- The `app` table of a luabridge run: the integration namespaces, value markers, help and JSON.
-- Trusted code, loaded by bootstrap.lua for each run; scripts reach only the tables it returns.
--
-- Every table it hands out is read-only (`readonly`): reading an unknown name raises an error
-- that explains it (through the host's `explain`), assigning raises, and the metatable is
-- protected. Bindings encode their parameters with the trusted encoder and pass the JSON text
-- to the host; nothing of Python is reachable from here.

local type, next, select, tostring, ipairs = type, next, select, tostring, ipairs
local error, rawequal, setmetatable = error, rawequal, setmetatable
local sformat, smatch = string.format, string.match
local tconcat, tsort = table.concat, table.sort

-- `protected` and `listings` are the run's registries (see bootstrap.lua): a read-only table is
-- entered in both, so rawset refuses it and pairs() lists what `list()` returns.
local protected, listings

-- A read-only table named `name`: `index` is a table of fields (reading any other name raises)
-- or an __index function; `tostr` its __tostring; `list` a function returning the name -> value
-- table pairs() shows (a table of fields lists its fields).
local function readonly(name, index, tostr, list)
    if type(index) == "table" then
      -- A fixed table of fields: reading any other name is a mistake worth an error.
      local fields, names = index, {}
      for k in next, fields do names[#names + 1] = k end
      tsort(names)
      local known = tconcat(names, ", ")
      index = function(_, k)
        local v = fields[k]
        if v == nil then error(sformat("%s has no field '%s' (it has: %s)", name, tostring(k), known), 2) end
        return v
      end
      list = list or function() return fields end
    end
    local t = setmetatable({}, {
      __index = index,
      __newindex = function(_, k) error(sformat("%s is read-only (cannot set '%s')", name, tostring(k)), 2) end,
      __tostring = tostr,
      __metatable = false,
    })
    protected[t] = name
    listings[t] = list or function() return {} end
    return t
end

-- `run` holds what the run's bootstrap shares: service, trip, raise, call_host, try_encode,
-- null, array_mt, object_mt, max_args, max_result. Returns `app`.
return function(run)
  local service, trip, raise, call_host = run.service, run.trip, run.raise, run.call_host
  local try_encode, null, array_mt, object_mt = run.try_encode, run.null, run.array_mt, run.object_mt
  local max_args, max_result = run.max_args, run.max_result
  local raw_getmetatable, raw_setmetatable = run.raw_getmetatable, run.raw_setmetatable
  local stack_ok, stack_message = run.stack_ok, run.stack_message
  protected, listings = run.protected, run.listings
  local OK, LIMIT = "ok", "limit"

  -- The names among the keys of a parameter table (raw), for finding the line of a failing
  -- call: they go into patterns, so a key that is no name (or a huge one) is left out.
  local function keys_of(params)
    local keys = {}
    if type(params) == "table" then
      for k in next, params do
        if #keys >= 20 then break end
        if type(k) == "string" and #k <= 64 and smatch(k, "^[%a_][%w_]*$") then keys[#keys + 1] = k end
      end
    end
    return keys
  end

  local function make_binding(iname, account, aname)
    local label = iname .. "." .. aname
    return function(params, ...)
      -- Room for the host call and the restore after it (see stack_ok in bootstrap.lua).
      if not stack_ok() then raise("RuntimeError", stack_message, 2, aname) end
      local nargs = select("#", ...)
      if type(params) == "table" and protected[params] and not rawequal(params, null) then
        -- loops:find_contact{...} passes the namespace as the first argument.
        raise("ValidationError", sformat("%s: called with ':' (%s:%s{...}), which passes %s as the first argument; use '.': %s{...}",
          label, iname, aname, protected[params], label), 2, aname, keys_of((...)))
      end
      if params ~= nil and type(params) ~= "table" then
        -- Positional arguments: the host shows the call with named parameters.
        local args = {params, ...}
        local ok, text = try_encode(setmetatable(args, array_mt), "params", max_args)
        if ok then
          local status, a, b = service("call", iname, account, aname, text)
          service("restore")
          if status == LIMIT then trip(b, a) end
          if status ~= OK then raise(b or "ValidationError", a, 2, aname) end
        end
        raise("ValidationError", sformat("%s: expected one table of named parameters, got a %s; call it as %s({...})", label, type(params), label), 2, aname)
      end
      if nargs > 0 then
        raise("ValidationError", sformat("%s: takes one table of named parameters, got %d arguments; put every parameter in the one table: %s({name = value, ...})",
          label, nargs + 1, label), 2, aname, keys_of(params))
      end
      if params == nil then params = {} end
      if rawequal(params, null) then
        raise("ValidationError", sformat("%s: expected one table of named parameters, got app.null; call it as %s({...})", label, label), 2, aname)
      end
      local ok, text_or_kind, msg = try_encode(params, "params", max_args)
      if not ok then
        if text_or_kind ~= "ValidationError" and text_or_kind ~= "RuntimeError" then trip(text_or_kind, msg) end
        raise("ValidationError", label .. ": " .. msg, 2, aname, keys_of(params))
      end
      local status, a, b = service("call", iname, account, aname, text_or_kind)
      service("restore")
      if status == OK then return a end
      if status == LIMIT then trip(b, a) end
      raise(b or "RuntimeError", a, 2, aname, keys_of(params))
    end
  end

  local function account_table(iname, account, actions)
    local cache = {}
    local t
    t = readonly(sformat("app.integrations.%s.%s", iname, account), function(_, k)
      local b = cache[k]
      if b then return b end
      if type(k) == "string" and actions[k] then
        b = make_binding(iname, account, k)
        cache[k] = b
        return b
      end
      raise("RuntimeError", service("explain", iname, account, tostring(k)), 2)
    end, function() return sformat("<%s account '%s': call app.help('%s') for its actions>", iname, account, iname) end,
    function()
      local l = {}
      -- Read through the table itself, so the listing and t.<name> share one binding.
      for name in next, actions do l[name] = t[name] end
      return l
    end)
    return t
  end

  local integrations_cache = {}
  local function integration_table(iname, spec)
    local actions = {}
    for _, a in ipairs(spec.actions) do actions[a] = true end
    local accounts = {}
    for _, acc in ipairs(spec.accounts) do accounts[acc] = account_table(iname, acc, actions) end
    local default = spec.default and accounts[spec.default]
    return readonly("app.integrations." .. iname, function(_, k)
      local acc = accounts[k]
      if acc then return acc end
      if k == "default" and default then return default end
      if type(k) == "string" and actions[k] and default then return default[k] end
      raise("RuntimeError", service("explain", iname, nil, tostring(k)), 2)
    end, function() return spec.summary end, function()
      -- Its accounts (and `default`, when the run has one) and, through the default account,
      -- its actions.
      local l = {}
      for name, acc in next, accounts do l[name] = acc end
      if default then
        l.default = default
        for name in next, actions do l[name] = default[name] end
      end
      return l
    end)
  end

  local integrations
  integrations = readonly("app.integrations", function(_, k)
    local t = integrations_cache[k]
    if t then return t end
    local spec = type(k) == "string" and call_host("spec", k)
    if spec then
      t = integration_table(k, spec)
      integrations_cache[k] = t
      return t
    end
    raise("RuntimeError", service("explain", tostring(k), nil, nil), 2)
  end, function() return "<app.integrations: call app.help() to list them>" end, function()
    local l = {}
    for _, name in ipairs(call_host("integrations")) do l[name] = integrations[name] end
    return l
  end)

  local function mark(mt, what)
    return function(t)
      if t == nil then t = {} end
      if type(t) ~= "table" or protected[t] then error(sformat("app.%s: expected a table, got a %s", what, type(t)), 2) end
      local current = raw_getmetatable(t)
      if current ~= nil and not rawequal(current, array_mt) and not rawequal(current, object_mt) then
        error(sformat("app.%s: table already has a metatable (set with setmetatable); pass a plain table", what), 2)
      end
      raw_setmetatable(t, mt)
      return t
    end
  end

  local function text_arg(fname, v, optional)
    if v == nil and optional then return nil end
    if type(v) ~= "string" then error(sformat("app.%s: expected a string, got a %s", fname, type(v)), 3) end
    return v
  end

  local app_json = readonly("app.json", {
    encode = function(v)
      local ok, text, msg = try_encode(v, "value", max_result)
      if not ok then
        if text ~= "ValidationError" and text ~= "ResultLimitError" and text ~= "RuntimeError" then trip(text, msg) end
        raise("ValidationError", "app.json.encode: " .. msg, 2)
      end
      return text
    end,
    decode = function(s)
      text_arg("json.decode", s)
      return call_host("json_decode", s)
    end,
  }, function() return "<app.json: encode(value), decode(text)>" end)

  local app = readonly("app", {
    integrations = integrations,
    null = null,
    array = mark(array_mt, "array"),
    object = mark(object_mt, "object"),
    json = app_json,
    help = function(topic) return call_host("help", text_arg("help", topic, true)) end,
    schema = function(name) return call_host("schema", text_arg("schema", name)) end,
    accounts = function(name) return call_host("accounts", text_arg("accounts", name)) end,
  }, function() return "<app: integrations, help, schema, accounts, null, array, object, json>" end)



  return app
end
