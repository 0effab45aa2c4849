"""The store interface (``pgjobs/stores/base.py``) as the worker uses it, on whichever
database the suite runs against: claims, outcomes only from the claiming worker,
leases, rescue and release. Every vendor's store is held to the same contract
(vendor-specific behaviour is in ``test_stores_vendors.py``)."""

import datetime

import pytest
from django.utils import timezone

from pgjobs import background, records
from pgjobs.models import Job
from tests.testapp import jobs

WORKER = "test-worker-a"
OTHER = "test-worker-b"
ERROR = {"type": "builtins.ValueError", "message": "no", "traceback": "..."}


@pytest.fixture
def store(jobs_backend):
    return jobs_backend.get_store()


def past(seconds):
    return timezone.now() - datetime.timedelta(seconds=seconds)


@pytest.mark.django_db
def test_claim_takes_due_jobs_in_claim_order_up_to_the_limit(store):
    low = background.enqueue(jobs.noop, priority=-1)
    high = background.enqueue(jobs.noop, priority=50)
    old = background.defer(jobs.noop, when=past(60))
    later = background.defer(jobs.noop, when=datetime.timedelta(hours=1), priority=100)

    first = store.claim(None, 2, WORKER)
    assert {job.id for job in first} == {high.id, old.id}
    assert [job.id for job in store.claim(None, 10, WORKER)] == [low.id]
    assert store.claim(None, 10, WORKER) == []
    assert Job.objects.get(pk=later.id).status == records.READY


@pytest.mark.django_db
def test_claim_marks_the_job_running_for_this_worker_with_a_lease(store):
    ref = background.enqueue(jobs.add, args=[1, 2], max_attempts=4, queue="other")
    (claimed,) = store.claim(None, 1, WORKER)
    assert claimed.id == ref.id
    assert claimed.func == "tests.testapp.jobs.add"
    assert (claimed.args, claimed.kwargs) == ([1, 2], {})
    assert (claimed.queue, claimed.attempts, claimed.max_attempts) == ("other", 1, 4)
    job = Job.objects.get(pk=ref.id)
    assert (job.status, job.worker_id, job.attempts) == (records.RUNNING, WORKER, 1)
    assert job.started_at is not None
    assert job.lease_expires_at > job.started_at


@pytest.mark.django_db
def test_claim_only_from_the_queues_asked_for(store):
    default = background.enqueue(jobs.noop)
    other = background.enqueue(jobs.noop, queue="other")
    assert [job.id for job in store.claim(["other"], 10, WORKER)] == [other.id]
    assert store.claim(["other"], 10, WORKER) == []
    assert [job.id for job in store.claim(["default", "other"], 10, WORKER)] == [default.id]


@pytest.mark.django_db
def test_finish_records_results_only_for_the_claiming_worker(store):
    ref = background.enqueue(jobs.add, args=[1, 2])
    (claimed,) = store.claim(None, 1, WORKER)
    store.finish(OTHER, [(claimed.id, "stolen")])
    assert ref.refresh().status == records.RUNNING, "another worker must not complete the job"
    store.finish(WORKER, [(claimed.id, 3)])
    assert ref.refresh().status == records.SUCCEEDED
    assert ref.result == 3
    assert ref.finished_at is not None
    store.finish(WORKER, [(claimed.id, 4)])
    assert ref.refresh().result == 3, "a job never completes twice"


@pytest.mark.django_db
def test_finish_and_claim_records_then_claims(store):
    first = background.enqueue(jobs.noop, priority=1)
    second = background.enqueue(jobs.noop)
    (claimed,) = store.claim(None, 1, WORKER)
    assert claimed.id == first.id
    (next_job,) = store.finish_and_claim(WORKER, [(first.id, "done")], None, 5)
    assert next_job.id == second.id
    assert first.refresh().result == "done"
    assert store.finish_and_claim(WORKER, [(second.id, None)], None, 5) == []
    assert second.refresh().status == records.SUCCEEDED


@pytest.mark.django_db
def test_finish_records_many_results_at_once(store):
    refs = background.enqueue_many([(jobs.noop, [], {}) for _ in range(20)])
    claimed = store.claim(None, 20, WORKER)
    store.finish(WORKER, [(job.id, {"n": job.id}) for job in claimed])
    for ref in refs:
        assert ref.refresh().result == {"n": ref.id}


@pytest.mark.django_db
def test_retry_makes_the_job_ready_later_with_its_error(store):
    ref = background.enqueue(jobs.noop)
    (claimed,) = store.claim(None, 1, WORKER)
    store.retry(OTHER, claimed.id, ERROR, 60)
    assert ref.refresh().status == records.RUNNING
    store.retry(WORKER, claimed.id, ERROR, 60)
    job = Job.objects.get(pk=ref.id)
    assert (job.status, job.attempts, job.error, job.worker_id) == (records.READY, 1, ERROR, None)
    assert job.run_at > timezone.now() + datetime.timedelta(seconds=50)
    assert store.claim(None, 1, WORKER) == []


