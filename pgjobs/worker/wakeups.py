"""What wakes the worker's main thread, and what listens for wake-ups.

``Alarm`` is the one place other threads reach the main thread: slots, the
event loop, the listener thread and the signal relay ring it; only the main
thread sleeps on it. It owns, behind one lock, the flags the main thread takes
(``take``: a wake-up this worker answers, a slot that ran dry) and the time it
looks for jobs again unasked (``look_again_at``), which the listener and the
main thread both move.

``Listener`` reads the store's wake-ups. A store that ``listens_on_socket``
(PostgreSQL: its LISTEN connection) lends the socket, and the main thread
sleeps on it beside the alarm's own (``Alarm.watch``), so a wake-up reaches the
thread that claims with no hand-over between threads: on an idle machine each
one costs a sleeping CPU woken, about 0.1-0.2 ms. For the other stores (Redis
pub/sub, the in-memory store) a thread of its own blocks in ``store.wait`` and
rings the alarm. Wake-ups are shared out between workers by rank (``answers``):
the main thread refreshes the ranks (``refresh_ranks``, a duty) and replaces
them whole; the listener thread only reads them.
"""

import logging
import random
import select
import socket
import threading
import time

logger = logging.getLogger("pgjobs")

#: Seconds between looks at the live workers, by which wake-ups are shared out.
RANKS_INTERVAL = 1.0
#: Seconds between attempts to listen again once the store's wake-up socket is
#: gone (``Listener.relisten``; the listener thread's ``wait`` paces itself).
RELISTEN_EVERY = 1.0


class Alarm:
    """Wakes the main thread; holds what the other threads tell it.

    The main thread sleeps (``poll``) on one end of a socket pair, made on
    its first sleep; ringing while it sleeps writes a byte to the other end,
    once until the main thread clears the alarm (ringing while it is awake only
    sets a flag its next sleep sees: no system call per ring on a busy worker).
    A socket rather than a ``threading.Event``, so that the same sleep can wait
    on the store's wake-up socket too (``watch``)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._rung = False  # rung since the main thread last cleared the alarm
        self._bell = None  # (read end, write end): made by the main thread's first sleep
        self._sleeping = False  # the main thread waits in poll: a ring writes a byte
        self._sent = False  # a byte waits in the socket pair for ``clear``
        self._watched = None  # the Listener whose socket the main thread sleeps on
        self._notified = False  # a wake-up this worker answers
        self._freed = False  # set by a slot (or async job) that found no job left
        self._look_again_at = 0.0
        self._sleeping_until = 0.0  # while the main thread sleeps: until when

    @property
    def rung(self):
        """Whether the main thread has been rung since it last cleared the alarm."""
        return self._rung

    def ring(self):
        """Wake the main thread (at once, if it sleeps; else its next sleep is none)."""
        if not self._rung:  # read without the lock: ringing twice costs nothing
            self._ring()

    def _ring(self):
        with self._lock:
            if self._rung:
                return
            self._rung = True
            if self._sleeping:  # else its next sleep sees _rung and does not begin
                self._bell[1].send(b"!")  # under the lock: ``clear`` finds the byte sent
                self._sent = True

    def notify(self):
        """Listener thread: a wake-up this worker answers."""
        with self._lock:
            self._notified = True
        self._ring()

    def slot_freed(self):
        """A share of the concurrency is free and no claimed job waits for it."""
        with self._lock:
            self._freed = True
        self._ring()

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
            self._ring()

    def watch(self, listener):
        """Main thread: sleep on ``listener``'s socket too, and read it there."""
        self._watched = listener

    def clear(self):
        """Main thread: forget the rings so far (their flags stay for ``take``)."""
        with self._lock:
            self._rung = False
            if self._sent:
                self._sent = False
                try:
                    self._bell[0].recv(16)
                except BlockingIOError:
                    pass  # not arrived yet (an emulated socket pair): one wake-up more

    def sleep(self, timeout):
        """Main thread: wait until rung, a wake-up this worker answers arrives on
        the watched socket, or ``timeout`` seconds have passed.

        What the watched socket holds is read even when the main thread does not
        wait (rung already, or ``timeout`` 0): a busy worker must keep reading
        it, or the server would block on a full socket, holding back every
        listener's notifications."""
        if timeout <= 0 and self._watched is None:
            return  # nothing to read, nothing to wait for
        with self._lock:
            if self._bell is None:
                self._bell = socket.socketpair()
                for end in self._bell:
                    end.setblocking(False)
            if self._rung:
                timeout = 0.0
            deadline = self.clock() + timeout
            if timeout > 0:
                self._sleeping, self._sleeping_until = True, deadline
        bell, watched = self._bell[0].fileno(), self._watched
        try:
            while True:
                fd = None if watched is None else watched.fileno()
                fds = (bell,) if fd is None else (bell, fd)
                ready = _readable(fds, max(0.0, deadline - self.clock()))
                if fd in ready and watched.read():
                    with self._lock:
                        self._notified = True
                    return
                if bell in ready or self.clock() >= deadline:
                    return
        finally:
            with self._lock:
                self._sleeping, self._sleeping_until = False, 0.0

    def close(self):
        """Main thread, when the worker has ended: free the socket pair."""
        with self._lock:
            bell, self._bell, self._sent = self._bell, None, False
        for end in bell or ():
            end.close()


