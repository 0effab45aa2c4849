"""The test tasks, defined once for each tasks framework.

``tasks.py`` (the ``django_tasks`` package, as Wagtail uses it) and ``dj_tasks.py``
(``django.tasks``, Django >= 6.0) each call ``define`` with their own ``task``
decorator, so the same tests run against both frameworks. Every task ends up as a
module-level name of the calling module, as a worker must find it. The module also
records the framework's signals as ``Event`` rows, in whichever process sends them.
"""

import asyncio

from pgjobs import atomic_job
from tests.testapp.models import Event


def add(a, b):
    return a + b


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


def fail(message):
    raise ValueError(message)


def flaky(context, key):
    """Fails on its first attempt; takes the framework's ``TaskContext``."""
    if context.attempt < 2:
        raise ConnectionError(f"{key}: attempt {context.attempt}")
    return {"attempt": context.attempt, "id": context.task_result.id}


async def double(x):
    await asyncio.sleep(0)
    return x * 2


def record(name):
    Event.objects.create(name=name)
    return name


def linger(name, seconds):
    """Says it started (an ``Event``), then runs for ``seconds``: a worker killed meanwhile."""
    Event.objects.create(name=name)
    import time

    time.sleep(seconds)
    return name


def bad_return():
    return object()  # not JSON: the task fails, as in the framework's own backends


def atomic_record(name):
    """``record``, marked with ``pgjobs.atomic_job`` (see ``define``)."""
    Event.objects.create(name=name)
    return name


BODIES = [add, echo, fail, flaky, double, record, linger, bad_return, atomic_record]
ATOMIC = {atomic_record}
OPTIONS = {flaky: {"takes_context": True}}


def define(namespace, task, signals):
    """Make each body a task named after it in the module ``namespace``."""
    module = namespace["__name__"]
    for body in BODIES:
        func = _copy(body, module)
        if body in ATOMIC:
            atomic_job(func)
        namespace[body.__name__] = task(**OPTIONS.get(body, {}))(func)

    def on_signal(signal_name):
        def receiver(sender, task_result, **kwargs):
            if task_result.task.module_path.startswith(module + "."):
                Event.objects.create(
                    name=f"{signal_name}:{task_result.task.name}:{task_result.status}",
                    value=task_result.attempts,
                )

        return receiver

    for name in ("task_started", "task_finished"):
        getattr(signals, name).connect(on_signal(name), weak=False, dispatch_uid=f"{module}.{name}")


def _copy(func, module):
    """``func`` as if defined at the top of ``module``."""
    import types

    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__module__ = module
    copy.__qualname__ = func.__name__
    return copy
