"""``CeleryBackend``: pgjobs jobs published to the site's own Celery app.

For sites that already run Celery workers (on RabbitMQ, or any broker Celery
speaks): ``background.enqueue`` and Django's tasks (``PgJobsBackend``) go to that
fleet. pgjobs' own workers (``pgjobs_worker``) do not work this backend; Celery's do.

One generic Celery task, ``pgjobs.run_job`` (``run_job`` below), runs every job.
Its one argument is the job's signed payload, JSON (never pickle): the function's
dotted path, the encoded arguments, the queue and the signature pgjobs' own workers
check. The Celery worker verifies the signature (``verify_job``) before it imports
anything, so a message published by hand without the site's ``SECRET_KEY`` never
runs. Retries happen inside that task (``Task.retry`` with pgjobs' backoff, the very
same message published again), not through Celery's ``autoretry_for``.

Delivery is at least once: the task acknowledges late (``acks_late``) and a message
whose worker dies is delivered again (``reject_on_worker_lost``), so a job whose
worker was killed mid-job runs again, whole.
"""

import collections
import datetime
import threading
import uuid

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import records
from ..exceptions import InvalidBackend, InvalidJob, JobNotFound, NotSupported
from ..execution import JobContext, reset_current_job, set_current_job
from ..records import MAX_PRIORITY, MIN_PRIORITY, JobInfo
from ..refs import JobRef
from ..retry import RetryPolicy
from ..serialization import decode_arguments, encode_result, load_function, verify_job
from .base import AsyncFromSync, BaseJobBackend, collector_paused

#: The name of the one Celery task that runs pgjobs jobs.
TASK_NAME = "pgjobs.run_job"
#: The payload's format, so that a later one can be told apart.
PAYLOAD_VERSION = 1
#: Default ``MAX_PRIORITY``: RabbitMQ recommends at most 10 levels (0..9).
DEFAULT_MAX_PRIORITY = 9
#: Default ``UNIQUE_TIMEOUT``: how long a ``unique_key`` lock lasts at most.
DEFAULT_UNIQUE_TIMEOUT = 3600
#: How many jobs' enqueue-time facts (function, queue, ...) a backend remembers
#: for the refs it made, which Celery's result backend does not keep.
KNOWN_JOBS = 10_000

#: Celery states as pgjobs statuses. PENDING is also what Celery says of an id it
#: never saw: a ref to an unknown id stays "ready".
STATUSES = {
    "PENDING": records.READY,
    "RECEIVED": records.READY,
    "RETRY": records.READY,
    "STARTED": records.RUNNING,
    "SUCCESS": records.SUCCEEDED,
    "FAILURE": records.FAILED,
    "REVOKED": records.CANCELLED,
    "REJECTED": records.FAILED,
    "IGNORED": records.FAILED,
}


def priority_level(priority, max_priority):
    """The AMQP priority (0..``max_priority``) of a pgjobs priority (-100..100):
    the 201 pgjobs priorities cut into ``max_priority + 1`` bands of equal width,
    higher runs sooner. With the default 9: -100..-80 is 0, -79..-60 is 1, ...,
    -19..0 is 4, 1..20 is 5, ..., 81..100 is 9. With 200 levels or more, each
    priority has its own, spread over 0..``max_priority`` (255: -100 is 0, 100 is 255)."""
    span = MAX_PRIORITY - MIN_PRIORITY + 1
    if max_priority + 1 >= span:  # more levels than priorities: spread them out
        return (priority - MIN_PRIORITY) * max_priority // (span - 1)
    level = (priority - MIN_PRIORITY) * (max_priority + 1) // span
    # 0 sits at the top of its band and the next band starts at 1, so a job with
    # priority 1 passes the default ones.
    return min(max(level, 0), max_priority)


