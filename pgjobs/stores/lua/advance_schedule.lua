-- ARGV: prefix, schedule name, last_tick µs as read, new last_tick µs, then the
-- jobs (push_jobs). Compare-and-set: nothing happens (nil) unless last_tick is
-- unchanged and the new one is not later than Redis's clock.
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
