"""pgjobs side of the benchmark: the jobs and how to enqueue them.

Every ``<system>_bench/tasks.py`` exposes the same names, which driver.py calls:

* ``JOBS``: {kind: variants}, the job kinds the system can run ("noop";
  "orm", one small ORM insert; "sleep50", 50 ms of waiting) and the ways it
  can run each (e.g. "sync" and "async"); the first variant is the default.
* ``enqueue(kind, variant)``: one job, in the caller's transaction.
* ``enqueue_bulk(n, kind, variant)``: n jobs in one call of the system's bulk
  API, or ``None`` when it has none.
* ``enqueue_latency(job_no, enqueued)``: one latency probe (bench_record).

pgjobs takes plain module-level functions, so the jobs need no decorator.
``noop``, ``enqueue_noop`` and ``enqueue_noop_bulk`` keep their old names for
the scripts that use them (benchmarks/scale.py).
"""

import asyncio
import time

from bench_record import record_start
from bench_rows.models import write_row

from pgjobs import background

JOBS = {"noop": ("sync",), "orm": ("sync",), "sleep50": ("sync", "async")}
NOOP_VARIANTS = JOBS["noop"]


def noop():
    pass


def orm_write():
    write_row()


def sleep50():
    time.sleep(0.05)


async def sleep50_async():
    await asyncio.sleep(0.05)


def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)


_FUNCTIONS = {
    ("noop", "sync"): noop,
    ("orm", "sync"): orm_write,
    ("sleep50", "sync"): sleep50,
    ("sleep50", "async"): sleep50_async,
}


def enqueue(kind="noop", variant="sync"):
    background.enqueue(_FUNCTIONS[kind, variant], args=[], kwargs={})


def enqueue_bulk(n, kind="noop", variant="sync"):
    background.enqueue_many([(_FUNCTIONS[kind, variant], [], {})] * n)


def noop_numbered(job_no):
    """A no-op that takes an argument: each job of a bulk call its own."""


def distinct_batch(n, variant="sync"):
    """What a caller of ``enqueue_bulk_distinct`` has made: n jobs, each its own argument."""
    return [(noop_numbered, [job_no], {}) for job_no in range(n)]


def enqueue_bulk_distinct(batch):
    background.enqueue_many(batch)


def enqueue_noop(variant="sync"):
    enqueue("noop", variant)


def enqueue_noop_bulk(n, variant="sync"):
    enqueue_bulk(n, "noop", variant)


def enqueue_latency(job_no, enqueued):
    background.enqueue(latency_probe, args=[job_no, enqueued], kwargs={})