def _readable(fds, timeout):
    """Those of the file descriptors ``fds`` readable within ``timeout`` seconds.
    ``poll`` where there is one: ``select`` takes no descriptor above 1023."""
    if _poll is None:
        return set(select.select(fds, (), (), timeout)[0])
    poller = _poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(timeout * 1000)}


_poll = getattr(select, "poll", None)  # None on Windows


class Listener:
    """Reads the store's wake-ups and answers those meant for this worker: in the
    main thread's sleep when the store lends its socket, else in a thread of
    its own."""

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
        self._relistening = None  # the thread that listens again (``relisten``), if any

    def start(self):
        """Listen: on the main thread's alarm, or in a thread of its own. False
        when the store found it cannot (``supports_listen`` turned False: a
        pooler in the way)."""
        self.store.listen(self.queues)
        if not self.store.supports_listen:
            return False
        if self.store.listens_on_socket:
            self.alarm.watch(self)
        else:
            threading.Thread(target=self.listen, name="pgjobs-listener", daemon=True).start()
        return True

    def listen(self):
        """The listener thread's loop, until the worker stops."""
        while not self.stopping.is_set():
            try:
                if self.answer(self.store.wait(self.poll_interval)):
                    self.alarm.notify()
            except Exception:  # never let the listener die; polling covers for it
                logger.exception("pgjobs: listener error")
                time.sleep(1.0)

    def fileno(self):
        """The store's wake-up socket, for the main thread's sleep; None while
        it has none (``relisten`` is making a new one)."""
        return self.store.listen_socket()

    def read(self):
        """Main thread (``Alarm.sleep``), the socket readable: read the wake-ups
        that arrived, without waiting; True if this worker answers one. When the
        connection broke, a thread of its own connects anew (``relisten``):
        connecting may take long, and the main thread must go on heartbeating."""
        try:
            woken = self.store.wait(0)
        except Exception:  # as the listener thread: polling covers for it
            logger.exception("pgjobs: listener error")
            woken = False
        if self.store.listen_socket() is None:
            self._relisten_in_background()
        return self.answer(woken)

    def _relisten_in_background(self):
        """Start the ``relisten`` thread, unless it runs already."""
        if self._relistening is None or not self._relistening.is_alive():
            self._relistening = threading.Thread(
                target=self.relisten, name="pgjobs-relisten", daemon=True
            )
            self._relistening.start()

    def relisten(self):
        """A thread's loop while the store has no socket to lend: connect anew
        every ``RELISTEN_EVERY`` seconds until it can (the store's ``wait``
        does), then ring the main thread, which sleeps on the new socket and
        claims: notifications may have been missed meanwhile."""
        while not self.stopping.is_set():
            try:
                self.store.wait(0)  # no socket: connects anew
            except Exception:
                logger.exception("pgjobs: listener error")
            if self.store.listen_socket() is not None:
                self.alarm.notify()
                return
            self.stopping.wait(RELISTEN_EVERY)

    def answer(self, woken):
        """Whether to claim at once for what ``store.wait`` returned."""
        if not woken:
            return False
        if woken is True or any(self.answers(wakeup) for wakeup in woken):
            return True
        # Others answer at once; look ourselves a little later, in case they
        # cannot (busy, or gone since we last listed the workers). The main
        # thread is woken only to wait less, not for every wake-up: idle
        # processes churning per job would slow the one that answers.
        self.alarm.look_again_by(time.monotonic() + random.uniform(0.05, 0.15))
        return False

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
