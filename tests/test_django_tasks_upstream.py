"""The backend-behaviour tests of Django's ``tests/tasks``, django-tasks' ``tests`` and
django-tasks-db's ``tests/tests.py``, ported to ``PgJobsBackend`` with a real worker.

Each test names the upstream test it comes from and keeps its assertions; each runs
once per tasks framework importable here (``django.tasks`` on Django >= 6.0, and the
``django_tasks`` package). The tasks are ``tests/wagtailapp/upstream_tasks.py``.
Runs in the integration pass (``--ds=tests.wagtail_settings``).

Adaptations, where pgjobs works differently on purpose or the upstream test reads
the upstream backend's own tables:

- Result ids are the job's id (an integer, as a string), not a UUID4: the
  ``uuid.UUID(result.id).version == 4`` assertions check for a decimal string
  instead, and "missing" ids are ids no job has (a UUID string among them).
- Upstream tests update the ``DBTaskResult`` row by hand to play a worker (refresh
  tests) or make a task due (``test_run_after``); here a real worker (``run_jobs``, an
  in-process pgjobs ``Worker``, or a ``pgjobs_worker``/``pgjobs_drain`` process)
  runs the task, and ``run_at``/``status``/``finished_at`` are set on the ``Job``.
- ``assertNumQueries`` counts are django-tasks-db's own SQL and are left out; so are
  the log and stdout assertions (pgjobs logs under ``pgjobs``, with its own words).
- pgjobs retries a failing task (``MAX_ATTEMPTS``, 3 by default) where django-tasks-db
  fails it at once: tests that expect one failed attempt set ``MAX_ATTEMPTS`` to 1
  in the ``TASKS`` entry's ``OPTIONS`` (``one_attempt()``).
- Queues: ``db_worker --queue-name Q`` is ``run_jobs(queues=[Q])``; ``"*"`` is every
  queue (no ``queues``); ``queue-1`` is the test settings' ``other``.
- ``test_run_after_priority`` compares the order a single-slot worker (no prefetch)
  started the due tasks in, not the order of ``DBTaskResult.objects.ready()``.
- ``test_invalid_task_path``, ``test_missing_task_path``, ``test_task_import_string``:
  the hand-written row fails in the worker, as upstream; pgjobs refuses it before
  importing anything, since it is not signed. Reading such a row as a task result
  raises ``TaskResultDoesNotExist`` (``test_get_result_of_a_job_that_is_not_a_task``),
  where django-tasks-db raises ``SuspiciousOperation`` from ``DBTaskResult.task``.
- ``test_max_tasks``: the worker's ``max_jobs`` (no prefetch, so no more are claimed).
- Pruning is ``pgjobs_prune --older-than AGE`` (``min_age_days=N`` is ``Nd``);
  ``test_doesnt_prune_new_tasks`` and ``test_doesnt_prune_running_tasks`` are one
  parametrized test.
- ``test_database_backend_app_missing``: the hint names ``pgjobs``, not
  ``django_tasks_db``; ``INSTALLED_APPS`` keeps ``contenttypes`` and ``auth`` (the
  test database needs them; Wagtail's apps cannot be loaded twice).
- ``test_complex_return_value``: the traceback has the framework's own
  ``normalize_json`` error ("Unsupported type"), which is what pgjobs raises; the
  django-tasks-db wording ("is not JSON serializable") comes from its own encoder.
- Django's ``TaskTestCase`` tests run there against its ``DummyBackend``; the ones
  about what a backend stores and returns run here against ``PgJobsBackend``
  (``test_refresh_result`` is ``test_refresh_ready_result``, ``test_get_result`` is
  ``test_task_get_result``). ``test_pickle_task_result`` is skipped for django-tasks,
  whose ``Task`` cannot be pickled.
- Django's ``ImmediateBackendTestCase.test_catches_exception`` is part of
  ``test_failing_task``: through a worker, the task fails and the worker goes on.
- Worker processes: ``db_worker --batch`` is ``pgjobs_drain``; a worker is sent its
  signal once it has printed its banner (upstream sleeps a second after starting it),
  and ``test_interrupt_no_tasks`` allows 5 s to exit, not 0.5 s (the interpreter and
  Django start in the subprocess first). ``test_system_exit_task`` and
  ``test_keyboard_interrupt_task`` also check that a task enqueued next still runs.
  ``test_multiple_workers`` leaves out the output counts.
- ``test_repeat_ctrl_c``: a second signal makes ``pgjobs_worker`` exit at once with
  status 1 (django-tasks-db: 0) and leaves the task ``RUNNING`` until its lease runs
  out and a worker puts it back (django-tasks-db: ``FAILED`` with ``SystemExit``).

Not ported: tests of the Dummy and Immediate backends' own behaviour (results kept in
memory, running in-band, their log lines), of ``DBTaskResult`` and its manager
(locking helpers, index plans, the priority constraint, ``id_function``), of
``db_worker``'s and ``prune_db_task_results``' command-line validation, and
``test_kill`` (what SIGKILL leaves is tested in ``tests/test_reliability.py``).
"""

