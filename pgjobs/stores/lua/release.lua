-- ARGV: prefix, worker id, job ids...: claimed jobs back to ready, attempt uncounted.
local now = now_us()
local n = 0
for j = 3, #ARGV do
  local id = ARGV[j]
  if mine(id, ARGV[2]) then
    local key = P .. ':job:' .. id
    local f = redis.call('HMGET', key, 'queue', 'priority', 'run_at', 'attempts')
    redis.call('ZREM', P .. ':running', id)
    redis.call('HSET', key, 'status', 'ready', 'attempts', tonumber(f[4]) - 1,
      'worker_id', '', 'started_at', '', 'lease', '')
    make_ready(tonumber(id), f[1], tonumber(f[2]), tonumber(f[3]), now)
    n = n + 1
  end
end
return n
