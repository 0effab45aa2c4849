"""The in-memory store: the whole store contract over dicts in this process.

For tests (``pgjobs.testing`` re-exports it) and as the contract's plainest
reading: each method is what the SQL and Redis stores do in their statements
and scripts, written out in Python. Nothing survives the process, and nothing
is shared with other processes: a ``Worker`` in this process can work it, a
``pgjobs_worker`` command cannot.

Threads: every method takes the store's one lock, so a producer thread, a
worker's main thread, its slots and its listener may call any of them at any
time; a method sees and leaves the jobs consistent, as a transaction would.
``wait`` blocks on a condition of that lock, notified when a job becomes due
(enqueued due now, or released, rescued or requeued).

Time is ``clock()`` (``django.utils.timezone.now`` unless given), read under
the lock: a test that passes a clock it moves by hand can make deferred jobs
due and leases expire without sleeping.
"""

import collections
import dataclasses
import datetime
import itertools
import json
import threading
import time

from django.utils import timezone

from .. import records, stats
from ..queue_control import admit, effective
from ..records import (
    AttemptInfo,
    BatchInfo,
    ClaimedJob,
    JobInfo,
    QueueFigures,
    ScheduleInfo,
    Wakeup,
)
from ..serialization import dumps
from .base import Store, args_json, with_current_attempt, worker_lost_error

_ACTIVE = (records.READY, records.RUNNING)
_CANCELLABLE = (records.READY, records.WAITING)
# Errors of decoding stored arguments: malformed JSON or an integer too long
# (ValueError), nesting deeper than the recursion limit (RecursionError).
_DECODE_ERRORS = (ValueError, TypeError, RecursionError)
# Wake-ups kept for listeners that have not read them yet (a listener further
# behind than this is told it was woken, as a reconnected LISTEN would be).
_WAKEUPS_KEPT = 1000


# The fields of a _Job read straight from its JobSpec, and those of JobInfo and
# ClaimedJob read straight from a _Job.
_SPEC_FIELDS = ("func", "queue", "priority", "run_at", "max_attempts", "timeout", "unique_key",
                "signature", "traceparent")  # fmt: skip
_INFO_FIELDS = ("id", "func", "queue", "status", "priority", "run_at", "attempts", "max_attempts",
                "created_at", "started_at", "finished_at", "worker_id")  # fmt: skip
_CLAIMED_FIELDS = ("id", "func", "queue", "priority", "run_at", "attempts", "max_attempts",
                   "timeout", "signature", "traceparent")  # fmt: skip


@dataclasses.dataclass(slots=True)
class _Batch:
    """One stored batch: the columns of the Batch table, and its jobs' ids."""

    id: int
    description: str
    job_ids: list
    created_at: datetime.datetime
    pending: int
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    finished_at: datetime.datetime | None = None
    on_finish_id: int | None = None
    on_success_id: int | None = None


@dataclasses.dataclass(slots=True)
class _Job:
    """One stored job: the columns of the Job table. Arguments, result and error
    are kept as JSON text, so that every read hands out fresh objects, as a
    database would, and a caller changing them changes nothing stored."""

    id: int | None  # None until written
    func: str
    args: str
    kwargs: str
    queue: str
    priority: int
    run_at: datetime.datetime | None  # None: due when written
    max_attempts: int
    timeout: float | None
    unique_key: str | None
    signature: str
    traceparent: str | None
    created_at: datetime.datetime | None
    status: str = records.READY
    attempts: int = 0
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    result: str | None = None
    error: str | None = None
    worker_id: str | None = None
    lease_expires_at: datetime.datetime | None = None
    cancel_requested: bool = False
    batch_id: int | None = None
    after: int | None = None  # the job this one runs after (a chain)
    has_dependents: bool = False
    previous_result: str | None = None

    def claim_order(self):
        return (-self.priority, self.run_at, self.id)

    def info(self):
        return JobInfo(
            **{name: getattr(self, name) for name in _INFO_FIELDS},
            result=_load(self.result),
            error=_load(self.error),
            args=_readable(self.args),
            kwargs=_readable(self.kwargs),
        )


def _load(text):
    return None if text is None else json.loads(text)


def _as_id(job_id):
    """Ids are ints; one given as text (from a URL, a form) finds its job too, as
    the other stores' queries find it."""
    if isinstance(job_id, str):
        try:
            return int(job_id)
        except ValueError:
            return job_id
    return job_id


def _readable(text):
    """Arguments as stored, or None when they cannot be decoded (a claim reports
    why: ``_claimed``)."""
    try:
        return json.loads(text)
    except _DECODE_ERRORS:
        return None


