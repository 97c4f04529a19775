-- Entry ids, shared by every script (gateway.client.Script puts this first, after a
-- shebang): an id is "<ms>-<seq>", two digit strings without leading zeros, so they compare
-- by length and then lexically: any 64-bit value works, without Lua's float rounding.
local function id_parts(id)
  return string.match(id, '^(%d+)-(%d+)$')
end
local function id_less(a, b)
  local a_ms, a_seq = id_parts(a)
  local b_ms, b_seq = id_parts(b)
  if #a_ms ~= #b_ms then return #a_ms < #b_ms end
  if a_ms ~= b_ms then return a_ms < b_ms end
  if #a_seq ~= #b_seq then return #a_seq < #b_seq end
  return a_seq < b_seq
end

