"""RQ side of the benchmark: plain functions, enqueued through django-rq's queue.

Same names as every ``<system>_bench/tasks.py`` (see ``pgjobs_bench/tasks.py``);
only the no-op kind is measured on Redis.
"""

import functools

from bench_record import record_start

JOBS = {"noop": ("sync",)}


def noop():
    pass


def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)


@functools.cache
def _queue():
    import django_rq

    return django_rq.get_queue("default")


def enqueue(kind="noop", variant="sync"):
    _queue().enqueue(noop)


def enqueue_bulk(n, kind="noop", variant="sync"):
    from rq import Queue

    _queue().enqueue_many([Queue.prepare_data(noop) for _ in range(n)])


def enqueue_latency(job_no, enqueued):
    _queue().enqueue(latency_probe, job_no, enqueued)
