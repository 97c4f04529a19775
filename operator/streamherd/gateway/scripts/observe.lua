#!lua flags=no-writes
-- Observe the consumer groups of many streams in one call, replying with a flat array
-- (cheap to parse). Read-only. Kept to a few streams per call by the caller, because a
-- script blocks every other client while it runs.
--
-- KEYS    stream keys
-- ARGV[1] cap for counting undelivered entries when Redis reports lag as null
-- ARGV[2] '1': Redis may report a stale lag (7.x): check whether lagging groups are at the tail
-- ARGV[3] one char per key, '1': measure the oldest pending entry (its id)
--
-- Reply: the server's time in ms (ages are measured against Redis's own clock, the clock
-- of the entry ids), then per key: status ('ok', or the error text), and when 'ok':
--   length, number of groups G, number of extras X,
--   G x (name, consumers, pending, entries-read (-1 = null), lag (-1 = null)),
--   X x (group index (1-based), kind, value) for the few groups that need more:
--     'c' lag was null: entries counted after last-delivered-id (up to the cap)
--     't' lag > 0 but nothing lies after last-delivered-id (a stale 7.x lag); value 1
--     'o' id of the oldest (lowest-id) pending entry (keys asked for in ARGV[3]): when it
--         was added (its idle time would be reset by every claim: not an age)
-- The common case is five values a group: the reply is what a poll costs to parse.
-- Entry ids compare as numbers, part by part; digit strings of unequal length compare by
-- length (no leading zeros), so any size works without float rounding.
local function greater_or_equal(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if #a_ms ~= #b_ms then return #a_ms > #b_ms end
  if a_ms ~= b_ms then return a_ms > b_ms end
  if #a_seq ~= #b_seq then return #a_seq > #b_seq end
  return a_seq >= b_seq
end

local cap = tonumber(ARGV[1])
local check_tail = ARGV[2] == '1'
local ages = ARGV[3]
local time = redis.call('TIME')
local out, n = {tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)}, 1

for i, key in ipairs(KEYS) do
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if groups.err then
    n = n + 1; out[n] = groups.err
  elseif #groups > 0 and (groups[1][1] ~= 'name' or groups[1][5] ~= 'pending'
      or groups[1][7] ~= 'last-delivered-id') then
    n = n + 1; out[n] = 'ERR unexpected XINFO GROUPS layout'
  else
    local want_age = string.byte(ages, i) == 49 -- '1'
    local tail = nil
    local extras, x = {}, 0
    n = n + 1; out[n] = 'ok'
    n = n + 1; out[n] = redis.call('XLEN', key)
    n = n + 1; out[n] = #groups
    local extras_at = n + 1
    n = n + 1
    for j, g in ipairs(groups) do
      -- Fields 9-12 (entries-read, lag) exist since 7.0; a null is false in Lua.
      local name, pending = g[2], g[6]
      local lag = (g[11] == 'lag' and g[12]) or -1
      if lag == -1 then
        x = x + 1; extras[x] = j
        x = x + 1; extras[x] = 'c'
        x = x + 1; extras[x] = #redis.call('XRANGE', key, '(' .. g[8], '+', 'COUNT', cap)
      elseif lag > 0 and check_tail then
        if not tail then
          local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
          tail = last and last[1] or '0-0'
        end
        if greater_or_equal(g[8], tail) then
          x = x + 1; extras[x] = j
          x = x + 1; extras[x] = 't'
          x = x + 1; extras[x] = 1
        end
      end
      if want_age and pending > 0 then
        local oldest = redis.call('XPENDING', key, name, '-', '+', 1)[1]
        if oldest then
          x = x + 1; extras[x] = j
          x = x + 1; extras[x] = 'o'
          x = x + 1; extras[x] = oldest[1]
        end
      end
      n = n + 1; out[n] = name
      n = n + 1; out[n] = g[4]
      n = n + 1; out[n] = pending
      n = n + 1; out[n] = (g[9] == 'entries-read' and g[10]) or -1
      n = n + 1; out[n] = lag
    end
    out[extras_at] = x / 3
    for k = 1, x do
      n = n + 1; out[n] = extras[k]
    end
  end
end
return out
