"""``RedisBackend``: jobs stored in Redis, for sites that already run it.

It validates and serialises a job like ``DatabaseBackend``, then hands it to
``pgjobs.stores.redis.RedisStore``, which owns every Redis command. A job
enqueued inside a database transaction is pushed when that transaction
commits (``transaction.on_commit``), so a rolled-back request leaves no job.
"""

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils.functional import cached_property

from ..exceptions import InvalidBackend, JobNotFound
from ..refs import JobRef
from ..retry import RetryPolicy
from .base import BaseJobBackend, collector_paused
from .database import (
    DEFAULT_KEEP_FAILED,
    DEFAULT_KEEP_SUCCEEDED,
    retention_option,
    retention_rules_for,
)

DEFAULT_URL = "redis://127.0.0.1:6379/0"


class PendingPush:
    """Jobs enqueued in one transaction (and savepoint): written together when it
    commits (one script call), dropped with it when it rolls back.

    Their ids are handed out at once, from blocks reserved in Redis (1, 2, 4, ...
    up to 128 at a time), so that a transaction enqueueing many jobs does not pay
    a round trip for each. Ids left over are skipped, as a database sequence does.
    """

    def __init__(self, store, savepoint_ids):
        self.store = store
        self.savepoint_ids = savepoint_ids
        self.specs = []
        self.ids = []
        self._spare = []
        self._block = 1

    def add(self, specs):
        """Take ``specs`` along; return their ``JobInfo``s (ids known now)."""
        missing = len(specs) - len(self._spare)
        if missing > 0:
            self._spare += self.store.reserve_ids(max(missing, self._block))
            self._block = min(2 * self._block, 128)
        ids, self._spare = self._spare[: len(specs)], self._spare[len(specs) :]
        self.specs += specs
        self.ids += ids
        return [self.store.new_info(spec, job_id) for spec, job_id in zip(specs, ids, strict=True)]

    def __call__(self):
        # A unique job whose key another job took by commit time is not written.
        self.store.push(self.specs, self.ids)

    def holding(self, unique_key):
        for spec, job_id in zip(self.specs, self.ids, strict=True):
            if spec.unique_key == unique_key:
                return self.store.new_info(spec, job_id)
        return None


