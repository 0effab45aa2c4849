"""The executor (``pgjobs/worker/executor.py``): one concurrency budget, slot
threads only for the sync jobs running, and jobs whose row could not be read."""

import dataclasses
import threading
import time

import pytest
from django.db import connections

from pgjobs import background, records
from pgjobs.handler import get_backend
from pgjobs.worker import Worker, executor
from tests.conftest import wait_for
from tests.testapp import jobs
from tests.testapp.models import Event


def slot_threads():
    return [t for t in threading.enumerate() if t.name.startswith("pgjobs-slot-")]


def run_in_thread(worker):
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def quick_idle_exit(monkeypatch):
    monkeypatch.setattr(executor, "SLOT_IDLE_SECONDS", 0.3)


@pytest.mark.django_db(transaction=True)
def test_a_worker_with_a_huge_concurrency_and_nothing_to_do_starts_no_slot_threads(
    quick_idle_exit,
):
    """Issue 20 bug 5: ``--concurrency 1000`` started 1,000 threads before any job."""
    before = len(slot_threads())
    worker = Worker(get_backend().get_store(), concurrency=1000, poll_interval=0.1)
    thread = run_in_thread(worker)
    try:
        time.sleep(0.5)
        assert len(slot_threads()) == before
        # Sync jobs get threads while they run, no more than they need...
        refs = background.enqueue_many([(jobs.sleep, [0.3], {}) for _ in range(3)])
        wait_for(lambda: all(r.refresh().status == records.SUCCEEDED for r in refs), timeout=10)
        assert worker.executor.threads <= 3
        # ... and idle threads end.
        wait_for(lambda: worker.executor.threads == 0, timeout=5, message="idle threads to end")
    finally:
        worker.request_stop()
        thread.join(10)
    wait_for(lambda: len(slot_threads()) == before, timeout=5, message="slot threads to end")


@pytest.mark.django_db(transaction=True)
def test_async_jobs_under_a_huge_concurrency_cost_no_slot_threads():
    refs = background.enqueue_many([(jobs.async_sleep, [0.2], {}) for _ in range(50)])
    worker = Worker(get_backend().get_store(), concurrency=5000, burst=True)
    started = time.monotonic()
    stats = worker.run()
    assert stats.succeeded == 50
    assert time.monotonic() - started < 5, "the async jobs did not run together"
    assert worker.executor.threads_started == 0, "a slot thread was started"
    assert {ref.refresh().status for ref in refs} == {records.SUCCEEDED}


@pytest.mark.django_db(transaction=True)
def test_jobs_waiting_for_a_share_start_in_claim_order():
    """Concurrency 1 and a batch: each job starts once the one before has ended,
    in the order claimed, sync and async alike."""
    keys = [f"order-{n}" for n in range(6)]
    funcs = [jobs.note_start, jobs.async_note_start]
    background.enqueue_many([(funcs[n % 2], [key], {}) for n, key in enumerate(keys)])
    worker = Worker(get_backend().get_store(), concurrency=1, burst=True)
    assert worker.run().succeeded == 6
    assert jobs.ASYNC_STATE["order"][-6:] == keys


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_row_could_not_be_read_fails_alone_at_once_and_the_batch_runs():
    """Issue 20 bug 1: a row the store claimed but could not decode comes back with
    ``problem`` set; it fails for good with that reason, unrun, and the other jobs
    of its batch run."""
    store = get_backend().get_store()
    worker = Worker(store, concurrency=2)
    bad = background.enqueue(jobs.add, args=[1, 1], max_attempts=3)
    good = background.enqueue(jobs.add, args=[2, 3])
    claimed = sorted(store.claim(None, 10, worker.worker_id), key=lambda job: job.id)
    assert [job.id for job in claimed] == [bad.id, good.id]
    problem = "its arguments could not be decoded (maximum recursion depth exceeded)"
    batch = [dataclasses.replace(claimed[0], problem=problem, args=None), claimed[1]]

    worker.recorder.hold(batch)
    worker.executor.submit(batch)
    outcomes = []
    wait_for(
        lambda: outcomes.extend(worker.executor.take_done()) or len(outcomes) == 2,
        timeout=10,
        message="both outcomes",
    )
    worker.recorder.finish(worker.recorder.take(outcomes))
    worker.executor.close()

    assert not worker.recorder.held
    bad.refresh()
    assert bad.status == records.FAILED  # for good, though attempts were left
    assert bad.error["type"] == "pgjobs.exceptions.InvalidJob"
    assert bad.error["message"] == problem
    assert good.refresh().status == records.SUCCEEDED
    assert good.result == 5
    assert (worker.stats.failed, worker.stats.succeeded, worker.stats.retried) == (1, 1, 0)


@pytest.mark.django_db(transaction=True)
def test_a_job_that_leaves_a_transaction_open_does_not_swallow_the_next_jobs_writes(
    monkeypatch,
):
    """The first job leaves its slot thread's connection outside autocommit with a
    write pending. The worker closes that connection after the job (rolling the
    write back), so the next job's write commits on a fresh one instead of joining
    a transaction nobody ends, and, on SQLite, the worker's own writes do not wait
    behind that transaction's lock. Slots idle for a minute here: a slot thread
    that ended would close the connection itself and hide a worker that did not."""
    monkeypatch.setattr(executor, "SLOT_IDLE_SECONDS", 60.0)
    careless = background.enqueue(jobs.leave_transaction_open, args=["never committed"])
    after = background.enqueue(jobs.record_event, args=["committed"])
    worker = Worker(get_backend().get_store(), concurrency=1, burst=True)

    def work():
        try:
            worker.run()
        finally:
            connections.close_all()  # the worker's own, opened in this thread

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), "the worker stalled behind the careless job's transaction"
    assert careless.refresh().status == records.SUCCEEDED
    assert after.refresh().status == records.SUCCEEDED
    assert list(Event.objects.values_list("name", flat=True)) == ["committed"]
