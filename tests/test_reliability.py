"""Reliability and safety (issue 4): crash recovery through leases and ``rescue()``,
heartbeats that keep a slow job with its live worker, outcomes only from the worker
that holds the lease, signatures across a ``SECRET_KEY`` rotation, unique jobs and
cancellation (``pgjobs/worker/``, ``pgjobs/stores/``, ``pgjobs/serialization.py``).

Per-job timeouts are in ``test_worker.py``; SIGKILL, cut connections and database
restarts with real processes are in ``test_faults.py``.
"""

import datetime
import os
import subprocess
import sys
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from pgjobs import background, records
from pgjobs.models import Job
from pgjobs.serialization import verify_job
from tests.conftest import ROOT, VENDOR, run_jobs, status_counts, wait_for
from tests.testapp import jobs
from tests.testapp.models import Event, Execution

ERROR = {"type": "builtins.ValueError", "message": "late", "traceback": ""}

# The jobs' rows and their SQL: RedisBackend keeps none (tests/test_redis.py covers it).
SQL_ONLY = pytest.mark.sql_store("reads pgjobs' tables")
pytestmark = SQL_ONLY


@pytest.fixture
def lease(settings):
    """``lease(seconds)``: the configured backend (and so its store) uses that lease."""

    def set_lease(seconds):
        options = {**settings.PGJOBS["OPTIONS"], "LEASE_SECONDS": seconds}
        settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": options}
        return background.backend.get_store()

    return set_lease


@pytest.fixture
def start_worker_with_lease(request, monkeypatch, lease):
    """``start = start_worker_with_lease(1.0)``: ``start_worker`` whose processes (and
    this one) use leases of that many seconds."""

    def setup(seconds):
        monkeypatch.setenv("PGJOBS_TEST_LEASE_SECONDS", str(seconds))
        lease(seconds)
        return request.getfixturevalue("start_worker")  # set up now: it reads the environment

    return setup


def lease_expired(job_id):
    def expired():
        job = Job.objects.get(pk=job_id)
        return job.lease_expires_at is not None and job.lease_expires_at < timezone.now()

    return expired


# -- crash recovery -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_dead_workers_jobs_come_back_when_its_lease_expires_with_the_attempt_counted(lease):
    store = lease(0.5)
    again = background.enqueue(jobs.record, args=["again"], max_attempts=3)
    used_up = background.enqueue(jobs.record, args=["used-up"], max_attempts=1)
    assert {job.id for job in store.claim(None, 2, "dead-worker")} == {again.id, used_up.id}

    # The lease still runs: a live worker leaves the jobs alone.
    assert run_jobs().claimed == 0
    assert status_counts() == {records.RUNNING: 2}

    wait_for(lease_expired(again.id), timeout=5, message="the lease to expire")
    stats = run_jobs()  # rescues first, then runs what came back

    assert stats.claimed == 1
    assert again.refresh().status == records.SUCCEEDED
    assert again.attempts == 2, "the dead worker's attempt counts"
    assert Execution.objects.get(key="again").attempt == 2
    used_up.refresh()
    assert (used_up.status, used_up.attempts) == (records.FAILED, 1)
    assert used_up.error["type"] == "pgjobs.exceptions.WorkerLost"
    assert "stopped sending heartbeats" in used_up.error["message"]
    assert not Execution.objects.filter(key="used-up").exists()


@pytest.mark.django_db(transaction=True)
def test_a_rescued_job_whose_cancellation_was_requested_ends_cancelled(lease):
    store = lease(0.5)
    ref = background.enqueue(jobs.record, args=["cancelled"])
    store.claim(None, 1, "dead-worker")
    assert ref.cancel() is False  # running: asked to stop, not cancelled yet
    wait_for(lease_expired(ref.id), timeout=5, message="the lease to expire")
    assert store.rescue() == 1
    ref.refresh()
    assert (ref.status, ref.attempts) == (records.CANCELLED, 1)
    assert run_jobs().claimed == 0
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_a_job_asked_to_stop_that_then_fails_ends_cancelled_not_retried():
    store = background.backend.get_store()
    ref = background.enqueue(jobs.noop, max_attempts=5)
    store.claim(None, 1, "w")
    assert ref.cancel() is False
    store.retry("w", ref.id, ERROR, 0)  # it failed before (or without) seeing the request
    ref.refresh()
    assert (ref.status, ref.attempts, ref.error) == (records.CANCELLED, 1, ERROR)
    assert ref.finished_at is not None
    assert store.claim(None, 1, "w") == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_live_worker_slower_than_its_lease_keeps_its_job(start_worker_with_lease):
    # A lease of 2 s, heartbeats every 0.67 s: one must come 1.3 s late to lose it
    # (with 1 s, one 0.7 s late would hand it back; CI's lanes have seen 0.5 s).
    start = start_worker_with_lease(2.0)
    store = background.backend.get_store()
    ref = background.enqueue(jobs.sleep_then_record, args=["slow", 5.0])
    worker = start()
    wait_for(lambda: ref.refresh().status == records.RUNNING, timeout=20, message="the job")

    # Another worker looking for dead workers' jobs, ten times a second, for the
    # whole run: the heartbeats (every third of a lease) keep this one's job.
    leases, rescued = set(), 0
    while not ref.refresh().is_finished:
        rescued += store.rescue()
        job = Job.objects.get(pk=ref.id)
        if job.lease_expires_at is not None:
            leases.add(job.lease_expires_at)
        time.sleep(0.1)

    assert rescued == 0
    assert (ref.status, ref.attempts) == (records.SUCCEEDED, 1), worker.output()
    assert Execution.objects.get(key="slow").attempt == 1
    assert not Event.objects.filter(name="duplicate").exists()
    assert len(leases) >= 4, f"the lease was extended while the job ran: {sorted(leases)}"
    assert "put back" not in worker.stderr


