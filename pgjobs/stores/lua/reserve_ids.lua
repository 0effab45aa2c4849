-- ARGV: prefix, count: reserve ids for jobs pushed later (on commit).
local last = redis.call('INCRBY', ARGV[1] .. ':seq', tonumber(ARGV[2]))
return last
