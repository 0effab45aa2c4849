"""pgjobs on Redis: RedisBackend, the same ``manage.py pgjobs_worker`` as on
PostgreSQL, with concurrency 1, 4 and 8 at the worker's default prefetch
(``THROUGHPUT`` below); only the no-op kind is measured on Redis.

Progress and the span come from the store's own records: the ``done`` sorted
set of the queue and each job hash's ``started_at``/``finished_at``
(microseconds, from Redis's clock).
"""

from harness import BenchError, venv_import_check, venv_version

from systems.pgjobs import PgJobs, config
from systems.redis_common import client, in_batches, redis_version

DB = 10
PREFIX = "pgjobs-bench"  # projects/pgjobs_redis_bench/settings.py

THROUGHPUT = [{"concurrency": c} for c in (1, 4, 8)]
THROUGHPUT_QUICK = [{"concurrency": 4}]


class PgJobsRedis(PgJobs):
    name = "pgjobs-redis"
    project = "pgjobs_redis_bench"
    tables = ()
    # The Django database only holds Django's own tables here.
    databases = ("postgres", "mysql", "sqlite")
    own_processes = ("redis-server",)

    def unavailable(self):
        return venv_import_check("redis, pgjobs.stores.redis, pgjobs.backends.redis")

    def versions(self):
        return f"pgjobs {venv_version('pgjobs')} on Redis {redis_version()}"

    def throughput_configs(self, quick):
        settings = THROUGHPUT_QUICK if quick else THROUGHPUT
        return [config(procs, options) for procs in (1, 2) for options in settings]

    def kind_configs(self, quick):
        return []

    def progress(self, conn, database):
        pipe = client(DB).pipeline()
        for status in ("succeeded", "failed", "cancelled"):
            pipe.zcard(f"{PREFIX}:done:default:{status}")
        ok, failed, cancelled = pipe.execute()
        return ok, failed + cancelled

    def span(self, conn, database):
        r = client(DB)
        ids = r.zrange(f"{PREFIX}:done:default:succeeded", 0, -1)
        first, last = None, None
        for batch in in_batches(ids):
            pipe = r.pipeline()
            for job_id in batch:
                pipe.hmget(f"{PREFIX}:job:{job_id}", "started_at", "finished_at")
            for started, finished in pipe.execute():
                first = int(started) if first is None else min(first, int(started))
                last = int(finished) if last is None else max(last, int(finished))
        if first is None:
            raise BenchError("no finished jobs to time")
        return (last - first) / 1e6

    def empty(self, db):
        r = client(DB)
        keys = list(r.scan_iter(match=f"{PREFIX}:*", count=1000))
        for batch in in_batches(keys):
            r.unlink(*batch)

    def settle(self, db):
        pass
