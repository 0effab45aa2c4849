-- ARGV: prefix, worker id, hostname, pid, queues (JSON), concurrency.
local now = now_us()
redis.call('HSET', P .. ':worker:' .. ARGV[2], 'hostname', ARGV[3], 'pid', ARGV[4],
  'queues', ARGV[5], 'concurrency', ARGV[6], 'started_at', now, 'heartbeat_at', now)
redis.call('ZADD', P .. ':workers', now, ARGV[2])
return 1
