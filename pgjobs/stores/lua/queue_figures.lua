-- ARGV: prefix. Per queue: ready jobs due now, deferred, running, and the run_at
-- of the oldest due job (µs, -1: none); and now. Reads the ready and scheduled
-- sets' sizes, the first member of each priority level, and the running set
-- (as many jobs as run at once), never the jobs of a backlog one by one.
local now = now_us()
local running = {}
for _, id in ipairs(redis.call('ZRANGE', P .. ':running', 0, -1)) do
  local f = redis.call('HMGET', P .. ':job:' .. id, 'status', 'queue')
  if f[1] == 'running' then running[f[2]] = (running[f[2]] or 0) + 1 end
end
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local ready_key = P .. ':ready:' .. q
  local scheduled = P .. ':scheduled:' .. q
  local oldest = -1
  local score = '-inf'
  while true do
    local r = redis.call('ZRANGE', ready_key, score, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    if #r == 0 then break end
    local at = tonumber(string.sub(r[1], 1, 16))
    if oldest < 0 or at < oldest then oldest = at end
    score = '(' .. r[2]
  end
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  if #first > 0 and tonumber(first[2]) <= now and (oldest < 0 or tonumber(first[2]) < oldest) then
    oldest = tonumber(first[2])
  end
  local due_scheduled = redis.call('ZCOUNT', scheduled, '-inf', now)
  local deferred = redis.call('ZCARD', scheduled) - due_scheduled
  out[#out + 1] = {q, redis.call('ZCARD', ready_key) + due_scheduled, deferred, running[q] or 0,
    oldest}
end
return {now, out}
