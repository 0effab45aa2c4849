"""Chaos run: worker processes SIGKILLed again and again while they work through a queue.

The long version of ``tests/test_faults.py``'s kill test. It creates a database of
its own (dropped afterwards), enqueues ``--jobs`` jobs, starts ``--workers`` worker
processes and, every ``--kill-every`` seconds while jobs are waiting, SIGKILLs the
oldest and starts a new one. Then it checks every job by its side effect::

    python benchmarks/chaos.py                                # 20,000 jobs, a kill every 2 s
    python benchmarks/chaos.py --jobs 3000 --kill-every 1 --database sqlite
    python benchmarks/chaos.py --pgbouncer --workers 8  # workers through PgBouncer (pool of 4)

The jobs are ``tests.testapp.jobs.record_once``: each start is logged with the pid of
the process that ran it, and the work is recorded in one transaction at the end,
under a unique key. It uses the test suite's settings (``tests/settings.py``) and
exits 1 when a job was lost or completed twice without a kill to explain it.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--kill-every", type=float, default=2.0, metavar="S")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="slots per worker")
    parser.add_argument("--lease", type=float, default=2.0, metavar="S", help="LEASE_SECONDS")
    parser.add_argument("--work", type=float, default=0.005, metavar="S", help="seconds per job")
    parser.add_argument("--database", choices=["postgres", "mysql", "sqlite"], default="postgres")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pgbouncer",
        type=int,
        nargs="?",
        const=4,
        default=None,
        metavar="POOL",
        help="PostgreSQL: the workers through a private PgBouncer in transaction mode "
        "(tests/pgbouncer.py) pooling POOL server connections (default 4), LISTEN direct",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    return parser.parse_args()


def setup_django(options, name, workdir):
    """Point the test settings at a database of our own, create it and migrate."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PGJOBS_TEST_DB=options.database,
        PGJOBS_TEST_DB_NAME=name if options.database != "sqlite" else str(workdir / name),
        PGJOBS_TEST_LEASE_SECONDS=str(options.lease),
        PGJOBS_TEST_CONN_MAX_AGE="600",
        PYTHONUNBUFFERED="1",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if options.database != "sqlite":
        charset = " CHARACTER SET utf8mb4" if options.database == "mysql" else ""
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}{charset}")
    call_command("migrate", verbosity=0)


def drop_database(options, name):
    from django.db import connection, connections

    connections.close_all()
    if options.database != "sqlite":
        force = " WITH (FORCE)" if options.database == "postgres" else ""
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}{force}")


