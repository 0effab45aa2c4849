"""The worker: claims jobs from a store, runs them, records their outcomes.

A package of small parts, each with one job:

- ``worker.py``: ``Worker``, which builds the parts, owns the main loop (the
  main thread) and starts and stops.
- ``build.py``: ``build_worker``, a ``Worker`` for a storing backend with its
  pruner and scheduler; what the management commands run.
- ``policy.py``: the claim policy (claim size, prefetch, poll back-off, idle
  timeouts), pure code over a clock.
- ``executor.py``: runs jobs under one concurrency budget, sync jobs in slot
  threads that exist while needed, async jobs on one event loop thread.
- ``recorder.py``: stores outcomes, successes batched with the next claim,
  failures through the retry policy.
- ``wakeups.py``: what wakes the main thread (``Alarm``) and reads the store's
  wake-ups (``Listener``).
- ``duties.py``: periodic duties (heartbeat, rescue, ranks, pruning, schedules, summary).
- ``pruning.py``: the pruner, which deletes finished jobs past their retention.
- ``shutdown.py``: signals, the grace period, handing back unfinished jobs.
- ``connections.py``: the database connections of the threads that run jobs.
"""

from .build import DEFAULT_PREFETCH, build_worker
from .connections import tidy_connections
from .duties import Duty
from .executor import Outcome
from .policy import MAX_CONCURRENCY, ClaimPolicy
from .worker import Worker, WorkerStats, make_worker_id

__all__ = [
    "DEFAULT_PREFETCH",
    "MAX_CONCURRENCY",
    "ClaimPolicy",
    "Duty",
    "Outcome",
    "Worker",
    "WorkerStats",
    "build_worker",
    "make_worker_id",
    "tidy_connections",
]