import dataclasses
import datetime
import importlib
import io
import os
import pickle
import signal
import time
from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import override_settings
from django.utils import timezone

if "pgjobs.django_tasks" not in str(getattr(settings, "TASKS", "")):
    pytest.skip(
        "integration pass only: pytest --ds=tests.wagtail_settings", allow_module_level=True
    )

from pgjobs import records  # noqa: E402
from pgjobs.django_tasks import FRAMEWORKS, PgJobsBackend  # noqa: E402
from pgjobs.models import Job  # noqa: E402
from tests.conftest import (  # noqa: E402
    JOBS_IN_REDIS,
    VENDOR,
    WorkerProcess,
    job_row_locked,
    run_jobs,
    wait_for,
)
from tests.wagtailapp.upstream_tasks import tasks_of  # noqa: E402

SQL_ONLY = pytest.mark.skipif(JOBS_IN_REDIS, reason="reads the Job rows")
TASKS_SETTING = settings.TASKS


@pytest.fixture(params=[fw.module for fw in FRAMEWORKS])
def fw(request):
    return next(f for f in FRAMEWORKS if f.module == request.param)


@pytest.fixture
def t(fw):
    """The framework's upstream test tasks."""
    return tasks_of(fw)


def backend_of(fw):
    return importlib.import_module(fw.module).task_backends["default"]


def one_attempt():
    """``TASKS`` with failing tasks failed at once, as django-tasks-db does."""
    return override_settings(
        TASKS={
            "default": {**TASKS_SETTING["default"], "OPTIONS": {"MAX_ATTEMPTS": 1}},
        }
    )


def capture_enqueued(fw):
    received = []

    def receiver(sender, task_result, **kwargs):
        received.append((sender, task_result))

    fw.signals.task_enqueued.connect(receiver, weak=False, dispatch_uid="upstream_enqueued")
    return received, lambda: fw.signals.task_enqueued.disconnect(dispatch_uid="upstream_enqueued")


def assert_is_an_id(result_id):
    assert isinstance(result_id, str) and result_id.isdigit()


def ready_count():
    return Job.objects.filter(status=records.READY).count()


def assert_finished_in_order(result):
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at


# -- django-tasks-db: DatabaseBackendTestCase ------------------------------------------------


def test_using_correct_backend(fw):
    # django-tasks-db DatabaseBackendTestCase.test_using_correct_backend
    module = importlib.import_module(fw.module)
    assert module.default_task_backend == module.task_backends["default"]
    assert isinstance(module.task_backends["default"], PgJobsBackend)
    assert module.default_task_backend.alias == "default"
    assert module.default_task_backend.options == {}


def enqueue_sync(task):
    return task.enqueue(1, two=3), [1], {"two": 3}


