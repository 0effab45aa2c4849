"""``PgJobsBackend``: pgjobs as a backend of Django's tasks framework.

::

    TASKS = {"default": {"BACKEND": "pgjobs.django_tasks.PgJobsBackend", "QUEUES": ["default"]}}

Works with ``django.tasks`` (Django >= 6.0) and with the ``django_tasks`` package
(django-tasks 0.9-0.12, which Wagtail imports, also on Django 6).

Where tasks are stored: with the pgjobs backend the ``PGJOBS`` setting configures
(``pgjobs.handler.get_backend()``), which must track jobs (``tracks_jobs``: a
``DatabaseBackend``, a ``RedisBackend``, a ``CeleryBackend``, whose tasks Celery's
workers run; reading a result back there needs Celery's ``result_extended``). A task is a job whose function is the
task's ``module_path``, so the workers that work ``PGJOBS`` run tasks and plain jobs
alike and one configuration serves both. A ``TASKS`` entry sets only the task
queues (``QUEUES``) and job options (``OPTIONS``), not a pgjobs backend of its own:
the workers work the ``PGJOBS`` backend, and tasks stored anywhere else would never
run. On a worker the path imports to a ``Task`` object, which the worker runs
through ``task_runner`` below: it passes the ``TaskContext`` and sends the
framework's ``task_started`` and ``task_finished`` signals in the worker process. A
task's result is read from the store (``get_job``), arguments included
(``JobInfo.args``/``kwargs``).

Which framework: both read the one ``TASKS`` setting, and each builds its own
instance of this class from it, in the same way. A task is always handled with the
classes and signals of the framework it belongs to (``framework_of(task)``): the
results an enqueue returns, the errors it raises, the result ``get_result`` reads
back (the framework of the task its job names). Where no task is at hand, an error
is of both frameworks (``TaskResultDoesNotExist`` subclasses the two). What remains
is ``task_class``, the ``Task`` class the framework's ``@task`` decorator makes: the
one of the framework whose ``task_backends`` handler holds the instance, asked of
the handlers themselves (``all(initialized_only=True)``, public API); an instance
that no handler holds (built directly) serves Django's own framework where it
exists.
"""

import dataclasses
import datetime
import importlib
import inspect
import sys

from asgiref.sync import sync_to_async
from django.core import checks
from django.db import connections
from django.utils import timezone
from django.utils.module_loading import import_string

from . import records
from .exceptions import InvalidJob, JobCancelled
from .execution import current_job
from .handler import get_backend
from .serialization import decode_arguments, decode_result, job_module_problem
from .signals import job_lost

#: OPTIONS of a ``TASKS`` entry: job options applied to every task.
OPTION_NAMES = {"MAX_ATTEMPTS", "TIMEOUT"}


@dataclasses.dataclass(frozen=True)
class Framework:
    """The classes, exceptions and signals of one tasks framework."""

    module: str
    Task: type
    TaskResult: type
    TaskResultStatus: type
    TaskContext: type
    TaskError: type
    BaseTaskBackend: type
    InvalidTask: type
    TaskResultDoesNotExist: type
    signals: object
    normalize_json: object
    #: The framework's ``task_backends``: the handler that builds its backends.
    backends: object

    @property
    def successful(self):
        """``SUCCESSFUL`` (Django, django-tasks >= 0.12) or ``SUCCEEDED`` (0.9-0.11)."""
        status = self.TaskResultStatus
        return getattr(status, "SUCCESSFUL", None) or status.SUCCEEDED

    def status(self, job_status):
        """The framework's status for a pgjobs status."""
        return {
            records.READY: self.TaskResultStatus.READY,
            records.RUNNING: self.TaskResultStatus.RUNNING,
            records.SUCCEEDED: self.successful,
            records.FAILED: self.TaskResultStatus.FAILED,
            records.CANCELLED: self.TaskResultStatus.FAILED,
        }[job_status]

    def make_result(self, **fields):
        if "metadata" in {f.name for f in dataclasses.fields(self.TaskResult)}:
            fields.setdefault("metadata", {})  # a required field in django-tasks 0.11 only
        return self.TaskResult(**fields)


