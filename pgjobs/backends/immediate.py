"""``ImmediateBackend``: the default. Runs each job in-band, at once, as a direct
call would, so a site behaves as if pgjobs were not installed."""

import inspect

from asgiref.sync import async_to_sync, sync_to_async

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

    def enqueue(self, func, args, kwargs, **options):
        self.prepare(func, args, kwargs, **options)
        func = _callable(func)
        if inspect.iscoroutinefunction(func):
            result = async_to_sync(func)(*(args or ()), **(kwargs or {}))
        else:
            result = func(*(args or ()), **(kwargs or {}))
        return _finished(func, result, options)

    async def aenqueue(self, func, args, kwargs, **options):
        self.prepare(func, args, kwargs, **options)
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
