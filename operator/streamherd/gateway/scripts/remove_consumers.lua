-- Remove consumers from a group, each only if its PEL is empty and it has been idle long
-- enough, checked and done in this one script: XGROUP DELCONSUMER drops a consumer's pending
-- entries for good, so it must never run on a consumer that got work in the meantime.
--
-- KEYS[1] the stream
-- ARGV[1] group
-- ARGV[2..] pairs: consumer name, min idle ms ('idle': since the consumer's last read;
--           on 7.2+ any read attempt, on 7.0 a read that returned entries)
--
-- Reply: the names removed. A missing stream or group removes nothing.
local key, group = KEYS[1], ARGV[1]
local info = redis.pcall('XINFO', 'CONSUMERS', key, group)
if info.err then return {} end

local known = {}
for _, c in ipairs(info) do
  local fields = {}
  for i = 1, #c, 2 do fields[c[i]] = c[i + 1] end
  known[fields['name']] = fields
end

local removed = {}
for i = 2, #ARGV, 2 do
  local name, min_idle = ARGV[i], tonumber(ARGV[i + 1])
  local c = known[name]
  if c and c['pending'] == 0 and c['idle'] >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', key, group, name)
    removed[#removed + 1] = name
  end
end
return removed
