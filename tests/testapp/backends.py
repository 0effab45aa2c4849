"""Backends written by "someone else", to test that pgjobs keeps the RFC's contract."""

from pgjobs import BaseJobBackend


class EnqueueOnlyBackend(BaseJobBackend):
    """Defines exactly the RFC's ``enqueue(func, args, kwargs)`` and nothing else:
    no ``**options``, no ``defer``. Runs the job at once and keeps a log of calls."""

    calls = []

    def enqueue(self, func, args, kwargs):
        type(self).calls.append((func, args, kwargs))
        return func(*args, **kwargs)
