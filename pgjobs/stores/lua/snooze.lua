-- ARGV: prefix, worker id, job id, delay µs, result ttl µs.
-- The job raised Snooze: ready again in delay µs, its attempt given back; or,
-- when its cancellation was asked for while it ran, it ends cancelled.
local id = ARGV[3]
if not mine(id, ARGV[2]) then return 0 end
local now = now_us()
local key = P .. ':job:' .. id
local f = redis.call('HMGET', key, 'queue', 'priority', 'attempts', 'cancel', 'unique_key')
redis.call('ZREM', P .. ':running', id)
if f[4] == '1' then
  redis.call('HSET', key, 'worker_id', '')
  release_unique(f[5], id)
  finalize(id, f[1], 'cancelled', now, tonumber(ARGV[5]))
  return 1
end
local run_at = now + tonumber(ARGV[4])
redis.call('HSET', key, 'status', 'ready', 'attempts', tonumber(f[3]) - 1, 'run_at', run_at,
  'worker_id', '', 'started_at', '', 'lease', '')
make_ready(tonumber(id), f[1], tonumber(f[2]), run_at, now)
return 1