def _load(module):
    try:
        base = importlib.import_module(f"{module}.base")
    except ImportError:
        return None
    exceptions = importlib.import_module(f"{module}.exceptions")
    if module == "django.tasks":
        from django.utils.json import normalize_json
    else:
        from django_tasks.utils import normalize_json
    return Framework(
        module=module,
        Task=base.Task,
        TaskResult=base.TaskResult,
        TaskResultStatus=base.TaskResultStatus,
        TaskContext=base.TaskContext,
        TaskError=base.TaskError,
        BaseTaskBackend=importlib.import_module(f"{module}.backends.base").BaseTaskBackend,
        # django-tasks calls it InvalidTaskError (up to 0.12).
        InvalidTask=getattr(exceptions, "InvalidTask", None) or exceptions.InvalidTaskError,
        TaskResultDoesNotExist=exceptions.TaskResultDoesNotExist,
        signals=importlib.import_module(f"{module}.signals"),
        normalize_json=normalize_json,
        backends=importlib.import_module(module).task_backends,
    )


#: The frameworks importable here, Django's own first.
FRAMEWORKS = [fw for fw in (_load("django.tasks"), _load("django_tasks")) if fw is not None]
if not FRAMEWORKS:
    raise ImportError(
        "pgjobs.django_tasks needs Django's tasks framework: Django >= 6.0, or the "
        "django-tasks package (pip install 'pgjobs[wagtail]')"
    )
TASK_CLASSES = tuple(fw.Task for fw in FRAMEWORKS)


def framework_of(task):
    """The framework a ``Task`` object belongs to."""
    for fw in FRAMEWORKS:
        if isinstance(task, fw.Task):
            return fw
    raise TypeError(f"{task!r} is not a Task of {' or '.join(fw.module for fw in FRAMEWORKS)}")


def framework_holding(backend):
    """The framework whose ``task_backends`` holds ``backend`` (in this thread, as
    the handlers keep one instance per thread), or None."""
    for fw in FRAMEWORKS:
        if any(held is backend for held in fw.backends.all(initialized_only=True)):
            return fw
    return None


class TaskResultDoesNotExist(*dict.fromkeys(fw.TaskResultDoesNotExist for fw in FRAMEWORKS)):
    """No task result has the id asked for: ``TaskResultDoesNotExist`` of both
    frameworks, since no task says which one asked."""


