-- push_jobs(i, now) writes the jobs whose fields start at ARGV[i], 13 per job:
-- id ('' = allocate), func, args, kwargs, queue, priority, run_at µs ('' = now),
-- max_attempts, timeout, unique_key, signature, unique ('1': keep out a second
-- active job with the key), traceparent ('' = none). Returns per job [id, existing ("1": the holder of
-- its unique key, not written), run_at, created_at], numbers as strings
-- (cjson would round µs timestamps).
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
    i = i + 13
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
      if ARGV[i + 12] ~= '' then
        redis.call('HSET', P .. ':job:' .. id, 'traceparent', ARGV[i + 12])
      end
      redis.call('SADD', P .. ':queues', queue)
      make_ready(id, queue, priority, run_at, now)
      if uk ~= '' then redis.call('SET', P .. ':unique:' .. uk, id) end
      out[#out + 1] = {int(id), '0', int(run_at), int(now)}
    end
    i = i + 13
  end
  return out
end
