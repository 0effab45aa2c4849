"""The configured backend, and the global ``background`` object in front of it.

In the shape of Django's cache and tasks handlers: ``backends``, a
``BackendHandler``, reads the ``PGJOBS`` setting (or the RFC's ``WAGTAIL_JOBS``
when it is absent), imports its ``BACKEND`` and builds it on first use, once per
process (the stores keep their own per-thread connections), and forgets it when
the setting changes, so that ``override_settings(PGJOBS=...)`` works in tests.
``get_backend()`` is its shortcut; ``background`` (``Background``) enqueues on
whatever it returns. ``store_for_jobs(using)`` is the one lookup the Django
admin and the Wagtail views share to act on ``Job`` rows.

What a backend can do is read from what it declares (``supports(mode)``,
``stores_jobs``, ``tracks_jobs``, ``jobs_database``: see ``pgjobs.backends.base``), never probed.
"""

import threading

from asgiref.sync import sync_to_async
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .backends.base import BaseJobBackend, validate_when
from .conf import SETTING_NAMES, jobs_settings, setting_name
from .exceptions import InvalidBackend, NotSupported


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


class BackendHandler:
    """The backend the settings name: built lazily, once per process, and built
    again after the setting changes. Building holds a lock, so that threads
    racing for the first use share one backend (and one store)."""

    setting_names = SETTING_NAMES

    def __init__(self):
        self._lock = threading.Lock()
        self._backend = None

    def create_backend(self):
        config = jobs_settings()
        return load_backend(config["BACKEND"], config["OPTIONS"])

    def get(self):
        """The configured backend, built on first use."""
        backend = self._backend
        if backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = self.create_backend()
                backend = self._backend
        return backend

    def reset(self):
        """Forget the backend: the next ``get()`` builds it from the settings again."""
        with self._lock:
            self._backend = None

    def setting_changed(self, *, setting, **kwargs):
        if setting in self.setting_names:
            self.reset()


backends = BackendHandler()
setting_changed.connect(backends.setting_changed, weak=False)


def get_backend():
    """The configured backend, built on first use."""
    return backends.get()


def reset_backend(**kwargs):
    """Forget the configured backend (``backends.reset()``)."""
    backends.reset()


def store_for_jobs(using):
    """The store to act on the ``Job`` rows of database ``using`` (retry, cancel):
    the configured backend's own when its jobs are those rows, so that its OPTIONS
    apply (``CHANNEL``: which idle workers a retry wakes), else the plain store
    for that database."""
    backend = get_backend()
    if backend.jobs_database == using:
        return backend.get_store()
    from .stores import database_store

    return database_store(using)


