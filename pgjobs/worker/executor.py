"""The executor: runs claimed jobs, at most ``concurrency`` at a time.

One budget of ``concurrency`` shares covers both kinds of job: a sync job runs
in a slot thread, an ``async def`` job as a task on the one event loop thread.
Slot threads exist only for the sync jobs actually running: the pool starts one
when a job has no idle thread to take it (up to ``concurrency``), and a thread
idle for ``SLOT_IDLE_SECONDS`` ends. So a worker with nothing to do, or one
running only async jobs, holds almost no threads. Atomic jobs, ``async def`` ones
included, run in slots, each in its own transaction (``atomic.py``).

Threads and what they own:

- The main thread hands claimed jobs over in claim order (``submit``, one call
  per claim, one hand-over to the loop per batch), takes outcomes (``take_done``),
  enforces timeouts and stops the executor.
- ``_lock`` guards the budget: free shares, the jobs claimed while none was
  free (``_waiting``, started in claim order as shares come back: no job overtakes
  one claimed before it) and the pool's thread counts.
- ``_running_lock`` guards the running jobs (``_running``) that the main thread
  watches for timeouts and cancellation requests, and ``_abandoned``.
- ``done`` is a deque the slots and the loop append outcomes to and only the
  main thread empties.
- ``low_water`` is written by the main thread only; a slot reads it to decide
  whether to wake the main thread (a stale read costs a wake-up at most).
"""

import asyncio
import collections
import dataclasses
import inspect
import itertools
import logging
import queue
import threading
import time

from asgiref.sync import async_to_sync
from django.db import connections

from ..exceptions import InvalidJob, JobCancelled, Snooze
from ..execution import JobContext, describe_error, reset_current_job, set_current_job
from ..serialization import decode_arguments, encode_result, load_function, verify_job
from .connections import tidy_connections
from .telemetry import Telemetry, end_span

logger = logging.getLogger("pgjobs")
#: Per-job lines (started, succeeded): INFO at ``-v 2``, off by default.
job_logger = logging.getLogger("pgjobs.jobs")

#: Seconds an idle slot thread waits for a job before it ends.
SLOT_IDLE_SECONDS = 5.0

_STOP_SLOT = object()


@dataclasses.dataclass(slots=True)
class Outcome:
    ok: bool
    result: object = None
    error: dict | None = None
    permanent: bool = False  # cannot run at all: no point retrying
    seconds: float = 0.0
    cancelled: bool = False  # the job stopped itself after a cancel request
    recorded: bool = False  # an atomic job's success, stored already in its own transaction
    lost: bool = False  # an atomic job that lost its lease: rolled back, nothing to store
    snooze: float | None = None  # the job raised Snooze: ready again in this many seconds


@dataclasses.dataclass(slots=True)
class RunningJob:
    job: object
    context: JobContext
    deadline: float | None  # time.monotonic() past which the attempt has timed out
    future: object = None  # an async job's, from the event loop
    on_loop: bool = False  # started straight on the event loop: its task holds the share


@dataclasses.dataclass(slots=True)
class _Exited:
    exc: BaseException


async def _contained(coroutine):
    """asyncio re-raises SystemExit and KeyboardInterrupt out of the event loop,
    which would stop it for every async job: hand them back as a value instead.
    (A job's own coroutine must be wrapped: ``asyncio.wait_for`` runs it as a
    task of its own on Python 3.11, whose exception would escape the loop.)"""
    try:
        return await coroutine
    except (SystemExit, KeyboardInterrupt) as exc:
        return _Exited(exc)


