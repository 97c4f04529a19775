-- Replay one dead-lettered entry to the group it was poison for, atomically: the records
-- are the token. They are checked to exist (a replay that already ran, or a purge, deleted
-- them: then nothing is done), the entry goes back, and the records are deleted, all in this
-- one call. Running it twice, or from two terminals at once, never gives the group two copies.
--
-- KEYS[1]  the dead-letter stream
-- KEYS[2]  the stream the entry came from (same hash slot on a cluster, as the janitor's are)
-- ARGV[1]  group
-- ARGV[2]  origin id (streamherd-origin-id of the records)
-- ARGV[3]  'claim' or 'copy'
-- ARGV[4]  consumer to claim to (claim)
-- ARGV[5..] the record ids of this entry (one, or several records of the same entry)
--
-- claim (recovery strategy Claim: ids kept, strict isolation): the original entry, if it is
--   still in the stream, is put back into this group's PEL (XCLAIM ... FORCE JUSTID, which
--   creates the pending entry; no other group sees anything). Otherwise: copy.
-- copy (strategy Requeue, any consumer): a copy tagged for this group is appended:
--   streamherd-origin-id, streamherd-deliveries 0 (a fresh budget after the fix),
--   streamherd-group, then the entry's own fields. Other groups' SDK consumers acknowledge a
--   copy tagged for another group without processing it.
-- Either way, when the original is still in the stream after the group's last-delivered-id
-- (a group moved back with SETID), the group reads it anyway: nothing is added.
--
-- Reply: {outcome, id, records deleted}; outcome is
--   'claimed' (id: the origin id), 'copied' (id: the copy's), 'unread' (nothing added),
--   'gone' (no record left: already replayed or purged), 'nogroup' (the stream or group does
--   not exist: records kept), 'mismatch' (the records are not of this stream/group/origin:
--   kept), 'parts' (an entry in several records cannot be copied in one XADD, and its original
--   is gone: kept).
local dlq, key = KEYS[1], KEYS[2]
local group, origin, method, consumer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local records, ids = {}, {}
for i = 5, #ARGV do
  local got = redis.call('XRANGE', dlq, ARGV[i], ARGV[i])
  if #got > 0 then
    records[#records + 1] = got[1][2]
    ids[#ids + 1] = ARGV[i]
  end
end
if #records == 0 then return {'gone', '', 0} end

local HEADER = {
  ['streamherd-origin-id'] = true, ['streamherd-stream'] = true, ['streamherd-group'] = true,
  ['streamherd-consumer'] = true, ['streamherd-deliveries'] = true, ['streamherd-part'] = true,
}
local own, parts = {}, false
for r = 1, #records do
  local fields, header = records[r], {}
  for j = 1, #fields, 2 do
    local name, value = fields[j], fields[j + 1]
    if HEADER[name] then header[name] = value elseif r == 1 then
      own[#own + 1] = name; own[#own + 1] = value
    end
  end
  if header['streamherd-origin-id'] ~= origin or header['streamherd-stream'] ~= key
      or header['streamherd-group'] ~= group then
    return {'mismatch', ids[r], 0}
  end
  if header['streamherd-part'] then parts = true end
end

local infos = redis.pcall('XINFO', 'GROUPS', key)
if infos.err then return {'nogroup', '', 0} end
local last = nil
for _, g in ipairs(infos) do
  for j = 1, #g, 2 do
    if g[j] == 'name' and g[j + 1] == group then
      for k = 1, #g, 2 do
        if g[k] == 'last-delivered-id' then last = g[k + 1] end
      end
    end
  end
end
if not last then return {'nogroup', '', 0} end

local function done(outcome, id)
  local deleted = redis.call('XDEL', dlq, unpack(ids))
  return {outcome, id, deleted}
end

local original = #redis.call('XRANGE', key, origin, origin) > 0
if original and id_less(last, origin) then return done('unread', origin) end
if method == 'claim' and original then
  redis.call('XCLAIM', key, group, consumer, 0, origin, 'FORCE', 'JUSTID')
  return done('claimed', origin)
end
if parts then return {'parts', '', 0} end
local copy = redis.call('XADD', key, '*', 'streamherd-origin-id', origin,
  'streamherd-deliveries', 0, 'streamherd-group', group, unpack(own))
return done('copied', copy)
