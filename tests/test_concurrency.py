"""Real worker processes against the real database: exactly-once under contention,
graceful shutdown on SIGTERM, and LISTEN wake-ups (``pgjobs/worker/`` with the
``pgjobs_worker`` command)."""

import signal
import time

import pytest
from django.db import connection

from pgjobs import background, records
from pgjobs.handler import get_backend
from pgjobs.models import Job
from pgjobs.stores.postgres import PostgresStore
from tests.conftest import VENDOR, status_counts, unfinished_jobs, wait_for
from tests.testapp import jobs
from tests.testapp.models import Event, Execution

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

JOBS = 5_000
PROCESSES = 4
CONCURRENCY = 4


def started_jobs(names=False):
    """Jobs a slot has started (they log ``start:<key>``), as a count or names."""
    events = Event.objects.filter(name__startswith="start:")
    return set(events.values_list("name", flat=True)) if names else events.count()


def test_every_job_runs_exactly_once_across_competing_workers(start_worker):
    refs = background.enqueue_many([(jobs.record, [f"job-{n}"], {}) for n in range(JOBS)])
    assert len(refs) == JOBS
    started = time.monotonic()
    workers = [
        start_worker("--concurrency", str(CONCURRENCY), persistent_connections=True)
        for _ in range(PROCESSES)
    ]

    wait_for(lambda: unfinished_jobs() == 0, timeout=90, interval=0.2, message="the queue to empty")
    took = time.monotonic() - started

    assert status_counts() == {records.SUCCEEDED: JOBS}
    # Execution.key is unique: a second run of any job would have failed it.
    assert Execution.objects.count() == JOBS
    assert not Event.objects.filter(name="duplicate").exists()
    assert Job.objects.filter(attempts=1).count() == JOBS, "no job was retried or run twice"
    ran_by = set(Job.objects.values_list("worker_id", flat=True).distinct())
    assert len(ran_by) > 1, "the work should be shared between processes"
    for worker in workers:
        worker.wait_until_started()  # the others may have run every job before it was up
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait() == 0, worker.output()
        assert "Traceback" not in worker.stderr, worker.output()
    print(f"{JOBS} jobs, {PROCESSES} processes x {CONCURRENCY}: {took:.1f} s incl. startup")


def test_sigterm_lets_running_jobs_finish_and_puts_unstarted_ones_back(start_worker):
    refs = background.enqueue_many([(jobs.record_once, [f"job-{n}", 1.0], {}) for n in range(6)])
    keys = {ref.id: f"job-{n}" for n, ref in enumerate(refs)}
    worker = start_worker("--concurrency", "2", "--grace-period", "20")
    # Started by a slot, not only claimed: a claimed job still queued for a slot is
    # put back at SIGTERM, as it should be.
    wait_for(lambda: started_jobs() == 2, timeout=20, message="two jobs started")
    started = started_jobs(names=True)
    running = {job_id for job_id, key in keys.items() if f"start:{key}" in started}
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0, worker.output()

    # The two running jobs finished; the rest were never started and are ready again.
    for ref in refs:
        ref.refresh()
        if ref.id in running:
            assert ref.status == records.SUCCEEDED, worker.output()
        else:
            assert (ref.status, ref.attempts) == (records.READY, 0), worker.output()
    assert Execution.objects.count() == 2

    # A second worker finishes the rest: nothing was lost.
    drain = start_worker("--concurrency", "4", command="pgjobs_drain")
    assert drain.wait(timeout=30) == 0, drain.output()
    assert status_counts() == {records.SUCCEEDED: 6}
    assert Execution.objects.count() == 6
    assert "ran 4, succeeded 4, failed 0" in drain.stdout


def test_jobs_still_running_after_the_grace_period_are_put_back(start_worker):
    refs = background.enqueue_many(
        [(jobs.wait_for_event, [f"long-{n}", "go"], {}) for n in range(2)]
    )
    worker = start_worker("--concurrency", "2", "--grace-period", "0.2")
    wait_for(lambda: started_jobs() == 2, timeout=20, message="both jobs started")
    worker.send_signal(signal.SIGTERM)
    # The jobs would block for 30 s: exiting well before shows the grace period holds.
    assert worker.wait(timeout=10) == 0, worker.output()

    for ref in refs:
        ref.refresh()
        assert (ref.status, ref.attempts) == (records.READY, 0), worker.output()
    assert Execution.objects.count() == 0
    assert "still running after the grace period" in worker.stderr

    Event.objects.create(name="go")
    drain = start_worker("--concurrency", "2", command="pgjobs_drain")
    assert drain.wait(timeout=30) == 0, drain.output()
    assert status_counts() == {records.SUCCEEDED: 2}
    assert Execution.objects.count() == 2


def test_a_second_signal_exits_at_once(start_worker):
    background.enqueue(jobs.wait_for_event, args=["stuck", "never"])
    worker = start_worker("--grace-period", "60", "-v", "2")
    wait_for(lambda: started_jobs() == 1, timeout=20, message="the job to start")
    worker.send_signal(signal.SIGTERM)
    worker.wait_for_output("SIGTERM received", stream="stderr")
    worker.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    code = worker.wait(timeout=10)
    assert time.monotonic() - stopped < 5
    assert code != 0, "an abrupt exit must not claim success"


def test_an_idle_worker_is_woken_by_notify_well_before_its_poll_interval(start_worker):
    if get_backend().get_store().wakeup != "listen":
        pytest.skip(f"the {VENDOR} store polls; only stores that push wake-ups are woken")
    worker = start_worker("--poll-interval", "30")
    worker.wait_for_output("wake-up:     notified")

    def listening():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0] > 0

    if isinstance(get_backend().get_store(), PostgresStore):  # Redis subscribes instead
        wait_for(listening, timeout=15, message="the worker's LISTEN connection")
    # A first job makes sure the worker is past start-up and back to idling.
    first = background.enqueue(jobs.add, args=[1, 1])
    assert first.wait(timeout=20).result == 2
    time.sleep(0.5)  # idle: waiting on LISTEN (its next poll is 10+ s away)

    ref = background.enqueue(jobs.add, args=[2, 2])
    assert ref.wait(timeout=5).result == 4
    delay = (ref.started_at - ref.created_at).total_seconds()
    # Without the wake-up the worker would find it at its next timed poll, 10+ s away.
    assert delay < 3.0, f"started {delay:.3f} s after enqueue: not woken by NOTIFY"