class PgJobsBackend(*dict.fromkeys(fw.BaseTaskBackend for fw in FRAMEWORKS)):
    """Stores tasks as pgjobs jobs; ``pgjobs_worker`` and ``pgjobs_drain`` run them.

    ``QUEUES`` are the task queues, as for every tasks backend; the pgjobs backend
    must accept them too (``PGJOBS["OPTIONS"]["QUEUES"]``), and the workers work
    them. ``OPTIONS`` may set ``MAX_ATTEMPTS`` (pgjobs retries a failing task with
    backoff until then; default: the pgjobs backend's) and ``TIMEOUT`` (seconds).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias, params):
        # Nothing here may touch the database or models: Wagtail's modules build
        # the backend while apps are still loading.
        super().__init__(alias, params)
        self._framework = None
        self.job_options = {}
        if "MAX_ATTEMPTS" in self.options:
            self.job_options["max_attempts"] = self.options["MAX_ATTEMPTS"]
        if "TIMEOUT" in self.options:
            self.job_options["timeout"] = self.options["TIMEOUT"]

    @property
    def framework(self):
        """The framework this instance serves: the one whose ``task_backends``
        holds it, else (built directly) Django's own where it exists."""
        if self._framework is None:
            held_by = framework_holding(self)
            if held_by is None:
                return FRAMEWORKS[0]
            self._framework = held_by  # a handler keeps an instance for good
        return self._framework

    @property
    def task_class(self):
        """The ``Task`` class the framework's ``@task`` decorator makes."""
        return self.framework.Task

    @property
    def jobs(self):
        """The pgjobs backend the tasks are stored with (``PGJOBS``)."""
        return get_backend()

    # -- validation ------------------------------------------------------------

    def validate_task(self, task):
        fw = framework_of(task)
        if isinstance(task.run_after, datetime.timedelta):
            # The docs allow a timedelta; the frameworks' checks expect a datetime.
            task = dataclasses.replace(task, run_after=None)
        fw.BaseTaskBackend.validate_task(self, task)

    # -- enqueue -----------------------------------------------------------------

    def enqueue(self, task, args, kwargs):
        self.validate_task(task)
        fw = framework_of(task)
        result = self._new_result(fw, task, args, kwargs)  # normalises args, or TypeError
        ref = self._submit(fw, task, result.args, result.kwargs)
        return self._enqueued(fw, result, ref)

    def enqueue_many(self, calls):
        """Enqueue many tasks at once: ``calls`` is an iterable of ``(task, args,
        kwargs)``. Tasks due now that share a queue and priority are written in one
        statement. Returns the ``TaskResult`` objects in order."""
        prepared = []
        for task, args, kwargs in calls:
            self.validate_task(task)
            fw = framework_of(task)
            prepared.append((fw, task, self._new_result(fw, task, args, kwargs)))
        refs = [None] * len(prepared)
        groups = {}
        for index, (fw, task, result) in enumerate(prepared):
            if task.run_after is None:
                groups.setdefault((task.queue_name, task.priority), []).append(index)
            else:
                refs[index] = self._submit(fw, task, result.args, result.kwargs)
        for (queue, priority), indexes in groups.items():
            fw = prepared[indexes[0]][0]
            batch = [
                (prepared[i][1].module_path, prepared[i][2].args, prepared[i][2].kwargs)
                for i in indexes
            ]
            try:
                made = self._storing_backend(fw).enqueue_many(
                    batch, queue=queue, priority=priority, **self.job_options
                )
            except InvalidJob as exc:
                raise fw.InvalidTask(str(exc)) from exc
            for i, ref in zip(indexes, made, strict=True):
                refs[i] = ref
        return [
            self._enqueued(fw, result, ref)
            for (fw, _, result), ref in zip(prepared, refs, strict=True)
        ]

    def _new_result(self, fw, task, args, kwargs):
        return fw.make_result(
            task=task,
            id="",
            status=fw.TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    def _submit(self, fw, task, args, kwargs):
        jobs = self._storing_backend(fw)
        options = {"queue": task.queue_name, "priority": task.priority, **self.job_options}
        try:
            if task.run_after is None:
                return jobs.enqueue(task.module_path, args, kwargs, **options)
            return jobs.defer(task.module_path, task.run_after, args, kwargs, **options)
        except InvalidJob as exc:
            raise fw.InvalidTask(str(exc)) from exc

    def _storing_backend(self, fw):
        """The pgjobs backend, if it stores jobs; else ``InvalidTask`` of ``fw``."""
        jobs = self.jobs
        if not jobs.tracks_jobs:
            raise fw.InvalidTask(_not_storing(jobs))
        return jobs

    def _enqueued(self, fw, result, ref):
        object.__setattr__(result, "id", str(ref.id))
        object.__setattr__(result, "enqueued_at", ref.created_at or timezone.now())
        fw.signals.task_enqueued.send(type(self), task_result=result)
        return result

    # -- results -------------------------------------------------------------------

    def get_result(self, result_id):
        """The ``TaskResult`` of the job ``result_id``, of the framework of the task
        its job names, as its store has it."""
        jobs = self.jobs
        if not jobs.tracks_jobs:
            raise TaskResultDoesNotExist(_not_storing(jobs))
        try:
            info = jobs.get_job(_job_id(result_id))
        except (TypeError, ValueError):  # not an id this backend could have made
            info = None
        task = None if info is None else load_task(info.func)
        if task is None:
            raise TaskResultDoesNotExist(f"no task result with id {result_id!r}")
        return task_result(framework_of(task), task, info, self.alias)

    # -- checks ----------------------------------------------------------------------

    def check(self, **kwargs):
        messages = list(super().check(**kwargs))
        unknown = sorted(set(self.options) - OPTION_NAMES)
        if unknown:
            messages.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]['OPTIONS'] has unknown keys {', '.join(unknown)}; "
                    f"PgJobsBackend takes {', '.join(sorted(OPTION_NAMES))}.",
                    id="pgjobs.E101",
                )
            )
        jobs = self.jobs
        from .checks import app_missing_checks

        messages += app_missing_checks(jobs)  # pgjobs.E005: pgjobs' own checks need the app
        if not jobs.tracks_jobs:
            messages.append(checks.Error(_not_storing(jobs), id="pgjobs.E102"))
        elif jobs.queues and self.queues:
            missing = sorted(set(self.queues) - set(jobs.queues))
            if missing:
                messages.append(
                    checks.Error(
                        f"TASKS[{self.alias!r}] queues {', '.join(missing)} are not pgjobs "
                        "queues: tasks on them cannot be enqueued, and no worker would run them.",
                        hint="Add them to PGJOBS['OPTIONS']['QUEUES'].",
                        id="pgjobs.E103",
                    )
                )
        return messages


