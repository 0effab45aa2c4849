-- ARGV: prefix, batch id ('' = a new one), description, number of jobs, on_finish
-- ('1': given), on_success ('1': given), then the jobs (push_jobs): the batch's,
-- then its callbacks. The callbacks are stored 'waiting' until the batch
-- finishes (settle, in common.lua). Returns JSON: [batch id, created_at, the
-- jobs as push_jobs returns them].
local refused = check_jobs(7)
if refused then return refused end
local now = now_us()
local batch_id = tonumber(ARGV[2])
if not batch_id then batch_id = redis.call('INCR', P .. ':seq') end
local bkey = P .. ':batch:' .. batch_id
local members = P .. ':batch:' .. batch_id .. ':jobs'
local n = tonumber(ARGV[4])
local out = push_jobs(7, now)
for j = 1, n do
  redis.call('HSET', P .. ':job:' .. out[j][1], 'batch_id', batch_id)
  redis.call('RPUSH', members, out[j][1])
end
for j = n + 1, #out do  -- callbacks: out of the ready sets push_jobs put them in
  local id = out[j][1]
  local f = redis.call('HMGET', P .. ':job:' .. id, 'queue', 'run_at')
  redis.call('ZREM', P .. ':ready:' .. f[1], member(tonumber(f[2]), tonumber(id)))
  redis.call('ZREM', P .. ':scheduled:' .. f[1], id)
  redis.call('HSET', P .. ':job:' .. id, 'status', 'waiting')
  out[j][5] = 'waiting'
end
local on_finish, on_success = '', ''
if ARGV[5] == '1' then on_finish = out[n + 1][1] end
if ARGV[6] == '1' then on_success = out[#out][1] end
redis.call('HSET', bkey, 'total', n, 'pending', n, 'succeeded', 0, 'failed', 0, 'cancelled', 0,
  'created_at', now, 'finished_at', '', 'description', ARGV[3],
  'on_finish_id', on_finish, 'on_success_id', on_success)
return cjson.encode({int(batch_id), int(now), out})
