"""The parts of a database store that Django's ORM expresses portably.

Vendor stores (``postgres.py``, and ``mysql.py`` and ``sqlite.py`` through
``sql.py``) subclass ``OrmStore`` and replace the hot paths (enqueue, claim,
finish) with their own statements. The operations here are off the hot path:
refs, retries, failures, leases, the worker registry, schedules.
"""

import datetime

from django.db import IntegrityError, connections, transaction
from django.db.models import Case, Count, DateTimeField, F, Min, Q, Sum, Value, When
from django.db.models.functions import Greatest, Least, Now
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

from .. import records, stats
from ..records import AttemptInfo, JobInfo, QueueFigures, ScheduleInfo
from .base import DECODE_ERRORS, Store, one_line, with_current_attempt, worker_lost_error

EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.UTC)

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


class OrmStore(Store):
    """A store over the ``Job`` model on one database alias."""

    supports_live_workers = True
    supports_schedules = True

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

        job = self.jobs().create(**self._model_kwargs(spec))
        job = Job.objects.using(self.alias).only(*INFO_FIELDS).get(pk=job.pk)
        return self._info(job)

    def enqueue_many(self, specs, ids=None):
        from ..models import Job

        if ids is not None:
            return super().enqueue_many(specs, ids)
        specs = list(specs)  # read once, see Store.enqueue_many
        rows = [Job(**self._model_kwargs(spec)) for spec in specs]
        created = self.jobs().bulk_create(rows)
        if created and created[0].pk is not None:
            return [self.get(job.pk) for job in created]
        return [self.enqueue(spec) for spec in specs]  # vendors without RETURNING

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
        cancelled = (
            self.jobs()
            .filter(pk__in=job_ids, status=records.READY)
            .update(status=records.CANCELLED, finished_at=self.now())
        )
        asked = (
            self.jobs()
            .filter(pk__in=job_ids, status=records.RUNNING, cancel_requested=False)
            .update(cancel_requested=True)
        )
        return cancelled, asked

    def requeue(self, job_ids):
        """Make failed or cancelled jobs ready again, with fresh attempts.

        A job whose ``unique_key`` another ready or running job holds (or one taken
        back just before it, for the same key) stays as it is, rather than failing
        the whole call: two active jobs never share a key.
        """
        finished = self.jobs().filter(
            pk__in=list(job_ids), status__in=[records.FAILED, records.CANCELLED]
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
        requeued = finished.filter(unique_key__isnull=True).update(**ready_again)
        keyed = finished.filter(unique_key__isnull=False).order_by("pk")
        for pk in list(keyed.values_list("pk", flat=True)):
            try:
                with transaction.atomic(using=self.alias):  # a savepoint inside the caller's
                    requeued += finished.filter(pk=pk).update(**ready_again)
            except IntegrityError:
                pass  # its key is taken
        if requeued:  # afresh, attempts from 0: the attempts kept go
            afresh = self.jobs().filter(pk__in=list(job_ids), status=records.READY, attempts=0)
            self.attempts().filter(job_id__in=list(afresh.values_list("pk", flat=True))).delete()
        if requeued:
            self.notify_ready()
        return requeued

    # -- workers -----------------------------------------------------------------

    def _mine(self, worker_id, job_ids):
        return self.jobs().filter(pk__in=list(job_ids), status=records.RUNNING, worker_id=worker_id)

    def finish(self, worker_id, results):
        # Portable fallback: one UPDATE per job. Vendor stores batch this.
        if not self.keep_succeeded:
            self._mine(worker_id, [job_id for job_id, _ in results]).delete()
            return
        for job_id, result in results:
            self._mine(worker_id, [job_id]).update(
                status=records.SUCCEEDED,
                result=result,
                finished_at=self.now(),
                lease_expires_at=None,
            )

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
                outcome = records.CANCELLED if attempt["cancel_requested"] else records.RETRIED
                self._keep_attempts([(attempt, outcome, error)], worker_id)

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

    #: What ``_keep_attempts`` reads of a job's current attempt.
    ATTEMPT_FIELDS = ("pk", "queue", "run_at", "started_at", "attempts", "cancel_requested")

    def _current_attempt(self, worker_id, job_id):
        """The running attempt of ``job_id`` under ``worker_id``, locked until the
        transaction ends (``ATTEMPT_FIELDS``), or None."""
        return (
            self._mine(worker_id, [job_id]).select_for_update().values(*self.ATTEMPT_FIELDS).first()
        )

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
            .annotate(oldest=Min(Greatest("run_at", Value(EARLIEST, DateTimeField()))))
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
            deleted += self._delete_jobs(self.jobs().filter(pk__in=batch))

    def _delete_jobs(self, jobs):
        """Delete ``jobs`` (a queryset) and their attempts; return how many jobs."""
        _, deleted = jobs.delete()
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
        self.workers().filter(
            heartbeat_at__lt=self.now() - Value(seconds(3 * self.lease_seconds))
        ).delete()
        # Read through the lease index (no ORDER BY, which would scan the table
        # in id order), then updated in id order: racing rescuers lock alike.
        expired = sorted(
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
            )[: self.rescue_batch]
        )
        if not expired:
            return records.Rescued(0)
        rescued, ended = 0, []
        error_field = self.jobs().model._meta.get_field("error")
        with self._rescue_transaction():
            lost = {}  # worker id -> [(attempt, outcome, error)] of its attempts rescued
            for row in expired:
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
                    error=Value(error, output_field=error_field),
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
                rescued += taken
                if taken and status != records.READY:
                    ended.append(pk)
                if taken:
                    attempt = {"pk": pk, "attempts": attempts, "queue": row[5],
                               "run_at": row[6], "started_at": row[7]}  # fmt: skip
                    outcome = records.RETRIED if status == records.READY else status
                    lost.setdefault(worker_id, []).append((attempt, outcome, error))
            for worker_id, attempts in lost.items():
                self._keep_attempts(attempts, worker_id)
        if rescued:
            self.notify_ready()  # no enqueue told the workers of these
        return records.Rescued(rescued, ended)

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
                oldest=Min(Greatest("run_at", Value(EARLIEST, DateTimeField())), filter=due),
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
            return [
                self.enqueue_unique(spec) if spec.unique_key else self.enqueue(spec)
                for spec in specs
            ]

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
