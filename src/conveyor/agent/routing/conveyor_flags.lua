-- conveyor's flags in HAProxy: the X-Conveyor-Flags header of a request, as the embedded
-- router gives it. The agent compiles an app's flags (conveyor.flags.compiled.encode) into
-- one line, led by its version (VERSION!LINE), the value of key "p" of the app's flags map;
-- the version alone is key "v". The backend puts the version in txn.cvyflags and the line
-- in txn.cvyprog, and sets the header to this fetch's answer. The fetch reads the line only
-- for a version it has not parsed (once per thread and change). A user's answers are kept
-- until the flags change.

local CACHED_USERS = 65536
local USER_KEY_MAX = 256  -- longer ids are answered, never kept (unique huge ids: memory)
local programs = {}   -- version -> parsed program
local nprograms = 0

local unpack = string.unpack

-- murmur3 x86 32 bits, as mmh3.hash(..., signed=False), in two halves: `mix` takes whole
-- 4-byte blocks from `pos`, `finish` the last (len % 4) bytes and the length
local function mix(h, s, pos, nblocks)
  for _ = 1, nblocks do
    local k
    k, pos = unpack("<I4", s, pos)
    k = (k * 0xcc9e2d51) & 0xffffffff
    k = ((k << 15) | (k >> 17)) & 0xffffffff
    k = (k * 0x1b873593) & 0xffffffff
    h = h ~ k
    h = ((h << 13) | (h >> 19)) & 0xffffffff
    h = (h * 5 + 0xe6546b64) & 0xffffffff
  end
  return h
end

local function finish(h, rest, len)
  local n = #rest
  if n > 0 then
    local k = 0
    if n == 3 then k = k ~ (rest:byte(3) << 16) end
    if n >= 2 then k = k ~ (rest:byte(2) << 8) end
    k = k ~ rest:byte(1)
    k = (k * 0xcc9e2d51) & 0xffffffff
    k = ((k << 15) | (k >> 17)) & 0xffffffff
    k = (k * 0x1b873593) & 0xffffffff
    h = h ~ k
  end
  h = h ~ len
  h = ((h ~ (h >> 16)) * 0x85ebca6b) & 0xffffffff
  h = ((h ~ (h >> 13)) * 0xc2b2ae35) & 0xffffffff
  return h ~ (h >> 16)
end

