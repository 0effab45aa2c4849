"""Oban side of the benchmark: how jobs are enqueued (driver.py's interface, see
``pgjobs_bench/tasks.py``). The workers are in ``jobs.py``.

Oban for Python's enqueue API is async only (``Oban.enqueue``/``enqueue_many``
on a psycopg ``AsyncConnectionPool``, or on an ``AsyncConnection`` the caller
passes). Django's connection is synchronous, so an enqueue here runs on a client
Oban (no queues: it only inserts) on its own one-connection pool, driven by one
long-lived event loop: an enqueue does not join the caller's
``transaction.atomic()`` (the "atomic" figure is one transaction per job, as for
"single"). ``enqueue_bulk`` is one ``enqueue_many`` call, its bulk form.
"""

import asyncio

from oban import Oban

from oban_bench.jobs import LatencyProbe, Noop
from oban_bench.settings import dsn

JOBS = {"noop": ("async",)}

_loop = asyncio.Runner()
_oban = None


def _client():
    global _oban
    if _oban is None:
        from psycopg_pool import AsyncConnectionPool

        async def make():
            pool = AsyncConnectionPool(dsn(), min_size=1, max_size=1, open=False)
            await pool.open()
            return Oban(pool=pool)

        _oban = _loop.run(make())
    return _oban


def enqueue(kind="noop", variant="async"):
    _loop.run(_client().enqueue(Noop.new()))


def enqueue_bulk(n, kind="noop", variant="async"):
    _loop.run(_client().enqueue_many([Noop.new() for _ in range(n)]))


def distinct_batch(n, variant="async"):
    return [Noop.new({"n": job_no}) for job_no in range(n)]


def enqueue_bulk_distinct(batch):
    _loop.run(_client().enqueue_many(batch))


def enqueue_latency(job_no, enqueued):
    _loop.run(_client().enqueue(LatencyProbe.new({"job_no": job_no, "enqueued": enqueued})))
