"""RQ through django-rq, the way Django sites use it: ``manage.py rqworker``
with ``SimpleWorker``, which runs jobs in the worker process. RQ's default
``Worker`` forks a child per job (about 20 jobs/s here), so it is not tried.
One job at a time per process; an idle worker blocks in BLPOP, so it is woken
at once. ``enqueue_many`` is RQ's bulk API (one pipeline).

Progress is the finished and failed job registries; the span comes from each
job's ``started_at``/``ended_at`` (microseconds, written by the worker).
"""

import datetime

from harness import PYTHON, BenchError, System, WorkerConfig, manage_py, venv_version

from systems.redis_common import client, in_batches, redis_version

DB = 11  # projects/rq_bench/settings.py


def _parse(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class RQ(System):
    quick_share = 0.25  # a slow queue: fewer jobs in --quick runs
    name = "rq"
    project = "rq_bench"
    own_processes = ("redis-server",)

    def versions(self):
        return (
            f"rq {venv_version('rq')}, django-rq {venv_version('django-rq')} "
            f"on Redis {redis_version()}"
        )

    def worker_argv(self, config):
        return [
            PYTHON, manage_py(), "rqworker", "-v", "0",
            "--worker-class", "rq.worker.SimpleWorker", "default",
        ]  # fmt: skip

    def throughput_configs(self, quick):
        return [WorkerConfig(procs, (), "SimpleWorker") for procs in (1, 2)]

    def latency_configs(self, quick):
        return [WorkerConfig(1, (), "SimpleWorker")]

    def progress(self, conn, database):
        pipe = client(DB).pipeline()
        pipe.zcard("rq:finished:default")
        pipe.zcard("rq:failed:default")
        return tuple(pipe.execute())

    def span(self, conn, database):
        r = client(DB)
        ids = r.zrange("rq:finished:default", 0, -1)
        first, last = None, None
        for batch in in_batches(ids):
            pipe = r.pipeline()
            for job_id in batch:
                pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at")
            for started, ended in pipe.execute():
                started, ended = _parse(started), _parse(ended)
                first = started if first is None else min(first, started)
                last = ended if last is None else max(last, ended)
        if first is None:
            raise BenchError("no finished jobs to time")
        return (last - first).total_seconds()

    def empty(self, db):
        client(DB).flushdb()

    def settle(self, db):
        pass
