"""``StoringBackend``: the base of every backend whose jobs are stored and run by workers.

It owns what such backends share: the options every one of them takes (queues,
retries, timeouts, leases, polling, retention), turning a call into a ``JobSpec``
and handing it to its store, refs by id (``get_job``, ``get_ref``, ``cancel_job``)
and the retention rules workers enforce. A subclass names its own options and
builds its store (``make_store()``); ``DatabaseBackend`` and ``RedisBackend`` are
such subclasses, and so is ``pgjobs.testing.InMemoryBackend``.

A job enqueued inside ``transaction.atomic()`` must not outlive a rollback. A store
whose writes join the caller's transaction (``Store.enqueues_in_transaction``, the
SQL stores) gets that for free. For any other store (Redis) this module holds the
jobs back until the transaction of ``database`` commits, through the store's
deferred-write methods (``reserve_ids``, ``new_info``, ``enqueue_many(specs,
ids=...)``, ``active_holder``): ids are handed out at once, the jobs written in one
call at commit, and dropped with a rolled-back savepoint.
"""

import contextlib
import datetime
import math
import numbers

from django.conf import settings
from django.db import transaction
from django.utils.functional import cached_property

from .. import queue_control, records
from ..exceptions import BatchNotFound, InvalidBackend, InvalidJob, JobNotFound
from ..refs import BatchRef, JobRef
from ..retry import RetryPolicy
from ..tracing import describe_enqueue, enqueue_span
from .base import (
    CALLBACK_OPTIONS,
    AsyncFromSync,
    BaseJobBackend,
    collector_paused,
    validate_description,
)

#: How long a succeeded job stays by default: 5 minutes. Long enough for whoever
#: enqueued it to read its result (``JobRef.wait()``, ``ref.result``, Django's
#: ``TaskResult``), short enough that storage holds minutes of history, not weeks,
#: at any rate of jobs: at 2,000 jobs/s that is 600,000 jobs.
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


