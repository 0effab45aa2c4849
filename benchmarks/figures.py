#!/usr/bin/env python3
"""How long the dashboard's and Prometheus' figures take to read on PostgreSQL with
a million retained jobs and two days of per-minute figures, while other threads
enqueue and finish jobs (issue 23: under 200 ms, never scanning the job table).

    /work/main/.venv/bin/python benchmarks/figures.py                 # 1,000,000 jobs
    /work/main/.venv/bin/python benchmarks/figures.py --jobs 100000 --load-threads 0

In a database of its own (``pgjobs_bench_figures``, dropped and migrated per run):
the job table is filled with ``--jobs`` rows (succeeded, a few thousand ready, due
and deferred, running and failed, over three queues) and ``pgjobs_stat`` with two
days of figures as eight workers would write them at full speed (each minute,
each queue, each shard: one outcome row and four wait and four run buckets),
then folded as the pruning duty keeps them (``Store.fold_figures``).
Then, while ``--load-threads`` threads enqueue 200 no-op jobs at a time, claim
them and record their successes (each success writes its figures, as workers
do), each read is timed ``--repeat`` times: ``queue_figures()``,
``minute_figures`` over the last hour and day, ``job_attempts``,
``live_workers`` and the Prometheus scrape. Prints a Markdown table and the
EXPLAIN of the ready and running counts.
"""

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = "pgjobs_bench_figures"


