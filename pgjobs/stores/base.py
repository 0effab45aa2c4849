"""The store contract: everything the worker, the storing backends, the commands,
the admin and the schedules ask of storage, declared in one class.

A store owns the statements for one kind of storage. Callers read its
capabilities (class attributes) and call only the methods below, so adding a
database or a broker is adding one store. ``read_arguments`` is the one way a
store turns a claimed row's stored arguments into data, so that a row it cannot
decode fails alone.
"""

import abc
import datetime
import functools
import json

from .. import records
from ..serialization import dumps


class Store(abc.ABC):
    """Where jobs live. Methods are called from the worker's own thread, except
    ``wait``, which a worker calls from a listener thread unless the store
    ``listens_on_socket``."""

    # -- capabilities: declared here, read by callers, never probed ---------------

    #: ``wait`` returns early when jobs arrive (PostgreSQL LISTEN, Redis pub/sub);
    #: otherwise it only sleeps and workers poll.
    supports_listen = False
    #: ``wait`` reads one socket, which ``listen_socket`` lends: the worker's main
    #: thread then sleeps on it and calls ``wait(0)`` when it is readable, rather
    #: than keeping a listener thread (one hand-over between threads fewer per
    #: wake-up). With a socket, ``wait(0)`` never blocks; one whose connection
    #: broke closes it and returns True (notifications may have been missed).
    #: With none, ``wait`` connects anew, which may block: the worker calls it
    #: from a thread of its own then.
    listens_on_socket = False
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
    #: Atomic jobs work: ``mark_atomic``, ``job_transaction`` and
    #: ``finish_in_transaction`` (the database stores). Backends refuse
    #: ``atomic=True`` at enqueue where this is False.
    supports_atomic_jobs = False
    #: Seconds between polls when the worker is not told otherwise.
    default_poll_interval = 1.0

    def __init__(self, *, lease_seconds=20.0):
        #: Seconds a claim lasts without a heartbeat; the worker heartbeats every third.
        self.lease_seconds = float(lease_seconds)

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

    def enqueue_many(self, specs, ids=None):
        """Write many jobs, all or none; return their ``JobInfo`` records in order.

        ``specs`` is a sized iterable of ``JobSpec`` to read once (a backend's
        ``PreparedJobs`` makes each as it is read, and may raise ``InvalidJob``
        part way: then nothing may be written). Stores override this with one
        statement. ``ids``: the jobs' ids, reserved earlier with ``reserve_ids``
        (deferred writes); only stores with ``enqueues_in_transaction = False``
        must accept them."""
        if ids is not None:
            raise NotImplementedError(f"{type(self).__name__} does not take reserved ids")
        specs = list(specs)  # every spec made, so valid, before the first is written
        return [self.enqueue(spec) for spec in specs]

    @abc.abstractmethod
    def enqueue_unique(self, spec):
        """Write ``spec`` unless a ready or running job has its ``unique_key``;
        then return that job's ``JobInfo`` and write nothing (race-free)."""

    @abc.abstractmethod
    def get(self, job_id):
        """The ``JobInfo`` of a job, with its ``args`` and ``kwargs`` (encoded, as
        stored; None when they cannot be decoded), or None."""

    # -- deferred writes: stores with ``enqueues_in_transaction = False`` ----------
    #
    # A storing backend over such a store holds the jobs enqueued inside the
    # caller's ``transaction.atomic()`` and writes them at commit. It hands out
    # refs at once: ids reserved now, ``JobInfo`` records made from the specs, and the
    # holder of a unique key looked up rather than written; then
    # ``enqueue_many(specs, ids)`` at commit.

    def reserve_ids(self, count):
        """``count`` new job ids, unused by any job, for jobs written later (a
        batch's id is reserved the same way: ``enqueue_batch(batch_id=...)``)."""
        raise NotImplementedError(f"{type(self).__name__} writes jobs in the transaction")

    def new_info(self, spec, job_id):
        """The ``JobInfo`` of ``spec`` as it will be stored under ``job_id``."""
        raise NotImplementedError(f"{type(self).__name__} writes jobs in the transaction")

    def active_holder(self, unique_key):
        """The ``JobInfo`` of the ready or running job holding ``unique_key``, or None."""
        raise NotImplementedError(f"{type(self).__name__} writes jobs in the transaction")

    def notify_ready(self, queues=None):
        """Tell idle workers that jobs became ready outside an enqueue (requeued,
        released, rescued) in ``queues`` (None: any). A no-op where workers poll."""

    @abc.abstractmethod
    def cancel(self, job_id):
        """Cancel a ready (or waiting) job (True); flag a running one to stop (False)."""

    @abc.abstractmethod
    def cancel_many(self, job_ids):
        """``cancel`` for many jobs; returns (cancelled, asked to stop)."""

    @abc.abstractmethod
    def requeue(self, job_ids):
        """Make failed or cancelled jobs ready again; returns how many."""

    @abc.abstractmethod
    def run_now(self, job_ids):
        """Make ready jobs that are not yet due (deferred, or waiting for a retry) due
        now, keeping their attempts; returns how many. Other jobs stay as they are."""

    # -- batches and chains -------------------------------------------------------
    #
    # A batch is jobs written together with a record that counts them. Each final
    # outcome of a batch's job (succeeded, failed for good, cancelled; never a
    # retry) is counted in the same transaction, or script, that stores it; the
    # one that brings ``pending`` to zero releases the batch's callbacks, which
    # were stored ``waiting`` with it: ``on_finish`` becomes ready, and
    # ``on_success`` too when every job succeeded (else it is cancelled with
    # ``records.batch_failed_error``). A job leaves ``waiting`` once, so each
    # callback runs once however many workers finish the last jobs together.
    #
    # A chained job (``JobSpec.after``: the id of the job it runs after) is stored
    # ``waiting`` while that job is unfinished, and then, in the transaction that
    # ends that job: made ready with its result kept as ``previous_result`` when
    # it succeeded, or cancelled with ``records.previous_failed_error`` when it
    # failed for good or was cancelled (and so on down the chain). Enqueued after
    # a job that has already finished, it is stored ready, or cancelled, at once.
    # ``enqueue`` and ``enqueue_many`` honour ``after`` (an id unknown to the
    # store raises ``ValueError``); ``claim`` never takes a waiting job;
    # ``cancel``/``cancel_many`` cancel waiting jobs as they cancel ready ones.
    # Requeueing a failed job of a finished batch counts it as pending again; the
    # callbacks, released already, do not run again.

    @abc.abstractmethod
    def enqueue_batch(
        self, specs, on_finish=None, on_success=None, description="", *, batch_id=None, ids=None
    ):
        """Write the jobs ``specs`` (``JobSpec`` records without ``after`` or
        ``unique_key``) as one batch, with its callbacks ``on_finish`` and
        ``on_success`` (``JobSpec`` or None; stored ``waiting``), all or nothing,
        in one statement where the store can. Returns ``(BatchInfo, [JobInfo of
        each spec, in order])``. ``batch_id`` and ``ids`` (the jobs' ids, then the
        callbacks' that are given): reserved earlier with ``reserve_ids``
        (deferred writes, stores with ``enqueues_in_transaction = False``)."""

    @abc.abstractmethod
    def get_batch(self, batch_id):
        """The ``BatchInfo`` of a batch, with its ``counts``, or None."""

    @abc.abstractmethod
    def batch_jobs(self, batch_id):
        """The ``JobInfo`` records of a batch's jobs still stored (pruning removes
        finished ones), by id; not its callbacks."""

    @abc.abstractmethod
    def cancel_batch(self, batch_id):
        """``cancel_many`` over a batch's jobs: its ready jobs are cancelled, its
        running ones asked to stop. Returns (cancelled, asked)."""

    @abc.abstractmethod
    def prune_batches(self, older_than, limit):
        """Delete up to ``limit`` batch records that finished more than
        ``older_than`` (a timedelta) ago, oldest first; return how many. Their
        jobs are not touched (pruned by their own retention). Workers call it
        with their longest retention, so that a batch outlives its jobs."""

    @abc.abstractmethod
    def previous_result(self, job_id):
        """The encoded result of the job that job ``job_id`` ran after (kept on
        ``job_id`` itself, so pruning that job loses nothing), or None."""

    # -- workers ---------------------------------------------------------------

    @abc.abstractmethod
    def claim(self, queues, limit, worker_id):
        """Atomically take up to ``limit`` due jobs in claim order (priority desc,
        run_at, id) from ``queues`` (None: every queue); return a list of ``ClaimedJob``."""

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

    # -- atomic jobs: stores with ``supports_atomic_jobs`` -------------------------------
    #
    # An atomic job runs in a slot thread inside ``job_transaction()``, on that
    # thread's own connection (heartbeats, claims and rescues go on others); at
    # its end ``finish_in_transaction`` records its success in that transaction
    # if the attempt still holds its lease, else the job's writes roll back.

    def mark_atomic(self, job_ids):
        """Mark ready jobs just enqueued, in the same transaction as their enqueue,
        as atomic: claims return them with ``atomic`` True."""
        raise NotImplementedError(f"{type(self).__name__} cannot run atomic jobs")

    def job_transaction(self):
        """A context manager: the transaction an atomic job runs in, on the jobs'
        database and the calling thread's connection; rolled back by an error."""
        raise NotImplementedError(f"{type(self).__name__} cannot run atomic jobs")

    def finish_in_transaction(self, worker_id, job_id, attempt, result):
        """Inside ``job_transaction()``: record the success of attempt ``attempt``
        of job ``job_id`` (``result`` encoded) if it is still running under
        ``worker_id``; True if so, False if its lease was lost (rescued, timed
        out, released, taken by another worker), when the caller must roll back.
        Takes the job row's lock only now, at the end, until the commit."""
        raise NotImplementedError(f"{type(self).__name__} cannot run atomic jobs")

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
        so that a wake-up can be answered by as many workers as it has jobs; None
        when the store cannot tell (``supports_live_workers = False``)."""
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
        in batches; return how many (with ``dry_run``, how many would go)."""

    @abc.abstractmethod
    def prune_batch(self, older_than, statuses, limit):
        """Delete up to ``limit`` jobs in ``statuses`` that finished more than
        ``older_than`` (a timedelta) ago, by the store's clock, oldest first;
        return how many. One short step of the retention every worker runs:
        callers call again while it returns ``limit``. Concurrent pruners must
        not fail, nor delete a job twice."""

    @abc.abstractmethod
    def rescue(self):
        """Put running jobs whose lease expired back to ready (failed when their
        attempts are used up, cancelled when asked to stop), recording
        ``worker_lost_error`` as each one's error; return a ``records.Rescued``:
        how many, and the ids of the jobs it ended for good."""

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

    # -- history and figures (``pgjobs/stats.py``) ---------------------------------
    #
    # Stores keep each attempt that did not succeed (``JobAttempt``) and add to
    # the per-minute figures as they record outcomes (finish, retry, fail and
    # rescue), in the same statement or transaction where they can. Reading
    # them never scans the jobs: figures come from their own rows, and counts of
    # ready and running jobs from the indexes that claims and rescues use.

    @abc.abstractmethod
    def job_attempts(self, job_id):
        """Every attempt of a job so far, oldest first, as ``AttemptInfo`` records:
        those kept (failed, retried, cancelled, lost with its worker), then the
        job's current one when it is running or succeeded. Empty for a job that
        never started or does not exist."""

    @abc.abstractmethod
    def queue_figures(self):
        """Where each queue stands now: ``QueueFigures`` for every queue with
        ready or running jobs, or failures in the last hour, sorted by name."""

    @abc.abstractmethod
    def minute_figures(self, since):
        """``MinuteFigures`` of every queue and minute from ``since`` (a
        timedelta before now, or an aware datetime) until now, sorted by minute,
        then queue; minutes in which nothing finished are left out."""

    @abc.abstractmethod
    def prune_figures(self, older_than):
        """Delete the figures of minutes that ended more than ``older_than`` (a
        timedelta) ago; return how many rows (or keys) went."""

    def fold_figures(self, older_than, span=datetime.timedelta(hours=1)):
        """Add up the shards of the figures of minutes that ended more than
        ``older_than`` ago (and less than ``older_than + span``) into one row per
        key, so that reading a day reads an eighth of the rows; return how many
        rows went. Stores that keep one row per key already have nothing to do."""
        return 0

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
        jobs ``specs`` (``JobSpec`` records, ``unique_key`` honoured), all or nothing,
        as one atomic compare-and-set:

        - only if the record's ``last_tick`` still equals ``last_tick`` (as read
          by ``get_schedules``), so that of racing workers exactly one wins;
        - only if ``new_last_tick`` is not later than the store's own clock, so
          that a host whose clock runs fast cannot settle ticks early.

        Sets ``last_run`` to ``new_last_tick`` when ``specs`` is not empty.
        Returns the enqueued jobs' ``JobInfo`` records, or None when nothing was written.
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep schedules")

    # -- queue control (``pgjobs/queue_control.py``) --------------------------------
    #
    # One record per steered queue, shared by every worker of the store. A
    # claim obeys them: nothing starts from a paused queue; a limited queue
    # starts at most what ``queue_control.admit`` allows, counted atomically with
    # the claim, so that racing workers never exceed a limit together. Claims
    # from queues with no control take the plain path (``self.controls.plan``
    # is None), which costs them one read of the records a second.

    @abc.abstractmethod
    def queue_controls(self):
        """``{queue: records.QueueControl}`` of the stored records, values as
        stored (None where the setting, ``PGJOBS["QUEUES"]``, applies)."""

    @abc.abstractmethod
    def set_queue_control(self, queue, **changes):
        """Change the record of ``queue`` (made if missing): ``changes`` among
        ``paused``, ``concurrency``, ``rate`` and ``period`` (checked by the
        caller; None clears a limit, so the setting applies). Returns the stored
        ``records.QueueControl``. Reaches every worker within about
        ``queue_control.REFRESH_SECONDS``."""

    @abc.abstractmethod
    def snooze(self, worker_id, job_id, delay):
        """A job raised ``Snooze``: ready again in ``delay`` seconds, its attempt
        given back (as ``release`` does), its error unchanged."""

    @functools.cached_property
    def controls(self):
        """This store's ``queue_control.ControlCache``: whether a claim may take
        the plain path, known without a query per claim."""
        from ..queue_control import ControlCache

        return ControlCache(self.queue_controls)

    def listen(self, queues):
        """Prepare ``wait`` to be woken for jobs in ``queues`` (None: all)."""

    def stop_listening(self):
        """Release what ``listen`` holds (a connection, a subscription)."""

    def listens_through_pooler(self):
        """Whether ``listen`` would reach a connection pooler rather than the
        server, so that wake-ups would be lost (the system check asks; a store
        that finds so at ``listen`` polls instead, ``supports_listen`` False)."""
        return False

    def listen_socket(self):
        """The socket ``wait`` reads (``listens_on_socket``): a file descriptor,
        or None while there is none (the connection broke: the next ``wait``
        makes a new one)."""
        return None

    def wait(self, timeout):
        """Block until woken or ``timeout`` seconds pass. Falsy when not woken;
        when woken, True or a list of ``records.Wakeup`` saying for which jobs
        (every one that arrived: the worker may answer any of them)."""
        import time

        time.sleep(timeout)
        return False

    def close(self):
        """Drop connections held by this thread (they reopen on next use)."""

    def setup_problem(self, exc):
        """What ``exc``, raised by this store, says about how it is set up:
        ``(sentence with what to do, fatal)``, or None when it says nothing of
        the kind (a server down, a connection cut: worth waiting for). Fatal:
        waiting cannot help (the database does not exist); not fatal: an operator
        can fix it while the worker waits (``manage.py migrate`` not run yet)."""
        return None

    def upkeep_problems(self):
        """Why the storage will not reclaim the space of finished jobs by itself,
        one sentence each (``pgjobs.W003``); none where it needs no upkeep."""
        return []


