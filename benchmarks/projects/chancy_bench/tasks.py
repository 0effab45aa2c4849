"""chancy side of the benchmark: how jobs are pushed (driver.py's interface, see
``pgjobs_bench/tasks.py``). The jobs are in ``jobs.py``.

chancy's ``sync_push_many_ex(cursor, jobs)`` pushes on a cursor the caller
gives, for pushing inside the caller's own transaction: here a psycopg cursor
on Django's own connection, so a push joins ``transaction.atomic()`` as the
other systems' enqueues do. Each push is one INSERT plus one NOTIFY
(``queue.pushed``); the bulk form is one ``sync_push_many_ex`` call with a list
(one INSERT per job, one NOTIFY per queue).
"""

from django.db import connection
from psycopg.rows import dict_row

from chancy_bench.app import app
from chancy_bench.jobs import latency_probe, noop

JOBS = {"noop": ("async",)}


def _push(jobs):
    connection.ensure_connection()
    with connection.connection.cursor(row_factory=dict_row) as cursor:
        app.sync_push_many_ex(cursor, jobs)


def enqueue(kind="noop", variant="async"):
    _push([noop.job])


def enqueue_bulk(n, kind="noop", variant="async"):
    _push([noop.job] * n)


def distinct_batch(n, variant="async"):
    return [noop.job.with_kwargs(n=job_no) for job_no in range(n)]


def enqueue_bulk_distinct(batch):
    _push(batch)


def enqueue_latency(job_no, enqueued):
    _push([latency_probe.job.with_kwargs(job_no=job_no, enqueued=enqueued)])
