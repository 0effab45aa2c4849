"""The Oban workers. Oban resolves a job's worker by its import path
(``oban_bench.jobs.Noop``), so this module is what the worker imports; it needs
no Django. ``async def process`` runs on the worker's event loop (a sync
``process`` would go to a thread), the cheapest way Oban runs a job.
"""

from bench_record import record_start
from oban import worker


@worker(queue="default")
class Noop:
    async def process(self, job):
        return None


@worker(queue="default")
class LatencyProbe:
    async def process(self, job):
        record_start(job.args["job_no"], job.args["enqueued"])