class Executor:
    """Runs jobs under one concurrency budget; reports outcomes in ``done``."""

    def __init__(self, concurrency, alarm, atomic=None, previous_result=None, telemetry=None):
        self.concurrency = concurrency
        self.alarm = alarm  # wakes the main thread (wakeups.Alarm)
        self.atomic = atomic  # runs atomic jobs (worker/atomic.py); None: the store has none
        # job id -> the stored result of the job it ran after (``Store.previous_result``),
        # read only when a job asks (``current_job().previous_result``), in its thread.
        self.previous_result = previous_result
        self.telemetry = telemetry or Telemetry(None, type(self))  # signals and spans
        self.done = collections.deque()  # (job, outcome), not yet taken by the main thread
        self.low_water = 0
        self.log_jobs = False  # per-job lines (pgjobs.jobs at INFO), decided once by the worker
        self._lock = threading.Lock()
        self._free = concurrency  # shares no job holds
        self._waiting = collections.deque()  # claimed while no share was free
        self._threads = 0  # slot threads alive (not counting detached overdue ones)
        self._idle = 0  # slot threads waiting for a job
        self._closed = False
        self._started = 0  # slot threads started (``_lock``)
        self._numbers = itertools.count()  # for their names
        self._queue = queue.SimpleQueue()  # sync jobs holding a share, for the slots
        self._running = {}  # job id -> RunningJob
        self._running_lock = threading.Lock()
        self._abandoned = False  # the grace period is over: no claimed job may start
        self._functions = {}  # job path -> (function, is a coroutine function)
        self._loop = None
        self._loop_lock = threading.Lock()

    # -- main thread -------------------------------------------------------------------

    def submit(self, jobs):
        """Start claimed jobs, in claim order, as far as shares allow; the rest
        start as running jobs end. A job whose row could not be read
        (``job.problem``) fails at once without running."""
        if any(job.problem is not None for job in jobs):
            jobs = self._fail_unreadable(jobs)
        kinds = [self._is_async(job) for job in jobs]  # imports on first sight: no lock held
        put = self._queue.put
        straight = []
        sync = False
        with self._lock:
            idle = self._free == self.concurrency  # nothing running, nothing waiting
            # No share is taken while jobs claimed earlier wait for one; the jobs
            # are queued under the lock, so that none overtakes one claimed before.
            now = 0 if self._waiting else min(len(jobs), self._free)
            self._free -= now
            self._waiting.extend(itertools.islice(jobs, now, None))
            for job, is_async in zip(jobs[:now], kinds[:now], strict=True):
                if is_async:
                    straight.append(job)
                else:
                    put(job)
                    sync = True
        if sync:
            self._grow()
        if straight:
            self.event_loop().call_soon_threadsafe(self._start_on_loop, straight)
        if idle and now:
            # An idle worker's wake-up: let the thread just handed the job take the
            # GIL now rather than once this thread is back asleep (latency_trace.py:
            # the hand-over 15-20 µs sooner at p50, 45-80 at p95). A busy worker goes on.
            time.sleep(0)

    def _fail_unreadable(self, jobs):
        for job in jobs:
            if job.problem is not None:
                self.done.append((job, _cannot_start(InvalidJob(job.problem))))
        self.alarm.ring()
        return [job for job in jobs if job.problem is None]

    def take_done(self):
        """The outcomes reported since the last call."""
        done, taken = self.done, []
        while done:
            taken.append(done.popleft())
        return taken

    def queued(self):
        """Claimed jobs not started yet."""
        return self._queue.qsize() + len(self._waiting)

    def running(self):
        return len(self._running)

    @property
    def threads(self):
        """Slot threads in the pool now."""
        return self._threads

    @property
    def threads_started(self):
        """Slot threads started since the executor was made."""
        return self._started

    def enforce_timeouts(self):
        """Fail running jobs past their timeout and free their shares.

        A thread cannot be killed: the overdue one runs on, detached from the
        pool, and its eventual outcome is dropped (async jobs are cancelled on
        their loop). Returns the seconds until the next deadline, or None.
        """
        now = time.monotonic()
        next_deadline = None
        overdue_threads = 0
        with self._running_lock:
            for job_id, running in list(self._running.items()):
                if running.deadline is None:
                    continue
                if running.deadline > now:
                    next_deadline = min(next_deadline or running.deadline, running.deadline)
                    continue
                del self._running[job_id]
                error = describe_error(
                    TimeoutError(f"job exceeded its timeout of {running.job.timeout:g} s")
                )
                self.done.append((running.job, Outcome(False, error=error)))
                if running.on_loop:
                    self._cancel(running)  # the task ends, and gives its share back
                else:
                    overdue_threads += 1
        for _ in range(overdue_threads):
            # The overdue thread leaves the pool; its share goes to the next job.
            with self._lock:
                self._threads -= 1
            self._share_freed()
        return None if next_deadline is None else next_deadline - now

    def request_cancellations(self, job_ids):
        with self._running_lock:
            for job_id in job_ids:
                running = self._running.get(job_id)
                if running is not None and not running.context.cancel_requested:
                    running.context.cancel_requested = True
                    logger.info("job %s %s: cancellation requested", job_id, running.job.func)

    def take_unstarted(self):
        """Stopping: the claimed jobs not started yet, which will not start now."""
        unstarted = []
        with self._lock:
            unstarted.extend(self._waiting)
            self._waiting.clear()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP_SLOT:
                with self._lock:
                    self._free += 1
                unstarted.append(job)
        return unstarted

    def abandon(self):
        """The grace period is over: start nothing more, cancel the async jobs still
        running (threads cannot be stopped; tasks can), which must not run on, on a
        loop that outlives the worker."""
        with self._running_lock:
            self._abandoned = True
            running = list(self._running.values())
        for job in running:
            self._cancel(job)

    def close(self):
        """Let the slot threads end once they have finished their jobs."""
        with self._lock:
            self._closed = True
            threads = self._threads
        for _ in range(threads):
            self._queue.put(_STOP_SLOT)

    # -- the pool ----------------------------------------------------------------------

    def _grow(self):
        """Start slot threads for queued jobs no idle thread will take."""
        with self._lock:
            missing = self._missing()
        self._start_threads(missing)

    def _missing(self):
        """(``_lock`` held) Threads to start now; counted as started."""
        if self._closed:
            return 0
        missing = min(self._queue.qsize() - self._idle, self.concurrency - self._threads)
        if missing <= 0:
            return 0
        self._threads += missing
        self._started += missing
        return missing

    def _start_threads(self, count):
        for _ in range(count):
            thread = threading.Thread(
                target=self._slot, name=f"pgjobs-slot-{next(self._numbers)}", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as exc:  # the process cannot start more threads
                with self._lock:
                    self._threads -= 1
                logger.warning("pgjobs: cannot start a thread for a job (%s)", exc)

    def _slot(self):
        try:
            self._run_slot()
        finally:
            # A thread's connections outlive it unless closed: close them, so a
            # worker run inside a longer process leaves none behind.
            connections.close_all()

    def _run_slot(self):
        jobs = self._queue
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                job = self._wait_for_job()
                if job is None:
                    return  # idle too long: the pool shrinks
            if job is _STOP_SLOT:
                with self._lock:
                    self._threads -= 1
                return
            running = self._begin(job)
            if running is None:  # put back at the end of the grace period
                self._share_freed(in_slot=True)
                continue
            outcome = self._execute(job, running)
            if not self._job_ended(job, outcome):
                # Timed out: its outcome was recorded, and its share went to
                # another job; this thread left the pool.
                return
            self._share_freed(in_slot=True)

    def _wait_for_job(self):
        """This slot is idle: tell the main thread, then wait for a job; None when
        none came for SLOT_IDLE_SECONDS (the thread is then out of the pool)."""
        # The queue's size seen after the job is not enough: slots that finish
        # together may all see one job queued, which only one gets.
        self.alarm.slot_freed()
        with self._lock:
            self._idle += 1
        while True:
            try:
                job = self._queue.get(timeout=SLOT_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.qsize() == 0:  # a job put from here on starts a thread
                        self._idle -= 1
                        self._threads -= 1
                        return None
                continue
            with self._lock:
                self._idle -= 1
                # Jobs queued while this thread was counted idle, beyond it.
                missing = self._missing()
            self._start_threads(missing)
            return job

    def _share_freed(self, in_slot=False, on_loop=False):
        """A running job ended (or will not run): its share goes to the oldest job
        waiting for one, else back to the budget. True if back to the budget.
        ``in_slot``: called by a slot thread, which takes a sync job itself next;
        ``on_loop``: called on the event loop, which starts an async job at once."""
        with self._lock:
            if not self._waiting:
                self._free += 1
                return True
            job = self._waiting.popleft()
            is_async = self._is_async(job)
            # Handed on under the lock: two shares freed at once start their jobs
            # in claim order.
            if not is_async:
                self._queue.put(job)
            elif not on_loop:
                self.event_loop().call_soon_threadsafe(self._start_on_loop, [job])
        if not is_async:
            if not in_slot:
                self._grow()
        elif on_loop:  # a task ended: start the next one straight away
            self._start_on_loop([job])
        return False

    # -- running a job -----------------------------------------------------------------

    def _begin(self, job, on_loop=False):
        """Log the job's start and count it as running; None if it must not start,
        because the grace period is over and claimed jobs are being put back."""
        if self.log_jobs:
            job_logger.info(
                "job %s %s started (attempt %d/%d)",
                job.id,
                job.func,
                job.attempts,
                job.max_attempts,
            )
        context = JobContext(
            job.id,
            job.func,
            job.queue,
            job.attempts,
            job.max_attempts,
            previous_loader=self.previous_result,
        )
        deadline = None if job.timeout is None else time.monotonic() + job.timeout
        running = RunningJob(job, context, deadline, on_loop=on_loop)
        with self._running_lock:
            if self._abandoned:
                return None
            self._running[job.id] = running
        if deadline is not None:
            self.alarm.ring()  # the main thread watches the deadline from now on
        return running

    def _job_ended(self, job, outcome):
        """Hand the outcome to the main thread; False if the job had timed out (its
        outcome is recorded already)."""
        with self._running_lock:
            if self._running.pop(job.id, None) is None:
                return False
            self.done.append((job, outcome))
        # Wake the main thread when it has something to do: a failure to
        # record, or prefetched jobs running low (an empty queue is seen by
        # the slot that finds it so). Otherwise successes wait to be recorded
        # with the next claim, or within RECORD_WITHIN at the latest.
        if not outcome.ok or 0 < self._queue.qsize() <= self.low_water:
            self.alarm.ring()
        return True

    def _prepare(self, job):
        """The job's function and arguments; ``InvalidJob`` if it cannot start.

        Verify before importing anything: a row written by hand must not make a
        worker import or call what it names."""
        verify_job(job.func, job.args, job.kwargs, job.queue, job.signature)
        func, is_coroutine = self._function(job.func)
        args, kwargs = decode_arguments(job.args, job.kwargs)
        return func, is_coroutine, args, kwargs

    def _execute(self, job, running):
        """Run a sync job in this slot's thread (an async one only when it comes
        here after all: ``_execute_async_waiting``)."""
        started = time.perf_counter()
        try:
            func, is_coroutine, args, kwargs = self._prepare(job)
        except InvalidJob as exc:
            return _cannot_start(exc)
        if job.atomic:
            return self._execute_atomic(job, running, func, is_coroutine, args, kwargs, started)
        if is_coroutine:
            return self._execute_async_waiting(job, running, started)
        token = set_current_job(running.context)
        span = None
        try:
            span = self.telemetry.starting(job)
            result = func(*args, **kwargs)
        except BaseException as exc:  # SystemExit from library code too: the slot lives on
            end_span(span, exc)
            return _failed(exc, started)
        finally:
            reset_current_job(token)
            tidy_connections()
        end_span(span)
        return _succeeded(result, started)

    def _execute_atomic(self, job, running, func, is_coroutine, args, kwargs, started):
        """Run an atomic job in this slot's thread, in its transaction on this
        thread's connection (``AtomicRunner``). An ``async def`` one runs here too,
        through ``async_to_sync``: its ORM calls (``sync_to_async``, Django's
        ``a*`` methods) come back to this thread, into the transaction."""
        if self.atomic is None:
            return _cannot_start(InvalidJob("this worker's store cannot run atomic jobs"))
        call = async_to_sync(func) if is_coroutine else func
        token = set_current_job(running.context)
        span = None
        try:
            span = self.telemetry.starting(job)
            committed, result = self.atomic.run(job, lambda: call(*args, **kwargs))
        except BaseException as exc:  # rolled back; stored as a failure by the main thread
            end_span(span, exc)
            return _failed(exc, started)
        finally:
            reset_current_job(token)
            tidy_connections()
        end_span(span)
        seconds = time.perf_counter() - started
        if not committed:
            return Outcome(False, seconds=seconds, lost=True)
        return Outcome(True, result=result, seconds=seconds, recorded=True)

    def _start_on_loop(self, jobs):
        """On the event loop: start jobs that hold shares."""
        for job in jobs:
            running = self._begin(job, on_loop=True)
            if running is None:
                self._share_freed(on_loop=True)
                continue
            # The task is kept (asyncio itself holds only a weak reference).
            running.future = self._loop.create_task(self._run_on_loop(job, running))

    async def _run_on_loop(self, job, running):
        outcome = await self._execute_async(job, running)
        self._job_ended(job, outcome)
        # Its own share, even past its timeout: no slot replaces a task.
        if self._share_freed(on_loop=True) and self._queue.qsize() == 0:
            self.alarm.slot_freed()  # and no claimed job waits for it

    async def _execute_async(self, job, running):
        started = time.perf_counter()
        try:
            func, _, args, kwargs = self._prepare(job)
        except InvalidJob as exc:
            return _cannot_start(exc)
        token = set_current_job(running.context)  # the task's own copy of the context
        span = None
        try:
            span = self.telemetry.starting(job)
            coroutine = _contained(func(*args, **kwargs))
            if job.timeout is not None:
                coroutine = asyncio.wait_for(coroutine, job.timeout)
            result = await coroutine
            if isinstance(result, _Exited):
                raise result.exc
        except BaseException as exc:  # cancelled (grace period) or SystemExit: an outcome too
            end_span(span, exc)
            return _failed(exc, started)
        finally:
            reset_current_job(token)
        end_span(span)
        return _succeeded(result, started)

    def _execute_async_waiting(self, job, running, started):
        """An async job that reached a slot's thread: its function could not be
        imported when the job was claimed (``_classify``), and could now. It runs
        on the loop all the same, this thread waiting for it."""
        future = asyncio.run_coroutine_threadsafe(
            self._execute_async(job, running), self.event_loop()
        )
        running.future = future  # for a worker that stops before it ends
        try:
            return future.result()
        except BaseException as exc:  # cancelled at the end of the grace period
            return _failed(exc, started)

    def _cancel(self, running):
        """Cancel an async job's task (on its loop: asyncio is not thread-safe)."""
        if running.on_loop:
            # Its task may be a moment from being created; on the loop, it is.
            self._loop.call_soon_threadsafe(lambda: running.future.cancel())
        elif running.future is not None:
            running.future.cancel()  # a concurrent Future, which cancels its task

    def event_loop(self):
        """One event loop thread for every async job, started on first use."""
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="pgjobs-async", daemon=True).start()
                self._loop = loop
            return self._loop

    # -- functions ---------------------------------------------------------------------

    def _function(self, path):
        """The function a job names, imported once per worker."""
        try:
            return self._functions[path]
        except KeyError:
            func = load_function(path)  # InvalidJob is not cached: fixed code gets a chance
            self._functions[path] = found = (func, inspect.iscoroutinefunction(func))
            return found

    def _is_async(self, job):
        """Whether the job runs on the event loop: its function is an ``async def``
        (imported on first sight) and it is not atomic (those run in slots)."""
        if job.atomic:
            return False
        return (self._functions.get(job.func) or self._classify(job))[1]

    def _classify(self, job):
        """``(function, is async)`` for a job whose function is not imported yet:
        imported once the job's signature is verified, as a slot would before running
        it. A job that cannot start is a sync one here: its slot records why. (Any
        error: one escaping here would leave the batch half handed on.)"""
        try:
            verify_job(job.func, job.args, job.kwargs, job.queue, job.signature)
            return self._function(job.func)
        except Exception:
            return (None, False)


def _cannot_start(exc):
    return Outcome(False, error=describe_error(exc), permanent=True)


def _failed(exc, started):
    if isinstance(exc, JobCancelled):
        return Outcome(False, error=describe_error(exc), permanent=True, cancelled=True)
    if isinstance(exc, Snooze):
        return Outcome(False, snooze=exc.seconds, seconds=time.perf_counter() - started)
    return Outcome(False, error=describe_error(exc), seconds=time.perf_counter() - started)


def _succeeded(result, started):
    return Outcome(True, result=encode_result(result), seconds=time.perf_counter() - started)
