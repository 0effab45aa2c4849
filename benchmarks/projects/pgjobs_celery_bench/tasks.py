"""pgjobs on Celery runs the very jobs of pgjobs on PostgreSQL (``pgjobs_bench.tasks``),
enqueued with ``background.enqueue``; only the no-op kind is measured."""

from pgjobs_bench.tasks import (  # noqa: F401
    enqueue,
    enqueue_bulk,
    enqueue_latency,
    latency_probe,
    noop,
)

JOBS = {"noop": ("sync",)}
