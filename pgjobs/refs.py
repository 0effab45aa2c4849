"""``JobRef``: what ``background.enqueue`` returns, a handle on one job; and
``BatchRef``, what ``background.batch`` returns, a handle on a batch of jobs.

A ref holds a snapshot of the job (``JobInfo``) and, for a stored job, the
backend that stored it, which ``refresh()`` and ``cancel()`` ask again (a
backend with ``tracks_jobs``); a job run in-band has no backend to ask.
"""

import time
import typing

from asgiref.sync import sync_to_async

from .exceptions import BatchNotFound, JobFailed, JobNotFinished, JobNotFound
from .records import CANCELLED, FINISHED_STATUSES, SUCCEEDED, JobInfo
from .serialization import decode_result


class JobRef:
    """A handle on an enqueued job.

    ``status`` and the other fields are a snapshot taken when the ref was made
    or last refreshed; ``refresh()`` reads the job again from its backend.
    """

    __slots__ = ("_info", "_backend")  # a bulk enqueue makes one per job

    def __init__(self, info: JobInfo, backend=None):
        self._info = info
        self._backend = backend

    def __repr__(self):
        return f"<JobRef {self.id} {self.func} {self.status}>"

    def __eq__(self, other):
        return isinstance(other, JobRef) and other.id == self.id and self.id is not None

    def __hash__(self):
        return hash(self.id)

    id = property(lambda self: self._info.id)
    func = property(lambda self: self._info.func)
    queue = property(lambda self: self._info.queue)
    status = property(lambda self: self._info.status)
    priority = property(lambda self: self._info.priority)
    run_at = property(lambda self: self._info.run_at)
    attempts = property(lambda self: self._info.attempts)
    created_at = property(lambda self: self._info.created_at)
    started_at = property(lambda self: self._info.started_at)
    finished_at = property(lambda self: self._info.finished_at)

    @property
    def is_finished(self):
        return self._info.status in FINISHED_STATUSES

    @property
    def error(self):
        """The last error: a dict with ``type``, ``message`` and ``traceback``, or None."""
        return self._info.error

    @property
    def result(self):
        """The job's return value once it succeeded.

        Raises ``JobNotFinished`` while it is ready or running, and ``JobFailed``
        when it failed or was cancelled (like ``concurrent.futures.Future``).
        """
        status = self._info.status
        if status == SUCCEEDED:
            return decode_result(self._info.result)
        if status in FINISHED_STATUSES:
            message = self._info.error["message"] if self._info.error else status
            raise JobFailed(f"job {self.id} {status}: {message}", self._info.error)
        raise JobNotFinished(f"job {self.id} is {status}; call wait() or refresh() later")

    def refresh(self):
        """Read the job again from the backend; returns ``self``."""
        if self._backend is None:  # in-band jobs are final when the ref is made
            return self
        info = self._backend.get_job(self.id)
        if info is None:
            raise JobNotFound(f"job {self.id} no longer exists (pruned or deleted)")
        self._info = info
        return self

    async def arefresh(self):
        return await sync_to_async(self.refresh, thread_sensitive=True)()

    def wait(self, timeout=None, *, interval=0.05):
        """Block until the job is finished; return ``self``.

        Raises ``TimeoutError`` if it is not finished after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(interval, 0.01)
        while not self.refresh().is_finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} still {self.status} after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, interval)
        return self

    def cancel(self):
        """Cancel the job if it has not started; ask it to stop if it is running.

        Returns True when the job was ready and is now cancelled.
        """
        if self._backend is None or not self._backend.tracks_jobs:
            return False
        cancelled = self._backend.cancel_job(self.id)
        self.refresh()
        return cancelled or self.status == CANCELLED


class Progress(typing.NamedTuple):
    """How far a batch has come: ``done`` of its ``total`` jobs have finished
    (succeeded, failed for good or cancelled)."""

    done: int
    total: int

    @property
    def fraction(self):
        """``done / total``, from 0.0 to 1.0."""
        return self.done / self.total if self.total else 1.0


class BatchRef:
    """A handle on a batch: jobs enqueued together (``background.batch``).

    ``id``, ``total``, ``description`` and the callbacks' ids never change.
    ``progress()``, ``counts()`` and ``is_finished()`` read the batch again
    from the backend each time they are called, so they can be polled; the
    other fields (``pending``, ``succeeded``, ``failed``, ``cancelled``,
    ``finished_at``) are the snapshot of the last read (``refresh()``).
    ``jobs`` holds the refs of the batch's jobs, in the order given, when the
    ref comes from ``background.batch``; ``job_refs()`` reads them again.
    """

    def __init__(self, info, backend, jobs=None):
        self._info = info
        self._backend = backend
        self.jobs = jobs

    def __repr__(self):
        return f"<BatchRef {self.id} {self._info.done}/{self.total}>"

    def __eq__(self, other):
        return isinstance(other, BatchRef) and other.id == self.id

    def __hash__(self):
        return hash(("batch", self.id))

    id = property(lambda self: self._info.id)
    description = property(lambda self: self._info.description)
    total = property(lambda self: self._info.total)
    pending = property(lambda self: self._info.pending)
    succeeded = property(lambda self: self._info.succeeded)
    failed = property(lambda self: self._info.failed)
    cancelled = property(lambda self: self._info.cancelled)
    created_at = property(lambda self: self._info.created_at)
    finished_at = property(lambda self: self._info.finished_at)
    on_finish_id = property(lambda self: self._info.on_finish_id)
    on_success_id = property(lambda self: self._info.on_success_id)

    def refresh(self):
        """Read the batch again from the backend; returns ``self``."""
        info = self._backend.get_batch_info(self.id)
        if info is None:
            raise BatchNotFound(f"batch {self.id} no longer exists (deleted)")
        self._info = info
        return self

    async def arefresh(self):
        return await sync_to_async(self.refresh, thread_sensitive=True)()

    def progress(self):
        """``Progress(done, total)``, read now."""
        info = self.refresh()._info
        return Progress(info.done, info.total)

    def counts(self):
        """``{status: number of the batch's jobs}`` for every status, read now.
        Finished jobs are counted when they finish, so pruning them later does
        not change these numbers; a job waiting to be retried is ``ready``."""
        return dict(self.refresh()._info.counts)

    def is_finished(self):
        """Whether every job of the batch has finished, read now."""
        return self.refresh()._info.is_finished

    def wait(self, timeout=None, *, interval=0.1):
        """Block until every job of the batch has finished; return ``self``.
        Raises ``TimeoutError`` after ``timeout`` seconds. (The callbacks are
        jobs of their own: wait on ``on_finish()`` or ``on_success()`` for them.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(interval, 0.01)
        while not self.is_finished():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"batch {self.id} has {self.pending} of {self.total} jobs unfinished "
                    f"after {timeout} s"
                )
            time.sleep(delay)
            delay = min(delay * 2, interval)
        return self

    def on_finish(self):
        """The ``JobRef`` of the job run when every job has finished, or None."""
        return self._callback(self.on_finish_id)

    def on_success(self):
        """The ``JobRef`` of the job run when every job succeeded, or None."""
        return self._callback(self.on_success_id)

    def _callback(self, job_id):
        return None if job_id is None else self._backend.get_ref(job_id)

    def job_refs(self):
        """``JobRef``s of the batch's jobs still stored (finished jobs are pruned
        after ``KEEP_SUCCEEDED``/``KEEP_FAILED``), by id, read now."""
        return [JobRef(info, self._backend) for info in self._backend.batch_jobs(self.id)]

    def cancel(self):
        """Cancel the batch's ready jobs and ask its running ones to stop. Returns
        how many were cancelled. Cancelled jobs count as finished: when the
        running ones end, ``on_finish`` runs, and ``on_success`` is cancelled."""
        cancelled, _ = self._backend.cancel_batch(self.id)
        self.refresh()
        return cancelled
