-- Record that a ConsumerGroup claims a consumer group (by name) on this Redis, and return
-- every claim on that group name: who manages what is decided from them (decisions.ownership),
-- the same way by every operator process, whatever host name it reaches this server by.
--
-- KEYS[1] the group's owners hash (keys.owners_key): field = ConsumerGroup uid, value = JSON
--         {namespace, name, kind ('key'|'pattern'), text, seq}; field '#seq' = the counter.
-- ARGV[1] uid, ARGV[2] namespace, ARGV[3] name, ARGV[4] kind, ARGV[5] key or pattern
--
-- A claim keeps its seq (its place in line) while its kind and text stay the same; a changed
-- one goes to the back. Reply: the hash, flat (field, value, ...), '#seq' included.
local owners, uid = KEYS[1], ARGV[1]
local current = redis.call('HGET', owners, uid)
if current then
  local claim = cjson.decode(current)
  if claim.kind == ARGV[4] and claim.text == ARGV[5]
      and claim.namespace == ARGV[2] and claim.name == ARGV[3] then
    return redis.call('HGETALL', owners)
  end
end
local seq = redis.call('HINCRBY', owners, '#seq', 1)
redis.call('HSET', owners, uid, cjson.encode({
  namespace = ARGV[2], name = ARGV[3], kind = ARGV[4], text = ARGV[5], seq = seq,
}))
return redis.call('HGETALL', owners)
