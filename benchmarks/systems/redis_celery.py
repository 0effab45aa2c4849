"""Celery with a Redis broker (and Redis result backend), solo pool: one job
at a time in the worker process, no pool overhead, which is Celery's fastest
setting for jobs this short. Tried with the default prefetch multiplier (4)
and a large one (64); gossip, mingle and heartbeats are off. Celery has no
bulk enqueue; ``delay()`` publishes at once, inside a transaction or not.

Progress is the number of stored results. Celery records when a task
finished (``date_done``), not when it started, so the span runs from the
first finish to the last: shorter than the others' by one no-op job's run
time, in Celery's favour.
"""

from harness import PYTHON, System, WorkerConfig, venv_version

from systems.redis_common import celery_results_span, client, redis_version

BROKER_DB, RESULTS_DB = 12, 13  # projects/celery_bench/settings.py


class Celery(System):
    quick_share = 0.5  # a slow queue: fewer jobs in --quick runs
    name = "celery"
    project = "celery_bench"
    own_processes = ("redis-server",)

    def versions(self):
        return f"celery {venv_version('celery')} on Redis {redis_version()}"

    def worker_argv(self, config):
        return [
            PYTHON, "-m", "celery", "-A", "celery_bench", "worker",
            "--pool", "solo", "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            *config.args,
        ]  # fmt: skip

    def throughput_configs(self, quick):
        multipliers = ["4"] if quick else ["4", "64"]
        return [
            WorkerConfig(procs, ("--prefetch-multiplier", m), f"solo pool, prefetch ×{m}")
            for procs in (1, 2)
            for m in multipliers
        ]

    def latency_configs(self, quick):
        return [WorkerConfig(1, ("--prefetch-multiplier", "4"), "solo pool, prefetch ×4")]

    def progress(self, conn, database):
        return client(RESULTS_DB).dbsize(), 0

    def span(self, conn, database):
        return celery_results_span(RESULTS_DB, "Celery tasks")

    def empty(self, db):
        client(BROKER_DB).flushdb()
        client(RESULTS_DB).flushdb()

    def settle(self, db):
        pass
