-- Create a consumer group, or adopt the one that exists (never reset it).
-- Atomic, so the lag bookkeeping (ENTRIESREAD) matches the stream at the moment of creation.
--
-- KEYS[1] stream key
-- ARGV[1] group, ARGV[2] start id ('$', '0' or an entry id), ARGV[3] '1' = create the
-- stream when missing, ARGV[4] cap on entries counted to make lag valid for a mid-stream start
--
-- Reply: {'created', last-delivered-id, entries-read or -1}
--        {'adopted', last-delivered-id, entries-read or -1}
--        {'missing'} (no stream and not allowed to create it), {'wrongtype', type}
local key, group, start = KEYS[1], ARGV[1], ARGV[2]
local mkstream, cap = ARGV[3] == '1', tonumber(ARGV[4])

local function describe(status)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    if g[2] == group then
      local entries_read = (g[9] == 'entries-read' and g[10]) or -1
      return {status, g[8], entries_read}
    end
  end
  return {status, '', -1}
end

local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then
  if not mkstream then return {'missing'} end
  -- A new, empty stream: nothing has been read whatever the start id.
  redis.call('XGROUP', 'CREATE', key, group, start, 'MKSTREAM', 'ENTRIESREAD', 0)
  return describe('created')
end
if kind ~= 'stream' then return {'wrongtype', kind} end

for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  if g[2] == group then return describe('adopted') end
end

if start == '0' then
  -- Redis keeps lag valid by itself here (it estimates from the first entry).
  redis.call('XGROUP', 'CREATE', key, group, start)
  return describe('created')
end

local info = redis.call('XINFO', 'STREAM', key)
local entries_added = nil
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then entries_added = info[i + 1] end
end
if start == '$' then
  -- Every entry ever added lies at or before $. Without ENTRIESREAD Redis leaves
  -- entries-read unset, and on a stream of more than one entry the lag turns null at the
  -- next XADD and stays so until the group reads (7.0 and 8.x alike).
  if entries_added then
    redis.call('XGROUP', 'CREATE', key, group, '$', 'ENTRIESREAD', entries_added)
  else
    redis.call('XGROUP', 'CREATE', key, group, '$')
  end
  return describe('created')
end

-- A mid-stream start: tell Redis how many entries lie at or before it, so lag is valid.
local after = #redis.call('XRANGE', key, '(' .. start, '+', 'COUNT', cap + 1)
if entries_added and after <= cap then
  redis.call('XGROUP', 'CREATE', key, group, start, 'ENTRIESREAD', entries_added - after)
else
  redis.call('XGROUP', 'CREATE', key, group, start) -- lag stays null; observation counts it
end
return describe('created')
