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
STATUSES = (READY, RUNNING, SUCCEEDED, FAILED, CANCELLED)
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
