"""The chancy jobs. A worker imports a job's function by its path
(``chancy_bench.jobs.noop``); this module needs no Django. ``async def`` jobs
run on the worker's event loop with chancy's AsyncExecutor, the cheapest way it
runs a job (its default, the ProcessExecutor, starts a process pool).
"""

from bench_record import record_start
from chancy import job


@job(queue="default")
async def noop(n=None):
    """The no-op; ``n`` is the argument of the "distinct" bulk enqueue, unused."""
    return None


@job(queue="default")
async def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)
