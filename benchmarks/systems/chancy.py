"""chancy: a ``chancy.Worker`` serving one queue, declared with its best settings.

chancy's schema is installed with its own CLI (``chancy misc migrate``) after
Django's ``migrate``. Jobs are pushed with ``sync_push_many_ex`` on a cursor of
Django's own connection, so they join the caller's transaction, see
``projects/chancy_bench/tasks.py``.

chancy keeps a queue's settings in the database; the worker
(``projects/chancy_bench/run_worker.py``) declares the queue and then runs what
``chancy worker start`` runs. The queue's executor is the AsyncExecutor with an
``async def`` no-op (the default ProcessExecutor runs each job in a process
pool, for CPU-bound jobs); ``eager_polling`` on, which its docs give for queues
where "jobs are expected to be continuously available", as in a backlog: a
worker polls again as a job finishes instead of waiting for the polling interval
or a NOTIFY; polling interval 1 s (default 5). Concurrency, the most jobs one
worker runs at once, is also the most one poll claims (one ``UPDATE ... FOR
UPDATE SKIP LOCKED`` statement). Tried: 10, 100 and 1000, with 1 and 2
processes (``--quick``: 1000, the best in trials). chancy's logger at WARNING, as every system here.

Progress and span come from ``chancy_jobs``: ``started_at`` (set by the claim,
in the database) → ``completed_at``. chancy itself sets ``completed_at`` from the
worker's clock when the job returns and writes outcomes back later, in batches,
once a second (``Worker.send_outgoing_interval``); every other queue here
timestamps a finish when its outcome reaches the database. So that the span is
the same measure, ``projects/chancy_bench/instrument.py`` (run after the
migration) adds a trigger to the benchmark database that sets ``completed_at``
to the write-back transaction's ``now()``. Without it, a run of 10,000 jobs at
concurrency 1,000 measured 13,000–27,000 jobs/s by the span against 3,500–4,900
from spawn: the span had left most of the work out.
"""

from harness import PROJECTS_DIR, PYTHON, System, WorkerConfig, venv_import_check, venv_version

CONCURRENCY = (10, 100, 1000)
CONCURRENCY_QUICK = (1000,)


def _config(procs, concurrency):
    return WorkerConfig(
        procs,
        ("--concurrency", str(concurrency), "--executor", "async"),
        f"concurrency {concurrency}, async executor, eager polling",
        variant="async",
        x=concurrency,
    )


class Chancy(System):
    name = "chancy"
    project = "chancy_bench"
    tables = ("chancy_jobs", "chancy_workers")
    done_sql = """
        SELECT count(*) FILTER (WHERE state = 'succeeded'),
               count(*) FILTER (WHERE state = 'failed')
        FROM chancy_jobs
    """
    span_sql = "SELECT extract(epoch FROM max(completed_at) - min(started_at)) FROM chancy_jobs"

    def unavailable(self):
        return venv_import_check("chancy")

    def versions(self):
        return f"chancy {venv_version('chancy')}"

    def setup_commands(self, db):
        return [
            [PYTHON, "-m", "chancy.cli.cli", "--app", "chancy_bench.app.app", "misc", "migrate"],
            [PYTHON, str(PROJECTS_DIR / "chancy_bench" / "instrument.py")],
        ]

    def worker_argv(self, config):
        return [PYTHON, str(PROJECTS_DIR / "chancy_bench" / "run_worker.py"), *config.args]

    def throughput_configs(self, quick):
        levels = CONCURRENCY_QUICK if quick else CONCURRENCY
        return [_config(p, c) for p in (1, 2) for c in levels]

    def latency_configs(self, quick):
        return [_config(1, 10)]
