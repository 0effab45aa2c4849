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
