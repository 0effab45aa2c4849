-- ARGV: prefix, schedule name, last_tick µs: create the record once, settled
-- through last_tick or Redis's own time if that is earlier. 1 if created.
local key = P .. ':schedule:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'last_tick', int(math.min(tonumber(ARGV[3]), now_us())), 'last_run', '')
return 1
