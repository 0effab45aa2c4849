-- ARGV: prefix, worker id, job id, encoded error, final status, result ttl µs.
local id = ARGV[3]
if not mine(id, ARGV[2]) then return 0 end
local key = P .. ':job:' .. id
local f = redis.call('HMGET', key, 'queue', 'unique_key', 'attempts', 'run_at', 'started_at',
  'worker_id')
local now = now_us()
redis.call('ZREM', P .. ':running', id)
keep_attempt(id, f[1], f[3], f[4], f[5], f[6], ARGV[5], ARGV[4], now)
flush_figures(now)
redis.call('HSET', key, 'error', ARGV[4])
release_unique(f[2], id)
finalize(id, f[1], ARGV[5], now, tonumber(ARGV[6]))
return 1