def queue_names():
    """The configured queues (``OPTIONS["QUEUES"]``) for the admins' filters: from
    the settings, not ``SELECT DISTINCT`` over every job ever run."""
    return list(get_backend().queues)


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

    def _method(self, mode, options=None):
        backend = self.backend
        if options and options.get("after") is not None and not backend.supports_chains:
            raise NotSupported(
                f"{type(backend).__name__} does not run jobs after others (after=...); "
                "configure a storing backend such as pgjobs.backends.DatabaseBackend"
            )
        return backend.mode_method(mode)

    def enqueue(self, func, args=None, kwargs=None, **options):
        """Run ``func(*args, **kwargs)`` in the background as soon as possible."""
        return _call(self._method("enqueue", options), func, _list(args), _dict(kwargs), options)

    def defer(self, func, when, args=None, kwargs=None, **options):
        """Run ``func`` no earlier than ``when`` (an aware datetime or a timedelta)."""
        method = self._method("defer", options)
        return _call(method, func, _list(args), _dict(kwargs), options, when)

    async def aenqueue(self, func, args=None, kwargs=None, **options):
        """``enqueue`` from async code (falls back to the sync method in a thread)."""
        if self.backend.supports("aenqueue"):
            method = self._method("aenqueue", options)
            return await _call(method, func, _list(args), _dict(kwargs), options)
        method = sync_to_async(self._method("enqueue", options), thread_sensitive=True)
        return await _call(method, func, _list(args), _dict(kwargs), options)

    async def adefer(self, func, when, args=None, kwargs=None, **options):
        """``defer`` from async code (falls back to the sync method in a thread)."""
        if self.backend.supports("adefer"):
            method = self._method("adefer", options)
        else:
            method = sync_to_async(self._method("defer", options), thread_sensitive=True)
        return await _call(method, func, _list(args), _dict(kwargs), options, when)

    def enqueue_many(self, jobs, **options):
        """Enqueue many jobs at once: ``jobs`` is an iterable of ``(func, args, kwargs)``.

        Options apply to every job (those given: None means not given). Storing
        backends write all the jobs in one statement; others enqueue one by one
        (``BaseJobBackend.enqueue_many``). Returns the refs in order.
        """
        jobs = [_job_triple(job) for job in jobs]
        given = {k: v for k, v in options.items() if v is not None}
        self._method("enqueue", given)  # NotSupported for after= where it is not
        return self.backend.enqueue_many(jobs, **given)

    def batch(self, jobs, *, on_finish=None, on_success=None, description="", **options):
        """Enqueue ``jobs`` (``(func, args, kwargs)`` tuples, as ``enqueue_many``
        takes) as one batch, all or none, and return its ``BatchRef``::

            batch = background.batch(
                [(resize, [image.pk], {}) for image in images],
                on_finish=(notify_done, [user.pk], {}),  # when every job has finished
                on_success=tidy_up,                      # when every job succeeded
                queue="images",
            )
            batch.progress()   # Progress(done=3, total=120)
            batch.counts()     # {"ready": 100, "running": 8, "succeeded": 12, ...}
            batch.cancel()     # cancels the jobs not started yet

        ``options`` (``priority``, ``queue``, ``max_attempts``, ``timeout``) apply
        to every job and to the callbacks. Each callback is a job that runs once,
        whichever worker finishes the batch's last job; a job that fails and will
        be retried is not finished. ``on_success`` is cancelled when a job failed
        for good or was cancelled. ``description`` (up to 255 characters) shows
        on the batch's admin page. Batch jobs take no ``unique_key`` or ``after``.
        """
        backend = self.backend
        if not backend.supports_batches:
            raise NotSupported(
                f"{type(backend).__name__} does not store batches; configure a storing "
                "backend such as pgjobs.backends.DatabaseBackend"
            )
        jobs = [_job_triple(job) for job in jobs]
        given = {k: v for k, v in options.items() if v is not None}
        return backend.enqueue_batch(
            jobs, on_finish=on_finish, on_success=on_success, description=description, **given
        )

    def chain(self, jobs, **options):
        """Enqueue ``jobs`` (``(func, args, kwargs)`` tuples) so that each runs only
        after the one before it succeeded, all or none; return their refs.

        A job whose previous job fails for good or is cancelled is cancelled,
        and so are the jobs after it (their error says why). A job reads the
        previous job's return value as ``pgjobs.current_job().previous_result``.
        ``after=ref`` starts the chain after an existing job; the other options
        apply to every job. The same as ``enqueue(g, ..., after=ref)`` one by one.
        """
        backend = self.backend
        jobs = [_job_triple(job) for job in jobs]
        given = {k: v for k, v in options.items() if v is not None}
        self._method("enqueue", {"after": True})  # NotSupported where chains are not
        return backend.enqueue_chain(jobs, **given)

    def get_batch(self, batch_id):
        """A ``BatchRef`` to an existing batch by id (``BatchNotFound`` if none)."""
        backend = self.backend
        if not backend.supports_batches:
            raise NotSupported(f"{type(backend).__name__} does not store batches")
        return backend.get_batch_ref(batch_id)

    # -- queue control: steering every worker (``pgjobs/queue_control.py``) ---------

    def _storing(self):
        backend = self.backend
        if not backend.stores_jobs:
            raise NotSupported(
                f"{type(backend).__name__} has no workers of its own to steer: queue control "
                "needs a backend that stores jobs (DatabaseBackend, RedisBackend)"
            )
        return backend

    def pause_queue(self, queue):
        """Pause ``queue``: running jobs finish, no new one starts on any worker
        (within about a second). Returns the ``QueueControl`` in force."""
        return self._storing().pause_queue(queue)

    def resume_queue(self, queue):
        """Resume a paused ``queue``. Returns the ``QueueControl`` in force."""
        return self._storing().resume_queue(queue)

    def limit_queue(self, queue, **limits):
        """``limit_queue("api", concurrency=4, rate="5/s")``: at most 4 jobs of
        ``api`` running and 5 starting a second, on all workers together; None
        clears a limit. Returns the ``QueueControl`` in force."""
        return self._storing().limit_queue(queue, **limits)

    def queue_controls(self, queues=None):
        """``{queue: QueueControl}`` in force: stored values over ``PGJOBS["QUEUES"]``."""
        return self._storing().queue_controls(queues)

    def get(self, job_id):
        """A ref to an existing job by id (backends that track jobs only)."""
        backend = self.backend
        if not backend.tracks_jobs:
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
