"""The jobs dashboard's cost with a million retained rows: response time and queries.

Creates a PostgreSQL database of its own (dropped afterwards), fills it with
``--rows`` finished jobs spread over the last day (90 % succeeded, 9 % failed, 1 %
cancelled) plus ready and deferred ones and a day of per-minute figures, starts ``--workers`` worker processes
working through no-op jobs that a thread keeps enqueuing, and meanwhile requests
the Django admin's dashboard (the last hour, the last day, and the fragment the page
refreshes with) ``--requests`` times each, turn about::

    python benchmarks/dashboard.py                      # 1,000,000 rows, 2 workers
    python benchmarks/dashboard.py --rows 100000 --workers 0 --requests 10

Prints, per page: the median, p95 and worst response time, the SQL time within it,
and the number of queries. Uses the test suite's settings, keeping every finished job
(``benchmarks/dashboard_settings.py``).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished jobs kept")
    parser.add_argument("--requests", type=int, default=30, help="requests per page")
    parser.add_argument("--workers", type=int, default=2, help="worker processes under load")
    parser.add_argument("--concurrency", type=int, default=4, help="slots per worker")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    return parser.parse_args()


def setup_django(name):
    os.environ.update(
        DJANGO_SETTINGS_MODULE="benchmarks.dashboard_settings",
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
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host, "testserver", is allowed
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    call_command("migrate", verbosity=0)


def fill(rows):
    """``rows`` finished jobs over the last day, 5,000 due and 1,000 deferred ones."""
    from django.db import connection

    started = time.monotonic()
    chunk = 250_000
    with connection.cursor() as cursor:
        for first in range(0, rows, chunk):
            cursor.execute(
                """
                INSERT INTO pgjobs_job (func, queue, args, kwargs, status, priority, run_at,
                    created_at, started_at, finished_at, attempts, max_attempts, signature,
                    cancel_requested, error)
                SELECT 'tests.testapp.jobs.add', CASE WHEN n %% 3 = 0 THEN 'other' ELSE 'default' END,
                    jsonb_build_array(n, n), '{}'::jsonb,
                    CASE WHEN n %% 100 < 90 THEN 'succeeded'
                         WHEN n %% 100 < 99 THEN 'failed' ELSE 'cancelled' END,
                    0, t - interval '3 seconds', t - interval '3 seconds',
                    t - interval '1 second', t, 1, 3, '', false,
                    CASE WHEN n %% 100 BETWEEN 90 AND 98
                         THEN '{"type": "ValueError", "message": "m", "traceback": "t"}'::jsonb END
                FROM (SELECT n, now() - (n %% 86400) * interval '1 second' AS t
                      FROM generate_series(%s, %s) AS n) AS s
                """,
                [first + 1, min(rows, first + chunk)],
            )
        cursor.execute(
            """
            INSERT INTO pgjobs_job (func, queue, args, kwargs, status, priority, run_at,
                created_at, attempts, max_attempts, signature, cancel_requested)
            SELECT 'tests.testapp.jobs.add', 'other', '[]', '{}', 'ready', 0,
                now() + CASE WHEN n <= 1000 THEN interval '1 day' ELSE -interval '1 minute' END,
                now(), 0, 3, '', false
            FROM generate_series(1, 6000) AS n
            """
        )
        # The per-minute figures a busy site's workers leave for a day: every minute, both
        # queues, all 8 shards, the outcomes and three buckets each of wait and run time.
        cursor.execute(
            """
            INSERT INTO pgjobs_stat (minute, queue, shard, metric, bucket, count, total)
            SELECT date_trunc('minute', now()) - m * interval '1 minute', q, shard, metric,
                   bucket, 100, 100 * 0.05
            FROM generate_series(0, 1439) AS m,
                 unnest(ARRAY['default', 'other']) AS q,
                 generate_series(0, 7) AS shard,
                 (VALUES ('succeeded', 0), ('failed', 0), ('wait', 3), ('wait', 5), ('wait', 8),
                         ('run', 2), ('run', 4), ('run', 7)) AS f(metric, bucket)
            """
        )
        cursor.execute("ANALYZE pgjobs_job")
        cursor.execute("ANALYZE pgjobs_stat")
    print(
        f"filled {rows:,} finished rows and a day of per-minute figures (184,320 rows) "
        f"in {time.monotonic() - started:.0f} s"
    )


class Load:
    """Worker processes on queue "default", and a process that keeps no-op jobs coming
    (a process, not a thread: the measured requests must not wait for its GIL)."""

    def __init__(self, workers, concurrency, name):
        env = dict(os.environ, PGJOBS_TEST_DB_NAME=name, PYTHONPATH=str(ROOT))
        worker = [sys.executable, "-m", "django", "pgjobs_worker", "-v", "0"]
        worker += ["--queue", "default", "--concurrency", str(concurrency)]
        self.processes = [subprocess.Popen(worker, env=env, cwd=ROOT) for _ in range(workers)]
        if workers:
            feeder = [sys.executable, __file__, "--feed", name]
            self.processes.append(subprocess.Popen(feeder, env=env, cwd=ROOT))

    def close(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def feed(name):
    """Keep about 5,000 no-op jobs waiting on queue "default" until SIGTERM."""
    os.environ.update(DJANGO_SETTINGS_MODULE="benchmarks.dashboard_settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from pgjobs import background
    from pgjobs.models import Job
    from tests.testapp import jobs

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop:
        if Job.objects.filter(status="ready", queue="default").count() < 5000:
            background.enqueue_many([(jobs.noop, [], {})] * 1000, queue="default")
        else:
            time.sleep(0.05)


def measure(requests):
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    client = Client()
    client.force_login(User.objects.create(username="bench", is_staff=True, is_superuser=True))
    url = reverse("admin:pgjobs_job_dashboard")
    pages = {
        "page, last hour": {},
        "page, last day": {"window": "day"},
        "fragment (refresh)": {"fragment": "1"},
    }
    for params in pages.values():  # warm: content types, permissions, plans
        client.get(url, params)
    results = {name: [] for name in pages}
    for _ in range(requests):
        for name, params in pages.items():
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url, params)
                took = time.perf_counter() - started
            assert response.status_code == 200, response.status_code
            sql = sum(float(q["time"]) for q in queries.captured_queries)
            results[name].append((took, sql, len(queries)))
    print(f"\n{'':<22}{'median':>10}{'p95':>10}{'worst':>10}{'SQL (median)':>14}{'queries':>9}")
    for name, samples in results.items():
        times = sorted(s[0] for s in samples)
        p95 = times[max(0, int(round(0.95 * len(times))) - 1)]
        print(
            f"{name:<22}{statistics.median(times) * 1000:>8.0f}ms{p95 * 1000:>8.0f}ms"
            f"{times[-1] * 1000:>8.0f}ms{statistics.median(s[1] for s in samples) * 1000:>12.0f}ms"
            f"{max(s[2] for s in samples):>9}"
        )


def main():
    if sys.argv[1:2] == ["--feed"]:
        return feed(sys.argv[2])
    options = parse_args()
    name = f"pgjobs_bench_dashboard_{os.getpid()}"
    setup_django(name)
    load = None
    try:
        fill(options.rows)
        load = Load(options.workers, options.concurrency, name)
        time.sleep(3 if options.workers else 0)  # workers up and busy
        measure(options.requests)
        if options.workers:
            from pgjobs.models import Job

            done = Job.objects.filter(func="tests.testapp.jobs.noop", status="succeeded").count()
            print(
                f"\nunder load: {options.workers} workers × {options.concurrency} slots, "
                f"{done:,} no-op jobs finished meanwhile (each then a retained row too)"
            )
    finally:
        if load:
            load.close()
        if not options.keep:
            from django.db import connection, connections

            connections.close_all()
            with connection._nodb_cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
