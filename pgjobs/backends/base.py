"""``BaseJobBackend``: the RFC 72 base class, and the validation every backend shares.

A backend defines any of ``enqueue(func, args, kwargs)``, ``defer(func, when,
args, kwargs)``, ``aenqueue(...)`` and ``adefer(...)``; a mode it does not define
is not supported (``background`` then raises ``NotSupported``). Everything else a
caller may ask of a backend is declared here, as a class attribute or a method
with a default, so that callers read it instead of probing with ``hasattr``:
``stores_jobs`` (a store for pgjobs' workers: see ``StoringBackend`` in
``storing.py``), ``tracks_jobs`` (refs by id), ``jobs_database`` (the database whose ``Job`` table holds the
jobs) and ``enqueue_many`` (one ``enqueue`` per job unless a backend writes them
at once). Backends that store jobs call ``prepare()`` to turn a call into a
validated ``JobSpec``.
"""

import contextlib
import dataclasses
import datetime
import gc
import math
import numbers

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from ..atomic import atomic_marker
from ..exceptions import InvalidBackend, InvalidJob, NotSupported
from ..records import DEFAULT_PRIORITY, DEFAULT_QUEUE, MAX_PRIORITY, MIN_PRIORITY, JobSpec
from ..serialization import (
    JobSigner,
    encode_arguments,
    function_path,
    job_signer,
    plain_call_json,
    sign_job,
    storable_str,
)
from ..tracing import current_traceparent

MODES = ("enqueue", "defer", "aenqueue", "adefer")
JOB_OPTIONS = ("priority", "queue", "max_attempts", "timeout", "unique_key", "atomic", "after")
#: The options a batch's callbacks take from the batch's.
CALLBACK_OPTIONS = ("priority", "queue", "max_attempts", "timeout")
MAX_DESCRIPTION_LENGTH = 255
MAX_QUEUE_NAME_LENGTH = 100
MAX_UNIQUE_KEY_LENGTH = 255
MAX_ATTEMPTS = 2**31 - 1  # the column is a 32-bit integer


#: From this many jobs on, a bulk enqueue pauses the cyclic garbage collector.
GC_PAUSE_JOBS = 1000


@contextlib.contextmanager
def collector_paused(count):
    """Pause Python's cyclic garbage collector while a bulk enqueue of ``count``
    jobs runs. Such a call makes a few objects a job (spec, info, ref), all alive
    until it returns, so none is garbage; but their number sets off full
    collections that walk them again and again, which cost 100,000 distinct jobs
    a third of their time. Reference counting still frees what the call drops.
    A collector off when the call starts stays off. The collector is global: a
    thread that turns it off during the call sees it on again afterwards."""
    if count < GC_PAUSE_JOBS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class PreparedJobs:
    """The ``JobSpec``s of a bulk enqueue, in order: an iterable to read once,
    with its length, whose specs are made as a store reads them.

    Preparing has two steps. ``encode()`` runs whatever may run the application's
    code or touch the database: it imports each function and encodes arguments
    that are not plain (a model instance, an object's ``__pgjobs_encode__``); of
    plain arguments it makes the JSON. Reading then signs each job and makes its
    spec, computation only, so a store may read while its connection is busy
    (PostgreSQL's COPY) once it has called ``encode()``; reading calls it when
    nobody has. Either step may raise ``InvalidJob``; a store then writes none
    of the jobs (its transaction rolls back)."""

    def __init__(self, backend, jobs, first, atomic=None):
        self.first = first  # the spec of the first job: the options every job shares
        self._backend = backend
        self._jobs = jobs
        self._atomic = atomic  # the call's own atomic=, None when it gave none
        self._encoded = None
        self._read = False
        #: Whether any of the jobs is atomic (known once ``encode()`` ran).
        self.any_atomic = first is not None and first.atomic

    def atomic_flags(self):
        """Per job, in order, whether it is atomic (after ``encode()``)."""
        self.encode()
        return [_item_atomic(item) for item in self._encoded or ()]

    def __len__(self):
        return len(self._jobs)

    def encode(self):
        if self._encoded is None and self._jobs:
            self._encoded, self.any_atomic = self._backend._encode_jobs(
                self._jobs, self.first, self._atomic
            )

    def __iter__(self):
        if self._read:
            raise RuntimeError("PreparedJobs are read once; make a list of them to read again")
        self._read = True
        if not self._jobs:
            return iter(())
        self.encode()
        return self._backend._signed_specs(self._encoded, self.first)


