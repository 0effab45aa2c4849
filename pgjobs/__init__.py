"""pgjobs: background jobs for Django and Wagtail, stored in the site's own database.

The API (Wagtail RFC 72) lives here::

    from pgjobs import background
    ref = background.enqueue(send_report, args=[42], kwargs={"fmt": "csv"}, priority=10)

``PGJOBS = {"BACKEND": ..., "OPTIONS": {...}}`` chooses the backend; the default,
``pgjobs.backends.ImmediateBackend``, runs jobs in-band as a direct call would.
"""

# Registers the system checks on import, not only from the app's ready(): a site that
# uses pgjobs but left "pgjobs" out of INSTALLED_APPS then hears so (pgjobs.E005).
from . import checks as _checks  # noqa: F401
from .atomic import atomic_job
from .backends.base import BaseJobBackend
from .exceptions import (
    BatchNotFound,
    DependencyFailed,
    InvalidBackend,
    InvalidJob,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    NotSupported,
    PgJobsError,
    Snooze,
    WorkerLost,
)
from .execution import JobContext, current_job
from .handler import background
from .refs import BatchRef, JobRef, Progress

__all__ = [
    "BaseJobBackend",
    "BatchNotFound",
    "BatchRef",
    "DependencyFailed",
    "InvalidBackend",
    "InvalidJob",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobNotFinished",
    "JobNotFound",
    "JobRef",
    "NotSupported",
    "PgJobsError",
    "Progress",
    "Snooze",
    "WorkerLost",
    "atomic_job",
    "background",
    "current_job",
]