def _job_from(spec):
    """A ``_Job`` for ``spec``, its arguments encoded, not yet written: no id, no
    creation time, and no ``run_at`` when due now. Refuses what the database
    stores' constraints refuse."""
    if not records.MIN_PRIORITY <= spec.priority <= records.MAX_PRIORITY:
        raise ValueError(f"pgjobs: priority out of range: {spec.priority}")
    if spec.max_attempts < 1:
        raise ValueError(f"pgjobs: max_attempts must be >= 1: {spec.max_attempts}")
    return _Job(
        id=None,
        args=args_json(spec),
        kwargs=dumps(spec.kwargs),
        created_at=None,
        after=None if spec.after is None else _as_id(spec.after),
        **{name: getattr(spec, name) for name in _SPEC_FIELDS},
    )


@dataclasses.dataclass
class _QueueRecord:
    """A queue's stored control and its rate window (``QueueControl`` in SQL)."""

    queue: str
    paused: bool = False
    concurrency: int | None = None
    rate: int | None = None
    period: float | None = None
    window_start: float | None = None
    window_count: int = 0

    def control(self):
        return records.QueueControl(
            self.queue, self.paused, self.concurrency, self.rate, self.period
        )


class InMemoryStore(Store):
    """Jobs, workers and schedules in this process's memory (see the module docstring).

    Options: ``lease_seconds`` as for every store; ``keep_succeeded`` (False:
    a job that succeeds is deleted at once, as ``KEEP_SUCCEEDED = False`` does
    in the database stores); ``clock``, a callable returning the current time
    (an aware datetime, or naive in ``TIME_ZONE`` when ``USE_TZ`` is off).

    It cannot join a database transaction, so ``enqueues_in_transaction`` is
    False: an enqueue is stored at once, whatever ``transaction.atomic()``
    block it happens in, and a storing backend holds jobs until commit through
    the deferred-write methods (``reserve_ids``, ``new_info``,
    ``enqueue_many(specs, ids)``, ``active_holder``).
    """

    supports_listen = True
    claims_in_order = True
    supports_live_workers = True
    supports_schedules = True
    enqueues_in_transaction = False
    # A condition wakes workers for due jobs; polling only backs it up.
    default_poll_interval = 1.0

    def __init__(self, *, lease_seconds=20.0, keep_succeeded=True, clock=None):
        super().__init__()
        self.lease_seconds = lease_seconds
        self.keep_succeeded = keep_succeeded
        self.clock = clock or timezone.now
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._jobs = {}  # id -> _Job
        self._unique = {}  # unique_key -> id of the ready or running job holding it
        self._workers = {}  # worker id -> its registry record (a dict)
        self._registered = {}  # worker id -> the record it registered with
        self._schedules = {}  # name -> ScheduleInfo
        self._attempts = {}  # job id -> [AttemptInfo] of its attempts that did not succeed
        self._figures = {}  # (minute, queue, metric, bucket) -> [count, total]
        self._batches = {}  # id -> _Batch
        self._queue_controls = {}  # queue -> _QueueRecord
        # Wake-ups, numbered: each listening thread reads those after the last it read.
        self._wakeups = collections.deque(maxlen=_WAKEUPS_KEPT)
        self._wakeup_count = 0
        self._listening = False
        self._listen_queues = None
        self._listen_from = 0
        self._read_up_to = threading.local()

    def describe(self):
        return "in-memory store, woken by a condition"

    def _lease(self, now):
        return now + datetime.timedelta(seconds=self.lease_seconds)

    # -- producers -------------------------------------------------------------------

    def enqueue(self, spec):
        return self.enqueue_many([spec])[0]

    def enqueue_unique(self, spec):
        return self.enqueue_many([spec])[0]

    def enqueue_many(self, specs, ids=None):
        """Write ``specs``, all or none, with ``ids`` reserved earlier
        (``reserve_ids``) or new ones. A job whose ``unique_key`` a ready or
        running job holds is not written: that job's ``JobInfo`` stands in for it
        (the Redis store does the same; the SQL stores' backends send such jobs
        to ``enqueue_unique`` one by one)."""
        # Every spec made, checked and encoded before the first job is written.
        jobs = [_job_from(spec) for spec in specs]
        if ids is not None and len(ids) != len(jobs):
            raise ValueError(f"{len(jobs)} jobs but {len(ids)} ids")
        with self._lock:
            if ids is not None and any(job_id in self._jobs for job_id in ids):
                raise ValueError("a reserved id is taken by a job already written")
            now = self.clock()
            infos = []
            due = {}  # queue -> [first id, count] of the jobs due now
            for job in jobs:  # refused before anything is written
                if job.after is not None and job.after not in self._jobs:
                    if ids is None or job.after not in ids:
                        raise ValueError(f"pgjobs: no job {job.after} to run after")
            for n, job in enumerate(jobs):
                holder = self._holder(job.unique_key)
                if holder is not None:
                    infos.append(holder.info())
                    continue
                job.id = next(self._ids) if ids is None else ids[n]
                job.created_at = now
                if job.run_at is None:
                    job.run_at = now
                self._jobs[job.id] = job
                if job.unique_key is not None:
                    self._unique[job.unique_key] = job.id
                if job.after is not None:
                    self._follow(job, self._jobs[job.after], now)
                if job.status == records.READY and job.run_at <= now:
                    first = due.setdefault(job.queue, [job.id, 0])
                    first[0] = min(first[0], job.id)
                    first[1] += 1
                infos.append(job.info())
            if due:
                self._wake([Wakeup(queue, first, count) for queue, (first, count) in due.items()])
            return infos

    def _follow(self, job, previous, now):
        """``job`` runs after ``previous``: waiting, or settled at once when
        ``previous`` has finished already."""
        if previous.status == records.SUCCEEDED:
            job.status = records.READY
            job.previous_result = previous.result
        elif previous.status in records.FINISHED_STATUSES:
            job.error = dumps(records.previous_failed_error(previous.id, previous.status))
            self._end(job, records.CANCELLED, now)
        else:
            job.status = records.WAITING
            previous.has_dependents = True

    def _holder(self, unique_key):
        """The ready or running job holding ``unique_key``, or None."""
        if unique_key is None:
            return None
        job = self._jobs.get(self._unique.get(unique_key))
        return job if job is not None and job.status in _ACTIVE else None

    def get(self, job_id):
        with self._lock:
            job = self._jobs.get(_as_id(job_id))
            return None if job is None else job.info()

    def cancel(self, job_id):
        cancelled, _ = self.cancel_many([job_id])
        return bool(cancelled)

    def cancel_many(self, job_ids):
        with self._lock:
            now = self.clock()
            cancelled = asked = 0
            for job_id in job_ids:
                job = self._jobs.get(_as_id(job_id))
                if job is None:
                    continue
                if job.status in _CANCELLABLE:
                    self._end(job, records.CANCELLED, now)
                    cancelled += 1
                elif job.status == records.RUNNING and not job.cancel_requested:
                    job.cancel_requested = True
                    asked += 1
            return cancelled, asked

    def requeue(self, job_ids):
        """Failed or cancelled jobs ready again with fresh attempts; one whose
        ``unique_key`` an active job holds stays as it is."""
        with self._lock:
            now = self.clock()
            requeued = 0
            for job_id in dict.fromkeys(_as_id(job_id) for job_id in job_ids):
                job = self._jobs.get(job_id)
                if job is None or job.status not in (records.FAILED, records.CANCELLED):
                    continue
                if self._holder(job.unique_key) is not None:
                    continue
                batch = self._batches.get(job.batch_id)
                if batch is not None:  # pending again (callbacks released stay so)
                    setattr(batch, job.status, getattr(batch, job.status) - 1)
                    batch.pending += 1
                job.status = records.READY
                job.attempts = 0
                job.run_at = now
                job.started_at = job.finished_at = job.worker_id = job.result = None
                job.lease_expires_at = None
                job.cancel_requested = False
                self._attempts.pop(job.id, None)  # afresh, its attempts from 0
                if job.unique_key is not None:
                    self._unique[job.unique_key] = job.id
                requeued += 1
            if requeued:
                self.notify_ready()
            return requeued

    def run_now(self, job_ids):
        with self._lock:
            now = self.clock()
            due = 0
            for job_id in dict.fromkeys(_as_id(job_id) for job_id in job_ids):
                job = self._jobs.get(job_id)
                if job is None or job.status != records.READY or job.run_at is None:
                    continue
                if job.run_at > now:
                    job.run_at = now
                    due += 1
            if due:
                self.notify_ready()
            return due

    def _delete(self, job):
        """Forget ``job`` and its attempts."""
        del self._jobs[job.id]
        self._attempts.pop(job.id, None)

    def _keep_attempt(self, job, outcome, now, error):
        """Keep ``job``'s current attempt, which ended with ``outcome`` and ``error``
        (JSON text), and count it in the figures."""
        attempt = AttemptInfo(
            job.attempts, job.started_at, now, job.worker_id, outcome, _load(error)
        )
        self._attempts.setdefault(job.id, []).append(attempt)
        self._count(job, outcome, now)

    def _count(self, job, outcome, now):
        """Add an attempt of ``job`` that ended ``now`` with ``outcome`` to the figures."""
        wait = run = None
        if job.started_at is not None:
            wait = (job.started_at - job.run_at).total_seconds()
            run = (now - job.started_at).total_seconds()
        minute = stats.minute_of(now)
        for _, queue, _, metric, bucket, count, total in stats.attempt_rows(
            minute, job.queue, 0, outcome, wait, run
        ):
            figure = self._figures.setdefault((minute, queue, metric, bucket), [0, 0.0])
            figure[0] += count
            figure[1] += total

    def _end(self, job, status, now):
        """``job`` finished with ``status``: it no longer holds its lease or key;
        its batch counts it, and the jobs waiting for it are settled."""
        job.status = status
        job.finished_at = now
        job.lease_expires_at = None
        if job.unique_key is not None and self._unique.get(job.unique_key) == job.id:
            del self._unique[job.unique_key]
        if job.batch_id is not None:
            self._count_in_batch(self._batches[job.batch_id], status, now)
        if job.has_dependents:
            for waiting in [j for j in self._jobs.values() if j.after == job.id]:
                if waiting.status == records.WAITING:
                    self._follow(waiting, job, now)
                    if waiting.status == records.READY:
                        waiting.run_at = max(waiting.run_at, now)
                        self._wake([Wakeup(waiting.queue, waiting.id)])

    def _count_in_batch(self, batch, status, now):
        """One of ``batch``'s jobs ended with ``status``; the last one releases
        the callbacks (each leaves ``waiting`` once)."""
        setattr(batch, status, getattr(batch, status) + 1)
        batch.pending -= 1
        if batch.pending:
            return
        batch.finished_at = now
        all_succeeded = batch.succeeded == len(batch.job_ids)
        for callback_id, release in ((batch.on_finish_id, True),
                                     (batch.on_success_id, all_succeeded)):  # fmt: skip
            callback = self._jobs.get(callback_id)
            if callback is None or callback.status != records.WAITING:
                continue
            if release:
                callback.status = records.READY
                callback.run_at = max(callback.run_at, now)
                self._wake([Wakeup(callback.queue, callback.id)])
            else:
                failed = records.batch_failed_error(batch.id, batch.failed, batch.cancelled)
                callback.error = dumps(failed)
                self._end(callback, records.CANCELLED, now)

    # -- the deferred-write part of the contract -----------------------------------------

    # -- batches and chains -----------------------------------------------------------

    def enqueue_batch(
        self, specs, on_finish=None, on_success=None, description="", *, batch_id=None, ids=None
    ):
        specs = list(specs)
        if not specs:
            raise ValueError("pgjobs: a batch needs at least one job")
        callbacks = [spec for spec in (on_finish, on_success) if spec is not None]
        if ids is not None and len(ids) != len(specs) + len(callbacks):
            raise ValueError(f"{len(specs) + len(callbacks)} jobs but {len(ids)} ids")
        for spec in specs:
            if spec.after is not None or spec.unique_key is not None:
                raise ValueError("pgjobs: a batch's jobs take neither after nor unique_key")
        with self._lock:
            if batch_id is None:
                batch_id = next(self._ids)
            elif batch_id in self._batches:
                raise ValueError("a reserved batch id is taken by a batch already written")
            now = self.clock()
            batch = _Batch(batch_id, description, [], now, len(specs))
            written = self.enqueue_many([*specs, *callbacks], ids)
            infos, callback_infos = written[: len(specs)], written[len(specs) :]
            for info in callback_infos:  # written under the lock: nobody claimed them
                self._jobs[info.id].status = records.WAITING
            callback_ids = iter(info.id for info in callback_infos)
            batch.on_finish_id = None if on_finish is None else next(callback_ids)
            batch.on_success_id = None if on_success is None else next(callback_ids)
            for info in infos:
                self._jobs[info.id].batch_id = batch_id
                batch.job_ids.append(info.id)
            self._batches[batch_id] = batch
            return self._batch_info(batch), [self._jobs[info.id].info() for info in infos]

    def _batch_info(self, batch):
        counts = dict.fromkeys(records.STATUSES, 0)
        for job_id in batch.job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.status not in records.FINISHED_STATUSES:
                counts[job.status] += 1
        counts.update(succeeded=batch.succeeded, failed=batch.failed, cancelled=batch.cancelled)
        return BatchInfo(
            id=batch.id,
            total=len(batch.job_ids),
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

    def get_batch(self, batch_id):
        with self._lock:
            batch = self._batches.get(_as_id(batch_id))
            return None if batch is None else self._batch_info(batch)

    def batch_jobs(self, batch_id):
        with self._lock:
            batch = self._batches.get(_as_id(batch_id))
            if batch is None:
                return []
            return [self._jobs[i].info() for i in sorted(batch.job_ids) if i in self._jobs]

    def cancel_batch(self, batch_id):
        with self._lock:
            batch = self._batches.get(_as_id(batch_id))
            return (0, 0) if batch is None else self.cancel_many(batch.job_ids)

    def prune_batches(self, older_than, limit):
        with self._lock:
            cutoff = self.clock() - older_than
            old = sorted(
                (batch.finished_at, batch.id)
                for batch in self._batches.values()
                if batch.pending == 0
                and batch.finished_at is not None
                and batch.finished_at < cutoff
            )[:limit]
            for _, batch_id in old:
                del self._batches[batch_id]
            return len(old)

    def previous_result(self, job_id):
        with self._lock:
            job = self._jobs.get(_as_id(job_id))
            return None if job is None else _load(job.previous_result)

    def reserve_ids(self, count):
        """``count`` new job ids, for jobs written later (``enqueue_many(specs, ids)``)."""
        with self._lock:
            return [next(self._ids) for _ in range(count)]

    @staticmethod
    def new_info(spec, job_id):
        """The ``JobInfo`` of a job about to be written with id ``job_id``."""
        job = _job_from(spec)
        job.id = job_id
        return job.info()

    def active_holder(self, unique_key):
        """The ``JobInfo`` of the ready or running job holding ``unique_key``, or None."""
        with self._lock:
            job = self._holder(unique_key)
            return None if job is None else job.info()

    # -- workers -----------------------------------------------------------------------

    def claim(self, queues, limit, worker_id):
        plan = self.controls.plan(queues)  # before the store's lock: the cache reads under it
        with self._lock:
            now = self.clock()
            if plan is None:
                return self._take(None if not queues else set(queues), (), limit, worker_id, now)
            claimed = []
            defaults = self.controls.defaults()
            for limited in plan.limited:
                queue = limited.queue
                record = self._queue_controls.setdefault(queue, _QueueRecord(queue))
                control = effective(queue, record.control(), defaults)
                running = sum(
                    1
                    for job in self._jobs.values()
                    if job.status == records.RUNNING and job.queue == queue
                )
                allowed, record.window_start, count = admit(
                    control,
                    running,
                    record.window_start,
                    record.window_count,
                    now.timestamp(),
                    limit - len(claimed),
                )
                got = self._take({queue}, (), allowed, worker_id, now) if allowed else []
                record.window_count = count + len(got)
                claimed += got
            if plan.others and len(claimed) < limit:
                wanted = None if plan.include is None else set(plan.include)
                claimed += self._take(
                    wanted, set(plan.exclude), limit - len(claimed), worker_id, now
                )
            claimed.sort(key=lambda job: -job.priority)
            return claimed

    def _take(self, wanted, excluded, limit, worker_id, now):
        """Claim up to ``limit`` due jobs of ``wanted`` queues (None: any) but ``excluded``."""
        with self._lock:
            due = [
                job
                for job in self._jobs.values()
                if job.status == records.READY
                and job.run_at <= now
                and (wanted is None or job.queue in wanted)
                and job.queue not in excluded
            ]
            due.sort(key=_Job.claim_order)
            claimed = []
            for job in due[: max(0, limit)]:
                job.status = records.RUNNING
                job.attempts += 1
                job.started_at = now
                job.worker_id = worker_id
                job.lease_expires_at = self._lease(now)
                claimed.append(_claimed(job))
            return claimed

    def _mine(self, worker_id, job_id):
        """The job if it is running under ``worker_id``, else None."""
        job = self._jobs.get(_as_id(job_id))
        if job is None or job.status != records.RUNNING or job.worker_id != worker_id:
            return None
        return job

    def finish(self, worker_id, results):
        encoded = [(job_id, dumps(result)) for job_id, result in results]
        with self._lock:
            now = self.clock()
            for job_id, result in encoded:
                job = self._mine(worker_id, job_id)
                if job is None:
                    continue  # its lease was lost: another worker has it now
                job.result = result  # before _end: the jobs waiting for it take it
                self._end(job, records.SUCCEEDED, now)
                self._count(job, records.SUCCEEDED, now)
                if not self.keep_succeeded:
                    self._delete(job)

    def finish_and_claim(self, worker_id, results, queues, limit):
        with self._lock:  # one step, as the stores that do it in one statement
            return super().finish_and_claim(worker_id, results, queues, limit)

    def retry(self, worker_id, job_id, error, delay):
        """Ready again in ``delay`` seconds; cancelled instead when its cancellation
        was asked for while it ran."""
        error = dumps(error)
        with self._lock:
            now = self.clock()
            job = self._mine(worker_id, job_id)
            if job is None:
                return
            outcome = records.CANCELLED if job.cancel_requested else records.RETRIED
            self._keep_attempt(job, outcome, now, error)
            job.error = error
            job.worker_id = None
            if job.cancel_requested:
                self._end(job, records.CANCELLED, now)
                return
            job.status = records.READY
            job.run_at = now + datetime.timedelta(seconds=delay)
            job.lease_expires_at = None

    def snooze(self, worker_id, job_id, delay):
        with self._lock:
            job = self._mine(worker_id, job_id)
            if job is None:
                return
            if job.cancel_requested:  # asked to stop while it ran: an end, not a nap
                job.worker_id = None
                self._end(job, records.CANCELLED, self.clock())
                return
            job.status = records.READY
            job.attempts -= 1
            job.run_at = self.clock() + datetime.timedelta(seconds=delay)
            job.worker_id = job.started_at = job.lease_expires_at = None

    # -- queue control ---------------------------------------------------------------

    def queue_controls(self):
        with self._lock:
            return {queue: record.control() for queue, record in self._queue_controls.items()}

    def set_queue_control(self, queue, **changes):
        unknown = set(changes) - {"paused", "concurrency", "rate", "period"}
        if unknown:
            raise TypeError(f"unknown queue control field(s): {', '.join(sorted(unknown))}")
        with self._lock:
            record = self._queue_controls.setdefault(queue, _QueueRecord(queue))
            for name, value in changes.items():
                setattr(record, name, bool(value) if name == "paused" else value)
            control = record.control()
        self.controls.forget()  # outside the store's lock: the cache takes it to read
        return control

    def fail(self, worker_id, job_id, error, status=records.FAILED):
        error = dumps(error)
        with self._lock:
            job = self._mine(worker_id, job_id)
            if job is not None:
                now = self.clock()
                self._keep_attempt(job, status, now, error)
                job.error = error
                self._end(job, status, now)

    def heartbeat(self, worker_id, job_ids):
        with self._lock:
            now = self.clock()
            record = self._workers.get(worker_id)
            if record is None and worker_id in self._registered:
                # A rescue dropped it while it could not heartbeat: list it again.
                record = self._workers[worker_id] = dict(self._registered[worker_id])
            if record is not None:
                record["heartbeat_at"] = now
            cancel = []
            for job_id in job_ids:
                job = self._mine(worker_id, job_id)
                if job is not None:
                    job.lease_expires_at = self._lease(now)
                    if job.cancel_requested:
                        cancel.append(job_id)
            return cancel

    def release(self, worker_id, job_ids):
        with self._lock:
            released = 0
            for job_id in job_ids:
                job = self._mine(worker_id, job_id)
                if job is not None:
                    job.status = records.READY
                    job.attempts -= 1
                    job.worker_id = job.started_at = job.lease_expires_at = None
                    released += 1
            if released:
                self.notify_ready()  # for the workers that stay

    def rescue(self):
        with self._lock:
            now = self.clock()
            stale = now - datetime.timedelta(seconds=3 * self.lease_seconds)
            for worker_id in [w for w, r in self._workers.items() if r["heartbeat_at"] < stale]:
                del self._workers[worker_id]
            rescued, ended = 0, []
            for job in self._jobs.values():
                if job.status != records.RUNNING or job.lease_expires_at >= now:
                    continue
                rescued += 1
                if job.cancel_requested:
                    status = records.CANCELLED
                elif job.attempts >= job.max_attempts:
                    status = records.FAILED
                else:
                    status = records.READY
                lost = worker_lost_error(job.worker_id, job.attempts, job.max_attempts, status)
                job.error = dumps(lost)
                outcome = records.RETRIED if status == records.READY else status
                self._keep_attempt(job, outcome, now, job.error)
                job.worker_id = None
                if status == records.READY:
                    job.status = records.READY
                    job.lease_expires_at = None
                else:
                    self._end(job, status, now)
                    ended.append(job.id)
            if rescued:
                self.notify_ready()  # no enqueue told the workers of these
            return records.Rescued(rescued, ended)

    def seconds_until_due(self, queues):
        with self._lock:
            ready = [job.run_at for job in self._ready(queues)]
            if not ready:
                return None
            return max(0.0, (min(ready) - self.clock()).total_seconds())

    def count_due(self, queues):
        with self._lock:
            now = self.clock()
            return sum(1 for job in self._ready(queues) if job.run_at <= now)

    def _ready(self, queues):
        wanted = None if not queues else set(queues)
        return (
            job
            for job in self._jobs.values()
            if job.status == records.READY and (wanted is None or job.queue in wanted)
        )

    # -- the worker registry and status ---------------------------------------------------

    def register_worker(self, worker_id, hostname, pid, queues, concurrency):
        with self._lock:
            now = self.clock()
            record = {
                "id": worker_id,
                "hostname": hostname,
                "pid": pid,
                "queues": list(queues or []),
                "concurrency": concurrency,
                "started_at": now,
                "heartbeat_at": now,
            }
            self._workers[worker_id] = record
            self._registered[worker_id] = dict(record)

    def unregister_worker(self, worker_id):
        with self._lock:
            self._workers.pop(worker_id, None)
            self._registered.pop(worker_id, None)

    def live_workers(self):
        with self._lock:
            fresh = self.clock() - datetime.timedelta(seconds=self.lease_seconds / 2)
            return [
                (worker_id, list(record["queues"]) or None)
                for worker_id, record in self._workers.items()
                if record["heartbeat_at"] >= fresh
            ]

    def status(self):
        with self._lock:
            now = self.clock()
            stale = now - datetime.timedelta(seconds=3 * self.lease_seconds)
            running = collections.Counter(
                job.worker_id for job in self._jobs.values() if job.status == records.RUNNING
            )
            workers = [
                {**record, "running": running.get(record["id"], 0)}
                for record in sorted(self._workers.values(), key=lambda r: r["started_at"])
                if record["heartbeat_at"] >= stale
            ]
            counts, oldest = {}, {}
            for job in self._jobs.values():
                queue_counts = counts.setdefault(job.queue, {})
                queue_counts[job.status] = queue_counts.get(job.status, 0) + 1
                if job.status == records.READY and job.run_at <= now:
                    oldest[job.queue] = min(oldest.get(job.queue, job.run_at), job.run_at)
            queues = []
            for queue in sorted(counts):
                due = oldest.get(queue)
                waited = None if due is None else (now - due).total_seconds()
                queues.append(
                    {"queue": queue, "counts": counts[queue], "oldest_due_seconds": waited}
                )
            return {"workers": workers, "queues": queues}

    def prune(self, older_than, statuses, batch_size=1000, dry_run=False):
        with self._lock:
            expired = self._expired(older_than, statuses)
            if not dry_run:
                for job in expired:
                    self._delete(job)
            return len(expired)

    def prune_batch(self, older_than, statuses, limit):
        with self._lock:
            expired = self._expired(older_than, statuses)
            expired.sort(key=lambda job: (job.status, job.finished_at))
            for job in expired[:limit]:
                self._delete(job)
            return min(limit, len(expired))

    def _expired(self, older_than, statuses):
        cutoff = self.clock() - older_than
        statuses = set(statuses)
        return [
            job
            for job in self._jobs.values()
            if job.status in statuses and job.finished_at is not None and job.finished_at < cutoff
        ]

    # -- history and figures ------------------------------------------------------------

    def job_attempts(self, job_id):
        with self._lock:
            job_id = _as_id(job_id)
            kept = [dataclasses.replace(a) for a in self._attempts.get(job_id, [])]
            job = self._jobs.get(job_id)
            row = None
            if job is not None:
                row = (job.status, job.attempts, job.started_at, job.finished_at, job.worker_id)
            return with_current_attempt(kept, row)

    def queue_figures(self):
        with self._lock:
            now = self.clock()
            figures = {}
            for job in self._jobs.values():
                if job.status not in (records.READY, records.RUNNING):
                    continue
                queue = figures.setdefault(job.queue, QueueFigures(job.queue))
                if job.status == records.RUNNING:
                    queue.running += 1
                elif job.run_at > now:
                    queue.deferred += 1
                else:
                    queue.ready += 1
                    waited = (now - job.run_at).total_seconds()
                    queue.oldest_due_seconds = max(queue.oldest_due_seconds or 0.0, waited)
            hour_ago = stats.minute_of(now - datetime.timedelta(hours=1))
            for (minute, queue, metric, _), (count, _) in self._figures.items():
                if metric == records.FAILED and minute >= hour_ago:
                    figures.setdefault(queue, QueueFigures(queue)).failed_last_hour += count
            return [figures[queue] for queue in sorted(figures)]

    def minute_figures(self, since):
        with self._lock:
            if isinstance(since, datetime.timedelta):
                since = self.clock() - since
            since = stats.minute_of(since)
            rows = [
                (minute, queue, metric, bucket, count, total)
                for (minute, queue, metric, bucket), (count, total) in self._figures.items()
                if minute >= since
            ]
            return stats.figures_from_rows(rows)

    def prune_figures(self, older_than):
        with self._lock:
            cutoff = stats.minute_of(self.clock() - older_than)
            old = [key for key in self._figures if key[0] < cutoff]
            for key in old:
                del self._figures[key]
            return len(old)

    # -- schedules ---------------------------------------------------------------------

    def get_schedules(self, names):
        with self._lock:
            return {
                name: dataclasses.replace(self._schedules[name])
                for name in names
                if name in self._schedules
            }

    def create_schedule(self, name, last_tick):
        with self._lock:
            if name in self._schedules:
                return False
            self._schedules[name] = ScheduleInfo(name, min(last_tick, self.clock()))
            return True

    def advance_schedule(self, name, last_tick, new_last_tick, specs):
        specs = list(specs)
        with self._lock:
            schedule = self._schedules.get(name)
            if schedule is None or schedule.last_tick != last_tick:
                return None  # another worker advanced it first
            if new_last_tick > self.clock():
                return None  # this host's clock runs ahead of the store's
            infos = self.enqueue_many(specs)  # checks every spec before writing any
            schedule.last_tick = new_last_tick
            if specs:
                schedule.last_run = new_last_tick
            return infos

    # -- wake-ups -------------------------------------------------------------------------

    def notify_ready(self, queues=None):
        with self._lock:
            self._wake([Wakeup(queue) for queue in (queues or ["*"])])

    def _wake(self, wakeups):
        for wakeup in wakeups:
            self._wakeup_count += 1
            self._wakeups.append((self._wakeup_count, wakeup))
        self._changed.notify_all()

    def listen(self, queues):
        with self._lock:
            self._listen_queues = set(queues) if queues else None
            self._listening = True
            self._listen_from = self._wakeup_count

    def stop_listening(self):
        with self._lock:
            self._listening = False
            self._changed.notify_all()

    def wait(self, timeout):
        """Block until a job becomes due in a queue ``listen`` named, or ``timeout``
        seconds pass; return the wake-ups for those queues that this thread has
        not read yet (an empty list: only others' queues), or False."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._listening:
                self._changed.wait(timeout)
                return False
            read = max(getattr(self._read_up_to, "count", 0), self._listen_from)
            while self._listening and self._wakeup_count == read:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            if not self._listening or self._wakeup_count == read:
                return False
            self._read_up_to.count = self._wakeup_count
            if not self._wakeups or self._wakeups[0][0] > read + 1:
                return True  # some were dropped unread: look anyway
            queues = self._listen_queues
            return [
                wakeup
                for number, wakeup in self._wakeups
                if number > read
                and (queues is None or wakeup.queue in queues or wakeup.queue == "*")
            ]

    # -- for tests ------------------------------------------------------------------------

    def jobs(self, status=None):
        """Every stored job's ``JobInfo`` (only those in ``status``, if given), by id."""
        with self._lock:
            return [
                self._jobs[job_id].info()
                for job_id in sorted(self._jobs)
                if status is None or self._jobs[job_id].status == status
            ]

    def clear(self):
        """Forget every job, worker and schedule (a fresh store, ids going on)."""
        with self._lock:
            self._jobs.clear()
            self._unique.clear()
            self._workers.clear()
            self._registered.clear()
            self._schedules.clear()
            self._attempts.clear()
            self._figures.clear()
            self._batches.clear()


def _claimed(job):
    """The ``ClaimedJob`` of ``job``; ``problem`` says why when its arguments
    cannot be decoded (then the worker fails it at once, alone)."""
    try:
        args, kwargs, problem = json.loads(job.args), json.loads(job.kwargs), None
    except _DECODE_ERRORS as exc:
        args = kwargs = None
        problem = f"cannot decode the job's arguments: {type(exc).__name__}: {exc}"[:300]
    return ClaimedJob(
        **{name: getattr(job, name) for name in _CLAIMED_FIELDS},
        args=args,
        kwargs=kwargs,
        problem=problem,
    )
