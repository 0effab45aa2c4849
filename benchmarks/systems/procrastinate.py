"""Procrastinate through its Django integration: ``manage.py procrastinate worker``.

The worker is one asyncio loop per process that fetches one job per query and
runs up to ``--concurrency`` jobs at once (sync jobs in threads). It is woken
by LISTEN/NOTIFY (an insert trigger). Tried: concurrency 1, 4, 8 with a sync
no-op, and concurrency 4 with an ``async def`` no-op (no thread hop), with 1
and 2 processes; the best per process count is reported. The management
command leaves logging to Django's LOGGING (WARNING in bench_common); the plain
``procrastinate`` CLI would default to INFO and log every job's start and end.
Finished jobs are kept (``--delete-jobs never``, the default), as in the
other systems.
"""

from harness import PYTHON, System, WorkerConfig, manage_py, venv_version


class Procrastinate(System):
    name = "procrastinate"
    project = "procrastinate_bench"
    tables = ("procrastinate_jobs", "procrastinate_events", "procrastinate_workers")
    done_sql = """
        SELECT count(*) FILTER (WHERE status = 'succeeded'),
               count(*) FILTER (WHERE status IN ('failed', 'aborted'))
        FROM procrastinate_jobs
    """
    # The jobs table has no timestamps; the events table (filled by triggers
    # with now()) records when each job started and finished.
    span_sql = """
        SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')
                                - min(at) FILTER (WHERE type = 'started'))
        FROM procrastinate_events
    """

    def versions(self):
        return f"procrastinate {venv_version('procrastinate')}"

    def worker_argv(self, config):
        return [PYTHON, manage_py(), "procrastinate", "worker", *config.args]

    def throughput_configs(self, quick):
        settings = [(4, "sync")] if quick else [(1, "sync"), (4, "sync"), (8, "sync"), (4, "async")]
        return [
            WorkerConfig(procs, ("--concurrency", str(c)), f"concurrency {c}", variant)
            for procs in (1, 2)
            for c, variant in settings
        ]

    def latency_configs(self, quick):
        return [WorkerConfig(1, ("--concurrency", "4"), "concurrency 4")]
