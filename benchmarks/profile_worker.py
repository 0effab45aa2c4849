"""Where a pgjobs worker's time goes: py-spy, sampling only the thread that holds the GIL.

    benchmarks/.work/venv/bin/python benchmarks/profile_worker.py [--jobs 50000]
        [--worker-args "--concurrency 1"] [--top 25]

Enqueues ``--jobs`` no-op jobs into a fresh ``pgjobs_bench_profile`` database, drains
them with ``manage.py pgjobs_drain`` under ``py-spy record --gil`` and prints, per
thread (the main thread claiming and recording, the slot threads running jobs), the
share of GIL-held samples and the microseconds of Python per job, then the functions
with the most samples. Time a process spends waiting on the database does not hold
the GIL and does not show; it is the difference between the rate and 1 / (µs per job).
This is how the optimisations of issue #8 were chosen (see benchmarks/README.md).
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

from harness import PROJECTS_DIR, PYTHON, REPO_DIR, Database, manage_py


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--worker-args", default="--concurrency 1")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    args = parser.parse_args()
    spy = shutil.which("py-spy", path=os.path.dirname(PYTHON)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is missing: benchmarks/.work/venv/bin/pip install py-spy")

    db = Database("postgres", "pgjobs_bench_profile")
    db.recreate()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pgjobs_bench.settings",
        "BENCH_DATABASE": "postgres",
        "BENCH_DB": db.name,
        # A PYTHONPATH the caller gives (another checkout's pgjobs), else this
        # checkout's pgjobs: the venv's editable install may be another's.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECTS_DIR), os.environ.get("PYTHONPATH"), str(REPO_DIR)])
        ),
    }
    run = {"env": env, "cwd": PROJECTS_DIR, "check": True}
    subprocess.run([PYTHON, manage_py(), "migrate", "-v", "0"], **run)
    enqueue = (
        "import django; django.setup()\n"
        "from pgjobs import background\n"
        "from pgjobs_bench.tasks import noop\n"
        f"background.enqueue_many([(noop, [], {{}})] * {args.jobs})\n"
    )
    subprocess.run([PYTHON, "-c", enqueue], **run)
    with db.connect() as conn:
        conn.execute("VACUUM ANALYZE pgjobs_job")

    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        argv = [spy, "record", "--gil", "-r", str(args.rate), "-f", "raw", "-o", out.name]
        argv += ["--", PYTHON, manage_py(), "pgjobs_drain", "-v", "0", *args.worker_args.split()]
        started = time.monotonic()
        subprocess.run(argv, capture_output=True, **run)
        wall = time.monotonic() - started
        stacks = [line.rstrip().rpartition(" ") for line in open(out.name)]
    with db.connect() as conn:
        rate = conn.execute(
            "SELECT count(*) / extract(epoch FROM max(finished_at) - min(started_at)) "
            "FROM pgjobs_job"
        ).fetchone()[0]
    report(stacks, args, rate, wall)
    return 0


def report(stacks, args, rate, wall):
    by_thread, by_function, total = collections.Counter(), collections.Counter(), 0
    for stack, _, count in stacks:
        frames = stack.split(";")
        if any("_find_and_load" in f or "setup (django" in f for f in frames):
            continue  # start-up imports: not per job
        n = int(count)
        total += n
        if any("_run_slot" in f for f in frames):
            thread = "slot threads (running jobs)"
        elif "manage.py" in frames[0]:
            thread = "main thread (claims, outcomes)"
        else:
            thread = "other (listener, native)"
        by_thread[thread] += n
        seen = set()
        for frame in frames:
            name = frame.split(" (")[0]
            if name not in seen:  # inclusive: count a function once per sample
                seen.add(name)
                by_function[name] += n
    per_sample_us = 1e6 / args.rate
    print(f"{args.jobs:,} no-op jobs, pgjobs_drain {args.worker_args}: {float(rate):,.0f} jobs/s")
    print(f"(wall {wall:.1f} s incl. start-up; {total:,} GIL-held samples at {args.rate}/s)\n")
    print(f"{'where':<34} {'share':>6} {'µs/job':>7}")
    for thread, n in by_thread.most_common():
        print(f"{thread:<34} {n / total:>6.0%} {n * per_sample_us / args.jobs:>7.1f}")
    print(f"{'all Python (GIL held)':<34} {1:>6.0%} {total * per_sample_us / args.jobs:>7.1f}\n")
    print(f"{'function (inclusive)':<60} {'share':>6} {'µs/job':>7}")
    for name, n in by_function.most_common(args.top):
        print(f"{name[:60]:<60} {n / total:>6.0%} {n * per_sample_us / args.jobs:>7.1f}")


if __name__ == "__main__":
    sys.exit(main())
