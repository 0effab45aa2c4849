-- ARGV: prefix, worker id, lease µs, limit, result ttl µs (-1: delete succeeded
-- jobs at once), number of results, then (id, encoded result) pairs, then the
-- queues (none: every queue).
-- Records the successes, then claims up to limit due jobs in claim order.
-- Returns JSON: per claimed job its fields, as strings. One bulk reply parsed by
-- json.loads costs a fraction of a nested array parsed reply by reply.
local worker_id = ARGV[2]
local lease_us = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local ttl_us = tonumber(ARGV[5])
local n_results = tonumber(ARGV[6])
local now = now_us()

local i = 7
for _ = 1, n_results do
  local id = ARGV[i]
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker_id', 'queue', 'unique_key', 'run_at',
    'started_at', 'attempts')
  if f[1] == 'running' and f[2] == worker_id then
    redis.call('ZREM', P .. ':running', id)
    release_unique(f[4], id)
    count_attempt(f[3], 'succeeded', f[5], f[6], now)
    if ttl_us < 0 then
      settle(id, 'succeeded', now, 0, ARGV[i + 1])
      redis.call('DEL', key)
      if f[7] ~= '1' then redis.call('DEL', attempts_key(id)) end
    else
      redis.call('HSET', key, 'result', ARGV[i + 1])
      finalize(id, f[3], 'succeeded', now, ttl_us, f[7] == '1')
    end
  end
  i = i + 2
end
if n_results > 0 then flush_figures(now) end
if limit <= 0 then return '[]' end

local queues = {}
for j = i, #ARGV do queues[#queues + 1] = ARGV[j] end
if #queues == 0 then queues = redis.call('SMEMBERS', P .. ':queues') end

for _, q in ipairs(queues) do promote_due(q, now) end

-- The first `limit` members in (score, member) order over the queues.
local picked = {}
if #queues == 1 then
  local popped = redis.call('ZPOPMIN', P .. ':ready:' .. queues[1], limit)
  for j = 1, #popped, 2 do picked[#picked + 1] = popped[j] end
else
  local candidates = {}
  for _, q in ipairs(queues) do
    local r = redis.call('ZRANGE', P .. ':ready:' .. q, 0, limit - 1, 'WITHSCORES')
    for j = 1, #r, 2 do
      candidates[#candidates + 1] = {tonumber(r[j + 1]), r[j], q}
    end
  end
  table.sort(candidates, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for j = 1, math.min(limit, #candidates) do
    local c = candidates[j]
    redis.call('ZREM', P .. ':ready:' .. c[3], c[2])
    picked[#picked + 1] = c[2]
  end
end

local out = {}
local lease = now + lease_us
for _, m in ipairs(picked) do
  out[#out + 1] = take(m, worker_id, now, lease)  -- nil (no longer ready) adds nothing
end
if #out == 0 then return '[]' end
return cjson.encode(out)
