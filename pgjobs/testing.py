"""Helpers for your own tests: jobs kept in memory and worked in-process.

``InMemoryStore`` keeps jobs in this process and implements the whole store
contract (``pgjobs/stores/base.py``), so a real ``Worker`` runs them exactly
as it would from a database, in burst mode until nothing is due::

    from pgjobs.testing import InMemoryStore, ManualClock
    from pgjobs.handler import get_backend
    from pgjobs.worker import Worker

    def test_welcome_mail_is_sent(mailoutbox):
        store = InMemoryStore()
        spec = get_backend().prepare(send_welcome_mail, [user.pk], {})
        ref = store.enqueue(spec)
        stats = Worker(store, burst=True).run()
        assert stats.succeeded == 1
        assert store.get(ref.id).status == "succeeded"

``get_backend().prepare`` validates, encodes and signs the job as any
enqueue does; the worker checks that signature before it runs the job.
Pass ``clock=ManualClock()`` to make deferred jobs due, or leases expire,
without sleeping: ``clock.advance(seconds=60)``.
"""

import datetime
import threading

from django.utils import timezone

from .backends.storing import StoringBackend
from .stores.memory import InMemoryStore

__all__ = ["InMemoryBackend", "InMemoryStore", "ManualClock"]


class ManualClock:
    """A clock for ``InMemoryStore(clock=...)`` that moves only when told to.

    Starts at ``start`` (default: the real time now) and returns that time until
    ``advance`` moves it on. Any thread may read or move it.
    """

    def __init__(self, start=None):
        self._now = timezone.now() if start is None else start
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            return self._now

    def advance(self, seconds=0.0, **timedelta_kwargs):
        """Move the clock on by ``seconds`` (or any ``timedelta`` keywords); return
        the new time."""
        step = datetime.timedelta(seconds=seconds, **timedelta_kwargs)
        with self._lock:
            self._now += step
            return self._now


class InMemoryBackend(StoringBackend):
    """A storing backend whose jobs live in this process, in an ``InMemoryStore``.

    ``PGJOBS = {"BACKEND": "pgjobs.testing.InMemoryBackend"}`` in a test's
    settings makes ``background.enqueue`` store jobs here instead of running them
    in-band; ``run_jobs()`` then runs what is due, in-process, with a real
    ``Worker``. It takes the options every storing backend takes. Jobs enqueued
    inside an ``atomic()`` block are held until it commits, as on Redis (the
    transaction a Django ``TestCase`` wraps each test in does not count).
    A worker in another process cannot see these jobs.
    """

    def make_store(self):
        return InMemoryStore(lease_seconds=self.lease_seconds, keep_succeeded=self.keep_succeeded)

    def run_jobs(self, **worker_options):
        """Run every job that is due (and those that become due meanwhile, such
        as quick retries) in a burst-mode worker; return its ``WorkerStats``."""
        from .worker import build_worker

        return build_worker(self, burst=True, **worker_options).run()
