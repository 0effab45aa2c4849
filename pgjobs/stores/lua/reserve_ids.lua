-- ARGV: prefix, count: reserve ids for jobs pushed later (on commit). KEYS[1]: the prefix
-- (routing on a cluster; see common.lua).
local last = redis.call('INCRBY', ARGV[1] .. ':seq', tonumber(ARGV[2]))
return last
