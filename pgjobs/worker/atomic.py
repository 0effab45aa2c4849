"""Atomic jobs' runs: the job's function inside a transaction on the jobs'
database, whose last statement records the job's success only if this attempt
still holds its lease; a job that lost it (rescued, timed out, handed back)
rolls back, so its writes and its success commit together or not at all.

Runs in the slot thread, on that thread's own connection: the worker's main
thread heartbeats, claims and records on its connection meanwhile, and nothing
here locks the job's row before the end. No state: one ``AtomicRunner`` per
worker, called from any slot.
"""

import logging

from ..serialization import encode_result

logger = logging.getLogger("pgjobs")


class _LeaseLost(Exception):
    """Raised inside the job's transaction to roll it back."""


class AtomicRunner:
    """Runs atomic jobs for one worker over its store (``supports_atomic_jobs``)."""

    def __init__(self, store, worker_id):
        self.store = store
        self.worker_id = worker_id

    def run(self, job, call):
        """Run ``call()`` (the job's function) in the job's transaction and record
        its success there. Returns ``(True, encoded result)`` when both committed,
        ``(False, None)`` when the lease was lost and everything rolled back; an
        error of the job (or of recording it) rolls back and propagates."""
        store = self.store
        try:
            with store.job_transaction():
                result = encode_result(call())
                if not store.finish_in_transaction(self.worker_id, job.id, job.attempts, result):
                    raise _LeaseLost
        except _LeaseLost:
            logger.warning(
                "job %s %s lost its lease before it committed (attempt %d/%d); "
                "its writes were rolled back",
                job.id,
                job.func,
                job.attempts,
                job.max_attempts,
            )
            return False, None
        return True, result
