"""The ``Worker``: builds the parts, owns the main loop, starts and stops.

The main thread runs ``Worker.run``: each turn it enforces timeouts, takes the
outcomes the executor reports, runs the duties that are due, asks the claim
policy how many jobs to claim, stores successes with that claim
(``store.finish_and_claim``), hands the claimed jobs to the executor and sleeps
on the alarm until something needs it. It speaks only the store interface
(``pgjobs/stores/base.py``), never a vendor.

The parts (this package): ``policy`` decides, ``executor`` runs jobs (slot
threads and the event loop thread), ``recorder`` stores outcomes, ``wakeups``
holds what wakes the main thread and what listens for wake-ups, ``duties`` the
periodic work (heartbeat, rescue, ranks, pruning, schedules, the summary line), ``shutdown`` the
signals and the grace period.
"""

import dataclasses
import itertools
import logging
import os
import socket
import time
import uuid

from ..exceptions import StoreNotSetUp
from ..retry import RetryPolicy
from . import duties as duty_kinds
from .atomic import AtomicRunner
from .duties import Duties
from .executor import Executor
from .policy import DUE_NOW_RECHECK, ClaimPolicy, check_options
from .recorder import Recorder, close_quietly
from .shutdown import Shutdown, finish_in_flight
from .telemetry import Telemetry
from .wakeups import RANKS_INTERVAL, Alarm, Listener

logger = logging.getLogger("pgjobs")

#: Seconds between the warnings of a worker waiting for its store to be set up
#: (``manage.py migrate`` not run yet): said at once, then at this low rate.
SETUP_PROBLEM_EVERY = 60.0


def make_worker_id(hostname=None):
    """host:pid:random, readable in the admin and unique across restarts."""
    return f"{(hostname or socket.gethostname())[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0  # attempts that raised, retried or not
    retried: int = 0
    released: int = 0
    lost: int = 0  # atomic jobs rolled back: their lease was lost before they committed

    @property
    def ran(self):
        return self.succeeded + self.failed