@checks.register
def check_task_backends(app_configs=None, **kwargs):
    """Run ``PgJobsBackend.check()`` when no tasks framework's own check will: Wagtail
    does not install the ``django_tasks`` app, and ``django.tasks`` registers its check
    only once something imports it."""
    if {"django.tasks.checks", "django_tasks.checks"} & set(sys.modules):
        return []
    from django.conf import settings

    messages = []
    for alias, params in (getattr(settings, "TASKS", None) or {}).items():
        backend_path = params.get("BACKEND", "") if isinstance(params, dict) else ""
        if backend_path.endswith(".PgJobsBackend") and import_string(backend_path) is PgJobsBackend:
            messages += PgJobsBackend(alias, params).check()
    return messages


def _not_storing(jobs):
    return (
        f"PgJobsBackend stores tasks with the pgjobs backend, but PGJOBS['BACKEND'] is "
        f"{type(jobs).__name__}, which runs jobs in-band. Set it to "
        "'pgjobs.backends.DatabaseBackend'."
    )


def _job_id(result_id):
    text = str(result_id)
    return int(text) if text.isdigit() else text


def load_task(path):
    """The ``Task`` object a job's function names, or None if it names something else."""
    try:
        found = import_string(path)
    except Exception:
        return None
    return found if isinstance(found, TASK_CLASSES) else None


def stored_arguments(info):
    """The arguments a task was enqueued with, as its store keeps them
    (``JobInfo.args``/``kwargs``, decoded); empty where the store did not give
    them or they no longer decode."""
    if info.args is None and info.kwargs is None:
        return [], {}
    try:
        return decode_arguments(
            [] if info.args is None else info.args, {} if info.kwargs is None else info.kwargs
        )
    except InvalidJob:
        return [], {}


def task_result(fw, task, info, alias):
    """A ``TaskResult`` of framework ``fw`` from a pgjobs ``JobInfo``."""
    args, kwargs = stored_arguments(info)
    errors = []
    if info.error:
        errors.append(
            fw.TaskError(
                exception_class_path=info.error.get("type", ""),
                traceback=info.error.get("traceback", ""),
            )
        )
    elif info.status == records.CANCELLED:
        errors.append(
            fw.TaskError(
                exception_class_path=f"{JobCancelled.__module__}.{JobCancelled.__qualname__}",
                traceback="The job was cancelled before it started.\n",
            )
        )
    result = fw.make_result(
        task=task,
        id=str(info.id),
        status=fw.status(info.status),
        enqueued_at=info.created_at,
        started_at=info.started_at,
        finished_at=info.finished_at,
        last_attempted_at=info.started_at,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=errors,
        worker_ids=_worker_ids(info),
    )
    if info.status == records.SUCCEEDED:
        object.__setattr__(result, "_return_value", decode_result(info.result))
    return result


def _worker_ids(info):
    """One entry per attempt, as the frameworks count attempts (``len(worker_ids)``).
    pgjobs records the worker of the latest attempt only; it stands for all of them."""
    return [info.worker_id or ""] * info.attempts


# -- the worker's side -----------------------------------------------------------------


