-- KEYS[1]: the queue's control hash (paused, concurrency, rate, period,
-- window_start µs, window_count). ARGV: prefix, worker id, lease µs, wanted,
-- queue, then the setting's concurrency, rate and period µs (-1: none), which
-- apply where the hash has no value.
-- A claim from a limited queue (pgjobs/queue_control.py): its running jobs
-- counted, at most what its limits allow claimed, in claim order, and its rate
-- window moved on, all in one step, so that racing workers never exceed a
-- limit together. Returns JSON as finish_and_claim does.
local control = KEYS[1]
local worker_id = ARGV[2]
local lease_us = tonumber(ARGV[3])
local allowed = tonumber(ARGV[4])
local q = ARGV[5]
local now = now_us()

local c = redis.call('HMGET', control, 'paused', 'concurrency', 'rate', 'period',
  'window_start', 'window_count')
if c[1] == '1' then return '[]' end
local concurrency = tonumber(c[2]) or tonumber(ARGV[6])
local rate, period = tonumber(c[3]), tonumber(c[4])
if not rate then rate, period = tonumber(ARGV[7]), tonumber(ARGV[8]) / 1e6 end
local window_start, window_count = tonumber(c[5]), tonumber(c[6]) or 0

if concurrency >= 0 then
  local running = 0
  for _, id in ipairs(redis.call('ZRANGE', P .. ':running', 0, -1)) do
    if redis.call('HGET', P .. ':job:' .. id, 'queue') == q then running = running + 1 end
  end
  allowed = math.min(allowed, math.max(0, concurrency - running))
end
if rate >= 0 then
  local period_us = period * 1e6
  if not window_start or now >= window_start + period_us then
    window_start, window_count = now, 0
  end
  allowed = math.min(allowed, math.max(0, rate - window_count))
end

local out = {}
if allowed > 0 then
  promote_due(q, now)
  local lease = now + lease_us
  local ready = P .. ':ready:' .. q
  while #out < allowed do
    local popped = redis.call('ZPOPMIN', ready, allowed - #out)
    if #popped == 0 then break end
    for j = 1, #popped, 2 do
      out[#out + 1] = take(popped[j], worker_id, now, lease)
    end
  end
end
if rate >= 0 then
  redis.call('HSET', control, 'window_start', int(window_start), 'window_count',
    window_count + #out)
end
if #out == 0 then return '[]' end
return cjson.encode(out)
