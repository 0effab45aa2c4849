"""pgjobs on Redis runs the very jobs of pgjobs on PostgreSQL (``pgjobs_bench.tasks``)."""

from pgjobs_bench.tasks import (  # noqa: F401
    NOOP_VARIANTS,
    enqueue_latency,
    enqueue_noop,
    enqueue_noop_bulk,
    latency_probe,
    noop,
)
