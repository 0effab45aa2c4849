"""pgjobs side of the benchmark: the jobs and how to enqueue them.

Every ``<system>_bench/tasks.py`` exposes the same names, which driver.py calls:
``NOOP_VARIANTS``, ``enqueue_noop(variant)``, ``enqueue_noop_bulk(n, variant)``
(or ``None`` when the system has no bulk API) and ``enqueue_latency(job_no, t)``.
pgjobs takes plain module-level functions, so the jobs need no decorator.
"""

from bench_record import record_start

from pgjobs import background

NOOP_VARIANTS = ("sync",)


def noop():
    pass


def latency_probe(job_no, enqueued):
    record_start(job_no, enqueued)


def enqueue_noop(variant="sync"):
    background.enqueue(noop, args=[], kwargs={})


def _enqueue_noop_bulk(n, variant="sync"):
    background.enqueue_many([(noop, [], {})] * n)


# enqueue_many is in the design but may land after enqueue; measure it when present.
enqueue_noop_bulk = _enqueue_noop_bulk if hasattr(background, "enqueue_many") else None


def enqueue_latency(job_no, enqueued):
    background.enqueue(latency_probe, args=[job_no, enqueued], kwargs={})
