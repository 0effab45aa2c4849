"""django-tasks-db: django-tasks' DatabaseBackend, ``manage.py db_worker``.

db_worker runs one task at a time per process and has no wake-up signal: it
polls every ``--interval`` seconds when the queue is empty. Its best setting
here: persistent connections (CONN_MAX_AGE=None in bench_common), no random
startup delay, no autoreload, a small poll interval, logging at WARNING
(``-v 0``; at the default verbosity it logs every task). Latency is also
measured at the default 1 s interval, which is what users get out of the box.
"""

from harness import PYTHON, System, WorkerConfig, manage_py, venv_version

FAST_POLL = "0.1"


class DjangoTasksDB(System):
    name = "django-tasks-db"
    project = "dtdb_bench"
    tables = ("django_tasks_database_dbtaskresult",)
    done_sql = """
        SELECT count(*) FILTER (WHERE status = 'SUCCESSFUL'),
               count(*) FILTER (WHERE status = 'FAILED')
        FROM django_tasks_database_dbtaskresult
    """
    span_sql = """
        SELECT extract(epoch FROM max(finished_at) - min(started_at))
        FROM django_tasks_database_dbtaskresult
    """

    def versions(self):
        return f"django-tasks-db {venv_version('django-tasks-db')}, django-tasks {venv_version('django-tasks')}"

    def worker_argv(self, config):
        return [
            PYTHON, manage_py(), "db_worker",
            "--no-startup-delay", "--no-reload", "-v", "0",
            *config.args,
        ]  # fmt: skip

    def throughput_configs(self, quick):
        return [
            WorkerConfig(procs, ("--interval", FAST_POLL), f"interval {FAST_POLL}s")
            for procs in (1, 2)
        ]

    def latency_configs(self, quick):
        configs = [WorkerConfig(1, ("--interval", FAST_POLL), f"interval {FAST_POLL}s")]
        if not quick:
            configs.append(WorkerConfig(1, ("--interval", "1"), "interval 1s (default)"))
        return configs
