-- Shared by every pgjobs Redis script (pgjobs/stores/redis.py): ARGV[1] is the key prefix,
-- P. Every key a script touches is named P .. ':...', so that on a Redis Cluster, where P
-- is hash-tagged ('{pgjobs}'), all of them share one slot; KEYS[1] is P itself, the one
-- declared key, which sends the script to the node holding that slot.
local P = ARGV[1]
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function int(n)
  return string.format('%d', n)
end
local function member(run_at, id)
  return string.format('%016d:%019d', run_at, id)
end
local woken = {}
local function wake(queue)
  if not woken[queue] then
    woken[queue] = true
    redis.call('PUBLISH', P .. ':wake:' .. queue, queue)
  end
end
-- Make a job ready: due now (or overdue) into P:ready, else into P:scheduled.
local function make_ready(id, queue, priority, run_at, now)
  if run_at <= now then
    redis.call('ZADD', P .. ':ready:' .. queue, -priority, member(run_at, id))
  else
    redis.call('ZADD', P .. ':scheduled:' .. queue, run_at, id)
  end
  wake(queue)
end
local function release_unique(key, id)
  if key and key ~= '' then
    local k = P .. ':unique:' .. key
    if redis.call('GET', k) == tostring(id) then redis.call('DEL', k) end
  end
end
-- Batches and chains. A job that ends settles what waits on it (settle): its
-- batch counts it, and the last of the batch releases the callbacks; the jobs
-- chained after it follow it. The texts are records.previous_failed_error's and
-- records.BATCH_FAILED_MESSAGE (tests/test_batches.py holds them equal).
local DEPENDENCY_TYPE = 'pgjobs.exceptions.DependencyFailed'
local BATCH_FAILED = 'batch %s finished with %s failed and %s cancelled job(s); on_success runs only when every job succeeded'
local function dependency_error(message)
  return cjson.encode({type = DEPENDENCY_TYPE, message = message, traceback = message})
end
local finalize  -- defined below: ending a job may end the jobs waiting on it
-- A waiting job (a callback, a chained job) becomes ready, once.
local function release(id, now, previous_result)
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'queue', 'priority', 'run_at')
  if f[1] ~= 'waiting' then return end
  local run_at = math.max(tonumber(f[4]), now)
  redis.call('HSET', key, 'status', 'ready', 'run_at', run_at)
  if previous_result then redis.call('HSET', key, 'previous_result', previous_result) end
  make_ready(tonumber(id), f[2], tonumber(f[3]), run_at, now)
end
-- A waiting job is cancelled, with why.
local function cancel_waiting(id, message, now, ttl_us)
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'queue', 'unique_key')
  if f[1] ~= 'waiting' then return end
  redis.call('HSET', key, 'error', dependency_error(message))
  release_unique(f[3], id)
  finalize(id, f[2], 'cancelled', now, ttl_us)
end
local function settle(id, status, now, ttl_us, result)
  local key = P .. ':job:' .. id
  local batch_id = redis.call('HGET', key, 'batch_id')
  local bkey = P .. ':batch:' .. (batch_id or '')
  if batch_id and batch_id ~= '' and redis.call('EXISTS', bkey) == 1 then
    redis.call('HINCRBY', bkey, status, 1)
    if redis.call('HINCRBY', bkey, 'pending', -1) == 0 then
      redis.call('HSET', bkey, 'finished_at', now)
      if ttl_us > 0 then  -- a finished batch's record expires as its jobs do
        redis.call('PEXPIRE', bkey, math.floor(ttl_us / 1000))
        redis.call('PEXPIRE', bkey .. ':jobs', math.floor(ttl_us / 1000))
      end
      local b = redis.call('HMGET', bkey, 'on_finish_id', 'on_success_id', 'failed', 'cancelled')
      if b[1] and b[1] ~= '' then release(b[1], now, nil) end
      if b[2] and b[2] ~= '' then
        if tonumber(b[3]) == 0 and tonumber(b[4]) == 0 then
          release(b[2], now, nil)
        else
          cancel_waiting(b[2], string.format(BATCH_FAILED, batch_id, b[3], b[4]), now, ttl_us)
        end
      end
    end
  end
  local after = P .. ':after:' .. id
  local waiting = redis.call('SMEMBERS', after)
  if #waiting > 0 then
    redis.call('DEL', after)
    if status == 'succeeded' and result == nil then result = redis.call('HGET', key, 'result') end
    for _, w in ipairs(waiting) do
      if status == 'succeeded' then
        release(w, now, result or '')
      else
        cancel_waiting(w, 'cancelled: job ' .. id .. ', which this job runs after, ' .. status,
          now, ttl_us)
      end
    end
  end
end
-- A job ends: status, finish time, its place in the done index, its time to live;
-- then what waits on it is settled.
local trimmed = {}
-- first_attempt: the job has no attempts kept (P:attempts:<id>) to expire with it.
finalize = function(id, queue, status, now, ttl_us, first_attempt)
  local key = P .. ':job:' .. id
  redis.call('HSET', key, 'status', status, 'finished_at', now, 'lease', '', 'cancel', '0')
  local done = P .. ':done:' .. queue .. ':' .. status
  redis.call('ZADD', done, now, id)
  if ttl_us > 0 then
    redis.call('PEXPIRE', key, math.floor(ttl_us / 1000))
    if not first_attempt then
      redis.call('PEXPIRE', P .. ':attempts:' .. id, math.floor(ttl_us / 1000))
    end
    if not trimmed[done] then  -- entries whose job expired: once per script
      trimmed[done] = true
      redis.call('ZREMRANGEBYSCORE', done, '-inf', now - ttl_us)
    end
  end
  settle(id, status, now, ttl_us, nil)