def enqueue_async(task):
    return async_to_sync(task.aenqueue)(), [], {}


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["noop_task", "noop_task_async"])
@pytest.mark.parametrize("enqueue", [enqueue_sync, enqueue_async])
def test_enqueue_task(fw, t, name, enqueue):
    # django-tasks-db DatabaseBackendTestCase.test_enqueue_task (enqueue_sync) and
    # test_enqueue_task_async (enqueue_async)
    task = getattr(t, name)
    received, disconnect = capture_enqueued(fw)
    try:
        result, args, kwargs = enqueue(task)
    finally:
        disconnect()
    assert_is_an_id(result.id)
    assert result.status == fw.TaskResultStatus.READY
    assert not result.is_finished
    assert result.started_at is None
    assert result.last_attempted_at is None
    assert result.finished_at is None
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018
    assert result.task == task
    assert result.args == args
    assert result.kwargs == kwargs
    assert result.attempts == 0
    assert received == [(PgJobsBackend, result)]


@SQL_ONLY
@pytest.mark.django_db
def test_get_result(fw, t):
    # django-tasks-db DatabaseBackendTestCase.test_get_result
    backend = backend_of(fw)
    result = backend.enqueue(t.noop_task, [], {})
    new_result = backend.get_result(result.id)
    assert result == new_result


@SQL_ONLY
@pytest.mark.django_db
def test_get_result_async(fw, t):
    # django-tasks-db DatabaseBackendTestCase.test_get_result_async
    backend = backend_of(fw)
    result = async_to_sync(backend.aenqueue)(t.noop_task, [], {})
    new_result = async_to_sync(backend.aget_result)(result.id)
    assert result == new_result


@pytest.mark.parametrize("is_async", [False, True])
def test_refresh_result(fw, t, is_async, transactional_db):
    # django-tasks-db DatabaseBackendTestCase.test_refresh_result and
    # test_refresh_result_async (a worker runs the task)
    backend = backend_of(fw)
    if is_async:
        result = async_to_sync(backend.aenqueue)(t.calculate_meaning_of_life, (), {})
    else:
        result = backend.enqueue(t.calculate_meaning_of_life, (), {})
    run_jobs()
    assert result.status == fw.TaskResultStatus.READY
    assert not result.is_finished
    assert result.started_at is None
    assert result.last_attempted_at is None
    assert result.finished_at is None
    assert result.attempts == 0

    if is_async:
        async_to_sync(result.arefresh)()
    else:
        result.refresh()

    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.status == fw.successful
    assert result.is_finished
    assert result.return_value == 42
    assert result.attempts == 1


@pytest.mark.django_db
@pytest.mark.parametrize("missing", ["999999999", "123", "e0a4c3b0-4a6b-4f1d-9a53-0c4a1e2b3c4d"])
def test_get_missing_result(fw, missing):
    # django-tasks-db DatabaseBackendTestCase.test_get_missing_result, test_invalid_uuid
    with pytest.raises(fw.TaskResultDoesNotExist):
        backend_of(fw).get_result(missing)
    with pytest.raises(fw.TaskResultDoesNotExist):  # test_async_get_missing_result
        async_to_sync(backend_of(fw).aget_result)(missing)


def test_check(fw):
    # django-tasks-db DatabaseBackendTestCase.test_check
    errors = list(backend_of(fw).check())
    assert len(errors) == 0, errors


