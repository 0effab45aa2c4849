"""16 worker processes through PgBouncer (transaction mode, a pool of 4 server
connections) against 2 worker processes connected directly: no-op throughput,
idle latency and the server connections each holds.

    python benchmarks/pgbouncer.py                      # 20,000 jobs, 3 rounds, turn about
    python benchmarks/pgbouncer.py --jobs 5000 --repeat 1

It creates a database of its own (dropped afterwards) and a private PgBouncer
(``tests/pgbouncer.py``: the Debian package's 1.18, on a free port), and uses the
test suite's settings: the PgBouncer workers run with Django's
``DISABLE_SERVER_SIDE_CURSORS`` and ``LISTEN_DATABASE`` naming a direct alias, as
docs/howto/pgbouncer.md says. Each round runs both set-ups, in
alternating order, on the same database:

- idle latency: with every worker idle, ``--latency-jobs`` jobs enqueued one at
  a time (a pause between them), each timed from its row's ``created_at`` to its
  ``started_at`` (both the server's clock);
- throughput: ``--jobs`` no-op jobs enqueued at once (``enqueue_many``), timed
  from the enqueue's return until none is left unfinished;
With ``--unprepared``, another: the direct workers with Django's
``DISABLE_SERVER_SIDE_CURSORS`` (no prepared statements, as behind PgBouncer 1.18),
which tells what the hop through PgBouncer costs from what planning every
statement costs. With ``--poll``, another: the PgBouncer workers with ``LISTEN_DATABASE``
False (polling, no direct connection at all).

- fairness: the jobs of the throughput run each host (``--hostname``) ran, the
  fewest and the most, as a share of an even split (1.0: even);
- connections: PostgreSQL sessions on the database (``pg_stat_activity``, the
  benchmark's own left out), idle and the most seen during the throughput run;
  and, for PgBouncer, the server connections it holds (``SHOW SERVERS``).

The jobs are enqueued directly (the web side through PgBouncer is
``tests/test_pgbouncer.py``'s): the figures are the workers'. Figures are the
median of the rounds.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per throughput run")
    parser.add_argument("--latency-jobs", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3, help="rounds, each set-up once a round")
    parser.add_argument("--bouncer-workers", type=int, default=16)
    parser.add_argument("--direct-workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=1, help="slots per worker")
    parser.add_argument(
        "--poll",
        action="store_true",
        help="also the PgBouncer workers without LISTEN (LISTEN_DATABASE False: polling)",
    )
    parser.add_argument(
        "--unprepared",
        action="store_true",
        help="also the direct workers as pgjobs runs behind a pooler (DISABLE_SERVER_SIDE_"
        "CURSORS: no prepared statements), to tell the pooler's cost from the planning's",
    )
    return parser.parse_args()


def setup_django(name):
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PGJOBS_TEST_DB="postgres",
        PGJOBS_TEST_DB_NAME=name,
        PGJOBS_TEST_CONN_MAX_AGE="600",
        PYTHONUNBUFFERED="1",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    with connection._nodb_cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    call_command("migrate", verbosity=0)


def drop_database(name):
    from django.db import connection, connections

    connections.close_all()
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sessions():
    """PostgreSQL sessions on this database, this process's own left out."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


