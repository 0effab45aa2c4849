"""``JobRef``: what ``background.enqueue`` returns, a handle on one job.

A ref holds a snapshot of the job (``JobInfo``) and, for a stored job, the
backend that stored it, which ``refresh()`` and ``cancel()`` ask again (a
backend with ``stores_jobs``); a job run in-band has no backend to ask.
"""

import time

from asgiref.sync import sync_to_async

from .exceptions import JobFailed, JobNotFinished, JobNotFound
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
        if self._backend is None or not self._backend.stores_jobs:
            return False
        cancelled = self._backend.cancel_job(self.id)
        self.refresh()
        return cancelled or self.status == CANCELLED
