"""Atomic jobs: a job run inside a transaction on the jobs' database that also
records its success, so that its database writes and its completion commit
together or not at all (exactly once for those writes).

``background.enqueue(func, ..., atomic=True)`` asks it for one job;
``@atomic_job`` marks a function so that every enqueue of it asks it (a call's
own ``atomic=False`` still wins). The worker's side is ``worker/atomic.py``.
"""

from django.utils.module_loading import import_string

#: The attribute ``atomic_job`` sets on a function: True, or the database alias
#: the job's transaction must be on.
MARKER = "pgjobs_atomic"


def atomic_job(func=None, *, using=None):
    """Mark ``func`` so that every enqueue of it is atomic::

        @atomic_job
        def credit(account_id, amount): ...

        @atomic_job(using="default")   # says which database, checked at enqueue
        def credit(account_id, amount): ...

    Works under Django's ``@task`` too, either way round (the task's function is
    marked). ``using`` must be the queue's database: its transaction is where the
    job's success is recorded.
    """

    if using is not None and not (isinstance(using, str) and using):
        raise TypeError(
            f"atomic_job(using=...) takes the alias of the queue's database, like "
            f"'default', not {using!r}"
        )

    def mark(target):
        # A Django tasks Task (``@atomic_job`` above ``@task``): mark its function,
        # which the worker's task runner reads.
        inner = target.func if _is_task(target) else target
        setattr(inner, MARKER, using if using is not None else True)
        return target

    return mark if func is None else mark(func)


def atomic_marker(func):
    """What ``atomic_job`` set on ``func`` (True or an alias), else False. ``func``
    may be a dotted path, already checked by ``serialization.function_path``."""
    if isinstance(func, str):
        try:
            func = import_string(func)
        except ImportError:
            return False
    if _is_task(func):
        func = func.func
    return getattr(func, MARKER, False)


def _is_task(obj):
    # Django's tasks framework (django.tasks, or the django_tasks backport).
    return type(obj).__name__ == "Task" and callable(getattr(obj, "func", None))
