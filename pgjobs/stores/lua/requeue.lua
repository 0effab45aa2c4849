-- ARGV: prefix, job ids...: failed or cancelled jobs ready again, attempts from 0.
local now = now_us()
local n = 0
for j = 2, #ARGV do
  local id = ARGV[j]
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'queue', 'priority', 'unique_key')
  if f[1] == 'failed' or f[1] == 'cancelled' then
    redis.call('ZREM', P .. ':done:' .. f[2] .. ':' .. f[1], id)
    redis.call('PERSIST', key)
    redis.call('HSET', key, 'status', 'ready', 'attempts', 0, 'run_at', now, 'started_at', '',
      'finished_at', '', 'worker_id', '', 'result', '', 'cancel', '0', 'lease', '')
    if f[4] and f[4] ~= '' then
      redis.call('SET', P .. ':unique:' .. f[4], id, 'NX')
    end
    make_ready(tonumber(id), f[2], tonumber(f[3]), now, now)
    n = n + 1
  end
end
return n
