"""``DatabaseBackend``: jobs stored in the site's own database, in the ``Job`` table.

It validates and serialises a job, then hands it to the store for the database's
vendor (``pgjobs/stores/``), which owns every SQL statement. ``pgjobs_worker`` and
``pgjobs_drain`` work the same store.
"""

import datetime
import math
import numbers

from asgiref.sync import sync_to_async
from django.utils.functional import cached_property

from .. import records
from ..exceptions import InvalidBackend, JobNotFound
from ..refs import JobRef
from ..retry import RetryPolicy
from .base import BaseJobBackend, collector_paused

#: How long a succeeded job stays by default: 5 minutes. Long enough for whoever
#: enqueued it to read its result (``JobRef.wait()``, ``ref.result``, Django's
#: ``TaskResult``), short enough that the table holds minutes of history, not
#: weeks, at any rate of jobs: at 2,000 jobs/s that is 600,000 rows. (Oban's
#: pruner keeps a minute, River a day.)
DEFAULT_KEEP_SUCCEEDED = 300.0
#: How long failed and cancelled jobs stay by default: a week, for a person to see.
DEFAULT_KEEP_FAILED = 7 * 24 * 3600.0

#: The statuses each retention option covers.
SUCCEEDED_STATUSES = (records.SUCCEEDED,)
FAILED_STATUSES = (records.FAILED, records.CANCELLED)


def retention_option(options, key, default, *, allow_false):
    """``OPTIONS[key]`` (``KEEP_SUCCEEDED``, ``KEEP_FAILED``) as True (keep until
    ``pgjobs_prune`` deletes them), False (delete at once; only where
    ``allow_false``) or seconds > 0 as a float; ``InvalidBackend`` otherwise."""
    value = options.get(key, default)
    if isinstance(value, bool):
        if value or allow_false:
            return value
    elif isinstance(value, datetime.timedelta):
        if value > datetime.timedelta(0):
            return value.total_seconds()
    elif isinstance(value, numbers.Real) and 0 < value < math.inf:
        return float(value)
    accepted = "True (keep them until pgjobs_prune deletes them), "
    if allow_false:
        accepted += "False (delete each job as soon as it succeeds), "
    accepted += "or how long to keep them: a number of seconds > 0 or a datetime.timedelta"
    raise InvalidBackend(f"OPTIONS[{key!r}] must be {accepted}; not {value!r}")


def retention_rules_for(keep_succeeded, keep_failed):
    """``[(statuses, timedelta)]``: the finished jobs that expire, and after how long."""
    rules = []
    for statuses, keep in ((SUCCEEDED_STATUSES, keep_succeeded), (FAILED_STATUSES, keep_failed)):
        if not isinstance(keep, bool):
            rules.append((statuses, datetime.timedelta(seconds=keep)))
    return rules


