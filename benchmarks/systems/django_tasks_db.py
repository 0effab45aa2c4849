"""django-tasks-db: django-tasks' DatabaseBackend, ``manage.py db_worker``.

db_worker runs one task at a time per process and has no wake-up signal: it
polls every ``--interval`` seconds when the queue is empty. Its best setting
here: persistent connections (CONN_MAX_AGE=None in bench_common), no random
startup delay, no autoreload, a small poll interval, logging at WARNING
(``-v 0``; at the default verbosity it logs every task). Latency is also
measured at the default 1 s interval, which is what users get out of the box.
Its only concurrency is more processes, so the 50 ms sleep is also run with 4.
"""

from harness import PYTHON, System, WorkerConfig, manage_py, vendor_span_sql, venv_version

FAST_POLL = "0.1"


class DjangoTasksDB(System):
    quick_share = 0.1  # a slow queue: fewer jobs in --quick runs
    name = "django-tasks-db"
    project = "dtdb_bench"
    tables = ("django_tasks_database_dbtaskresult", "bench_row")
    databases = ("postgres", "mysql", "sqlite")
    # Plain SQL every vendor runs: MariaDB has no FILTER clause.
    done_sql = """
        SELECT COALESCE(SUM(CASE WHEN status = 'SUCCESSFUL' THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END), 0)
        FROM django_tasks_database_dbtaskresult
    """
    span_sql = vendor_span_sql("django_tasks_database_dbtaskresult")

    def versions(self):
        return f"django-tasks-db {venv_version('django-tasks-db')}, django-tasks {venv_version('django-tasks')}"

    def worker_argv(self, config):
        return [
            PYTHON, manage_py(), "db_worker",
            "--no-startup-delay", "--no-reload", "-v", "0",
            *config.args,
        ]  # fmt: skip

    def throughput_configs(self, quick):
        return [_config(procs) for procs in (1, 2)]

    def kind_configs(self, quick):
        if quick:
            return [_config(1, "orm"), _config(4, "sleep50")]
        return [_config(1, "orm"), _config(2, "orm"), _config(2, "sleep50"), _config(4, "sleep50")]

    def latency_configs(self, quick):
        configs = [_config(1)]
        if not quick:
            configs.append(WorkerConfig(1, ("--interval", "1"), "interval 1s (default)"))
        return configs


def _config(procs, kind="noop"):
    return WorkerConfig(procs, ("--interval", FAST_POLL), f"interval {FAST_POLL}s", kind=kind)