class RedisBackend(BaseJobBackend):
    """Stores jobs in Redis (redis-py: ``pip install pgjobs[redis]``).

    OPTIONS (all optional): ``URL`` (``"redis://127.0.0.1:6379/0"``), ``PREFIX``
    (``"pgjobs"``: every key starts with it), ``CONNECTION_OPTIONS`` (passed to
    ``redis.Redis.from_url``), ``QUEUES``, ``MAX_ATTEMPTS``, ``RETRY_DELAY``,
    ``RETRY_MAX_DELAY``, ``TIMEOUT``, ``LEASE_SECONDS``, ``POLL_INTERVAL``,
    ``KEEP_SUCCEEDED`` (300 s) and ``KEEP_FAILED`` (7 days) as for
    ``DatabaseBackend``, ``RESULT_TTL`` (the older option: both retentions at
    once, ``None`` meaning True; ``KEEP_SUCCEEDED``/``KEEP_FAILED`` given beside
    it win), ``DATABASE`` (the Django database whose transactions hold enqueues
    back until commit: ``"default"``; ``None`` pushes at once).

    Retention is Redis's own key expiry where it can be: every finished job's
    key expires after the longest finite retention (``result_ttl``), and
    workers delete the jobs of a shorter one (``retention_rules``) sooner.
    """

    stores_jobs = True

    option_names = {
        "URL",
        "PREFIX",
        "CONNECTION_OPTIONS",
        "QUEUES",
        "MAX_ATTEMPTS",
        "RETRY_DELAY",
        "RETRY_MAX_DELAY",
        "TIMEOUT",
        "LEASE_SECONDS",
        "POLL_INTERVAL",
        "RESULT_TTL",
        "KEEP_SUCCEEDED",
        "KEEP_FAILED",
        "DATABASE",
    }

    def __init__(self, options):
        super().__init__(options)
        # Nothing here connects: Django may build backends while apps load.
        self.url = self.options.get("URL", DEFAULT_URL)
        if not isinstance(self.url, str) or not self.url:
            raise InvalidBackend(f"OPTIONS['URL'] must be a redis:// URL, not {self.url!r}")
        self.prefix = self.options.get("PREFIX", "pgjobs")
        if not isinstance(self.prefix, str) or not self.prefix:
            raise InvalidBackend(
                f"OPTIONS['PREFIX'] must be a non-empty string, not {self.prefix!r}"
            )
        self.connection_options = self.options.get("CONNECTION_OPTIONS", {})
        if not isinstance(self.connection_options, dict):
            raise InvalidBackend(
                f"OPTIONS['CONNECTION_OPTIONS'] must be a dict, not {self.connection_options!r}"
            )
        self.retry_policy = RetryPolicy(
            base=self._positive_number("RETRY_DELAY", 1.0),
            cap=self._positive_number("RETRY_MAX_DELAY", 3600.0),
        )
        self.default_timeout = self._positive_number("TIMEOUT", None, allow_none=True)
        self.lease_seconds = self._positive_number("LEASE_SECONDS", 20.0)
        self.poll_interval = self._positive_number("POLL_INTERVAL", None, allow_none=True)
        self._init_retention()
        self.database = self.options.get("DATABASE", "default")
        if self.database is not None and not isinstance(self.database, str):
            raise InvalidBackend(
                f"OPTIONS['DATABASE'] must be a database alias or None, not {self.database!r}"
            )

    def _init_retention(self):
        """``keep_succeeded``, ``keep_failed`` (True, False or seconds, as for
        ``DatabaseBackend``) and ``result_ttl``, the expiry every finished job's key
        gets: the longest finite retention (None when one is True: no expiry)."""
        keep_succeeded, keep_failed = DEFAULT_KEEP_SUCCEEDED, DEFAULT_KEEP_FAILED
        if "RESULT_TTL" in self.options:
            ttl = self._positive_number("RESULT_TTL", None, allow_none=True)
            keep_succeeded = keep_failed = True if ttl is None else ttl
        self.keep_succeeded = retention_option(
            self.options, "KEEP_SUCCEEDED", keep_succeeded, allow_false=True
        )
        self.keep_failed = retention_option(
            self.options, "KEEP_FAILED", keep_failed, allow_false=False
        )
        kept = [keep for keep in (self.keep_succeeded, self.keep_failed) if keep is not False]
        self.result_ttl = None if any(keep is True for keep in kept) else max(kept)

    def retention_rules(self):
        """``[(statuses, timedelta)]`` that workers enforce: the retentions shorter
        than the keys' own expiry (``result_ttl``), which Redis enforces itself."""
        return [
            (statuses, age)
            for statuses, age in retention_rules_for(self.keep_succeeded, self.keep_failed)
            if self.result_ttl is None or age.total_seconds() < self.result_ttl
        ]

    @cached_property
    def store(self):
        try:
            from ..stores.redis import RedisStore
        except ImportError as exc:
            raise InvalidBackend(
                f"RedisBackend needs redis-py: pip install 'pgjobs[redis]' ({exc})"
            ) from None
        return RedisStore(
            self.url,
            prefix=self.prefix,
            lease_seconds=self.lease_seconds,
            result_ttl=self.result_ttl,
            keep_succeeded=self.keep_succeeded,
            connection_options=self.connection_options,
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
        return self._push([self.prepare(func, args, kwargs, **options)])[0]

    def defer(self, func, when, args, kwargs, **options):
        return self._push([self.prepare(func, args, kwargs, when, **options)])[0]

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
            specs = self.prepare_many(jobs, **options)
            if not specs:
                return []
            return self._push(specs)

    def _push(self, specs):
        """Write the jobs now or, inside a transaction, reserve their ids now and
        write them when it commits (nothing at all if it rolls back)."""
        store = self.store
        if not self._in_transaction():
            return [JobRef(info, self) for info in store.push(specs)]
        refs = [None] * len(specs)
        pending = []
        for n, spec in enumerate(specs):
            holder = self._unique_holder(spec.unique_key) if spec.unique_key else None
            if holder is not None:
                refs[n] = JobRef(holder, self)
            else:
                pending.append((n, spec))
        if pending:
            infos = self._pending_push().add([spec for _, spec in pending])
            for (n, _), info in zip(pending, infos, strict=True):
                refs[n] = JobRef(info, self)
        return refs

    def _pending_push(self):
        """The ``PendingPush`` jobs enqueued now join: the transaction's latest
        on-commit callback when it is ours and of the same savepoint (so that it
        shares their fate), else a new one."""
        connection = transaction.get_connection(self.database)
        savepoint_ids = set(connection.savepoint_ids)
        callbacks = getattr(connection, "run_on_commit", None)
        if callbacks:
            last = callbacks[-1]
            if (
                isinstance(last, tuple)
                and len(last) >= 2
                and isinstance(last[1], PendingPush)
                and last[1].store is self.store
                and last[0] == savepoint_ids
            ):
                return last[1]
        push = PendingPush(self.store, savepoint_ids)
        transaction.on_commit(push, using=self.database)
        return push

    def _unique_holder(self, unique_key):
        """The job holding ``unique_key``: one waiting for this transaction to
        commit, or a ready or running one in Redis."""
        connection = transaction.get_connection(self.database)
        for _, callback, *_ in getattr(connection, "run_on_commit", ()):
            if isinstance(callback, PendingPush) and callback.store is self.store:
                info = callback.holding(unique_key)
                if info is not None:
                    return info
        return self.store.active_holder(unique_key)

    def _in_transaction(self):
        """True inside an ``atomic()`` block that will commit or roll back.

        The transaction a test case wraps each test in never commits, so it is
        not counted (as Django's ``durable`` check does not count it); code
        under test pushes its jobs at once, as outside a transaction.
        """
        if self.database is None or self.database not in settings.DATABASES:
            return False
        connection = transaction.get_connection(self.database)
        if not connection.in_atomic_block:
            return False
        return not all(
            getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
        )

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
        from django.core import checks

        try:
            import redis  # noqa: F401
        except ImportError:
            return [
                checks.Error(
                    "RedisBackend needs redis-py, which is not installed.",
                    hint="pip install 'pgjobs[redis]'",
                    id="pgjobs.E012",
                )
            ]
        return []