class Worker:
    """Works one store until stopped (or, with ``burst``, until nothing is due).

    ``periodic``: ``[(interval, callable)]`` run as duties (see ``duties.py``);
    ``duties``: ``Duty`` objects, likewise (``build_worker`` passes the pruner
    and the scheduler so)."""

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
        hostname=None,
        periodic=None,
        duties=None,
    ):
        check_options(
            concurrency=concurrency,
            poll_interval=poll_interval,
            grace_period=grace_period,
            prefetch=prefetch,
        )
        self.store = store
        self.backend = None  # the backend the store is from, when build_worker built it
        self.queues = list(queues) if queues else None
        self.concurrency = concurrency
        self.poll_interval = (
            poll_interval if poll_interval is not None else store.default_poll_interval
        )
        self.grace_period = grace_period
        self.retry_policy = retry_policy or RetryPolicy()
        self.burst = burst
        self.max_jobs = max_jobs
        self.max_seconds = max_seconds
        self.prefetch = prefetch
        # The host the worker says it runs on (pgjobs_status, the admin): the
        # machine's name unless told (containers that share one, tests).
        self.hostname = hostname or socket.gethostname()
        self.worker_id = worker_id or make_worker_id(self.hostname)
        self.stats = WorkerStats()
        # Heartbeat three times a lease; look for dead workers' jobs twice a lease,
        # so a killed worker's jobs are back within about 1.5 leases.
        lease = store.lease_seconds
        self.heartbeat_interval = lease / 3
        self.rescue_interval = lease / 2
        self.listens = store.supports_listen and not burst

        self.alarm = Alarm()
        self.shutdown = Shutdown(self.alarm, grace_period)
        self.policy = ClaimPolicy(
            concurrency=concurrency,
            prefetch=prefetch,
            poll_interval=self.poll_interval,
            heartbeat_interval=self.heartbeat_interval,
            listens=store.supports_listen,
            burst=burst,
            max_jobs=max_jobs,
        )
        atomic = AtomicRunner(store, self.worker_id) if store.supports_atomic_jobs else None
        self.telemetry = Telemetry(self.worker_id, type(self))
        self.executor = Executor(
            concurrency,
            self.alarm,
            atomic,
            previous_result=store.previous_result,
            telemetry=self.telemetry,
        )
        self.recorder = Recorder(
            store,
            self.worker_id,
            self.retry_policy,
            self.stats,
            on_retry=self._retried,
            telemetry=self.telemetry,
        )
        self.listener = Listener(
            store,
            self.alarm,
            self.shutdown.stopping,
            worker_id=self.worker_id,
            queues=self.queues,
            poll_interval=self.poll_interval,
        )
        self.duties = Duties(
            [
                duty_kinds.heartbeat(
                    store, self.worker_id, self.recorder, self.executor, self.heartbeat_interval
                ),
                duty_kinds.rescue(store, self.rescue_interval),
                duty_kinds.summary(self.stats, self.executor, duty_kinds.SUMMARY_INTERVAL),
            ]
        )
        if self.listens and store.supports_live_workers:
            self.duties.add(duty_kinds.ranks(self.listener, RANKS_INTERVAL))
        for interval, func in periodic or ():
            self.duties.add(duty_kinds.periodic(interval, func))
        for duty in duties or ():
            self.duties.add(duty)
        self._due_checked_at = -1.0  # last seconds_until_due query, and its answer
        self._due_at = None

    def duty(self, name):
        """The duty of that name (``"pruning"``, ``"schedules"``, ...), or None."""
        return self.duties.get(name)

    # -- lifecycle -------------------------------------------------------------

    def install_signal_handlers(self):
        """SIGTERM/SIGINT stop gracefully; a second one exits at once."""
        self.shutdown.install_signal_handlers()

    def request_stop(self):
        self.shutdown.request_stop()

    def run(self):
        """Work until stopped; return the ``WorkerStats``."""
        started = time.monotonic()
        if not self._register():
            return self.stats  # stopped before the store was ever reachable
        try:
            return self._run(started)
        finally:
            self.shutdown.close()
            self.alarm.close()
            try:
                self.store.stop_listening()
                self.store.unregister_worker(self.worker_id)
            except Exception:  # its heartbeat stops; the next rescue removes the row
                pass

    def _register(self):
        """Register this worker, waiting (with backoff) for a store that is down at
        start-up, as it would for one that goes down later. False if stopped first.

        A store that is not set up says what to do (``Store.setup_problem``): at
        once and then every ``SETUP_PROBLEM_EVERY`` seconds while the worker waits
        (tables not migrated yet), or as ``StoreNotSetUp`` when waiting cannot help
        (no such database)."""
        said_at = None  # when the set-up problem was last logged (monotonic)
        for failures in itertools.count():
            try:
                self.store.register_worker(
                    self.worker_id, self.hostname, os.getpid(), self.queues, self.concurrency
                )
                return True
            except Exception as exc:
                delay = min(10.0, 0.25 * 2 ** min(failures + 1, 10))
                problem = self._setup_problem(exc)
                if problem is not None and problem[1]:
                    self._safe_close_store()
                    raise StoreNotSetUp(problem[0]) from None
                if problem is not None:
                    now = time.monotonic()
                    due = said_at is None or now - said_at >= SETUP_PROBLEM_EVERY
                    said_at = now if due else said_at
                    level = logging.WARNING if due else logging.DEBUG
                    logger.log(level, "pgjobs: %s; waiting for it", problem[0])
                else:
                    level = logging.WARNING if failures == 0 else logging.DEBUG
                    logger.log(
                        level,
                        "pgjobs: store unreachable (%s); retrying in %.2f s",
                        " ".join(str(exc).split()),  # one line (drivers' texts hold newlines)
                        delay,
                    )
                self._safe_close_store()
                if self.shutdown.stopping.wait(delay):
                    return False

    def _setup_problem(self, exc):
        try:
            return self.store.setup_problem(exc)
        except Exception:  # asking failed too: the store is unreachable
            return None

    def _run(self, started):
        # Asked once: at thousands of jobs a second even a disabled log call per
        # job shows in a profile. Per-job lines are pgjobs.jobs's (``-v 2``); at
        # the default verbosity the summary duty says what ran every few seconds.
        log_jobs = logging.getLogger("pgjobs.jobs").isEnabledFor(logging.INFO)
        self.executor.log_jobs = self.recorder.log_jobs = log_jobs
        if self.listens and not self.listener.start():
            # No wake-ups after all: poll, backing off as a polled store's workers do.
            self.listens = self.policy.listens = False
        alarm, policy, recorder, stopping = (
            self.alarm,
            self.policy,
            self.recorder,
            self.shutdown.stopping,
        )
        failures = 0
        while True:
            alarm.clear()
            try:
                until_timeout = self.executor.enforce_timeouts()
                successes = self._take_outcomes()
                if stopping.is_set() or self._limit_reached(started):
                    recorder.finish(successes)
                    break
                # Before claiming: rescued jobs become claimable, schedules enqueue.
                until_duty = self.duties.run_due()
                policy.note_wakeups(*alarm.take())
                wanted = policy.claim_size(
                    held=len(recorder.held),
                    running=self.executor.running(),
                    queued=self.executor.queued(),
                    successes=len(successes),
                    claimed_total=self.stats.claimed,
                    look_again_at=alarm.look_again_at(),
                )
                self.executor.low_water = policy.low_water
                if wanted or policy.must_record(
                    successes, self.executor.queued(), recorder.first_unrecorded_at
                ):
                    requested, claimed = self._finish_and_claim(successes, wanted)
                else:
                    requested = claimed = None  # enough queued: claim later, in a bigger batch
                held = False
                if self.burst and not claimed and not recorder.held:
                    held = policy.keep_draining() and self._seconds_until_due() == 0
                    if not held:
                        break  # drained: nothing due, nothing running
                if claimed and claimed == requested:
                    # There may be more; slots fill or the claim comes back short.
                    alarm.sleep(0)  # no wait: reads the wake-ups that came meanwhile
                    continue
                if not self.burst and claimed is not None and policy.drained:
                    # Nothing more is due now: look again for the next deferred job
                    # or retry (no wake-up tells of those), a wake-up, or the poll.
                    due = self._seconds_until_due()
                    if due is not None:
                        alarm.look_again_by(policy.look_after_due(due))
                timeout = self._sleep_seconds(until_timeout, until_duty, held)
                if failures:
                    logger.warning("pgjobs: store reachable again")
                failures = 0
            except Exception as exc:  # the store is unreachable: back off, keep the jobs
                failures += 1
                timeout = min(10.0, 0.25 * 2**failures)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                logger.log(level, "pgjobs: store error (%s); retrying in %.2f s", exc, timeout)
                self._safe_close_store()
                if stopping.is_set():
                    break  # stopping records what it can, a bounded number of times
                if failures >= 3 and recorder.unrecorded:
                    recorder.record_one_by_one()
            alarm.sleep(timeout)
        deadline = None if self._limit_reached(started) else time.monotonic() + self.grace_period
        finish_in_flight(self.executor, recorder, alarm, deadline, self._record_patiently)
        return self.stats

    def _sleep_seconds(self, until_timeout, until_duty, held):
        """How long the main thread may sleep at the end of a turn with nothing to
        do: until the policy's next look, the oldest unrecorded success's deadline
        (``RECORD_WITHIN``), a running job's timeout, the next duty, or, while a
        due job is held by another transaction (``held``), ``DUE_NOW_RECHECK``."""
        policy, recorder = self.policy, self.recorder
        timeout = policy.idle_timeout(
            held=len(recorder.held), look_again_at=self.alarm.look_again_at()
        )
        if recorder.unrecorded:
            timeout = min(timeout, policy.record_within(recorder.first_unrecorded_at))
        if until_timeout is not None:
            timeout = min(timeout, until_timeout)
        if until_duty is not None:
            timeout = min(timeout, until_duty)
        if held:
            timeout = min(timeout, DUE_NOW_RECHECK)
        return timeout

    def _limit_reached(self, started):
        if self.max_jobs is not None and self.stats.claimed >= self.max_jobs:
            return True
        return self.max_seconds is not None and time.monotonic() - started >= self.max_seconds

    def _take_outcomes(self):
        outcomes = self.executor.take_done()
        self.policy.jobs_timed([outcome.seconds for _, outcome in outcomes if outcome.seconds])
        return self.recorder.take(outcomes)

    def _finish_and_claim(self, successes, free):
        """Record successes and claim up to ``free`` jobs, in one store call
        (one round trip and one commit on stores that can)."""
        if free == 0 and not successes:
            return 0, 0
        started = time.perf_counter()
        jobs = self.store.finish_and_claim(
            self.worker_id, self.recorder.results(successes), self.queues, free
        )
        look_again_at = self.policy.claimed(free, len(jobs), time.perf_counter() - started)
        if look_again_at is not None:
            self.alarm.set_look_again_at(look_again_at)
        self.recorder.forget(successes)
        if not self.store.claims_in_order:
            jobs.sort(key=lambda job: job.claim_order())
        self.recorder.hold(jobs)
        self.executor.submit(jobs)
        self.stats.claimed += len(jobs)
        return free, len(jobs)

    def _retried(self, delay):
        """A job will be retried in ``delay`` seconds: no wake-up tells of a retry,
        so look for it when it is due, asking the store afresh (the answer kept
        for 0.1 s predates it)."""
        self.alarm.look_again_by(time.monotonic() + delay)
        self._due_checked_at = -1.0

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

    def _record_patiently(self):
        self.recorder.finish_patiently(self._take_outcomes)

    def _safe_close_store(self):
        close_quietly(self.store)