@pytest.mark.django_db
def test_a_worker_that_lost_its_lease_can_neither_complete_nor_change_the_job(lease):
    store = lease(20.0)
    ref = background.enqueue(jobs.add, args=[1, 2])
    other = background.enqueue(jobs.add, args=[3, 4], priority=-1)
    store.claim(None, 1, "lost")
    Job.objects.filter(pk=ref.id).update(lease_expires_at=timezone.now() - datetime.timedelta(1))
    assert store.rescue() == 1
    (claimed,) = store.claim(None, 1, "holder")
    assert claimed.id == ref.id

    # Everything the old worker may still say about the job comes too late.
    store.finish("lost", [(ref.id, "late")])
    assert store.finish_and_claim("lost", [(ref.id, "late")], None, 0) == []
    store.retry("lost", ref.id, ERROR, 0)
    store.fail("lost", ref.id, ERROR)
    store.fail("lost", ref.id, ERROR, status=records.CANCELLED)
    store.release("lost", [ref.id])
    store.heartbeat("lost", [ref.id])
    job = Job.objects.get(pk=ref.id)
    assert (job.status, job.worker_id, job.attempts) == (records.RUNNING, "holder", 2)
    assert job.error["type"] == "pgjobs.exceptions.WorkerLost"  # from the rescue, not from "lost"

    (next_job,) = store.finish_and_claim("holder", [(ref.id, 3)], None, 1)
    assert next_job.id == other.id
    assert ref.refresh().result == 3
    store.finish("lost", [(ref.id, "late")])
    store.fail("lost", ref.id, ERROR)
    assert ref.refresh().result == 3


@pytest.mark.django_db
def test_a_worker_that_lost_its_lease_cannot_delete_the_job_either(settings):
    settings.PGJOBS = {
        **settings.PGJOBS,
        "OPTIONS": {**settings.PGJOBS["OPTIONS"], "KEEP_SUCCEEDED": False},
    }
    store = background.backend.get_store()
    ref = background.enqueue(jobs.add, args=[1, 2])
    store.claim(None, 1, "lost")
    Job.objects.filter(pk=ref.id).update(lease_expires_at=timezone.now() - datetime.timedelta(1))
    store.rescue()
    store.claim(None, 1, "holder")
    store.finish("lost", [(ref.id, 3)])
    assert ref.refresh().status == records.RUNNING
    store.finish("holder", [(ref.id, 3)])
    assert not Job.objects.exists()


# -- signatures and SECRET_KEY rotation ----------------------------------------------------


@pytest.mark.django_db
def test_jobs_signed_before_a_secret_key_rotation_still_run(settings):
    settings.SECRET_KEY = "the old key"
    old = background.enqueue(jobs.add, args=[1, 2])
    settings.SECRET_KEY = "the new key"
    settings.SECRET_KEY_FALLBACKS = ["the old key"]
    new = background.enqueue(jobs.add, args=[3, 4])

    run_jobs()

    assert old.refresh().result == 3
    assert new.refresh().result == 7
    # Jobs are signed with the current key: the old one alone would refuse the new job.
    job = Job.objects.get(pk=new.id)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the old key", []
    with pytest.raises(Exception, match="signature mismatch"):
        verify_job(job.func, job.args, job.kwargs, job.queue, job.signature)


@pytest.mark.django_db
def test_jobs_signed_with_a_key_no_longer_listed_are_refused(settings):
    settings.SECRET_KEY = "the old key"
    old = background.enqueue(jobs.add, args=[1, 2])
    settings.SECRET_KEY = "the new key"
    settings.SECRET_KEY_FALLBACKS = []

    run_jobs()

    old.refresh()
    assert (old.status, old.attempts) == (records.FAILED, 1)
    assert "signature mismatch" in old.error["message"]