@pytest.mark.django_db
def test_fail_is_final(store):
    ref = background.enqueue(jobs.noop)
    (claimed,) = store.claim(None, 1, WORKER)
    store.fail(OTHER, claimed.id, ERROR)
    assert ref.refresh().status == records.RUNNING
    store.fail(WORKER, claimed.id, ERROR)
    ref.refresh()
    assert (ref.status, ref.error) == (records.FAILED, ERROR)
    assert ref.finished_at is not None
    assert store.claim(None, 1, WORKER) == []


@pytest.mark.django_db
def test_heartbeat_extends_the_lease_of_the_workers_own_jobs(store):
    ref = background.enqueue(jobs.noop)
    store.claim(None, 1, WORKER)
    Job.objects.filter(pk=ref.id).update(lease_expires_at=past(5))
    store.heartbeat(OTHER, [ref.id])
    assert Job.objects.get(pk=ref.id).lease_expires_at < timezone.now()
    store.heartbeat(WORKER, [ref.id])
    assert Job.objects.get(pk=ref.id).lease_expires_at > timezone.now()
    assert store.rescue() == 0


@pytest.mark.django_db
def test_rescue_puts_back_jobs_whose_lease_expired(store):
    again = background.enqueue(jobs.noop, max_attempts=3)
    done = background.enqueue(jobs.noop, max_attempts=1)
    alive = background.enqueue(jobs.noop)
    store.claim(None, 3, WORKER)
    Job.objects.filter(pk__in=[again.id, done.id]).update(lease_expires_at=past(1))

    assert store.rescue() == 2

    job = Job.objects.get(pk=again.id)
    assert (job.status, job.attempts, job.worker_id) == (records.READY, 1, None)
    assert job.error["type"] == "pgjobs.exceptions.WorkerLost"
    job = Job.objects.get(pk=done.id)
    assert (job.status, job.attempts) == (records.FAILED, 1)
    assert job.error["type"] == "pgjobs.exceptions.WorkerLost"
    assert Job.objects.get(pk=alive.id).status == records.RUNNING
    # The rescued job runs again, and its old worker can no longer complete it.
    (claimed,) = store.claim(None, 1, OTHER)
    assert (claimed.id, claimed.attempts) == (again.id, 2)
    store.finish(WORKER, [(again.id, "late")])
    assert again.refresh().status == records.RUNNING


@pytest.mark.django_db
def test_release_puts_claimed_jobs_back_without_counting_an_attempt(store):
    ref = background.enqueue(jobs.noop)
    store.claim(None, 1, WORKER)
    store.release(OTHER, [ref.id])
    assert ref.refresh().status == records.RUNNING
    store.release(WORKER, [ref.id])
    job = Job.objects.get(pk=ref.id)
    assert (job.status, job.attempts, job.worker_id, job.started_at) == (
        records.READY,
        0,
        None,
        None,
    )
    assert [job.id for job in store.claim(None, 1, WORKER)] == [ref.id]


@pytest.mark.django_db
def test_cancel_only_cancels_ready_jobs(store):
    first = background.enqueue(jobs.noop)
    second = background.enqueue(jobs.noop)
    (claimed,) = store.claim(None, 1, WORKER)
    assert claimed.id == first.id
    assert store.cancel(first.id) is False
    assert first.refresh().status == records.RUNNING
    assert store.cancel(second.id) is True
    assert second.refresh().status == records.CANCELLED
    assert store.claim(None, 1, WORKER) == []


@pytest.mark.django_db
def test_seconds_until_due_and_count_due(store):
    assert store.seconds_until_due(None) is None, "no ready job: nothing to wait for"
    assert store.count_due(None) == 0
    background.defer(jobs.noop, when=datetime.timedelta(seconds=30), queue="other")
    assert 20 < store.seconds_until_due(None) <= 31  # now() may be the transaction's start
    assert store.seconds_until_due(["default"]) is None
    assert store.count_due(None) == 0
    background.defer(jobs.noop, when=past(10))
    assert store.seconds_until_due(None) == 0
    assert store.seconds_until_due(["other"]) > 20
    assert store.count_due(None) == 1
    assert store.count_due(["other"]) == 0
    assert store.count_due(["default", "other"]) == 1


@pytest.mark.django_db
def test_get_returns_the_stored_job(store):
    ref = background.enqueue(jobs.noop, priority=3, queue="other")
    info = store.get(ref.id)
    assert (info.id, info.func, info.queue, info.status, info.priority) == (
        ref.id,
        "tests.testapp.jobs.noop",
        "other",
        records.READY,
        3,
    )
    assert (ref.priority, ref.queue, ref.status, ref.run_at) == (3, "other", "ready", info.run_at)
    assert store.get(ref.id + 1000) is None
