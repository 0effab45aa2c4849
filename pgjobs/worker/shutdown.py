"""Stopping a worker: signals, the grace period, handing back unfinished jobs.

``Shutdown`` owns ``stopping`` (a ``threading.Event`` any thread may set through
``request_stop``, which also wakes the main thread) and the signal handlers. A
handler runs in the main thread and only writes to a pipe; the relay thread
(``pgjobs-signals``) reads it and asks the worker to stop (see
``install_signal_handlers``). ``finish_in_flight`` runs on the main thread at
the end of ``Worker.run``.
"""

import logging
import os
import signal
import threading
import time

logger = logging.getLogger("pgjobs")


class Shutdown:
    def __init__(self, alarm, grace_period):
        self.alarm = alarm
        self.grace_period = grace_period
        self.stopping = threading.Event()
        self._signals = 0  # main thread (signal handlers run there)
        self._signal_fd = None  # written by the signal handler

    def request_stop(self):
        self.stopping.set()
        self.alarm.ring()

    def install_signal_handlers(self):
        """SIGTERM/SIGINT stop gracefully; a second one exits at once.

        Python runs a handler in the main thread between two of its bytecodes,
        possibly while that thread holds the alarm's lock (on its way into or
        out of a sleep). Ringing the alarm in the handler would then wait for
        that lock forever, and the worker would never stop.
        So the handler only writes the signal's number to a pipe; a thread of its
        own reads it and asks the worker to stop, as any other thread may.
        """
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("signal handlers can only be installed from the main thread")
        read_fd, self._signal_fd = os.pipe()
        relay = threading.Thread(
            target=self._relay_signal, args=(read_fd,), name="pgjobs-signals", daemon=True
        )
        relay.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum, frame):
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

    def close(self):
        """Let the signal relay thread end (it reads end-of-file), freeing the pipe:
        a process may run many workers (drains, tests), each installing handlers."""
        self.stopping.set()  # ends the listener thread's loop, if it has one
        fd, self._signal_fd = self._signal_fd, None
        if fd is not None:
            os.close(fd)


def finish_in_flight(executor, recorder, alarm, deadline, record):
    """Hand back unstarted jobs, let running ones finish (until ``deadline``),
    record what finished and put the rest back.

    ``deadline=None`` (a ``max_jobs``/``max_seconds`` limit, not a signal): jobs
    already claimed still run, so ``--max-jobs N`` runs N jobs. ``record()``
    stores the outcomes taken so far, retrying store errors a few times."""
    if deadline is not None:
        recorder.release(executor.take_unstarted())
    while recorder.held and (deadline is None or time.monotonic() < deadline):
        alarm.clear()
        record()
        if recorder.held:
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            alarm.sleep(max(0.0, min(1.0, remaining)))
    record()
    if recorder.held:
        logger.warning(
            "pgjobs: %d job(s) still running after the grace period; putting them back",
            len(recorder.held),
        )
        executor.abandon()  # a job still waiting to start must not start now
        recorder.release(list(recorder.held.values()))
    executor.close()
