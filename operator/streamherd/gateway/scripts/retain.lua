-- One retention step on one stream, atomically: the safe floor is computed and applied in
-- the same script, so no consumer can read, ack or be created in between.
--
-- KEYS[1] the stream
-- ARGV[1]  maxLength (-1: none)          ARGV[2]  maxAge in ms (-1: none)
-- ARGV[3]  '1' approximate (~)           ARGV[4]  '1' respectConsumerGroups
-- ARGV[5]  hardMaxLength (-1: none)      ARGV[6]  trim limit: entries one XTRIM may remove
-- ARGV[7]  walk limit: entries one XRANGE may list (listing costs ~4 us an entry in Lua)
-- ARGV[8]  '1' trim with the server's ACKED (8.2+; always exact, see below)
-- ARGV[9]  deleteIdleStreamsAfter in ms (-1: never delete)
-- ARGV[10] number M of managed groups, then M x (group, start id or '$'): the groups the
--          operator keeps on this stream. One that does not exist here yet is protected from
--          its start id on (it will be created there), and deletion needs one that exists.
--
-- Reply: {'missing'} | {'wrongtype', type} |
--   {'ok', trimmed, unconsumed dropped, deleted (0/1), more (0/1), length after, floor ('' =
--    none), B, B x (group, 'age'|'length', its floor)}
--   more = 1: a limit stopped this step; calling again goes on.
--   A group is reported when it holds retention back: entries older than maxAge survive
--   because of it, or the stream stays over maxLength because of it.
--
-- The floor: per group, the older of its oldest pending entry and the entry after its
-- last-delivered-id; the minimum over groups. Entries below it every group has read and
-- acknowledged. With respectConsumerGroups nothing at or above it is trimmed, except by
-- hardMaxLength, which counts what it drops there as dropped unconsumed.
local key = KEYS[1]
local max_length, max_age = tonumber(ARGV[1]), tonumber(ARGV[2])
local approximate, respect = ARGV[3] == '1', ARGV[4] == '1'
local hard_max, trim_limit, walk_limit = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local use_acked, idle_after = ARGV[8] == '1', tonumber(ARGV[9])

-- Entry ids: id_parts and id_less (ids.lua).
local function increment(digits)
  local out, carry = {}, 1
  for i = #digits, 1, -1 do
    local d = string.byte(digits, i) - 48 + carry
    carry = d >= 10 and 1 or 0
    out[i] = string.char(48 + d % 10)
  end
  local text = table.concat(out)
  return carry == 1 and ('1' .. text) or text
end
local function after(id)  -- the smallest id greater than id
  local ms, seq = id_parts(id)
  if seq == '18446744073709551615' then return increment(ms) .. '-0' end
  return ms .. '-' .. increment(seq)
end
local function fields(flat)
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end
local function min_id(a, b)
  if not a then return b end
  if not b then return a end
  return id_less(a, b) and a or b
end

local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then return {'missing'} end
if kind ~= 'stream' then return {'wrongtype', kind} end

local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local info = fields(redis.call('XINFO', 'STREAM', key))
local length = info['length']
local last_generated = info['last-generated-id']
local first_id = info['first-entry'] and info['first-entry'][1] or nil
local last_id = info['last-entry'] and info['last-entry'][1] or nil
local deleted_inside = info['max-deleted-entry-id'] and first_id
  and not id_less(info['max-deleted-entry-id'], first_id)

