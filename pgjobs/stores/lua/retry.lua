-- ARGV: prefix, worker id, job id, encoded error, delay µs, result ttl µs.
-- Ready again in delay µs; cancelled instead when its cancellation was asked for
-- while it ran (it failed before, or without, seeing the request).
local id = ARGV[3]
if not mine(id, ARGV[2]) then return 0 end
local now = now_us()
local key = P .. ':job:' .. id
local f = redis.call('HMGET', key, 'queue', 'priority', 'cancel', 'unique_key', 'attempts',
  'run_at', 'started_at', 'worker_id')
redis.call('ZREM', P .. ':running', id)
keep_attempt(id, f[1], f[5], f[6], f[7], f[8], f[3] == '1' and 'cancelled' or 'retried', ARGV[4],
  now)
flush_figures(now)
if f[3] == '1' then
  redis.call('HSET', key, 'error', ARGV[4], 'worker_id', '')
  release_unique(f[4], id)
  finalize(id, f[1], 'cancelled', now, tonumber(ARGV[6]))
  return 1
end
local run_at = now + tonumber(ARGV[5])
redis.call('HSET', key, 'status', 'ready', 'error', ARGV[4], 'run_at', run_at,
  'worker_id', '', 'lease', '')
make_ready(tonumber(id), f[1], tonumber(f[2]), run_at, now)
return 1
