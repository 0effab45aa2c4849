#!/usr/bin/env python3
"""What queue control costs claims (PostgreSQL): a queue without limits, and a
limited queue with an unlimited one beside it, against no limits, turn about.

    /work/main/.venv/bin/python benchmarks/queue_control.py --rounds 3 \\
        [--baseline /path/to/other/checkout]

Every round runs every variant once, in turn (A B C ... A B C), so that a
shared machine's drift touches them alike. A variant: the job table refilled
with ``--jobs`` no-op jobs in each of queues ``a`` and ``b`` (plain SQL), the
controls set, then ``--workers`` processes claiming at once through the store
(``finish_and_claim``: the previous batch recorded, ``--batch`` more claimed,
as a busy worker does, nothing run) until both queues are empty. Claims a
second: per queue, from the claim that first took one of its jobs to the one
that took its last; and for both together ("all").

Variants:

- ``none``: no control anywhere; workers claim from a and b.
- ``b only``, ``b only, a limited``: workers claim from b only, a without and
  with a concurrency limit (the plain path both times: what a queue beside a
  limited one pays).
- ``a concurrency 10^6``, ``a rate 10^6/s``: limits that never bind, so what
  is measured is the limited path's own cost (row lock, count, window update).
- ``a concurrency 8``: a binding limit (workers * batch > 8).
- ``a rate 2000/s``: a binding rate.
- ``baseline none`` (with ``--baseline``): the other checkout's pgjobs (no
  queue control at all), no controls: the plain path before this change.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB_NAME = f"pgjobs_bench_qc_{os.getpid()}"

VARIANTS = {
    "none": ({}, ["a", "b"]),
    "b only": ({}, ["b"]),
    "b only, a limited": ({"a": {"concurrency": 8}}, ["b"]),
    "a concurrency 10^6": ({"a": {"concurrency": 10**6}}, ["a", "b"]),
    "a rate 10^6/s": ({"a": {"rate": 10**6, "period": 1.0}}, ["a", "b"]),
    "a concurrency 8": ({"a": {"concurrency": 8}}, ["a", "b"]),
    "a rate 2000/s": ({"a": {"rate": 2000, "period": 1.0}}, ["a", "b"]),
}


def setup_django(db_name):
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db_name,
                "USER": os.environ.get("PGUSER", "root"),
                "HOST": os.environ.get("PGHOST", "127.0.0.1"),
                "PORT": os.environ.get("PGPORT", "5432"),
            }
        },
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "pgjobs"],
        USE_TZ=True,
        PGJOBS={"BACKEND": "pgjobs.backends.DatabaseBackend"},
        SECRET_KEY="bench",
    )
    django.setup()


# -- a claiming process ------------------------------------------------------------------


def child(args):
    setup_django(args.db)
    from pgjobs.stores import database_store

    store = database_store("default")
    queues = args.queues.split(",")
    worker = f"bench-{os.getpid()}"
    while time.time() < args.start_at:
        time.sleep(0.001)
    counts, first, last, began = {}, None, {}, {}
    results = []
    while True:
        first = time.time()
        batch = store.finish_and_claim(worker, results, queues, args.batch)
        now = time.time()
        results = [(job.id, None) for job in batch]
        for job in batch:
            counts[job.queue] = counts.get(job.queue, 0) + 1
            began.setdefault(job.queue, first)
            last[job.queue] = now
        if batch:
            continue
        # Nothing claimed: empty, or held back by a limit; stop once nothing is left.
        if store.count_due(queues) == 0:
            break
        time.sleep(0.002)
    print(json.dumps({"counts": counts, "began": began, "last": last}))


# -- the driver ------------------------------------------------------------------------------


def psql(db, sql):
    import psycopg

    with psycopg.connect(dbname=db, user="root", host="127.0.0.1", autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else None


def fill(db, jobs):
    psql(db, "TRUNCATE pgjobs_job RESTART IDENTITY")
    psql(db, "DELETE FROM pgjobs_queue")
    for queue in ("a", "b"):
        psql(
            db,
            "INSERT INTO pgjobs_job (func, args, kwargs, queue, priority, run_at, status, "
            "attempts, max_attempts, created_at, signature, cancel_requested) "
            f"SELECT 'pgjobs_bench.noop', '[]', '{{}}', '{queue}', 0, now(), 'ready', 0, 3, "
            f"now(), '', false FROM generate_series(1, {jobs})",
        )
    psql(db, "VACUUM ANALYZE pgjobs_job")


def run_variant(args, label, controls, queues, checkout):
    fill(args.db, args.jobs)
    for queue, values in controls.items():
        columns = ", ".join(["queue", *values])
        literals = ", ".join([f"'{queue}'", *map(str, values.values())])
        psql(
            args.db,
            f"INSERT INTO pgjobs_queue ({columns}, paused, window_count, "
            f"updated_at) VALUES ({literals}, false, 0, now())",
        )
    start_at = time.time() + 3.0  # every process started and set up by then
    env = {**os.environ, "PYTHONPATH": checkout}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                "--db",
                args.db,
                "--queues",
                ",".join(queues),
                "--batch",
                str(args.batch),
                "--start-at",
                str(start_at),
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.workers)
    ]
    outputs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in processes]
    rates = {}
    for queue in queues:
        claimed = sum(out["counts"].get(queue, 0) for out in outputs)
        if claimed != args.jobs:
            raise SystemExit(f"{label}: {claimed} of {args.jobs} jobs of {queue} claimed")
        began = min(out["began"][queue] for out in outputs if queue in out["began"])
        ended = max(out["last"][queue] for out in outputs if queue in out["last"])
        rates[queue] = claimed / (ended - began)
    began = min(t for out in outputs for t in out["began"].values())
    ended = max(t for out in outputs for t in out["last"].values())
    rates["all"] = len(queues) * args.jobs / (ended - began)
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--queues", help=argparse.SUPPRESS)
    parser.add_argument("--db", default=DB_NAME, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per queue (default 5000)")
    parser.add_argument("--workers", type=int, default=4, help="claiming processes (4)")
    parser.add_argument("--batch", type=int, default=10, help="jobs per claim (10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="another checkout whose pgjobs runs 'none' too")
    args = parser.parse_args()
    if not args.child:
        sys.path.insert(0, REPO)  # this checkout's pgjobs (and its migrations)
    if args.child:
        return child(args)

    psql("postgres", f'DROP DATABASE IF EXISTS "{args.db}"')
    psql("postgres", f'CREATE DATABASE "{args.db}"')
    try:
        setup_django(args.db)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from django.db import connections

        connections.close_all()
        variants = [(label, *spec, REPO) for label, spec in VARIANTS.items()]
        if args.baseline:
            variants.insert(0, ("baseline none", {}, ["a", "b"], args.baseline))
        results = {label: [] for label, *_ in variants}
        for round_number in range(1, args.rounds + 1):
            for label, controls, queues, checkout in variants:
                rates = run_variant(args, label, controls, queues, checkout)
                results[label].append(rates)
                shown = "  ".join(f"{q}: {r:7.0f}/s" for q, r in rates.items())
                print(f"round {round_number}  {label:<22} {shown}", flush=True)
        print(
            f"\nmedians over {args.rounds} rounds ({args.workers} processes, batch "
            f"{args.batch}, {args.jobs} jobs per queue); claims/s per queue:"
        )
        for label, runs in results.items():
            shown = "  ".join(
                f"{q}: {statistics.median(r[q] for r in runs):7.0f}/s" for q in runs[0]
            )
            print(f"  {label:<22} {shown}")
    finally:
        from django.db import connections

        connections.close_all()
        psql("postgres", f'DROP DATABASE IF EXISTS "{args.db}"')


if __name__ == "__main__":
    main()