class AsyncFromSync:
    """``aenqueue`` and ``adefer`` for a backend whose ``enqueue`` and ``defer``
    are synchronous: they run in a thread (Django's ``sync_to_async``), so a
    database or broker call never blocks the event loop."""

    async def aenqueue(self, func, args, kwargs, **options):
        return await sync_to_async(self.enqueue, thread_sensitive=True)(
            func, args, kwargs, **options
        )

    async def adefer(self, func, when, args, kwargs, **options):
        return await sync_to_async(self.defer, thread_sensitive=True)(
            func, when, args, kwargs, **options
        )


class BaseJobBackend:
    """Base class of every job backend (RFC 72).

    ``options`` is ``PGJOBS["OPTIONS"]``. Subclasses that want their options
    checked list them in ``option_names``; an unknown key is then an error
    reported by ``manage.py check`` (``pgjobs.E002``).
    """

    #: Jobs are stored and run by workers: the backend has ``get_store()``,
    #: ``get_job(id)``, ``get_ref(id)``, ``cancel_job(id)``, ``retention_rules()``,
    #: ``lease_seconds`` and ``poll_interval``, as ``StoringBackend`` gives them.
    #: False for backends that run a job as it is enqueued.
    stores_jobs = False
    #: Jobs have ids a ref can ask about again: the backend has ``get_job(id)``,
    #: ``get_ref(id)`` and ``cancel_job(id)``. True for every storing backend, and
    #: for ``CeleryBackend``, whose jobs Celery's workers run (not pgjobs').
    tracks_jobs = False
    #: Where ``SCHEDULE`` is run instead, for a backend that leaves schedules to
    #: another program (``"Celery beat"``); None when pgjobs' workers run them.
    schedules_elsewhere = None
    #: The Django database alias whose ``Job`` table holds this backend's jobs, so
    #: that the admin works them through this backend's store; None when its jobs
    #: live elsewhere (Redis) or nowhere (run in-band).
    jobs_database = None
    #: Seconds a job may run when its enqueue gives no ``timeout`` (None: no limit);
    #: backends with a ``TIMEOUT`` option set it.
    default_timeout = None
    #: Option keys this backend understands; ``None`` accepts any.
    option_names = None
    #: Default for ``max_attempts`` when neither the call nor OPTIONS give one.
    default_max_attempts = 3
    #: ``enqueue_batch``, ``get_batch_info``, ``batch_jobs`` and ``cancel_batch``
    #: work (``background.batch``): storing backends.
    supports_batches = False
    #: The ``after`` option works (``background.enqueue(..., after=ref)``,
    #: ``background.chain``): storing backends.
    supports_chains = False

    def __init__(self, options):
        if not isinstance(options, dict):
            raise InvalidBackend(f"OPTIONS must be a dict, not {type(options).__name__}")
        self.options = dict(options)
        if self.option_names is not None:
            unknown = sorted(set(self.options) - set(self.option_names))
            if unknown:
                raise InvalidBackend(
                    f"{type(self).__name__} does not understand OPTIONS {', '.join(unknown)}; "
                    f"it takes {', '.join(sorted(self.option_names))}"
                )
        self.queues = self._queue_names(self.options.get("QUEUES", [DEFAULT_QUEUE]))
        self.max_attempts = self._positive_int("MAX_ATTEMPTS", self.default_max_attempts)

    # -- capabilities ------------------------------------------------------

    @classmethod
    def supports(cls, mode):
        """Whether this backend defines ``mode`` (``"enqueue"``, ``"defer"``, ...)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes are {', '.join(MODES)}")
        return callable(getattr(cls, mode, None))

    @classmethod
    def supported_modes(cls):
        return [mode for mode in MODES if cls.supports(mode)]

    def mode_method(self, mode):
        """The bound method for ``mode``; ``NotSupported`` when it is not defined."""
        if not self.supports(mode):
            supported = ", ".join(self.supported_modes()) or "nothing"
            raise NotSupported(
                f"{type(self).__name__} does not support {mode}() (it supports {supported}). "
                "Configure a backend that does, such as pgjobs.backends.DatabaseBackend."
            )
        return getattr(self, mode)

    def enqueue_many(self, jobs, **options):
        """Enqueue ``(func, args, kwargs)`` jobs sharing ``options``; return what each
        ``enqueue`` returned, in order. This default calls ``enqueue`` once per job,
        passing ``options`` as given (none when the caller gave none, so that an
        ``enqueue`` with the RFC's exact signature works); storing backends write
        all the jobs at once."""
        enqueue = self.mode_method("enqueue")
        return [enqueue(func, args, kwargs, **options) for func, args, kwargs in jobs]

    def check(self, **kwargs):
        """System check messages about this backend's configuration."""
        return []

    # -- option parsing ------------------------------------------------------

    def _positive_int(self, key, default):
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidBackend(f"OPTIONS[{key!r}] must be a whole number >= 1, not {value!r}")
        return value

    def _positive_number(self, key, default, allow_none=False):
        value = self.options.get(key, default)
        if value is None and allow_none:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not 0 < value < math.inf  # False for NaN too
        ):
            raise InvalidBackend(f"OPTIONS[{key!r}] must be a finite number > 0, not {value!r}")
        return float(value)

    @staticmethod
    def _queue_names(queues):
        if isinstance(queues, str) or not isinstance(queues, (list, tuple, set)):
            raise InvalidBackend(f"OPTIONS['QUEUES'] must be a list of queue names, not {queues!r}")
        for name in queues:
            if not isinstance(name, str) or not name or len(name) > MAX_QUEUE_NAME_LENGTH:
                raise InvalidBackend(
                    f"queue name {name!r} in OPTIONS['QUEUES'] must be a non-empty string of at "
                    f"most {MAX_QUEUE_NAME_LENGTH} characters"
                )
        return list(dict.fromkeys(queues))

    # -- job validation --------------------------------------------------------

    def prepare(self, func, args, kwargs, when=None, **options):
        """Validate a call and return the ``JobSpec`` to store; raise ``InvalidJob``."""
        if options:
            unknown = sorted(set(options) - set(JOB_OPTIONS))
            if unknown:
                raise InvalidJob(
                    f"unknown job option {', '.join(unknown)}; options are {', '.join(JOB_OPTIONS)}"
                )
        path = function_path(func)
        atomic = self.validate_atomic(_atomic_asked(func, options.get("atomic")))
        # Most jobs: plain args, no kwargs. Their JSON is made once, stored as it is
        # and signed from the function's pre-hashed part (as a bulk enqueue does).
        args_json = plain_call_json(args, kwargs)
        if args_json is None:
            encoded_args, encoded_kwargs = encode_arguments(args, kwargs)
        else:
            encoded_args, encoded_kwargs = list(args), {}  # a copy, as encode_arguments makes
        queue = self.validate_queue(options.get("queue"))  # after the arguments' errors
        if args_json is None:
            signature = sign_job(path, encoded_args, encoded_kwargs, queue)
        else:
            signature = job_signer(path, queue).sign(args_json)
        return JobSpec(
            func=path,
            args=encoded_args,
            kwargs=encoded_kwargs,
            queue=queue,
            signature=signature,
            args_json=args_json,
            priority=validate_priority(options.get("priority")),
            run_at=None if when is None else validate_when(when),
            max_attempts=self.validate_max_attempts(options.get("max_attempts")),
            timeout=_or_default(validate_timeout(options.get("timeout")), self.default_timeout),
            unique_key=validate_unique_key(options.get("unique_key")),
            atomic=atomic,
            after=validate_after(options.get("after"), options.get("unique_key")),
            traceparent=current_traceparent(),
        )

    def validate_atomic(self, atomic):
        """``atomic`` as asked (the call's option, else the function's mark: False,
        True or a database alias) -> whether the job runs atomic; ``InvalidJob``
        when this backend cannot run it so. Backends that can override this."""
        if atomic is False:
            return False
        raise InvalidJob(
            f"atomic={atomic!r}: {type(self).__name__} cannot run atomic jobs (a job's "
            "success recorded in the transaction of its writes); use "
            "pgjobs.backends.DatabaseBackend, or enqueue with atomic=False"
        )

    def prepare_many(self, jobs, **options):
        """``prepare`` for many ``(func, args, kwargs)`` calls sharing ``options``:
        a list of ``JobSpec``; an invalid call raises ``InvalidJob`` saying which one."""
        return list(self.iter_prepared(jobs, **options))

    def iter_prepared(self, jobs, **options):
        """``prepare_many`` as a ``PreparedJobs``, whose specs are made as a store
        reads them, so that a store can write the first while the rest are made.

        The options are checked once (by preparing the first call). A job whose
        args are plain and kwargs empty (``plain_call_json``), most jobs of a bulk
        call, is encoded once for storing and signing, and signed from its
        function's pre-hashed part; a call that repeats the one before it (the
        same objects, as ``[(f, [], {})] * n`` gives) shares its spec.
        """
        first = self.prepare(*jobs[0], **options) if jobs else None
        return PreparedJobs(self, jobs, first, options.get("atomic"))

    def _encode_jobs(self, jobs, first, asked=None):
        """``PreparedJobs.encode``: per job, its spec when its arguments are not
        plain, else what signing needs: ``(path, signer, args, args_json, atomic)``;
        and whether any job is atomic. ``asked``: the call's ``atomic=`` (None:
        each function's ``@atomic_job`` mark)."""
        functions = {}  # id(func) -> (path, JobSigner, atomic); every func lives in jobs meanwhile
        encoded = []
        last_func = last_args = last_kwargs = last_item = None
        for index, (func, args, kwargs) in enumerate(jobs):
            if func is last_func and args is last_args and kwargs is last_kwargs:
                encoded.append(last_item)  # the same item: its spec is made once
                continue
            try:
                known = functions.get(id(func))
                if known is None:
                    path = function_path(func)
                    atomic = self.validate_atomic(_atomic_asked(func, asked))
                    known = functions[id(func)] = (path, JobSigner(path, first.queue), atomic)
                path, signer, atomic = known
                args_json = plain_call_json(args, kwargs)
                if args_json is not None:
                    # A copy: a store may write the list after the caller changed it
                    # (Redis, at commit), and the signature is of this JSON.
                    item = (path, signer, list(args), args_json, atomic)
                else:
                    encoded_args, encoded_kwargs = encode_arguments(args, kwargs)
                    item = dataclasses.replace(
                        first,
                        func=path,
                        args=encoded_args,
                        kwargs=encoded_kwargs,
                        signature=sign_job(path, encoded_args, encoded_kwargs, first.queue),
                        args_json=None,
                        atomic=atomic,
                    )
            except InvalidJob as exc:
                raise InvalidJob(f"job {index} of enqueue_many: {exc}") from None
            last_func, last_args, last_kwargs, last_item = func, args, kwargs, item
            encoded.append(item)
        return encoded, any(atomic for _, _, atomic in functions.values())

    @staticmethod
    def _signed_specs(encoded, first):
        """The specs of ``_encode_jobs``' items, plain ones signed now."""
        queue, priority, run_at, attempts, timeout, key = (
            first.queue, first.priority, first.run_at, first.max_attempts, first.timeout,
            first.unique_key,
        )  # fmt: skip
        spec_type = JobSpec
        last_item = last_spec = None
        for item in encoded:
            if item is not last_item:
                if type(item) is spec_type:
                    last_spec = item
                else:
                    path, signer, args, args_json, atomic = item
                    last_spec = spec_type(path, args, {}, queue, priority, run_at, attempts,
                                          timeout, key, signer.sign(args_json), args_json,
                                          atomic, traceparent=first.traceparent)  # fmt: skip
                last_item = item
            yield last_spec  # a repeated call shares its spec: stores only read them

    def validate_queue(self, queue):
        if queue is None:
            return self.queues[0] if self.queues else DEFAULT_QUEUE
        if self.queues:
            if queue in self.queues:  # configured names were checked with the settings
                return queue
            if isinstance(queue, str) and queue:
                raise InvalidJob(
                    f"unknown queue {_shown(queue)}; configured queues are "
                    f"{', '.join(self.queues)}. "
                    "Add it to PGJOBS['OPTIONS']['QUEUES']."
                )
        if (
            not isinstance(queue, str)
            or not queue
            or len(queue) > MAX_QUEUE_NAME_LENGTH
            or not storable_str(queue)
        ):
            raise InvalidJob(
                f"queue must be a non-empty string of at most {MAX_QUEUE_NAME_LENGTH} characters "
                f"without NUL or lone surrogates, not {_shown(queue)}"
            )
        return queue

    def validate_max_attempts(self, value):
        if value is None:
            return self.max_attempts
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
            raise InvalidJob(
                f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS:,}, not {value!r}"
            )
        return value


