"""The operator's commands (``pgjobs/management/commands/``): ``pgjobs_status`` for people
and monitors, ``pgjobs_prune`` for retention, ``pgjobs_enqueue`` for enqueueing from
outside Python (signed, so that workers run it)."""

import datetime
import io
import json
import os
import socket
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pgjobs import JobNotFound, background, records
from pgjobs.models import Job, WorkerProcess
from pgjobs.serialization import verify_job
from tests.conftest import ROOT, VENDOR, run_jobs, wait_for
from tests.testapp import jobs
from tests.testapp.models import Event

# The jobs' rows and their SQL: RedisBackend keeps none (tests/test_redis.py covers it).
SQL_ONLY = pytest.mark.sql_store("reads pgjobs' tables")
pytestmark = SQL_ONLY


def command(name, *args):
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def manage(*args):
    """Run ``manage.py`` in a subprocess on the test database: (exit code, stdout, stderr)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PGJOBS_TEST_DB": VENDOR,
        "PGJOBS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def ago(**delta):
    return timezone.now() - datetime.timedelta(**delta)


# -- pgjobs_status ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_status_lists_live_workers_and_queues_and_fails_when_a_queue_is_stale(start_worker):
    worker = start_worker("--queue", "default", "--concurrency", "2")
    worker.wait_for_output("Stop with Ctrl-C or SIGTERM.")
    worker_id = worker.stdout.split()[2]  # "pgjobs worker <id>"
    busy = background.enqueue(jobs.wait_for_event, args=["busy", "go"])
    waiting = background.defer(jobs.noop, when=ago(minutes=2), queue="other")
    background.enqueue(jobs.noop, queue="other")
    background.defer(jobs.noop, when=datetime.timedelta(hours=1), queue="other")
    WorkerProcess.objects.create(
        id="dead-worker", hostname="gone", pid=1, started_at=ago(days=1), heartbeat_at=ago(days=1)
    )
    wait_for(lambda: busy.refresh().status == records.RUNNING, timeout=20, message="the job")

    report = json.loads(command("pgjobs_status", "--json"))
    (live,) = report["workers"]  # not the one that stopped heartbeating a day ago
    assert live["id"] == worker_id
    assert (live["hostname"], live["pid"]) == (socket.gethostname(), worker.pid)
    assert (live["queues"], live["concurrency"], live["running"]) == (["default"], 2, 1)
    queues = {q["queue"]: q for q in report["queues"]}
    assert queues["default"]["counts"] == {records.RUNNING: 1}
    assert queues["default"]["oldest_due_seconds"] is None
    assert queues["other"]["counts"] == {records.READY: 3}
    assert 110 < queues["other"]["oldest_due_seconds"] < 300  # the one due 2 minutes ago

    text = command("pgjobs_status")
    assert "Workers (1 live)" in text
    (row,) = [line for line in text.splitlines() if worker_id in line]
    assert row.split()[1:5] == [socket.gethostname()[:20], str(worker.pid), "2", "1"]
    (other,) = [line for line in text.splitlines() if line.split()[:1] == ["other"]]
    assert other.split()[1:6] == ["3", "0", "0", "0", "0"]
    assert other.split()[-2:][1] == "s"

    with pytest.raises(CommandError, match=r"stale queue\(s\): other \(1[1-9]\d s\)"):
        command("pgjobs_status", "--fail-if-stale", "60")
    command("pgjobs_status", "--fail-if-stale", "600")
    code, _, err = manage("pgjobs_status", "--fail-if-stale", "60")
    assert code == 1 and "stale queue(s): other" in err, err
    assert manage("pgjobs_status", "--fail-if-stale", "600")[0] == 0

    # Once the stale job has run, the queue is healthy again.
    waiting.cancel()
    Event.objects.create(name="go")
    assert busy.wait(timeout=20).status == records.SUCCEEDED
    assert command("pgjobs_status", "--fail-if-stale", "60")


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_live_worker_dropped_from_the_registry_registers_again(request, monkeypatch, settings):
    """A worker that could not heartbeat for a while (paused, cut off) is dropped from
    the registry by the next rescue; once it heartbeats again, it is listed again."""
    monkeypatch.setenv("PGJOBS_TEST_LEASE_SECONDS", "1")  # a heartbeat every 1/3 s
    settings.PGJOBS = {
        **settings.PGJOBS,
        "OPTIONS": {**settings.PGJOBS["OPTIONS"], "LEASE_SECONDS": 1.0},
    }
    start_worker = request.getfixturevalue("start_worker")  # now: it reads the environment
    worker = start_worker()
    worker.wait_for_output("Stop with Ctrl-C or SIGTERM.")
    worker_id = worker.stdout.split()[2]
    wait_for(lambda: WorkerProcess.objects.filter(pk=worker_id).exists(), timeout=10)
    started_at = WorkerProcess.objects.get(pk=worker_id).started_at

    def dropped():  # as a rescue does to a worker silent for three leases
        WorkerProcess.objects.filter(pk=worker_id).update(heartbeat_at=ago(minutes=5))
        background.backend.get_store().rescue()
        return not WorkerProcess.objects.filter(pk=worker_id).exists()

    wait_for(dropped, timeout=5, message="the rescue to drop the worker")

    def listed():
        return [w["id"] for w in json.loads(command("pgjobs_status", "--json"))["workers"]]

    wait_for(lambda: listed() == [worker_id], timeout=5, message="the worker listed again")
    again = WorkerProcess.objects.get(pk=worker_id)
    assert (again.pid, again.started_at) == (worker.pid, started_at)
    assert worker.returncode is None, worker.output()


@pytest.mark.django_db
def test_status_of_an_empty_site():
    assert json.loads(command("pgjobs_status", "--json")) == {"workers": [], "queues": []}
    text = command("pgjobs_status", "--fail-if-stale", "0")
    assert "Workers (0 live)" in text


# -- pgjobs_prune ------------------------------------------------------------------------------


def finished_job(status, finished_at):
    ref = background.enqueue(jobs.noop)
    Job.objects.filter(pk=ref.id).update(status=status, finished_at=finished_at)
    return ref.id


@pytest.fixture
def history():
    """Jobs finished long ago and lately, and jobs not finished at all."""
    return {
        "old succeeded": finished_job(records.SUCCEEDED, ago(days=10)),
        "old failed": finished_job(records.FAILED, ago(days=30)),
        "old cancelled": finished_job(records.CANCELLED, ago(days=8)),
        "new succeeded": finished_job(records.SUCCEEDED, ago(days=6)),
        "new failed": finished_job(records.FAILED, ago(hours=1)),
        # Not finished, whatever their timestamps say.
        "ready": finished_job(records.READY, ago(days=10)),
        "running": finished_job(records.RUNNING, ago(days=10)),
    }


def remaining(history):
    ids = set(Job.objects.values_list("id", flat=True))
    return {name for name, job_id in history.items() if job_id in ids}


@pytest.mark.django_db
def test_prune_deletes_only_finished_jobs_older_than_the_age(history):
    assert command("pgjobs_prune", "--older-than", "7d") == (
        "pgjobs_prune: deleted 3 cancelled/failed/succeeded job(s) finished more than 7d ago\n"
    )
    assert remaining(history) == {"new succeeded", "new failed", "ready", "running"}
    assert command("pgjobs_prune", "--older-than", "30m").startswith("pgjobs_prune: deleted 2 ")
    assert remaining(history) == {"ready", "running"}


@pytest.mark.django_db
def test_prune_respects_status_and_dry_run(history):
    assert command("pgjobs_prune", "--older-than", "7d", "--dry-run") == (
        "pgjobs_prune: would delete 3 cancelled/failed/succeeded job(s) finished more than 7d ago\n"
    )
    assert len(remaining(history)) == 7
    out = command("pgjobs_prune", "--older-than", "1w", "--status", "failed", "--dry-run")
    assert out.startswith("pgjobs_prune: would delete 1 failed job(s)")
    assert len(remaining(history)) == 7
    out = command(
        "pgjobs_prune", "--older-than", "168h", "--status", "failed", "--status", "cancelled"
    )
    assert out.startswith("pgjobs_prune: deleted 2 failed/cancelled job(s)")
    assert "old failed" not in remaining(history) and "old cancelled" not in remaining(history)
    assert "old succeeded" in remaining(history)


@pytest.mark.django_db
def test_prune_deletes_in_batches():
    for _ in range(5):
        finished_job(records.SUCCEEDED, ago(days=9))
    kept = finished_job(records.SUCCEEDED, ago(days=1))
    with CaptureQueriesContext(connection) as queries:
        out = command("pgjobs_prune", "--batch-size", "2")
    assert out.startswith("pgjobs_prune: deleted 5 ")
    deletes = [
        q["sql"]
        for q in queries
        if q["sql"].lstrip().upper().startswith("DELETE") and "pgjobs_attempt" not in q["sql"]
    ]
    assert len(deletes) == 3, deletes  # 2 + 2 + 1 jobs (their attempts go with them)
    assert list(Job.objects.values_list("id", flat=True)) == [kept]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "soon"], "use a number and a unit"),
        (["--older-than=-1d"], "use a number and a unit"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_prune_refuses_bad_arguments(args, message):
    finished_job(records.SUCCEEDED, ago(days=30))
    with pytest.raises(CommandError, match=message):
        command("pgjobs_prune", *args)
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_keep_succeeded_false_deletes_jobs_as_they_succeed_and_keeps_the_rest(settings):
    options = {**settings.PGJOBS["OPTIONS"], "KEEP_SUCCEEDED": False}
    settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": options}
    ok = background.enqueue_many([(jobs.add, [n, n], {}) for n in range(5)])
    bad = background.enqueue(jobs.fail_always, max_attempts=1)
    flaky = background.enqueue(jobs.fail_always, max_attempts=2)
    later = background.defer(jobs.noop, when=datetime.timedelta(hours=1))

    stats = run_jobs(concurrency=3)

    assert stats.succeeded == 5
    assert set(Job.objects.values_list("id", flat=True)) == {bad.id, flaky.id, later.id}
    assert bad.refresh().status == records.FAILED
    assert flaky.refresh().status == records.READY  # its retry is not due yet
    with pytest.raises(JobNotFound):
        ok[0].refresh()


# -- pgjobs_enqueue ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_enqueue_command_makes_a_signed_job_that_a_worker_runs():
    out = command(
        "pgjobs_enqueue", "tests.testapp.jobs.echo", "--args", '[1, "two"]', "--kwargs", '{"x": 3}'
    )
    job = Job.objects.get(pk=int(out))
    verify_job(job.func, job.args, job.kwargs, job.queue, job.signature)  # raises if not signed
    assert (job.queue, job.priority, job.status) == ("default", 0, records.READY)
    run_jobs()
    assert background.get(job.id).result == {"args": [1, "two"], "kwargs": {"x": 3}}


@pytest.mark.django_db
def test_enqueue_command_options():
    before = timezone.now()
    job_id = command(
        "pgjobs_enqueue",
        "tests.testapp.jobs.noop",
        "--queue",
        "other",
        "--priority",
        "7",
        "--max-attempts",
        "5",
        "--timeout",
        "2.5",
        "--unique-key",
        "once",
        "--delay",
        "60",
    )
    job = Job.objects.get(pk=int(job_id))
    assert (job.queue, job.priority, job.max_attempts, job.timeout) == ("other", 7, 5, 2.5)
    assert job.unique_key == "once"
    assert job.run_at >= before + datetime.timedelta(seconds=59)
    assert command("pgjobs_enqueue", "tests.testapp.jobs.noop", "--unique-key", "once") == job_id
    assert Job.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests.testapp.jobs.add", "--args", "[1,"], "--args is not valid JSON"),
        (["tests.testapp.jobs.add", "--args", '{"a": 1}'], "--args must be a JSON list"),
        (["tests.testapp.jobs.add", "--kwargs", "{a: 1}"], "--kwargs is not valid JSON"),
        (["tests.testapp.jobs.add", "--kwargs", "[1]"], "--kwargs must be a JSON object"),
        (["tests.testapp.jobs.no_such_job"], "cannot import job function"),
        (["no_such_module.job"], "cannot import job function"),
        (["tests.testapp.jobs.add", "--queue", "nope"], "unknown queue 'nope'"),
        (["tests.testapp.jobs.add", "--priority", "1000"], "priority 1000 is out of range"),
    ],
)
def test_enqueue_command_refuses_bad_input_and_writes_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        command("pgjobs_enqueue", *args)
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_enqueue_command_from_a_shell():
    code, out, err = manage("pgjobs_enqueue", "tests.testapp.jobs.add", "--args", "[20, 22]")
    assert code == 0, err
    run_jobs()
    assert background.get(int(out)).result == 42

    code, out, err = manage("pgjobs_enqueue", "tests.testapp.jobs.add", "--args", "[20,")
    assert code == 1
    assert "CommandError: --args is not valid JSON" in err
    assert Job.objects.count() == 1
