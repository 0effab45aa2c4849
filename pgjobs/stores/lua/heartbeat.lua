-- ARGV: prefix, worker id, lease µs, job ids... Returns the ids asked to stop.
local worker_id = ARGV[2]
local now = now_us()
local lease = now + tonumber(ARGV[3])
local wkey = P .. ':worker:' .. worker_id
if redis.call('EXISTS', wkey) == 1 then
  redis.call('HSET', wkey, 'heartbeat_at', now)
  redis.call('ZADD', P .. ':workers', now, worker_id)
end
local cancel = {}
for j = 4, #ARGV do
  local id = ARGV[j]
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker_id', 'cancel')
  if f[1] == 'running' and f[2] == worker_id then
    redis.call('HSET', key, 'lease', lease)
    redis.call('ZADD', P .. ':running', lease, id)
    if f[3] == '1' then cancel[#cancel + 1] = tonumber(id) end
  end
end
return cancel
