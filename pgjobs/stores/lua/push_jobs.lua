-- push_jobs(i, now) writes the jobs whose fields start at ARGV[i], 14 per job:
-- id ('' = allocate), func, args, kwargs, queue, priority, run_at µs ('' = now),
-- max_attempts, timeout, unique_key, signature, unique ('1': keep out a second
-- active job with the key), after (the id of the job it runs after, or ''),
-- traceparent (of the span that enqueued it, or '').
-- Returns per job [id, existing ("1": the holder of its unique key, not
-- written), run_at, created_at, status], numbers as strings (cjson would round
-- µs timestamps). A job after one that has not finished is stored 'waiting'
-- (and listed in P:after:<that id>); after one that succeeded, ready with its
-- result; after one that failed or was cancelled, cancelled.
-- Refuse every job before writing any (a script that fails half way keeps
-- what it wrote): the checks the database stores' constraints make.
local function check_jobs(i)
  local given = {}  -- ids of this push: a job may run after one written before it here
  for j = i, #ARGV, 14 do given[ARGV[j]] = true end
  while i <= #ARGV do
    local after = ARGV[i + 12]
    if after ~= '' and not given[after]
        and redis.call('EXISTS', P .. ':job:' .. after) == 0 then
      return redis.error_reply('pgjobs: no job ' .. after .. ' to run after')
    end
    local priority = tonumber(ARGV[i + 5])
    if not priority or priority ~= math.floor(priority) or priority < -100 or priority > 100 then
      return redis.error_reply('pgjobs: priority out of range: ' .. ARGV[i + 5])
    end
    local max_attempts = tonumber(ARGV[i + 7])
    if not max_attempts or max_attempts < 1 then
      return redis.error_reply('pgjobs: max_attempts must be >= 1: ' .. ARGV[i + 7])
    end
    i = i + 14
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
      out[#out + 1] = {holder, '1', '0', '0', ''}
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
      if ARGV[i + 13] ~= '' then
        redis.call('HSET', P .. ':job:' .. id, 'traceparent', ARGV[i + 13])
      end
      redis.call('SADD', P .. ':queues', queue)
      if uk ~= '' then redis.call('SET', P .. ':unique:' .. uk, id) end
      local status = 'ready'
      local after = ARGV[i + 12]
      local previous = {}
      if after ~= '' then
        redis.call('HSET', P .. ':job:' .. id, 'after', after)
        previous = redis.call('HMGET', P .. ':job:' .. after, 'status', 'result')
        if previous[1] == 'succeeded' then
          redis.call('HSET', P .. ':job:' .. id, 'previous_result', previous[2] or '')
        elseif previous[1] == 'failed' or previous[1] == 'cancelled' then
          status = 'cancelled'
        else
          status = 'waiting'
        end
      end
      if status == 'ready' then
        make_ready(id, queue, priority, run_at, now)
      elseif status == 'waiting' then
        redis.call('HSET', P .. ':job:' .. id, 'status', 'waiting')
        redis.call('SADD', P .. ':after:' .. after, id)
      else
        redis.call('HSET', P .. ':job:' .. id, 'error', dependency_error(
          'cancelled: job ' .. after .. ', which this job runs after, ' .. previous[1]))
        release_unique(uk, id)
        finalize(id, queue, 'cancelled', now, 0)
      end
      out[#out + 1] = {int(id), '0', int(run_at), int(now), status}
    end
    i = i + 14
  end
  return out
end
