"""PGQueuer: ``pgqueuer.run(factory)``, what ``pgq run <factory>`` runs.

PGQueuer is not Django-aware. Its schema is installed in the system's fresh
database with its own CLI (``pgq install``) after Django's ``migrate`` (which
creates only Django's tables and ``bench_row``). Jobs are enqueued with its
synchronous ``SyncQueries.enqueue`` on Django's connection (one statement per
job; its list form for the bulk figure), see ``projects/pgqueuer_bench/tasks.py``.

The worker is ``projects/pgqueuer_bench/run_worker.py``: ``pgqueuer.run()``
on uvloop, as ``pgq run`` does (the command itself fails at start-up with the
typer release installed beside PGQueuer 1.6.0; see that file), with a factory
that calls ``django.setup()`` and yields a ``QueueManager`` on one asyncpg
connection (``--driver psycopg``: a psycopg ``AsyncConnection``), see
``projects/pgqueuer_bench/worker.py``. PGQueuer 1.6 runs only ``async def``
entrypoints: each claimed job becomes an asyncio task, so with no
``--max-concurrent-tasks`` every claimed job runs at once. The "orm" job uses
Django's async ORM (``await BenchRow.objects.acreate()``, i.e. the sync insert
in Django's one ``sync_to_async`` thread); the "thread" variant runs the sync
insert with ``asyncio.to_thread`` (asyncio's default pool, one Django
connection per pool thread). "sleep50" is ``await asyncio.sleep(0.05)``.

Settings tried: ``--batch-size`` (jobs claimed per dequeue query; also the
size at which finished jobs are written back) 10, which is ``pgq run``'s
default, 100 and 1000, with 1 and 2 processes, and 100 on psycopg instead of
asyncpg; --quick tries 100 with 1 and 2 processes. The plots put the batch
size on the x axis. Logging goes through Django's LOGGING at WARNING, as for
the other systems (PGQueuer logs each job at DEBUG anyway).

Progress and span come from PGQueuer's own log table, ``pgqueuer_log``: it
gets a row per job when it is enqueued (``queued``), when a worker claims it
(``picked``, written by the dequeue statement itself, ``created = now()``) and
when its outcome is written back (``successful``; PGQueuer deletes the job
from ``pgqueuer`` then). The span is first ``picked`` → last ``successful``,
the same as the other systems' first start → last finish. As with pgjobs,
which also records successes in batches, a finish is timestamped when the
worker writes it back (PGQueuer: every ``--batch-size`` jobs, or 0.1 s), not
by the job itself. ``pgqueuer_statistics`` only holds per-second counts
(aggregated from the log every 30 s), too coarse for a span of a second or
two, so it is not used.
"""

from harness import PG, PROJECTS_DIR, PYTHON, System, WorkerConfig, venv_import_check, venv_version

# (batch size, extra options); 10 is the default of ``pgq run``.
THROUGHPUT = [(10, ()), (100, ()), (1000, ()), (100, ("--driver", "psycopg"))]
# (processes, batch size, extra options)
THROUGHPUT_QUICK = [(1, 100, ()), (2, 100, ())]
PROCESSES = (1, 2)


def _config(procs, batch, extra=(), kind="noop", variant="", label=""):
    what = f"batch size {batch}" + (" (default)" if batch == 10 else "")
    if extra:
        what += ", " + " ".join(extra).replace("--", "")
    return WorkerConfig(
        procs,
        ("--batch-size", str(batch), *extra),
        label or what,
        variant=variant,
        kind=kind,
        x=batch,
    )


class PgQueuer(System):
    name = "pgqueuer"
    project = "pgqueuer_bench"
    tables = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics", "bench_row")
    done_sql = """
        SELECT count(*) FILTER (WHERE status = 'successful'),
               count(*) FILTER (WHERE status IN ('exception', 'failed', 'canceled', 'deleted'))
        FROM pgqueuer_log
    """
    span_sql = """
        SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                                - min(created) FILTER (WHERE status = 'picked'))
        FROM pgqueuer_log
    """

    def unavailable(self):
        return venv_import_check("pgqueuer, pgqueuer.adapters.cli.cli")

    def versions(self):
        return f"pgqueuer {venv_version('pgqueuer')}"

    def setup_commands(self, db):
        dsn = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{db.name}"
        return [[PYTHON, "-m", "pgqueuer", "--pg-dsn", dsn, "install"]]

    def worker_argv(self, config):
        return [
            PYTHON, str(PROJECTS_DIR / "pgqueuer_bench" / "run_worker.py"),
            *config.args,
        ]  # fmt: skip

    def throughput_configs(self, quick):
        if quick:
            return [_config(procs, batch, extra) for procs, batch, extra in THROUGHPUT_QUICK]
        return [_config(procs, batch, extra) for procs in PROCESSES for batch, extra in THROUGHPUT]

    def latency_configs(self, quick):
        return [_config(1, 10)]

    def kind_configs(self, quick):
        if quick:
            return [_config(1, 10, kind="orm"), _config(1, 10, kind="sleep50")]
        cap = ("--max-concurrent-tasks", "32")
        return [
            _config(1, 10, kind="orm"),
            _config(1, 10, kind="orm", variant="thread"),
            _config(1, 100, kind="orm"),
            _config(1, 100, kind="orm", variant="thread"),
            _config(2, 10, kind="orm"),
            _config(1, 10, kind="sleep50"),
            _config(1, 10, cap, kind="sleep50"),
            _config(1, 100, kind="sleep50"),
            _config(2, 10, kind="sleep50"),
        ]
