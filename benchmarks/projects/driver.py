"""Client side of a benchmark run, executed inside one system's Django project.

The harness runs ``python driver.py <command> ...`` with DJANGO_SETTINGS_MODULE
pointing at ``<system>_bench.settings``; the system-specific calls come from
that project's ``tasks.py``, so this file is the same for every system.
Each command prints one JSON object on stdout.

    enqueue --mode single|atomic|bulk[,...] --n N [--kind K] [--variant V] [--warmup W]
        single: N enqueues, each its own transaction (Django autocommit)
        atomic: N enqueues inside one transaction.atomic()
        bulk:   one call of the system's bulk API inside one transaction
        Several modes, comma-separated, run one after the other (the jobs
        stay queued) and print {"modes": {mode: result}}.
        K is the job kind (noop, orm, sleep50; default noop), V the way the
        system runs it (default: the first of tasks.JOBS[K]).
    latency --n N --spacing S [--warmup K] [--timeout T]
        enqueue K warm-up probes, wait until they ran (the worker is then up
        and idle), then enqueue N probes one at a time every S seconds and
        wait until all have recorded their start time.
    produce --rate R [--batch B]
        enqueue R no-op jobs/s, each its own transaction, until SIGTERM, as a
        web app would while workers process; report errors (e.g. SQLite's
        "database is locked") instead of stopping at the first, and the rate
        it managed. It prints "ready" once Django is set up and it starts.
        With B > 1, B jobs per transaction through the bulk API (still R jobs/s):
        the rate a 2-core machine's producers cannot reach one job at a time.
    serve
        read commands (the arguments above, as a JSON list) one per line on
        stdin and answer each with one JSON line, until stdin closes: the
        harness keeps one driver per system so that each enqueue or latency
        run does not pay for a Python and Django start-up. An exception in a
        command is answered with {"failed": "..."}.
"""

import argparse
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _tasks():
    project = os.environ["DJANGO_SETTINGS_MODULE"].rsplit(".", 1)[0]
    return importlib.import_module(f"{project}.tasks")


def cmd_enqueue(args, tasks):
    modes = args.mode.split(",")
    if len(modes) == 1:
        return enqueue_timed(args, tasks, args.mode, args.warmup)
    # The warm-up once, before the first mode.
    return {
        "modes": {
            mode: enqueue_timed(args, tasks, mode, args.warmup if i == 0 else 0)
            for i, mode in enumerate(modes)
        }
    }


def enqueue_timed(args, tasks, mode, warmup):
    from django.db import transaction

    if mode not in ("single", "atomic", "bulk", "distinct"):
        return {"unsupported": f"mode {mode!r}"}
    variants = tasks.JOBS.get(args.kind)
    if not variants:
        return {"unsupported": f"job kind {args.kind!r}"}
    variant = args.variant or variants[0]
    if variant not in variants:
        return {"unsupported": f"{args.kind} job variant {variant!r}"}
    if mode == "bulk" and tasks.enqueue_bulk is None:
        return {"unsupported": "no bulk enqueue API"}
    bulk_distinct = getattr(tasks, "enqueue_bulk_distinct", None)
    if mode == "distinct" and (bulk_distinct is None or args.kind != "noop"):
        return {"unsupported": "not measured for this queue"}
    # Warm-up outside the timed window: opens the connection, fills caches.
    for _ in range(warmup):
        tasks.enqueue(args.kind, variant)

    # The caller's list of distinct jobs is made before the clock starts: the
    # figure is that of the bulk call itself, for every queue alike.
    batch = tasks.distinct_batch(args.n, variant) if mode == "distinct" else None
    start = time.perf_counter()
    if mode == "single":
        for _ in range(args.n):
            tasks.enqueue(args.kind, variant)
    elif mode == "atomic":
        with transaction.atomic():
            for _ in range(args.n):
                tasks.enqueue(args.kind, variant)
    elif mode == "distinct":
        with transaction.atomic():
            bulk_distinct(batch)
    else:
        with transaction.atomic():
            tasks.enqueue_bulk(args.n, args.kind, variant)
    seconds = time.perf_counter() - start
    return {"n": args.n, "seconds": seconds, "rate": args.n / seconds}


