"""The Redis store: jobs as hashes, queues as sorted sets, every change a Lua script.

All of pgjobs' Redis commands are here. Each operation that reads and then
writes runs as one server-side script, so claims are atomic across processes
and hosts, and idle workers are woken by pub/sub. Time is always Redis's own
clock (``TIME``), as the database stores use the database's.

Keys, under ``PREFIX`` (``P``)::

    P:seq                   INCR: job ids
    P:job:<id>              hash: the job (fields as the Job table's columns)
    P:queues                set: every queue name seen
    P:ready:<queue>         zset of due jobs. Score -priority; member
                            "<run_at µs, 16 digits>:<id, 19 digits>", so that
                            ZPOPMIN yields claim order (priority desc, run_at,
                            id) exactly, with no float packing of three numbers
    P:scheduled:<queue>     zset of jobs not due yet, scored by run_at (µs);
                            the claim script moves the due ones to P:ready
    P:running               zset of claimed jobs, scored by lease expiry (µs)
    P:done:<queue>:<status> zset of finished jobs, scored by finished_at (µs)
    P:unique:<key>          the id of the ready or running job holding a unique key
    P:workers               zset of live workers, scored by last heartbeat
    P:worker:<worker id>    hash: hostname, pid, queues, concurrency, times
    P:schedule:<name>       hash: last_tick, last_run of a SCHEDULE entry (µs)
    P:wake:<queue>          pub/sub channel: a job became due in <queue>
"""

import datetime
import json
import logging
import time

import redis
from django.conf import settings
from django.utils import timezone

from .. import records
from ..records import ClaimedJob, JobInfo, ScheduleInfo
from ..serialization import dumps
from .base import Store, args_json

logger = logging.getLogger("pgjobs")

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
MICROSECOND = datetime.timedelta(microseconds=1)

# Shared by every script: ARGV[1] is the key prefix.
_LUA_COMMON = """
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
-- A job ends: status, finish time, its place in the done index, its time to live.
local trimmed = {}
local function finalize(id, queue, status, now, ttl_us)
  local key = P .. ':job:' .. id
  redis.call('HSET', key, 'status', status, 'finished_at', now, 'lease', '', 'cancel', '0')
  local done = P .. ':done:' .. queue .. ':' .. status
  redis.call('ZADD', done, now, id)
  if ttl_us > 0 then
    redis.call('PEXPIRE', key, math.floor(ttl_us / 1000))
    if not trimmed[done] then  -- entries whose job expired: once per script
      trimmed[done] = true
      redis.call('ZREMRANGEBYSCORE', done, '-inf', now - ttl_us)
    end
  end
end
local function mine(id, worker_id)
  local f = redis.call('HMGET', P .. ':job:' .. id, 'status', 'worker_id')
  return f[1] == 'running' and f[2] == worker_id
end
"""

