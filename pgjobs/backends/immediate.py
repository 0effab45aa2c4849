"""``ImmediateBackend``: the default. Runs each job in-band, at once, as a direct
call would, so a site behaves as if pgjobs were not installed."""

import inspect

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction

from ..atomic import atomic_marker
from ..exceptions import InvalidJob
from ..records import SUCCEEDED, JobInfo
from ..refs import JobRef
from ..serialization import load_function
from .base import BaseJobBackend


class ImmediateBackend(BaseJobBackend):
    """Runs jobs in-band, in the caller's thread (or event loop).

    Arguments are validated as a storing backend would validate them, so a call
    that works here works there too, but the function receives the original
    objects and its exceptions propagate to the caller unchanged.
    """

    option_names = {"QUEUES", "MAX_ATTEMPTS"}

    def validate_atomic(self, atomic):
        """An atomic job runs inside ``transaction.atomic()`` on its database (the
        default one unless ``atomic=`` or ``@atomic_job(using=...)`` names one)."""
        if atomic is False:
            return False
        if isinstance(atomic, str) and atomic not in settings.DATABASES:
            raise InvalidJob(f"atomic={atomic!r} names no database in settings.DATABASES")
        return True

    def enqueue(self, func, args, kwargs, **options):
        spec = self.prepare(func, args, kwargs, **options)
        if spec.atomic:
            with transaction.atomic(using=_database(func, options)):
                return self._run(func, args, kwargs, options)
        return self._run(func, args, kwargs, options)

    def _run(self, func, args, kwargs, options):
        func = _callable(func)
        if inspect.iscoroutinefunction(func):
            result = async_to_sync(func)(*(args or ()), **(kwargs or {}))
        else:
            result = func(*(args or ()), **(kwargs or {}))
        return _finished(func, result, options)

    async def aenqueue(self, func, args, kwargs, **options):
        spec = self.prepare(func, args, kwargs, **options)
        if spec.atomic:  # a transaction belongs to a thread: run it all in one
            return await sync_to_async(self.enqueue, thread_sensitive=True)(
                func, args, kwargs, **options
            )
        func = _callable(func)
        if inspect.iscoroutinefunction(func):
            result = await func(*(args or ()), **(kwargs or {}))
        else:
            result = await sync_to_async(func, thread_sensitive=True)(
                *(args or ()), **(kwargs or {})
            )
        return _finished(func, result, options)


class InBandJobRef(JobRef):
    """The ref of a job that already ran in-band: it holds the very object returned."""

    def __init__(self, info, value):
        super().__init__(info)
        self._value = value

    @property
    def result(self):
        return self._value


def _database(func, options):
    """The database an atomic job's transaction is on."""
    asked = options.get("atomic")
    if asked is None:
        asked = atomic_marker(func)
    return asked if isinstance(asked, str) else DEFAULT_DB_ALIAS


def _callable(func):
    return load_function(func) if isinstance(func, str) else func


def _finished(func, result, options):
    info = JobInfo(
        id=None,
        func=f"{func.__module__}.{func.__qualname__}",
        queue=options.get("queue") or "default",
        status=SUCCEEDED,
        priority=options.get("priority") or 0,
        attempts=1,
    )
    return InBandJobRef(info, result)
