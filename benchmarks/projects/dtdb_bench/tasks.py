"""django-tasks-db side of the benchmark: the jobs and how to enqueue them.

Same interface as pgjobs_bench/tasks.py. django-tasks has no bulk enqueue, so
``enqueue_bulk`` is None and only the per-job API is measured. db_worker runs
one task at a time per process, so its jobs are plain functions.
"""

import time

from bench_record import record_start
from bench_rows.models import write_row
from django_tasks import task

JOBS = {"noop": ("sync",), "orm": ("sync",), "sleep50": ("sync",)}


@task()
def noop():
    pass


@task()
def orm_write():
    write_row()


@task()
def sleep50():
    time.sleep(0.05)


@task()
def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)


_TASKS = {"noop": noop, "orm": orm_write, "sleep50": sleep50}


def enqueue(kind="noop", variant="sync"):
    _TASKS[kind].enqueue()


enqueue_bulk = None


def enqueue_latency(job_no, enqueued):
    latency_probe.enqueue(job_no, enqueued)
