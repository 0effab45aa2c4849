"""pgjobs on Redis runs the very jobs of pgjobs on PostgreSQL (``pgjobs_bench.tasks``).

Only the no-op kind is measured on Redis (the job kinds compare the database queues).
"""

from pgjobs_bench.tasks import (  # noqa: F401
    enqueue,
    enqueue_bulk,
    enqueue_latency,
    latency_probe,
    noop,
)

JOBS = {"noop": ("sync",)}
