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
