"""Test tasks of the ported upstream tests (``tests/test_django_tasks_upstream.py``),
after the tasks of Django's ``tests/tasks/tasks.py`` and django-tasks' ``tests/tasks.py``.

Defined once per tasks framework importable here, as module-level names that a
worker can import: ``noop_task__django_tasks`` is django-tasks', ``noop_task__django``
Django's own. ``tasks_of(fw)`` gives one framework's tasks under their upstream names.
"""

import importlib
import time
import types

from pgjobs.django_tasks import FRAMEWORKS


def noop_task(*args, **kwargs):
    return None


async def noop_task_async(*args, **kwargs):
    return None


def calculate_meaning_of_life():
    return 42


def failing_task_value_error():
    raise ValueError("This task failed due to ValueError")


def failing_task_system_exit():
    raise SystemExit("This task failed due to SystemExit")


def failing_task_keyboard_interrupt():
    raise KeyboardInterrupt("This task failed due to KeyboardInterrupt")


def exit_task():
    exit(1)


def sleep_for(seconds):
    time.sleep(seconds)


def hang():
    """Do nothing for 5 minutes."""
    time.sleep(300)


def complex_exception():
    raise ValueError(ValueError("This task failed"))


def complex_return_value():
    return {1, 2, 3}  # a set: not JSON


def get_task_id(context):
    return context.task_result.id


def check_context(context, attempt):
    """Django's ``test_context`` task (renamed: pytest would collect ``test_*``)."""
    fw = next(f for f in FRAMEWORKS if isinstance(context, f.TaskContext))
    assert isinstance(context, fw.TaskContext)
    assert context.attempt == attempt


BODIES = [
    noop_task,
    noop_task_async,
    calculate_meaning_of_life,
    failing_task_value_error,
    failing_task_system_exit,
    failing_task_keyboard_interrupt,
    exit_task,
    sleep_for,
    hang,
    complex_exception,
    complex_return_value,
    get_task_id,
    check_context,
]
TAKES_CONTEXT = {get_task_id, check_context}


def suffix(fw):
    return fw.module.replace(".tasks", "").replace(".", "_")  # django_tasks, django


def tasks_of(fw):
    """Framework ``fw``'s tasks, under their upstream names."""
    return types.SimpleNamespace(
        **{body.__name__: globals()[f"{body.__name__}__{suffix(fw)}"] for body in BODIES}
    )


def _define():
    for fw in FRAMEWORKS:
        task = importlib.import_module(fw.module).task
        for body in BODIES:
            name = f"{body.__name__}__{suffix(fw)}"
            func = types.FunctionType(
                body.__code__, body.__globals__, name, body.__defaults__, body.__closure__
            )
            func.__module__, func.__qualname__ = __name__, name
            globals()[name] = task(takes_context=body in TAKES_CONTEXT)(func)


_define()
