-- ARGV: prefix, worker id, job id, encoded error, final status, result ttl µs.
local id = ARGV[3]
if not mine(id, ARGV[2]) then return 0 end
local key = P .. ':job:' .. id
local f = redis.call('HMGET', key, 'queue', 'unique_key')
redis.call('ZREM', P .. ':running', id)
redis.call('HSET', key, 'error', ARGV[4])
release_unique(f[2], id)
finalize(id, f[1], ARGV[5], now_us(), tonumber(ARGV[6]))
return 1