def _atomic_asked(func, atomic):
    """The call's ``atomic=`` when it gave one, else what ``@atomic_job`` marked."""
    if atomic is None:
        return atomic_marker(func)
    if atomic is True or atomic is False or (isinstance(atomic, str) and atomic):
        return atomic
    raise InvalidJob(f"atomic must be True, False or the name of a database, not {_shown(atomic)}")


def _item_atomic(item):
    """Whether an item of ``_encode_jobs`` (a spec, or a plain job's tuple) is atomic."""
    return item.atomic if type(item) is JobSpec else item[4]


def validate_priority(priority):
    if priority is None:
        return DEFAULT_PRIORITY
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidJob(f"priority must be a whole number, not {priority!r}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidJob(
            f"priority {priority} is out of range; use {MIN_PRIORITY} to {MAX_PRIORITY} "
            "(higher runs sooner)"
        )
    return priority


#: The times a job may be deferred to: what every database's timestamp and
#: Python's datetime hold, with a year's margin for time zone arithmetic.
EARLIEST_WHEN = datetime.datetime(1000, 1, 1, tzinfo=datetime.UTC)
LATEST_WHEN = datetime.datetime(9999, 1, 1, tzinfo=datetime.UTC)

#: The longest ``timeout`` (about 31 years): much longer waits overflow the timers
#: a worker sets (``threading.TIMEOUT_MAX`` is about 9.2e9 s on Linux).
MAX_TIMEOUT = 1e9


