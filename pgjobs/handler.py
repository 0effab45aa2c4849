"""The global ``background`` object and the configured backend behind it.

Like ``django.core.cache.cache``: the backend named by ``PGJOBS["BACKEND"]`` is
built on first use, once per process, and rebuilt when the setting changes
(``override_settings(PGJOBS=...)`` works in tests).
"""

import threading

from asgiref.sync import sync_to_async
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .backends.base import BaseJobBackend, validate_when
from .conf import SETTING_NAMES, jobs_settings, setting_name
from .exceptions import InvalidBackend, NotSupported

_lock = threading.Lock()
_backend = None


def load_backend(path, options):
    """Import and build a backend; raise ``InvalidBackend`` with the reason."""
    if not isinstance(path, str):
        raise InvalidBackend(f"{setting_name()}['BACKEND'] must be a dotted path, not {path!r}")
    try:
        backend_class = import_string(path)
    except ImportError as exc:
        raise InvalidBackend(f"cannot import {setting_name()}['BACKEND'] {path!r}: {exc}") from None
    if not (isinstance(backend_class, type) and issubclass(backend_class, BaseJobBackend)):
        raise InvalidBackend(f"{path!r} is not a subclass of pgjobs.BaseJobBackend")
    return backend_class(options)


def get_backend():
    """The configured backend, built on first use."""
    global _backend
    backend = _backend
    if backend is None:
        with _lock:
            if _backend is None:
                config = jobs_settings()
                _backend = load_backend(config["BACKEND"], config["OPTIONS"])
            backend = _backend
    return backend


def reset_backend(**kwargs):
    global _backend
    if kwargs.get("setting", SETTING_NAMES[0]) in SETTING_NAMES:
        with _lock:
            _backend = None


setting_changed.connect(reset_backend)


_ENQUEUE = object()  # _call's `when` for enqueue: None is a defer without a time


def _call(method, func, args, kwargs, options, when=_ENQUEUE):
    """Call a backend method, passing job options only when the caller gave them,
    so a backend written to the RFC's exact signatures keeps working."""
    given = {k: v for k, v in options.items() if v is not None}
    if when is _ENQUEUE:
        return method(func, args, kwargs, **given)
    if when is None:
        validate_when(when)  # raises InvalidJob naming `when`
    return method(func, when, args, kwargs, **given)


class Background:
    """``pgjobs.background``: enqueue jobs on the configured backend (RFC 72)."""

    @property
    def backend(self):
        return get_backend()

    def _method(self, mode):
        backend = self.backend
        if not backend.supports(mode):
            supported = ", ".join(backend.supported_modes()) or "nothing"
            raise NotSupported(
                f"{type(backend).__name__} does not support {mode}() (it supports {supported}). "
                "Configure a backend that does, such as pgjobs.backends.DatabaseBackend."
            )
        return getattr(backend, mode)

    def enqueue(self, func, args=None, kwargs=None, **options):
        """Run ``func(*args, **kwargs)`` in the background as soon as possible."""
        return _call(self._method("enqueue"), func, _list(args), _dict(kwargs), options)

    def defer(self, func, when, args=None, kwargs=None, **options):
        """Run ``func`` no earlier than ``when`` (an aware datetime or a timedelta)."""
        return _call(self._method("defer"), func, _list(args), _dict(kwargs), options, when)

    async def aenqueue(self, func, args=None, kwargs=None, **options):
        """``enqueue`` from async code (falls back to the sync method in a thread)."""
        if self.backend.supports("aenqueue"):
            return await _call(self._method("aenqueue"), func, _list(args), _dict(kwargs), options)
        method = sync_to_async(self._method("enqueue"), thread_sensitive=True)
        return await _call(method, func, _list(args), _dict(kwargs), options)

    async def adefer(self, func, when, args=None, kwargs=None, **options):
        """``defer`` from async code (falls back to the sync method in a thread)."""
        if self.backend.supports("adefer"):
            method = self._method("adefer")
        else:
            method = sync_to_async(self._method("defer"), thread_sensitive=True)
        return await _call(method, func, _list(args), _dict(kwargs), options, when)

    def enqueue_many(self, jobs, **options):
        """Enqueue many jobs at once: ``jobs`` is an iterable of ``(func, args, kwargs)``.

        Options apply to every job. Backends with a bulk path write all rows in
        one statement; others enqueue one by one. Returns the refs in order.
        """
        jobs = [_job_triple(job) for job in jobs]
        backend = self.backend
        bulk = getattr(backend, "enqueue_many", None)
        if bulk is not None:
            return bulk(jobs, **{k: v for k, v in options.items() if v is not None})
        method = self._method("enqueue")
        return [_call(method, func, args, kwargs, options) for func, args, kwargs in jobs]

    def get(self, job_id):
        """A ref to an existing job by id (backends that store jobs only)."""
        backend = self.backend
        if not hasattr(backend, "get_ref"):
            raise NotSupported(f"{type(backend).__name__} does not store jobs")
        return backend.get_ref(job_id)


def _list(args):
    return [] if args is None else args


def _dict(kwargs):
    return {} if kwargs is None else kwargs


def _job_triple(job):
    if type(job) is tuple and len(job) == 3 and job[1] is not None and job[2] is not None:
        return job  # already one (the usual case, checked first: bulk calls pass many)
    if isinstance(job, (list, tuple)) and 1 <= len(job) <= 3:
        func, args, kwargs = (*job, None, None)[:3]
        return func, _list(args), _dict(kwargs)
    raise TypeError(f"enqueue_many takes (func, args, kwargs) tuples, not {job!r}")


background = Background()
