"""What ``atomic=True`` costs: throughput of the same jobs, plain and atomic, alternating.

Creates a database of its own (dropped afterwards), starts ``--workers`` worker
processes and, ``--repeat`` times, enqueues ``--jobs`` jobs in one call, plain then
atomic (the order swapped every round, so that neither always runs first on a
machine whose load drifts), timing each batch from its enqueue's commit until
every job succeeded::

    python benchmarks/atomic_cost.py                          # PostgreSQL, one-row inserts
    python benchmarks/atomic_cost.py --database mysql --job noop --repeat 5

``--job insert`` runs ``tests.testapp.jobs.record_event`` (one INSERT), ``noop`` a
job that touches nothing: for it, atomic adds the job's own transaction (BEGIN,
the success's UPDATE, COMMIT on the slot's connection) where a plain job's success
rides in the worker's next batched claim. Uses the test suite's settings, as
``chaos.py`` does.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos import ROOT, drop_database, setup_django  # noqa: E402

JOBS = {"insert": "tests.testapp.jobs.record_event", "noop": "tests.testapp.jobs.noop"}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per batch")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of (plain, atomic)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="slots per worker")
    parser.add_argument("--job", choices=sorted(JOBS), default="insert")
    parser.add_argument("--database", choices=["postgres", "mysql", "sqlite"], default="postgres")
    parser.add_argument("--lease", type=float, default=20.0, help=argparse.SUPPRESS)
    return parser.parse_args()


def batch(options, atomic):
    """Enqueue one batch and time it until every job succeeded; jobs per second."""
    from pgjobs import background, records
    from pgjobs.models import Job

    Job.objects.all().delete()
    args = (lambda n: ["bench", n]) if options.job == "insert" else (lambda n: [])
    background.enqueue_many(
        [(JOBS[options.job], args(n), {}) for n in range(options.jobs)], atomic=atomic
    )
    started = time.perf_counter()
    while Job.objects.filter(status=records.SUCCEEDED).count() < options.jobs:
        time.sleep(0.02)
    return options.jobs / (time.perf_counter() - started)


def main():
    options = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pgjobs-atomic-cost-"))
    name = "pgjobs_atomic_cost" + (".sqlite3" if options.database == "sqlite" else "")
    print(
        f"atomic cost: {options.database}, {options.job} jobs, {options.jobs} per batch, "
        f"{options.workers} workers x {options.concurrency}, {options.repeat} rounds"
    )
    setup_django(options, name, workdir)
    from pgjobs.models import WorkerProcess

    command = [sys.executable, "-m", "django", "pgjobs_worker", "-v", "0"]
    command += ["--concurrency", str(options.concurrency)]
    workers = [
        subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for _ in range(options.workers)
    ]
    rates = {False: [], True: []}
    try:
        while WorkerProcess.objects.count() < options.workers:
            time.sleep(0.1)
        for round_ in range(options.repeat):
            order = [False, True] if round_ % 2 == 0 else [True, False]
            for atomic in order:
                rate = batch(options, atomic)
                rates[atomic].append(rate)
                print(
                    f"  round {round_ + 1}  {'atomic' if atomic else 'plain ':<6}  {rate:7.0f} jobs/s"
                )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(60)
        drop_database(options, name)
        shutil.rmtree(workdir, ignore_errors=True)
    plain, atomic = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median: plain {plain:.0f} jobs/s, atomic {atomic:.0f} jobs/s "
          f"({atomic / plain - 1:+.0%})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
