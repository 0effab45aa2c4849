"""``pgjobs.django_tasks.PgJobsBackend`` against the tasks framework's own expectations.

Each test runs once per framework available: the ``django_tasks`` package (what
Wagtail uses; both stacks) and ``django.tasks`` (Django >= 6.0). Runs in the
integration pass (``--ds=tests.wagtail_settings``), which sets ``TASKS``.
"""

import datetime
import importlib
import os
import signal

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.checks import Error
from django.test import override_settings
from django.utils import timezone

if "pgjobs.django_tasks" not in str(getattr(settings, "TASKS", "")):
    pytest.skip(
        "integration pass only: pytest --ds=tests.wagtail_settings", allow_module_level=True
    )

from pgjobs import background, records  # noqa: E402
from pgjobs.django_tasks import FRAMEWORKS, PgJobsBackend, framework_holding  # noqa: E402
from tests.conftest import (  # noqa: E402
    JOBS_IN_REDIS,
    VENDOR,
    WorkerProcess,
    run_jobs,
    status_counts,
    wait_for,
    work_until,
)
from tests.testapp import jobs  # noqa: E402
from tests.testapp.models import Event  # noqa: E402

TASK_MODULES = {
    "django_tasks": "tests.wagtailapp.tasks",
    "django.tasks": "tests.wagtailapp.dj_tasks",
}


@pytest.fixture(params=[fw.module for fw in FRAMEWORKS])
def fw(request):
    """The framework under test."""
    return next(f for f in FRAMEWORKS if f.module == request.param)


@pytest.fixture
def tasks(fw):
    """The framework's module of test tasks (``tests/wagtailapp/task_bodies.py``)."""
    return importlib.import_module(TASK_MODULES[fw.module])


def receive(signal):
    """Connect a receiver to ``signal`` for the test; returns the list it fills."""
    received = []

    def receiver(sender, task_result, **kwargs):
        received.append((sender, task_result))

    signal.connect(receiver, weak=False)
    return received, lambda: signal.disconnect(receiver)


# -- enqueue ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_enqueue_stores_a_job_the_worker_can_run(fw, tasks):
    received, disconnect = receive(fw.signals.task_enqueued)
    try:
        result = tasks.add.enqueue(1, 2)
    finally:
        disconnect()
    assert isinstance(result, fw.TaskResult)
    assert result.status == fw.TaskResultStatus.READY
    assert isinstance(result.id, str) and len(result.id) < 64
    assert result.enqueued_at is not None and result.started_at is None
    assert result.args == [1, 2] and result.kwargs == {}
    assert result.backend == "default" and result.errors == [] and result.worker_ids == []
    assert not result.is_finished
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018
    job = background.get(int(result.id))
    assert job.func == tasks.add.module_path == f"{tasks.__name__}.add"
    assert (job.queue, job.priority, job.status) == ("default", 0, "ready")
    assert received == [(PgJobsBackend, result)]
    fetched = tasks.add.get_result(result.id)
    assert fetched.status == fw.TaskResultStatus.READY and fetched.enqueued_at is not None
    assert (fetched.args, fetched.kwargs) == ([1, 2], {})  # from the store, on every store


@pytest.mark.django_db
def test_using_sets_priority_queue_and_run_after(fw, tasks):
    before = timezone.now()
    result = tasks.add.using(priority=10, queue_name="other").enqueue(1, 1)
    job = background.get(int(result.id))
    assert (job.priority, job.queue) == (10, "other")
    when = before + datetime.timedelta(hours=1)
    deferred = background.get(int(tasks.add.using(run_after=when).enqueue(2, 2).id))
    assert deferred.run_at == when
    # The docs allow a timedelta: from now.
    relative = tasks.add.using(run_after=datetime.timedelta(minutes=5)).enqueue(3, 3)
    run_at = background.get(int(relative.id)).run_at
    assert (
        before + datetime.timedelta(minutes=5)
        <= run_at
        <= timezone.now() + datetime.timedelta(minutes=5)
    )


@pytest.mark.django_db
def test_invalid_tasks_raise_the_frameworks_errors(fw, tasks):
    with pytest.raises(fw.InvalidTask):
        tasks.add.using(priority=101)
    with pytest.raises(fw.InvalidTask):
        tasks.add.using(queue_name="unknown")
    with pytest.raises(fw.InvalidTask):
        tasks.add.using(run_after=datetime.datetime(2030, 1, 1))  # naive under USE_TZ
    with pytest.raises(TypeError):  # arguments must be JSON, as the framework says
        tasks.echo.enqueue(timezone.now())
    assert status_counts() == {}


