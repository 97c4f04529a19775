-- The janitor's batch: hand back stale or stranded pending entries of one consumer group,
-- dead-letter poison ones, drop those whose stream entry is gone. One call examines at most
-- COUNT entries of the PEL, in id order, after START. Everything about an entry is decided
-- and done inside this one script: a consumer's XACK, or another janitor, can never make an
-- entry move twice (MULTI/WATCH could not do this: XACK does not touch the watched key).
--
-- KEYS[1]  the stream
-- KEYS[2]  the dead-letter stream (same hash slot); absent: poison entries stay pending
-- ARGV[1]  group
-- ARGV[2]  consumer whose entries are examined ('' = every consumer's)
-- ARGV[3]  start: '-' or '(' .. an entry id (exclusive)
-- ARGV[4]  min idle ms: an entry idle this long is stale (0: a dead consumer's entries)
-- ARGV[5]  COUNT: PEL entries examined by this call
-- ARGV[6]  max deliveries
-- ARGV[7]  dead-letter stream cap (MAXLEN ~)
-- ARGV[8]  'requeue' or 'claim'
-- ARGV[9]  round-robin offset into the claim targets
-- ARGV[10..] claim targets: live consumers (strategy claim)
--
-- Deliveries of an entry = its PEL delivery count + the count its re-queued ancestors
-- reached (field streamherd-deliveries, written below). Poison: delivered more than max
-- times (even if delivered again just now: a consumer re-reading its history never lets a
-- failing entry go idle), or exactly max times and stale (its last try is over).
-- A stale entry is
--   re-queued: XADD a copy (streamherd-origin-id = the first id it had,
--     streamherd-deliveries, then the entry's own fields) to the stream's tail, XACK the
--     original; or
--   claimed (strategy claim, and its owner is not itself a live target: an entry that went
--     stale in a live consumer's PEL is not being read there, so it is re-queued instead):
--     XCLAIM ... JUSTID to the targets round-robin; ids and delivery counts stay.
-- Dead-lettered: XADD to KEYS[2] (MAXLEN ~ cap) streamherd-origin-id, -stream, -group,
-- -consumer, -deliveries, then the entry's own fields; XACK the original.
-- An entry whose stream entry was trimmed or deleted is acknowledged (dropped).
--
-- Reply: {next start ('' when the end of the PEL was reached), examined, requeued, claimed,
--         dead-lettered, dropped, held (poison without a dead-letter stream), acked}
local key, dlq = KEYS[1], KEYS[2]
local group, consumer, start = ARGV[1], ARGV[2], ARGV[3]
local min_idle, count, max_deliveries = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local dlq_cap, claim, offset = tonumber(ARGV[7]), ARGV[8] == 'claim', tonumber(ARGV[9])
local CHUNK = 1000 -- ids per XACK/XCLAIM call: Lua's unpack has a stack limit

local targets, live, ntargets = {}, {}, #ARGV - 9
for i = 1, ntargets do
  targets[i] = ARGV[9 + i]
  live[targets[i]] = true
end

local pel
if consumer ~= '' then
  pel = redis.call('XPENDING', key, group, start, '+', count, consumer)
else
  pel = redis.call('XPENDING', key, group, start, '+', count)
end

-- Entry ids compare as numbers, part by part; digit strings of unequal length compare by
-- length (no leading zeros), so any size works without float rounding.
local function less(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if #a_ms ~= #b_ms then return #a_ms < #b_ms end
  if a_ms ~= b_ms then return a_ms < b_ms end
  if #a_seq ~= #b_seq then return #a_seq < #b_seq end
  return a_seq < b_seq
end

-- The stream entries of `ids` (ascending): id -> fields; an id without one was trimmed or
-- deleted. Entries delivered together sit together in the stream, so one XRANGE from the
-- first id usually returns a whole run (a seek per entry costs more than the rest of the
-- work); where the pending ids are sparse the span shrinks to one entry per call, and
-- grows again while most of what comes back is wanted.
local MAX_SPAN = 512
local function fetch(ids)
  local found, i, n, span = {}, 1, #ids, 64
  while i <= n do
    local want = math.min(span, n - i + 1)
    local got = redis.call('XRANGE', key, ids[i], '+', 'COUNT', want)
    local hits = 0
    for _, e in ipairs(got) do
      local eid = e[1]
      while i <= n and ids[i] ~= eid and less(ids[i], eid) do i = i + 1 end -- gone
      if i > n then break end
      if ids[i] == eid then
        found[eid] = e[2]
        hits = hits + 1
        i = i + 1
      end
    end
    if #got < want then break end -- the end of the stream: the rest are gone
    if hits * 2 >= #got then span = math.min(span * 2, MAX_SPAN) else span = math.max(1, math.floor(span / 4)) end
  end
  return found
end

local acks, nacks = {}, 0
local claims, nclaimed = {}, 0
local requeued, deadlettered, dropped, held = 0, 0, 0, 0

local wanted, nwanted = {}, 0
for i = 1, #pel do
  local p = pel[i]
  if p[3] >= min_idle or p[4] > max_deliveries then
    nwanted = nwanted + 1; wanted[nwanted] = p[1]
  end
end
local entries = fetch(wanted)

for i = 1, #pel do
  local p = pel[i]
  local id, owner, delivered = p[1], p[2], p[4]
  local stale = p[3] >= min_idle
  if stale or delivered > max_deliveries then
    local fields = entries[id]
    if not fields then
      nacks = nacks + 1; acks[nacks] = id
      dropped = dropped + 1
    else
      -- The entry's own fields, without those of ours it carries (a re-queued copy's):
      -- most entries have none, and are passed on as they are, without a copy.
      local own, origin, carried = fields, id, 0
      for j = 1, #fields, 2 do
        local name = fields[j]
        if name == 'streamherd-deliveries' or name == 'streamherd-origin-id' then
          own = {}
          for k = 1, #fields, 2 do
            local f = fields[k]
            if f == 'streamherd-deliveries' then
              carried = tonumber(fields[k + 1]) or 0
            elseif f == 'streamherd-origin-id' then
              origin = fields[k + 1]
            else
              own[#own + 1] = f; own[#own + 1] = fields[k + 1]
            end
          end
          break
        end
      end
      local total = delivered + carried
      if total > max_deliveries or (stale and total >= max_deliveries) then
        if dlq then
          redis.call('XADD', dlq, 'MAXLEN', '~', dlq_cap, '*',
            'streamherd-origin-id', origin, 'streamherd-stream', key,
            'streamherd-group', group, 'streamherd-consumer', owner,
            'streamherd-deliveries', total, unpack(own))
          nacks = nacks + 1; acks[nacks] = id
          deadlettered = deadlettered + 1
        else
          held = held + 1
        end
      elseif claim and ntargets > 0 and not live[owner] then
        local target = targets[(offset + nclaimed) % ntargets + 1]
        nclaimed = nclaimed + 1
        local ids = claims[target]
        if not ids then
          ids = {}; claims[target] = ids
        end
        ids[#ids + 1] = id
      else
        redis.call('XADD', key, '*',
          'streamherd-origin-id', origin, 'streamherd-deliveries', total, unpack(own))
        nacks = nacks + 1; acks[nacks] = id
        requeued = requeued + 1
      end
    end
  end
end

for target, ids in pairs(claims) do
  for from = 1, #ids, CHUNK do
    -- JUSTID: the claim is not a delivery (the counter stays); the target's read will be.
    -- (Options go first: a Lua call truncates an unpack() that is not its last argument.)
    local args = {'XCLAIM', key, group, target, 0}
    for k = from, math.min(from + CHUNK - 1, #ids) do args[#args + 1] = ids[k] end
    args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
  end
end
local acked = 0
for from = 1, nacks, CHUNK do
  acked = acked + redis.call('XACK', key, group, unpack(acks, from, math.min(from + CHUNK - 1, nacks)))
end

local next_start = ''
if #pel == count then next_start = '(' .. pel[#pel][1] end
return {next_start, #pel, requeued, nclaimed, deadlettered, dropped, held, acked}
