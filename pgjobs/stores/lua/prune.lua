-- ARGV: prefix, age µs (jobs that finished longer ago go), batch size, dry run
-- ('1'), statuses...
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
        if redis.call('HGET', key, 'status') == ARGV[j] then
          redis.call('DEL', key, attempts_key(id))
        end
        redis.call('ZREM', done, id)
      end
      n = n + #ids
    end
  end
end
return n
