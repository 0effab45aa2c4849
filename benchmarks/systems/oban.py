"""Oban for Python (``oban``): ``oban start --queues default:N``.

Oban is not Django-aware. Its schema is installed with its own CLI (``oban
install``) in the system's fresh database after Django's ``migrate``. Jobs are
enqueued with its async ``enqueue``/``enqueue_many`` on a client instance (no
queues) with a one-connection pool, see ``projects/oban_bench/tasks.py``: its
API is async only, so an enqueue does not join Django's transaction.

The worker is Oban's own command, ``oban start`` (``projects/oban_bench/
run_worker.py`` gives it the run's database as ``OBAN_DSN``), with
``--log-level WARNING`` as every system here runs (at its default, INFO, the
telemetry logger writes a line per job). The no-op is an ``async def
process`` worker, run on the event loop (a sync one would go to a thread).

Oban's queue limit (``--queues default:N``) is at once its concurrency and the
size of its claim: each fetch asks for the free slots, ``N - running``, in one
``UPDATE ... FOR UPDATE SKIP LOCKED`` statement, and finished jobs are
acknowledged in batches by the next loop turn. Its docs start queues at 10;
tried: 10, 100 and 1000, with 1 and 2 processes (``--quick``: 1000, the best in trials). The plots
put the limit on the x axis.

Progress and span come from ``oban_jobs``: ``attempted_at`` (set by the fetch
statement) and ``completed_at`` (set by the acknowledgement, in the database,
when the outcome is written back), first attempt → last completion.
"""

from harness import PG, PROJECTS_DIR, PYTHON, System, WorkerConfig, venv_import_check, venv_version

LIMITS = (10, 100, 1000)
LIMITS_QUICK = (1000,)


def _config(procs, limit):
    return WorkerConfig(
        procs, ("--queues", f"default:{limit}"), f"queue limit {limit}", variant="async", x=limit
    )


class Oban(System):
    name = "oban"
    project = "oban_bench"
    tables = ("oban_jobs", "oban_producers", "oban_leaders")
    done_sql = """
        SELECT count(*) FILTER (WHERE state = 'completed'),
               count(*) FILTER (WHERE state IN ('discarded', 'cancelled', 'retryable'))
        FROM oban_jobs
    """
    span_sql = "SELECT extract(epoch FROM max(completed_at) - min(attempted_at)) FROM oban_jobs"

    def unavailable(self):
        return venv_import_check("oban")

    def versions(self):
        return f"oban {venv_version('oban')}"

    def setup_commands(self, db):
        dsn = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{db.name}"
        return [[PYTHON, "-m", "oban", "install", "--dsn", dsn]]

    def worker_argv(self, config):
        return [PYTHON, str(PROJECTS_DIR / "oban_bench" / "run_worker.py"), *config.args]

    def throughput_configs(self, quick):
        return [_config(p, limit) for p in (1, 2) for limit in (LIMITS_QUICK if quick else LIMITS)]

    def latency_configs(self, quick):
        return [_config(1, 10)]