-- a hash prefix ("groupId:") made once per flag: its whole blocks mixed, its tail kept
local function prepare(prefix, seed)
  local n = #prefix // 4
  return { h = mix(seed & 0xffffffff, prefix, 1, n), tail = prefix:sub(n * 4 + 1),
           len = #prefix }
end

-- the bucket 1..n of a value after a prepared prefix
local function bucket(value, prefix, n)
  local s = prefix.tail .. value
  local blocks = #s // 4
  return finish(mix(prefix.h, s, 1, blocks), s:sub(blocks * 4 + 1), prefix.len + #value) % n + 1
end

local function unquote(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function split(s, sep)
  local out = {}
  if s == "" then return out end
  local start = 1
  while true do
    local i = s:find(sep, start, true)
    if not i then out[#out + 1] = s:sub(start); return out end
    out[#out + 1] = s:sub(start, i - 1)
    start = i + 1
  end
end

local function parse(text)
  local parts = split(text, "!")
  local head = split(parts[2], "|")
  local prog = { version = parts[1], cookie = head[1] == "cookie", source = unquote(head[2]),
                 flags = {}, cache = {}, old = {}, cached = 0 }
  for i = 3, #parts do
    local f = split(parts[i], "|")
    local flag = { name = unquote(f[1]), enabled = f[2] == "1", users = {},
                   always = f[4] == "1", rollout = tonumber(f[5]), by = f[6],
                   group = unquote(f[7]), constraints = {}, variants = {}, total = 0,
                   variant_by_user = f[10] == "1" }
    for _, u in ipairs(split(f[3], ",")) do flag.users[unquote(u)] = true end
    for _, c in ipairs(split(f[8], ",")) do
      local op, inv, ci, values = c:match("^([^:]*):([01]):([01]):(.*)$")
      local list = {}
      for _, v in ipairs(split(values, "+")) do list[#list + 1] = unquote(v) end
      flag.constraints[#flag.constraints + 1] =
        { op = op, inverted = inv == "1", ci = ci == "1", values = list }
    end
    for _, v in ipairs(split(f[9], ",")) do
      local name, weight = v:match("^(.*):(%d+)$")
      flag.variants[#flag.variants + 1] = { name = unquote(name), weight = tonumber(weight),
                                            answer = flag.name .. "=" .. unquote(name) }
      flag.total = flag.total + tonumber(weight)
    end
    -- what each request would otherwise build again: its answers, the hashes' prefixes
    flag.off, flag.on = flag.name .. "=off", flag.name .. "=on"
    flag.prefix = prepare(flag.group .. ":", 0)
    flag.variant_prefix = prepare(flag.name .. ":", 86028157)
    prog.flags[#prog.flags + 1] = flag
  end
  return prog
end

local function satisfied(c, user)
  local result
  if c.op == "IN" or c.op == "NOT_IN" then
    local found = false
    if user then for _, v in ipairs(c.values) do if v == user then found = true end end end
    if c.op == "IN" then result = found else result = not found end
  elseif user == nil then
    result = false
  else
    local value = user
    if c.ci then value = value:lower() end
    result = false
    for _, v in ipairs(c.values) do
      if c.ci then v = v:lower() end
      if c.op == "STR_STARTS_WITH" then
        if value:sub(1, #v) == v then result = true end
      elseif c.op == "STR_ENDS_WITH" then
        if v == "" or value:sub(-#v) == v then result = true end
      elseif value:find(v, 1, true) then
        result = true
      end
    end
  end
  return c.inverted ~= result
end

local function on(flag, user)
  if flag.always or (user and flag.users[user]) then return true end
  if flag.rollout <= 0 then return false end
  for _, c in ipairs(flag.constraints) do
    if not satisfied(c, user) then return false end
  end
  local value = user
  if flag.by == "random" or (flag.by == "default" and not user) then
    value = tostring(math.random(1, 100))
  end
  if not value then return false end
  return bucket(value, flag.prefix, 100) <= flag.rollout
end

local function answer(flag, user)
  if not flag.enabled or not on(flag, user) then return flag.off end
  if #flag.variants == 0 or flag.total <= 0 then return flag.on end
  local value = user
  if not (user and flag.variant_by_user) then value = tostring(math.random(1, 100)) end
  local target = bucket(value, flag.variant_prefix, flag.total)
  local counter = 0
  for _, v in ipairs(flag.variants) do
    if v.weight > 0 then
      counter = counter + v.weight
      if counter >= target then return v.answer end
    end
  end
  return flag.on
end

local function line(prog, user)
  local out = {}
  for i, flag in ipairs(prog.flags) do out[i] = answer(flag, user) end
  return table.concat(out, "; ")
end

local function user_of(txn, prog)
  local value
  if prog.cookie then
    value = txn.f:req_cook(prog.source)
    -- trimmed of spaces, then of quotes (one match, not four substitutions per request)
    if value then value = value:match('^%s*"*(.-)"*%s*$') end
  else
    value = txn.f:req_fhdr(prog.source, 1)
    if value then value = value:match("^%s*(.-)%s*$") end
  end
  if value == nil or value == "" then return nil end
  return value
end

-- users' answers in two generations of CACHED_USERS / 2: new ones go to the young one,
-- which becomes the old one once full (the old one dropped); a user found in the old one
-- moves back to the young one. So the users seen lately stay, with no order kept.
local function kept(prog, user)
  if #user > USER_KEY_MAX then return line(prog, user) end  -- answered, never kept
  local value = prog.cache[user]
  if value == nil then
    value = prog.old[user] or line(prog, user)
    if prog.cached >= CACHED_USERS // 2 then
      prog.old, prog.cache, prog.cached = prog.cache, {}, 0
    end
    prog.cache[user], prog.cached = value, prog.cached + 1
  end
  return value
end

-- a converter of "USER@VERSION" (the user's cookie or header, then txn.cvyflags): the
-- answers of a user, "" when this thread has not parsed that version yet (the fetch below
-- then answers). It calls nothing back into HAProxy: a third of the fetch's cost.
core.register_converters("conveyor_flags_of", function(input)
  local prog = programs[input:sub(-16)]
  if prog == nil then return "" end
  local user = input:sub(1, -18)
  if prog.cookie then user = user:match('^%s*"*(.-)"*%s*$') else user = user:match("^%s*(.-)%s*$") end
  if user == "" then return "" end
  return kept(prog, user)
end)

-- a sample fetch (set-header %[lua.conveyor_flags]): lighter than an action per request
core.register_fetches("conveyor_flags", function(txn)
  local version = txn:get_var("txn.cvyflags")
  if version == nil or version == "" then return "" end
  local prog = programs[version]
  if prog == nil then
    local text = txn:get_var("txn.cvyprog")
    if text == nil or text == "" then return "" end
    prog = programs[text:match("^[^!]*")]  -- the line of another version (a change between)
    if prog == nil then
      if nprograms >= 64 then programs, nprograms = {}, 0 end
      prog = parse(text)
      programs[prog.version], nprograms = prog, nprograms + 1
    end
  end
  local user = user_of(txn, prog)
  if not user then return line(prog, nil) end
  return kept(prog, user)
end)
