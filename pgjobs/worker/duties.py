"""Periodic duties: what the worker's main thread does now and then, between claims.

Each ``Duty`` has a name, an interval and a ``run()`` that may return the
seconds until it wants to run again (sooner than its interval). All run once at
start, before the first claim. Heartbeat, rescue and the ranks refresh speak to
the store for the worker itself: their errors are the main loop's store errors
(it backs off and tries them again). The others (pruning, schedules, or any
``(interval, callable)`` given to the ``Worker``) have their errors logged once,
then quietly until they work again.

Main thread only.
"""

import logging
import random
import time

from .. import signals

logger = logging.getLogger("pgjobs")

#: Rescues are spread by a random factor in this range.
RESCUE_JITTER = (0.8, 1.2)
#: Seconds between the summary lines of what ran (``pgjobs`` at INFO).
SUMMARY_INTERVAL = 10.0


class Duty:
    """One periodic duty. ``wakes``: whether the main thread wakes up for it (else
    it runs at the first loop after it is due); ``raises``: whether its errors
    reach the main loop (store duties) rather than being logged here."""

    def __init__(self, name, interval, run, *, source=None, wakes=True, raises=False):
        self.name = name
        self.interval = float(interval)
        self.run = run
        self.source = source  # the object whose duty this is (a Pruner, a Scheduler)
        self.wakes = wakes
        self.raises = raises
        self.due = 0.0  # monotonic time of the next run
        self.failures = 0

    def __repr__(self):
        return f"<Duty {self.name} every {self.interval:g} s>"

    def run_if_due(self, now):
        if now < self.due:
            return
        if self.raises:
            wanted = self.run()  # an error leaves it due: tried again after the back-off
        else:
            try:
                wanted = self.run()
                if self.failures:
                    logger.warning("pgjobs: %s works again", self.name)
                self.failures = 0
            except Exception as exc:
                # Like store errors: say it once, then quietly until it works again.
                level = logging.WARNING if not self.failures else logging.DEBUG
                logger.log(
                    level, "pgjobs: %s failed (%s); again in %g s", self.name, exc, self.interval
                )
                self.failures += 1
                wanted = None
        delay = self.interval if wanted is None else min(self.interval, max(0.0, wanted))
        self.due = time.monotonic() + delay


class Duties:
    """The duties of one worker, run in order."""

    def __init__(self, duties=()):
        self.duties = list(duties)

    def add(self, duty):
        self.duties.append(duty)

    def get(self, name):
        return next((duty for duty in self.duties if duty.name == name), None)

    def run_due(self):
        """Run the duties that are due; return the seconds until the next one that
        wakes the main thread is (None without any)."""
        for duty in self.duties:
            duty.run_if_due(time.monotonic())
        dues = [duty.due for duty in self.duties if duty.wakes]
        return max(0.0, min(dues) - time.monotonic()) if dues else None


def heartbeat(store, worker_id, recorder, executor, interval):
    """Extend the leases of the jobs this worker holds (even idle, so that
    ``pgjobs_status`` sees it alive); pass on cancellation requests."""

    def beat():
        cancel = store.heartbeat(worker_id, list(recorder.held))
        if cancel:
            executor.request_cancellations(cancel)

    return Duty("heartbeat", interval, beat, wakes=False, raises=True)


def rescue(store, interval):
    """Put back the jobs of workers that stopped heartbeating (any live worker
    does it: a drain from cron may be the only one looking)."""

    def look():
        rescued = store.rescue()
        if rescued:
            logger.warning("pgjobs: put back %d job(s) whose worker stopped heartbeating", rescued)
        signals.send_job_lost(store, rescued.ended)  # no one else will say they finished
        return interval * random.uniform(*RESCUE_JITTER)

    return Duty("rescue", interval * RESCUE_JITTER[1], look, wakes=False, raises=True)


def ranks(listener, interval):
    """Every second, not every heartbeat: workers that start together must soon
    agree on who answers a wake-up (until then more of them do)."""
    return Duty("ranks", interval, listener.refresh_ranks, wakes=False, raises=True)


def summary(stats, executor, interval):
    """One line every ``interval`` seconds while jobs run, at INFO on ``pgjobs``
    (the default verbosity): what ran since the last line. A line per job is
    ``pgjobs.jobs``'s, at ``-v 2``: at thousands of jobs a second, formatting and
    writing it cost as much as the rest of the worker."""
    last = {"at": time.monotonic(), "succeeded": 0, "failed": 0, "retried": 0}

    def report():
        now = time.monotonic()
        succeeded, retried = stats.succeeded, stats.retried
        failed = stats.failed - retried  # failed for good, or cancelled
        ran = succeeded - last["succeeded"] + failed - last["failed"] + retried - last["retried"]
        if ran and logger.isEnabledFor(logging.INFO):
            logger.info(
                "pgjobs: ran %s job(s) in the last %.0f s: %s succeeded, %s failed, %s retried; "
                "%d running",
                f"{ran:,}",
                now - last["at"],
                f"{succeeded - last['succeeded']:,}",
                f"{failed - last['failed']:,}",
                f"{retried - last['retried']:,}",
                executor.running(),
            )
        last.update(at=now, succeeded=succeeded, failed=failed, retried=retried)

    return Duty("summary", interval, report, wakes=False)


def periodic(interval, func, *, name=None, source=None):
    """A duty from an ``(interval, callable)`` pair, as ``Worker(periodic=...)`` takes."""
    name = name or getattr(func, "__qualname__", None) or repr(func)
    return Duty(name, interval, func, source=source)