def task_runner(task):
    """The function a worker calls for a job whose function is ``task``.

    Registered in ``pgjobs.serialization.RUNNERS``: ``load_function`` returns this
    for a path that imports to a ``Task``. It runs ``task.func`` (a coroutine
    function stays one, for the worker's event loop), with a ``TaskContext`` first
    when the task takes one, and sends ``task_started`` before and ``task_finished``
    once the task is finished: succeeded, or failed on its last attempt.
    """
    fw = framework_of(task)
    if inspect.iscoroutinefunction(task.func):

        async def run_async_task(*args, **kwargs):
            result = await _in_thread(_started, fw, task, args, kwargs)
            call = task.func(*_context(fw, task, result), *args, **kwargs)
            try:
                value = fw.normalize_json(await call)
            except BaseException as exc:
                await _in_thread(_failed, fw, result, exc)
                raise
            await _in_thread(_succeeded, fw, result, value)
            return value

        return run_async_task

    def run_task(*args, **kwargs):
        result = _started(fw, task, args, kwargs)
        try:
            value = fw.normalize_json(task.func(*_context(fw, task, result), *args, **kwargs))
        except BaseException as exc:
            _failed(fw, result, exc)
            raise
        _succeeded(fw, result, value)
        return value

    return run_task


async def _in_thread(func, *args):
    """Run a step that may use the database (reading the row, signal receivers) off
    the event loop, closing the connections it opened there."""

    def step():
        try:
            return func(*args)
        finally:
            connections.close_all()

    return await sync_to_async(step, thread_sensitive=False)()


def _context(fw, task, result):
    return (fw.TaskContext(task_result=result),) if task.takes_context else ()


def _started(fw, task, args, kwargs):
    """The running attempt's ``TaskResult`` (read from its row), after ``task_started``."""
    job = current_job()
    info = None
    jobs = get_backend()
    if job is not None and jobs.stores_jobs:
        info = jobs.get_job(job.id)
    now = timezone.now()
    if info is None:  # run in-band, outside a worker
        info = records.JobInfo(
            id=job.id if job else "",
            func=task.module_path,
            queue=task.queue_name,
            status=records.RUNNING,
            attempts=job.attempt if job else 1,
            created_at=now,
            started_at=now,
        )
    result = fw.make_result(
        task=task,
        id=str(info.id),
        status=fw.TaskResultStatus.RUNNING,
        enqueued_at=info.created_at,
        started_at=info.started_at or now,
        finished_at=None,
        last_attempted_at=info.started_at or now,
        args=list(args),
        kwargs=dict(kwargs),
        backend=_alias(task),
        errors=[],
        worker_ids=_worker_ids(info),
    )
    if info.error:  # an earlier attempt's
        result.errors.append(
            fw.TaskError(
                exception_class_path=info.error.get("type", ""),
                traceback=info.error.get("traceback", ""),
            )
        )
    fw.signals.task_started.send(sender=PgJobsBackend, task_result=result)
    return result


def _alias(task):
    return task.backend


def _failed(fw, result, exc):
    from .execution import describe_error

    error = describe_error(exc)
    result.errors.append(
        fw.TaskError(exception_class_path=error["type"], traceback=error["traceback"])
    )
    job = current_job()
    final = job is None or job.attempt >= job.max_attempts or isinstance(exc, JobCancelled)
    if not final:  # the worker retries it: ready again, not finished
        object.__setattr__(result, "status", fw.TaskResultStatus.READY)
        return
    object.__setattr__(result, "status", fw.TaskResultStatus.FAILED)
    object.__setattr__(result, "finished_at", timezone.now())
    fw.signals.task_finished.send(sender=PgJobsBackend, task_result=result)


def _task_lost(sender, job, **kwargs):
    """``pgjobs.signals.job_lost``: a rescue ended a job whose worker was lost. If
    it is a task, its ``task_finished`` was never sent (the worker died first):
    send it now, with the result as stored, in the rescuing worker's process."""
    if job_module_problem(job.func) is not None:
        return  # not a job this site runs: nothing of it is imported
    task = load_task(job.func)
    if task is None:  # a plain pgjobs job
        return
    fw = framework_of(task)
    result = task_result(fw, task, job, _alias(task))
    fw.signals.task_finished.send(sender=PgJobsBackend, task_result=result)


job_lost.connect(_task_lost, dispatch_uid="pgjobs.django_tasks.task_lost")


def _succeeded(fw, result, value):
    object.__setattr__(result, "status", fw.successful)
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "_return_value", value)
    fw.signals.task_finished.send(sender=PgJobsBackend, task_result=result)