@pytest.mark.django_db
def test_enqueue_many_writes_rows_in_order(fw, tasks):
    backend = tasks.add.get_backend()
    calls = [(tasks.add, [n, n], {}) for n in range(5)]
    calls.append((tasks.add.using(priority=5), [9, 9], {}))
    calls.append((tasks.add.using(run_after=datetime.timedelta(hours=1)), [8, 8], {}))
    results = backend.enqueue_many(calls)
    assert [r.args for r in results] == [[n, n] for n in range(5)] + [[9, 9], [8, 8]]
    refs = [background.get(int(r.id)) for r in results]
    assert len({ref.id for ref in refs}) == 7
    assert [ref.priority for ref in refs] == [0] * 5 + [5, 0]
    assert refs[6].run_at > timezone.now()
    assert [backend.get_result(r.id).args for r in results] == [r.args for r in results]


def test_async_enqueue_and_get_result(fw, tasks, transactional_db):
    result = async_to_sync(tasks.double.aenqueue)(21)
    run_jobs()
    fetched = async_to_sync(tasks.double.aget_result)(result.id)
    assert fetched.status == fw.successful and fetched.return_value == 42


# -- results -------------------------------------------------------------------------------


def test_successful_result(fw, tasks, transactional_db):
    result = tasks.add.enqueue(1, 2)
    run_jobs()
    fetched = tasks.add.get_result(result.id)
    assert isinstance(fetched, fw.TaskResult)
    assert fetched.status == fw.successful and fetched.is_finished
    assert fetched.return_value == 3
    assert fetched.errors == [] and fetched.attempts == 1 and len(fetched.worker_ids) == 1
    assert fetched.enqueued_at <= fetched.started_at <= fetched.finished_at
    assert fetched.last_attempted_at == fetched.started_at
    assert fetched.task.func is tasks.add.func
    result.refresh()
    assert result.status == fw.successful and result.return_value == 3
    assert Event.objects.filter(name__startswith="task_started:add:").count() == 1
    assert Event.objects.filter(name=f"task_finished:add:{fw.successful}").count() == 1


def test_failure_keeps_the_error(fw, tasks, transactional_db):
    result = tasks.fail.enqueue("boom")
    work_until(lambda: background.get(int(result.id)).status == records.FAILED)
    result.refresh()
    assert result.status == fw.TaskResultStatus.FAILED and result.is_finished
    assert result.attempts == 3  # pgjobs retried it, then gave up
    (error,) = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "ValueError: boom" in error.traceback
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018
    # Started on every attempt, finished once: when it failed for good.
    assert Event.objects.filter(name__startswith="task_started:fail:").count() == 3
    assert list(Event.objects.filter(name__startswith="task_finished:").values_list("name")) == [
        (f"task_finished:fail:{fw.TaskResultStatus.FAILED}",)
    ]


def test_context_attempt_and_retry(fw, tasks, transactional_db):
    result = tasks.flaky.enqueue("feed")
    work_until(lambda: background.get(int(result.id)).status == records.SUCCEEDED)
    result.refresh()
    assert result.return_value == {"attempt": 2, "id": result.id}
    assert result.attempts == 2
    # The first attempt's error stays on record, as the frameworks keep every error.
    assert [e.exception_class_path for e in result.errors] == ["builtins.ConnectionError"]
    started = Event.objects.filter(name__startswith="task_started:flaky:")
    assert sorted(started.values_list("value", flat=True)) == [1, 2]


def test_a_task_whose_function_is_marked_atomic_runs_atomic(fw, tasks, transactional_db):
    if JOBS_IN_REDIS:
        with pytest.raises(fw.InvalidTask, match=r"^atomic=True: RedisBackend"):
            tasks.atomic_record.enqueue("t")
        return
    from pgjobs.models import Job

    result = tasks.atomic_record.enqueue("t")
    assert Job.objects.get(pk=int(result.id)).atomic
    run_jobs()
    assert tasks.atomic_record.get_result(result.id).status == fw.TaskResultStatus.SUCCESSFUL
    assert Event.objects.filter(name="t").count() == 1