class CeleryBackend(AsyncFromSync, BaseJobBackend):
    """Publishes jobs to the site's Celery app (``pip install 'pgjobs[celery]'``).

    OPTIONS: ``APP`` (required: the dotted path of the site's ``Celery`` app, e.g.
    ``"proj.celery.app"``), ``QUEUES`` (pgjobs queue names, default
    ``["default"]``; ``[]`` accepts any), ``ROUTES`` (``{pgjobs queue: Celery queue
    name}``; a queue not named goes to the Celery queue of the same name),
    ``MAX_PRIORITY`` (the ``x-max-priority`` pgjobs declares its Celery queues
    with, 1..255, default 9; ``None`` declares plain queues and sends no priority),
    ``MAX_ATTEMPTS`` (3), ``RETRY_DELAY`` (1 s, doubled per attempt),
    ``RETRY_MAX_DELAY`` (3600 s), ``TIMEOUT`` (a default ``timeout``: Celery's
    ``soft_time_limit``), ``DATABASE`` (the Django database whose transactions hold
    publishing back until they commit: ``"default"``; ``None`` publishes at once),
    ``UNIQUE_CACHE`` (the Django cache alias holding ``unique_key`` locks:
    ``"default"``) and ``UNIQUE_TIMEOUT`` (the longest a lock lasts: 3600 s).

    ``unique_key``: publishing takes ``cache.add("pgjobs:unique:<key>", job_id,
    UNIQUE_TIMEOUT)``; while the key is held, an enqueue with it publishes nothing
    and returns a ref to the holder. The Celery worker deletes the key when the job
    finishes (succeeds, or fails for good). Inside ``atomic()`` the lock is taken
    at commit, and a duplicate found then is dropped.
    """

    #: Not stored for pgjobs' workers: ``pgjobs_worker`` cannot work this backend.
    stores_jobs = False
    #: Refs by id: ``get_job``/``get_ref``/``cancel_job`` ask Celery (a result
    #: backend must be configured to read a job's status and result).
    tracks_jobs = True
    #: ``SCHEDULE`` is refused (``pgjobs.E015``): periodic work is Celery beat's.
    schedules_elsewhere = "Celery beat"

    option_names = frozenset(
        {
            "APP",
            "QUEUES",
            "ROUTES",
            "MAX_PRIORITY",
            "MAX_ATTEMPTS",
            "RETRY_DELAY",
            "RETRY_MAX_DELAY",
            "TIMEOUT",
            "DATABASE",
            "UNIQUE_CACHE",
            "UNIQUE_TIMEOUT",
        }
    )

    def __init__(self, options):
        super().__init__(options)
        # Nothing here imports the app or connects: Django may build backends
        # while apps load, and the app's module may import Django's settings.
        self.app_path = self.options.get("APP")
        if not isinstance(self.app_path, str) or "." not in self.app_path:
            raise InvalidBackend(
                "OPTIONS['APP'] must be the dotted path of the site's Celery app "
                f"(e.g. 'proj.celery.app'), not {self.app_path!r}"
            )
        routes = self.options.get("ROUTES", {})
        if not isinstance(routes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in routes.items()
        ):
            raise InvalidBackend(
                "OPTIONS['ROUTES'] must map pgjobs queue names to Celery queue names "
                f"(non-empty strings), not {routes!r}"
            )
        if self.queues:
            unknown = sorted(set(routes) - set(self.queues))
            if unknown:
                raise InvalidBackend(
                    f"OPTIONS['ROUTES'] names queues {', '.join(unknown)} that are not in "
                    f"OPTIONS['QUEUES'] ({', '.join(self.queues)})"
                )
        self.routes = dict(routes)
        max_priority = self.options.get("MAX_PRIORITY", DEFAULT_MAX_PRIORITY)
        if max_priority is not None and (
            isinstance(max_priority, bool)
            or not isinstance(max_priority, int)
            or not 1 <= max_priority <= 255
        ):
            raise InvalidBackend(
                "OPTIONS['MAX_PRIORITY'] must be a whole number from 1 to 255 (RabbitMQ's "
                f"x-max-priority) or None (no priorities), not {max_priority!r}"
            )
        self.max_priority = max_priority
        self.retry_policy = RetryPolicy(
            base=self._positive_number("RETRY_DELAY", 1.0),
            cap=self._positive_number("RETRY_MAX_DELAY", 3600.0),
        )
        self.default_timeout = self._positive_number("TIMEOUT", None, allow_none=True)
        self.database = self.options.get("DATABASE", "default")
        if self.database is not None and not isinstance(self.database, str):
            raise InvalidBackend(
                f"OPTIONS['DATABASE'] must be a database alias or None, not {self.database!r}"
            )
        self.unique_cache = self.options.get("UNIQUE_CACHE", "default")
        if not isinstance(self.unique_cache, str) or not self.unique_cache:
            raise InvalidBackend(
                f"OPTIONS['UNIQUE_CACHE'] must be a cache alias, not {self.unique_cache!r}"
            )
        self.unique_timeout = self._positive_number("UNIQUE_TIMEOUT", DEFAULT_UNIQUE_TIMEOUT)
        self._lock = threading.Lock()
        self._app = None
        self._queues = {}
        self._known = collections.OrderedDict()  # id -> JobInfo at enqueue

    # -- the Celery app -------------------------------------------------------------

    @property
    def app(self):
        """The site's Celery app, imported on first use, with ``pgjobs.run_job``
        and pgjobs' queues registered on it."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    try:
                        app = import_string(self.app_path)
                    except ImportError as exc:
                        raise InvalidBackend(
                            f"cannot import OPTIONS['APP'] {self.app_path!r}: {exc}"
                        ) from None
                    install(app, self)
                    self._app = app
        return self._app

    @property
    def task(self):
        return self.app.tasks[TASK_NAME]

    def celery_queue_name(self, queue):
        return self.routes.get(queue, queue)

    def celery_queue(self, queue):
        """The ``kombu.Queue`` jobs of pgjobs queue ``queue`` are published to: the
        app's own when its ``task_queues`` define it (the site's declaration wins),
        else one pgjobs declares, with ``x-max-priority`` unless ``MAX_PRIORITY`` is
        None."""
        name = self.celery_queue_name(queue)
        found = self._queues.get(name)
        if found is None:
            found = self._queues[name] = make_queue(self.app, name, self.max_priority)
        return found

    def celery_queues(self):
        """The ``kombu.Queue``\\ s of ``QUEUES``, for ``app.conf.task_queues``."""
        return [self.celery_queue(queue) for queue in self.queues]

    # -- RFC 72 modes ----------------------------------------------------------------

    def enqueue(self, func, args, kwargs, **options):
        return self._send([self.prepare(func, args, kwargs, **options)])[0]

    def defer(self, func, when, args, kwargs, **options):
        return self._send([self.prepare(func, args, kwargs, when, **options)])[0]

    def enqueue_many(self, jobs, **options):
        """Publish many jobs sharing ``options`` over one broker connection; all are
        validated before any is published. Returns their refs in order."""
        with collector_paused(len(jobs)):
            return self._send(self.prepare_many(jobs, **options))

    # -- publishing --------------------------------------------------------------------

    def _send(self, specs):
        """Refs for ``specs`` now; publish them now or when the transaction commits."""
        now = timezone.now()
        jobs = []
        refs = []
        keys = {}  # unique_key -> the ref of this call that takes it
        for spec in specs:
            key = spec.unique_key
            holder = None if key is None else keys.get(key) or self._unique_holder(key)
            if holder is not None:
                refs.append(holder)
                continue
            info = JobInfo(
                id=str(uuid.uuid4()),
                func=spec.func,
                queue=spec.queue,
                status=records.READY,
                priority=spec.priority,
                run_at=spec.run_at or now,
                max_attempts=spec.max_attempts,
                created_at=now,
                args=spec.args,
                kwargs=spec.kwargs,
            )
            self._remember(info)
            jobs.append((spec, info.id))
            refs.append(JobRef(info, self))
            if key is not None:
                keys[key] = refs[-1]
        if jobs:
            if self._in_transaction():
                transaction.on_commit(lambda: self.publish(jobs), using=self.database)
            else:
                self.publish(jobs)
        return refs

    def publish(self, jobs):
        """Publish ``[(spec, task_id)]`` to the broker, over one connection."""
        task = self.task
        app = self.app
        with app.producer_or_acquire() as producer:
            for spec, task_id in jobs:
                if spec.unique_key is not None and not self._lock_unique(spec.unique_key, task_id):
                    continue  # another job took the key since the enqueue
                options = {
                    "task_id": task_id,
                    "queue": self.celery_queue(spec.queue),
                    "producer": producer,
                    "serializer": "json",
                }
                if self.max_priority is not None:
                    options["priority"] = priority_level(spec.priority, self.max_priority)
                if spec.run_at is not None:
                    options["eta"] = spec.run_at
                if spec.timeout is not None:
                    options["soft_time_limit"] = spec.timeout
                task.apply_async(args=[payload(spec)], **options)

    def _in_transaction(self):
        """Inside an ``atomic()`` block on ``DATABASE`` that will commit or roll back
        (a test case's own transaction, which never commits, does not count)."""
        if self.database is None or self.database not in settings.DATABASES:
            return False
        connection = transaction.get_connection(self.database)
        if not connection.in_atomic_block:
            return False
        return not all(
            getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
        )

    # -- unique keys ----------------------------------------------------------------------

    def _cache(self):
        from django.core.cache import caches

        return caches[self.unique_cache]

    def _unique_holder(self, key):
        holder = self._cache().get(unique_cache_key(key))
        if holder is None:
            return None
        return JobRef(self._info(holder), self)

    def _lock_unique(self, key, task_id):
        return self._cache().add(unique_cache_key(key), task_id, self.unique_timeout)

    # -- refs -----------------------------------------------------------------------------

    def _remember(self, info):
        with self._lock:
            self._known[info.id] = info
            while len(self._known) > KNOWN_JOBS:
                self._known.popitem(last=False)

    def _info(self, job_id):
        """What this process knows of ``job_id`` without asking Celery."""
        with self._lock:
            known = self._known.get(job_id)
        if known is not None:
            return JobInfo(**{f: getattr(known, f) for f in known.__dataclass_fields__})
        return JobInfo(id=job_id, func="", queue="", status=records.READY)

    def get_job(self, job_id):
        """The ``JobInfo`` of job ``job_id`` as Celery's result backend has it.
        ``NotSupported`` when the app has no result backend."""
        from celery.backends.base import DisabledBackend

        app = self.app
        if isinstance(app.backend, DisabledBackend):
            raise NotSupported(
                "CeleryBackend reads a job's status and result from Celery's result backend, "
                "and the Celery app has none: set CELERY_RESULT_BACKEND (result_backend)."
            )
        job_id = str(job_id)
        info = self._info(job_id)
        meta = app.backend.get_task_meta(job_id)
        state = meta.get("status", "PENDING")
        info.status = STATUSES.get(state, records.READY)
        info.attempts = meta.get("retries") or 0
        extended = meta.get("args")  # with result_extended: [payload]
        if not info.func and isinstance(extended, list) and extended:
            job = extended[0] if isinstance(extended[0], dict) else {}
            info.func, info.queue = job.get("func", ""), job.get("queue", "")
            info.args, info.kwargs = job.get("args"), job.get("kwargs")
        finished = meta.get("date_done")
        if info.status in records.FINISHED_STATUSES:
            info.finished_at = _aware(finished)
        result = meta.get("result")
        if info.status == records.SUCCEEDED:
            info.result = result
            info.attempts += 1
        elif info.status == records.FAILED:
            info.attempts += 1
            info.error = _error(result, meta.get("traceback"))
        return info

    def get_ref(self, job_id):
        """A ``JobRef`` to job ``job_id`` (Celery cannot tell an unknown id from a
        job not yet run: both are ready)."""
        if not job_id:
            raise JobNotFound(f"no job with id {job_id!r}")
        return JobRef(self.get_job(job_id), self)

    def cancel_job(self, job_id):
        """Revoke a job that has not started (True); a running one goes on (False).

        Celery revokes by telling the live workers to drop the message when it
        comes: a worker started later (without ``--statedb``) does not know."""
        info = self.get_job(job_id)
        if info.status != records.READY:
            return False
        self.app.control.revoke(str(job_id))
        return True

    # -- checks ---------------------------------------------------------------------------

    def check(self, **kwargs):
        from django.core import checks

        try:
            import celery  # noqa: F401
        except ImportError:
            return [
                checks.Error(
                    "CeleryBackend needs Celery, which is not installed.",
                    hint="pip install 'pgjobs[celery]'",
                    id="pgjobs.E016",
                )
            ]
        return []


def unique_cache_key(key):
    return f"pgjobs:unique:{key}"


def payload(spec):
    """The task's one argument: what the Celery worker verifies and runs."""
    return {
        "v": PAYLOAD_VERSION,
        "func": spec.func,
        "args": spec.args,
        "kwargs": spec.kwargs,
        "queue": spec.queue,
        "signature": spec.signature,
        "max_attempts": spec.max_attempts,
        "unique_key": spec.unique_key,
    }


def make_queue(app, name, max_priority):
    from kombu import Exchange, Queue

    if name in app.amqp.queues:  # the site declares it (task_queues)
        return app.amqp.queues[name]
    arguments = None if max_priority is None else {"x-max-priority": max_priority}
    # What Celery would make of the name (an exchange and routing key of the same
    # name), with the priority argument.
    queue = Queue(name, Exchange(name), routing_key=name, queue_arguments=arguments)
    app.amqp.queues[name] = queue
    return queue


def _aware(value):
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime.datetime) and timezone.is_naive(value):
        value = value.replace(tzinfo=datetime.UTC)
    return value if isinstance(value, datetime.datetime) else None