def args_json(spec):
    """The JSON text to store for ``spec.args``: the one its preparer made and
    signed (``JobSpec.args_json``, bulk enqueues), else encoded now."""
    return dumps(spec.args) if spec.args_json is None else spec.args_json


#: Per-row errors of decoding stored arguments: malformed JSON (``ValueError``),
#: an integer longer than ``sys.get_int_max_str_digits()`` (``ValueError``),
#: nesting deeper than Python's recursion limit (``RecursionError``).
DECODE_ERRORS = (ValueError, TypeError, RecursionError)


def load_json(value):
    """JSON columns come back as text from some drivers and as data from others."""
    return json.loads(value) if isinstance(value, (str, bytes, bytearray)) else value


def _load_arguments(value):
    # Most jobs have no args or no kwargs: skip the JSON parser for those.
    if value == "[]":
        return []
    if value == "{}":
        return {}
    return load_json(value)


def read_arguments(args, kwargs):
    """``(args, kwargs, problem)`` from a claimed row's stored arguments: decoded,
    with ``problem`` None; or, when they cannot be decoded, None and None and a
    one-line reason, so that the store returns that job with its ``problem``
    set (the worker fails it alone) rather than failing the whole claim."""
    try:
        return _load_arguments(args), _load_arguments(kwargs), None
    except DECODE_ERRORS as exc:
        return None, None, "cannot decode the job's arguments: " + one_line(exc)


