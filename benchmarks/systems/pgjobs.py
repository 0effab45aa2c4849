"""pgjobs: DatabaseBackend, ``manage.py pgjobs_worker --concurrency N``.

Concurrency 1, 4 and 8, and 4 with ``--prefetch 4`` (claim ahead of free
slots), are tried with 1 and 2 processes; the best per process count is
reported, as for the peers. ``-v 0``: at the default verbosity the worker logs
every job's start and end, which the peers are not asked to do either.
"""

from harness import PYTHON, System, WorkerConfig, manage_py, venv_import_check, venv_version


class PgJobs(System):
    name = "pgjobs"
    project = "pgjobs_bench"
    tables = ("pgjobs_job",)
    databases = ("postgres", "mysql", "sqlite")
    done_sql = """
        SELECT COALESCE(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN status IN ('failed', 'cancelled') THEN 1 ELSE 0 END), 0)
        FROM pgjobs_job
    """
    span_sql = {
        "postgres": "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM pgjobs_job",
        "mysql": "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(started_at), MAX(finished_at)) / 1e6 "
        "FROM pgjobs_job",
        "sqlite": "SELECT (julianday(MAX(finished_at)) - julianday(MIN(started_at))) * 86400 "
        "FROM pgjobs_job",
    }

    def unavailable(self):
        # The package is written alongside the benchmarks; until it imports
        # with its worker command the peers are measured alone.
        return venv_import_check("pgjobs.backends, pgjobs.management.commands.pgjobs_worker")

    def versions(self):
        return f"pgjobs {venv_version('pgjobs')}"

    def worker_argv(self, config):
        return [PYTHON, manage_py(), "pgjobs_worker", "-v", "0", *config.args]

    def throughput_configs(self, quick):
        settings = [("4",)] if quick else [("1",), ("4",), ("8",), ("4", "4")]
        configs = []
        for procs in (1, 2):
            for concurrency, *prefetch in settings:
                args = ("--concurrency", concurrency)
                label = f"concurrency {concurrency}"
                if prefetch:
                    args += ("--prefetch", prefetch[0])
                    label += f", prefetch {prefetch[0]}"
                configs.append(WorkerConfig(procs, args, label))
        return configs

    def latency_configs(self, quick):
        return [WorkerConfig(1, ("--concurrency", "4"), "concurrency 4")]
