-- ARGV: prefix, job ids...: ready jobs not yet due (in P:scheduled) due now, attempts kept.
local now = now_us()
local n = 0
for j = 2, #ARGV do
  local id = ARGV[j]
  local f = redis.call('HMGET', P .. ':job:' .. id, 'status', 'queue', 'priority')
  if f[1] == 'ready' and redis.call('ZREM', P .. ':scheduled:' .. f[2], id) == 1 then
    redis.call('HSET', P .. ':job:' .. id, 'run_at', now)
    make_ready(tonumber(id), f[2], tonumber(f[3]), now, now)
    n = n + 1
  end
end
return n
