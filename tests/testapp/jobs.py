"""Job functions the tests enqueue. Module level, so workers can import them."""

import asyncio
import functools
import gc
import os
import threading
import time

from django.db import IntegrityError, transaction

from pgjobs import JobCancelled, atomic_job, current_job

from .models import Event, Execution


def noop():
    return None


def frozen_objects():
    """How many objects the process running the job keeps out of the garbage
    collector's sight (``gc.freeze``)."""
    return gc.get_freeze_count()


def add(a, b):
    return a + b


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


def record(key):
    """Record one run of ``key``; a second run of the same key raises."""
    job = current_job()
    Execution.objects.create(key=key, started=time.time(), attempt=job.attempt if job else 1)
    return key


def record_event(name, value=0):
    Event.objects.create(name=name, value=value, at=time.time())


def leave_transaction_open(name):
    """Write an Event in a transaction it never ends, as a careless job might."""
    transaction.set_autocommit(False)
    Event.objects.create(name=name, at=time.time())


def fail_always(message="boom"):
    raise RuntimeError(message)


def fail_until(key, succeed_on_attempt):
    """Fail until attempt ``succeed_on_attempt``; log each attempt as an Event."""
    attempt = current_job().attempt
    Event.objects.create(name=key, value=attempt, at=time.time())
    if attempt < succeed_on_attempt:
        raise ValueError(f"attempt {attempt} fails")
    return attempt


def sleep_then_record(key, seconds):
    time.sleep(seconds)
    try:
        Execution.objects.create(key=key, started=time.time())
    except IntegrityError:
        Event.objects.create(name="duplicate", at=time.time())
        raise
    return key


async def async_add(a, b):
    await asyncio.sleep(0.001)
    return a + b


async def async_whoami():
    await asyncio.sleep(0)
    return whoami()


# How many more times tests.testapp.flaky_async fails to import.
IMPORT_FAILURES = [0]

# Jobs of in-process workers (test_worker.py) report here. Async jobs all run on
# the worker's one event loop; the lock is for the sync ones beside them in slots.
ASYNC_STATE = {"running": 0, "most": 0, "started": set(), "cancelled": set(), "order": []}
_STATE_LOCK = threading.Lock()


def _overlap_begins():
    with _STATE_LOCK:
        ASYNC_STATE["running"] += 1
        ASYNC_STATE["most"] = max(ASYNC_STATE["most"], ASYNC_STATE["running"])


def _overlap_ends():
    with _STATE_LOCK:
        ASYNC_STATE["running"] -= 1


async def async_overlap(seconds):
    """Count how many of these (and of ``overlap``) run at once (ASYNC_STATE["most"])."""
    _overlap_begins()
    try:
        await asyncio.sleep(seconds)
    finally:
        _overlap_ends()


def overlap(seconds):
    """``async_overlap`` for a slot thread, counted with it."""
    _overlap_begins()
    try:
        time.sleep(seconds)
    finally:
        _overlap_ends()


def note_start(name):
    """Note the order jobs start in (ASYNC_STATE["order"])."""
    with _STATE_LOCK:
        ASYNC_STATE["order"].append(name)


async def async_note_start(name):
    note_start(name)


async def async_sleep_noting_cancel(key, seconds):
    """Sleep; note in ASYNC_STATE when it started and whether it was cancelled."""
    ASYNC_STATE["started"].add(key)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        ASYNC_STATE["cancelled"].add(key)
        raise
    return seconds


async def async_fail():
    await asyncio.sleep(0)
    raise KeyError("async boom")


def whoami():
    """The running job's context, as the job sees it."""
    job = current_job()
    return {
        "id": job.id,
        "func": job.func,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
    }


def _logged(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


@_logged
def decorated_add(a, b):
    """Importable as ``tests.testapp.jobs.decorated_add`` (the wrapper);
    ``decorated_add.__wrapped__`` is not importable by its path."""
    return a + b


class Multiplier:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, value):
        return value * self.factor

    def times(self, value):
        return value * self.factor


triple = Multiplier(3)  # a callable instance at module level: not a function

UNSERIALISABLE = object()


def wait_for_event(key, name, timeout=30.0):
    """Block until an Event called ``name`` exists (or ``timeout`` passes), then record
    ``key``: a job that runs exactly as long as the test wants it to. Logs
    ``start:<key>`` when a slot starts it."""
    Event.objects.create(name=f"start:{key}", at=time.time())
    deadline = time.monotonic() + timeout
    while not Event.objects.filter(name=name).exists():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no event {name!r} after {timeout} s")
        time.sleep(0.02)
    Execution.objects.create(key=key, started=time.time())
    return key


def self_referential():
    """Returns a list that contains itself: no JSON for that."""
    value = []
    value.append(value)
    return value


def sleep(seconds):
    """Sleep and touch nothing: safe to abandon (a timed-out attempt runs on, detached)."""
    time.sleep(seconds)
    return seconds


async def async_sleep(seconds):
    await asyncio.sleep(seconds)
    return seconds


# -- reliability and fault tests (test_faults.py, test_reliability.py, benchmarks/chaos.py) --


