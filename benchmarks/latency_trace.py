#!/usr/bin/env python3
"""Where an idle worker's enqueue→start latency goes, step by step.

    benchmarks/.work/venv/bin/python benchmarks/latency_trace.py [--probes 300]
        [--checkout DIR] [--concurrency 4]

Runs a worker of the benchmark project (``pgjobs_bench``, PostgreSQL, its own
database ``pgjobs_bench_trace``) in this process, its store and executor
wrapped to note when each step of a wake-up happens, while another process
enqueues probe jobs 20 ms apart as run.py's idle latency does (each carries the
``time.time()`` taken just before its ``background.enqueue``). Per probe:

- enqueued → notified: the enqueue (Django, pgjobs' statement, the commit) and
  the notification read by the main thread, asleep on the LISTEN socket (a
  checkout before the main thread listened: by the listener thread);
- notified → main woke: the main thread answers the wake-up and leaves its
  sleep (before: the listener thread rang the alarm and the main thread woke);
- main woke → claim sent: the main loop's turn up to the claim;
- claim sent → claim back: the claim statement and its commit;
- claim back → slot began: the hand-over to a slot thread;
- slot began → job: the slot's preparation (signature, arguments, context).

The steps between the notification and the claim and after the claim are the
worker's Python (and its threads' hand-overs); the rest is the database's, as
``latency_floor.py``'s bare loop has it. It patches private parts of the worker:
a diagnostic, not a benchmark for the report.
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

from harness import PROJECTS_DIR, PYTHON, REPO_DIR, Database, manage_py

STEPS = ["notified", "main woke", "claim sent", "claim back", "slot began"]

PRODUCER = """
import django, sys, time; django.setup()
from pgjobs import background
from pgjobs_bench.tasks import latency_probe
n, spacing = int(sys.argv[1]), float(sys.argv[2])
background.enqueue(latency_probe, args=[-1, time.time()])
time.sleep(0.5)
t0 = time.monotonic()
for i in range(n):
    delay = t0 + i * spacing - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    background.enqueue(latency_probe, args=[i, time.time()])
"""


def trace(args):
    import django

    django.setup()
    import pgjobs_bench.tasks

    from pgjobs.worker import build_worker
    from pgjobs.worker.executor import Executor

    now = {}  # step -> time.time() of the probe under way (one at a time)
    rows = []

    def mark(step):
        now.setdefault(step, time.time())

    worker = build_worker(concurrency=args.concurrency)
    store, alarm = worker.store, worker.alarm
    wait, sleep, finish_and_claim = store.wait, alarm.sleep, store.finish_and_claim

    def traced_wait(timeout):
        woken = wait(timeout)
        if woken:
            now.clear()
            mark("notified")
        return woken

    def traced_sleep(timeout):
        sleep(timeout)
        mark("main woke")

    def traced_claim(*a, **kw):
        mark("claim sent")
        jobs = finish_and_claim(*a, **kw)
        if jobs:
            mark("claim back")
        return jobs

    begin = Executor._begin

    def traced_begin(self, job, on_loop=False):
        mark("slot began")
        return begin(self, job, on_loop)

    def probe(job_no, enqueued):
        started = time.time()
        if job_no >= 0:
            rows.append((enqueued, dict(now), started))

    store.wait, alarm.sleep, store.finish_and_claim = traced_wait, traced_sleep, traced_claim
    Executor._begin = traced_begin
    pgjobs_bench.tasks.record_start = probe  # what latency_probe calls
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    time.sleep(1.0)
    subprocess.run(
        [sys.executable, "-c", PRODUCER, str(args.probes), str(args.spacing)],
        env=os.environ,
        check=True,
    )
    time.sleep(1.0)
    worker.request_stop()
    thread.join(30)

    steps = {}
    for enqueued, marks, started in rows:
        previous, name = enqueued, "enqueued"
        for step in STEPS:
            if step in marks:
                steps.setdefault(f"{name} → {step}", []).append((marks[step] - previous) * 1e3)
                previous, name = marks[step], step
        steps.setdefault(f"{name} → job", []).append((started - previous) * 1e3)
        steps.setdefault("enqueued → job (total)", []).append((started - enqueued) * 1e3)
    print(f"{len(rows)} probes, {args.spacing * 1e3:g} ms apart, --concurrency {args.concurrency}")
    for step, values in steps.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        print(
            f"  {step:<28} n={len(values):<4} p50 {statistics.median(values):7.3f} ms  "
            f"p95 {p95:7.3f} ms"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--spacing", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--checkout", default=str(REPO_DIR))
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.traced:
        trace(args)
        return
    db = Database("postgres", "pgjobs_bench_trace", checkpoint=False)
    db.recreate()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pgjobs_bench.settings",
        "BENCH_DATABASE": "postgres",
        "BENCH_DB": db.name,
        "PYTHONPATH": os.pathsep.join([str(PROJECTS_DIR), args.checkout]),
    }
    subprocess.run(
        [PYTHON, manage_py(), "migrate", "-v", "0"], env=env, cwd=PROJECTS_DIR, check=True
    )
    subprocess.run(
        [PYTHON, os.path.abspath(__file__), "--traced", *sys.argv[1:]],
        env=env,
        cwd=PROJECTS_DIR,
        check=True,
    )


if __name__ == "__main__":
    main()
