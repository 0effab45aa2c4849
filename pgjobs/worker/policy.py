"""The claim policy: how many jobs to claim, and when to look for more.

Pure decisions over numbers the worker hands in and an injected clock
(``clock=time.monotonic``): no store, no threads. The worker's main thread owns
the ``ClaimPolicy`` and is the only one to call it; the flags other threads raise
(a wake-up for this worker, a slot that ran dry) reach it through
``note_wakeups``, taken from the ``Alarm`` (``wakeups.py``).

Batching: what a job and a claim take, as moving averages, size the prefetch
(``prefetch_target``); the main thread claims again only when the jobs claimed
and not yet started fall to ``low_water``, so that claims come in batches.
"""

import math
import time

#: After a claim that found nothing although a job is due: seconds until the next look.
DUE_NOW_RECHECK = 0.05
#: How long a drain (``burst``) keeps looking for a due job its claims skip.
HELD_JOB_PATIENCE = 1.0
#: Stores without wake-ups: seconds to the next look after a claim that found jobs,
#: doubling with each empty claim up to the poll interval (see ``next_poll``).
BUSY_POLL = 0.05
#: Seconds a finished job's success may wait to be stored with the next claim.
RECORD_WITHIN = 0.05
#: The most jobs one worker process runs at once (``--concurrency``): more are
#: better spread over several processes.
MAX_CONCURRENCY = 10_000


def check_options(*, concurrency, poll_interval=None, grace_period=30.0, prefetch=0):
    """Refuse numbers a worker cannot honour: ``ValueError`` naming the option
    (and the command-line flag) and what it takes."""
    if not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(
            f"--concurrency (concurrency=) must be a whole number from 1 to {MAX_CONCURRENCY:,}, "
            f"not {concurrency!r}; run more worker processes for more"
        )
    if poll_interval is not None and not _finite(poll_interval, above=0):
        raise ValueError(
            "--poll-interval (poll_interval=) must be a finite number of seconds greater "
            f"than 0, not {poll_interval!r}"
        )
    if not _finite(grace_period, at_least=0):
        raise ValueError(
            "--grace-period (grace_period=) must be a finite number of seconds, 0 or more, "
            f"not {grace_period!r}"
        )
    if not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(
            f"--prefetch (prefetch=) must be a whole number, 0 or more, not {prefetch!r}"
        )


