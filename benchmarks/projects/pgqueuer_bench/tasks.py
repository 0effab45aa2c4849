"""PGQueuer side of the benchmark: how jobs are enqueued (driver.py's interface,
see ``pgjobs_bench/tasks.py``). The jobs themselves are in ``worker.py``.

PGQueuer's synchronous enqueue API (``SyncQueries``) runs its queries through a
driver. Here the driver executes them on Django's own psycopg connection, so an
enqueue is one statement in autocommit mode and joins the caller's
``transaction.atomic()`` like the other systems' enqueues; PGQueuer's
``SyncPsycopgDriver`` would insist on an autocommit connection of its own.
``enqueue_bulk`` is one ``SyncQueries.enqueue`` call with lists, its bulk form.

Job kinds are entrypoint names; a variant picks another entrypoint for the
same work (``worker.py``).
"""

import json

from django.db import connection
from pgqueuer.queries import SyncQueries
from psycopg import RawCursor
from psycopg.rows import dict_row

JOBS = {"noop": ("async",), "orm": ("async", "thread"), "sleep50": ("async",)}
ENTRYPOINTS = {
    ("noop", "async"): "noop",
    ("orm", "async"): "orm",
    ("orm", "thread"): "orm_thread",
    ("sleep50", "async"): "sleep50",
}


class DjangoConnectionDriver:
    """PGQueuer's ``SyncDriver`` protocol on Django's database connection."""

    def fetch(self, query, *args):
        connection.ensure_connection()
        cursor = RawCursor(connection.connection, row_factory=dict_row)
        cursor.execute(query, args or None)
        return cursor.fetchall()


_queries = SyncQueries(DjangoConnectionDriver())


def enqueue(kind="noop", variant="async"):
    _queries.enqueue(ENTRYPOINTS[kind, variant], None)


def enqueue_bulk(n, kind="noop", variant="async"):
    _queries.enqueue([ENTRYPOINTS[kind, variant]] * n, [None] * n, [0] * n)


def distinct_batch(n, variant="async"):
    """What a caller of ``enqueue_bulk_distinct`` has made: each job its own payload
    (the no-op ignores it), with the entrypoint and priority lists the call takes."""
    payloads = [str(job_no).encode() for job_no in range(n)]
    return [ENTRYPOINTS["noop", variant]] * n, payloads, [0] * n


def enqueue_bulk_distinct(batch):
    _queries.enqueue(*batch)


def enqueue_latency(job_no, enqueued):
    _queries.enqueue("latency_probe", json.dumps([job_no, enqueued]).encode())
