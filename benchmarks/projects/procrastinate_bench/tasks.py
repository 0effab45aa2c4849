"""Procrastinate side of the benchmark: the jobs and how to enqueue them.

Same interface as pgjobs_bench/tasks.py. Procrastinate runs ``async def``
tasks on its event loop and sync ones in a thread (asyncio's default
executor), so the no-op and the 50 ms sleep come in both forms and the harness
keeps whichever is faster (its best setting); the ORM write is sync, as Django
ORM code usually is. Tasks take keyword arguments only; ``batch_defer`` is its
bulk API.
"""

import asyncio
import time

from bench_record import record_start
from bench_rows.models import write_row
from procrastinate.contrib.django import app

JOBS = {"noop": ("sync", "async"), "orm": ("sync",), "sleep50": ("sync", "async")}


@app.task(name="noop")
def noop():
    pass


@app.task(name="noop_async")
async def noop_async():
    pass


@app.task(name="orm_write")
def orm_write():
    write_row()


@app.task(name="sleep50")
def sleep50():
    time.sleep(0.05)


@app.task(name="sleep50_async")
async def sleep50_async():
    await asyncio.sleep(0.05)


@app.task(name="latency_probe")
def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)


_TASKS = {
    ("noop", "sync"): noop,
    ("noop", "async"): noop_async,
    ("orm", "sync"): orm_write,
    ("sleep50", "sync"): sleep50,
    ("sleep50", "async"): sleep50_async,
}


def enqueue(kind="noop", variant="sync"):
    _TASKS[kind, variant].defer()


def enqueue_bulk(n, kind="noop", variant="sync"):
    _TASKS[kind, variant].batch_defer(*({} for _ in range(n)))


def enqueue_latency(job_no, enqueued):
    latency_probe.defer(job_no=job_no, enqueued=enqueued)
