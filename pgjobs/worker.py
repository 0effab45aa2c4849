"""The worker: claims jobs from a store, runs them in N slots, records outcomes.

It speaks only the store interface (``pgjobs/stores/base.py``), never a vendor.
One thread claims, records and heartbeats; ``concurrency`` slot threads run
jobs; ``async def`` jobs run as tasks on one shared event loop, started there
straight from the claim (``Worker._dispatch``), or by the slot that got a token
for one claimed while none was free; for stores that push wake-ups, a listener
thread blocks in ``store.wait``. Each running job holds one of ``concurrency``
tokens, whichever way it runs.
"""

import asyncio
import collections
import dataclasses
import inspect
import itertools
import logging
import os
import queue
import random
import signal
import socket
import threading
import time
import uuid

from django.db import connections
from django.db.backends.signals import connection_created

from .exceptions import InvalidJob, JobCancelled
from .execution import JobContext, describe_error, reset_current_job, set_current_job
from .records import CANCELLED
from .retry import RetryPolicy
from .serialization import decode_arguments, encode_result, load_function, verify_job

logger = logging.getLogger("pgjobs")

_STOP_SLOT = object()
# In the slots' queue for a job claimed while no token was free: the slot that
# takes it waits for a token, then takes the oldest such job (Worker._dispatch).
_TOKENLESS = object()

#: Seconds between looks at the live workers, by which wake-ups are shared out.
RANKS_INTERVAL = 1.0
#: After a claim that found nothing although a job is due: seconds until the next look.
DUE_NOW_RECHECK = 0.05
#: How long a drain (``burst``) keeps looking for a due job its claims skip.
HELD_JOB_PATIENCE = 1.0
#: Stores without wake-ups: seconds to the next look after a claim that found jobs,
#: doubling with each empty claim up to the poll interval (see Worker._next_poll).
BUSY_POLL = 0.05


def tidy_connections():
    """After a job, in its slot thread: keep the thread's database connections for
    the next job, but close those the job broke or left outside autocommit.

    Django's ``close_old_connections`` would close every connection after each
    job under the default ``CONN_MAX_AGE = 0``, which means "one per request" in
    a web process; a worker has no requests, and reconnecting per job costs more
    than most jobs. A positive ``CONN_MAX_AGE`` is honoured as usual.
    """
    for connection in getattr(_thread_connections, "seen", ()):
        if connection.connection is None:
            continue
        if connection.settings_dict["CONN_MAX_AGE"]:
            connection.close_if_unusable_or_obsolete()
        elif connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]:
            connection.close()  # the job left a transaction open
        elif connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()


# The connections each thread has opened, as Django's connection_created signal
# reports them: tidy_connections looks at these few instead of asking
# ``connections.all()``, whose thread-local lookups cost more than a no-op job.
_thread_connections = threading.local()


def _remember_connection(sender, connection, **kwargs):
    seen = getattr(_thread_connections, "seen", None)
    if seen is None:
        seen = _thread_connections.seen = []
    if not any(known is connection for known in seen):
        seen.append(connection)


connection_created.connect(_remember_connection, dispatch_uid="pgjobs.worker.connections")