@SQL_ONLY
def test_database_backend_app_missing(fw):
    # django-tasks-db DatabaseBackendTestCase.test_database_backend_app_missing
    with override_settings(INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"]):
        errors = list(backend_of(fw).check())
    assert len(errors) == 1
    assert "pgjobs" in errors[0].hint


@SQL_ONLY
@pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite locks the table during the transaction"
)
def test_doesnt_wait_until_transaction_commit(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendTestCase.test_doesnt_wait_until_transaction_commit
    def count_in_new_connection():
        new_connection = connections.create_connection("default")
        try:
            with new_connection.cursor() as cursor:
                cursor.execute(str(Job.objects.values("id").query))
                return len(cursor.fetchall())
        finally:
            new_connection.close()

    with transaction.atomic():
        result = t.noop_task.enqueue()
        assert result.enqueued_at is not None
        assert Job.objects.count() == 1
        assert count_in_new_connection() == 0
    assert count_in_new_connection() == 1


@pytest.mark.django_db
def test_validate_on_enqueue(fw):
    # django-tasks-db DatabaseBackendTestCase.test_validate_on_enqueue
    # (and Django's ImmediateBackendTestCase.test_validate_on_enqueue)
    unknown_queue = {"default": {**TASKS_SETTING["default"], "QUEUES": ["unknown_queue"]}}
    with override_settings(TASKS=unknown_queue):
        task = tasks_of(fw).noop_task.using(queue_name="unknown_queue")
    with pytest.raises(fw.InvalidTask, match="Queue 'unknown_queue' is not valid for backend"):
        task.enqueue()
    # test_validate_on_aenqueue
    with pytest.raises(fw.InvalidTask, match="Queue 'unknown_queue' is not valid for backend"):
        async_to_sync(task.aenqueue)()


# -- django-tasks-db: DatabaseBackendWorkerTestCase ------------------------------------------


@SQL_ONLY
@pytest.mark.parametrize("name", ["noop_task", "noop_task_async"])
def test_run_enqueued_task(fw, t, name, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_run_enqueued_task (upstream
    # leaves the async task out; pgjobs runs it)
    result = getattr(t, name).enqueue()
    assert ready_count() == 1
    assert result.status == fw.TaskResultStatus.READY

    run_jobs()

    assert result.status == fw.TaskResultStatus.READY
    assert result.attempts == 0
    result.refresh()
    assert_finished_in_order(result)
    assert result.status == fw.successful
    assert result.attempts == 1
    assert ready_count() == 0


@SQL_ONLY
def test_batch_processes_all_tasks(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_batch_processes_all_tasks
    with one_attempt():
        t = tasks_of(fw)
        for _ in range(3):
            t.noop_task.enqueue()
        t.failing_task_value_error.enqueue()
        assert ready_count() == 4
        run_jobs()
    assert ready_count() == 0
    assert Job.objects.filter(status=records.SUCCEEDED).count() == 3
    assert Job.objects.filter(status=records.FAILED).count() == 1


@SQL_ONLY
def test_doesnt_process_different_queue(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_doesnt_process_different_queue
    result = t.noop_task.using(queue_name="other").enqueue()
    assert ready_count() == 1
    run_jobs(queues=["default"])
    assert ready_count() == 1
    run_jobs(queues=[result.task.queue_name])
    assert ready_count() == 0


@SQL_ONLY
def test_process_all_queues(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_process_all_queues
    t.noop_task.using(queue_name="other").enqueue()
    assert ready_count() == 1
    run_jobs(queues=["default"])
    assert ready_count() == 1
    run_jobs()  # "*": every queue
    assert ready_count() == 0


def run_one_attempt(fw, name):
    with one_attempt():
        result = getattr(tasks_of(fw), name).enqueue()
        run_jobs()
    assert result.status == fw.TaskResultStatus.READY
    result.refresh()
    assert_finished_in_order(result)
    assert result.status == fw.TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    return result


@SQL_ONLY
@pytest.mark.parametrize(
    ("name", "exception", "message"),
    [
        ("failing_task_value_error", ValueError, "This task failed due to ValueError"),
        ("failing_task_system_exit", SystemExit, "This task failed due to SystemExit"),
    ],
)
def test_failing_task(fw, name, exception, message, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_failing_task (ValueError), and
    # Django ImmediateBackendTestCase.test_catches_exception (both), through a worker
    result = run_one_attempt(fw, name)
    assert result.errors[0].exception_class is exception
    traceback = result.errors[0].traceback
    assert traceback and traceback.endswith(f"{exception.__name__}: {message}\n"), traceback
    assert ready_count() == 0


@SQL_ONLY
def test_complex_exception(fw, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_complex_exception
    result = run_one_attempt(fw, "complex_exception")
    assert result.errors[0].exception_class is ValueError
    assert 'ValueError(ValueError("This task failed"))' in result.errors[0].traceback
    assert ready_count() == 0


@SQL_ONLY
def test_complex_return_value(fw, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_complex_return_value
    result = run_one_attempt(fw, "complex_return_value")
    assert result._return_value is None
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


@SQL_ONLY
def test_run_after(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_run_after
    result = t.noop_task.using(run_after=timezone.now() + datetime.timedelta(hours=10)).enqueue()
    assert Job.objects.count() == 1
    run_jobs()
    assert Job.objects.count() == 1
    assert Job.objects.filter(status=records.SUCCEEDED).count() == 0
    Job.objects.filter(id=result.id).update(run_at=timezone.now())
    run_jobs()
    assert ready_count() == 0
    assert Job.objects.filter(status=records.SUCCEEDED).count() == 1


@SQL_ONLY
def test_run_after_priority(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_run_after_priority: the order
    # is the order a single-slot worker starts them in, not a model manager's
    now = timezone.now()
    hours = datetime.timedelta(hours=1)
    old_task = t.noop_task.using(priority=20, run_after=now - 2 * hours).enqueue()
    very_old_task = t.noop_task.using(priority=20, run_after=now - 10 * hours).enqueue()
    far_future_result = t.noop_task.using(run_after=now + 10 * hours).enqueue()
    high_priority_far_future_result = t.noop_task.using(
        priority=10, run_after=now + 10 * hours
    ).enqueue()
    future_result = t.noop_task.using(run_after=now + 2 * hours).enqueue()
    high_priority_result = t.noop_task.using(priority=10).enqueue()
    low_priority_result = t.noop_task.using(priority=2).enqueue()
    lower_priority_result = t.noop_task.using(priority=-2).enqueue()

    run_jobs(prefetch=0)

    results = [
        old_task,
        very_old_task,
        far_future_result,
        high_priority_far_future_result,
        future_result,
        high_priority_result,
        low_priority_result,
        lower_priority_result,
    ]
    for result in results:
        result.refresh()
    ran = sorted((r for r in results if r.status == fw.successful), key=lambda r: r.started_at)
    assert [r.id for r in ran] == [
        r.id
        for r in [
            very_old_task,
            old_task,
            high_priority_result,
            low_priority_result,
            lower_priority_result,
        ]
    ]


def hand_made_job(func, args=()):
    """A job row written by hand, not by pgjobs (so not signed)."""
    return Job.objects.create(func=func, args=list(args), kwargs={}, queue="default")


@SQL_ONLY
@pytest.mark.django_db
def test_get_result_of_a_job_that_is_not_a_task(fw):
    # django-tasks-db DatabaseBackendTestCase.test_invalid_task_path: upstream raises
    # SuspiciousOperation reading the row's task; pgjobs has no such result
    job = hand_made_job("subprocess.check_output", [["exit", "1"]])
    with pytest.raises(fw.TaskResultDoesNotExist):
        backend_of(fw).get_result(str(job.id))


@SQL_ONLY
@pytest.mark.parametrize(
    "func",
    [
        "subprocess.check_output",  # test_invalid_task_path
        "missing.func",  # test_missing_task_path
        "tests.wagtailapp.upstream_tasks.some_test",  # test_task_import_string
    ],
)
def test_rows_that_are_not_tasks_fail(fw, func, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_invalid_task_path,
    # test_missing_task_path, test_task_import_string: the worker fails them. pgjobs
    # refuses such a row before importing anything: it is not signed.
    job = hand_made_job(func, [["exit", "1"]] if func.startswith("subprocess") else [])
    run_jobs()
    job.refresh_from_db()
    assert job.status == records.FAILED


@SQL_ONLY
def test_worker_doesnt_exit(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_worker_doesnt_exit
    with one_attempt():
        result = tasks_of(fw).exit_task.enqueue()
        run_jobs()
    result.refresh()
    assert result.status == fw.TaskResultStatus.FAILED


@SQL_ONLY
@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite locks the entire database")
def test_worker_with_locked_rows(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_worker_with_locked_rows (the
    # row is locked by conftest.job_row_locked, in another connection)
    result_1 = t.noop_task.enqueue()
    with job_row_locked(int(result_1.id)):
        result_2 = t.noop_task.enqueue()
        run_jobs()
    result_1.refresh()
    result_2.refresh()
    assert result_1.status == fw.TaskResultStatus.READY
    assert result_2.status == fw.successful


@SQL_ONLY
def test_max_tasks(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendWorkerTestCase.test_max_tasks (the worker's
    # max_jobs; its output is not asserted)
    results = [t.noop_task.enqueue() for _ in range(5)]
    run_jobs(max_jobs=2, prefetch=0)
    for result in results:
        result.refresh()
    statuses = Counter(result.status for result in results)
    assert statuses[fw.successful] == 2
    assert statuses[fw.TaskResultStatus.READY] == 3


# -- django-tasks-db: DatabaseBackendPruneTaskResultsTestCase (pgjobs_prune) ------------------


def finish_by_hand(status, days_ago=0):
    Job.objects.filter(status=records.READY).update(
        status=status, finished_at=timezone.now() - datetime.timedelta(days=days_ago)
    )


@SQL_ONLY
def test_prunes_tasks(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendPruneTaskResultsTestCase.test_prunes_tasks
    result = t.noop_task.enqueue()
    finish_by_hand(records.SUCCEEDED)
    call_command("pgjobs_prune", older_than="0s", stdout=io.StringIO())
    assert Job.objects.count() == 0
    with pytest.raises(fw.TaskResultDoesNotExist):
        result.refresh()


@SQL_ONLY
@pytest.mark.parametrize("status", [records.READY, records.RUNNING])
def test_doesnt_prune_unfinished_tasks(fw, t, status, transactional_db):
    # django-tasks-db DatabaseBackendPruneTaskResultsTestCase.test_doesnt_prune_new_tasks,
    # test_doesnt_prune_running_tasks
    result = t.noop_task.enqueue()
    Job.objects.update(status=status)
    call_command("pgjobs_prune", older_than="0s", stdout=io.StringIO())
    assert Job.objects.filter(status=status).count() == 1
    result.refresh()


@SQL_ONLY
def test_min_age(fw, t, transactional_db):
    # django-tasks-db DatabaseBackendPruneTaskResultsTestCase.test_min_age
    one_day_result = t.noop_task.enqueue()
    finish_by_hand(records.SUCCEEDED, days_ago=1)
    three_day_result = t.noop_task.enqueue()
    finish_by_hand(records.SUCCEEDED, days_ago=3)
    assert Job.objects.filter(status=records.SUCCEEDED).count() == 2
    call_command("pgjobs_prune", older_than="7d", stdout=io.StringIO())
    assert Job.objects.filter(status=records.SUCCEEDED).count() == 2
    call_command("pgjobs_prune", older_than="2d", stdout=io.StringIO())
    assert Job.objects.filter(status=records.SUCCEEDED).count() == 1
    one_day_result.refresh()
    with pytest.raises(fw.TaskResultDoesNotExist):
        three_day_result.refresh()


# -- django-tasks-db: DatabaseWorkerProcessTestCase (a pgjobs_worker process) -----------------

WORKER_STARTUP_TIME = 1


def start_worker(tmp_path, *args, command="pgjobs_worker"):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.wagtail_settings",
        "PGJOBS_TEST_DB": VENDOR,
        "PGJOBS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PYTHONUNBUFFERED": "1",
    }
    if command == "pgjobs_worker":
        args = ["--poll-interval", "0.1", *args]
    return WorkerProcess(command, list(args), env, tmp_path)


def wait_until_running(result, fw):
    def running():
        result.refresh()
        return result.status == fw.TaskResultStatus.RUNNING

    wait_for(running, timeout=30)


IN_MEMORY = connection.vendor == "sqlite" and connection.is_in_memory_db()
PROCESS = [
    SQL_ONLY,
    pytest.mark.slow,
    pytest.mark.skipif(IN_MEMORY, reason="Tests cannot run on in-memory DB"),
]


@pytest.mark.parametrize("name", ["failing_task_system_exit", "failing_task_keyboard_interrupt"])
def test_exiting_tasks_in_a_worker_process(fw, name, transactional_db, tmp_path):
    # django-tasks-db DatabaseWorkerProcessTestCase.test_run_subprocess,
    # test_system_exit_task, test_keyboard_interrupt_task (pgjobs_drain is the
    # worker's --batch)
    exception = SystemExit if "system_exit" in name else KeyboardInterrupt
    with one_attempt():
        result = getattr(tasks_of(fw), name).enqueue()
        ok = tasks_of(fw).noop_task.enqueue()
    process = start_worker(tmp_path, command="pgjobs_drain")
    try:
        assert process.wait(timeout=30) == 0, process.output()
    finally:
        process.kill()
    assert ok.status == fw.TaskResultStatus.READY
    ok.refresh()
    assert ok.status == fw.successful
    result.refresh()
    assert result.status == fw.TaskResultStatus.FAILED
    assert result.errors[0].exception_class is exception


def test_interrupt_no_tasks(fw, transactional_db, tmp_path):
    # django-tasks-db DatabaseWorkerProcessTestCase.test_interrupt_no_tasks
    process = start_worker(tmp_path)
    try:
        process.wait_for_output("Stop with Ctrl-C", timeout=30)  # started
        time.sleep(WORKER_STARTUP_TIME)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0, process.output()
    finally:
        process.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_signals(fw, t, sig, transactional_db, tmp_path):
    # django-tasks-db DatabaseWorkerProcessTestCase.test_interrupt_signals: the running
    # task finishes, then the worker exits with 0
    result = t.sleep_for.enqueue(2)
    assert result.worker_ids == []
    # No prefetch: a job claimed beyond the free slots is RUNNING on record before it
    # starts, and a stopping worker hands such jobs back instead of running them.
    process = start_worker(tmp_path, "--prefetch", "0", "-v", "2")
    try:
        wait_until_running(result, fw)
        assert result.worker_ids != []
        # The task is under way (upstream sleeps 1 s after the start; a pause of 0.5 s
        # after the claim can be too short on a busy machine, and the job is handed back).
        process.wait_for_output("started (attempt", stream="stderr")
        process.send_signal(sig)
        assert process.wait(timeout=10) == 0, process.output()
    finally:
        process.kill()
    result.refresh()
    assert result.status == fw.successful


def test_repeat_ctrl_c(fw, t, transactional_db, tmp_path):
    # django-tasks-db DatabaseWorkerProcessTestCase.test_repeat_ctrl_c. pgjobs differs
    # on purpose: a second signal exits at once with 1 (not 0), leaving the task
    # RUNNING until its lease runs out and a worker puts it back (not FAILED with
    # SystemExit): the job was not at fault.
    result = t.hang.enqueue()
    process = start_worker(tmp_path, "--grace-period", "60", "--prefetch", "0", "-v", "2")
    try:
        wait_until_running(result, fw)
        process.wait_for_output("started (attempt", stream="stderr")  # as in test_interrupt_signals
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert process.returncode is None
        result.refresh()
        assert result.status == fw.TaskResultStatus.RUNNING
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=10)
    finally:
        process.kill()
    assert returncode == 1, process.output()
    result.refresh()
    assert result.status == fw.TaskResultStatus.RUNNING


def test_multiple_workers(fw, t, transactional_db, tmp_path):
    # django-tasks-db DatabaseWorkerProcessTestCase.test_multiple_workers (the output
    # assertions are left out: pgjobs logs differently)
    results = [t.sleep_for.enqueue(0.1) for _ in range(10)]
    processes = [start_worker(tmp_path, command="pgjobs_drain") for _ in range(3)]
    try:
        for process in processes:
            assert process.wait(timeout=60) is not None
    finally:
        for process in processes:
            process.kill()
    for result in results:
        result.refresh()
        assert result.status == fw.successful
    ran_by = {result.worker_ids[0] for result in results}
    assert len(ran_by) >= 1


for _test in (
    test_exiting_tasks_in_a_worker_process,
    test_interrupt_no_tasks,
    test_interrupt_signals,
    test_repeat_ctrl_c,
    test_multiple_workers,
):
    for _mark in PROCESS:
        _test = _mark(_test)
    globals()[_test.__name__] = _test


# -- Django: TaskTestCase (DummyBackend there, PgJobsBackend here) ---------------------------


@pytest.mark.django_db
def test_enqueue_with_invalid_argument(fw, t):
    # Django TaskTestCase.test_enqueue_with_invalid_argument, test_aenqueue_with_invalid_argument
    with pytest.raises(TypeError, match="Unsupported type"):
        t.noop_task.enqueue(datetime.datetime.now())
    with pytest.raises(TypeError, match="Unsupported type"):
        async_to_sync(t.noop_task.aenqueue)(datetime.datetime.now())
    if not JOBS_IN_REDIS:
        assert Job.objects.count() == 0


@SQL_ONLY
@pytest.mark.django_db
def test_refresh_ready_result(fw, t):
    # Django TaskTestCase.test_refresh_result: refreshing a result nothing has run
    # changes nothing
    result = async_to_sync(t.noop_task.aenqueue)()
    original_result = dataclasses.asdict(result)
    result.refresh()
    assert dataclasses.asdict(result) == original_result
    async_to_sync(result.arefresh)()
    assert dataclasses.asdict(result) == original_result


@SQL_ONLY
@pytest.mark.django_db
def test_task_get_result(fw, t):
    # Django TaskTestCase.test_get_result, test_get_result_async
    result = backend_of(fw).enqueue(t.noop_task, (), {})
    assert t.noop_task.get_result(result.id) == result
    result = async_to_sync(backend_of(fw).aenqueue)(t.noop_task, (), {})
    assert async_to_sync(t.noop_task.aget_result)(result.id) == result


@pytest.mark.django_db
def test_task_get_missing_result(fw, t):
    # Django TaskTestCase.test_get_missing_result
    with pytest.raises(fw.TaskResultDoesNotExist):
        t.noop_task.get_result("123")
    with pytest.raises(fw.TaskResultDoesNotExist):
        async_to_sync(t.noop_task.aget_result)("123")


@SQL_ONLY
@pytest.mark.django_db
def test_get_incorrect_result(fw, t):
    # Django TaskTestCase.test_get_incorrect_result, test_get_incorrect_result_async
    mismatch = importlib.import_module(f"{fw.module}.exceptions").TaskResultMismatch
    result = backend_of(fw).enqueue(t.noop_task_async, (), {})
    with pytest.raises(mismatch, match="Task does not match"):
        t.noop_task.get_result(result.id)
    with pytest.raises(mismatch, match="Task does not match"):
        async_to_sync(t.noop_task.aget_result)(result.id)


@pytest.mark.django_db
def test_pickle_task_result(fw, t):
    # Django TaskTestCase.test_pickle_task_result
    if not hasattr(fw.Task, "_reconstruct"):
        pytest.skip("django-tasks' Task cannot be pickled (Django's has Task._reconstruct)")
    result = t.noop_task.enqueue()
    unpickled_result = pickle.loads(pickle.dumps(result))
    assert unpickled_result == result


# -- Django: ImmediateBackendTestCase, through a worker ---------------------------------------


def test_result(fw, t, transactional_db):
    # Django ImmediateBackendTestCase.test_result
    result = backend_of(fw).enqueue(t.calculate_meaning_of_life, [], {})
    run_jobs()
    result.refresh()
    assert result.status == fw.successful
    assert result.return_value == 42


def test_takes_context(fw, t, transactional_db):
    # Django ImmediateBackendTestCase.test_takes_context
    result = t.get_task_id.enqueue()
    run_jobs()
    result.refresh()
    assert result.return_value == result.id


def test_context(fw, t, transactional_db):
    # Django ImmediateBackendTestCase.test_context
    result = t.check_context.enqueue(1)
    run_jobs()
    result.refresh()
    assert result.status == fw.successful
