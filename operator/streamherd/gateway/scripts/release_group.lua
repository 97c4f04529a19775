-- A ConsumerGroup gives up its claim on a group name (it is deleted, or names another group).
--
-- KEYS[1] the group's owners hash, ARGV[1] the ConsumerGroup's uid
-- Reply: 1 if it had a claim, else 0. The hash goes when no claim is left in it.
local owners = KEYS[1]
local removed = redis.call('HDEL', owners, ARGV[1])
if redis.call('HLEN', owners) <= 1 and redis.call('HEXISTS', owners, '#seq') == 1 then
  redis.call('DEL', owners)
end
return removed