end
-- Deferred and retried jobs of queue q that are due now join its ready set.
local function promote_due(q, now)
  local scheduled = P .. ':scheduled:' .. q
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)) do
    local f = redis.call('HMGET', P .. ':job:' .. id, 'priority', 'run_at', 'status')
    redis.call('ZREM', scheduled, id)
    if f[3] == 'ready' then
      redis.call('ZADD', P .. ':ready:' .. q, -tonumber(f[1]), member(tonumber(f[2]), id))
    end
  end
end
-- Claim the job of ready-set member m (taken out of its set) for worker_id until
-- lease: its ClaimedJob row, or nil when it is no longer ready.
local function take(m, worker_id, now, lease)
  local id = tonumber(string.sub(m, 18))
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'func', 'args', 'kwargs', 'queue', 'priority',
    'run_at', 'attempts', 'max_attempts', 'timeout', 'signature', 'traceparent')
  if f[1] ~= 'ready' then return nil end
  local attempts = tonumber(f[8]) + 1
  redis.call('HSET', key, 'status', 'running', 'attempts', attempts, 'started_at', now,
    'worker_id', worker_id, 'lease', lease)
  redis.call('ZADD', P .. ':running', lease, id)
  return {int(id), f[2], f[3], f[4], f[5], f[6], f[7], int(attempts), f[9], f[10], f[11],
    f[12] or ''}
end
local function mine(id, worker_id)
  local f = redis.call('HMGET', P .. ':job:' .. id, 'status', 'worker_id')
  return f[1] == 'running' and f[2] == worker_id
end
-- History and figures (pgjobs/stats.py). An attempt that did not succeed is kept
-- in the job's list P:attempts:<id>, one JSON array per attempt (number, started
-- µs, finished µs, worker id, outcome, error), deleted or expired with the job.
-- Figures go to one hash per minute, P:figures:<minute µs>, field
-- "<queue>\31<metric>\31<bucket>" (a count) or "<queue>\31<metric>\31sum" (seconds),
-- and to one per ten minutes (stats.COARSE), P:figures10:<start µs>, which a day's
-- chart reads past the last hour; both expire after stats.KEEP. EDGES and FIGURES_KEEP_MS are stats.EDGES and
-- stats.KEEP (tests/test_stats.py checks that they agree).
local EDGES = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600}
local FIGURES_KEEP_MS = 172800000
local function attempts_key(id)
  return P .. ':attempts:' .. id
end
local function figures_key(minute_us)
  return P .. ':figures:' .. int(minute_us)
end
local function coarse_figures_key(start_us)
  return P .. ':figures10:' .. int(start_us)
end
local function bucket_of(seconds)
  local b = 0
  for _, edge in ipairs(EDGES) do
    if seconds >= edge then b = b + 1 else break end
  end
  return b
end
-- Counted in this table as the script goes, written once at its end (flush_figures).
local figures = {}
local function add_figure(field, n)
  figures[field] = (figures[field] or 0) + n
end
-- An attempt of a job in `queue` due at run_at and started at started_at (µs,
-- strings or numbers; nil or '' when unknown) ended now with `outcome`.
local function count_attempt(queue, outcome, run_at, started_at, now)
  local prefix = queue .. '\31'
  add_figure(prefix .. outcome .. '\31' .. '0', 1)
  local started = tonumber(started_at)
  if not started then return end
  local due = tonumber(run_at)
  if due then
    local wait = (started - due) / 1000000
    add_figure(prefix .. 'wait\31' .. bucket_of(wait), 1)
    add_figure(prefix .. 'wait\31sum', wait)
  end
  local run = (now - started) / 1000000
  add_figure(prefix .. 'run\31' .. bucket_of(run), 1)
  add_figure(prefix .. 'run\31sum', run)
end
local function flush_figures(now)
  local key = figures_key(now - now % 60000000)
  local coarse = coarse_figures_key(now - now % 600000000)
  local any = false
  for field, n in pairs(figures) do
    any = true
    if string.sub(field, -4) == '\31sum' then
      redis.call('HINCRBYFLOAT', key, field, n)
      redis.call('HINCRBYFLOAT', coarse, field, n)
    else
      redis.call('HINCRBY', key, field, n)
      redis.call('HINCRBY', coarse, field, n)
    end
  end
  if any then
    redis.call('PEXPIRE', key, FIGURES_KEEP_MS + 60000)
    redis.call('PEXPIRE', coarse, FIGURES_KEEP_MS + 600000)
  end
  figures = {}
end
-- Keep the job's current attempt, which ended now with `outcome` and `error`
-- (JSON text), and count it.
local function keep_attempt(id, queue, attempt, run_at, started_at, worker_id, outcome, error, now)
  local started = tonumber(started_at)
  redis.call('RPUSH', attempts_key(id), string.format('[%d,%s,%d,%s,%s,%s]',
    tonumber(attempt) or 0, started and int(started) or 'null', now,
    cjson.encode(worker_id or ''), cjson.encode(outcome), error ~= '' and error or 'null'))
  count_attempt(queue, outcome, run_at, started_at, now)
end
