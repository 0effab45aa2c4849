"""Celery side of the benchmark: ``@app.task`` functions and ``.delay()``.

Same names as every ``<system>_bench/tasks.py`` (see ``pgjobs_bench/tasks.py``);
only the no-op kind is measured on Redis.
"""

from bench_record import record_start

from celery_bench.celery import app

JOBS = {"noop": ("sync",)}


@app.task
def noop():
    pass


@app.task
def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)


def enqueue(kind="noop", variant="sync"):
    noop.delay()


enqueue_bulk = None  # Celery has no bulk enqueue


def enqueue_latency(job_no, enqueued):
    latency_probe.delay(job_no, enqueued)
