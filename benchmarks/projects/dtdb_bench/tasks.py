"""django-tasks-db side of the benchmark: the jobs and how to enqueue them.

Same interface as pgjobs_bench/tasks.py. django-tasks has no bulk enqueue, so
``enqueue_noop_bulk`` is None and only the per-job API is measured.
"""

from bench_record import record_start
from django_tasks import task

NOOP_VARIANTS = ("sync",)


@task()
def noop():
    pass


@task()
def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)


def enqueue_noop(variant="sync"):
    noop.enqueue()


enqueue_noop_bulk = None


def enqueue_latency(job_no, enqueued):
    latency_probe.enqueue(job_no, enqueued)
