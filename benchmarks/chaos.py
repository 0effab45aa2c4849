"""Chaos run: worker processes SIGKILLed again and again while they work through a queue.

The long version of ``tests/test_faults.py``'s kill test. It creates a database of
its own (dropped afterwards), enqueues ``--jobs`` jobs, starts ``--workers`` worker
processes and, every ``--kill-every`` seconds while jobs are waiting, SIGKILLs the
oldest and starts a new one. Then it checks every job by its side effect::

    python benchmarks/chaos.py                                # 20,000 jobs, a kill every 2 s
    python benchmarks/chaos.py --jobs 3000 --kill-every 1 --database sqlite
    python benchmarks/chaos.py --atomic both --database mysql # plain, then atomic, side by side
    python benchmarks/chaos.py --pgbouncer --workers 8  # workers through PgBouncer (pool of 4)

The jobs are ``tests.testapp.jobs.record_once``: each start is logged with the pid of
the process that ran it, and the work is recorded in one transaction at the end,
under a unique key. It uses the test suite's settings (``tests/settings.py``) and
exits 1 when a job was lost or completed twice without a kill to explain it.

``--atomic yes`` enqueues the same jobs with ``atomic=True``: each runs in a
transaction that also records its success, so a kill can no longer fall between
the work's commit and the success being stored, and the run exits 1 when any job
completed twice. ``--atomic both`` runs the plain jobs, then the atomic ones, each
on a fresh database, and prints the two side by side.
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
    parser.add_argument(
        "--atomic",
        choices=["no", "yes", "both"],
        default="no",
        help="enqueue the jobs with atomic=True (yes), or run without, then with (both)",
    )
    return parser.parse_args()


def setup_django(options, name, workdir):
    """Point the test settings at a database of our own, create it and migrate."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PGJOBS_TEST_DB=options.database,
        PGJOBS_TEST_DB_NAME=name if options.database != "sqlite" else str(workdir / name),
        PGJOBS_TEST_LEASE_SECONDS=str(options.lease),
        PGJOBS_TEST_CONN_MAX_AGE="600",
        # Succeeded jobs are checked at the end: none pruned after 5 minutes.
        PGJOBS_TEST_KEEP_SUCCEEDED="forever",
        PYTHONUNBUFFERED="1",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, connections

    # A second run in this process (--atomic both): the settings are read already.
    connections.close_all()
    for settings_dict in (settings.DATABASES["default"], connection.settings_dict):
        settings_dict["NAME"] = os.environ["PGJOBS_TEST_DB_NAME"]

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

    def check_alive(self):
        """Stop the run when a worker exited by itself: it could not start (a
        Python without the test suite's dependencies, say), and killing its
        successors every few seconds would go on forever with nothing done."""
        for number, process in enumerate(self.running):
            if process.poll() is not None:
                log = self.log_files[self.started - len(self.running) + number]
                log.flush()
                tail = Path(log.name).read_text(errors="replace").strip().splitlines()[-1:]
                sys.exit(
                    f"chaos: a worker exited by itself (code {process.returncode}): "
                    f"{tail[0] if tail else 'no output'} (log: {log.name})"
                )

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
        from pgjobs.models import WorkerProcess

        # A worker started by the last kill may still be starting up, before its
        # SIGTERM handler: wait until each has registered (it installs it first).
        deadline = time.monotonic() + 30
        for process in self.running:
            while time.monotonic() < deadline and not (
                WorkerProcess.objects.filter(id__contains=f":{process.pid}:").exists()
            ):
                time.sleep(0.1)
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


def enqueue(options, atomic):
    from pgjobs import background
    from tests.testapp import jobs

    batch = 1000
    for start in range(0, options.jobs, batch):
        keys = range(start, min(start + batch, options.jobs))
        background.enqueue_many(
            [(jobs.record_once, [f"chaos-{n}", options.work], {}) for n in keys],
            max_attempts=100,  # attempts count kills; running out is not what this measures
            atomic=atomic,
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
    modes = {"no": [False], "yes": [True], "both": [False, True]}[options.atomic]
    results = [run(options, atomic, n) for n, atomic in enumerate(modes)]
    if len(results) > 1:
        print()
        print(f"{'':<24}{'plain':<44}atomic")
        for (label, plain), (_, atomic) in zip(results[0][1], results[1][1], strict=True):
            print(f"{label:<24}{str(plain)[:42]:<44}{atomic}")
    return max(code for code, _ in results)


def run(options, atomic, number):
    """One chaos run on a database of its own; ``(exit code, rows of the report)``."""
    chance = random.Random(options.seed)
    workdir = Path(tempfile.mkdtemp(prefix="pgjobs-chaos-"))
    name = f"pgjobs_chaos_{os.getpid()}_{number}"
    name += ".sqlite3" if options.database == "sqlite" else ""
    print(
        f"chaos: {options.database}, {options.jobs} {'atomic' if atomic else 'plain'} jobs, "
        f"{options.workers} workers x {options.concurrency}, lease {options.lease:g} s, "
        f"a kill every {options.kill_every:g} s"
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
        enqueue(options, atomic)
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
                workers.check_alive()
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
    if atomic:
        bad = bad or found["twice"]  # exactly once: no kill explains a second completion
    if bad:
        print("FAILED:", {k: v[:10] for k, v in found.items() if isinstance(v, list) and v})
    return (1 if bad or any(code != 0 for code in codes) else 0), rows


if __name__ == "__main__":
    sys.exit(main())