def validate_when(when):
    """Turn ``when`` (a datetime, or a timedelta from now) into the time to store."""
    if isinstance(when, datetime.timedelta):
        try:
            when = timezone.now() + when
        except OverflowError:
            raise InvalidJob(_when_out_of_range(when)) from None
    elif not isinstance(when, datetime.datetime):
        raise InvalidJob(
            f"when must be a datetime or a timedelta, not {type(when).__name__}"
            + ("; call enqueue() to run the job as soon as possible" if when is None else "")
        )
    elif settings.USE_TZ and timezone.is_naive(when):
        raise InvalidJob(
            f"when={when.isoformat()} is naive but USE_TZ is on; pass an aware datetime "
            "(django.utils.timezone.now() + timedelta(...)) or a timedelta"
        )
    try:
        in_range = EARLIEST_WHEN <= _as_utc(when) < LATEST_WHEN
        if in_range and not settings.USE_TZ and timezone.is_aware(when):
            return timezone.make_naive(when)
    except OverflowError:
        in_range = False
    if not in_range:
        raise InvalidJob(_when_out_of_range(when))
    return when


def _as_utc(when):
    if timezone.is_naive(when):
        return when.replace(tzinfo=datetime.UTC)  # the naive times of USE_TZ = False
    return when.astimezone(datetime.UTC)


