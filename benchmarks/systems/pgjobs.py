"""pgjobs: DatabaseBackend, ``manage.py pgjobs_worker --concurrency N [--prefetch M]``.

The settings tried are the lists below, each with 1 and 2 processes; the best
per process count is reported, as for the peers. Each setting is a dict of
worker options (``{"concurrency": 4, "prefetch": 200}`` becomes
``--concurrency 4 --prefetch 200``); an option left out keeps the worker's
default (prefetch: 1,000). To try a new worker option, such as ``--batch``, add
it to the dicts. ``-v 0``: no summary line every 10 seconds either (per-job
lines are ``-v 2``'s), as the peers run with their logging at WARNING;
``ab_worker.py`` measures what the default verbosity costs.
"""

from harness import (
    PYTHON,
    System,
    WorkerConfig,
    manage_py,
    source_commit,
    vendor_span_sql,
    venv_import_check,
    venv_version,
)

# No-op throughput: every combination, with 1 and 2 processes: each concurrency
# with a prefetch of 200 and with the default (1,000), which the setting's label
# leaves out. For no-op jobs one or two slots per process are best: the job
# costs less than the thread hand-offs more slots add (profile_worker.py shows
# it). `--concurrency 8` alone is what a user types.
THROUGHPUT = [
    {"concurrency": c, **p} for c in (1, 2, 4, 8) for p in ({"prefetch": 200}, {})
]  # fmt: skip
THROUGHPUT_QUICK = [{"concurrency": 1}]
PROCESSES = (1, 2)
PROCESSES_QUICK = (1, 2)

# Latency: one process, each setting idle; the first also under load. On the
# databases without LISTEN/NOTIFY also with a poll as fast as django-tasks-db's.
LATENCY = [{"concurrency": 4}]
POLLING_FAST = 0.1

# The other job kinds: "orm" (one ORM insert) and "sleep50" (a 50 ms sleep,
# where concurrency is what counts), with (processes, options, variant).
KINDS = {
    "orm": [
        (1, {"concurrency": 1}, ""),
        (1, {"concurrency": 4}, ""),
        (2, {"concurrency": 4}, ""),
        (2, {"concurrency": 8}, ""),
    ],
    "sleep50": [
        (1, {"concurrency": 8}, ""),
        (1, {"concurrency": 32}, ""),
        (1, {"concurrency": 128}, ""),
        (1, {"concurrency": 128}, "async"),
        (1, {"concurrency": 1000}, "async"),
        (2, {"concurrency": 64}, ""),
        (2, {"concurrency": 256}, "async"),
        # A slot per job in flight: asyncio-native peers run every claimed job at once.
        (2, {"concurrency": 1000}, "async"),
    ],
}
KINDS_QUICK = {
    "orm": [(1, {"concurrency": 4}, "")],
    "sleep50": [(1, {"concurrency": 64}, "")],
}


def config(processes, options, kind="noop", variant=""):
    """A WorkerConfig from a dict of pgjobs_worker options."""
    args, label = (), []
    for name, value in options.items():
        args += (f"--{name.replace('_', '-')}", str(value))
        label.append(f"{name} {value}")
    return WorkerConfig(
        processes,
        args,
        ", ".join(label) or "defaults",
        variant=variant,
        kind=kind,
        x=options.get("concurrency", 1),
    )


class PgJobs(System):
    name = "pgjobs"
    project = "pgjobs_bench"
    tables = ("pgjobs_job", "bench_row")
    databases = ("postgres", "mysql", "sqlite")
    done_sql = """
        SELECT COALESCE(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN status IN ('failed', 'cancelled') THEN 1 ELSE 0 END), 0)
        FROM pgjobs_job
    """
    span_sql = vendor_span_sql("pgjobs_job")

    def unavailable(self):
        # The package is written alongside the benchmarks; until it imports
        # with its worker command the peers are measured alone.
        return venv_import_check(
            "pgjobs.backends, pgjobs.management.commands.pgjobs_worker", self.checkout()
        )

    def versions(self):
        return f"pgjobs {venv_version('pgjobs')} at {source_commit('pgjobs', self.checkout())}"

    def worker_argv(self, config):
        return [PYTHON, manage_py(), "pgjobs_worker", "-v", "0", *config.args]

    def throughput_configs(self, quick):
        settings = THROUGHPUT_QUICK if quick else THROUGHPUT
        return [
            config(procs, options)
            for procs in (PROCESSES_QUICK if quick else PROCESSES)
            for options in settings
        ]

    def latency_configs(self, quick):
        return [config(1, options) for options in LATENCY]

    def latency_configs_for(self, database, quick):
        configs = self.latency_configs(quick)
        if database != "postgres":
            # No LISTEN/NOTIFY there: workers poll, every second by default.
            # django-tasks-db is measured polling every 0.1 s too.
            configs.append(config(1, {**LATENCY[0], "poll_interval": POLLING_FAST}))
        return configs

    def kind_configs(self, quick):
        kinds = KINDS_QUICK if quick else KINDS
        return [
            config(procs, options, kind, variant)
            for kind, settings in kinds.items()
            for procs, options, variant in settings
        ]
