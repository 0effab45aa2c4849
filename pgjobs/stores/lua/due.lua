-- ARGV: prefix, queues... (none: every queue). Returns {due now, µs until the
-- next scheduled job or -1}.
local now = now_us()
local queues = {}
for j = 2, #ARGV do queues[#queues + 1] = ARGV[j] end
if #queues == 0 then queues = redis.call('SMEMBERS', P .. ':queues') end
local due, next_at = 0, -1
for _, q in ipairs(queues) do
  local scheduled = P .. ':scheduled:' .. q
  due = due + redis.call('ZCARD', P .. ':ready:' .. q)
    + redis.call('ZCOUNT', scheduled, '-inf', now)
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  if #first > 0 then
    local at = tonumber(first[2])
    if next_at < 0 or at < next_at then next_at = at end
  end
end
if due > 0 then return {due, 0} end
if next_at < 0 then return {0, -1} end
return {0, math.max(0, next_at - now)}
