#!lua flags=no-writes
-- Observe the consumer groups of many streams in one call, replying with a flat array
-- (cheap to parse). Read-only. Kept to a few streams per call by the caller, because a
-- script blocks every other client while it runs.
--
-- KEYS    stream keys
-- ARGV[1] cap for counting undelivered entries when Redis reports lag as null (per group)
-- ARGV[2] one char per key, '1': measure the oldest pending entry (its id)
-- ARGV[3] budget: entries counted at most in this call, over all its keys and groups
-- ARGV[4] hints (may be absent): per key in KEYS' order, "|"-separated (one argument for
--         the call: a poll sends thousands), "L F L F ...", F the first entry after
--         last-delivered-id L as an earlier call found it ('a' below). Used for a
--         group at L whose lag is valid and below the stream's length: then an entry at or
--         before L is still there, so the head was not trimmed past F, and an XDEL of F
--         would have made the lag null; no entry can be added between L and F. The lookup
--         it saves is most of what a sleeping group on a busy stream costs. A group with
--         everything unread (lag = length) is looked up every time: a head trimmed past F
--         looks the same there (8.x then reports lag = length).
--
-- Reply: the server's time in ms (ages are measured against Redis's own clock, the clock
-- of the entry ids), then per key: status ('ok', or the error text), and when 'ok':
--   length, number of groups G, number of extras X,
--   G x (name, consumers, pending, entries-read (-1 = null), lag (-1 = null)),
--   X x (group index (1-based), kind, value) for the few groups that need more:
--     'c' lag was null: entries after last-delivered-id, counted to the end (exact)
--     'b' lag was null: entries counted after last-delivered-id before the cap or the
--         budget stopped the count: a lower bound (1 when the budget was spent and one
--         entry is there; a null lag with nothing after the group is 'c' 0)
--     'u' id of the first entry after last-delivered-id (lag > 0 or null): when the oldest
--         entry the group has not read was added (lag in seconds)
--     'a' last-delivered-id, after 'u' when it was looked up here (not hinted): the hint
--         the caller may send next time
--     't' lag > 0 but nothing lies after last-delivered-id (a stale 7.x lag, #13337); value 1
--     'o' id of the oldest (lowest-id) pending entry (keys asked for in ARGV[2]): when it
--         was added (its idle time would be reset by every claim: not an age)
-- The common case is five values a group: the reply is what a poll costs to parse. A group
-- at the tail (lag 0) costs no command; a lagging one one XRANGE ... COUNT 1 (O(log n)),
-- which also tells a stale lag from a real one, and then none while it stays at that
-- last-delivered-id (the hints of ARGV[4]). A null lag (an XDEL tombstone after the
-- group) is counted in reads of CHUNK entries, whole entries (XRANGE has no ids-only form),
-- within the call's budget: one XRANGE ... COUNT 1000 of 1 KB entries holds the server for
-- tens of ms, ten reads of 100 for a few (tests/bench/bench_lag_count.py). Entries may be
-- huge (100 of 1 MB held the server ~1 s): the count also stops once BYTES of entries were
-- copied in this call (a lower bound), and a read asks for about READ_BYTES, judged by the
-- entries read so far (its first read of a key asks for one).
local CHUNK = 100
local BYTES, READ_BYTES = 4 * 1024 * 1024, 256 * 1024
local cap = tonumber(ARGV[1])
local ages = ARGV[2]
local budget = tonumber(ARGV[3] or cap)
local bytes_left = BYTES
local function size_of(entries)
  local size = 0
  for _, e in ipairs(entries) do
    size = size + #e[1]
    for _, v in ipairs(e[2]) do size = size + #v end
  end
  return size
end
local hints_of = {}
if ARGV[4] and ARGV[4] ~= '' then
  local k = 0
  for segment in string.gmatch(ARGV[4] .. '|', '([^|]*)|') do
    k = k + 1; hints_of[k] = segment
  end
end
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
    local after = {}  -- last-delivered-id -> the id of the first entry after it (or false)
    local hinted = {}
    if hints_of[i] and hints_of[i] ~= '' then
      for l, f in string.gmatch(hints_of[i], '(%S+) (%S+)') do hinted[l] = f end
    end
    local extras, x = {}, 0
    local length = redis.call('XLEN', key)
    n = n + 1; out[n] = 'ok'
    n = n + 1; out[n] = length
    n = n + 1; out[n] = #groups
    local extras_at = n + 1
    n = n + 1
    for j, g in ipairs(groups) do
      -- Fields 9-12 (entries-read, lag) exist since 7.0; a null is false in Lua.
      local name, pending = g[2], g[6]
      local lag = (g[11] == 'lag' and g[12]) or -1
      if lag == -1 then
        local counted, from, first, ended, per_read, seen = 0, '(' .. g[8], nil, false, 1, 0
        while not ended do
          local ask = math.min(CHUNK, cap - counted, budget, per_read)
          if ask <= 0 then
            if counted == 0 then  -- the budget is spent: is anything there at all?
              local one = redis.call('XRANGE', key, from, '+', 'COUNT', 1)
              if one[1] then first, counted = one[1][1], 1 else ended = true end
            end
            break
          end
          local unread = redis.call('XRANGE', key, from, '+', 'COUNT', ask)
          budget = budget - #unread
          counted = counted + #unread
          local size = size_of(unread)
          seen, bytes_left = seen + size, bytes_left - size
          if bytes_left <= 0 then budget = 0 end  -- spent for every key of this call
          per_read = math.max(1, math.floor(READ_BYTES * counted / math.max(seen, 1)))
          if unread[1] and not first then first = unread[1][1] end
          if #unread < ask then ended = true else from = '(' .. unread[#unread][1] end
        end
        x = x + 1; extras[x] = j
        x = x + 1; extras[x] = ended and 'c' or 'b'
        x = x + 1; extras[x] = counted
        if first then
          x = x + 1; extras[x] = j
          x = x + 1; extras[x] = 'u'
          x = x + 1; extras[x] = first
        end
      elseif lag > 0 then
        -- Groups at one position share the lookup. pcall: a last-delivered-id at the largest
        -- id has no exclusive successor (an error: nothing can follow it).
        local first, looked_up = after[g[8]], false
        if first == nil and lag < length and hinted[g[8]] then
          first = hinted[g[8]]
          after[g[8]] = first
        elseif first == nil then
          local found = redis.pcall('XRANGE', key, '(' .. g[8], '+', 'COUNT', 1)
          first = (not found.err) and found[1] and found[1][1] or false
          after[g[8]], looked_up = first, true
        end
        x = x + 1; extras[x] = j
        if first then
          x = x + 1; extras[x] = 'u'
          x = x + 1; extras[x] = first
          if looked_up then
            x = x + 1; extras[x] = j
            x = x + 1; extras[x] = 'a'
            x = x + 1; extras[x] = g[8]
          end
        else
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