def _wait_for(path, job_nos, timeout):
    from bench_record import read_records

    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if all(j in records for j in job_nos):
            return records
        if time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def cmd_latency(args, tasks):
    from bench_record import LATENCY_FILE

    warm = [-(i + 1) for i in range(args.warmup)]
    for job_no in warm:
        tasks.enqueue_latency(job_no, time.time())
    records = _wait_for(LATENCY_FILE, warm, args.timeout)
    if not all(j in records for j in warm):
        return {"error": f"worker did not run the warm-up jobs within {args.timeout}s"}
    # Let the worker settle back into its idle wait before measuring.
    time.sleep(max(0.5, args.spacing))

    # Enqueue on a fixed schedule, so a slow enqueue does not shift the rest.
    measured = list(range(args.n))
    t0 = time.monotonic()
    for job_no in measured:
        delay = t0 + job_no * args.spacing - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        tasks.enqueue_latency(job_no, time.time())
    records = _wait_for(LATENCY_FILE, measured, args.timeout)
    latencies = [(records[j][1] - records[j][0]) * 1000.0 for j in measured if j in records]
    return {"n": args.n, "received": len(latencies), "latencies_ms": latencies}


def cmd_produce(args, tasks):
    import signal

    from django.db import transaction

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    n, errors, slowest = 0, [], 0.0
    print("ready", flush=True)
    t0 = time.monotonic()
    batch = max(1, args.batch)
    if batch > 1 and tasks.enqueue_bulk is None:
        return {"failed": "--batch needs a bulk enqueue API"}
    while not stop:
        delay = t0 + n / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        started = time.perf_counter()
        try:
            if batch == 1:
                tasks.enqueue()
            else:
                with transaction.atomic():
                    tasks.enqueue_bulk(batch)
        except Exception as e:  # counted and reported, the run goes on
            errors.append(f"{type(e).__name__}: {e}")
        slowest = max(slowest, time.perf_counter() - started)
        n += batch
    seconds = time.monotonic() - t0
    return {
        "n": n,
        "seconds": seconds,
        "rate": n / seconds if seconds else 0.0,
        "errors": len(errors),
        "error_samples": errors[:3],
        "slowest_ms": slowest * 1e3,
    }


COMMANDS = {"enqueue": cmd_enqueue, "latency": cmd_latency, "produce": cmd_produce}


def cmd_serve(parser, tasks):
    import traceback

    from django.db import close_old_connections

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            args = parser.parse_args(json.loads(line))
            result = COMMANDS[args.command](args, tasks)
        except BaseException as e:  # SystemExit from argparse too: answer, carry on
            traceback.print_exc()
            result = {"failed": f"{type(e).__name__}: {e}"}
            close_old_connections()
        print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    enq = sub.add_parser("enqueue")
    enq.add_argument(
        "--mode",
        required=True,
        help="single, atomic, bulk or distinct (bulk, each job its own argument); or several, a,b",
    )
    enq.add_argument("--n", type=int, required=True)
    enq.add_argument("--kind", default="noop")
    enq.add_argument("--variant", default="")
    enq.add_argument("--warmup", type=int, default=0)
    lat = sub.add_parser("latency")
    lat.add_argument("--n", type=int, required=True)
    lat.add_argument("--spacing", type=float, default=0.02)
    lat.add_argument("--warmup", type=int, default=3)
    lat.add_argument("--timeout", type=float, default=60.0)
    produce = sub.add_parser("produce")
    produce.add_argument("--rate", type=float, required=True)
    produce.add_argument("--batch", type=int, default=1)
    sub.add_parser("serve")
    args = parser.parse_args()

    import django

    django.setup()
    tasks = _tasks()
    if args.command == "serve":
        cmd_serve(parser, tasks)
        return
    print(json.dumps(COMMANDS[args.command](args, tasks)))


if __name__ == "__main__":
    main()
