"""The PGQueuer worker: ``python -m pgqueuer run pgqueuer_bench.worker:create``.

PGQueuer 1.6 runs only ``async def`` entrypoints, on one asyncio loop per
process (uvloop when installed, as here). The factory sets Django up first, so
the jobs can use the ORM:

* ``noop``: returns.
* ``orm``: ``await BenchRow.objects.acreate(...)``, Django's async ORM, which
  runs the insert in Django's one sync thread (``sync_to_async``,
  thread-sensitive); ``orm_thread`` does the same sync insert with
  ``asyncio.to_thread`` instead, in the loop's default thread pool (one
  persistent Django connection per pool thread).
* ``sleep50``: ``await asyncio.sleep(0.05)``.
* ``latency_probe``: bench_record.record_start.

The factory yields a bare ``QueueManager`` (no ``SchedulerManager``: nothing
here is scheduled) on one connection: asyncpg (``AsyncpgDriver``, what
PGQueuer's README starts with and its CLI tries first) or psycopg
(``PsycopgDriver`` on an ``AsyncConnection`` in autocommit mode).
"""

import asyncio
import contextlib
import json

import django


@contextlib.asynccontextmanager
async def _connect(driver, dsn):
    """PGQueuer's Queries on one connection of the chosen driver."""
    from pgqueuer.queries import Queries

    if driver == "asyncpg":
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            yield Queries.from_asyncpg_connection(conn)
        finally:
            await conn.close()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            yield Queries.from_psycopg_connection(conn)


@contextlib.asynccontextmanager
async def create(driver="asyncpg"):
    django.setup()

    from bench_record import record_start
    from bench_rows.models import awrite_row, write_row
    from django.conf import settings
    from pgqueuer import QueueManager

    db = settings.DATABASES["default"]
    dsn = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    async with _connect(driver, dsn) as queries:
        qm = QueueManager(queries)

        @qm.entrypoint("noop")
        async def noop(job):
            pass

        @qm.entrypoint("orm")
        async def orm(job):
            await awrite_row()

        @qm.entrypoint("orm_thread")
        async def orm_thread(job):
            await asyncio.to_thread(write_row)

        @qm.entrypoint("sleep50")
        async def sleep50(job):
            await asyncio.sleep(0.05)

        @qm.entrypoint("latency_probe")
        async def latency_probe(job):
            record_start(*json.loads(job.payload))

        yield qm