# -- unique jobs ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_defer_with_a_held_unique_key_returns_the_holder_and_writes_nothing():
    first = background.enqueue(jobs.add, args=[1, 2], unique_key="report")
    later = background.defer(
        jobs.noop, when=datetime.timedelta(hours=1), unique_key="report", queue="other"
    )
    assert later == first
    assert (later.status, later.func) == (records.READY, "tests.testapp.jobs.add")
    job = Job.objects.get()
    assert (job.func, job.args, job.queue) == ("tests.testapp.jobs.add", [1, 2], "default")


@pytest.mark.django_db
def test_a_finished_failed_or_cancelled_job_frees_its_unique_key():
    done = background.enqueue(jobs.add, args=[1, 2], unique_key="k")
    run_jobs()
    assert done.refresh().status == records.SUCCEEDED
    failing = background.enqueue(jobs.fail_always, unique_key="k", max_attempts=1)
    assert failing != done
    run_jobs()
    assert failing.refresh().status == records.FAILED
    cancelled = background.enqueue(jobs.noop, unique_key="k")
    assert cancelled not in (done, failing)
    assert cancelled.cancel() is True
    retried = background.enqueue(jobs.fail_always, unique_key="k", max_attempts=2)
    run_jobs()
    assert retried.refresh().status == records.READY, "waiting for its retry, still holding k"
    assert background.enqueue(jobs.noop, unique_key="k") == retried
    assert Job.objects.filter(unique_key="k").count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_of_a_committed_job_inside_atomic_leaves_the_transaction_usable():
    first = background.enqueue(jobs.noop, unique_key="k")
    with transaction.atomic():
        Event.objects.create(name="before the duplicate")
        assert background.enqueue(jobs.noop, unique_key="k") == first
        Event.objects.create(name="after the duplicate")
    assert Event.objects.count() == 2
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_processes_racing_to_enqueue_one_unique_key_make_exactly_one_job():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PGJOBS_TEST_DB": VENDOR,
        "PGJOBS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
    }
    command = [sys.executable, "-m", "django", "pgjobs_enqueue", "tests.testapp.jobs.noop"]
    processes = [
        subprocess.Popen(
            [*command, "--unique-key", "nightly"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    ids = {out.strip() for out, _ in outputs}
    assert ids == {str(Job.objects.get().id)}


@pytest.mark.django_db
def test_enqueue_many_with_a_unique_key_held_by_a_job_returns_that_job_for_each():
    holder = background.enqueue(jobs.add, args=[1, 2], unique_key="batch")
    refs = background.enqueue_many([(jobs.noop, [], {})] * 3, unique_key="batch")
    assert refs == [holder] * 3
    others = background.enqueue_many([(jobs.noop, [], {})] * 2)
    assert len({holder, *others}) == 3
    assert Job.objects.count() == 3


# -- cancellation -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_running_job_is_told_to_stop_and_is_never_killed(start_worker_with_lease):
    start = start_worker_with_lease(1.5)  # a heartbeat every half second
    polite = background.enqueue(jobs.until_cancelled, args=["polite"], max_attempts=3)
    stubborn = background.enqueue(jobs.sleep_then_record, args=["stubborn", 2.0])
    failing = background.enqueue(jobs.fail_after, args=[2.0], max_attempts=3)
    worker = start("--concurrency", "3")
    wait_for(
        lambda: status_counts() == {records.RUNNING: 3}, timeout=20, message="the jobs running"
    )

    asked = time.monotonic()
    assert polite.cancel() is False, "running: asked to stop, not cancelled yet"
    assert stubborn.cancel() is False
    assert failing.cancel() is False
    assert Job.objects.filter(cancel_requested=True).count() == 3

    polite.wait(timeout=10)
    assert time.monotonic() - asked < 5, "delivered by the next heartbeat"
    assert (polite.status, polite.attempts) == (records.CANCELLED, 1), "not retried"
    assert polite.error["type"] == "pgjobs.exceptions.JobCancelled"
    assert Event.objects.filter(name="cancelled:polite", value=1).count() == 1

    # A job that does not look at the flag is not interrupted: it runs to its end.
    assert stubborn.wait(timeout=10).result == "stubborn"
    assert Execution.objects.filter(key="stubborn").count() == 1
    # One that fails after the request is not retried: it was asked to stop.
    failing.wait(timeout=10)
    assert (failing.status, failing.attempts) == (records.CANCELLED, 1)
    assert failing.error["message"] == "gave up"
    assert worker.returncode is None, worker.output()
