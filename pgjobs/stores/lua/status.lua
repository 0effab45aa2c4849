-- ARGV: prefix, result ttl µs. Per queue: ready, scheduled-and-due, running,
-- finished counts and the run_at of the oldest due job (µs, -1: none); and now.
local now = now_us()
local ttl_us = tonumber(ARGV[2])
local running = {}
for _, id in ipairs(redis.call('ZRANGE', P .. ':running', 0, -1)) do
  local f = redis.call('HMGET', P .. ':job:' .. id, 'status', 'queue', 'worker_id')
  if f[1] == 'running' then
    running[f[2]] = (running[f[2]] or 0) + 1
    running['worker:' .. f[3]] = (running['worker:' .. f[3]] or 0) + 1
  end
end
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local ready_key = P .. ':ready:' .. q
  local scheduled = P .. ':scheduled:' .. q
  local oldest = -1
  -- The oldest due job: the first member of each priority level in P:ready...
  local score = '-inf'
  while true do
    local r = redis.call('ZRANGE', ready_key, score, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    if #r == 0 then break end
    local at = tonumber(string.sub(r[1], 1, 16))
    if oldest < 0 or at < oldest then oldest = at end
    score = '(' .. r[2]
  end
  -- ...and a scheduled job that is due but not yet moved there.
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  if #first > 0 and tonumber(first[2]) <= now and (oldest < 0 or tonumber(first[2]) < oldest) then
    oldest = tonumber(first[2])
  end
  local row = {q, redis.call('ZCARD', ready_key) + redis.call('ZCARD', scheduled),
    running[q] or 0}
  for _, status in ipairs({'succeeded', 'failed', 'cancelled'}) do
    local done = P .. ':done:' .. q .. ':' .. status
    if ttl_us > 0 then redis.call('ZREMRANGEBYSCORE', done, '-inf', now - ttl_us) end
    row[#row + 1] = redis.call('ZCARD', done)
  end
  row[#row + 1] = oldest
  out[#out + 1] = row
end
local workers = {}
for _, w in ipairs(redis.call('ZRANGE', P .. ':workers', 0, -1)) do
  workers[#workers + 1] = {w, running['worker:' .. w] or 0}
end
return {now, out, workers}