-- Each group's floor, and a lower bound on how many entries lie at or above it
-- (unread + pending), usable when Redis's counts are reliable.
local needs, lower_bound, present = {}, 0, {}
for _, raw in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local g = fields(raw)
  present[g['name']] = true
  local need = after(g['last-delivered-id'])
  local pending, reliable = tonumber(g['pending']), not deleted_inside
  if pending > 0 then
    local oldest = redis.call('XPENDING', key, g['name'], '-', '+', 1)[1][1]
    if first_id and id_less(oldest, first_id) then
      -- Entries already trimmed still sit in the PEL (until the janitor drops them): they
      -- need no protection; the oldest pending entry that still exists does.
      local existing = redis.call('XPENDING', key, g['name'], first_id, '+', 1)[1]
      oldest = existing and existing[1] or nil
      reliable = false
    end
    need = min_id(oldest, need)
  end
  needs[#needs + 1] = {g['name'], need}
  local lag = g['lag']
  if lag and g['last-delivered-id'] == last_generated then lag = 0 end  -- stale 7.x lag
  if lag and lag <= length then
    local bound = lag + (reliable and pending or 0)
    if bound > lower_bound then lower_bound = bound end
  end
end
local missing_managed = false
local managed_count = tonumber(ARGV[10])
local managed_present = false
for i = 0, managed_count - 1 do
  local group, start = ARGV[11 + 2 * i], ARGV[12 + 2 * i]
  if present[group] then
    managed_present = true
  elseif start ~= '$' then
    missing_managed = true
    needs[#needs + 1] = {group, start == '0' and '0-1' or after(start)}
  end
end
local floor = nil
for _, pair in ipairs(needs) do floor = min_id(floor, pair[2]) end

-- Idle deletion: the call is over (nothing written for idle_after), every group has read
-- everything and has nothing pending, and the stream carries a group we manage.
if idle_after >= 0 and managed_present then
  local newest_ms = tonumber((id_parts(last_generated)))
  local done = newest_ms and now_ms - newest_ms >= idle_after
  if done and last_id then done = not floor or id_less(last_id, floor) end
  if done then
    redis.call('UNLINK', key)
    return {'ok', 0, 0, 1, 0, 0, '', 0}
  end
end

local trimmed, dropped, more = 0, 0, 0
local blocked = {}
local function xtrim(strategy, threshold, exact)
  local args = {'XTRIM', key, strategy}
  if exact then
    args[#args + 1] = '='
    args[#args + 1] = threshold
  else
    args[#args + 1] = '~'
    args[#args + 1] = threshold
    args[#args + 1] = 'LIMIT'
    args[#args + 1] = trim_limit
  end
  local n = redis.call(unpack(args))
  trimmed = trimmed + n
  length = length - n
  return n
end
-- A bounded trim below threshold ('=' may remove at most trim_limit in one call: beyond
-- that the whole nodes go first (~), and the next call finishes).
local function trim_minid(threshold)
  if approximate then
    if xtrim('MINID', threshold, false) >= trim_limit / 2 then more = 1 end
    return
  end
  if xtrim('MINID', threshold, false) >= trim_limit / 2 then more = 1; return end
  xtrim('MINID', threshold, true)
end
local function trim_maxlen(keep)
  if length <= keep then return end
  if approximate then
    if xtrim('MAXLEN', keep, false) >= trim_limit / 2 then more = 1 end
    return
  end
  if length - keep > trim_limit then
    xtrim('MAXLEN', length - trim_limit, true)
    more = 1
    return
  end
  xtrim('MAXLEN', keep, true)
end
local function first_entry()
  local e = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
  return e and e[1] or nil
end
local function holders(limit_id, why)
  -- the groups whose floor lies below limit_id with entries between them and it
  for _, pair in ipairs(needs) do
    if present[pair[1]] and id_less(pair[2], limit_id)
        and #redis.call('XRANGE', key, pair[2], '(' .. limit_id, 'COUNT', 1) > 0 then
      blocked[#blocked + 1] = {pair[1], why, pair[2]}
    end
  end
end
local protect = respect and floor or nil
-- Does everything at or above the floor fit in `keep` entries? true / false / nil (a walk
-- limit stopped the count: unknown this call).
local function fits_above_floor(keep)
  if lower_bound > keep then return false end
  local span = keep + 1
  if span > walk_limit then span = walk_limit end
  local above = #redis.call('XRANGE', key, floor, '+', 'COUNT', span)
  if above < span then return true end
  if span == keep + 1 then return false end
  return nil
end

-- On 8.2+ (use_acked) the server's ACKED does the policy's trims: it removes, among the
-- entries the policy would trim, exactly those every group has read and acknowledged, and
-- leaves the others where they are; the floor below is the contiguous version of the same
-- rule, which is all 7.x allows. Exact only: with ~, ACKED trims nothing on 8.2.x (redis
-- #14656). Never for a stream whose managed groups do not all exist yet: ACKED knows only
-- the groups that exist, and protects nothing on a stream without any.
local acked = use_acked and respect and not missing_managed and floor ~= nil

-- 1. maxAge: trim below now - maxAge, never past the floor.
if max_age >= 0 and first_id then
  local cutoff = (now_ms - max_age) .. '-0'
  if acked then
    trimmed = trimmed + redis.call('XTRIM', key, 'MINID', '=', cutoff, 'ACKED')
    length = redis.call('XLEN', key)
  elseif protect and id_less(protect, cutoff) then
    trim_minid(protect)
  else
    trim_minid(cutoff)
  end
  if protect then holders(cutoff, 'age') end
end

-- 2. maxLength: keep the newest maxLength, never past the floor.
if max_length >= 0 and length > max_length then
  local held = false
  if not protect or not last_id or id_less(last_id, protect) then
    trim_maxlen(max_length)
  elseif acked then
    local keep = max_length
    if length - keep > trim_limit then keep = length - trim_limit; more = 1 end
    trimmed = trimmed + redis.call('XTRIM', key, 'MAXLEN', '=', keep, 'ACKED')
    length = redis.call('XLEN', key)
    held = more == 0 and length > max_length
  else
    local first = first_entry()
    if not first or not id_less(first, protect) then
      held = true  -- the oldest entry is still needed: nothing can go
    else
      local fits = fits_above_floor(max_length)
      if fits == true then
        trim_maxlen(max_length)
      elseif fits == false then
        trim_minid(protect)
        held = true
      else
        -- Unknown within the walk limit: trim what is certainly below the floor and still
        -- over maxLength, one walk at a time.
        local want = length - max_length
        if want > walk_limit then want = walk_limit end
        local head = #redis.call('XRANGE', key, '-', '(' .. protect, 'COUNT', want)
        if head == want then
          xtrim('MAXLEN', length - want, true)
          more = 1
        else
          trim_minid(protect)
          held = true
        end
      end
    end
  end
  if held then
    for _, pair in ipairs(needs) do
      if present[pair[1]] and pair[2] == floor then
        blocked[#blocked + 1] = {pair[1], 'length', pair[2]}
      end
    end
  end
end

-- 3. hardMaxLength: the emergency cap, whatever any group still needs. The entries it drops
-- are listed (at most walk_limit a call: this is the rare path) and each is checked against
-- every group: unread by one (after its last-delivered-id) or pending in one = unconsumed.
if hard_max >= 0 and length > hard_max then
  if not floor or not last_id or id_less(last_id, floor) then
    trim_maxlen(hard_max)
  else
    local drop = length - hard_max
    if drop > walk_limit then drop = walk_limit; more = 1 end
    local doomed = redis.call('XRANGE', key, '-', '+', 'COUNT', drop)
    local last_doomed = doomed[#doomed][1]
    local is_doomed, unconsumed = {}, {}
    for _, e in ipairs(doomed) do is_doomed[e[1]] = true end
    for _, raw in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local g = fields(raw)
      local delivered = g['last-delivered-id']
      for _, e in ipairs(doomed) do
        if id_less(delivered, e[1]) then unconsumed[e[1]] = true end
      end
      if id_less(floor, after(last_doomed)) then
        for _, p in ipairs(redis.call('XPENDING', key, g['name'], floor, last_doomed, drop)) do
          if is_doomed[p[1]] then unconsumed[p[1]] = true end
        end
      end
    end
    for _, pair in ipairs(needs) do  -- managed groups still to come start at their floor
      if not present[pair[1]] then
        for _, e in ipairs(doomed) do
          if not id_less(e[1], pair[2]) then unconsumed[e[1]] = true end
        end
      end
    end
    xtrim('MAXLEN', length - drop, true)
    for _ in pairs(unconsumed) do dropped = dropped + 1 end
  end
end
local out = {'ok', trimmed, dropped, 0, more, length, floor or '', #blocked}
for _, b in ipairs(blocked) do
  out[#out + 1] = b[1]
  out[#out + 1] = b[2]
  out[#out + 1] = b[3]
end
return out
