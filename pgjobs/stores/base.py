"""The store interface: everything a worker (and a storing backend) asks of storage.

A store owns the statements for one kind of storage. The worker calls only
these methods, so adding a database or a broker is adding one store.
"""

import abc

from ..serialization import dumps


class Store(abc.ABC):
    """Where jobs live. Methods are called from the worker's own thread, except
    ``wait``, which a worker may call from a listener thread."""

    # -- capabilities: declared here, read by callers, never probed ---------------

    #: ``wait`` returns early when jobs arrive (PostgreSQL LISTEN, Redis pub/sub);
    #: otherwise it only sleeps and workers poll.
    supports_listen = False
    #: ``claim`` returns jobs in claim order already (no ``run_at`` needed to sort).
    claims_in_order = False
    #: ``live_workers`` answers, so that wake-ups can be shared out between workers.
    supports_live_workers = False
    #: ``get_schedules``, ``create_schedule`` and ``advance_schedule`` work.
    supports_schedules = False
    #: An enqueue inside the caller's ``transaction.atomic()`` commits or rolls back
    #: with it (the SQL stores). When False, a storing backend holds the jobs until
    #: the transaction commits, through the deferred-write methods below.
    enqueues_in_transaction = True
    #: Seconds between polls when the worker is not told otherwise.
    default_poll_interval = 1.0
    #: Seconds a claim lasts without a heartbeat (stores set it from their options).
    lease_seconds = 20.0

    @property
    def wakeup(self):
        """``"listen"`` or ``"poll"``: ``supports_listen`` as the older name reads it."""
        return "listen" if self.supports_listen else "poll"

    def describe(self):
        """One line for the worker's banner: storage and wake-up mode."""
        return f"{type(self).__name__}, polling"

    # -- producers -------------------------------------------------------------

    @abc.abstractmethod
    def enqueue(self, spec):
        """Write one job (``JobSpec``); return its ``JobInfo``."""

    def enqueue_many(self, specs):
        """Write many jobs, all or none; return their ``JobInfo``s in order.

        ``specs`` is a sized iterable of ``JobSpec`` to read once (a backend's
        ``PreparedJobs`` makes each as it is read, and may raise ``InvalidJob``
        part way: then nothing may be written). Stores override this with one
        statement."""
        specs = list(specs)  # every spec made, so valid, before the first is written
        return [self.enqueue(spec) for spec in specs]

    @abc.abstractmethod
    def enqueue_unique(self, spec):
        """Write ``spec`` unless a ready or running job has its ``unique_key``;
        then return that job's ``JobInfo`` and write nothing (race-free)."""

    @abc.abstractmethod
    def get(self, job_id):
        """The ``JobInfo`` of a job, or None."""

    @abc.abstractmethod
    def cancel(self, job_id):
        """Cancel a ready job (True); flag a running one to stop (False)."""

    @abc.abstractmethod
    def cancel_many(self, job_ids):
        """``cancel`` for many jobs; returns (cancelled, asked to stop)."""

    @abc.abstractmethod
    def requeue(self, job_ids):
        """Make failed or cancelled jobs ready again; returns how many."""

    # -- workers ---------------------------------------------------------------

    @abc.abstractmethod
    def claim(self, queues, limit, worker_id):
        """Atomically take up to ``limit`` due jobs in claim order (priority desc,
        run_at, id) from ``queues`` (None: every queue); return ``ClaimedJob``s."""

    @abc.abstractmethod
    def finish(self, worker_id, results):
        """Record successes: ``results`` is a list of ``(job_id, encoded_result)``.

        Only jobs still running under ``worker_id`` are updated, so a job whose
        lease was lost never completes twice.
        """

    def finish_and_claim(self, worker_id, results, queues, limit):
        """``finish(results)`` then ``claim(queues, limit)``; stores that can do
        both in one round trip (and one commit) override this."""
        if results:
            self.finish(worker_id, results)
        return self.claim(queues, limit, worker_id) if limit > 0 else []

    @abc.abstractmethod
    def retry(self, worker_id, job_id, error, delay):
        """A failed attempt: make the job ready again in ``delay`` seconds."""

    @abc.abstractmethod
    def fail(self, worker_id, job_id, error, status="failed"):
        """A job failed for good (attempts used up, or it cannot run at all); with
        ``status="cancelled"``, it stopped itself after a cancel request."""

    @abc.abstractmethod
    def heartbeat(self, worker_id, job_ids):
        """Extend the leases of the jobs ``worker_id`` is running; return the ids of
        those whose cancellation was requested (``JobRef.cancel()`` while running)."""

    @abc.abstractmethod
    def register_worker(self, worker_id, hostname, pid, queues, concurrency):
        """Record a live worker (``heartbeat`` keeps it fresh)."""

    def live_workers(self):
        """``[(worker_id, queues or None), ...]`` of the workers heartbeating now,
        so that a wake-up can be answered by as many workers as it has jobs
        (``Worker._answers``); None when the store cannot tell."""
        return None

    @abc.abstractmethod
    def unregister_worker(self, worker_id):
        """Forget a worker that stopped cleanly."""

    @abc.abstractmethod
    def status(self):
        """``{"workers": [...], "queues": [...]}`` for ``pgjobs_status``."""

    @abc.abstractmethod
    def prune(self, older_than, statuses, batch_size=1000, dry_run=False):
        """Delete jobs in ``statuses`` that finished before now - ``older_than``,
        in batches; return how many."""

    @abc.abstractmethod
    def rescue(self):
        """Put running jobs whose lease expired back to ready (or failed when
        their attempts are used up); return how many."""

    @abc.abstractmethod
    def release(self, worker_id, job_ids):
        """Put claimed jobs that did not finish back to ready, attempt uncounted."""

    @abc.abstractmethod
    def seconds_until_due(self, queues):
        """Seconds until the next ready job in ``queues`` is due (0 if one is
        due now), or None when there are none."""

    @abc.abstractmethod
    def count_due(self, queues):
        """How many ready jobs in ``queues`` are due now."""

    # -- schedules (``pgjobs/schedule.py``) -------------------------------------------
    #
    # One record per schedule name: ``last_tick``, the time through which its
    # ticks are settled, and ``last_run``, the latest tick enqueued. Times are
    # aware datetimes (naive, in TIME_ZONE, when USE_TZ is off), kept to the
    # microsecond: a ``last_tick`` read back compares equal to the one written.

    def get_schedules(self, names):
        """``{name: ScheduleInfo}`` for those of ``names`` that have a record."""
        raise NotImplementedError(f"{type(self).__name__} does not keep schedules")

    def create_schedule(self, name, last_tick):
        """Create the record of schedule ``name``, settled through ``last_tick``
        or the store's own current time if that is earlier, unless one exists.
        True if this call created it."""
        raise NotImplementedError(f"{type(self).__name__} does not keep schedules")

    def advance_schedule(self, name, last_tick, new_last_tick, specs):
        """Settle schedule ``name`` through ``new_last_tick`` and enqueue its due
        jobs ``specs`` (``JobSpec``s, ``unique_key`` honoured), all or nothing,
        as one atomic compare-and-set:

        - only if the record's ``last_tick`` still equals ``last_tick`` (as read
          by ``get_schedules``), so that of racing workers exactly one wins;
        - only if ``new_last_tick`` is not later than the store's own clock, so
          that a host whose clock runs fast cannot settle ticks early.

        Sets ``last_run`` to ``new_last_tick`` when ``specs`` is not empty.
        Returns the enqueued jobs' ``JobInfo``s, or None when nothing was written.
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep schedules")

    def listen(self, queues):
        """Prepare ``wait`` to be woken for jobs in ``queues`` (None: all)."""

    def stop_listening(self):
        """Release what ``listen`` holds (a connection, a subscription)."""

    def wait(self, timeout):
        """Block until woken or ``timeout`` seconds pass. Falsy when not woken;
        when woken, True or a list of ``records.Wakeup`` saying for which jobs
        (every one that arrived: the worker may answer any of them)."""
        import time

        time.sleep(timeout)
        return False

    def close(self):
        """Drop connections held by this thread (they reopen on next use)."""

    def upkeep_problems(self):
        """Why the storage will not reclaim the space of finished jobs by itself,
        one sentence each (``pgjobs.W003``); none where it needs no upkeep."""
        return []


def args_json(spec):
    """The JSON text to store for ``spec.args``: the one its preparer made and
    signed (``JobSpec.args_json``, bulk enqueues), else encoded now."""
    return dumps(spec.args) if spec.args_json is None else spec.args_json