def make_worker_id():
    """host:pid:random, readable in the admin and unique across restarts."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass(slots=True)
class Outcome:
    ok: bool
    result: object = None
    error: dict | None = None
    permanent: bool = False  # cannot run at all: no point retrying
    seconds: float = 0.0
    cancelled: bool = False  # the job stopped itself after a cancel request


@dataclasses.dataclass(slots=True)
class RunningJob:
    job: object
    context: JobContext
    deadline: float | None  # time.monotonic() past which the attempt has timed out
    future: object = None  # an async job's, from the event loop
    on_loop: bool = False  # started straight on the event loop: its task holds the token


@dataclasses.dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0  # attempts that raised, retried or not
    retried: int = 0
    released: int = 0

    @property
    def ran(self):
        return self.succeeded + self.failed


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


class Worker:
    """Works one store until stopped (or, with ``burst``, until nothing is due)."""

    def __init__(
        self,
        store,
        *,
        queues=None,
        concurrency=1,
        poll_interval=None,
        grace_period=30.0,
        retry_policy=None,
        burst=False,
        max_jobs=None,
        max_seconds=None,
        prefetch=0,
        worker_id=None,
        periodic=None,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.queues = list(queues) if queues else None
        self.concurrency = concurrency
        self.poll_interval = poll_interval or store.default_poll_interval
        self.grace_period = grace_period
        self.retry_policy = retry_policy or RetryPolicy()
        self.burst = burst
        self.max_jobs = max_jobs
        self.max_seconds = max_seconds
        self.prefetch = prefetch
        self.worker_id = worker_id or make_worker_id()
        self.stats = WorkerStats()
        # Other work the main loop does now and then: [(interval, callable)]. Each
        # callable runs at start, then every ``interval`` seconds, or sooner when
        # it returns the seconds until it wants to run again. The commands pass
        # the scheduler here (pgjobs/schedule.py); the worker knows nothing of it.
        self._periodic = [[float(interval), func, 0.0, 0] for interval, func in periodic or ()]

        # Heartbeat three times a lease; look for dead workers' jobs twice a lease,
        # so a killed worker's jobs are back within about 1.5 leases (30 s by default).
        lease = getattr(store, "lease_seconds", 20.0)
        self.heartbeat_interval = lease / 3
        self.rescue_interval = lease / 2

        self._slots_queue = queue.SimpleQueue()  # claimed jobs waiting for a slot
        # Tokens: one per job that may run now, so that slots and the async jobs
        # started straight on the event loop together run at most ``concurrency``.
        self._tokens = queue.SimpleQueue()
        for _ in range(concurrency):
            self._tokens.put(None)
        self._tokenless_jobs = collections.deque()  # claimed while no token was free
        # Their _TOKENLESS markers handed to the slots without a token: as many as
        # were sent, less those whose slot has taken one since (one entry each, in
        # a deque the slots append to and only the main thread empties: no lock).
        self._tokenless_sent = 0
        self._tokenless_served = collections.deque()
        self._abandoned = False  # the grace period is over: no claimed job may start now
        self._done = collections.deque()  # (job, outcome) from slots, not yet seen
        self._unrecorded = []  # outcomes taken from _done, not yet stored
        self._claimed = {}  # job id -> job, until its outcome is stored
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._signals = 0
        self._signal_fd = None  # written by the signal handler (install_signal_handlers)
        self._loop = None
        self._loop_lock = threading.Lock()
        self._threads = []
        self._running = {}  # job id -> RunningJob, while a slot runs it
        self._running_lock = threading.Lock()
        self._functions = {}  # job path -> (function, is a coroutine function)
        self._log_jobs = True  # per-job log lines, when the logger shows INFO

        # Batching (see _claim_size): what a job and a claim take, as moving
        # averages, size the prefetch; slots wake the main thread only when
        # the queue of claimed jobs runs low (_low_water) or an outcome needs
        # recording at once, not after every job.
        self._job_seconds = None
        self._claim_seconds = None
        self._low_water = 0
        self._first_unrecorded_at = None  # monotonic time of the oldest stored-later success
        self._due_checked_at = -1.0  # last seconds_until_due query, and its answer
        self._due_at = None
        # The last claim came back short: the store had no more due jobs. Until a
        # wake-up (or a slot runs dry), claiming again would come back empty.
        self._drained = False
        self._notified = False  # set by the listener thread
        self._slot_freed = False  # set by a slot that found no claimed job left
        self._look_again_at = 0.0  # drained: when to claim again unasked (poll, deferred job)
        self._poll_delay = self.poll_interval  # stores that poll: until the next look
        self._sleeping_until = 0.0  # while the main thread waits: until when
        self._held_since = None  # burst: since when claims skip a job still due
        # Sharing out wake-ups: {queue: (this worker's rank, workers serving it)},
        # from the store's list of live workers, refreshed with each heartbeat.
        self._ranks = {}

    # -- lifecycle -------------------------------------------------------------

    def install_signal_handlers(self):
        """SIGTERM/SIGINT stop gracefully; a second one exits at once.

        Python runs a handler in the main thread between two of its bytecodes,
        possibly while that thread holds the lock inside ``self._wake`` (on its
        way into or out of a wait). ``Event.set()`` in the handler would then wait
        for that lock forever, and the worker would never stop. So the handler
        only writes the signal's number to a pipe; a thread of its own reads it
        and asks the worker to stop, as any other thread may.
        """
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("signal handlers can only be installed from the main thread")
        read_fd, self._signal_fd = os.pipe()
        relay = threading.Thread(
            target=self._relay_signal, args=(read_fd,), name="pgjobs-signals", daemon=True
        )
        relay.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        self._signals += 1
        if self._signals > 1:
            logger.warning("pgjobs: second signal, exiting now")
            os._exit(1)
        if self._signal_fd is not None:  # None: run() has ended, nothing is left to stop
            os.write(self._signal_fd, bytes([signum]))  # takes no lock: see above

    def _relay_signal(self, read_fd):
        try:
            received = os.read(read_fd, 1)
        finally:
            os.close(read_fd)
        if not received:
            return  # run() ended and closed the pipe: no signal came
        signum = received[0]
        logger.info(
            "pgjobs: %s received; finishing running jobs (grace %s s)",
            signal.Signals(signum).name,
            self.grace_period,
        )
        self.request_stop()

    def request_stop(self):
        self._stopping.set()
        self._wake.set()

    def run(self):
        """Work until stopped; return the ``WorkerStats``."""
        started = time.monotonic()
        if not self._register():
            return self.stats  # stopped before the store was ever reachable
        try:
            return self._run(started)
        finally:
            self._stopping.set()  # ends the listener thread's loop
            self._close_signal_pipe()
            try:
                self.store.stop_listening()
                self.store.unregister_worker(self.worker_id)
            except Exception:  # its heartbeat stops; the next rescue removes the row
                pass

    def _close_signal_pipe(self):
        """Let the signal relay thread end (it reads end-of-file), freeing the pipe:
        a process may run many workers (drains, tests), each installing handlers."""
        fd, self._signal_fd = self._signal_fd, None
        if fd is not None:
            os.close(fd)

    def _register(self):
        """Register this worker, waiting (with backoff) for a store that is down at
        start-up, as it would for one that goes down later. False if stopped first."""
        for failures in itertools.count():
            try:
                self.store.register_worker(
                    self.worker_id, socket.gethostname(), os.getpid(), self.queues, self.concurrency
                )
                return True
            except Exception as exc:
                delay = min(10.0, 0.25 * 2 ** min(failures + 1, 10))
                level = logging.WARNING if failures == 0 else logging.DEBUG
                logger.log(level, "pgjobs: store unreachable (%s); retrying in %.2f s", exc, delay)
                self._safe_close_store()
                if self._stopping.wait(delay):
                    return False

    def _run(self, started):
        # Asked once: at thousands of jobs a second even a disabled log call per
        # job shows in a profile.
        self._log_jobs = logger.isEnabledFor(logging.INFO)
        self._start_threads()
        next_heartbeat = started
        next_ranks = started  # the other workers, for _answers
        next_rescue = started  # at once: a drain from cron may be the only one looking
        failures = 0
        while True:
            self._wake.clear()
            try:
                until_timeout = self._enforce_timeouts()
                successes = self._take_outcomes()
                if self._stopping.is_set() or self._limit_reached(started):
                    self._record_successes(successes)
                    break
                now = time.monotonic()
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + self.heartbeat_interval
                if now >= next_ranks and self.store.wakeup == "listen" and not self.burst:
                    # Every second, not every heartbeat: workers that start together
                    # must soon agree on who answers (until then more of them do).
                    self._refresh_ranks()
                    next_ranks = now + RANKS_INTERVAL
                if now >= next_rescue:  # before claiming, so rescued jobs are claimable
                    self._rescue()
                    next_rescue = now + self.rescue_interval * random.uniform(0.8, 1.2)
                until_periodic = self._run_periodic()  # before claiming: it may enqueue
                wanted = self._claim_size(successes)
                if wanted or self._must_record(successes):
                    requested, claimed = self._finish_and_claim(successes, wanted)
                else:
                    requested = claimed = None  # enough queued: claim later, in a bigger batch
                held = False
                if self.burst and not claimed and not self._claimed:
                    held = self._due_job_held()
                    if not held:
                        break  # drained: nothing due, nothing running
                elif claimed:
                    self._held_since = None
                if claimed and claimed == requested:
                    continue  # there may be more; slots fill or the claim comes back short
                timeout = self._idle_timeout(claimed)
                if self._unrecorded:
                    timeout = min(timeout, self._record_within())
                if until_timeout is not None:
                    timeout = min(timeout, until_timeout)
                if until_periodic is not None:
                    timeout = min(timeout, until_periodic)
                if held:
                    timeout = min(timeout, DUE_NOW_RECHECK)
                if failures:
                    logger.warning("pgjobs: store reachable again")
                failures = 0
            except Exception as exc:  # the store is unreachable: back off, keep the jobs
                failures += 1
                timeout = min(10.0, 0.25 * 2**failures)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                logger.log(level, "pgjobs: store error (%s); retrying in %.2f s", exc, timeout)
                self._safe_close_store()
                if self._stopping.is_set():
                    break  # stopping records what it can, a bounded number of times
                if failures >= 3 and self._unrecorded:
                    self._record_one_by_one()
            self._sleeping_until = time.monotonic() + timeout
            self._wake.wait(timeout)
            self._sleeping_until = 0.0
        if self._limit_reached(started):
            self._finish_in_flight(deadline=None)
        else:
            self._finish_in_flight(deadline=time.monotonic() + self.grace_period)
        return self.stats

    def _due_job_held(self):
        """Burst: whether a job is still due although the claim found none, so
        that a drain looks again (for up to HELD_JOB_PATIENCE seconds) rather
        than leave it to the next drain. Such a row is held for a moment by
        another transaction, such as a racing drain's pruner or claim. A job
        another worker claimed is no longer ready, so a drain that is done pays
        one query for this."""
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        elif now - self._held_since > HELD_JOB_PATIENCE:
            return False
        return self._seconds_until_due() == 0

    def _limit_reached(self, started):
        if self.max_jobs is not None and self.stats.claimed >= self.max_jobs:
            return True
        return self.max_seconds is not None and time.monotonic() - started >= self.max_seconds

    def _run_periodic(self):
        """Run the ``periodic`` callables that are due; return the seconds until
        the next one is (None without any). Their errors are logged, never raised."""
        if not self._periodic:
            return None
        for entry in self._periodic:
            interval, func, due, failures = entry
            if time.monotonic() < due:
                continue
            try:
                wanted = func()
                if failures:
                    logger.warning("pgjobs: %s works again", _name(func))
                entry[3] = 0
            except Exception as exc:
                # Like store errors: say it once, then quietly until it works again.
                level = logging.WARNING if not failures else logging.DEBUG
                logger.log(
                    level, "pgjobs: %s failed (%s); again in %g s", _name(func), exc, interval
                )
                entry[3] += 1
                wanted = None
            delay = interval if wanted is None else min(interval, max(0.0, wanted))
            entry[2] = time.monotonic() + delay
        return max(0.0, min(entry[2] for entry in self._periodic) - time.monotonic())

    def _idle_timeout(self, claimed):
        timeout = self.heartbeat_interval
        if self.burst:
            return timeout  # a slot finishing wakes us
        if claimed is not None and self._drained:
            # The claim came back short: nothing more is due now. Sleep until the
            # next deferred job or retry (no wake-up tells of those), a wake-up,
            # or the poll.
            due = self._seconds_until_due()
            if due is not None:
                # "Due now" right after a claim that found nothing is a job another
                # worker is claiming (its claim not yet committed) or a row someone
                # holds locked. Claiming again in a millisecond found it locked
                # again, for as long as the answer was kept: 700 empty claims a
                # second while one row stayed held. One more look a little later
                # still starts a deferred job that became due since the claim.
                delay = due + 0.001 if due > 0 else DUE_NOW_RECHECK
                self._look_again_at = min(self._look_again_at, time.monotonic() + delay)
        if self._drained and self._free_slots() > 0:
            timeout = min(timeout, self._look_again_at - time.monotonic())
        return max(timeout, 0.0)

    def _seconds_until_due(self):
        """``store.seconds_until_due``, asked at most every 0.1 s: a worker under
        moderate load comes back empty-handed after nearly every job, and one
        extra query per job would double its round trips. A deferred job
        enqueued meanwhile is found at most 0.1 s late."""
        now = time.monotonic()
        if now - self._due_checked_at >= 0.1:
            due = self.store.seconds_until_due(self.queues)
            self._due_checked_at = now
            # From the answer's arrival, not the question's: an estimate early by
            # the query's trip could send the claim before the job is due, and
            # the look after that empty claim waits DUE_NOW_RECHECK.
            now = time.monotonic()
            self._due_at = None if due is None else now + due
        return None if self._due_at is None else max(0.0, self._due_at - now)

    def _start_slot(self):
        number = len(self._threads)
        thread = threading.Thread(target=self._slot, name=f"pgjobs-slot-{number}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_threads(self):
        for _ in range(self.concurrency):
            self._start_slot()
        if self.store.wakeup == "listen" and not self.burst:
            self.store.listen(self.queues)
            thread = threading.Thread(target=self._listen, name="pgjobs-listener", daemon=True)
            thread.start()

    def _listen(self):
        while not self._stopping.is_set():
            try:
                woken = self.store.wait(self.poll_interval)
                if not woken:
                    continue
                if woken is True or any(self._answers(wakeup) for wakeup in woken):
                    self._notified = True
                    self._wake.set()
                    continue
                # Others answer at once; look ourselves a little later, in case
                # they cannot (busy, or gone since we last listed the workers).
                # The main thread is woken only to wait less, not for every
                # wake-up: eight idle processes churning per job would slow the
                # one that answers.
                later = time.monotonic() + random.uniform(0.05, 0.15)
                if later < self._look_again_at:
                    self._look_again_at = later
                    if later < self._sleeping_until:
                        self._wake.set()
            except Exception:  # never let the listener die; polling covers for it
                logger.exception("pgjobs: listener error")
                time.sleep(1.0)

    def _answers(self, woken):
        """Whether this worker claims at once for a wake-up: for N new jobs, the
        N workers (of W serving the queue) whose rank follows the first job's id,
        modulo W. Every worker reads the same wake-up, so they agree without
        talking; the rest would only find the jobs taken (a thundering herd:
        with 8 idle workers, 7 empty claims per job)."""
        if woken is True or woken.first_id is None:
            return True
        rank, workers = self._ranks.get(woken.queue, (None, 0))
        if rank is None:
            return True  # not in the list (yet): answer everything
        return (rank - woken.first_id) % workers < woken.count

    def _refresh_ranks(self):
        peers = self.store.live_workers()
        if peers is None:
            self._ranks = {}
            return
        queues = {q for _, serves in peers if serves for q in serves} | set(self.queues or ())
        ranks = {}
        for name in queues:
            serving = sorted(w for w, serves in peers if serves is None or name in serves)
            if self.worker_id in serving:
                ranks[name] = (serving.index(self.worker_id), len(serving))
        everyone = sorted(w for w, serves in peers if serves is None)
        if self.worker_id in everyone:
            # A queue no worker names: only the workers serving every queue take it.
            ranks = _DefaultRanks(ranks, (everyone.index(self.worker_id), len(everyone)))
        self._ranks = ranks

    def _safe_close_store(self):
        try:
            self.store.close()
        except Exception:
            pass

    # -- claiming ----------------------------------------------------------------

    def _prefetch_target(self):
        """How many jobs to hold beyond the slots: enough to keep every slot busy
        for about two claim round trips, so slots never wait for a claim, and no
        more (at most ``prefetch``), so that slow jobs are not held back from
        other workers. Zero until a few jobs and claims have been timed."""
        if not self.prefetch or self._job_seconds is None or self._claim_seconds is None:
            return 0
        wanted = self.concurrency * 2 * self._claim_seconds / max(self._job_seconds, 1e-6)
        return min(self.prefetch, int(wanted))

    def _free_slots(self):
        return self.concurrency + self._prefetch_target() - len(self._claimed)

    def _claim_size(self, successes):
        """How many jobs to claim now: none while more than ``_low_water`` claimed
        jobs still wait for a slot (claiming later claims more at once), else
        up to the free capacity."""
        prefetch = self._prefetch_target()
        self._low_water = prefetch // 2
        # Jobs queued beyond the idle slots about to take them. A job queued a
        # moment ago that no idle slot has picked up yet is no reason to wait:
        # counting it, the main thread skipped the claim for the slots that had
        # just freed, and they idled until the next job ended.
        idle = self.concurrency - len(self._running)
        waiting = max(0, self._slots_queue.qsize() - idle)
        if waiting > self._low_water:
            return 0
        # A slot that ran dry is news for a store that is polled (it may have
        # jobs the last look missed), not for one that wakes the worker once it
        # has run out: under a steady trickle every job ended so, in a claim
        # that found nothing, a third of all claims.
        freed = self._slot_freed and not (self._drained and self.store.wakeup == "listen")
        if self._notified or freed:
            self._notified = self._slot_freed = self._drained = False
        elif self._drained and (
            waiting or (not self.burst and time.monotonic() < self._look_again_at)
        ):
            # Nothing new since the store ran out: wait for a wake-up meant for us,
            # the next deferred job, or the poll.
            return 0
        free = self.concurrency + prefetch - len(self._claimed) + len(successes)
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - self.stats.claimed)
        return max(free, 0)

    def _must_record(self, successes):
        """Record successes without claiming: when nothing is left to run (so that
        results appear at once), or when they have waited ``_record_within``."""
        if not successes:
            return False
        return self._slots_queue.qsize() == 0 or self._record_within() == 0

    def _record_within(self):
        """Seconds until the oldest unrecorded success must be stored (50 ms after
        it finished: batching saves round trips, not visible delay)."""
        if self._first_unrecorded_at is None:
            return self.heartbeat_interval
        return max(0.0, self._first_unrecorded_at + 0.05 - time.monotonic())

    def _finish_and_claim(self, successes, free):
        """Record successes and claim up to ``free`` jobs, in one store call
        (one round trip and one commit on stores that can)."""
        if free == 0 and not successes:
            return 0, 0
        results = [(job.id, outcome.result) for job, outcome in successes]
        started = time.perf_counter()
        jobs = self.store.finish_and_claim(self.worker_id, results, self.queues, free)
        if free:
            self._claim_seconds = _average(self._claim_seconds, time.perf_counter() - started)
            if jobs:
                self._poll_delay = BUSY_POLL  # jobs are coming: see _next_poll
            self._drained = len(jobs) < free
            if self._drained:
                self._look_again_at = time.monotonic() + self._next_poll(len(jobs))
        self._forget(successes)
        if not self.store.claims_in_order:
            jobs.sort(key=lambda job: job.claim_order())
        self._dispatch(jobs)
        self.stats.claimed += len(jobs)
        return free, len(jobs)

    def _dispatch(self, jobs):
        """Hand claimed jobs to the slots in claim order, each with a token, and
        start the async ones among them as tasks on the event loop instead, the
        whole batch in one hand-over.

        Through a slot, each async job cost two thread hand-overs (to the slot, and
        from it to the loop) and a waiting thread: with hundreds of 50 ms jobs in
        flight, the hand-overs set the pace. Once the tokens run out, jobs go to
        the slots without one, and every job after them too until they have
        theirs, so that no job overtakes one claimed before it. Such a job stays
        here, in ``_tokenless_jobs``, until a slot has a token for it: stopping
        hands it back unstarted, like a job still in the slots' queue.
        """
        claimed, tokens = self._claimed, self._tokens
        put = self._slots_queue.put
        straight = []
        # Only this thread takes tokens without waiting, and only while no slot
        # waits for one: a token counted here is still there to take.
        with_token = 0 if self._tokenless_waiting() else min(len(jobs), tokens.qsize())
        for job in itertools.islice(jobs, with_token):
            tokens.get_nowait()
            claimed[job.id] = job
            if self._is_async(job):
                straight.append(job)
            else:
                put(job)
        if with_token < len(jobs):
            self._tokenless_sent += len(jobs) - with_token
            for job in itertools.islice(jobs, with_token, None):
                claimed[job.id] = job
                self._tokenless_jobs.append(job)
                put(_TOKENLESS)
        if straight:
            self._event_loop().call_soon_threadsafe(self._start_on_loop, straight)

    def _tokenless_waiting(self):
        """How many jobs sent without a token still wait for one (main thread)."""
        served = self._tokenless_served
        for _ in range(len(served)):
            served.popleft()
            self._tokenless_sent -= 1
        return self._tokenless_sent

    def _is_async(self, job):
        """Whether the job's function is an ``async def`` (imported on first sight)."""
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

    def _next_poll(self, found):
        """Seconds until the next look after a claim that came back short (one that
        found jobs has set ``_poll_delay`` to BUSY_POLL).

        A store that wakes workers (LISTEN) needs a poll only as a safety net. A
        store that does not makes a worker that has caught up wait for the poll
        for each job enqueued after that: half a second on average with the 1 s
        default, under a steady load as much as when idle. So while jobs keep
        coming the worker looks again soon (``BUSY_POLL``), and backs off,
        doubling the wait with each claim that finds nothing, to the poll
        interval: a few more queries after each burst of jobs, no more."""
        if self.store.wakeup == "listen":
            return self.poll_interval
        if not found:
            self._poll_delay *= 2
        self._poll_delay = min(self._poll_delay, self.poll_interval)
        return self._poll_delay

    def _heartbeat(self):
        # Even idle, so that pgjobs_status sees this worker alive.
        cancel = self.store.heartbeat(self.worker_id, list(self._claimed))
        if cancel:
            self._request_cancellations(cancel)

    def _rescue(self):
        rescued = self.store.rescue()
        if rescued:
            logger.warning("pgjobs: put back %d job(s) whose worker stopped heartbeating", rescued)

    # -- running (slot threads) ----------------------------------------------------

    def _slot(self):
        try:
            self._run_slot()
        finally:
            # A thread's connections outlive it unless closed: close them, so a
            # worker run inside a longer process leaves none behind.
            connections.close_all()

    def _run_slot(self):
        while True:
            try:
                job = self._slots_queue.get_nowait()
            except queue.Empty:
                # This slot is idle: make sure the main thread knows before waiting.
                # The queue's size seen after the job is not enough: slots that
                # finish together may all see one job queued, which only one gets.
                self._share_freed()
                job = self._slots_queue.get()
            if job is _STOP_SLOT:
                return
            if job is _TOKENLESS:
                self._tokens.get()  # until a running job ends
                self._tokenless_served.append(None)
                try:
                    job = self._tokenless_jobs.popleft()
                except IndexError:  # handed back: the worker is stopping
                    self._tokens.put(None)
                    continue
                if self._is_async(job):
                    # An async job: a task on the loop with this token, as
                    # _dispatch starts one, rather than a thread waiting for it.
                    self._event_loop().call_soon_threadsafe(self._start_on_loop, [job])
                    continue
            running = self._begin(job)
            if running is None:  # put back at the end of the grace period
                self._tokens.put(None)
                continue
            outcome = self._execute(job, running)
            if not self._job_ended(job, outcome):
                # Timed out: its outcome was recorded, and a new slot took this
                # one's place with a token of its own, so this thread bows out.
                return
            self._tokens.put(None)

    def _share_freed(self):
        """A share of the concurrency is free: tell the main thread, which claims
        for it. (``set()`` takes a lock even when the event is set already.)"""
        self._slot_freed = True
        if not self._wake.is_set():
            self._wake.set()

    def _begin(self, job, on_loop=False):
        """Log the job's start and count it as running; None if it must not start,
        because the grace period is over and claimed jobs are being put back."""
        if self._log_jobs:
            logger.info(
                "job %s %s started (attempt %d/%d)",
                job.id,
                job.func,
                job.attempts,
                job.max_attempts,
            )
        context = JobContext(job.id, job.func, job.queue, job.attempts, job.max_attempts)
        deadline = None if job.timeout is None else time.monotonic() + job.timeout
        running = RunningJob(job, context, deadline, on_loop=on_loop)
        with self._running_lock:
            if self._abandoned:
                return None
            self._running[job.id] = running
        if deadline is not None:
            self._wake.set()  # the main thread watches the deadline from now on
        return running

    def _job_ended(self, job, outcome):
        """Hand the outcome to the main thread; False if the job had timed out (its
        outcome is recorded already)."""
        with self._running_lock:
            if self._running.pop(job.id, None) is None:
                return False
            self._done.append((job, outcome))
        # Wake the main thread when it has something to do: a failure to
        # record, or prefetched jobs running low (an empty queue is seen at
        # the top of the loop). Otherwise successes wait to be recorded with
        # the next claim, or within _record_within at the latest.
        waiting = self._slots_queue.qsize()
        if (not outcome.ok or 0 < waiting <= self._low_water) and not self._wake.is_set():
            self._wake.set()  # (set() takes a lock even when already set)
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
        if is_coroutine:
            return self._execute_async_waiting(job, running, started)
        token = set_current_job(running.context)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:  # SystemExit from library code too: the slot lives on
            return _failed(exc, started)
        finally:
            reset_current_job(token)
            tidy_connections()
        return _succeeded(result, started)

    def _start_on_loop(self, jobs):
        """On the event loop: start jobs that ``_dispatch`` holds tokens for."""
        for job in jobs:
            running = self._begin(job, on_loop=True)
            if running is None:
                self._tokens.put(None)
                continue
            # The task is kept (asyncio itself holds only a weak reference).
            running.future = self._loop.create_task(self._run_on_loop(job, running))

    async def _run_on_loop(self, job, running):
        outcome = await self._execute_async(job, running)
        self._job_ended(job, outcome)
        self._tokens.put(None)  # its own, even past its timeout: no slot replaces a task
        if self._slots_queue.qsize() == 0:
            self._share_freed()  # and no claimed job waits for it

    async def _execute_async(self, job, running):
        started = time.perf_counter()
        try:
            func, _, args, kwargs = self._prepare(job)
        except InvalidJob as exc:
            return _cannot_start(exc)
        token = set_current_job(running.context)  # the task's own copy of the context
        try:
            coroutine = _contained(func(*args, **kwargs))
            if job.timeout is not None:
                coroutine = asyncio.wait_for(coroutine, job.timeout)
            result = await coroutine
            if isinstance(result, _Exited):
                raise result.exc
        except BaseException as exc:  # cancelled (grace period) or SystemExit: an outcome too
            return _failed(exc, started)
        finally:
            reset_current_job(token)
        return _succeeded(result, started)

    def _function(self, path):
        """The function a job names, imported once per worker."""
        try:
            return self._functions[path]
        except KeyError:
            func = load_function(path)  # InvalidJob is not cached: fixed code gets a chance
            self._functions[path] = found = (func, inspect.iscoroutinefunction(func))
            return found

    def _enforce_timeouts(self):
        """Fail running jobs past their timeout and give their slots to new threads.

        A thread cannot be killed: the overdue one runs on, detached, and its
        eventual outcome is dropped (async jobs are cancelled on their loop).
        Returns the seconds until the next deadline, or None.
        """
        now = time.monotonic()
        next_deadline = None
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
                self._done.append((running.job, Outcome(False, error=error)))
                if running.on_loop:
                    self._cancel(running)  # the task ends, and gives its token back
                else:
                    # The overdue thread keeps its token to the end: a new one for the new slot.
                    self._tokens.put(None)
                    self._start_slot()
        return None if next_deadline is None else next_deadline - now

    def _request_cancellations(self, job_ids):
        with self._running_lock:
            for job_id in job_ids:
                running = self._running.get(job_id)
                if running is not None and not running.context.cancel_requested:
                    running.context.cancel_requested = True
                    logger.info("job %s %s: cancellation requested", job_id, running.job.func)

    def _execute_async_waiting(self, job, running, started):
        """An async job that reached a slot's thread: its function could not be
        imported when the job was claimed (``_classify``), and could now. It runs
        on the loop all the same, this thread waiting for it."""
        future = asyncio.run_coroutine_threadsafe(
            self._execute_async(job, running), self._event_loop()
        )
        running.future = future  # for a worker that stops before it ends
        try:
            return future.result()
        except BaseException as exc:  # cancelled at the end of the grace period
            return _failed(exc, started)

    def _event_loop(self):
        """One event loop thread for every async job, started on first use."""
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="pgjobs-async", daemon=True).start()
                self._loop = loop
            return self._loop

    # -- recording -------------------------------------------------------------------

    def _take_outcomes(self):
        """Record failures now (each needs its own decision) and return the
        successes, which are recorded in one statement with the next claim."""
        while self._done:
            job, outcome = self._done.popleft()
            self._unrecorded.append((job, outcome))
            if outcome.seconds:
                self._job_seconds = _average(self._job_seconds, outcome.seconds)
        if self._unrecorded and self._first_unrecorded_at is None:
            self._first_unrecorded_at = time.monotonic()
        successes = []
        for job, outcome in self._unrecorded:
            if outcome.ok:
                successes.append((job, outcome))
            else:
                # Recording a failure twice (after a store error) is harmless: the
                # store only updates jobs still running under this worker.
                self._record_failure(job, outcome)
                self._forget([(job, outcome)])
        self._unrecorded = successes
        if not successes:
            self._first_unrecorded_at = None
        return successes

    def _record_successes(self, successes):
        if successes:
            self.store.finish(
                self.worker_id, [(job.id, outcome.result) for job, outcome in successes]
            )
            self._forget(successes)

    def _record_outcomes(self):
        self._record_successes(self._take_outcomes())

    def _forget(self, recorded):
        """Outcomes now stored: free their slots (and drop stored successes)."""
        if recorded is self._unrecorded:
            self._unrecorded = []
            self._first_unrecorded_at = None
        for job, outcome in recorded:
            self._claimed.pop(job.id, None)
            if outcome.ok:
                self.stats.succeeded += 1
                if self._log_jobs:
                    logger.info(
                        "job %s %s succeeded in %.1f ms", job.id, job.func, outcome.seconds * 1e3
                    )

    def _record_failure(self, job, outcome):
        error = outcome.error
        self.stats.failed += 1
        if outcome.cancelled:
            self.store.fail(self.worker_id, job.id, error, status=CANCELLED)
            logger.info("job %s %s cancelled itself", job.id, job.func)
            return
        if outcome.permanent or job.attempts >= job.max_attempts:
            self.store.fail(self.worker_id, job.id, error)
            logger.error(
                "job %s %s failed for good (attempt %d/%d): %s: %s",
                job.id,
                job.func,
                job.attempts,
                job.max_attempts,
                error["type"],
                error["message"],
            )
            return
        delay = self.retry_policy.delay(job.attempts)
        self.store.retry(self.worker_id, job.id, error, delay)
        # No wake-up tells of a retry: look for it when it is due, asking the
        # store afresh (the answer kept for 0.1 s predates it).
        self._look_again_at = min(self._look_again_at, time.monotonic() + delay)
        self._due_checked_at = -1.0
        self.stats.retried += 1
        logger.warning(
            "job %s %s failed (attempt %d/%d), retrying in %.2f s: %s: %s",
            job.id,
            job.func,
            job.attempts,
            job.max_attempts,
            delay,
            error["type"],
            error["message"],
        )

    # -- stopping ----------------------------------------------------------------------

    def _finish_in_flight(self, deadline):
        """Return unstarted jobs, let running ones finish (until ``deadline``),
        record what finished and put the rest back.

        ``deadline=None`` (a ``max_jobs``/``max_seconds`` limit, not a signal):
        jobs already claimed still run, so ``--max-jobs N`` runs N jobs."""
        unstarted = []
        while deadline is not None:
            try:
                job = self._slots_queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP_SLOT and job is not _TOKENLESS:
                unstarted.append(job)
        while deadline is not None and self._tokenless_jobs:
            try:
                unstarted.append(self._tokenless_jobs.popleft())
            except IndexError:  # a slot took the last one meanwhile
                break
        self._release(unstarted)
        for _ in self._threads:
            self._slots_queue.put(_STOP_SLOT)
        while self._claimed and (deadline is None or time.monotonic() < deadline):
            self._wake.clear()
            self._record_outcomes_patiently()
            if self._claimed:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                self._wake.wait(max(0.0, min(1.0, remaining)))
        self._record_outcomes_patiently()
        if self._claimed:
            logger.warning(
                "pgjobs: %d job(s) still running after the grace period; putting them back",
                len(self._claimed),
            )
            with self._running_lock:
                self._abandoned = True  # a slot still waiting for a token must not start
            self._cancel_async_jobs()  # threads cannot be stopped; tasks can
            self._release(list(self._claimed.values()))

    def _cancel_async_jobs(self):
        """Cancel the async jobs still running: they are put back, and must not
        run on, on a loop that outlives the worker (a drain inside a process)."""
        with self._running_lock:
            running = list(self._running.values())
        for job in running:
            self._cancel(job)

    def _cancel(self, running):
        """Cancel an async job's task (on its loop: asyncio is not thread-safe)."""
        if running.on_loop:
            # Its task may be a moment from being created; on the loop, it is.
            self._loop.call_soon_threadsafe(lambda: running.future.cancel())
        elif running.future is not None:
            running.future.cancel()  # a concurrent Future, which cancels its task

    def _record_one_by_one(self):
        """Successes keep failing to record together: record them one at a time, so
        that one the store cannot take (a value it refuses) does not hold up the
        rest; that one is recorded as a failure with the reason."""
        for job, outcome in list(self._unrecorded):
            try:
                self.store.finish(self.worker_id, [(job.id, outcome.result)])
            except Exception as exc:
                try:
                    error = describe_error(
                        RuntimeError(f"the job's result could not be recorded: {exc}")
                    )
                    self.store.fail(self.worker_id, job.id, error)
                except Exception:
                    return  # the store itself is down: keep everything for later
                self.stats.failed += 1
                self._claimed.pop(job.id, None)
                self._unrecorded.remove((job, outcome))
                continue
            self._forget([(job, outcome)])
            self._unrecorded.remove((job, outcome))

    def _record_outcomes_patiently(self):
        for attempt in range(5):
            try:
                return self._record_outcomes()
            except Exception as exc:
                logger.warning("pgjobs: cannot record outcomes (%s); retrying", exc)
                self._safe_close_store()
                time.sleep(0.2 * 2**attempt)

    def _release(self, jobs):
        if not jobs:
            return
        ids = [job.id for job in jobs]
        try:
            self.store.release(self.worker_id, ids)
        except Exception as exc:  # their leases expire and any worker rescues them
            logger.warning("pgjobs: cannot put back %d job(s) (%s)", len(ids), exc)
            return
        for job_id in ids:
            self._claimed.pop(job_id, None)
        self.stats.released += len(ids)


class _DefaultRanks(dict):
    """Ranks per queue, with a default for queues no worker names."""

    def __init__(self, ranks, default):
        super().__init__(ranks)
        self.default = default

    def get(self, queue, fallback=None):
        return super().get(queue, self.default)


def _cannot_start(exc):
    return Outcome(False, error=describe_error(exc), permanent=True)


def _failed(exc, started):
    if isinstance(exc, JobCancelled):
        return Outcome(False, error=describe_error(exc), permanent=True, cancelled=True)
    return Outcome(False, error=describe_error(exc), seconds=time.perf_counter() - started)


def _succeeded(result, started):
    return Outcome(True, result=encode_result(result), seconds=time.perf_counter() - started)


def _average(average, value, weight=0.1):
    """Exponentially weighted moving average: recent jobs and claims count most."""
    return value if average is None else average + weight * (value - average)


def _name(func):
    return getattr(func, "__qualname__", None) or repr(func)