def _error(result, traceback):
    """A pgjobs error dict from what Celery stored of a failure."""
    if isinstance(result, BaseException):
        cls = type(result)
        kind = f"{cls.__module__}.{cls.__qualname__}"
        message = str(result.args[0]) if len(result.args) == 1 else str(result)
    elif isinstance(result, dict):  # an exception Celery could not rebuild
        kind = f"{result.get('exc_module', '')}.{result.get('exc_type', 'Exception')}"
        message = str(result.get("exc_message", ""))
    else:
        kind, message = "Exception", str(result)
    return {"type": kind, "message": message, "traceback": traceback or ""}


# -- the worker's side ----------------------------------------------------------------


def install(app, backend=None):
    """Register ``pgjobs.run_job`` on ``app`` and, for a ``CeleryBackend``
    (default: the configured one, when it is one), its queues in the app's queues,
    so that a Celery worker consuming them declares them as the backend does.
    Idempotent. ``pgjobs.tasks`` calls it for ``app.autodiscover_tasks()``."""
    if TASK_NAME not in app.tasks:
        app.task(
            name=TASK_NAME,
            bind=True,
            serializer="json",
            acks_late=True,
            reject_on_worker_lost=True,
            max_retries=None,  # pgjobs counts attempts itself
            typing=False,
        )(run_job)
    if backend is None:
        from ..handler import get_backend

        backend = get_backend()
    if isinstance(backend, CeleryBackend):
        for queue in backend.queues:
            name = backend.celery_queue_name(queue)
            backend._queues.setdefault(name, make_queue(app, name, backend.max_priority))
    return app.tasks[TASK_NAME]


