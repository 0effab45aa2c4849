"""pgjobs on Celery: ``CeleryBackend`` publishing to RabbitMQ, run by ``celery worker``
(solo pool, as the ``celery`` system), beside pgjobs' own workers.

Each job is pgjobs' generic Celery task ``pgjobs.run_job``: the signed payload is
verified and the function imported in the Celery worker, as pgjobs' own workers do.
Late acknowledgement (at-least-once), prefetch ×4 (and ×64 in full runs).

Progress is the number of results in Redis database 9; the span runs from the
first finish to the last (``date_done``), as for the ``celery`` system.
"""

import os

from harness import PYTHON, System, WorkerConfig, venv_import_check, venv_version

from systems.redis_common import celery_results_span, client

RESULTS_DB = 9  # projects/pgjobs_celery_bench/settings.py
QUEUE = "pgjobs-bench"
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


class PgJobsCelery(System):
    quick_share = 0.5  # a slower queue: fewer jobs in --quick runs
    name = "pgjobs-celery"
    project = "pgjobs_celery_bench"
    databases = ("postgres", "mysql", "sqlite")  # Django's own tables only
    own_processes = ("beam.smp", "redis-server")

    def unavailable(self):
        return venv_import_check("celery, kombu, pgjobs.backends.celery")

    def versions(self):
        return f"pgjobs {venv_version('pgjobs')} on celery {venv_version('celery')}, RabbitMQ"

    def worker_argv(self, config):
        return [
            PYTHON, "-m", "celery", "-A", "pgjobs_celery_bench", "worker",
            "--pool", "solo", "--loglevel", "WARNING", "-Q", QUEUE,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            *config.args,
        ]  # fmt: skip

    def throughput_configs(self, quick):
        # Not ×1: with the solo pool, late acknowledgement and RabbitMQ, Celery 5.7
        # itself (a plain Celery task, no pgjobs) stalls there after a few thousand
        # messages, two unacknowledged and the worker idle, then trickles on at a
        # few jobs/s: a 10,000-job run waits out its timeout (2026-12-05).
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
        return celery_results_span(RESULTS_DB, "pgjobs jobs on Celery")

    def empty(self, db):
        purge_queue()
        client(RESULTS_DB).flushdb()

    def settle(self, db):
        pass


def purge_queue():
    """Empty the RabbitMQ queue (a queue not declared yet holds nothing)."""
    from kombu import Connection

    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        try:
            channel.queue_purge(QUEUE)
        except Exception:
            pass
        finally:
            try:
                channel.close()
            except Exception:
                pass