def configure():
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "pgjobs"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": DB,
                "USER": os.environ.get("PGUSER", "root"),
                "HOST": os.environ.get("PGHOST", "127.0.0.1"),
                "PORT": os.environ.get("PGPORT", "5432"),
            }
        },
        USE_TZ=True,
        PGJOBS={"BACKEND": "pgjobs.backends.DatabaseBackend", "OPTIONS": {"KEEP_SUCCEEDED": 300}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def recreate_database():
    params = dict(
        user=os.environ.get("PGUSER", "root"),
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        dbname="postgres",
        autocommit=True,
    )
    with psycopg.connect(**params) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")


FILL_JOBS = """
INSERT INTO pgjobs_job (func, args, kwargs, queue, priority, run_at, status, attempts,
                        max_attempts, created_at, started_at, finished_at, worker_id,
                        lease_expires_at, signature)
SELECT 'benchmarks.noop', '[]', '{}', (ARRAY['default', 'mail', 'reports'])[1 + n %% 3], 0,
       CASE WHEN n <= %(deferred)s THEN now() + interval '1 hour'
            ELSE now() - (n %% 300) * interval '1 second' END,
       CASE WHEN n <= %(ready)s THEN 'ready' WHEN n <= %(running)s THEN 'running'
            WHEN n <= %(failed)s THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN n <= %(ready)s THEN 0 ELSE 1 END, 3,
       now() - (n %% 300) * interval '1 second',
       CASE WHEN n <= %(ready)s THEN NULL ELSE now() - (n %% 300) * interval '1 second' END,
       CASE WHEN n <= %(running)s THEN NULL ELSE now() - (n %% 290) * interval '1 second' END,
       CASE WHEN n <= %(ready)s THEN NULL ELSE 'bench-worker' END,
       CASE WHEN n > %(ready)s AND n <= %(running)s THEN now() + interval '1 minute' END, ''
FROM generate_series(1, %(jobs)s) AS n
"""

FILL_FIGURES = """
INSERT INTO pgjobs_stat (minute, queue, shard, metric, bucket, count, total)
SELECT date_trunc('minute', now()) - m * interval '1 minute', q, s, metric, bucket, 40, 1.5
FROM generate_series(0, 2 * 1440) AS m,
     unnest(ARRAY['default', 'mail', 'reports']) AS q,
     generate_series(0, 7) AS s,
     (VALUES ('succeeded', 0), ('wait', 1), ('wait', 2), ('wait', 3), ('wait', 4),
             ('run', 0), ('run', 1), ('run', 2), ('run', 3)) AS k(metric, bucket)
"""


def fill(jobs):
    from django.db import connection

    started = time.perf_counter()
    counts = {"deferred": 1000, "ready": 4000, "running": 5000, "failed": 10000, "jobs": jobs}
    with connection.cursor() as cursor:
        cursor.execute(FILL_JOBS, counts)
        cursor.execute(FILL_FIGURES)
        cursor.execute("VACUUM ANALYZE pgjobs_job")
        cursor.execute("VACUUM ANALYZE pgjobs_stat")
        cursor.execute("SELECT count(*) FROM pgjobs_stat")
        (figures,) = cursor.fetchone()
    print(
        f"filled {jobs:,} jobs and {figures:,} figure rows in {time.perf_counter() - started:.0f} s"
    )


def load(stop, done, batch=200):
    """Enqueue, claim and finish no-op jobs in a loop, as a busy site's workers do."""
    from django.db import connections

    from pgjobs.handler import get_backend
    from pgjobs.records import JobSpec

    store = get_backend().get_store()
    worker = f"load-{threading.get_ident()}"
    specs = [JobSpec("benchmarks.noop", [], {}, queue="default") for _ in range(batch)]
    try:
        claimed = []
        while not stop.is_set():
            store.enqueue_many(specs)
            results = [(job.id, None) for job in claimed]
            claimed = store.finish_and_claim(worker, results, ["default"], batch)
            done[0] += len(results)
    finally:
        connections.close_all()


def timed(func, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times), max(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--load-threads", type=int, default=2)
    args = parser.parse_args()
    recreate_database()
    configure()
    import datetime

    from django.core.management import call_command
    from django.db import connection

    from pgjobs import stats
    from pgjobs.handler import get_backend
    from pgjobs.metrics.registry import registry

    call_command("migrate", verbosity=0)
    fill(args.jobs)
    store = get_backend().get_store()
    # As the pruning duty leaves them: the shards of all but the last minutes folded.
    started = time.perf_counter()
    folded = store.fold_figures(stats.FOLD_AFTER, span=datetime.timedelta(days=3))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE pgjobs_stat")
    print(f"folded {folded:,} figure rows in {time.perf_counter() - started:.0f} s")
    store.register_worker("bench-worker", "host", 1, None, 8)
    from prometheus_client import generate_latest

    stop, done = threading.Event(), [0]
    threads = [threading.Thread(target=load, args=(stop, done)) for _ in range(args.load_threads)]
    for thread in threads:
        thread.start()
    time.sleep(2 if threads else 0)
    before, started = done[0], time.perf_counter()
    reads = {
        "queue_figures()": store.queue_figures,
        "minute_figures(last hour)": lambda: store.minute_figures(datetime.timedelta(hours=1)),
        "minute_figures(last day)": lambda: store.minute_figures(datetime.timedelta(days=1)),
        "job_attempts(id)": lambda: store.job_attempts(4500),
        "live_workers()": store.live_workers,
        "Prometheus scrape": lambda: generate_latest(registry()),
    }
    rows = [(name, *timed(func, args.repeat)) for name, func in reads.items()]
    rate = (done[0] - before) / (time.perf_counter() - started)
    stop.set()
    for thread in threads:
        thread.join()
    print(f"\n{args.jobs:,} retained jobs; {args.load_threads} load threads finishing "
          f"{rate:,.0f} jobs/s meanwhile; {args.repeat} reads each\n")  # fmt: skip
    print("| read | median ms | max ms |\n|---|---:|---:|")
    for name, median, worst in rows:
        print(f"| {name} | {median:.1f} | {worst:.1f} |")
    with connection.cursor() as cursor:
        for label, query in (
            ("ready", "SELECT queue, count(*) FROM pgjobs_job WHERE status = 'ready' GROUP BY 1"),
            (
                "running",
                "SELECT queue, count(*) FROM pgjobs_job WHERE status = 'running' "
                "AND lease_expires_at IS NOT NULL GROUP BY 1",
            ),
        ):
            cursor.execute("EXPLAIN (COSTS OFF) " + query)
            plan = " / ".join(line.strip() for (line,) in cursor.fetchall())
            print(f"\nplan of the {label} counts: {plan}")


if __name__ == "__main__":
    main()
