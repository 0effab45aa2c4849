"""Procrastinate through its Django integration: ``manage.py procrastinate worker``.

The worker is one asyncio loop per process that fetches one job per query and
runs up to ``--concurrency`` jobs at once (sync jobs in threads). It is woken
by LISTEN/NOTIFY (an insert trigger). Tried: concurrency 1, 4, 8 with a sync
no-op, and concurrency 4 with an ``async def`` no-op (no thread hop), with 1
and 2 processes; the best per process count is reported. The job kinds: the
ORM insert is a sync task (concurrency 1 and 4); the 50 ms sleep is tried as
a sync task (which runs in asyncio's default thread pool, at most
min(32, cores + 4) = 6 threads here, whatever the concurrency) and as an
``async def`` task with ``asyncio.sleep`` (concurrency 8 and 32). The management
command leaves logging to Django's LOGGING (WARNING in bench_common); the plain
``procrastinate`` CLI would default to INFO and log every job's start and end.
Finished jobs are kept (``--delete-jobs never``, the default), as in the
other systems.
"""

from harness import PYTHON, System, WorkerConfig, manage_py, venv_version


class Procrastinate(System):
    quick_share = 0.25  # a slow queue: fewer jobs in --quick runs
    name = "procrastinate"
    project = "procrastinate_bench"
    tables = ("procrastinate_jobs", "procrastinate_events", "procrastinate_workers", "bench_row")
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
        return [_config(procs, c, variant) for procs in (1, 2) for c, variant in settings]

    def latency_configs(self, quick):
        return [_config(1, 4)]

    def kind_configs(self, quick):
        if quick:
            return [_config(1, 4, kind="orm"), _config(1, 32, "async", "sleep50")]
        return [
            _config(1, 1, kind="orm"),
            _config(1, 4, kind="orm"),
            _config(2, 4, kind="orm"),
            _config(1, 8, "sync", "sleep50"),
            _config(1, 8, "async", "sleep50"),
            _config(1, 32, "async", "sleep50"),
            _config(2, 32, "async", "sleep50"),
        ]


def _config(procs, concurrency, variant="sync", kind="noop"):
    return WorkerConfig(
        procs,
        ("--concurrency", str(concurrency)),
        f"concurrency {concurrency}",
        variant,
        kind,
        x=concurrency,
    )
