-- ARGV: prefix, result ttl µs, job ids... Ready and waiting jobs are cancelled,
-- running ones asked to stop. Returns {cancelled, asked to stop}.
local now = now_us()
local ttl_us = tonumber(ARGV[2])
local cancelled, asked = 0, 0
for j = 3, #ARGV do
  local id = ARGV[j]
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'queue', 'run_at', 'unique_key', 'cancel')
  if f[1] == 'ready' or f[1] == 'waiting' then
    redis.call('ZREM', P .. ':ready:' .. f[2], member(tonumber(f[3]), tonumber(id)))
    redis.call('ZREM', P .. ':scheduled:' .. f[2], id)
    release_unique(f[4], id)
    finalize(id, f[2], 'cancelled', now, ttl_us)
    cancelled = cancelled + 1
  elseif f[1] == 'running' and f[5] ~= '1' then
    redis.call('HSET', key, 'cancel', '1')
    asked = asked + 1
  end
end
return {cancelled, asked}