# push_jobs(i, now) writes the jobs whose fields start at ARGV[i], 12 per job:
# id ('' = allocate), func, args, kwargs, queue, priority, run_at µs ('' = now),
# max_attempts, timeout, unique_key, signature, unique ('1': keep out a second
# active job with the key). Returns per job [id, existing ("1": the holder of
# its unique key, not written), run_at, created_at], numbers as strings
# (cjson would round µs timestamps).
_LUA_PUSH = """
-- Refuse every job before writing any (a script that fails half way keeps
-- what it wrote): the checks the database stores' constraints make.
local function check_jobs(i)
  while i <= #ARGV do
    local priority = tonumber(ARGV[i + 5])
    if not priority or priority ~= math.floor(priority) or priority < -100 or priority > 100 then
      return redis.error_reply('pgjobs: priority out of range: ' .. ARGV[i + 5])
    end
    local max_attempts = tonumber(ARGV[i + 7])
    if not max_attempts or max_attempts < 1 then
      return redis.error_reply('pgjobs: max_attempts must be >= 1: ' .. ARGV[i + 7])
    end
    i = i + 12
  end
  return nil
end
local function push_jobs(i, now)
  local out = {}
  while i <= #ARGV do
    local uk = ARGV[i + 9]
    local holder = nil
    if ARGV[i + 11] == '1' then
      local h = redis.call('GET', P .. ':unique:' .. uk)
      if h then
        local st = redis.call('HGET', P .. ':job:' .. h, 'status')
        if st == 'ready' or st == 'running' then holder = h end
      end
    end
    if holder then
      out[#out + 1] = {holder, '1', '0', '0'}
    else
      local id = tonumber(ARGV[i])
      if not id then id = redis.call('INCR', P .. ':seq') end
      local queue = ARGV[i + 4]
      local priority = tonumber(ARGV[i + 5])
      local run_at = tonumber(ARGV[i + 6]) or now
      if run_at < 0 then run_at = 0 end
      redis.call('HSET', P .. ':job:' .. id,
        'func', ARGV[i + 1], 'args', ARGV[i + 2], 'kwargs', ARGV[i + 3], 'queue', queue,
        'priority', priority, 'run_at', run_at, 'max_attempts', ARGV[i + 7],
        'timeout', ARGV[i + 8], 'unique_key', uk, 'signature', ARGV[i + 10],
        'status', 'ready', 'attempts', 0, 'created_at', now, 'cancel', '0')
      redis.call('SADD', P .. ':queues', queue)
      make_ready(id, queue, priority, run_at, now)
      if uk ~= '' then redis.call('SET', P .. ':unique:' .. uk, id) end
      out[#out + 1] = {int(id), '0', int(run_at), int(now)}
    end
    i = i + 12
  end
  return out
end
"""

# ARGV: prefix, then the jobs (push_jobs). Returns JSON.
PUSH = (
    _LUA_COMMON
    + _LUA_PUSH
    + """
local refused = check_jobs(2)
if refused then return refused end
return cjson.encode(push_jobs(2, now_us()))
"""
)

# ARGV: prefix, schedule name, last_tick µs: create the record once, settled
# through last_tick or Redis's own time if that is earlier. 1 if created.
CREATE_SCHEDULE = (
    _LUA_COMMON
    + """
local key = P .. ':schedule:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'last_tick', int(math.min(tonumber(ARGV[3]), now_us())), 'last_run', '')
return 1
"""
)

# ARGV: prefix, schedule name, last_tick µs as read, new last_tick µs, then the
# jobs (push_jobs). Compare-and-set: nothing happens (nil) unless last_tick is
# unchanged and the new one is not later than Redis's clock.
ADVANCE_SCHEDULE = (
    _LUA_COMMON
    + _LUA_PUSH
    + """
local key = P .. ':schedule:' .. ARGV[2]
local now = now_us()
if redis.call('HGET', key, 'last_tick') ~= ARGV[3] or tonumber(ARGV[4]) > now then
  return false
end
local refused = check_jobs(5)
if refused then return refused end
redis.call('HSET', key, 'last_tick', ARGV[4])
if #ARGV >= 5 then redis.call('HSET', key, 'last_run', ARGV[4]) end
local out = push_jobs(5, now)
if #out == 0 then return '[]' end
return cjson.encode(out)
"""
)