def record_once(key, seconds=0.0):
    """An idempotent job, as at-least-once delivery asks jobs to be.

    Logs each start as ``start:<key>`` (value: this process's pid), works for
    ``seconds``, then records ``key`` in one transaction at its end together with a
    ``done:<key>`` event. A run that finds ``key`` already recorded (an earlier run
    committed, but its worker died before the success was stored) changes nothing
    and logs ``again:<key>``: work completed twice is visible, never silent.
    """
    pid = os.getpid()
    Event.objects.create(name=f"start:{key}", value=pid, at=time.time())
    if seconds:
        time.sleep(seconds)
    try:
        with transaction.atomic():
            Execution.objects.create(key=key, started=time.time(), attempt=current_job().attempt)
            Event.objects.create(name=f"done:{key}", value=pid, at=time.time())
    except IntegrityError:
        Event.objects.create(name=f"again:{key}", value=pid, at=time.time())
    return key


def until_cancelled(key, timeout=30.0):
    """Work in small steps until cancellation is requested, then stop cleanly by
    raising ``JobCancelled`` (logged as ``cancelled:<key>``, value: the attempt)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = current_job()
        if job.cancel_requested:
            Event.objects.create(name=f"cancelled:{key}", value=job.attempt, at=time.time())
            raise JobCancelled(f"{key} stopped on request")
        time.sleep(0.02)
    raise TimeoutError(f"{key}: no cancellation request after {timeout} s")


def fail_unless_event(name):
    """Fails until an Event called ``name`` exists: a job an operator fixes, then retries."""
    if not Event.objects.filter(name=name).exists():
        raise RuntimeError(f"no event {name!r} yet")
    return name


def wait_for_cancel(timeout=20.0):
    """Run until cancellation is requested (then stop as a job should), or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if current_job().cancel_requested:
            raise JobCancelled("stopped on request")
        time.sleep(0.02)
    return "never cancelled"


def exit_process(code=3):
    """Library code that calls sys.exit(): must not take a worker slot with it."""
    raise SystemExit(code)


async def async_exit_process(code=3):
    await asyncio.sleep(0)
    raise SystemExit(code)


def fail_after(seconds, message="gave up"):
    """Work for ``seconds``, then fail with an ordinary exception (not JobCancelled)."""
    time.sleep(seconds)
    raise RuntimeError(message)


class EventCount:
    """An argument whose encoding reads the database, as a lazy object's or a
    model-backed value's may: it travels as the number of Event rows then."""

    def __init__(self, count=None):
        self.count = count

    def __pgjobs_encode__(self):
        return Event.objects.count()

    @classmethod
    def __pgjobs_decode__(cls, data):
        return cls(data)


# -- atomic jobs (tests/test_atomic.py) --------------------------------------------------

#: key -> (started, go): an atomic job run with that key signals ``started`` from
#: inside its transaction, after its write, and waits for ``go`` (attempt 1 only).
ATOMIC_GATES = {}


def record_gated(key):
    """Record one run of ``key`` (unique); on attempt 1, wait at its gate if it has one."""
    attempt = current_job().attempt
    Execution.objects.create(key=key, started=time.time(), attempt=attempt)
    gate = ATOMIC_GATES.get(key)
    if gate is not None and attempt == 1:
        started, go = gate
        started.set()
        go.wait(20)
    return key


@atomic_job
def atomic_record(key):
    """Marked: every enqueue of it is atomic."""
    job = current_job()
    Execution.objects.create(key=key, started=time.time(), attempt=job.attempt if job else 1)
    return key


async def async_fail_until(key, succeed_on_attempt):
    """``fail_until`` as an ``async def``, writing through the ORM's async API."""
    attempt = current_job().attempt
    await Event.objects.acreate(name=key, value=attempt, at=time.time())
    if attempt < succeed_on_attempt:
        raise ValueError(f"attempt {attempt} fails")
    return attempt


def record_slow_first(key, seconds):
    """Record one run of ``key`` (unique), then, on attempt 1 only, sleep ``seconds``."""
    attempt = current_job().attempt
    Execution.objects.create(key=key, started=time.time(), attempt=attempt)
    if attempt == 1:
        time.sleep(seconds)
    return key


def record_event_then_fail(name):
    Event.objects.create(name=name, at=time.time())
    raise ValueError("attempt 1 fails")


# -- batches and chains (test_batches.py) -------------------------------------------


def add_previous(n):
    """``n`` plus the previous job's result (a chain), or ``n`` alone."""
    return (current_job().previous_result or 0) + n


def record_finished(key):
    """A batch's callback: record ``key`` once and say how far the batch was."""
    Execution.objects.create(key=key, started=time.time())
    return key


def stint(key, seconds):
    """Note when this run starts and ends (Events ``key``, value 1 then -1), to
    count how many ran at once across worker processes (tests/test_queue_control.py)."""
    Event.objects.create(name=key, value=1, at=time.time())
    time.sleep(seconds)
    Event.objects.create(name=key, value=-1, at=time.time())


def snooze_once(key, seconds):
    """Snooze on the first run, then record ``key`` (tests/test_queue_control.py)."""
    from pgjobs import Snooze

    Event.objects.create(name=key, value=current_job().attempt, at=time.time())
    if Event.objects.filter(name=key).count() == 1:
        raise Snooze(seconds)
    return "woke"