def one_line(exc):
    """``exc`` as one short line: its type and the start of its message."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: The error a rescue records for a job whose worker was lost: ``type`` imports
#: (``pgjobs.exceptions.WorkerLost``), so the tasks framework's
#: ``TaskError.exception_class`` works. The traceback is ``LOST_TRACEBACK`` filled
#: with the worker's id, the attempt, the attempts allowed and what became of the
#: job: ``%s`` placeholders, so that Redis's Lua fills the same text
#: (``string.format``).
WORKER_LOST_TYPE = "pgjobs.exceptions.WorkerLost"
WORKER_LOST_MESSAGE = "the worker running this job stopped sending heartbeats"
LOST_TRACEBACK = (
    "worker %s stopped heartbeating while running attempt %s/%s; its lease ran out, "
    "and the job was %s.\n" + WORKER_LOST_TYPE + ": " + WORKER_LOST_MESSAGE + "\n"
)
#: What became of the job, by its status after the rescue.
LOST_OUTCOMES = {
    "ready": "put back to be run again",
    "failed": "failed: it had no attempts left",
    "cancelled": "cancelled, as asked while it ran",
}


def with_current_attempt(kept, job):
    """``kept`` (``AttemptInfo`` records of the attempts a store keeps, in order) and
    the job's current attempt, from ``job``: ``(status, attempts, started_at,
    finished_at, worker_id)`` of its row (None: no such job), when it is running
    or succeeded and not among ``kept``."""
    attempts = list(kept)
    if job is None:
        return attempts
    status, number, started_at, finished_at, worker_id = job
    if status not in (records.RUNNING, records.SUCCEEDED) or not number:
        return attempts
    if attempts and attempts[-1].attempt >= number:
        return attempts
    finished_at = finished_at if status == records.SUCCEEDED else None
    attempts.append(records.AttemptInfo(number, started_at, finished_at, worker_id, status))
    return attempts


def worker_lost_error(worker_id, attempt, max_attempts, status):
    """The stored error of a job a rescue took back from worker ``worker_id``."""
    outcome = LOST_OUTCOMES[status]
    return {
        "type": WORKER_LOST_TYPE,
        "message": WORKER_LOST_MESSAGE,
        "traceback": LOST_TRACEBACK % (worker_id or "?", attempt, max_attempts, outcome),
    }
