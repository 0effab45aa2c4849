"""The recorder: stores the outcomes of the jobs a worker ran.

Successes are batched: they are stored with the next claim
(``store.finish_and_claim``, one round trip) or within ``RECORD_WITHIN``;
failures are stored at once, each after its own decision by the retry policy
(retry later, fail for good, or cancelled). A batch the store keeps refusing is
recorded one by one, so that one bad result does not hold up the rest.

Main thread only: it also holds ``held``, the jobs this worker claimed whose
outcome is not stored yet (heartbeats extend their leases; stopping puts them
back).
"""

import logging
import time

from ..execution import describe_error
from ..records import CANCELLED, FAILED, RETRIED, SUCCEEDED
from .telemetry import Telemetry

logger = logging.getLogger("pgjobs")
job_logger = logging.getLogger("pgjobs.jobs")  # per-job lines; failures go to pgjobs


class Recorder:
    """Stores outcomes for one worker; counts them in its ``WorkerStats``."""

    def __init__(self, store, worker_id, retry_policy, stats, *, on_retry=None, telemetry=None):
        self.store = store
        self.worker_id = worker_id
        self.retry_policy = retry_policy
        self.stats = stats
        self.on_retry = on_retry  # called with a retry's delay: no wake-up tells of it
        self.telemetry = telemetry or Telemetry(worker_id, type(self))  # signals once stored
        self.log_jobs = False  # per-job lines (pgjobs.jobs at INFO), decided once by the worker
        self.held = {}  # job id -> job, from its claim until its outcome is stored
        self.unrecorded = []  # (job, outcome) successes not stored yet
        self.first_unrecorded_at = None  # monotonic time of the oldest of them

    def hold(self, jobs):
        held = self.held
        for job in jobs:
            held[job.id] = job

    def take(self, outcomes):
        """Record failures now (each needs its own decision) and return the
        successes, which are recorded in one statement with the next claim."""
        unrecorded = self.unrecorded
        unrecorded.extend(outcomes)
        if unrecorded and self.first_unrecorded_at is None:
            self.first_unrecorded_at = time.monotonic()
        successes = []
        for job, outcome in unrecorded:
            if outcome.recorded:  # an atomic job's, committed with its writes
                self.forget([(job, outcome)])
            elif outcome.lost:  # an atomic job rolled back: whoever took it records it
                self.held.pop(job.id, None)
                self.stats.lost += 1
            elif outcome.ok:
                successes.append((job, outcome))
            else:
                # Recording a failure twice (after a store error) is harmless: the
                # store only updates jobs still running under this worker.
                self.record_failure(job, outcome)
                self.forget([(job, outcome)])
        self.unrecorded = successes
        if not self.unrecorded:
            self.first_unrecorded_at = None
        return self.unrecorded

    def results(self, successes):
        return [(job.id, outcome.result) for job, outcome in successes]

    def finish(self, successes):
        """Store successes on their own (no claim to go with them)."""
        if successes:
            self.store.finish(self.worker_id, self.results(successes))
            self.forget(successes)

    def forget(self, recorded):
        """Outcomes now stored: the jobs are no longer held."""
        if recorded is self.unrecorded:
            self.unrecorded = []
            self.first_unrecorded_at = None
        held, log_jobs = self.held, self.log_jobs
        telemetry = self.telemetry if self.telemetry.listened() else None
        succeeded = 0
        for job, outcome in recorded:
            held.pop(job.id, None)
            if outcome.ok:
                succeeded += 1
                if log_jobs:
                    job_logger.info(
                        "job %s %s succeeded in %.1f ms", job.id, job.func, outcome.seconds * 1e3
                    )
                if telemetry is not None:
                    telemetry.recorded(
                        job, SUCCEEDED, result=outcome.result, seconds=outcome.seconds
                    )
        self.stats.succeeded += succeeded

    def record_failure(self, job, outcome):
        if outcome.snooze is not None:
            self.store.snooze(self.worker_id, job.id, outcome.snooze)
            if self.on_retry is not None:
                self.on_retry(outcome.snooze)
            logger.info("job %s %s snoozed for %.2f s", job.id, job.func, outcome.snooze)
            return
        error = outcome.error
        self.stats.failed += 1
        if outcome.cancelled:
            self.store.fail(self.worker_id, job.id, error, status=CANCELLED)
            logger.info("job %s %s cancelled itself", job.id, job.func)
            self._recorded(job, CANCELLED, outcome)
            return
        if outcome.permanent or job.attempts >= job.max_attempts:
            self.store.fail(self.worker_id, job.id, error)
            self._recorded(job, FAILED, outcome)
            logger.error(
                "job %s %s failed for good (attempt %d/%d): %s: %s",
                job.id,
                job.func,
                job.attempts,
                job.max_attempts,
                error["type"],
                error["message"],
            )
            return
        delay = self.retry_policy.delay(job.attempts)
        self.store.retry(self.worker_id, job.id, error, delay)
        if self.on_retry is not None:
            self.on_retry(delay)
        self.stats.retried += 1
        self._recorded(job, RETRIED, outcome)
        logger.warning(
            "job %s %s failed (attempt %d/%d), retrying in %.2f s: %s: %s",
            job.id,
            job.func,
            job.attempts,
            job.max_attempts,
            delay,
            error["type"],
            error["message"],
        )

    def _recorded(self, job, status, outcome):
        if self.telemetry.listened():
            self.telemetry.recorded(job, status, error=outcome.error, seconds=outcome.seconds)

    def record_one_by_one(self):
        """Successes keep failing to record together: record them one at a time, so
        that one the store cannot take (a value it refuses) does not hold up the
        rest; that one is recorded as a failure with the reason."""
        for job, outcome in list(self.unrecorded):
            try:
                self.store.finish(self.worker_id, [(job.id, outcome.result)])
            except Exception as exc:
                try:
                    error = describe_error(
                        RuntimeError(f"the job's result could not be recorded: {exc}")
                    )
                    self.store.fail(self.worker_id, job.id, error)
                except Exception:
                    return  # the store itself is down: keep everything for later
                self.stats.failed += 1
                self.held.pop(job.id, None)
                self.unrecorded.remove((job, outcome))
                continue
            self.forget([(job, outcome)])
            self.unrecorded.remove((job, outcome))

    def finish_patiently(self, take):
        """Stopping: store the successes ``take()`` returns, retrying store errors
        a few times with a growing pause."""
        for attempt in range(5):
            try:
                return self.finish(take())
            except Exception as exc:
                logger.warning("pgjobs: cannot record outcomes (%s); retrying", exc)
                close_quietly(self.store)
                time.sleep(0.2 * 2**attempt)

    def release(self, jobs):
        """Put claimed jobs back, unrun (stopping)."""
        if not jobs:
            return
        ids = [job.id for job in jobs]
        try:
            self.store.release(self.worker_id, ids)
        except Exception as exc:  # their leases expire and any worker rescues them
            logger.warning("pgjobs: cannot put back %d job(s) (%s)", len(ids), exc)
            return
        for job_id in ids:
            self.held.pop(job_id, None)
        self.stats.released += len(ids)


def close_quietly(store):
    """Close the store's connections after an error; the next call reconnects."""
    try:
        store.close()
    except Exception:
        pass