# ARGV: prefix, worker id, lease µs, limit, result ttl µs (-1: delete succeeded
# jobs at once), number of results, then (id, encoded result) pairs, then the
# queues (none: every queue).
# Records the successes, then claims up to limit due jobs in claim order.
# Returns JSON: per claimed job its fields, as strings. One bulk reply parsed by
# json.loads costs a fraction of a nested array parsed reply by reply.
FINISH_AND_CLAIM = (
    _LUA_COMMON
    + """
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
  local f = redis.call('HMGET', key, 'status', 'worker_id', 'queue', 'unique_key')
  if f[1] == 'running' and f[2] == worker_id then
    redis.call('ZREM', P .. ':running', id)
    release_unique(f[4], id)
    if ttl_us < 0 then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 'result', ARGV[i + 1])
      finalize(id, f[3], 'succeeded', now, ttl_us)
    end
  end
  i = i + 2
end
if limit <= 0 then return '[]' end

local queues = {}
for j = i, #ARGV do queues[#queues + 1] = ARGV[j] end
if #queues == 0 then queues = redis.call('SMEMBERS', P .. ':queues') end

-- Deferred and retried jobs that are due now join their queue's ready set.
for _, q in ipairs(queues) do
  local scheduled = P .. ':scheduled:' .. q
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    local f = redis.call('HMGET', P .. ':job:' .. id, 'priority', 'run_at', 'status')
    redis.call('ZREM', scheduled, id)
    if f[3] == 'ready' then
      redis.call('ZADD', P .. ':ready:' .. q, -tonumber(f[1]), member(tonumber(f[2]), id))
    end
  end
end

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
  local id = tonumber(string.sub(m, 18))
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'func', 'args', 'kwargs', 'queue', 'priority',
    'run_at', 'attempts', 'max_attempts', 'timeout', 'signature')
  if f[1] == 'ready' then
    local attempts = tonumber(f[8]) + 1
    redis.call('HSET', key, 'status', 'running', 'attempts', attempts, 'started_at', now,
      'worker_id', worker_id, 'lease', lease)
    redis.call('ZADD', P .. ':running', lease, id)
    out[#out + 1] = {int(id), f[2], f[3], f[4], f[5], f[6], f[7], int(attempts), f[9], f[10], f[11]}
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""
)

# ARGV: prefix, worker id, job id, encoded error, delay µs.
RETRY = (
    _LUA_COMMON
    + """
local id = ARGV[3]
if not mine(id, ARGV[2]) then return 0 end
local now = now_us()
local key = P .. ':job:' .. id
local f = redis.call('HMGET', key, 'queue', 'priority')
local run_at = now + tonumber(ARGV[5])
redis.call('ZREM', P .. ':running', id)
redis.call('HSET', key, 'status', 'ready', 'error', ARGV[4], 'run_at', run_at,
  'worker_id', '', 'lease', '')
make_ready(tonumber(id), f[1], tonumber(f[2]), run_at, now)
return 1
"""
)

# ARGV: prefix, worker id, job id, encoded error, final status, result ttl µs.
FAIL = (
    _LUA_COMMON
    + """
local id = ARGV[3]
if not mine(id, ARGV[2]) then return 0 end
local key = P .. ':job:' .. id
local f = redis.call('HMGET', key, 'queue', 'unique_key')
redis.call('ZREM', P .. ':running', id)
redis.call('HSET', key, 'error', ARGV[4])
release_unique(f[2], id)
finalize(id, f[1], ARGV[5], now_us(), tonumber(ARGV[6]))
return 1
"""
)

# ARGV: prefix, worker id, lease µs, job ids... Returns the ids asked to stop.
HEARTBEAT = (
    _LUA_COMMON
    + """
local worker_id = ARGV[2]
local now = now_us()
local lease = now + tonumber(ARGV[3])
local wkey = P .. ':worker:' .. worker_id
if redis.call('EXISTS', wkey) == 1 then
  redis.call('HSET', wkey, 'heartbeat_at', now)
  redis.call('ZADD', P .. ':workers', now, worker_id)
end
local cancel = {}
for j = 4, #ARGV do
  local id = ARGV[j]
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker_id', 'cancel')
  if f[1] == 'running' and f[2] == worker_id then
    redis.call('HSET', key, 'lease', lease)
    redis.call('ZADD', P .. ':running', lease, id)
    if f[3] == '1' then cancel[#cancel + 1] = tonumber(id) end
  end
end
return cancel
"""
)

# ARGV: prefix, worker id, job ids...: claimed jobs back to ready, attempt uncounted.
RELEASE = (
    _LUA_COMMON
    + """
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
"""
)

# ARGV: prefix, encoded error, result ttl µs, stale worker age µs.
# Jobs whose lease expired go back to ready (or end, when cancelled or out of
# attempts); workers silent for too long leave the registry.
RESCUE = (
    _LUA_COMMON
    + """
local now = now_us()
local ttl_us = tonumber(ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', P .. ':workers', '-inf', now - tonumber(ARGV[4]))
for _, w in ipairs(stale) do
  redis.call('DEL', P .. ':worker:' .. w)
  redis.call('ZREM', P .. ':workers', w)
end
local expired = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', now - 1, 'LIMIT', 0, 1000)
local n = 0
for _, id in ipairs(expired) do
  local key = P .. ':job:' .. id
  redis.call('ZREM', P .. ':running', id)
  local f = redis.call('HMGET', key, 'status', 'cancel', 'attempts', 'max_attempts', 'queue',
    'priority', 'run_at', 'unique_key')
  if f[1] == 'running' then
    n = n + 1
    redis.call('HSET', key, 'error', ARGV[2], 'worker_id', '', 'lease', '')
    if f[2] == '1' or tonumber(f[3]) >= tonumber(f[4]) then
      release_unique(f[8], id)
      finalize(id, f[5], f[2] == '1' and 'cancelled' or 'failed', now, ttl_us)
    else
      redis.call('HSET', key, 'status', 'ready')
      make_ready(tonumber(id), f[5], tonumber(f[6]), tonumber(f[7]), now)
    end
  end
end
return n
"""
)

# ARGV: prefix, result ttl µs, job ids... Returns {cancelled, asked to stop}.
CANCEL = (
    _LUA_COMMON
    + """
local now = now_us()
local ttl_us = tonumber(ARGV[2])
local cancelled, asked = 0, 0
for j = 3, #ARGV do
  local id = ARGV[j]
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'queue', 'run_at', 'unique_key', 'cancel')
  if f[1] == 'ready' then
    redis.call('ZREM', P .. ':ready:' .. f[2], member(tonumber(f[3]), tonumber(id)))
    redis.call('ZREM', P .. ':scheduled:' .. f[2], id)
    release_unique(f[4], id)
    finalize(id, f[2], 'cancelled', now, ttl_us)
    cancelled = cancelled + 1
  elseif f[1] == 'running' and f[5] ~= '1' then
    redis.call('HSET', key, 'cancel', '1')
    asked = asked + 1
  end
end
return {cancelled, asked}
"""
)

# ARGV: prefix, job ids...: failed or cancelled jobs ready again, attempts from 0.
REQUEUE = (
    _LUA_COMMON
    + """
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
"""
)

# ARGV: prefix, queues... (none: every queue). Returns {due now, µs until the
# next scheduled job or -1}.
DUE = (
    _LUA_COMMON
    + """
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
"""
)

# ARGV: prefix, result ttl µs. Per queue: ready, scheduled-and-due, running,
# finished counts and the run_at of the oldest due job (µs, -1: none); and now.
STATUS = (
    _LUA_COMMON
    + """
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
"""
)

# ARGV: prefix, age µs (jobs that finished longer ago go), batch size, dry run
# ('1'), statuses...
PRUNE = (
    _LUA_COMMON
    + """
local cutoff = '(' .. int(now_us() - tonumber(ARGV[2]))
local batch = tonumber(ARGV[3])
local n = 0
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  for j = 5, #ARGV do
    local done = P .. ':done:' .. q .. ':' .. ARGV[j]
    if ARGV[4] == '1' then
      n = n + redis.call('ZCOUNT', done, '-inf', cutoff)
    else
      local ids = redis.call('ZRANGEBYSCORE', done, '-inf', cutoff, 'LIMIT', 0, batch)
      for _, id in ipairs(ids) do
        local key = P .. ':job:' .. id
        if redis.call('HGET', key, 'status') == ARGV[j] then redis.call('DEL', key) end
        redis.call('ZREM', done, id)
      end
      n = n + #ids
    end
  end
end
return n
"""
)

# ARGV: prefix, worker id, hostname, pid, queues (JSON), concurrency.
REGISTER_WORKER = (
    _LUA_COMMON
    + """
local now = now_us()
redis.call('HSET', P .. ':worker:' .. ARGV[2], 'hostname', ARGV[3], 'pid', ARGV[4],
  'queues', ARGV[5], 'concurrency', ARGV[6], 'started_at', now, 'heartbeat_at', now)
redis.call('ZADD', P .. ':workers', now, ARGV[2])
return 1
"""
)

# ARGV: prefix, count: reserve ids for jobs pushed later (on commit).
RESERVE_IDS = """
local last = redis.call('INCRBY', ARGV[1] .. ':seq', tonumber(ARGV[2]))
return last
"""

_WORKER_LOST = {
    "type": "pgjobs.WorkerLost",
    "message": "the worker running this job stopped sending heartbeats",
    "traceback": "",
}


def to_us(when):
    """Microseconds since the epoch for a datetime (naive ones are in TIME_ZONE)."""
    if timezone.is_naive(when):
        when = timezone.make_aware(when, timezone.get_default_timezone())
    return (when - EPOCH) // MICROSECOND


def from_us(value):
    """The datetime for microseconds since the epoch, aware or naive as USE_TZ says."""
    if value in (None, "", b""):
        return None
    when = EPOCH + datetime.timedelta(microseconds=int(value))
    if not settings.USE_TZ:
        return timezone.make_naive(when, timezone.get_default_timezone())
    return when


def _int(value, default=0):
    return default if value in (None, "") else int(value)


def _json(value):
    return None if value in (None, "") else json.loads(value)


class RedisStore(Store):
    """Jobs in one Redis database, under a key prefix."""

    supports_listen = True
    supports_live_workers = True
    supports_schedules = True
    enqueues_in_transaction = False
    # Pub/sub wakes workers for due jobs; polling only backs it up.
    default_poll_interval = 2.0

    def __init__(
        self,
        url="redis://127.0.0.1:6379/0",
        *,
        prefix="pgjobs",
        lease_seconds=20.0,
        result_ttl=7 * 24 * 3600.0,
        keep_succeeded=True,
        connection_options=None,
    ):
        self.url = url
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.result_ttl = result_ttl  # None: finished jobs stay until pruned
        # False: a job that succeeds is deleted at once instead of kept with its result.
        self.keep_succeeded = keep_succeeded
        options = dict(connection_options or {})
        options["decode_responses"] = True
        self.client = redis.Redis.from_url(url, **options)
        self._lease_us = int(lease_seconds * 1e6)
        self._ttl_us = int(result_ttl * 1e6) if result_ttl else 0
        self._scripts = {
            name: self.client.register_script(source)
            for name, source in (
                ("push", PUSH),
                ("create_schedule", CREATE_SCHEDULE),
                ("advance_schedule", ADVANCE_SCHEDULE),
                ("finish_and_claim", FINISH_AND_CLAIM),
                ("retry", RETRY),
                ("fail", FAIL),
                ("heartbeat", HEARTBEAT),
                ("release", RELEASE),
                ("rescue", RESCUE),
                ("cancel", CANCEL),
                ("requeue", REQUEUE),
                ("due", DUE),
                ("status", STATUS),
                ("prune", PRUNE),
                ("register_worker", REGISTER_WORKER),
                ("reserve_ids", RESERVE_IDS),
            )
        }
        self._pubsub = None
        self._listen_queues = None
        self._listener_failed_at = None

    def _run(self, script, *args):
        return self._scripts[script](args=[self.prefix, *args])

    def key(self, *parts):
        return ":".join([self.prefix, *map(str, parts)])

    def describe(self):
        kwargs = self.client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return (
            f"redis {where} db {kwargs.get('db', 0)}, key prefix {self.prefix!r}, woken by pub/sub"
        )

    # -- producers -----------------------------------------------------------------

    @staticmethod
    def _push_args(spec, job_id=""):
        return [
            job_id,
            spec.func,
            args_json(spec),
            dumps(spec.kwargs),
            spec.queue,
            spec.priority,
            "" if spec.run_at is None else to_us(spec.run_at),
            spec.max_attempts,
            "" if spec.timeout is None else repr(float(spec.timeout)),
            spec.unique_key or "",
            spec.signature,
            "1" if spec.unique_key else "0",
        ]

    def push(self, specs, ids=None):
        """Write ``specs`` (with ``ids`` reserved earlier, or new ones); return
        their ``JobInfo``s. A job with a ``unique_key`` that a ready or running
        job holds is not written: that job's ``JobInfo`` stands in for it."""
        if not specs:
            return []
        return self._pushed(specs, self._run("push", *self._jobs_args(specs, ids)))

    def _jobs_args(self, specs, ids=None):
        args = []
        for n, spec in enumerate(specs):
            args += self._push_args(spec, "" if ids is None else ids[n])
        return args

    def _pushed(self, specs, reply):
        infos = []
        for spec, (job_id, existing, run_at, created_at) in zip(
            specs, json.loads(reply), strict=True
        ):
            job_id = int(job_id)
            if existing == "1":
                infos.append(self.get(job_id))
            else:
                infos.append(self.new_info(spec, job_id, run_at, created_at))
        return infos

    @staticmethod
    def new_info(spec, job_id, run_at=None, created_at=None):
        """The ``JobInfo`` of a job just written (or about to be, at commit)."""
        return JobInfo(
            id=job_id,
            func=spec.func,
            queue=spec.queue,
            status=records.READY,
            priority=spec.priority,
            run_at=from_us(run_at) if run_at is not None else spec.run_at,
            max_attempts=spec.max_attempts,
            created_at=from_us(created_at),
        )

    def reserve_ids(self, count):
        """``count`` new job ids, for jobs pushed later (at commit)."""
        last = int(self._run("reserve_ids", count))
        return list(range(last - count + 1, last + 1))

    def active_holder(self, unique_key):
        """The ready or running job holding ``unique_key``, or None."""
        job_id = self.client.get(self.key("unique", unique_key))
        if job_id is None:
            return None
        info = self.get(job_id)
        if info is None or info.status not in (records.READY, records.RUNNING):
            return None
        return info

    def enqueue(self, spec):
        return self.push([spec])[0]

    def enqueue_many(self, specs, ids=None):
        return self.push(list(specs), ids)

    def enqueue_unique(self, spec):
        return self.push([spec])[0]

    def get(self, job_id):
        fields = self.client.hgetall(self.key("job", job_id))
        if not fields:
            return None
        return JobInfo(
            id=int(job_id),
            func=fields["func"],
            queue=fields["queue"],
            status=fields["status"],
            priority=int(fields["priority"]),
            run_at=from_us(fields["run_at"]),
            attempts=_int(fields.get("attempts")),
            max_attempts=_int(fields.get("max_attempts"), 3),
            created_at=from_us(fields.get("created_at")),
            started_at=from_us(fields.get("started_at")),
            finished_at=from_us(fields.get("finished_at")),
            result=_json(fields.get("result")),
            error=_json(fields.get("error")),
            worker_id=fields.get("worker_id") or None,
        )

    def cancel(self, job_id):
        cancelled, _ = self.cancel_many([job_id])
        return bool(cancelled)

    def cancel_many(self, job_ids):
        job_ids = [str(int(job_id)) for job_id in job_ids]
        if not job_ids:
            return 0, 0
        cancelled, asked = self._run("cancel", self._ttl_us, *job_ids)
        return cancelled, asked

    def requeue(self, job_ids):
        job_ids = [str(int(job_id)) for job_id in job_ids]
        return self._run("requeue", *job_ids) if job_ids else 0

    # -- workers -------------------------------------------------------------------

    def claim(self, queues, limit, worker_id):
        return self.finish_and_claim(worker_id, [], queues, limit)

    def finish(self, worker_id, results):
        if results:
            self.finish_and_claim(worker_id, results, None, 0)

    def finish_and_claim(self, worker_id, results, queues, limit):
        ttl_us = self._ttl_us if self.keep_succeeded else -1
        args = [worker_id, self._lease_us, max(0, limit), ttl_us, len(results)]
        for job_id, result in results:
            args += [job_id, dumps(result)]
        args += list(queues or ())
        rows = json.loads(self._run("finish_and_claim", *args))
        return [
            ClaimedJob(
                id=int(job_id),
                func=func,
                args=json.loads(job_args),
                kwargs=json.loads(job_kwargs),
                queue=queue,
                priority=int(priority),
                run_at=from_us(run_at),
                attempts=int(attempts),
                max_attempts=int(max_attempts),
                timeout=float(timeout) if timeout else None,
                signature=signature or "",
            )
            for (
                job_id,
                func,
                job_args,
                job_kwargs,
                queue,
                priority,
                run_at,
                attempts,
                max_attempts,
                timeout,
                signature,
            ) in rows
        ]

    def retry(self, worker_id, job_id, error, delay):
        self._run("retry", worker_id, job_id, dumps(error), max(0, int(delay * 1e6)))

    def fail(self, worker_id, job_id, error, status=records.FAILED):
        self._run("fail", worker_id, job_id, dumps(error), status, self._ttl_us)

    def heartbeat(self, worker_id, job_ids):
        return [
            int(job_id) for job_id in self._run("heartbeat", worker_id, self._lease_us, *job_ids)
        ]

    def rescue(self):
        stale_us = int(3 * self.lease_seconds * 1e6)
        return self._run("rescue", dumps(_WORKER_LOST), self._ttl_us, stale_us)

    def release(self, worker_id, job_ids):
        if job_ids:
            self._run("release", worker_id, *job_ids)

    def seconds_until_due(self, queues):
        _, wait_us = self._run("due", *(queues or ()))
        return None if wait_us < 0 else wait_us / 1e6

    def count_due(self, queues):
        due, _ = self._run("due", *(queues or ()))
        return due

    # -- the worker registry and status --------------------------------------------------

    def register_worker(self, worker_id, hostname, pid, queues, concurrency):
        self._run(
            "register_worker", worker_id, hostname, pid, json.dumps(list(queues or [])), concurrency
        )

    def unregister_worker(self, worker_id):
        pipe = self.client.pipeline()
        pipe.delete(self.key("worker", worker_id))
        pipe.zrem(self.key("workers"), worker_id)
        pipe.execute()

    def status(self):
        now_us, queue_rows, worker_rows = self._run("status", self._ttl_us)
        stale = now_us - 3 * self.lease_seconds * 1e6
        pipe = self.client.pipeline()
        for worker_id, _ in worker_rows:
            pipe.hgetall(self.key("worker", worker_id))
        workers = []
        for (worker_id, running), fields in zip(worker_rows, pipe.execute(), strict=True):
            if not fields or int(fields["heartbeat_at"]) < stale:
                continue
            workers.append(
                {
                    "id": worker_id,
                    "hostname": fields["hostname"],
                    "pid": int(fields["pid"]),
                    "queues": json.loads(fields["queues"]),
                    "concurrency": int(fields["concurrency"]),
                    "started_at": from_us(fields["started_at"]),
                    "heartbeat_at": from_us(fields["heartbeat_at"]),
                    "running": running,
                }
            )
        workers.sort(key=lambda w: w["started_at"])
        queues = []
        for queue, ready, running, succeeded, failed, cancelled, oldest in sorted(queue_rows):
            counts = {
                status: n
                for status, n in (
                    (records.READY, ready),
                    (records.RUNNING, running),
                    (records.SUCCEEDED, succeeded),
                    (records.FAILED, failed),
                    (records.CANCELLED, cancelled),
                )
                if n
            }
            if not counts:
                continue
            queues.append(
                {
                    "queue": queue,
                    "counts": counts,
                    "oldest_due_seconds": None if oldest < 0 else (now_us - oldest) / 1e6,
                }
            )
        return {"workers": workers, "queues": queues}

    def prune(self, older_than, statuses, batch_size=1000, dry_run=False):
        """Delete finished jobs that finished before now - ``older_than``, up to
        ``batch_size`` per queue and status in each script call."""
        age_us = older_than // MICROSECOND
        statuses = list(statuses)
        if dry_run:
            return self._run("prune", age_us, batch_size, "1", *statuses)
        deleted = 0
        while True:
            n = self._run("prune", age_us, batch_size, "0", *statuses)
            deleted += n
            if n == 0:
                return deleted

    def prune_batch(self, older_than, statuses, limit):
        """Delete jobs in ``statuses`` that finished more than ``older_than`` ago, up
        to ``limit`` per queue and status, in one script call; return how many.
        For the retentions shorter than the keys' own expiry (``RedisBackend``)."""
        return self._run("prune", older_than // MICROSECOND, limit, "0", *statuses)

    # -- schedules -------------------------------------------------------------------

    def get_schedules(self, names):
        names = list(names)
        pipe = self.client.pipeline()
        for name in names:
            pipe.hmget(self.key("schedule", name), "last_tick", "last_run")
        return {
            name: ScheduleInfo(name, from_us(last_tick), from_us(last_run))
            for name, (last_tick, last_run) in zip(names, pipe.execute(), strict=True)
            if last_tick is not None
        }

    def create_schedule(self, name, last_tick):
        return bool(self._run("create_schedule", name, to_us(last_tick)))

    def advance_schedule(self, name, last_tick, new_last_tick, specs):
        specs = list(specs)
        reply = self._run(
            "advance_schedule",
            name,
            to_us(last_tick),
            to_us(new_last_tick),
            *self._jobs_args(specs),
        )
        return None if reply is None else self._pushed(specs, reply)

    # -- wake-ups --------------------------------------------------------------------

    def listen(self, queues):
        self._listen_queues = list(queues) if queues else None
        self._close_listener()

    def _subscribe(self):
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        if self._listen_queues is None:
            pubsub.psubscribe(self.key("wake", "*"))
        else:
            pubsub.subscribe(*(self.key("wake", q) for q in self._listen_queues))
        self._pubsub = pubsub

    def wait(self, timeout):
        """Block on the pub/sub connection until a job becomes due in one of
        our queues. A broken connection is made again (the caller is told it
        was woken then, since messages may have been missed meanwhile)."""
        if self._pubsub is None:
            return self._reconnect_listener(timeout)
        try:
            message = self._pubsub.get_message(timeout=timeout)
            if message is None:
                return False
            while self._pubsub.get_message(timeout=0) is not None:
                pass  # a burst of enqueues is one wake-up
            return True
        except (redis.RedisError, OSError) as exc:
            logger.warning("pgjobs: lost the Redis pub/sub connection (%s); reconnecting", exc)
            self._close_listener()
            return self._reconnect_listener(timeout)

    def _reconnect_listener(self, timeout):
        try:
            self._subscribe()
        except (redis.RedisError, OSError) as exc:
            self._close_listener()
            time.sleep(min(timeout, 1.0))
            if self._listener_failed_at is None:
                self._listener_failed_at = time.monotonic()
                logger.warning("pgjobs: cannot subscribe yet (%s); polling until it can", exc)
            return False
        if self._listener_failed_at is not None:
            logger.warning("pgjobs: Redis pub/sub connection restored")
            self._listener_failed_at = None
        return True

    def _close_listener(self):
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.RedisError, OSError):
                pass

    def close(self):
        # Idle connections only: another thread may be using one right now, and
        # redis-py reconnects a broken connection on its next command anyway.
        self.client.connection_pool.disconnect(inuse_connections=False)

    # -- tests and maintenance -------------------------------------------------------

    def flush(self):
        """Delete every key under this store's prefix (tests, resets); nothing else."""
        deleted = 0
        batch = []
        for key in self.client.scan_iter(match=self.key("*"), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += self.client.unlink(*batch)
                batch = []
        if batch:
            deleted += self.client.unlink(*batch)
        return deleted
