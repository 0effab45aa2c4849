"""Plain records that pass between the layers: what to store, what a worker runs,
what a ref shows. No behaviour, no imports from the rest of pgjobs."""

import dataclasses
import datetime
from typing import Any

READY = "ready"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
#: Not claimable yet: a chained job whose previous job has not succeeded, or a
#: batch's callback whose batch has not finished. Becomes ready (or cancelled).
WAITING = "waiting"
STATUSES = (READY, RUNNING, SUCCEEDED, FAILED, CANCELLED, WAITING)
FINISHED_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELLED})

MIN_PRIORITY = -100
MAX_PRIORITY = 100
DEFAULT_PRIORITY = 0
DEFAULT_QUEUE = "default"


@dataclasses.dataclass(slots=True)
class JobSpec:
    """A validated job, arguments already encoded, ready for a store to write."""

    func: str
    args: list
    kwargs: dict
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    run_at: datetime.datetime | None = None  # None: due now, by the database's clock
    max_attempts: int = 3
    timeout: float | None = None
    unique_key: str | None = None
    signature: str = ""  # HMAC over (func, args, kwargs, queue); see serialization.sign_job
    # The JSON text of args, when whoever prepared the job made it already (a bulk
    # enqueue signs that text): a store may write it rather than encode args again.
    args_json: str | None = None
    # Run in a transaction on the jobs' database that also records the success
    # (``background.enqueue(..., atomic=True)``, ``pgjobs.atomic_job``).
    atomic: bool = False
    # A chain: the id of the job this one runs after. The job is stored ``waiting``
    # until that job succeeds (then ``ready``, with its result as this job's
    # ``previous_result``), or ``cancelled`` if it fails for good or is cancelled.
    after: Any = None
    # The W3C trace context of the span that enqueued the job (pgjobs/tracing.py).
    traceparent: str | None = None


@dataclasses.dataclass(slots=True)
class ClaimedJob:
    """A job a worker has claimed and is about to run."""

    id: Any
    func: str
    args: Any
    kwargs: Any
    queue: str
    priority: int
    run_at: datetime.datetime
    attempts: int  # including the attempt this claim starts
    max_attempts: int
    timeout: float | None = None
    signature: str = ""
    # Run in a transaction that records the success only while the lease is held.
    atomic: bool = False
    traceparent: str | None = None  # of the span that enqueued it (pgjobs/tracing.py)
    # Why the job cannot run, when the store claimed its row but could not read it
    # (arguments it cannot decode, ...): the worker fails it at once, alone.
    problem: str | None = None

    def claim_order(self):
        return (-self.priority, self.run_at, self.id)


@dataclasses.dataclass(frozen=True, slots=True)
class Wakeup:
    """What ``Store.wait`` was woken for: new jobs due now in ``queue``; with
    ``first_id`` (the lowest new job id) and ``count`` when the store knows them."""

    queue: str
    first_id: int | None = None
    count: int = 1


@dataclasses.dataclass(slots=True)
class JobInfo:
    """A snapshot of a stored job, as ``JobRef`` shows it."""

    id: Any
    func: str
    queue: str
    status: str
    priority: int = DEFAULT_PRIORITY
    run_at: datetime.datetime | None = None
    attempts: int = 0
    max_attempts: int = 3
    created_at: datetime.datetime | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    result: Any = None  # encoded, as stored
    error: dict | None = None
    worker_id: str | None = None
    args: Any = None  # encoded, as stored
    kwargs: Any = None


@dataclasses.dataclass(slots=True)
class BatchInfo:
    """A snapshot of a stored batch, as ``BatchRef`` shows it.

    ``total`` jobs were enqueued together; ``pending`` of them have not reached a
    final status yet. ``succeeded``, ``failed`` and ``cancelled`` count final
    outcomes only (a failed attempt that will be retried is still pending).
    ``counts`` is ``{status: n}`` over the batch's jobs, every status present
    (unfinished ones as stored now, finished ones from the counters, which
    pruning does not change). ``on_finish_id``/``on_success_id``: the callback
    jobs, stored ``waiting`` until the batch finishes, or None."""

    id: Any
    total: int
    pending: int
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    created_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    on_finish_id: Any = None
    on_success_id: Any = None
    counts: dict = dataclasses.field(default_factory=dict)
    description: str = ""

    @property
    def done(self):
        return self.total - self.pending

    @property
    def is_finished(self):
        return self.pending == 0