def test_a_return_value_that_is_not_json_fails_the_task(fw, tasks, transactional_db):
    result = tasks.bad_return.enqueue()
    work_until(lambda: background.get(int(result.id)).status == records.FAILED)
    result.refresh()
    assert result.errors[-1].exception_class_path == "builtins.TypeError"


def test_cancelled_job_is_a_failed_task(fw, tasks, transactional_db):
    result = tasks.add.enqueue(1, 2)
    background.get(int(result.id)).cancel()
    result.refresh()
    assert result.status == fw.TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "pgjobs.exceptions.JobCancelled"


@pytest.mark.django_db
def test_get_result_of_unknown_ids(fw, tasks):
    backend = tasks.add.get_backend()
    with pytest.raises(fw.TaskResultDoesNotExist):
        backend.get_result("999999")
    with pytest.raises(fw.TaskResultDoesNotExist):
        backend.get_result("not-an-id")
    plain = background.enqueue(jobs.add, args=[1, 2])  # a pgjobs job, not a task
    with pytest.raises(fw.TaskResultDoesNotExist):
        backend.get_result(str(plain.id))
    other = tasks.echo.enqueue(1)
    mismatch = importlib.import_module(f"{fw.module}.exceptions").TaskResultMismatch
    with pytest.raises(mismatch):
        tasks.add.get_result(other.id)


@pytest.mark.django_db
def test_a_missing_result_is_an_error_of_every_framework():
    backend = PgJobsBackend("default", {})
    with pytest.raises(Exception) as info:
        backend.get_result("999999")
    for fw in FRAMEWORKS:
        assert isinstance(info.value, fw.TaskResultDoesNotExist)


# -- which framework an instance serves ------------------------------------------------------


def test_each_framework_gets_an_instance_that_makes_its_own_tasks(fw):
    backend = fw.backends["default"]
    assert isinstance(backend, PgJobsBackend)
    assert framework_holding(backend) is fw
    assert backend.task_class is fw.Task
    assert isinstance(importlib.import_module(TASK_MODULES[fw.module]).add, fw.Task)


def test_an_instance_no_handler_holds_serves_djangos_own_framework():
    backend = PgJobsBackend("default", {"QUEUES": ["default"]})
    assert framework_holding(backend) is None
    assert backend.task_class is FRAMEWORKS[0].Task


def test_a_thread_gets_instances_of_its_own_that_know_their_framework(fw):
    import threading

    seen = []

    def in_thread():
        backend = fw.backends["default"]
        seen.append((backend, backend.task_class))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    ((other, task_class),) = seen
    assert other is not fw.backends["default"] and task_class is fw.Task


# -- configuration ------------------------------------------------------------------------


def test_checks(fw):
    backend = PgJobsBackend("default", {"QUEUES": ["default", "nightly"], "OPTIONS": {"X": 1}})
    ids = [m.id for m in backend.check() if isinstance(m, Error)]
    assert ids == ["pgjobs.E101", "pgjobs.E103"]
    with override_settings(PGJOBS={"BACKEND": "pgjobs.backends.ImmediateBackend"}):
        assert [m.id for m in backend.check()] == ["pgjobs.E101", "pgjobs.E102"]
    assert PgJobsBackend("default", {"QUEUES": ["default"]}).check() == []


@pytest.mark.django_db
def test_manage_py_check_reports_them():
    from django.core.checks import run_checks

    tasks_setting = {
        "default": {"BACKEND": "pgjobs.django_tasks.PgJobsBackend", "OPTIONS": {"RETRIES": 2}}
    }
    with override_settings(TASKS=tasks_setting):
        assert "pgjobs.E101" in {message.id for message in run_checks()}


@pytest.mark.django_db
def test_enqueue_needs_a_storing_pgjobs_backend(fw, tasks):
    with override_settings(PGJOBS={"BACKEND": "pgjobs.backends.ImmediateBackend"}):
        with pytest.raises(fw.InvalidTask, match="DatabaseBackend"):
            tasks.add.enqueue(1, 2)


