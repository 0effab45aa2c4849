"""The parts of a database store that Django's ORM expresses portably.

Vendor stores (``postgres.py``, and ``mysql.py`` and ``sqlite.py`` through
``sql.py``) subclass ``OrmStore`` and replace the hot paths (enqueue, claim,
finish) with their own statements. The operations here are off the hot path:
refs, retries, failures, leases, the worker registry, schedules.
"""

import collections
import datetime
import logging
import time
import typing

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    F,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Greatest, Least, Now
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

from .. import records, stats, times
from ..records import AttemptInfo, BatchInfo, JobInfo, QueueFigures, ScheduleInfo
from .base import DECODE_ERRORS, Store, one_line, with_current_attempt, worker_lost_error

logger = logging.getLogger("pgjobs")

INFO_FIELDS = (
    "id",
    "func",
    "queue",
    "status",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "created_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "worker_id",
)


def seconds(delta_seconds):
    return datetime.timedelta(seconds=delta_seconds)


class Ended(typing.NamedTuple):
    """A job the current transaction just ended: what settling it needs."""

    id: int
    status: str
    batch_id: int | None
    has_dependents: bool
    result: typing.Any = None  # encoded, for the jobs chained after a success


#: The columns ``Ended`` reads from a job row (all but status and result).
ENDED_FIELDS = ("pk", "batch_id", "has_dependents")
CANCELLABLE = (records.READY, records.WAITING)


