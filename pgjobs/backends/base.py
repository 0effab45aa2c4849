"""``BaseJobBackend``: the RFC 72 base class, and the validation every backend shares.

A backend defines any of ``enqueue(func, args, kwargs)``, ``defer(func, when,
args, kwargs)``, ``aenqueue(...)`` and ``adefer(...)``; a mode it does not define
is not supported (``background`` then raises ``NotSupported``). Backends that
store jobs call ``prepare()`` to turn a call into a validated ``JobSpec``.
"""

import datetime
import numbers

from django.conf import settings
from django.utils import timezone

from ..exceptions import InvalidBackend, InvalidJob
from ..records import DEFAULT_PRIORITY, DEFAULT_QUEUE, MAX_PRIORITY, MIN_PRIORITY, JobSpec
from ..serialization import encode_arguments, function_path, sign_job

MODES = ("enqueue", "defer", "aenqueue", "adefer")
JOB_OPTIONS = ("priority", "queue", "max_attempts", "timeout", "unique_key")
MAX_QUEUE_NAME_LENGTH = 100
MAX_UNIQUE_KEY_LENGTH = 255


class BaseJobBackend:
    """Base class of every job backend (RFC 72).

    ``options`` is ``PGJOBS["OPTIONS"]``. Subclasses that want their options
    checked list them in ``option_names``; an unknown key is then an error
    reported by ``manage.py check`` (``pgjobs.E002``).
    """

    #: Option keys this backend understands; ``None`` accepts any.
    option_names = None
    #: Default for ``max_attempts`` when neither the call nor OPTIONS give one.
    default_max_attempts = 3

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
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
            raise InvalidBackend(f"OPTIONS[{key!r}] must be a number > 0, not {value!r}")
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
        unknown = sorted(set(options) - set(JOB_OPTIONS))
        if unknown:
            raise InvalidJob(
                f"unknown job option {', '.join(unknown)}; options are {', '.join(JOB_OPTIONS)}"
            )
        path = function_path(func)
        encoded_args, encoded_kwargs = encode_arguments(args, kwargs)
        queue = self.validate_queue(options.get("queue"))
        return JobSpec(
            func=path,
            args=encoded_args,
            kwargs=encoded_kwargs,
            queue=queue,
            signature=sign_job(path, encoded_args, encoded_kwargs, queue),
            priority=validate_priority(options.get("priority")),
            run_at=None if when is None else validate_when(when),
            max_attempts=self.validate_max_attempts(options.get("max_attempts")),
            timeout=validate_timeout(options.get("timeout")),
            unique_key=validate_unique_key(options.get("unique_key")),
        )

    def prepare_many(self, jobs, **options):
        """``prepare`` for many ``(func, args, kwargs)`` calls sharing ``options``.

        The options are checked once (by preparing the first call), and a function,
        or an ``(args, kwargs)`` pair, that recurs in ``jobs`` as the same object is
        encoded and signed once: a bulk enqueue pays per job only for what differs.
        An invalid call raises ``InvalidJob`` saying which one, and nothing is written.
        """
        if not jobs:
            return []
        first = self.prepare(*jobs[0], **options)
        paths = {}
        prepared = {}  # (id(func), id(args), id(kwargs)) -> its JobSpec, shared by repeats
        specs = []
        for index, (func, args, kwargs) in enumerate(jobs):
            # The objects live in ``jobs`` for the whole loop, so their ids stay theirs.
            key = (id(func), id(args), id(kwargs))
            spec = prepared.get(key)
            if spec is None:
                try:
                    path = paths.get(id(func)) or paths.setdefault(id(func), function_path(func))
                    encoded_args, encoded_kwargs = encode_arguments(args, kwargs)
                except InvalidJob as exc:
                    raise InvalidJob(f"job {index} of enqueue_many: {exc}") from None
                spec = prepared[key] = JobSpec(
                    func=path,
                    args=encoded_args,
                    kwargs=encoded_kwargs,
                    queue=first.queue,
                    signature=sign_job(path, encoded_args, encoded_kwargs, first.queue),
                    priority=first.priority,
                    run_at=first.run_at,
                    max_attempts=first.max_attempts,
                    timeout=first.timeout,
                    unique_key=first.unique_key,
                )
            specs.append(spec)  # a repeated call shares its spec: stores only read them
        return specs

    def validate_queue(self, queue):
        if queue is None:
            return self.queues[0] if self.queues else DEFAULT_QUEUE
        if not isinstance(queue, str) or not queue:
            raise InvalidJob(f"queue must be a non-empty string, not {queue!r}")
        if self.queues and queue not in self.queues:
            raise InvalidJob(
                f"unknown queue {queue!r}; configured queues are {', '.join(self.queues)}. "
                "Add it to PGJOBS['OPTIONS']['QUEUES']."
            )
        return queue

    def validate_max_attempts(self, value):
        if value is None:
            return self.max_attempts
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidJob(f"max_attempts must be a whole number >= 1, not {value!r}")
        return value


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


def validate_when(when):
    """Turn ``when`` (a datetime, or a timedelta from now) into the time to store."""
    if isinstance(when, datetime.timedelta):
        return timezone.now() + when
    if not isinstance(when, datetime.datetime):
        raise InvalidJob(f"when must be a datetime or a timedelta, not {type(when).__name__}")
    if settings.USE_TZ and timezone.is_naive(when):
        raise InvalidJob(
            f"when={when.isoformat()} is naive but USE_TZ is on; pass an aware datetime "
            "(django.utils.timezone.now() + timedelta(...)) or a timedelta"
        )
    if not settings.USE_TZ and timezone.is_aware(when):
        return timezone.make_naive(when)
    return when


def validate_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or timeout <= 0:
        raise InvalidJob(f"timeout must be a number of seconds > 0, not {timeout!r}")
    return float(timeout)


def validate_unique_key(key):
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_UNIQUE_KEY_LENGTH:
        raise InvalidJob(
            f"unique_key must be a non-empty string of at most {MAX_UNIQUE_KEY_LENGTH} "
            f"characters, not {key!r}"
        )
    return key
