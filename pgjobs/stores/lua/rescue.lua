-- ARGV: prefix, encoded error, result ttl µs, stale worker age µs.
-- Jobs whose lease expired go back to ready (or end, when cancelled or out of
-- attempts); workers silent for too long leave the registry.
local now = now_us()
local ttl_us = tonumber(ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', P .. ':workers', '-inf', now - tonumber(ARGV[4]))
for _, w in ipairs(stale) do
  redis.call('DEL', P .. ':worker:' .. w)
  redis.call('ZREM', P .. ':workers', w)
end
local expired = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', now - 1, 'LIMIT', 0, 1000)
local n = 0
for _, id in ipairs(expired) do
  local key = P .. ':job:' .. id
  redis.call('ZREM', P .. ':running', id)
  local f = redis.call('HMGET', key, 'status', 'cancel', 'attempts', 'max_attempts', 'queue',
    'priority', 'run_at', 'unique_key')
  if f[1] == 'running' then
    n = n + 1
    redis.call('HSET', key, 'error', ARGV[2], 'worker_id', '', 'lease', '')
    if f[2] == '1' or tonumber(f[3]) >= tonumber(f[4]) then
      release_unique(f[8], id)
      finalize(id, f[5], f[2] == '1' and 'cancelled' or 'failed', now, ttl_us)
    else
      redis.call('HSET', key, 'status', 'ready')
      make_ready(tonumber(id), f[5], tonumber(f[6]), tonumber(f[7]), now)
    end
  end
end
return n