class Setup:
    """One way of running the workers: ``count`` processes, through ``bouncer`` or not."""

    def __init__(self, label, count, concurrency, bouncer=None, listen="direct", extra=None):
        self.label, self.count, self.concurrency, self.bouncer = label, count, concurrency, bouncer
        self.listen = listen  # LISTEN_DATABASE through PgBouncer: "direct" or "false" (poll)
        self.extra = extra or {}  # more environment for the workers
        self.processes = []

    def start(self, logs):
        env = {**os.environ, **self.extra}
        if self.bouncer is not None:
            env.update(
                PGJOBS_TEST_PGBOUNCER_PORT=str(self.bouncer.port),
                PGJOBS_TEST_LISTEN_DATABASE=self.listen,
            )
        for n in range(self.count):
            log = open(logs / f"{self.label}-{n}.log", "ab")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "django", "pgjobs_worker", "-v", "0"]
                    + ["--concurrency", str(self.concurrency), "--hostname", f"{self.label}-{n}"],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        from pgjobs.models import WorkerProcess

        deadline = time.monotonic() + 120
        while WorkerProcess.objects.count() < self.count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"{self.label}: workers did not all start (see {logs})")
            time.sleep(0.1)
        time.sleep(1.0)  # listening, ranks known

    def stop(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes = []

    def server_connections(self, database):
        if self.bouncer is None:
            return None
        return len(self.bouncer.server_connections(database))


def idle_latency(count):
    from pgjobs import background
    from pgjobs.models import Job
    from tests.testapp import jobs

    ids = []
    for _ in range(count):
        ids.append(background.enqueue(jobs.noop).id)
        time.sleep(0.25)
    deadline = time.monotonic() + 60
    while Job.objects.filter(id__in=ids, started_at__isnull=True).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("latency jobs did not all start")
        time.sleep(0.05)
    rows = Job.objects.filter(id__in=ids).values_list("created_at", "started_at")
    return sorted((started - created).total_seconds() for created, started in rows)


def throughput(count, setup, database):
    from pgjobs import background, records
    from pgjobs.models import Job
    from tests.testapp import jobs

    most = [sessions()]
    servers = [setup.server_connections(database) or 0]
    done = threading.Event()

    def watch():
        # A connection of its own (Django's are per thread), closed at the end.
        from django.db import connection

        while not done.wait(0.1):
            most[0] = max(most[0], sessions())
            servers[0] = max(servers[0], setup.server_connections(database) or 0)
        connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        background.enqueue_many([(jobs.noop, [], {})] * count)
        started = time.monotonic()
        unfinished = [records.READY, records.RUNNING]
        while Job.objects.filter(status__in=unfinished).exists():
            if time.monotonic() - started > 600:
                raise RuntimeError("throughput jobs did not finish in 10 minutes")
            time.sleep(0.05)
        took = time.monotonic() - started
    finally:
        done.set()
        watcher.join()
    return count / took, most[0], servers[0], host_shares(setup.count)


def host_shares(hosts):
    """The fewest and most jobs one host ran, as a share of the even split."""
    from django.db.models import Count

    from pgjobs.models import Job

    per_worker = Job.objects.values_list("worker_id").annotate(n=Count("id"))
    per_host = {}
    for worker_id, n in per_worker:
        host = (worker_id or "?").split(":", 1)[0]
        per_host[host] = per_host.get(host, 0) + n
    even = sum(per_host.values()) / hosts
    counts = list(per_host.values()) + [0] * (hosts - len(per_host))
    return min(counts) / even, max(counts) / even


def clear_jobs():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE pgjobs_job")


def main():
    options = parse_args()
    import tempfile

    name = f"pgjobs_bouncer_{os.getpid()}"
    logs = Path(tempfile.mkdtemp(prefix="pgjobs-bench-pgbouncer-"))
    setup_django(name)
    from tests.pgbouncer import PgBouncer

    bouncer = PgBouncer(pool_size=options.pool_size).start()
    setups = [
        Setup("pgbouncer", options.bouncer_workers, options.concurrency, bouncer),
        Setup("direct", options.direct_workers, options.concurrency),
    ]
    if options.unprepared:
        setups.append(
            Setup(
                "direct-unprepared",
                options.direct_workers,
                options.concurrency,
                extra={"PGJOBS_TEST_UNPREPARED": "1"},
            )
        )
    if options.poll:
        setups.append(
            Setup("bouncer-poll", options.bouncer_workers, options.concurrency, bouncer, "false")
        )
    results = {s.label: [] for s in setups}
    print(
        f"pgbouncer benchmark: {options.bouncer_workers} workers through PgBouncer "
        f"(transaction mode, pool {options.pool_size}) vs {options.direct_workers} direct, "
        f"--concurrency {options.concurrency}; {options.jobs} no-op jobs, "
        f"{options.latency_jobs} latency jobs, {options.repeat} rounds turn about; logs in {logs}"
    )
    try:
        for round in range(options.repeat):
            order = setups[round % len(setups) :] + setups[: round % len(setups)]
            for setup in order:
                setup.start(logs)
                try:
                    idle = sessions()
                    idle_servers = setup.server_connections(name)
                    latencies = idle_latency(options.latency_jobs)
                    clear_jobs()
                    rate, most, servers, (fewest, most_jobs) = throughput(options.jobs, setup, name)
                    clear_jobs()
                finally:
                    setup.stop()
                row = {
                    "jobs/s": rate,
                    "p50 ms": 1000 * statistics.median(latencies),
                    "p95 ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
                    "sessions idle": idle,
                    "sessions busy": most,
                    "pgbouncer servers idle": idle_servers,
                    "pgbouncer servers busy": servers if setup.bouncer else None,
                    "host share min": fewest,
                    "host share max": most_jobs,
                }
                results[setup.label].append(row)
                print(f"  round {round + 1} {setup.label:<9} " + ", ".join(
                    f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                ))  # fmt: skip
    finally:
        for setup in setups:
            for process in setup.processes:
                process.kill()
        bouncer.stop()
        drop_database(name)

    print("\nmedians of the rounds")
    keys = list(next(iter(results.values()))[0])
    print(f"{'':<28}" + "".join(f"{label:>18}" for label in results))
    for key in keys:
        cells = []
        for rows in results.values():
            values = [r[key] for r in rows if r[key] is not None]
            cells.append(f"{statistics.median(values):>18.2f}" if values else f"{'-':>18}")
        print(f"{key:<28}" + "".join(cells))


if __name__ == "__main__":
    main()
