"""Procrastinate side of the benchmark: the jobs and how to enqueue them.

Same interface as pgjobs_bench/tasks.py. Procrastinate runs ``async def``
tasks on its event loop and sync ones in a thread, so both no-op variants are
offered and the harness keeps whichever is faster (its best setting).
Tasks take keyword arguments only; ``batch_defer`` is its bulk API.
"""

from bench_record import record_start
from procrastinate.contrib.django import app

NOOP_VARIANTS = ("sync", "async")


@app.task(name="noop")
def noop():
    pass


@app.task(name="noop_async")
async def noop_async():
    pass


@app.task(name="latency_probe")
def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)


_NOOPS = {"sync": noop, "async": noop_async}


def enqueue_noop(variant="sync"):
    _NOOPS[variant].defer()


def enqueue_noop_bulk(n, variant="sync"):
    _NOOPS[variant].batch_defer(*({} for _ in range(n)))


def enqueue_latency(job_no, enqueued):
    latency_probe.defer(job_no=job_no, enqueued=enqueued)
