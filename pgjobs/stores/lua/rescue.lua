-- ARGV: prefix, lost (JSON: type, message, traceback template with four %s, outcomes
-- by status), result ttl µs, stale worker age µs.
-- Jobs whose lease expired go back to ready (or end, when cancelled or out of
-- attempts), each with an error naming its worker and attempt; workers silent
-- for too long leave the registry. Returns {how many, ids of the jobs ended}.
local now = now_us()
local lost = cjson.decode(ARGV[2])
local ttl_us = tonumber(ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', P .. ':workers', '-inf', now - tonumber(ARGV[4]))
for _, w in ipairs(stale) do
  redis.call('DEL', P .. ':worker:' .. w)
  redis.call('ZREM', P .. ':workers', w)
end
local expired = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', now - 1, 'LIMIT', 0, 1000)
local n = 0
local ended = {}
for _, id in ipairs(expired) do
  local key = P .. ':job:' .. id
  redis.call('ZREM', P .. ':running', id)
  local f = redis.call('HMGET', key, 'status', 'cancel', 'attempts', 'max_attempts', 'queue',
    'priority', 'run_at', 'unique_key', 'worker_id', 'started_at')
  if f[1] == 'running' then
    n = n + 1
    local status = 'ready'
    if f[2] == '1' then
      status = 'cancelled'
    elseif tonumber(f[3]) >= tonumber(f[4]) then
      status = 'failed'
    end
    local worker = (f[9] and f[9] ~= '') and f[9] or '?'
    local error = cjson.encode({
      type = lost.type,
      message = lost.message,
      traceback = string.format(lost.traceback, worker, f[3], f[4], lost.outcomes[status]),
    })
    keep_attempt(id, f[5], f[3], f[7], f[10], f[9], status == 'ready' and 'retried' or status,
      error, now)
    redis.call('HSET', key, 'error', error, 'worker_id', '', 'lease', '')
    if status ~= 'ready' then
      release_unique(f[8], id)
      finalize(id, f[5], status, now, ttl_us)
      ended[#ended + 1] = id
    else
      redis.call('HSET', key, 'status', 'ready')
      make_ready(tonumber(id), f[5], tonumber(f[6]), tonumber(f[7]), now)
    end
  end
end
flush_figures(now)
return {n, ended}
