-- ARGV: prefix, job ids...: failed or cancelled jobs ready again, attempts from 0.
-- A job whose unique key another ready or running job holds stays as it is: two
-- active jobs never share a key.
local now = now_us()
local n = 0
for j = 2, #ARGV do
  local id = ARGV[j]
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'queue', 'priority', 'unique_key')
  local unique = f[4] and f[4] ~= '' and (P .. ':unique:' .. f[4]) or nil
  local taken = false
  if unique then
    local holder = redis.call('GET', unique)
    if holder and holder ~= id then
      local st = redis.call('HGET', P .. ':job:' .. holder, 'status')
      taken = st == 'ready' or st == 'running'
    end
  end
  if (f[1] == 'failed' or f[1] == 'cancelled') and not taken then
    local batch_id = redis.call('HGET', key, 'batch_id')
    local bkey = P .. ':batch:' .. (batch_id or '')
    if batch_id and batch_id ~= '' and redis.call('EXISTS', bkey) == 1 then
      -- pending again (the record kept until then); released callbacks stay so
      redis.call('PERSIST', bkey)
      redis.call('PERSIST', bkey .. ':jobs')
      redis.call('HINCRBY', P .. ':batch:' .. batch_id, f[1], -1)
      redis.call('HINCRBY', P .. ':batch:' .. batch_id, 'pending', 1)
    end
    redis.call('ZREM', P .. ':done:' .. f[2] .. ':' .. f[1], id)
    redis.call('PERSIST', key)
    redis.call('DEL', attempts_key(id))  -- the job starts afresh, its attempts from 0
    redis.call('HSET', key, 'status', 'ready', 'attempts', 0, 'run_at', now, 'started_at', '',
      'finished_at', '', 'worker_id', '', 'result', '', 'cancel', '0', 'lease', '')
    if unique then redis.call('SET', unique, id) end
    make_ready(tonumber(id), f[2], tonumber(f[3]), now, now)
    n = n + 1
  end
end
return n
