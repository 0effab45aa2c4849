#!/usr/bin/env python3
"""Worker command lines (and checkouts) against each other, turn about, on one machine.

    benchmarks/.work/venv/bin/python benchmarks/ab_worker.py --jobs 30000 --rounds 5 \\
        --variant "v0c1=pgjobs_worker -v 0 --concurrency 1" \\
        --variant "c8=pgjobs_worker --concurrency 8" \\
        --variant "old c8=/tmp/old-checkout:pgjobs_worker --concurrency 8"

Each variant is ``label=[checkout:]command and options``: a ``manage.py`` command
of the benchmark project (``pgjobs_bench``, DatabaseBackend on PostgreSQL) and,
optionally, a directory put first on ``PYTHONPATH`` whose ``pgjobs`` is measured
instead of this checkout's. Unlike run.py, the project's logging is left as a
user's would be (``pgjobs`` at the command's verbosity, to stderr, here a file),
so that what the default verbosity costs shows.

Every round runs every variant once, in turn (A B C A B C ...), so that the
machine's drift touches them alike: ``--jobs`` no-op jobs are enqueued
(``enqueue_many``, then copied in SQL), the table vacuumed and analysed, the
command spawned and stopped (SIGTERM) once all are finished. Per run: jobs/s
from the jobs' own timestamps (first start → last finish), jobs/s from the
spawn, and the worker process's CPU time per job (user + system, from
``getrusage``: steadier than a rate on a shared machine). Medians per variant,
with every run's figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

from harness import PROJECTS_DIR, PYTHON, Database, manage_py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    label, _, rest = text.partition("=")
    checkout, _, command = rest.rpartition(":")
    return label, checkout or REPO, command.split()


def env_for(db: Database, checkout: str) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pgjobs_bench.settings",
        "BENCH_DATABASE": "postgres",
        "BENCH_DB": db.name,
        "PYTHONPATH": os.pathsep.join([str(PROJECTS_DIR), checkout]),
    }


def prepare(db: Database, checkout: str, jobs: int) -> None:
    db.recreate()
    env = env_for(db, checkout)
    subprocess.run(
        [PYTHON, manage_py(), "migrate", "-v", "0"], env=env, cwd=PROJECTS_DIR, check=True
    )
    enqueue = (
        "import django; django.setup()\n"
        "from pgjobs import background\n"
        "from pgjobs_bench.tasks import noop\n"
        "background.enqueue_many([(noop, [], {})])\n"
    )
    subprocess.run([PYTHON, "-c", enqueue], env=env, cwd=PROJECTS_DIR, check=True)
    with db.connect() as conn:
        # The one row enqueued by pgjobs is the template of the rest.
        conn.execute("CREATE TABLE ab_template AS SELECT * FROM pgjobs_job")


def refill(db: Database, jobs: int) -> None:
    with db.connect() as conn:
        conn.execute("TRUNCATE pgjobs_job RESTART IDENTITY")
        cols = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'pgjobs_job' AND column_name <> 'id' AND is_generated = 'NEVER' "
                "ORDER BY ordinal_position"
            )
        ]
        names = ", ".join(cols)
        conn.execute(
            f"INSERT INTO pgjobs_job ({names}) SELECT {names} FROM ab_template, "
            f"generate_series(1, {jobs})"
        )
        conn.execute("VACUUM ANALYZE pgjobs_job")


def run_once(db: Database, checkout: str, command: list[str], jobs: int, log) -> dict:
    refill(db, jobs)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    proc = subprocess.Popen(
        [PYTHON, manage_py(), *command],
        env=env_for(db, checkout),
        cwd=PROJECTS_DIR,
        stdout=log,
        stderr=log,
    )
    with db.connect() as conn:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None and "pgjobs_drain" not in command:
                raise SystemExit(f"{command} exited with {proc.returncode}")
            done = conn.execute(
                "SELECT count(*) FROM pgjobs_job WHERE status = 'succeeded'"
            ).fetchone()[0]
            if done >= jobs:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"{command}: not done in 600 s")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        first, last = conn.execute(
            "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)) "
            "FROM pgjobs_job"
        ).fetchone()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rate": jobs / (float(last) - float(first)),
        "wall_rate": jobs / (float(last) - spawned),
        "first_start_s": float(first) - spawned,
        "cpu_us": cpu * 1e6 / jobs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=[DIR:]CMD")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    dbs = {}
    for _, checkout, _ in variants:
        if checkout not in dbs:
            dbs[checkout] = Database("postgres", f"pgjobs_bench_ab{len(dbs)}", checkpoint=False)
            prepare(dbs[checkout], checkout, args.jobs)
    results = {label: [] for label, _, _ in variants}
    log_path = os.path.join(REPO, "benchmarks", ".work", "ab_worker.log")
    with open(log_path, "w") as log:
        for number in range(1, args.rounds + 1):
            for label, checkout, command in variants:
                result = run_once(dbs[checkout], checkout, command, args.jobs, log)
                results[label].append(result)
                print(
                    f"round {number} {label:<14} {result['rate']:>8,.0f} jobs/s "
                    f"(from spawn {result['wall_rate']:>7,.0f}, first start "
                    f"{result['first_start_s']:.2f} s) {result['cpu_us']:6.1f} µs CPU/job",
                    flush=True,
                )
    print(f"\n{args.jobs:,} no-op jobs, {args.rounds} rounds, medians (every run):")
    best = max(statistics.median(r["rate"] for r in runs) for runs in results.values())
    for label, runs in results.items():
        rates = [r["rate"] for r in runs]
        cpu = [r["cpu_us"] for r in runs]
        median = statistics.median(rates)
        print(
            f"  {label:<14} {median:>8,.0f} jobs/s ({median / best:4.0%} of best) "
            f"[{', '.join(f'{r:,.0f}' for r in rates)}]; "
            f"from spawn {statistics.median(r['wall_rate'] for r in runs):,.0f}; "
            f"CPU {statistics.median(cpu):.1f} µs/job [{', '.join(f'{c:.1f}' for c in cpu)}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
