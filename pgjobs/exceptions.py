"""The exceptions pgjobs raises, importable from ``pgjobs`` itself."""

from django.core.exceptions import ImproperlyConfigured


class PgJobsError(Exception):
    """Base class of every pgjobs error."""


class InvalidJob(PgJobsError, ValueError):
    """A job cannot be enqueued as given; nothing was written.

    The message says what was wrong and how to fix it.
    """


class NotSupported(PgJobsError, NotImplementedError):
    """The configured backend does not offer this scheduling mode (RFC 72)."""


class InvalidBackend(PgJobsError, ImproperlyConfigured):
    """``PGJOBS["BACKEND"]`` or its ``OPTIONS`` cannot be used."""


class JobNotFound(PgJobsError, LookupError):
    """No job with that id exists (it may have been pruned)."""


class BatchNotFound(PgJobsError, LookupError):
    """No batch with that id exists."""


class JobNotFinished(PgJobsError):
    """The job has no result yet: it is still ready or running."""


class JobFailed(PgJobsError):
    """The job ended without a result: it failed or was cancelled.

    ``error`` holds the stored error (``type``, ``message``, ``traceback``) when
    there is one.
    """

    def __init__(self, message, error=None):
        super().__init__(message)
        self.error = error


class JobCancelled(PgJobsError):
    """Raise this from a job that saw ``current_job().cancel_requested``: the job
    ends ``cancelled`` instead of failed, and is not retried."""


class Snooze(PgJobsError):
    """Raise ``Snooze(seconds)`` from a job to put it back to ready ``seconds``
    from now without using up an attempt (an API asking to come back later, a
    resource not there yet). Its error is not recorded."""

    def __init__(self, seconds):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"Snooze(seconds): seconds must be a number >= 0, not {seconds!r}")
        super().__init__(f"snoozed for {seconds} s")
        self.seconds = float(seconds)


class WorkerLost(PgJobsError):
    """The worker running a job stopped heartbeating (killed, its host lost) and
    its lease ran out: the error a rescue records for that attempt. Stored by its
    path, ``pgjobs.exceptions.WorkerLost``; never raised by pgjobs itself."""


class StoreNotSetUp(PgJobsError, ImproperlyConfigured):
    """The store cannot be used as configured, and waiting will not help: its
    database does not exist. Raised by a worker at start-up, with what to do."""


class DependencyFailed(PgJobsError):
    """The error stored on a job cancelled because what it depended on did not
    succeed: a chained job whose previous job failed or was cancelled, or a
    batch's ``on_success`` job when a job of the batch did not succeed. Stored
    by its path, ``pgjobs.exceptions.DependencyFailed``; never raised by pgjobs."""
