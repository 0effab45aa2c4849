"""``DatabaseBackend``: jobs stored in the site's own database, in the ``Job`` table.

It validates and serialises a job, then hands it to the store for the database's
vendor (``pgjobs/stores/``), which owns every SQL statement. ``pgjobs_worker`` and
``pgjobs_drain`` work the same store.
"""

from asgiref.sync import sync_to_async
from django.utils.functional import cached_property

from ..exceptions import InvalidBackend, JobNotFound
from ..refs import JobRef
from ..retry import RetryPolicy
from .base import BaseJobBackend


class DatabaseBackend(BaseJobBackend):
    """Stores jobs in ``pgjobs_job`` through Django's database connections.

    OPTIONS (all optional): ``DATABASE`` (alias, default ``"default"``),
    ``QUEUES`` (default ``["default"]``; ``[]`` accepts any name), ``MAX_ATTEMPTS``
    (3), ``RETRY_DELAY`` (1 s, doubled per attempt), ``RETRY_MAX_DELAY`` (3600 s),
    ``TIMEOUT`` (seconds an attempt may take by default; none), ``LEASE_SECONDS``
    (20: how long a claim lasts without a heartbeat), ``POLL_INTERVAL`` (the
    store's default), ``CHANNEL`` (Postgres NOTIFY channel, ``"pgjobs"``),
    ``KEEP_SUCCEEDED`` (True; False deletes a job as soon as it succeeds).
    """

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
        self.keep_succeeded = self.options.get("KEEP_SUCCEEDED", True)
        if not isinstance(self.keep_succeeded, bool):
            raise InvalidBackend(
                f"OPTIONS['KEEP_SUCCEEDED'] must be True or False, not {self.keep_succeeded!r}"
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
        specs = [self.prepare(func, args, kwargs, **options) for func, args, kwargs in jobs]
        if any(spec.unique_key is not None for spec in specs):
            return [self._store(spec) for spec in specs]  # each may meet an existing job
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