class Workers:
    """The worker processes, oldest first."""

    def __init__(self, options, logs, env=None):
        self.options, self.logs, self.env = options, logs, env
        self.running, self.killed, self.log_files = [], set(), []
        self.started = 0

    def start(self):
        self.started += 1
        log = open(self.logs / f"worker-{self.started}.log", "wb")
        self.log_files.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "pgjobs_worker", "-v", "0"]
            + ["--concurrency", str(self.options.concurrency)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self.running.append(process)

    def kill_oldest(self):
        """SIGKILL the longest-lived worker (it has had time to claim work); return
        how many jobs it was running."""
        from pgjobs import records
        from pgjobs.models import Job

        victim = self.running.pop(0)
        running = Job.objects.filter(
            status=records.RUNNING, worker_id__contains=f":{victim.pid}:"
        ).count()
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        self.killed.add(victim.pid)
        return running

    def stop(self):
        for process in self.running:
            process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.running:
            try:
                codes.append(process.wait(60))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append("killed")
        for log in self.log_files:
            log.close()
        return codes


def enqueue(options):
    from pgjobs import background
    from tests.testapp import jobs

    batch = 1000
    for start in range(0, options.jobs, batch):
        keys = range(start, min(start + batch, options.jobs))
        background.enqueue_many(
            [(jobs.record_once, [f"chaos-{n}", options.work], {}) for n in keys],
            max_attempts=100,  # attempts count kills; running out is not what this measures
        )


def counts():
    from pgjobs.models import Job

    result = {}
    for status in Job.objects.values_list("status", flat=True):
        result[status] = result.get(status, 0) + 1
    return result


def analyse(options, killed):
    """What the jobs left behind: lost, completed twice, started more than once."""
    from pgjobs import records
    from pgjobs.models import Job
    from tests.testapp.models import Event, Execution

    runs = {}
    events = Event.objects.filter(name__regex=r"^(start|done|again):").order_by("id")
    for name, pid in events.values_list("name", "value").iterator(chunk_size=5000):
        kind, key = name.split(":", 1)
        runs.setdefault(key, {"start": [], "done": [], "again": []})[kind].append(pid)
    keys = {f"chaos-{n}" for n in range(options.jobs)}
    recorded = set(Execution.objects.values_list("key", flat=True))
    succeeded = {
        args[0]
        for args in Job.objects.filter(status=records.SUCCEEDED)
        .values_list("args", flat=True)
        .iterator(chunk_size=5000)
    }
    return {
        "lost": sorted(keys - (recorded & succeeded)),
        "twice": sorted(key for key, run in runs.items() if run["again"]),
        "twice unexplained": sorted(
            key for key, run in runs.items() if run["again"] and not set(run["done"]) <= killed
        ),
        "restarted": sorted(key for key, run in runs.items() if len(run["start"]) > 1),
        "restarted unexplained": sorted(
            key
            for key, run in runs.items()
            if len(run["start"]) > 1 and not set(run["start"][:-1]) <= killed
        ),
        "attempts over one": Job.objects.filter(attempts__gt=1).count(),
    }


def main():
    options = parse_args()
    chance = random.Random(options.seed)
    workdir = Path(tempfile.mkdtemp(prefix="pgjobs-chaos-"))
    name = f"pgjobs_chaos_{os.getpid()}" + (".sqlite3" if options.database == "sqlite" else "")
    print(
        f"chaos: {options.database}, {options.jobs} jobs, {options.workers} workers x "
        f"{options.concurrency}, lease {options.lease:g} s, a kill every {options.kill_every:g} s"
    )
    setup_django(options, name, workdir)
    from pgjobs import records
    from pgjobs.models import Job

    bouncer, env = None, None
    if options.pgbouncer:
        from tests.pgbouncer import PgBouncer

        bouncer = PgBouncer(pool_size=options.pgbouncer).start()
        env = {
            **os.environ,
            "PGJOBS_TEST_PGBOUNCER_PORT": str(bouncer.port),
            "PGJOBS_TEST_LISTEN_DATABASE": "direct",
        }
        print(f"chaos: workers through PgBouncer on port {bouncer.port}, pool {options.pgbouncer}")
    workers = Workers(options, workdir, env)
    try:
        enqueue(options)
        started = time.monotonic()
        for _ in range(options.workers):
            workers.start()
        interrupted, next_kill, next_report = 0, started + options.kill_every, started
        # Kill while jobs are waiting; then let the last victims' jobs come back.
        while Job.objects.filter(status=records.READY).exists():
            now = time.monotonic()
            if now >= next_report:
                print(f"  {now - started:6.1f} s  {counts()}  kills {len(workers.killed)}")
                next_report = now + 10
            if now >= next_kill:
                interrupted += workers.kill_oldest()
                workers.start()
                next_kill = now + options.kill_every * chance.uniform(0.75, 1.25)
            time.sleep(0.05)
        deadline = time.monotonic() + 10 * options.lease + 120
        while counts().keys() - {records.SUCCEEDED, records.FAILED, records.CANCELLED}:
            if time.monotonic() > deadline:
                print(f"  gave up waiting: {counts()}")
                break
            time.sleep(0.2)
        took = time.monotonic() - started
        codes = workers.stop()
        found = analyse(options, workers.killed)
    finally:
        for process in workers.running:
            if process.poll() is None:
                process.kill()
        if bouncer is not None:
            bouncer.stop()
        if not options.keep:
            drop_database(options, name)
            shutil.rmtree(workdir, ignore_errors=True)

    twice, restarted = len(found["twice"]), len(found["restarted"])
    rows = [
        ("jobs", options.jobs),
        ("kills", f"{len(workers.killed)} ({interrupted} jobs running at a kill)"),
        ("lost", len(found["lost"])),
        (
            "completed twice",
            f"{twice} ({twice - len(found['twice unexplained'])} after a kill between the "
            f"work's commit and the success being stored; {len(found['twice unexplained'])} "
            "unexplained)",
        ),
        (
            "started more than once",
            f"{restarted} ({len(found['restarted unexplained'])} while the earlier "
            f"run's worker lived); {found['attempts over one']} jobs claimed more than once",
        ),
        ("wall time", f"{took:.1f} s ({options.jobs / took:.0f} jobs/s)"),
        ("workers at the end", f"exit codes {codes}"),
    ]
    for label, value in rows:
        print(f"{label:<24}{value}")
    if options.keep:
        print(f"kept: database {name}, logs in {workdir}")
    bad = found["lost"] or found["twice unexplained"] or found["restarted unexplained"]
    if bad:
        print("FAILED:", {k: v[:10] for k, v in found.items() if isinstance(v, list) and v})
    return 1 if bad or any(code != 0 for code in codes) else 0


if __name__ == "__main__":
    sys.exit(main())