def run_job(task, job):
    """The Celery task ``pgjobs.run_job``: verify the payload, then run the job.

    A payload that is malformed or not signed by this site fails at once, before
    anything is imported, and is not retried. A job that raises is retried (the
    same message published again, ``countdown`` from the backoff) until its
    ``max_attempts``, then fails with its exception."""
    if not isinstance(job, dict) or job.get("v") != PAYLOAD_VERSION:
        raise InvalidJob(f"not a pgjobs job payload: {str(job)[:200]}")
    func_path, args, kwargs, queue = (job.get(k) for k in ("func", "args", "kwargs", "queue"))
    verify_job(func_path, args, kwargs, queue, job.get("signature"))  # before any import
    func = load_function(func_path)
    args, kwargs = decode_arguments(args, kwargs)
    max_attempts = job.get("max_attempts") or 1
    attempt = task.request.retries + 1
    token = set_current_job(
        JobContext(
            id=task.request.id,
            func=func_path,
            queue=queue,
            attempt=attempt,
            max_attempts=max_attempts,
        )
    )
    try:
        value = async_to_sync(func)(*args, **kwargs) if _is_async(func) else func(*args, **kwargs)
    except Exception as exc:
        if attempt < max_attempts:
            backend = _configured_backend()
            policy = backend.retry_policy if backend else RetryPolicy()
            options = {"countdown": policy.delay(attempt), "exc": exc}
            if backend is not None:
                options["queue"] = backend.celery_queue(queue)
            raise task.retry(**options) from exc
        _release_unique(job, task.request.id)
        raise
    finally:
        reset_current_job(token)
    _release_unique(job, task.request.id)
    return encode_result(value)


def _is_async(func):
    import inspect

    return inspect.iscoroutinefunction(func)


def _configured_backend():
    from ..handler import get_backend

    backend = get_backend()
    return backend if isinstance(backend, CeleryBackend) else None


def _release_unique(job, task_id):
    key = job.get("unique_key")
    if not key:
        return
    backend = _configured_backend()
    if backend is None:
        return
    cache = backend._cache()
    # Not atomic (the cache API has no compare-and-delete): a lock taken again in
    # between by another job would be dropped; it then holds no longer than that job.
    if cache.get(unique_cache_key(key)) == task_id:
        cache.delete(unique_cache_key(key))


__all__ = ["CeleryBackend", "install", "priority_level", "run_job"]
