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
-- ARGV[10] the most fields one entry may carry into one XADD (Lua's unpack limit)
-- ARGV[11..] claim targets: live consumers of the group (strategy claim)
--
-- Delivery counts are per group. Deliveries of an entry = its PEL delivery count + what a
-- re-queued copy made for this group carries (streamherd-deliveries). A copy made for another
-- group (streamherd-group names it) is not this group's work: stale in this group's PEL, it is
-- acknowledged and nothing else (its original is this group's, and tracked on its own).
-- Poison: delivered more than max times (even if delivered again just now: a consumer
-- re-reading its history never lets a failing entry go idle), or exactly max times and stale.
--
-- A stale entry is
--   re-queued (requeue): XADD a copy to the stream's tail - streamherd-origin-id (the first id
--     it had), streamherd-deliveries, streamherd-group (this group), then its own fields - and
--     XACK the original right after; or
--   claimed (claim): XCLAIM ... JUSTID to a live consumer other than its owner, round-robin;
--     ids and delivery counts stay. With no other live consumer it stays pending (kept): a
--     live consumer that reads its history gets it again, and a new pod will be claimed it.
--     Claim never copies into the shared stream.
-- Dead-lettered: XADD to KEYS[2] (MAXLEN ~ cap) streamherd-origin-id, -stream, -group,
--   -consumer, -deliveries, then its own fields; XACK the original right after.
-- An entry with more fields than ARGV[10] cannot be copied by one command: it is never
-- re-queued; it is dead-lettered in parts (each with streamherd-part "i/n"), or held.
-- An entry whose stream entry was trimmed or deleted is acknowledged (dropped).
--
-- Failure atomicity: nothing is written before the keys' types are known (a dead-letter key
-- of another type is not used: poison is held, and the reply says so); each entry's writes are
-- followed at once by its XACK, and written with redis.pcall: an entry whose write fails is left
-- pending as it was (counted, the first error returned) and the batch goes on. So a batch either completes,
-- or stops with every entry either fully moved or untouched: the next pass never copies twice.
--
-- Reply: {next start ('' when the end of the PEL was reached), examined, requeued, claimed,
--         dead-lettered, dropped, held, acked, kept, foreign, oversized, failed,
--         dead-letter key's type when unusable (''), first error ('')}
local key, dlq = KEYS[1], KEYS[2]
local group, consumer, start = ARGV[1], ARGV[2], ARGV[3]
local min_idle, count, max_deliveries = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local dlq_cap, claim, offset = tonumber(ARGV[7]), ARGV[8] == 'claim', tonumber(ARGV[9])
-- (At most 3,900: a copy passes its fields to XADD in one unpack(), good for ~7,990 values.)
local max_fields = math.min(tonumber(ARGV[10]), 3900)
local CHUNK = 1000 -- ids per XACK/XCLAIM call: Lua's unpack has a stack limit

local targets, ntargets = {}, #ARGV - 10
for i = 1, ntargets do targets[i] = ARGV[10 + i] end

-- Types before anything is written. The stream's own type (and the group) fail XPENDING
-- below, before any write.
local dlq_problem = ''
if dlq then
  local kind = redis.call('TYPE', dlq)['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    dlq_problem, dlq = kind, nil
  end
end

local pel
if consumer ~= '' then
  pel = redis.call('XPENDING', key, group, start, '+', count, consumer)
else
  pel = redis.call('XPENDING', key, group, start, '+', count)
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
      while i <= n and ids[i] ~= eid and id_less(ids[i], eid) do i = i + 1 end -- gone
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

local wanted, nwanted = {}, 0
for i = 1, #pel do
  local p = pel[i]
  if p[3] >= min_idle or p[4] > max_deliveries then
    nwanted = nwanted + 1; wanted[nwanted] = p[1]
  end
end
local entries = fetch(wanted)

local acks, nacks = {}, 0 -- entries acknowledged without a copy: dropped, foreign
local claims, nclaimed = {}, 0
local requeued, deadlettered, dropped, held, acked = 0, 0, 0, 0, 0
local kept, foreign, oversized, failed, first_error = 0, 0, 0, 0, ''

-- Each move: its write(s), then the original's XACK at once (see "Failure atomicity"). A
-- write that fails (redis.pcall: an error reply, not a script error) leaves the entry as it
-- was. (Only a dead-letter record in parts has several writes: a later part cannot fail
-- where the first succeeded, as Redis checks memory before a script's first write only.)
local function moved(reply, id)
  if type(reply) == 'table' and reply.err then
    failed = failed + 1
    if first_error == '' then first_error = reply.err end
    return false
  end
  redis.call('XACK', key, group, id)
  acked = acked + 1
  return true
end

local function requeue(id, origin, total, own)
  return moved(redis.pcall('XADD', key, '*', 'streamherd-origin-id', origin,
    'streamherd-deliveries', total, 'streamherd-group', group, unpack(own)), id)
end

local function dead_letter(id, origin, owner, total, own)
  local per = max_fields * 2
  local parts = math.max(1, math.ceil(#own / per))
  local reply
  for part = 1, parts do
    local args = {'XADD', dlq, 'MAXLEN', '~', dlq_cap, '*',
      'streamherd-origin-id', origin, 'streamherd-stream', key, 'streamherd-group', group,
      'streamherd-consumer', owner, 'streamherd-deliveries', total}
    if parts > 1 then
      args[#args + 1] = 'streamherd-part'; args[#args + 1] = part .. '/' .. parts
    end
    for j = (part - 1) * per + 1, math.min(#own, part * per) do args[#args + 1] = own[j] end
    reply = redis.pcall(unpack(args))
    if type(reply) == 'table' and reply.err then break end
  end
  return moved(reply, id)
end

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
      -- The entry's own fields, without those of ours a re-queued copy carries: most
      -- entries have none, and are passed on as they are, without a copy.
      local own, origin, carried, tag = fields, id, 0, nil
      for j = 1, #fields, 2 do
        local name = fields[j]
        if name == 'streamherd-deliveries' or name == 'streamherd-origin-id'
            or name == 'streamherd-group' then
          own = {}
          local deliveries, copy = 0, false
          for k = 1, #fields, 2 do
            local f = fields[k]
            if f == 'streamherd-deliveries' then
              -- A count only if it is digits (as the SDK reads it): never negative,
              -- fractional or infinite, whatever a producer wrote there.
              local text = fields[k + 1]
              deliveries = string.match(text, '^%d+$') and tonumber(text) or 0
            elseif f == 'streamherd-origin-id' then
              origin, copy = fields[k + 1], true
            elseif f == 'streamherd-group' then
              tag = fields[k + 1]
            else
              own[#own + 1] = f; own[#own + 1] = fields[k + 1]
            end
          end
          -- Only a copy (it names its origin) carries deliveries, as the SDK counts them: a
          -- producer's own "streamherd-deliveries" counts for nothing. A copy without a
          -- group tag predates tagging: it was made for this group.
          if copy and (tag == nil or tag == group) then carried = deliveries end
          break
        end
      end
      local total = delivered + carried
      local too_big = #own > max_fields * 2
      if tag ~= nil and tag ~= group and origin ~= id then
        nacks = nacks + 1; acks[nacks] = id
        foreign = foreign + 1
      elseif total > max_deliveries or (stale and total >= max_deliveries)
          or (too_big and not claim) then
        if too_big then oversized = oversized + 1 end
        if dlq then
          if dead_letter(id, origin, owner, total, own) then deadlettered = deadlettered + 1 end
        else
          held = held + 1
        end
      elseif claim then
        local target = nil
        for step = 0, ntargets - 1 do
          local t = targets[(offset + nclaimed + step) % ntargets + 1]
          if t ~= owner then target = t; break end
        end
        if target then
          nclaimed = nclaimed + 1
          local ids = claims[target]
          if not ids then
            ids = {}; claims[target] = ids
          end
          ids[#ids + 1] = id
        else
          kept = kept + 1
        end
      elseif requeue(id, origin, total, own) then
        requeued = requeued + 1
      end
    end
  end
end

-- Claims and plain acknowledgements copy nothing: doing them last, in bulk, is safe (a
-- batch that stopped before them leaves them for the next pass, which does them once).
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
for from = 1, nacks, CHUNK do
  acked = acked + redis.call('XACK', key, group, unpack(acks, from, math.min(from + CHUNK - 1, nacks)))
end

local next_start = ''
if #pel == count then next_start = '(' .. pel[#pel][1] end
return {next_start, #pel, requeued, nclaimed, deadlettered, dropped, held, acked,
        kept, foreign, oversized, failed, dlq_problem, first_error}