class OrmStore(Store):
    """A store over the ``Job`` model on one database alias."""

    supports_live_workers = True
    supports_schedules = True
    supports_atomic_jobs = True

    def __init__(
        self, alias="default", *, lease_seconds=20.0, channel="pgjobs", keep_succeeded=True
    ):
        super().__init__(lease_seconds=lease_seconds)
        self.alias = alias
        self.channel = channel
        # False: a job that succeeds is deleted at once instead of kept with its result.
        self.keep_succeeded = keep_succeeded
        self._registered = {}  # worker id -> its registry row, to register again

    @property
    def connection(self):
        return connections[self.alias]

    def jobs(self):
        from ..models import Job

        return Job.objects.using(self.alias)

    def workers(self):
        from ..models import WorkerProcess

        return WorkerProcess.objects.using(self.alias)

    def schedules(self):
        from ..models import ScheduleState

        return ScheduleState.objects.using(self.alias)

    def attempts(self):
        from ..models import JobAttempt

        return JobAttempt.objects.using(self.alias)

    def figures(self):
        from ..models import JobStat

        return JobStat.objects.using(self.alias)

    def batches(self):
        from ..models import Batch

        return Batch.objects.using(self.alias)

    def describe(self):
        return f"{self.connection.vendor} database {self.alias!r}, polling"

    def now(self):
        """The current time as a query expression, in the form the ``DateTimeField``
        columns store. Django's ``Now()`` is right where the database's clock is
        in that form; stores for other databases override this."""
        return Now()

    def _retrying(self, operation, *args, **kwargs):
        """Run ``operation``; vendor stores run it again after errors that only
        mean "try again" (a deadlock, a busy database)."""
        return operation(*args, **kwargs)

    @staticmethod
    def _queue_filter(queues):
        return Q() if not queues else Q(queue__in=list(queues))

    # -- producers ---------------------------------------------------------------

    def _model_kwargs(self, spec):
        kwargs = dict(
            func=spec.func,
            args=spec.args,
            kwargs=spec.kwargs,
            queue=spec.queue,
            priority=spec.priority,
            max_attempts=spec.max_attempts,
            timeout=spec.timeout,
            unique_key=spec.unique_key,
            signature=spec.signature,
            traceparent=spec.traceparent,
        )
        if spec.run_at is not None:
            kwargs["run_at"] = spec.run_at
        return kwargs

    def enqueue(self, spec):
        from ..models import Job

        if spec.after is not None:
            return self._retrying(self._enqueue_after, spec)
        job = self.jobs().create(**self._model_kwargs(spec))
        job = Job.objects.using(self.alias).only(*INFO_FIELDS).get(pk=job.pk)
        return self._info(job)

    def enqueue_many(self, specs, ids=None):
        from ..models import Job

        if ids is not None:
            return super().enqueue_many(specs, ids)
        specs = list(specs)  # read once, see Store.enqueue_many
        if any(spec.after is not None for spec in specs):
            return self._enqueue_each(specs)
        rows = [Job(**self._model_kwargs(spec)) for spec in specs]
        created = self.jobs().bulk_create(rows)
        if created and created[0].pk is not None:
            return [self.get(job.pk) for job in created]
        return [self.enqueue(spec) for spec in specs]  # vendors without RETURNING

    def _enqueue_each(self, specs):
        """Jobs one by one, all or none (chained jobs: each looks at its previous one)."""
        with transaction.atomic(using=self.alias):
            return [self.enqueue(spec) for spec in specs]

    def _transaction(self):
        """A transaction that reads rows and then writes them: SQLite takes its
        write lock first (``_rescue_transaction``), the others lock as they read."""
        return self._rescue_transaction()

    def _enqueue_after(self, spec):
        """A chained job: its previous job's row is locked and read, so that the
        transaction finishing that job waits for this one, then finds it."""
        with self._transaction():
            previous = (
                self.jobs()
                .select_for_update()
                .filter(pk=spec.after)
                .values_list("status", "result")
                .first()
            )
            if previous is None:
                raise ValueError(f"pgjobs: no job {spec.after} to run after")
            status, result = previous
            kwargs = self._model_kwargs(spec)
            kwargs["after_id"] = spec.after
            if status == records.SUCCEEDED:
                kwargs["previous_result"] = result
            elif status in records.FINISHED_STATUSES:
                kwargs.update(
                    status=records.CANCELLED,
                    finished_at=self.now(),
                    error=records.previous_failed_error(spec.after, status),
                )
            else:
                kwargs["status"] = records.WAITING
                self.jobs().filter(pk=spec.after, has_dependents=False).update(has_dependents=True)
            job = self.jobs().create(**kwargs)
            info = self._info(self.jobs().only(*INFO_FIELDS).get(pk=job.pk))
        if info.status == records.READY:
            self.notify_ready([info.queue])
        return info

    def get(self, job_id):
        try:
            job = self.jobs().only(*INFO_FIELDS, "args", "kwargs").filter(pk=job_id).first()
        except DECODE_ERRORS:  # arguments it cannot decode: the rest of the job
            job = self.jobs().only(*INFO_FIELDS).filter(pk=job_id).first()
            return None if job is None else self._info(job)
        if job is None:
            return None
        info = self._info(job)
        info.args, info.kwargs = job.args, job.kwargs
        return info

    def enqueue_unique(self, spec):
        """Enqueue, unless a ready or running job has ``spec.unique_key``: then
        return that job and write nothing. The unique index on the generated
        ``active_unique_key`` column decides, so racing processes agree."""
        for _ in range(10):
            try:
                # A savepoint, so that the conflict leaves the caller's transaction usable.
                with transaction.atomic(using=self.alias):
                    return self.enqueue(spec)
            except IntegrityError:
                existing = self._active_with_key(spec.unique_key)
                if existing is not None:
                    return existing
                # The holder finished between our INSERT and our look: try again.
        raise IntegrityError(f"cannot enqueue unique_key {spec.unique_key!r}: it keeps conflicting")

    def _active_with_key(self, unique_key):
        job = self.jobs().only(*INFO_FIELDS).filter(active_unique_key=unique_key).first()
        return None if job is None else self._info(job)

    @staticmethod
    def _info(job):
        return JobInfo(**{name: getattr(job, name) for name in INFO_FIELDS})

    def cancel(self, job_id):
        cancelled, _ = self.cancel_many([job_id])
        return bool(cancelled)

    def cancel_many(self, job_ids):
        """Cancel ready jobs; ask running ones to stop (their worker tells them at
        its next heartbeat). Returns (cancelled, asked)."""
        job_ids = list(job_ids)
        return self._cancel_and_ask(self.jobs().filter(pk__in=job_ids), len(job_ids))

    def _cancel_and_ask(self, jobs, count=None):
        """Cancel the ready and waiting of ``jobs``, then ask the running ones to
        stop: (cancelled, asked). A job running at the first step that went back
        to ready before the second (a retry, a snooze, a rescue) was neither:
        the ready ones are looked for again, unless ``count`` (how many jobs
        there are at most) were all accounted for.

        Each step is retried on its own (``_retrying``): a deadlock with a worker
        finishing one of ``jobs`` repeats that step, not the ones that counted."""
        cancelled = self._retrying(self._cancel_ready, jobs)
        asked = self._retrying(
            jobs.filter(status=records.RUNNING, cancel_requested=False).update,
            cancel_requested=True,
        )
        if count is None or cancelled + asked < count:
            cancelled += self._retrying(self._cancel_ready, jobs)
        return cancelled, asked

    def _cancel_ready(self, jobs):
        """Cancel the ready and waiting of ``jobs``, in a transaction of its own."""
        with self._transaction():
            return self._cancel_waiting(jobs.filter(status__in=CANCELLABLE))

    def _cancel_waiting(self, jobs, error=None):
        """Cancel ``jobs`` (a queryset of ready or waiting jobs) and settle them;
        returns how many. Inside a transaction (``_transaction``)."""
        if self.connection.in_atomic_block:
            jobs = jobs.select_for_update()
        # Else a vendor's own transaction (SQLite's holds the write lock already;
        # MySQL's finish cancels only waiting jobs, which no claim takes, and
        # settling a waiting job twice changes nothing: it is in no batch).
        ended = list(jobs.order_by("pk").values_list(*ENDED_FIELDS))
        if not ended:
            return 0
        changes = dict(status=records.CANCELLED, finished_at=self.now(), lease_expires_at=None)
        if error is not None:
            changes["error"] = Value(error, output_field=self.jobs().model._meta.get_field("error"))
        cancelled = (
            self.jobs()
            .filter(pk__in=[row[0] for row in ended], status__in=CANCELLABLE)
            .update(**changes)
        )
        self._settle([Ended(pk, records.CANCELLED, batch, deps) for pk, batch, deps in ended])
        return cancelled

    def _settle(self, ended):
        """In the transaction that ended the jobs ``ended`` (``Ended``s): count them
        in their batches, release the callbacks of the batches they finish, and
        settle the jobs chained after them. Plain jobs cost nothing here."""
        batches = collections.defaultdict(collections.Counter)
        for job in ended:
            if job.batch_id is not None:
                batches[job.batch_id][job.status] += 1
        woken = set()
        for batch_id in sorted(batches):  # one order for every transaction: no deadlock
            counts = batches[batch_id]
            changes = {status: F(status) + n for status, n in counts.items()}
            # The UPDATE takes the batch row's lock: a concurrent finisher waits for
            # this transaction and then counts from the row it committed.
            self.batches().filter(pk=batch_id).update(
                pending=F("pending") - sum(counts.values()), **changes
            )
            finished = (
                self.batches()
                .filter(pk=batch_id, pending=0)
                .values_list("failed", "cancelled", "on_finish_id", "on_success_id")
                .first()
            )
            if finished is not None:
                self.batches().filter(pk=batch_id).update(finished_at=self.now())
                woken |= self._release_callbacks(batch_id, *finished)
        for job in ended:
            if not job.has_dependents:
                continue
            waiting = self.jobs().filter(after_id=job.id, status=records.WAITING)
            if job.status == records.SUCCEEDED:
                field = self.jobs().model._meta.get_field("previous_result")
                queues = list(waiting.values_list("queue", flat=True).distinct())
                if waiting.update(
                    status=records.READY,
                    run_at=Greatest(F("run_at"), self.now()),
                    previous_result=Value(job.result, output_field=field),
                ):
                    woken.update(queues)
            else:
                self._cancel_waiting(waiting, records.previous_failed_error(job.id, job.status))
        if woken:
            self.notify_ready(sorted(woken))

    def _release_callbacks(self, batch_id, failed, cancelled, on_finish_id, on_success_id):
        """A batch finished: its callbacks leave ``waiting`` (once: the status
        guards it). Returns the queues of those made ready."""
        ready = [on_finish_id] if on_finish_id is not None else []
        if on_success_id is not None:
            if failed or cancelled:
                error = records.batch_failed_error(batch_id, failed, cancelled)
                self._cancel_waiting(
                    self.jobs().filter(pk=on_success_id, status=records.WAITING), error
                )
            else:
                ready.append(on_success_id)
        waiting = self.jobs().filter(pk__in=ready, status=records.WAITING)
        queues = set(waiting.values_list("queue", flat=True))
        if waiting.update(status=records.READY, run_at=Greatest(F("run_at"), self.now())):
            return queues
        return set()

    def _settle_orphans(self):
        """Chained jobs still waiting for a job that has ended: on PostgreSQL, one
        enqueued while its previous job's finish was in flight, which that
        finish's one statement could not see (``PostgresStore.rescue`` calls
        this; elsewhere the finish's later statements see it). Settled now, as
        that finish would have. A previous job that no longer exists (deleted as
        it succeeded, with ``KEEP_SUCCEEDED = False``) counts as succeeded,
        without a result. Reads the waiting jobs through pgjobs_job_waiting_idx."""
        previous = self.jobs().filter(pk=OuterRef("after_id"))
        orphans = list(
            self.jobs()
            .filter(status=records.WAITING, after_id__isnull=False)
            .annotate(previous_status=Subquery(previous.values("status")[:1]))
            .filter(Q(previous_status__in=records.FINISHED_STATUSES) | Q(previous_status=None))
            .order_by()  # not the model's -id: that would read the table backwards
            .values_list("after_id", "previous_status")
            .distinct()[:100]
        )
        for after_id, status in orphans:
            with self._transaction():
                result = self.jobs().filter(pk=after_id).values_list("result", flat=True).first()
                self._settle([Ended(after_id, status or records.SUCCEEDED, None, True, result)])
        return len(orphans)

    # -- batches -------------------------------------------------------------------

    def enqueue_batch(
        self, specs, on_finish=None, on_success=None, description="", *, batch_id=None, ids=None
    ):
        if batch_id is not None or ids is not None:
            raise NotImplementedError(f"{type(self).__name__} writes jobs in the transaction")
        specs = list(specs)
        if not specs:
            raise ValueError("pgjobs: a batch needs at least one job")
        if any(spec.after is not None or spec.unique_key is not None for spec in specs):
            raise ValueError("pgjobs: a batch's jobs take neither after nor unique_key")
        return self._retrying(self._enqueue_batch, specs, on_finish, on_success, description)

    def _enqueue_batch(self, specs, on_finish, on_success, description):
        with transaction.atomic(using=self.alias):
            callbacks = {}
            for name, spec in (("on_finish_id", on_finish), ("on_success_id", on_success)):
                if spec is not None:
                    kwargs = self._model_kwargs(spec)
                    callbacks[name] = self.jobs().create(**kwargs, status=records.WAITING).pk
            batch = self.batches().create(
                description=description, total=len(specs), pending=len(specs), **callbacks
            )
            infos = self._enqueue_members(specs, batch.pk)
            return self.get_batch(batch.pk), infos

    def _enqueue_members(self, specs, batch_id):
        """Write a batch's jobs, in one statement where the store can; their infos."""
        from ..models import Job

        rows = [Job(**self._model_kwargs(spec), batch_id=batch_id) for spec in specs]
        created = self.jobs().bulk_create(rows)
        if created and created[0].pk is not None:
            return [self.get(job.pk) for job in created]
        infos = []
        for row in rows:  # vendors without RETURNING
            row.save(using=self.alias)
            infos.append(self.get(row.pk))
        return infos

    def get_batch(self, batch_id):
        batch = self.batches().filter(pk=batch_id).first()
        if batch is None:
            return None
        counts = dict.fromkeys(records.STATUSES, 0)
        unfinished = (
            self.jobs()
            .filter(batch_id=batch_id, status__in=[records.READY, records.RUNNING])
            .order_by()
            .values_list("status")
            .annotate(n=Count("pk"))
        )
        counts.update(unfinished)
        counts.update(succeeded=batch.succeeded, failed=batch.failed, cancelled=batch.cancelled)
        return BatchInfo(
            id=batch.pk,
            total=batch.total,
            pending=batch.pending,
            succeeded=batch.succeeded,
            failed=batch.failed,
            cancelled=batch.cancelled,
            created_at=batch.created_at,
            finished_at=batch.finished_at,
            on_finish_id=batch.on_finish_id,
            on_success_id=batch.on_success_id,
            counts=counts,
            description=batch.description,
        )

    def batch_jobs(self, batch_id):
        jobs = self.jobs().filter(batch_id=batch_id).only(*INFO_FIELDS).order_by("pk")
        return [self._info(job) for job in jobs]

    def cancel_batch(self, batch_id):
        return self._cancel_and_ask(self.jobs().filter(batch_id=batch_id))

    def prune_batches(self, older_than, limit):
        old = self.batches().filter(pending=0, finished_at__lt=self.now() - Value(older_than))
        ids = list(old.order_by("finished_at").values_list("pk", flat=True)[:limit])
        return self.batches().filter(pk__in=ids).delete()[0] if ids else 0

    def previous_result(self, job_id):
        return self.jobs().filter(pk=job_id).values_list("previous_result", flat=True).first()

    def requeue(self, job_ids):
        """Make failed or cancelled jobs ready again, with fresh attempts.

        A job whose ``unique_key`` another ready or running job holds (or one taken
        back just before it, for the same key) stays as it is, rather than failing
        the whole call: two active jobs never share a key. Each step is retried on
        its own (``_retrying``), so that the count stays right.
        """
        job_ids = list(job_ids)
        finished = self.jobs().filter(
            pk__in=job_ids, status__in=[records.FAILED, records.CANCELLED]
        )
        ready_again = dict(
            status=records.READY,
            attempts=0,
            run_at=self.now(),
            started_at=None,
            finished_at=None,
            worker_id=None,
            result=None,
            cancel_requested=False,
        )
        requeued = self._retrying(
            finished.filter(unique_key__isnull=True, batch_id__isnull=True).update, **ready_again
        )
        # One by one: those with a key (it may be taken), and a batch's jobs (their
        # batch counts them as pending again).
        keyed = finished.filter(Q(unique_key__isnull=False) | Q(batch_id__isnull=False))
        for pk, batch_id, status in list(
            keyed.order_by("pk").values_list("pk", "batch_id", "status")
        ):
            try:
                job = finished.filter(pk=pk, status=status)
                requeued += self._retrying(self._requeue_one, job, status, batch_id, ready_again)
            except IntegrityError:
                pass  # its key is taken
        if requeued:  # afresh, attempts from 0: the attempts kept go
            afresh = self.jobs().filter(pk__in=job_ids, status=records.READY, attempts=0)
            self._retrying(
                self.attempts().filter(job_id__in=list(afresh.values_list("pk", flat=True))).delete
            )
            self.notify_ready()
        return requeued

    def _requeue_one(self, job, status, batch_id, ready_again):
        """``requeue`` for one job with a key or in a batch (``job``: a queryset of
        it while still ``status``), whose batch counts it as pending again: 1 or 0."""
        with transaction.atomic(using=self.alias):  # a savepoint inside the caller's
            again = job.update(**ready_again)
            if again and batch_id is not None:
                self.batches().filter(pk=batch_id).update(
                    pending=F("pending") + 1, **{status: F(status) - 1}
                )
        return again

    def run_now(self, job_ids):
        now = self.now()
        later = self.jobs().filter(pk__in=list(job_ids), status=records.READY, run_at__gt=now)
        due = self._retrying(later.update, run_at=now)
        if due:
            self.notify_ready()
        return due

    # -- workers -----------------------------------------------------------------

    def _mine(self, worker_id, job_ids):
        return self.jobs().filter(pk__in=list(job_ids), status=records.RUNNING, worker_id=worker_id)

    def finish(self, worker_id, results):
        # Portable fallback: one UPDATE per job. Vendor stores batch this.
        with self._transaction():
            results = dict(results)
            ended = [
                Ended(pk, records.SUCCEEDED, batch_id, deps, results.get(pk))
                for pk, batch_id, deps in self._mine(worker_id, results)
                .select_for_update()
                .values_list(*ENDED_FIELDS)
            ]
            if not self.keep_succeeded:
                self._mine(worker_id, list(results)).delete()
            else:
                for job_id, result in results.items():
                    self._mine(worker_id, [job_id]).update(
                        status=records.SUCCEEDED,
                        result=result,
                        finished_at=self.now(),
                        lease_expires_at=None,
                    )
            self._settle(ended)

    # -- atomic jobs -----------------------------------------------------------------

    def mark_atomic(self, job_ids):
        job_ids = list(job_ids)
        for start in range(0, len(job_ids), 1000):  # a bounded list of parameters
            batch = job_ids[start : start + 1000]
            self.jobs().filter(pk__in=batch, status=records.READY).update(atomic=True)

    def job_transaction(self):
        return transaction.atomic(using=self.alias)

    def finish_in_transaction(self, worker_id, job_id, attempt, result):
        """One statement by primary key, guarded by the attempt's lease: it locks
        the job's row from here to the commit, so that a rescue or a heartbeat
        meanwhile waits for it, then finds the job finished (or finds it still
        theirs, and this updates nothing)."""
        mine = self.jobs().filter(
            pk=job_id, status=records.RUNNING, worker_id=worker_id, attempts=attempt
        )
        updated = mine.update(
            status=records.SUCCEEDED, result=result, finished_at=self.now(), lease_expires_at=None
        )
        if updated:
            # A job of a batch or a chain is settled in this transaction too: counted
            # in its batch, its chained jobs released, or neither if it rolls back;
            # and the success is counted in the figures, as every finish counts it.
            pk, batch_id, deps, queue, run_at, started_at = (
                self.jobs()
                .filter(pk=job_id)
                .values_list(*ENDED_FIELDS, "queue", "run_at", "started_at")
                .get()
            )
            self._count_success(worker_id, queue, run_at, started_at)
            if batch_id is not None or deps:
                self._settle([Ended(pk, records.SUCCEEDED, batch_id, deps, result)])
        if updated and not self.keep_succeeded:
            # Deleted only now that the guarded update holds its row: Django's
            # delete() reads the rows first (it cascades to JobAttempt), then
            # deletes by id, so a guard in it alone can be overtaken by a rescue.
            self.jobs().filter(pk=job_id).delete()
        return updated > 0

    def retry(self, worker_id, job_id, error, delay):
        """Ready again in ``delay`` seconds; cancelled instead when its cancellation
        was asked for while it ran (it failed before, or without, seeing the request).
        The attempt is kept and counted in the same transaction."""
        asked = Q(cancel_requested=True)
        with self._write_transaction():
            attempt = self._current_attempt(worker_id, job_id)
            if attempt is None:
                return  # its lease was lost: another worker has it now
            updated = self._mine(worker_id, [job_id]).update(
                status=Case(
                    When(asked, then=Value(records.CANCELLED)), default=Value(records.READY)
                ),
                finished_at=Case(When(asked, then=self.now()), default=None),
                error=error,
                run_at=self.now() + Value(seconds(delay)),
                worker_id=None,
                lease_expires_at=None,
            )
            if updated:
                cancelled = attempt["cancel_requested"]
                outcome = records.CANCELLED if cancelled else records.RETRIED
                self._keep_attempts([(attempt, outcome, error)], worker_id)
                if cancelled:  # it ended: its batch and chain are settled with it
                    self._settle([self._ended(attempt, records.CANCELLED)])

    def fail(self, worker_id, job_id, error, status=records.FAILED):
        with self._write_transaction():
            attempt = self._current_attempt(worker_id, job_id)
            if attempt is None:
                return
            updated = self._mine(worker_id, [job_id]).update(
                status=status, error=error, finished_at=self.now(), lease_expires_at=None
            )
            if updated:
                self._keep_attempts([(attempt, status, error)], worker_id)
                self._settle([self._ended(attempt, status)])

    #: What ``_keep_attempts`` (and ``_settle``) read of a job's current attempt.
    ATTEMPT_FIELDS = (
        "pk",
        "queue",
        "run_at",
        "started_at",
        "attempts",
        "cancel_requested",
        "batch_id",
        "has_dependents",
    )

    def _current_attempt(self, worker_id, job_id):
        """The running attempt of ``job_id`` under ``worker_id``, locked until the
        transaction ends (``ATTEMPT_FIELDS``), or None."""
        return (
            self._mine(worker_id, [job_id]).select_for_update().values(*self.ATTEMPT_FIELDS).first()
        )

    @staticmethod
    def _ended(attempt, status):
        """The ``Ended`` of a job read by ``_current_attempt``, for ``_settle``."""
        return Ended(attempt["pk"], status, attempt["batch_id"], attempt["has_dependents"])

    def _keep_attempts(self, ended, worker_id):
        """Keep attempts that did not succeed and count them in the figures:
        ``ended`` is ``[(attempt, outcome, error), ...]``, each attempt as
        ``_current_attempt`` reads it, ended now under ``worker_id``. Called
        inside the transaction that records the outcome."""
        from ..models import JobAttempt

        now = timezone.now()
        minute = stats.minute_of(now)
        shard = stats.shard_of(worker_id)
        kept, figures = [], []
        for attempt, outcome, error in ended:
            started_at = attempt["started_at"]
            kept.append(
                JobAttempt(
                    job_id=attempt["pk"],
                    attempt=attempt["attempts"],
                    started_at=started_at,
                    finished_at=now,
                    worker_id=worker_id,
                    outcome=outcome,
                    error=error,
                )
            )
            wait = run = None
            if started_at is not None:
                wait = (started_at - attempt["run_at"]).total_seconds()
                run = (now - started_at).total_seconds()
            figures += stats.attempt_rows(minute, attempt["queue"], shard, outcome, wait, run)
        for attempt in kept:  # one by one: bulk_create would open a transaction of its own
            attempt.save(using=self.alias, force_insert=True)
        self._add_figures(stats.merge_rows(figures))

    def _count_success(self, worker_id, queue, run_at, started_at):
        """Count one success in the figures, inside the transaction recording it
        (an atomic job's: the statement finishes count the others)."""
        now = timezone.now()
        wait = run = None
        if started_at is not None:
            wait = (started_at - run_at).total_seconds()
            run = (now - started_at).total_seconds()
        minute, shard = stats.minute_of(now), stats.shard_of(worker_id)
        self._add_figures(
            stats.merge_rows(stats.attempt_rows(minute, queue, shard, records.SUCCEEDED, wait, run))
        )

    def _add_figures(self, rows):
        """Add ``rows`` (``stats.merge_rows``'s) to the figures: the vendor's upsert."""
        raise NotImplementedError

    def heartbeat(self, worker_id, job_ids):
        if not self.workers().filter(pk=worker_id).update(heartbeat_at=self.now()):
            self._register_again(worker_id)
        if not job_ids:
            return []
        mine = self._mine(worker_id, job_ids)
        mine.update(lease_expires_at=self.now() + Value(seconds(self.lease_seconds)))
        return list(mine.filter(cancel_requested=True).values_list("pk", flat=True))

    # -- the worker registry and status ------------------------------------------------

    def register_worker(self, worker_id, hostname, pid, queues, concurrency):
        self.workers().update_or_create(
            pk=worker_id,
            defaults=dict(
                hostname=hostname,
                pid=pid,
                queues=list(queues or []),
                concurrency=concurrency,
                started_at=self.now(),
                heartbeat_at=self.now(),
            ),
        )
        self._registered[worker_id] = self.workers().get(pk=worker_id)

    def live_workers(self):
        # Heartbeats come every lease/3: a worker silent for half a lease is
        # likely gone (its share of wake-ups then falls to the others' jitter).
        fresh = self.now() - Value(seconds(self.lease_seconds / 2))
        rows = self.workers().filter(heartbeat_at__gte=fresh).values_list("pk", "queues")
        return [(worker_id, queues or None) for worker_id, queues in rows]

    def _register_again(self, worker_id):
        """A rescue removed this live worker's row while it could not heartbeat
        (paused, cut off): put it back as it was, so that it is listed again."""
        row = self._registered.get(worker_id)
        if row is not None:
            fields = ("hostname", "pid", "queues", "concurrency", "started_at")
            defaults = {name: getattr(row, name) for name in fields}
            self.workers().update_or_create(
                pk=worker_id, defaults={**defaults, "heartbeat_at": self.now()}
            )

    def unregister_worker(self, worker_id):
        self.workers().filter(pk=worker_id).delete()
        self._registered.pop(worker_id, None)

    def status(self):
        """Live workers and per-queue counts, for ``pgjobs_status``."""
        now = timezone.now()
        stale = now - seconds(3 * self.lease_seconds)
        running = dict(
            self.jobs()
            .filter(status=records.RUNNING)
            .values_list("worker_id")
            .annotate(n=Count("pk"))
        )
        workers = [
            {
                "id": w.pk,
                "hostname": w.hostname,
                "pid": w.pid,
                "queues": w.queues,
                "concurrency": w.concurrency,
                "started_at": w.started_at,
                "heartbeat_at": w.heartbeat_at,
                "running": running.get(w.pk, 0),
            }
            for w in self.workers().filter(heartbeat_at__gte=stale).order_by("started_at")
        ]
        counts = {}
        for queue, status, n in self.jobs().values_list("queue", "status").annotate(n=Count("pk")):
            counts.setdefault(queue, {})[status] = n
        oldest = dict(
            self.jobs()
            .filter(status=records.READY, run_at__lte=now)
            .values_list("queue")
            # Clamped: a '-infinity' run_at written by hand (PostgreSQL) is no datetime.
            .annotate(oldest=Min(Greatest("run_at", Value(times.ends()[0], DateTimeField()))))
        )
        queues = [
            {
                "queue": queue,
                "counts": counts[queue],
                "oldest_due_seconds": (now - oldest[queue]).total_seconds()
                if queue in oldest
                else None,
            }
            for queue in sorted(counts)
        ]
        return {"workers": workers, "queues": queues}

    def prune(self, older_than, statuses, batch_size=1000, dry_run=False):
        """Delete finished jobs that finished before ``now - older_than``, a batch
        per statement so that no lock is held for long. Returns how many."""
        cutoff = timezone.now() - older_than
        old = self.jobs().filter(status__in=list(statuses), finished_at__lt=cutoff)
        if dry_run:
            return old.count()
        deleted = 0
        while True:
            batch = list(old.values_list("pk", flat=True)[:batch_size])
            if not batch:
                return deleted
            # Guarded again: a job requeued since it was read is not deleted.
            deleted += self._delete_jobs(old.filter(pk__in=batch))

    def _delete_jobs(self, jobs):
        """Delete ``jobs`` (a queryset) and their attempts; return how many jobs.

        Django deletes the attempts first, then the jobs by id: the rows are locked
        before, in the same transaction, so that a job changed in between (requeued,
        say) is not deleted by id after it no longer matches ``jobs``."""
        with transaction.atomic(using=self.alias):
            ids = list(jobs.select_for_update().values_list("pk", flat=True))
            if not ids:
                return 0
            _, deleted = self.jobs().filter(pk__in=ids).delete()
        return deleted.get(jobs.model._meta.label, 0)

    def prune_batch(self, older_than, statuses, limit):
        """Delete up to ``limit`` jobs in ``statuses`` that finished more than
        ``older_than`` (a timedelta) ago, by the database's clock; return how many.

        Short statements, for the retention every worker enforces (see
        ``pgjobs_worker``): callers run it again while it returns ``limit``.
        Oldest first, in the order of ``pgjobs_job_finished_idx``, so that the
        database reads that index and no more than it needs. Vendor stores
        override this so that concurrent pruners skip each other's rows; this
        portable version may let two of them pick the same rows, which one
        deletes and the other finds gone.
        """
        statuses = list(statuses)
        expired = self.jobs().filter(
            status__in=statuses, finished_at__lt=self.now() - Value(older_than)
        )
        ids = list(expired.order_by("status", "finished_at").values_list("pk", flat=True)[:limit])
        if not ids:
            return 0
        return self._delete_jobs(self.jobs().filter(pk__in=ids, status__in=statuses))

    #: Jobs a rescue takes back at most in one call (the next call takes the rest).
    rescue_batch = 1000

    def rescue(self):
        """Take back running jobs whose lease ran out, each with an error naming
        its worker and attempt (``worker_lost_error``).

        The expired jobs are read first, without locks (nothing expired: one
        read, the usual case); each is then updated only if it is still the
        attempt that was read (same worker, attempt, cancel flag, lease still
        run out), so that a job a heartbeat saved, or another rescuer took back
        first, is left alone and counted by whoever changed it. The updates run
        in one transaction, so that a retried rescue starts over consistently.
        """
        self._forget_silent_workers()
        expired = self._expired_attempts()
        if not expired:
            return records.Rescued(0)
        rescued, ended = 0, []
        with self._rescue_transaction():
            settled = []
            lost = {}  # worker id -> [(attempt, outcome, error)] of its attempts rescued
            for row in expired:
                pk, worker_id, attempts, _, _, queue, run_at, started_at, batch, dependents = row
                taken = self._take_back(row)
                if taken is None:
                    continue
                status, error = taken
                rescued += 1
                if status != records.READY:
                    ended.append(pk)
                    settled.append(Ended(pk, status, batch, dependents))
                attempt = {"pk": pk, "attempts": attempts, "queue": queue,
                           "run_at": run_at, "started_at": started_at}  # fmt: skip
                outcome = records.RETRIED if status == records.READY else status
                lost.setdefault(worker_id, []).append((attempt, outcome, error))
            for worker_id, attempts in lost.items():
                self._keep_attempts(attempts, worker_id)
            self._settle(settled)
        if rescued:
            self.notify_ready()  # no enqueue told the workers of these
        return records.Rescued(rescued, ended)

    def _forget_silent_workers(self):
        """Delete the rows of workers silent for three leases (``rescue``)."""
        self.workers().filter(
            heartbeat_at__lt=self.now() - Value(seconds(3 * self.lease_seconds))
        ).delete()

    def _expired_attempts(self):
        """The running attempts whose lease ran out, at most ``rescue_batch``, in
        id order, as rows of what ``rescue`` needs (no lock taken)."""
        # Read through the lease index (no ORDER BY, which would scan the table
        # in id order), then updated in id order: racing rescuers lock alike.
        return sorted(
            self.jobs()
            .filter(status=records.RUNNING, lease_expires_at__lt=self.now())
            .order_by()
            .values_list(
                "pk",
                "worker_id",
                "attempts",
                "max_attempts",
                "cancel_requested",
                "queue",
                "run_at",
                "started_at",
                "batch_id",
                "has_dependents",
            )[: self.rescue_batch]
        )

    def _take_back(self, row):
        """Take back one expired attempt (a row of ``_expired_attempts``), if it is
        still the attempt that was read: ``(status, error)`` it now has, or None
        when a heartbeat saved it or another rescuer took it first."""
        pk, worker_id, attempts, max_attempts, cancel_requested, *_ = row
        if cancel_requested:
            status = records.CANCELLED
        elif attempts >= max_attempts:
            status = records.FAILED
        else:
            status = records.READY
        error = worker_lost_error(worker_id, attempts, max_attempts, status)
        changes = dict(
            status=status,
            error=Value(error, output_field=self.jobs().model._meta.get_field("error")),
            worker_id=None,
            lease_expires_at=None,
        )
        if status != records.READY:
            changes["finished_at"] = self.now()
        taken = (
            self.jobs()
            .filter(
                pk=pk,
                status=records.RUNNING,
                worker_id=worker_id,
                attempts=attempts,
                cancel_requested=cancel_requested,
                lease_expires_at__lt=self.now(),
            )
            .update(**changes)
        )
        return (status, error) if taken else None

    def _rescue_transaction(self):
        """The transaction a rescue's updates run in."""
        return self._write_transaction()

    def _write_transaction(self):
        """The transaction in which an outcome, its attempt and its figures are
        written together (vendors that must take the write lock first override it)."""
        return transaction.atomic(using=self.alias)

    def release(self, worker_id, job_ids):
        if job_ids:
            released = self._mine(worker_id, job_ids).update(
                status=records.READY,
                attempts=F("attempts") - 1,
                worker_id=None,
                started_at=None,
                lease_expires_at=None,
            )
            if released:
                self.notify_ready()  # for the workers that stay

    def seconds_until_due(self, queues):
        next_run = (
            self.jobs()
            .filter(self._queue_filter(queues), status=records.READY)
            .aggregate(next_run=Min("run_at"))["next_run"]
        )
        if next_run is None:
            return None
        return max(0.0, (next_run - timezone.now()).total_seconds())

    def count_due(self, queues):
        return (
            self.jobs()
            .filter(self._queue_filter(queues), status=records.READY, run_at__lte=self.now())
            .count()
        )

    # -- history and figures --------------------------------------------------------

    def job_attempts(self, job_id):
        kept = [
            AttemptInfo(*row)
            for row in self.attempts()
            .filter(job_id=job_id)
            .order_by("attempt")
            .values_list("attempt", "started_at", "finished_at", "worker_id", "outcome", "error")
        ]
        job = (
            self.jobs()
            .filter(pk=job_id)
            .values_list("status", "attempts", "started_at", "finished_at", "worker_id")
            .first()
        )
        return with_current_attempt(kept, job)

    def _clock(self):
        """This process's clock, as the reading methods compare times with it."""
        return timezone.now()

    def queue_figures(self):
        """Read through the claim index (ready jobs), the lease index (running
        jobs: only they hold a lease) and the figures: never the whole table."""
        now = self._clock()
        figures = {}

        def of(queue):
            if queue not in figures:
                figures[queue] = QueueFigures(queue)
            return figures[queue]

        due = Q(run_at__lte=now)
        ready = (
            self.jobs()
            .filter(status=records.READY)
            .order_by()
            .values_list("queue")
            .annotate(
                due=Count("pk", filter=due),
                deferred=Count("pk", filter=~due),
                oldest=Min(Greatest("run_at", Value(times.ends()[0], DateTimeField())), filter=due),
            )
        )
        for queue, due_count, deferred, oldest in ready:
            queue_figures = of(queue)
            queue_figures.ready, queue_figures.deferred = due_count, deferred
            if oldest is not None:
                queue_figures.oldest_due_seconds = max(0.0, (now - oldest).total_seconds())
        running = (
            self.jobs()
            .filter(status=records.RUNNING, lease_expires_at__isnull=False)
            .order_by()
            .values_list("queue")
            .annotate(n=Count("pk"))
        )
        for queue, count in running:
            of(queue).running = count
        failed = (
            self.figures()
            .filter(minute__gte=stats.minute_of(now - datetime.timedelta(hours=1)))
            .filter(metric=records.FAILED)
            .order_by()
            .values_list("queue")
            .annotate(n=Sum("count"))
        )
        for queue, count in failed:
            of(queue).failed_last_hour = int(count)
        return [figures[queue] for queue in sorted(figures)]

    def minute_figures(self, since):
        if isinstance(since, datetime.timedelta):
            since = self._clock() - since
        rows = (
            self.figures()
            .filter(minute__gte=stats.minute_of(since))
            .order_by()
            .values_list("minute", "queue", "metric", "bucket")
            .annotate(count=Sum("count"), total=Sum("total"))
        )
        return stats.figures_from_rows(rows)

    def fold_figures(self, older_than, span=datetime.timedelta(hours=1)):
        """Move the figures of older minutes from the writers' shards to shard 0,
        and those older than ``stats.COARSE_AFTER`` into one row per
        ``stats.COARSE`` minutes: a window of ``span`` each per call (the pruning
        duty calls it every minute, so it keeps up, and catches up on a backlog
        an hour at a time)."""
        now = self._clock()
        cutoff = stats.minute_of(now - older_than)
        folded = self._fold(
            self.figures().filter(minute__lt=cutoff, minute__gte=cutoff - span, shard__gt=0),
            lambda minute: minute,
        )
        coarse = stats.coarse_of(now - max(older_than, stats.COARSE_AFTER))
        window = self.figures().filter(minute__lt=coarse, minute__gte=coarse - span)
        fine = window.filter(~Q(shard=0) | ~Q(minute__in=self._coarse_minutes(coarse, span)))
        if fine.exists():
            folded += self._fold(window, stats.coarse_of)
        return folded

    @staticmethod
    def _coarse_minutes(end, span):
        step = datetime.timedelta(minutes=stats.COARSE)
        count = int(span / step)
        return [end - step * n for n in range(1, count + 1)]

    def _fold(self, rows, minute_of):
        """Replace ``rows`` (a queryset of figures) by their sums in shard 0, keyed
        by ``minute_of(minute)``; return how many rows went."""
        with transaction.atomic(using=self.alias):
            summed = list(
                rows.order_by()
                .values_list("minute", "queue", "metric", "bucket")
                .annotate(count=Sum("count"), total=Sum("total"))
            )
            if not summed:
                return 0
            deleted, _ = rows.delete()
            self._add_figures(
                stats.merge_rows(
                    (minute_of(minute), queue, 0, metric, bucket, count, total)
                    for minute, queue, metric, bucket, count, total in summed
                )
            )
        return deleted

    def prune_figures(self, older_than):
        cutoff = stats.minute_of(self._clock() - older_than)
        deleted, _ = self.figures().filter(minute__lt=cutoff).delete()
        return deleted

    # -- queue control ------------------------------------------------------------------

    def queue_controls_model(self):
        from ..models import QueueControl

        return QueueControl.objects.using(self.alias)

    def queue_controls(self):
        return {
            row.queue: _control(row)
            for row in self.queue_controls_model().only(
                "queue", "paused", "concurrency", "rate", "period"
            )
        }

    def set_queue_control(self, queue, **changes):
        unknown = set(changes) - {"paused", "concurrency", "rate", "period"}
        if unknown:
            raise TypeError(f"unknown queue control field(s): {', '.join(sorted(unknown))}")
        if "paused" in changes:
            changes["paused"] = bool(changes["paused"])
        row, created = self.queue_controls_model().get_or_create(queue=queue, defaults=changes)
        if not created and changes:
            self.queue_controls_model().filter(queue=queue).update(
                **changes, updated_at=timezone.now()
            )
            row = self.queue_controls_model().get(queue=queue)
        self.controls.forget()
        return _control(row)

    def snooze(self, worker_id, job_id, delay):
        snoozed = (
            self._mine(worker_id, [job_id])
            .filter(cancel_requested=False)
            .update(
                status=records.READY,
                attempts=F("attempts") - 1,
                run_at=self.now() + Value(seconds(delay)),
                worker_id=None,
                started_at=None,
                lease_expires_at=None,
            )
        )
        if snoozed:
            return
        # Its cancellation was asked for while it ran: it ends cancelled, as a
        # retry would, instead of running again (a request is never taken back).
        with self._transaction():
            mine = self._mine(worker_id, [job_id]).filter(cancel_requested=True)
            row = mine.select_for_update().values_list(*ENDED_FIELDS).first()
            if row is None:
                return
            mine.update(status=records.CANCELLED, finished_at=self.now(), lease_expires_at=None)
            self._settle([Ended(row[0], records.CANCELLED, row[1], row[2])])

    def _steered_claim(self, plan, queues, limit, worker_id):
        """A claim from queues some of which are paused or limited (``plan``):
        in one transaction, each limited queue's row locked (by name, so racing
        claims queue up alike), its running jobs counted and at most what
        ``queue_control.admit`` allows claimed, its rate window moved on; then,
        after that commit, the other queues as usual."""
        limited = [control.queue for control in plan.limited]
        missing = self.controls.unstored(limited)
        if missing:  # limits from the setting alone: a row to lock and keep the window in
            model = self.queue_controls_model().model
            self.queue_controls_model().bulk_create(
                [model(queue=queue) for queue in missing], ignore_conflicts=True
            )
        claimed = self._claim_limited(plan.limited, limit, worker_id) if limited else []
        if plan.others and len(claimed) < limit:
            # Outside the limited queues' transaction: claims from the other
            # queues never wait on those rows' locks.
            try:
                claimed += self._claim_others(
                    plan.include, plan.exclude, limit - len(claimed), worker_id
                )
            except DatabaseError:
                if not claimed:
                    raise
                # Those are running under this worker now: run them; the next
                # claim meets the error again if it lasts.
                logger.warning("pgjobs: claim from the unlimited queues failed", exc_info=True)
        if plan.limited:  # claim order across the queues claimed apart
            claimed.sort(key=lambda job: -job.priority)
        return claimed

    def _claim_limited(self, limited, limit, worker_id):
        """Claim from the limited queues (``QueueControl``s, by name) in one
        transaction: each one's row locked, its running jobs counted, at most
        what ``queue_control.admit`` allows claimed, its rate window moved on."""
        from ..queue_control import admit, effective

        defaults = self.controls.defaults()
        claimed = []
        with self._control_transaction():
            rows = list(
                self.queue_controls_model()
                .select_for_update()
                .filter(queue__in=[control.queue for control in limited])
                .order_by("queue")
            )
            controls = {row.queue: effective(row.queue, _control(row), defaults) for row in rows}
            counted = [q for q, control in controls.items() if control.concurrency is not None]
            running = dict(
                self.jobs()
                .filter(
                    queue__in=counted,
                    status=records.RUNNING,
                    lease_expires_at__isnull=False,
                )
                .order_by()
                .values_list("queue")
                .annotate(Count("id"))
                if counted  # a rate alone needs no count
                else ()
            )
            now = time.time()
            for row in rows:
                control = controls[row.queue]
                allowed, start, count = admit(
                    control,
                    running.get(row.queue, 0),
                    row.window_start,
                    row.window_count,
                    now,
                    limit - len(claimed),
                )
                got = self._claim_steered((row.queue,), (), allowed, worker_id) if allowed else []
                claimed += got
                if control.rate is not None and (
                    start != row.window_start or count + len(got) != row.window_count
                ):
                    self.queue_controls_model().filter(queue=row.queue).update(
                        window_start=start, window_count=count + len(got)
                    )
        return claimed

    def _control_transaction(self):
        """The transaction of a steered claim (vendor stores: isolation, locks)."""
        return transaction.atomic(using=self.alias)

    def _claim_others(self, include, exclude, limit, worker_id):
        """``_claim_steered`` in a transaction of its own (vendor stores whose
        statement is atomic by itself skip the transaction)."""
        with self._control_transaction():
            return self._claim_steered(include, exclude, limit, worker_id)

    def _claim_steered(self, include, exclude, limit, worker_id):
        """Claim up to ``limit`` due jobs from ``include`` (None: every queue) but
        ``exclude``, inside the caller's transaction; vendor stores supply it."""
        raise NotImplementedError

    # -- schedules -------------------------------------------------------------------

    def get_schedules(self, names):
        # Keyed by the name asked for: MySQL's collations match names without
        # case, so "nightly" may find the row of an older "Nightly".
        asked = {name.casefold(): name for name in names}
        infos = {}
        for row in self.schedules().filter(name__in=list(asked.values())):
            name = asked.get(row.name.casefold(), row.name)
            infos[name] = ScheduleInfo(name, row.last_tick, row.last_run)
        return infos

    def create_schedule(self, name, last_tick):
        return self._retrying(self._create_schedule, name, last_tick)

    def _create_schedule(self, name, last_tick):
        when = Value(last_tick, output_field=DateTimeField())
        try:
            with transaction.atomic(using=self.alias):
                self.schedules().create(name=name, last_tick=Least(when, self.now()))
        except IntegrityError:
            return False
        return True

    def advance_schedule(self, name, last_tick, new_last_tick, specs):
        return self._retrying(self._advance_schedule, name, last_tick, new_last_tick, specs)

    def _advance_schedule(self, name, last_tick, new_last_tick, specs):
        # The UPDATE takes the row's lock: a racing worker waits for this
        # transaction, then finds last_tick changed and updates nothing.
        not_early = LessThanOrEqual(Value(new_last_tick, output_field=DateTimeField()), self.now())
        changes = {"last_tick": new_last_tick}
        if specs:
            changes["last_run"] = new_last_tick
        with transaction.atomic(using=self.alias):
            won = (
                self.schedules().filter(not_early, name=name, last_tick=last_tick).update(**changes)
            )
            if not won:
                return None
            infos = [
                self.enqueue_unique(spec) if spec.unique_key else self.enqueue(spec)
                for spec in specs
            ]
            atomic = [info.id for info, spec in zip(infos, specs, strict=True) if spec.atomic]
            if atomic:  # a scheduled function marked with @atomic_job
                self.mark_atomic(atomic)
            return infos

    # -- set-up problems ---------------------------------------------------------------

    def setup_problem(self, exc):
        name = self.connection.settings_dict.get("NAME")
        where = f"database {str(name)!r} (DATABASES[{self.alias!r}])"
        if self._missing_database(exc):
            return (
                f"{where} does not exist: create it, or point DATABASES at the right one "
                f"({one_line(exc)})",
                True,
            )
        try:
            tables = set(self.connection.introspection.table_names())
        except Exception:  # not reachable: nothing to tell
            return None
        needed = [self.jobs().model._meta.db_table, self.workers().model._meta.db_table]
        missing = [table for table in needed if table not in tables]
        if not missing:
            return None
        return (
            f"the pgjobs tables ({', '.join(missing)}) are missing from {where}: "
            "run manage.py migrate",
            False,
        )

    def _missing_database(self, exc):
        """Whether ``exc`` says the database itself does not exist (vendor stores)."""
        return False

    def close(self):
        self.connection.close()


def _control(row):
    return records.QueueControl(row.queue, row.paused, row.concurrency, row.rate, row.period)