class StoringBackend(AsyncFromSync, BaseJobBackend):
    """A backend that stores jobs for workers to run; subclasses say where.

    OPTIONS every storing backend takes (all optional): ``QUEUES`` (default
    ``["default"]``; ``[]`` accepts any name), ``MAX_ATTEMPTS`` (3),
    ``RETRY_DELAY`` (1 s, doubled per attempt), ``RETRY_MAX_DELAY`` (3600 s),
    ``TIMEOUT`` (seconds an attempt may take by default; none), ``LEASE_SECONDS``
    (20: how long a claim lasts without a heartbeat), ``POLL_INTERVAL`` (the
    store's default), ``KEEP_SUCCEEDED`` (how long succeeded jobs stay: 300 s; a
    number of seconds or a timedelta, True until pruned by hand, False not at
    all), ``KEEP_FAILED`` (the same for failed and cancelled jobs: 7 days; True
    until pruned by hand). Workers delete jobs past these (``retention_rules``).

    A subclass adds its own keys to ``option_names``, reads them in ``__init__``
    after calling this one, and builds its store in ``make_store()``. Nothing
    here connects or touches the app registry: Django's tasks framework may
    build backends while apps are still loading; the store is built on first use.
    """

    stores_jobs = True
    tracks_jobs = True
    supports_batches = True
    supports_chains = True

    option_names = frozenset(
        {
            "QUEUES",
            "MAX_ATTEMPTS",
            "RETRY_DELAY",
            "RETRY_MAX_DELAY",
            "TIMEOUT",
            "LEASE_SECONDS",
            "POLL_INTERVAL",
            "KEEP_SUCCEEDED",
            "KEEP_FAILED",
        }
    )

    #: The Django database whose transactions an enqueue joins. When the store's
    #: writes cannot join them (``enqueues_in_transaction`` False), jobs enqueued
    #: inside ``atomic()`` on it are held until it commits; None writes at once.
    database = "default"

    def __init__(self, options):
        super().__init__(options)
        self.retry_policy = RetryPolicy(
            base=self._positive_number("RETRY_DELAY", 1.0),
            cap=self._positive_number("RETRY_MAX_DELAY", 3600.0),
        )
        self.default_timeout = self._positive_number("TIMEOUT", None, allow_none=True)
        self.lease_seconds = self._positive_number("LEASE_SECONDS", 20.0)
        # None: the store's own default (``Store.default_poll_interval``).
        self.poll_interval = self._positive_number("POLL_INTERVAL", None, allow_none=True)
        keep_succeeded, keep_failed = self.default_retention()
        # True, False or seconds; the store only asks whether to keep the job at all.
        self.keep_succeeded = retention_option(
            self.options, "KEEP_SUCCEEDED", keep_succeeded, allow_false=True
        )
        self.keep_failed = retention_option(
            self.options, "KEEP_FAILED", keep_failed, allow_false=False
        )

    def default_retention(self):
        """``(keep_succeeded, keep_failed)`` when ``KEEP_SUCCEEDED``/``KEEP_FAILED``
        are not given: a subclass with an older option for them overrides this."""
        return DEFAULT_KEEP_SUCCEEDED, DEFAULT_KEEP_FAILED

    # -- the store -------------------------------------------------------------------

    def make_store(self):
        """Build this backend's ``Store`` (called once, on first use)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_store()")

    @cached_property
    def store(self):
        return self.make_store()

    def get_store(self):
        """The store workers work and every enqueue writes to."""
        return self.store

    def retention_rules(self):
        """``[(statuses, timedelta)]``: finished jobs that workers delete once they
        finished longer ago than that (``KEEP_SUCCEEDED``, ``KEEP_FAILED``)."""
        return retention_rules_for(self.keep_succeeded, self.keep_failed)

    # -- atomic jobs ---------------------------------------------------------------------

    def validate_atomic(self, atomic):
        """An atomic job needs a store in a database (``Store.supports_atomic_jobs``)
        and its writes on that database, the queue's: refused otherwise, never run
        as a plain job instead."""
        if atomic is False:
            return False
        store = self.store
        if not store.supports_atomic_jobs:
            raise InvalidJob(
                f"atomic={atomic!r}: {type(self).__name__} keeps jobs in {type(store).__name__}, "
                "outside your database, so a job's success cannot commit with its writes; "
                "use pgjobs.backends.DatabaseBackend, or enqueue with atomic=False"
            )
        if isinstance(atomic, str) and atomic != self.jobs_database:
            raise InvalidJob(
                f"atomic={atomic!r}: an atomic job runs in a transaction on the queue's "
                f"database {self.jobs_database!r}, where its success is recorded; a job "
                f"writing to {atomic!r} needs a backend with OPTIONS['DATABASE'] = {atomic!r}"
            )
        return True

    def _marking_atomic(self, write, flags):
        """``write()`` (which returns ``JobInfo``s in order) and the marking of the
        atomic ones (``flags``), in one transaction: a worker never sees an atomic
        job unmarked."""
        with transaction.atomic(using=self.database):
            infos = write()
            ids = [info.id for info, atomic in zip(infos, flags, strict=True) if atomic]
            if ids:
                self.store.mark_atomic(ids)
        return infos

    # -- RFC 72 modes --------------------------------------------------------------------

    def enqueue(self, func, args, kwargs, **options):
        with enqueue_span() as span:
            spec = self.prepare(func, args, kwargs, **options)
            describe_enqueue(span, spec)
            return self._write_one(spec)

    def defer(self, func, when, args, kwargs, **options):
        with enqueue_span() as span:
            spec = self.prepare(func, args, kwargs, when, **options)
            describe_enqueue(span, spec)
            return self._write_one(spec)

    def enqueue_many(self, jobs, **options):
        """Store many ``(func, args, kwargs)`` jobs sharing ``options``, all or none
        (one statement where the store can); return their refs in order."""
        with collector_paused(len(jobs)), enqueue_span() as span:
            specs = self.iter_prepared(jobs, **options)
            if specs.first is None:
                return []
            first = specs.first
            describe_enqueue(span, first, len(jobs))
            if (
                first.unique_key is not None
                or first.after is not None
                or self._holds_until_commit()
            ):
                # Every spec is made first, so that an invalid one stops the call
                # before anything is stored or held.
                return self._write(list(specs))
            specs.encode()  # every job's function known: which are atomic
            if specs.any_atomic:
                infos = self._marking_atomic(
                    lambda: self.store.enqueue_many(specs), specs.atomic_flags()
                )
            else:
                infos = self.store.enqueue_many(specs)
            return [JobRef(info, self) for info in infos]

    def _write(self, specs):
        """``_write_one`` for a list of specs: their refs in order."""
        if self._holds_until_commit():
            return self._hold(specs)
        return [self._write_one(spec) for spec in specs]

    def _write_one(self, spec):
        """Store one spec now, or hold it until the caller's transaction commits;
        return its ref. A spec whose ``unique_key`` a ready or running job holds
        is not written: that job's ref stands in for it."""
        store = self.store
        if not store.enqueues_in_transaction and self._in_transaction():
            return self._hold([spec])[0]
        if spec.atomic:
            # A unique job standing in for this one becomes atomic if it has not
            # started (``mark_atomic`` marks ready jobs only).
            write = store.enqueue if spec.unique_key is None else store.enqueue_unique
            return JobRef(self._marking_atomic(lambda: [write(spec)], [True])[0], self)
        if spec.unique_key is None:
            return JobRef(store.enqueue(spec), self)
        return JobRef(store.enqueue_unique(spec), self)

    # -- batches and chains ------------------------------------------------------------

    def enqueue_batch(self, jobs, *, on_finish=None, on_success=None, description="", **options):
        """Store ``(func, args, kwargs)`` jobs sharing ``options`` as one batch, all
        or none; return its ``BatchRef``. ``on_finish`` and ``on_success``: a
        function (or dotted path), or ``(func, args, kwargs)``, run as a job once
        every job has finished, or once every job has succeeded; they take the
        batch's ``queue``, ``priority``, ``max_attempts`` and ``timeout``."""
        for refused in ("unique_key", "after"):
            if options.get(refused) is not None:
                raise InvalidJob(
                    f"a batch's jobs cannot take {refused}; enqueue such jobs on their own"
                )
        if not jobs:
            raise InvalidJob("a batch needs at least one job")
        description = validate_description(description)
        shared = {name: options[name] for name in CALLBACK_OPTIONS if name in options}
        finish_spec = self._callback_spec("on_finish", on_finish, shared)
        success_spec = self._callback_spec("on_success", on_success, shared)
        with collector_paused(len(jobs)):
            specs = list(self.iter_prepared(jobs, **options))
            if self._holds_until_commit():
                return self._hold_batch(specs, finish_spec, success_spec, description)
            info, infos = self.store.enqueue_batch(specs, finish_spec, success_spec, description)
            return BatchRef(info, self, [JobRef(job, self) for job in infos])

    def _callback_spec(self, name, callback, options):
        if callback is None:
            return None
        if isinstance(callback, (tuple, list)):
            if not 1 <= len(callback) <= 3:
                raise InvalidJob(f"{name} must be a function or (func, args, kwargs)")
            func, args, kwargs = (*callback, None, None)[:3]
        else:
            func, args, kwargs = callback, None, None
        try:
            return self.prepare(func, args or [], kwargs or {}, **options)
        except InvalidJob as exc:
            raise InvalidJob(f"{name}: {exc}") from None

    def _hold_batch(self, specs, on_finish, on_success, description):
        """A batch for a store outside the transaction: ids reserved now, the batch
        written when the transaction commits (nothing if it rolls back)."""
        store = self.store
        callbacks = [spec for spec in (on_finish, on_success) if spec is not None]
        batch_id, *ids = store.reserve_ids(1 + len(specs) + len(callbacks))
        infos = [store.new_info(spec, job_id) for spec, job_id in zip(specs, ids, strict=False)]
        callback_ids = iter(ids[len(specs) :])
        counts = dict.fromkeys(records.STATUSES, 0)
        counts[records.READY] = len(specs)
        info = records.BatchInfo(
            id=batch_id,
            total=len(specs),
            pending=len(specs),
            on_finish_id=None if on_finish is None else next(callback_ids),
            on_success_id=None if on_success is None else next(callback_ids),
            counts=counts,
            description=description,
        )

        def write():
            store.enqueue_batch(
                specs, on_finish, on_success, description, batch_id=batch_id, ids=ids
            )

        transaction.on_commit(write, using=self.database)
        return BatchRef(info, self, [JobRef(job, self) for job in infos])

    def enqueue_chain(self, jobs, **options):
        """Store ``(func, args, kwargs)`` jobs each to run after the one before it
        succeeded (the first after ``options["after"]``, if given), all or none;
        return their refs in order."""
        if not jobs:
            return []
        refs = []
        previous = options.pop("after", None)
        with self._atomic():
            for func, args, kwargs in jobs:
                previous = self.enqueue(func, args, kwargs, after=previous, **options)
                refs.append(previous)
        return refs

    def _atomic(self):
        """A transaction on ``database`` (jobs held until it commits where the
        store cannot join it), or none when the backend has no database."""
        if self.database is None or self.database not in settings.DATABASES:
            return contextlib.nullcontext()
        return transaction.atomic(using=self.database)

    def get_batch_info(self, batch_id):
        """The ``BatchInfo`` of batch ``batch_id``, or None."""
        return self.store.get_batch(batch_id)

    def get_batch_ref(self, batch_id):
        """A ``BatchRef`` to batch ``batch_id``; ``BatchNotFound`` if there is none."""
        info = self.store.get_batch(batch_id)
        if info is None:
            raise BatchNotFound(f"no batch with id {batch_id!r}")
        return BatchRef(info, self)

    def batch_jobs(self, batch_id):
        """The ``JobInfo``s of the batch's jobs still stored, by id."""
        return self.store.batch_jobs(batch_id)

    def cancel_batch(self, batch_id):
        """Cancel the batch's ready jobs, ask its running ones to stop: (cancelled, asked)."""
        return self.store.cancel_batch(batch_id)

    # -- holding jobs until commit (stores outside the caller's transaction) -----------

    def _holds_until_commit(self):
        return not self.store.enqueues_in_transaction and self._in_transaction()

    def _in_transaction(self):
        """True inside an ``atomic()`` block on ``database`` that will commit or
        roll back.

        The transaction a test case wraps each test in never commits, so it is
        not counted (as Django's ``durable`` check does not count it); code
        under test writes its jobs at once, as outside a transaction.
        """
        if self.database is None or self.database not in settings.DATABASES:
            return False
        connection = transaction.get_connection(self.database)
        if not connection.in_atomic_block:
            return False
        return not all(
            getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
        )

    def _hold(self, specs):
        """Reserve the jobs' ids now and write them when the transaction commits."""
        refs = [None] * len(specs)
        pending = []
        for n, spec in enumerate(specs):
            holder = self._unique_holder(spec.unique_key) if spec.unique_key else None
            if holder is not None:
                refs[n] = JobRef(holder, self)
            else:
                pending.append((n, spec))
        if pending:
            infos = self._held_jobs().add([spec for _, spec in pending])
            for (n, _), info in zip(pending, infos, strict=True):
                refs[n] = JobRef(info, self)
        return refs

    def _held_jobs(self):
        """The ``HeldJobs`` jobs enqueued now join: the transaction's latest
        on-commit callback when it is ours and of the same savepoint (so that it
        shares their fate), else a new one."""
        connection = transaction.get_connection(self.database)
        savepoint_ids = set(connection.savepoint_ids)
        callbacks = connection.run_on_commit
        if callbacks:
            last = callbacks[-1]
            if (
                isinstance(last, tuple)
                and len(last) >= 2
                and isinstance(last[1], HeldJobs)
                and last[1].store is self.store
                and last[0] == savepoint_ids
            ):
                return last[1]
        held = HeldJobs(self.store, savepoint_ids)
        transaction.on_commit(held, using=self.database)
        return held

    def _unique_holder(self, unique_key):
        """The job holding ``unique_key``: one waiting for this transaction to
        commit, or a ready or running one in the store."""
        connection = transaction.get_connection(self.database)
        for _, callback, *_ in connection.run_on_commit:
            if isinstance(callback, HeldJobs) and callback.store is self.store:
                info = callback.holding(unique_key)
                if info is not None:
                    return info
        return self.store.active_holder(unique_key)

    # -- refs ------------------------------------------------------------------------------

    def get_job(self, job_id):
        """The ``JobInfo`` of job ``job_id``, or None."""
        return self.store.get(job_id)

    def get_ref(self, job_id):
        """A ``JobRef`` to job ``job_id``; ``JobNotFound`` if there is none."""
        info = self.store.get(job_id)
        if info is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return JobRef(info, self)

    def cancel_job(self, job_id):
        """Cancel a ready job (True); ask a running one to stop (False)."""
        return self.store.cancel(job_id)

    # -- queue control (``pgjobs/queue_control.py``) ---------------------------------------

    def pause_queue(self, queue):
        """No new job of ``queue`` starts on any worker (within about a second);
        running ones finish. Returns the ``QueueControl`` in force."""
        return queue_control.pause(self.store, queue)

    def resume_queue(self, queue):
        """Jobs of ``queue`` start again. Returns the ``QueueControl`` in force."""
        return queue_control.resume(self.store, queue)

    def limit_queue(self, queue, *, concurrency=queue_control.UNSET, rate=queue_control.UNSET):
        """At most ``concurrency`` jobs of ``queue`` running at once and ``rate``
        (``"5/s"``, ``"100/m"``) starting per period, on all workers together;
        None clears a limit (``PGJOBS["QUEUES"]`` applies again). Returns the
        ``QueueControl`` in force."""
        return queue_control.limit(self.store, queue, concurrency=concurrency, rate=rate)

    def queue_controls(self, queues=None):
        """``{queue: QueueControl}`` in force, for ``queues`` or every steered queue."""
        return queue_control.in_force(self.store, queues)


class HeldJobs:
    """Jobs enqueued in one transaction (and savepoint), held back from a store
    that cannot join it: written together when it commits (one store call),
    dropped with it when it rolls back. The ``on_commit`` callback itself.

    Their ids are handed out at once, from blocks reserved in the store (1, 2,
    4, ... up to 128 at a time), so that a transaction enqueueing many jobs does
    not pay a round trip for each. Ids left over are skipped, as a database
    sequence does.
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
        infos = [self.store.new_info(spec, job_id) for spec, job_id in zip(specs, ids, strict=True)]
        for spec, info in zip(specs, infos, strict=True):
            if spec.after is not None:  # until the commit tells (refresh() reads it then)
                info.status = records.WAITING
        return infos

    def __call__(self):
        # A unique job whose key another job took by commit time is not written.
        self.store.enqueue_many(self.specs, ids=self.ids)

    def holding(self, unique_key):
        for spec, job_id in zip(self.specs, self.ids, strict=True):
            if spec.unique_key == unique_key:
                return self.store.new_info(spec, job_id)
        return None