def _when_out_of_range(when):
    return (
        f"when={when!r} is out of range; pass a time from {EARLIEST_WHEN:%Y-%m-%d} to "
        f"{LATEST_WHEN:%Y-%m-%d} UTC, or a timedelta that reaches no further"
    )


def _or_default(value, default):
    return default if value is None else value


def validate_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not 0 < timeout <= MAX_TIMEOUT  # False for NaN too
    ):
        raise InvalidJob(
            f"timeout must be a number of seconds > 0 and at most {MAX_TIMEOUT:,.0f}, "
            f"not {timeout!r}; leave it out for no limit"
        )
    return float(timeout)


def validate_after(after, unique_key=None):
    """The id of the job a chained job runs after (``after``: a ``JobRef`` or a
    job id), or None."""
    if after is None:
        return None
    from ..refs import JobRef

    if isinstance(after, JobRef):
        if after.id is None:
            raise InvalidJob(
                "after must be the ref of a stored job; this job ran in-band already "
                "(ImmediateBackend): call the next function directly"
            )
        after = after.id
    elif isinstance(after, bool) or not isinstance(after, int):
        raise InvalidJob(f"after must be a JobRef or a job id (an int), not {_shown(after)}")
    if unique_key is not None:
        raise InvalidJob(
            "a chained job (after=...) cannot take a unique_key; leave one of them out"
        )
    return after


def validate_description(description):
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidJob(
            f"description must be a string of at most {MAX_DESCRIPTION_LENGTH} characters, "
            f"not {_shown(description)}"
        )
    if not storable_str(description):
        raise InvalidJob("description must not contain NUL or lone surrogates")
    return description


def validate_unique_key(key):
    if key is None:
        return None
    if (
        not isinstance(key, str)
        or not key
        or len(key) > MAX_UNIQUE_KEY_LENGTH
        or not storable_str(key)
    ):
        raise InvalidJob(
            f"unique_key must be a non-empty string of at most {MAX_UNIQUE_KEY_LENGTH} "
            f"characters without NUL or lone surrogates, not {_shown(key)}"
        )
    return key


def _shown(value):
    """``repr(value)``, cut short: a refusal stays one readable line."""
    text = repr(value)
    if len(text) <= 60:
        return text
    length = f" ({len(value):,} characters)" if isinstance(value, (str, bytes)) else ""
    return f"{text[:50]}...{length}"