class DatabaseBackend(BaseJobBackend):
    """Stores jobs in ``pgjobs_job`` through Django's database connections.

    OPTIONS (all optional): ``DATABASE`` (alias, default ``"default"``),
    ``QUEUES`` (default ``["default"]``; ``[]`` accepts any name), ``MAX_ATTEMPTS``
    (3), ``RETRY_DELAY`` (1 s, doubled per attempt), ``RETRY_MAX_DELAY`` (3600 s),
    ``TIMEOUT`` (seconds an attempt may take by default; none), ``LEASE_SECONDS``
    (20: how long a claim lasts without a heartbeat), ``POLL_INTERVAL`` (the
    store's default), ``CHANNEL`` (Postgres NOTIFY channel, ``"pgjobs"``),
    ``KEEP_SUCCEEDED`` (how long succeeded jobs stay: 300 s; a number of seconds
    or a timedelta, True until pruned by hand, False not at all),
    ``KEEP_FAILED`` (the same for failed and cancelled jobs: 7 days; True
    until pruned by hand). Workers delete jobs past these (``retention_rules``).
    """

    stores_jobs = True

    option_names = {
        "DATABASE",
        "QUEUES",
        "MAX_ATTEMPTS",
        "RETRY_DELAY",
        "RETRY_MAX_DELAY",
        "TIMEOUT",
        "LEASE_SECONDS",
        "POLL_INTERVAL",
        "CHANNEL",
        "KEEP_SUCCEEDED",
        "KEEP_FAILED",
    }

    def __init__(self, options):
        super().__init__(options)
        # Nothing here touches the database or the app registry: Django's tasks
        # framework may build backends while apps are still loading.
        self.alias = self.options.get("DATABASE", "default")
        self.retry_policy = RetryPolicy(
            base=self._positive_number("RETRY_DELAY", 1.0),
            cap=self._positive_number("RETRY_MAX_DELAY", 3600.0),
        )
        self.default_timeout = self._positive_number("TIMEOUT", None, allow_none=True)
        self.lease_seconds = self._positive_number("LEASE_SECONDS", 20.0)
        self.poll_interval = self._positive_number("POLL_INTERVAL", None, allow_none=True)
        self.channel = self.options.get("CHANNEL", "pgjobs")
        # True, False or seconds; the store only asks whether to keep the row at all.
        self.keep_succeeded = retention_option(
            self.options, "KEEP_SUCCEEDED", DEFAULT_KEEP_SUCCEEDED, allow_false=True
        )
        self.keep_failed = retention_option(
            self.options, "KEEP_FAILED", DEFAULT_KEEP_FAILED, allow_false=False
        )

    @cached_property
    def store(self):
        from ..stores import database_store

        return database_store(
            self.alias,
            channel=self.channel,
            lease_seconds=self.lease_seconds,
            keep_succeeded=self.keep_succeeded,
        )

    def get_store(self):
        """The store a worker works (the store interface of DESIGN.md)."""
        return self.store

    def retention_rules(self):
        """``[(statuses, timedelta)]``: finished jobs that workers delete once they
        finished longer ago than that (``KEEP_SUCCEEDED``, ``KEEP_FAILED``)."""
        return retention_rules_for(self.keep_succeeded, self.keep_failed)

    def prepare(self, func, args, kwargs, when=None, **options):
        spec = super().prepare(func, args, kwargs, when, **options)
        if spec.timeout is None:
            spec.timeout = self.default_timeout
        return spec

    # -- RFC 72 modes ------------------------------------------------------------

    def enqueue(self, func, args, kwargs, **options):
        return self._store(self.prepare(func, args, kwargs, **options))

    def defer(self, func, when, args, kwargs, **options):
        return self._store(self.prepare(func, args, kwargs, when, **options))

    def _store(self, spec):
        if spec.unique_key is not None:
            return JobRef(self.store.enqueue_unique(spec), self)
        return JobRef(self.store.enqueue(spec), self)

    async def aenqueue(self, func, args, kwargs, **options):
        return await sync_to_async(self.enqueue, thread_sensitive=True)(
            func, args, kwargs, **options
        )

    async def adefer(self, func, when, args, kwargs, **options):
        return await sync_to_async(self.defer, thread_sensitive=True)(
            func, when, args, kwargs, **options
        )

    def enqueue_many(self, jobs, **options):
        with collector_paused(len(jobs)):
            specs = self.iter_prepared(jobs, **options)
            if specs.first is not None and specs.first.unique_key is not None:
                # Each may meet an existing job. All are made first, so that an
                # invalid one stops the call before anything is stored.
                return [self._store(spec) for spec in list(specs)]
            return [JobRef(info, self) for info in self.store.enqueue_many(specs)]

    # -- refs ----------------------------------------------------------------------

    def get_job(self, job_id):
        return self.store.get(job_id)

    def get_ref(self, job_id):
        info = self.store.get(job_id)
        if info is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return JobRef(info, self)

    def cancel_job(self, job_id):
        return self.store.cancel(job_id)

    def check(self, **kwargs):
        from ..checks import database_backend_checks

        return database_backend_checks(self)