def _finite(value, *, above=None, at_least=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if above is not None and value <= above:
        return False
    return at_least is None or value >= at_least


def average(average, value, weight=0.1):
    """Exponentially weighted moving average: recent jobs and claims count most."""
    return value if average is None else average + weight * (value - average)


class ClaimPolicy:
    """Claim size, prefetch, poll back-off and idle timeouts for one worker."""

    def __init__(
        self,
        *,
        concurrency,
        prefetch=0,
        poll_interval,
        heartbeat_interval,
        listens=False,
        burst=False,
        max_jobs=None,
        clock=time.monotonic,
    ):
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.listens = listens  # the store wakes workers when jobs arrive
        self.burst = burst
        self.max_jobs = max_jobs
        self.clock = clock
        self.job_seconds = None  # moving averages, None until timed
        self.claim_seconds = None
        self.low_water = 0
        # The last claim came back short: the store had no more due jobs. Until a
        # wake-up (or a slot runs dry), claiming again would come back empty.
        self.drained = False
        self.notified = False  # a wake-up this worker answers, not yet acted on
        self.freed = False  # a slot ran dry, not yet acted on
        self.poll_delay = poll_interval  # stores that poll: until the next look
        self.held_since = None  # burst: since when claims skip a job still due

    # -- what the worker learns ----------------------------------------------------

    def jobs_timed(self, seconds):
        """Jobs ended, taking these ``seconds`` each, in the order they ended (one
        call per batch of outcomes: per job, the calls cost more than a no-op job's
        tenth)."""
        job_seconds = self.job_seconds
        for value in seconds:
            job_seconds = average(job_seconds, value)
        self.job_seconds = job_seconds

    def note_wakeups(self, notified, freed):
        self.notified |= notified
        self.freed |= freed

    def claimed(self, asked, found, seconds):
        """A claim for ``asked`` jobs found ``found`` in ``seconds``: return when to
        look again unasked (a monotonic time) if it came back short, else None."""
        if not asked:
            return None
        self.claim_seconds = average(self.claim_seconds, seconds)
        if found:
            self.poll_delay = BUSY_POLL  # jobs are coming: see next_poll
            self.held_since = None
        self.drained = found < asked
        if self.drained:
            return self.clock() + self.next_poll(found)
        return None

    # -- decisions -------------------------------------------------------------------

    def prefetch_target(self):
        """How many jobs to hold beyond the slots: enough to keep every slot busy
        for about two claim round trips, so slots never wait for a claim, and no
        more (at most ``prefetch``), so that slow jobs are not held back from
        other workers. Zero until a few jobs and claims have been timed."""
        if not self.prefetch or self.job_seconds is None or self.claim_seconds is None:
            return 0
        wanted = self.concurrency * 2 * self.claim_seconds / max(self.job_seconds, 1e-6)
        return min(self.prefetch, int(wanted))

    def free_capacity(self, held):
        """Jobs this worker could take on beyond the ``held`` it holds."""
        return self.concurrency + self.prefetch_target() - held

    def claim_size(self, *, held, running, queued, successes, claimed_total, look_again_at):
        """How many jobs to claim now: none while more than ``low_water`` claimed
        jobs still wait to start (claiming later claims more at once), else up to
        the free capacity.

        ``held``: jobs claimed whose outcome is not stored; ``running``: jobs
        running; ``queued``: claimed jobs not started yet; ``successes``:
        outcomes stored with this claim; ``claimed_total``: jobs claimed so far
        (for ``max_jobs``); ``look_again_at``: when a drained store is worth a
        look unasked."""
        prefetch = self.prefetch_target()
        self.low_water = prefetch // 2
        # Jobs queued beyond the idle slots about to take them. A job queued a
        # moment ago that no idle slot has picked up yet is no reason to wait:
        # counting it, the main thread skipped the claim for the slots that had
        # just freed, and they idled until the next job ended.
        idle = self.concurrency - running
        waiting = max(0, queued - idle)
        if waiting > self.low_water:
            return 0
        # A slot that ran dry is news for a store that is polled (it may have
        # jobs the last look missed), not for one that wakes the worker once it
        # has run out: under a steady trickle every job would end in a claim
        # that finds nothing.
        freed = self.freed and not (self.drained and self.listens)
        if self.notified or freed:
            self.notified = self.freed = self.drained = False
        elif self.drained and (waiting or (not self.burst and self.clock() < look_again_at)):
            # Nothing new since the store ran out: wait for a wake-up meant for us,
            # the next deferred job, or the poll.
            return 0
        free = self.concurrency + prefetch - held + successes
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - claimed_total)
        return max(free, 0)

    def next_poll(self, found):
        """Seconds until the next look after a claim that came back short (one that
        found jobs has set ``poll_delay`` to BUSY_POLL).

        A store that wakes workers needs a poll only as a safety net. A store
        that does not makes a worker that has caught up wait for the poll for
        each job enqueued after that: half a poll interval on average, under a
        steady load as much as when idle. So while jobs keep coming the worker
        looks again soon (``BUSY_POLL``), and backs off, doubling the wait with
        each claim that finds nothing, to the poll interval."""
        if self.listens:
            return self.poll_interval
        if not found:
            self.poll_delay *= 2
        self.poll_delay = min(self.poll_delay, self.poll_interval)
        return self.poll_delay

    def look_after_due(self, due):
        """When to claim again, after a short claim, for the next deferred job or
        retry due in ``due`` seconds (no wake-up tells of those).

        "Due now" right after a claim that found nothing is a job another worker
        is claiming (its claim not yet committed) or a row someone holds locked:
        claiming again at once finds it locked again. One more look a little
        later still starts a deferred job that became due since the claim."""
        return self.clock() + (due + 0.001 if due > 0 else DUE_NOW_RECHECK)

    def idle_timeout(self, *, held, look_again_at):
        """Seconds the main thread may sleep when it has nothing to do: until the
        next heartbeat, or, once the store ran out, the next look."""
        timeout = self.heartbeat_interval
        if self.burst:
            return timeout  # a slot finishing wakes the main thread
        if self.drained and self.free_capacity(held) > 0:
            timeout = min(timeout, look_again_at - self.clock())
        return max(timeout, 0.0)

    def record_within(self, first_unrecorded_at):
        """Seconds until the oldest unrecorded success must be stored (RECORD_WITHIN
        after it finished: batching saves round trips, not visible delay)."""
        if first_unrecorded_at is None:
            return self.heartbeat_interval
        return max(0.0, first_unrecorded_at + RECORD_WITHIN - self.clock())

    def must_record(self, successes, queued, first_unrecorded_at):
        """Store successes without claiming: when nothing is left to run (so that
        results appear at once), or when they have waited ``RECORD_WITHIN``."""
        if not successes:
            return False
        return queued == 0 or self.record_within(first_unrecorded_at) == 0

    def keep_draining(self):
        """Burst: whether to keep looking (for up to HELD_JOB_PATIENCE seconds) for
        a due job that claims skip, held for a moment by another transaction."""
        now = self.clock()
        if self.held_since is None:
            self.held_since = now
        return now - self.held_since <= HELD_JOB_PATIENCE