#: The error of a batch's ``on_success`` job when the batch had failures (it is
#: cancelled), and of a chained job whose previous job did not succeed.
DEPENDENCY_TYPE = "pgjobs.exceptions.DependencyFailed"


#: The message of that error: ``%s`` placeholders for the batch's id and its
#: failed and cancelled counts, so that the stores' SQL fills the same text.
BATCH_FAILED_MESSAGE = (
    "batch %s finished with %s failed and %s cancelled job(s); "
    "on_success runs only when every job succeeded"
)


def batch_failed_error(batch_id, failed, cancelled):
    """The stored error of the ``on_success`` job of a batch that did not all succeed."""
    message = BATCH_FAILED_MESSAGE % (batch_id, failed, cancelled)
    return {"type": DEPENDENCY_TYPE, "message": message, "traceback": message}


def previous_failed_error(previous_id, status):
    """The stored error of a chained job cancelled because job ``previous_id`` ended
    ``status`` (failed or cancelled) instead of succeeding."""
    message = f"cancelled: job {previous_id}, which this job runs after, {status}"
    return {"type": DEPENDENCY_TYPE, "message": message, "traceback": message}


@dataclasses.dataclass(slots=True)
class ScheduleInfo:
    """Where a schedule of ``SCHEDULE`` stands in the store (``pgjobs/schedule.py``)."""

    name: str
    last_tick: datetime.datetime  # ticks up to this time are settled (enqueued or passed over)
    last_run: datetime.datetime | None = None  # the latest tick enqueued


class Rescued(int):
    """What ``Store.rescue()`` did: how many jobs whose lease ran out it took back
    (the int itself, as callers counted before) and ``ended``, the ids of those it
    ended for good (failed, their attempts used up; or cancelled, as asked), whose
    finish nobody else will announce (``pgjobs.signals.job_lost``)."""

    def __new__(cls, count=0, ended=()):
        rescued = super().__new__(cls, count)
        rescued.ended = tuple(ended)
        return rescued

    def __repr__(self):
        return f"Rescued({int(self)}, ended={self.ended!r})"


#: How an attempt ended, as a job's attempts and the per-minute figures count it.
#: ``retried``: it failed and the job was made ready to run again.
OUTCOMES = (SUCCEEDED, FAILED, "retried", CANCELLED)
RETRIED = "retried"


@dataclasses.dataclass(slots=True)
class AttemptInfo:
    """One attempt of a job (``Store.job_attempts``): when it ran, on which
    worker, and how it ended (one of ``OUTCOMES``, or ``running``); ``error``
    (type, message, traceback) for one that did not succeed."""

    attempt: int
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    worker_id: str | None
    outcome: str
    error: dict | None = None


@dataclasses.dataclass(slots=True)
class QueueFigures:
    """Where a queue stands now (``Store.queue_figures``): ready jobs due now and
    deferred, running jobs, jobs failed for good in the last hour, and the wait
    of the oldest due job in seconds (None when none is due)."""

    queue: str
    ready: int = 0
    deferred: int = 0
    running: int = 0
    failed_last_hour: int = 0
    oldest_due_seconds: float | None = None


@dataclasses.dataclass(slots=True)
class MinuteFigures:
    """What finished in one queue in one minute (``Store.minute_figures``): the
    attempts by outcome, and wait time (due → start) and run time (start → end)
    as counts per bucket of ``pgjobs.stats.EDGES`` with their sums in seconds."""

    queue: str
    minute: datetime.datetime
    outcomes: dict  # outcome -> count, every one of OUTCOMES
    wait_buckets: list  # len(EDGES) + 1 counts; see pgjobs.stats
    run_buckets: list
    wait_sum: float = 0.0
    run_sum: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class QueueControl:
    """How a queue is steered across the fleet (``pgjobs/queue_control.py``):
    paused, and its limits in force (None: no limit). ``rate`` jobs may start in
    each window of ``period`` seconds."""

    queue: str
    paused: bool = False
    concurrency: int | None = None
    rate: int | None = None
    period: float | None = None

    @property
    def limited(self):
        """Whether a claim from this queue must count (a limit is set)."""
        return self.concurrency is not None or self.rate is not None

    @property
    def steered(self):
        """Whether claims from this queue leave the plain path (paused or limited)."""
        return self.paused or self.limited
