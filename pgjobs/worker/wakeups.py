"""What wakes the worker's main thread, and the listener thread.

``Alarm`` is the one place other threads reach the main thread: slots, the
event loop, the listener and the signal relay call it; only the main thread
sleeps on it. It owns, behind one lock, the flags the main thread takes
(``take``: a wake-up this worker answers, a slot that ran dry) and the time it
looks for jobs again unasked (``look_again_at``), which the listener and the
main thread both move.

``Listener`` is the thread that blocks in ``store.wait`` (stores with
``supports_listen``). Wake-ups are shared out between workers by rank
(``answers``): the main thread refreshes the ranks (``refresh_ranks``, a duty)
and replaces them whole; the listener only reads them.
"""

import logging
import random
import threading
import time

logger = logging.getLogger("pgjobs")

#: Seconds between looks at the live workers, by which wake-ups are shared out.
RANKS_INTERVAL = 1.0


class Alarm:
    """Wakes the main thread; holds what the other threads tell it."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.event = threading.Event()  # the main thread sleeps on it
        self._lock = threading.Lock()
        self._notified = False  # set by the listener
        self._freed = False  # set by a slot (or async job) that found no job left
        self._look_again_at = 0.0
        self._sleeping_until = 0.0  # while the main thread sleeps: until when

    def ring(self):
        """Wake the main thread. (``set()`` takes a lock even when the event is set.)"""
        if not self.event.is_set():
            self.event.set()

    def notify(self):
        """Listener: a wake-up this worker answers."""
        with self._lock:
            self._notified = True
        self.event.set()

    def slot_freed(self):
        """A share of the concurrency is free and no claimed job waits for it."""
        with self._lock:
            self._freed = True
        self.ring()

    def take(self):
        """Main thread: ``(notified, freed)`` since the last call, cleared."""
        with self._lock:
            flags = self._notified, self._freed
            self._notified = self._freed = False
        return flags

    def look_again_at(self):
        with self._lock:
            return self._look_again_at

    def set_look_again_at(self, at):
        """Main thread, after a claim that came back short."""
        with self._lock:
            self._look_again_at = at

    def look_again_by(self, at):
        """Look again no later than ``at``; wakes the main thread if it sleeps
        past that."""
        with self._lock:
            if at >= self._look_again_at:
                return
            self._look_again_at = at
            wake = at < self._sleeping_until
        if wake:
            self.event.set()

    def clear(self):
        self.event.clear()

    def sleep(self, timeout):
        """Main thread: wait until rung or ``timeout`` seconds have passed."""
        with self._lock:
            self._sleeping_until = self.clock() + timeout
        self.event.wait(timeout)
        with self._lock:
            self._sleeping_until = 0.0


class Listener:
    """Waits for the store's wake-ups in a thread of its own and answers those
    meant for this worker."""

    def __init__(self, store, alarm, stopping, *, worker_id, queues, poll_interval):
        self.store = store
        self.alarm = alarm
        self.stopping = stopping  # threading.Event: the worker is stopping
        self.worker_id = worker_id
        self.queues = queues
        self.poll_interval = poll_interval
        # {queue: (this worker's rank, workers serving it)}, from the store's list
        # of live workers; replaced whole by the main thread, read by the listener.
        self.ranks = {}

    def start(self):
        """Listen, in a thread of its own; False when the store found it cannot
        (``supports_listen`` turned False: a pooler in the way)."""
        self.store.listen(self.queues)
        if not self.store.supports_listen:
            return False
        threading.Thread(target=self.listen, name="pgjobs-listener", daemon=True).start()
        return True

    def listen(self):
        """The listener thread's loop, until the worker stops."""
        while not self.stopping.is_set():
            try:
                woken = self.store.wait(self.poll_interval)
                if not woken:
                    continue
                if woken is True or any(self.answers(wakeup) for wakeup in woken):
                    self.alarm.notify()
                    continue
                # Others answer at once; look ourselves a little later, in case
                # they cannot (busy, or gone since we last listed the workers).
                # The main thread is woken only to wait less, not for every
                # wake-up: idle processes churning per job would slow the one
                # that answers.
                self.alarm.look_again_by(time.monotonic() + random.uniform(0.05, 0.15))
            except Exception:  # never let the listener die; polling covers for it
                logger.exception("pgjobs: listener error")
                time.sleep(1.0)

    def answers(self, woken):
        """Whether this worker claims at once for a wake-up: for N new jobs, the
        N workers (of W serving the queue) whose rank follows the first job's id,
        modulo W. Every worker reads the same wake-up, so they agree without
        talking; the rest would only find the jobs taken (a thundering herd)."""
        if woken is True or woken.first_id is None:
            return True
        rank, workers = self.ranks.get(woken.queue, (None, 0))
        if rank is None:
            return True  # not in the list (yet): answer everything
        return (rank - woken.first_id) % workers < woken.count

    def refresh_ranks(self):
        """Main thread (a duty): this worker's rank among the live workers of each
        queue it serves."""
        peers = self.store.live_workers()
        if peers is None:
            self.ranks = {}
            return
        mine = set(self.queues or ())
        queues = {q for _, serves in peers if serves for q in serves} | mine
        ranks = {}
        for name in queues:
            serving = sorted(w for w, serves in peers if serves is None or name in serves)
            if self.worker_id in serving:
                ranks[name] = (serving.index(self.worker_id), len(serving))
        everyone = sorted(w for w, serves in peers if serves is None)
        if self.worker_id in everyone:
            # A queue no worker names: only the workers serving every queue take it.
            ranks = _DefaultRanks(ranks, (everyone.index(self.worker_id), len(everyone)))
        self.ranks = ranks


class _DefaultRanks(dict):
    """Ranks per queue, with a default for queues no worker names."""

    def __init__(self, ranks, default):
        super().__init__(ranks)
        self.default = default

    def get(self, queue, fallback=None):
        return super().get(queue, self.default)