# -- a real worker process ---------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_process_runs_tasks_and_sends_the_signals(transactional_db, tmp_path):
    from django.db import connection

    results = [importlib.import_module(TASK_MODULES[fw.module]) for fw in FRAMEWORKS]
    enqueued = [(module.record.enqueue(f"ran:{module.__name__}"), module) for module in results]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.wagtail_settings",
        "PGJOBS_TEST_DB": VENDOR,
        "PGJOBS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PYTHONUNBUFFERED": "1",
    }
    worker = WorkerProcess("pgjobs_drain", [], env, tmp_path)
    try:
        assert worker.wait(timeout=60) == 0, worker.output()
    finally:
        worker.kill()
    for result, module in enqueued:
        result.refresh()
        assert result.return_value == f"ran:{module.__name__}"
        assert result.worker_ids[0].split(":")[1] == str(worker.pid)
    names = set(Event.objects.values_list("name", flat=True))
    assert {f"ran:{module.__name__}" for module in results} <= names
    for fw in FRAMEWORKS:
        assert f"task_started:record:{fw.TaskResultStatus.RUNNING}" in names
        assert f"task_finished:record:{fw.successful}" in names


@pytest.mark.slow
def test_a_task_whose_worker_was_killed_fails_with_a_readable_error_and_finishes_once(
    fw, tasks, transactional_db, tmp_path, monkeypatch
):
    """Issue 20 bug 6: a worker SIGKILLed mid-task, its lease run out, another worker
    rescues the task. Its result must be one the framework can read (the error's
    class imports, the traceback says what happened) and ``task_finished`` must be
    sent once, by the rescuing worker, as the README promises on the last failure."""
    from django.db import connection

    backend = tasks.linger.get_backend()
    monkeypatch.setitem(backend.job_options, "max_attempts", 1)
    result = tasks.linger.enqueue(f"linger:{fw.module}", 60)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.wagtail_settings",
        "PGJOBS_TEST_DB": VENDOR,
        "PGJOBS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PGJOBS_TEST_LEASE_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    victim = WorkerProcess("pgjobs_worker", [], env, tmp_path)
    try:
        wait_for(
            lambda: Event.objects.filter(name=f"linger:{fw.module}").exists(),
            timeout=30,
            message="the task to start",
        )
        victim.process.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        victim.kill()
    assert background.get(int(result.id)).status == records.RUNNING

    received, disconnect = receive(fw.signals.task_finished)
    try:
        # In-process workers, each rescuing at its start, until the lease has run out.
        work_until(lambda: background.get(int(result.id)).status == records.FAILED, timeout=20)
        run_jobs()  # another rescue: nothing is sent twice
    finally:
        disconnect()

    result.refresh()
    assert result.status == fw.TaskResultStatus.FAILED and result.is_finished
    (error,) = result.errors
    assert error.exception_class_path == "pgjobs.exceptions.WorkerLost"
    from pgjobs import WorkerLost

    assert error.exception_class is WorkerLost
    assert "stopped heartbeating while running attempt 1/1" in error.traceback
    assert f":{victim.pid}:" in error.traceback, "it names the worker that was lost"
    assert len(received) == 1, received
    ((sender, finished),) = received
    assert sender is PgJobsBackend and isinstance(finished, fw.TaskResult)
    assert (finished.id, finished.status) == (result.id, fw.TaskResultStatus.FAILED)
    assert finished.errors[0].exception_class is WorkerLost
    assert list(
        Event.objects.filter(name__startswith="task_finished:linger:").values_list("name")
    ) == [(f"task_finished:linger:{fw.TaskResultStatus.FAILED}",)]


def test_every_process_hears_of_lost_tasks_once_django_is_set_up():
    """The rescuing worker may never have run a task: ``pgjobs.django_tasks`` (whose
    receiver turns ``job_lost`` into ``task_finished``) is imported by the app's
    ``ready()`` wherever ``TASKS`` names it."""
    import subprocess
    import sys

    code = (
        "import sys, django; django.setup(); "
        "from pgjobs.signals import job_lost; "
        "print('pgjobs.django_tasks' in sys.modules, job_lost.has_listeners())"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.wagtail_settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["True", "True"], done.stderr


@pytest.mark.skipif(JOBS_IN_REDIS, reason="RedisBackend keeps no Job rows: it needs no app")
def test_check_reports_pgjobs_missing_from_installed_apps():
    """Issue 20 bug 7: ``PgJobsBackend.check()`` said nothing when ``"pgjobs"`` was
    missing, and enqueueing then failed on a table that does not exist."""
    # Not Wagtail's apps: their ready() does not run twice.
    apps = ["django.contrib.contenttypes", "django.contrib.auth"]
    backend = PgJobsBackend("default", {"QUEUES": ["default"]})
    with override_settings(INSTALLED_APPS=apps):
        assert "pgjobs.E005" in [m.id for m in backend.check()]
    assert backend.check() == []
