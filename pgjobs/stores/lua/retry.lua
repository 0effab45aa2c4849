-- ARGV: prefix, worker id, job id, encoded error, delay µs.
local id = ARGV[3]
if not mine(id, ARGV[2]) then return 0 end
local now = now_us()
local key = P .. ':job:' .. id
local f = redis.call('HMGET', key, 'queue', 'priority')
local run_at = now + tonumber(ARGV[5])
redis.call('ZREM', P .. ':running', id)
redis.call('HSET', key, 'status', 'ready', 'error', ARGV[4], 'run_at', run_at,
  'worker_id', '', 'lease', '')
make_ready(tonumber(id), f[1], tonumber(f[2]), run_at, now)
return 1
