-- Delete a stream only if it carries one of the groups the operator manages on it: the check
-- and the UNLINK are one atomic step, so a key nobody of ours ever touched (or that lost its
-- last managed group in between) is never deleted. UNLINK frees the memory in the background.
--
-- KEYS[1] the stream; ARGV the managed group names
-- Reply: 'deleted' | 'unmanaged' | 'missing' | 'wrongtype'
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then return 'missing' end
if kind ~= 'stream' then return 'wrongtype' end
local managed = {}
for _, group in ipairs(ARGV) do managed[group] = true end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  for i = 1, #g, 2 do
    if g[i] == 'name' and managed[g[i + 1]] then
      redis.call('UNLINK', key)
      return 'deleted'
    end
  end
end
return 'unmanaged'
