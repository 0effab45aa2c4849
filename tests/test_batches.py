"""Batches and chains through the API (``background.batch``, ``background.chain``,
``enqueue(..., after=ref)``) and real workers: callbacks run once, results pass
down a chain, a failure cancels what depends on it, and a worker killed mid-batch
loses no job and runs no callback twice."""

import importlib.resources
import signal

import pytest
from django.db import transaction
from django.test import override_settings

from pgjobs import (
    BatchNotFound,
    BatchRef,
    InvalidJob,
    JobFailed,
    NotSupported,
    background,
    records,
)
from tests.conftest import VENDOR, run_jobs, unfinished_jobs, wait_for, work_until
from tests.test_faults import start_worker_with_lease  # noqa: F401 (a fixture)
from tests.testapp import jobs
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def executed(key):
    return Execution.objects.filter(key=key).count()


def test_a_batch_runs_its_jobs_then_each_callback_once():
    batch = background.batch(
        [(jobs.record, [f"job-{n}"], {}) for n in range(5)],
        on_finish=(jobs.record_finished, ["finished"], {}),
        on_success=(jobs.record_finished, ["succeeded"]),
        description="five records",
    )
    assert isinstance(batch, BatchRef) and batch.total == 5 and len(batch.jobs) == 5
    assert batch.progress() == (0, 5) and batch.progress().fraction == 0.0
    assert batch.counts()[records.READY] == 5
    assert batch.on_finish().status == records.WAITING
    run_jobs()
    assert batch.is_finished() and batch.progress() == (5, 5)
    assert batch.counts()[records.SUCCEEDED] == 5
    assert (executed("finished"), executed("succeeded")) == (1, 1)
    assert batch.on_finish().result == "finished"
    again = background.get_batch(batch.id)
    assert (again.succeeded, again.failed, again.pending) == (5, 0, 0)
    assert again.description == batch.description == "five records"
    assert sorted(ref.id for ref in again.job_refs()) == sorted(ref.id for ref in batch.jobs)


def test_a_failure_runs_on_finish_and_cancels_on_success():
    batch = background.batch(
        [(jobs.record, ["fine"], {}), (jobs.fail_always, [], {})],
        on_finish=(jobs.record_finished, ["finished"], {}),
        on_success=(jobs.record_finished, ["succeeded"], {}),
        max_attempts=2,
    )
    work_until(lambda: batch.is_finished() and not unfinished_jobs())
    assert (batch.succeeded, batch.failed) == (1, 1)
    assert (executed("finished"), executed("succeeded")) == (1, 0)
    refused = batch.on_success()
    assert refused.status == records.CANCELLED
    assert refused.error["type"] == "pgjobs.exceptions.DependencyFailed"


def test_cancelling_a_batch_cancels_its_ready_jobs():
    batch = background.batch(
        [(jobs.record, [f"job-{n}"], {}) for n in range(3)],
        on_finish=(jobs.record_finished, ["finished"], {}),
    )
    assert batch.cancel() == 3
    assert batch.counts()[records.CANCELLED] == 3 and batch.is_finished()
    run_jobs()
    assert executed("finished") == 1 and not Execution.objects.filter(key__startswith="job-")


def test_a_chain_runs_in_order_passing_each_result_on():
    refs = background.chain([(jobs.add_previous, [n], {}) for n in (1, 2, 3)])
    assert [ref.status for ref in refs] == [records.READY, records.WAITING, records.WAITING]
    work_until(lambda: refs[-1].refresh().is_finished)
    assert [ref.refresh().result for ref in refs] == [1, 3, 6]
    after = background.enqueue(jobs.add_previous, args=[10], after=refs[-1])
    assert after.status == records.READY, "after a job that already succeeded"
    run_jobs()
    assert after.refresh().result == 16


def test_a_job_after_one_that_fails_for_good_is_cancelled_with_the_reason():
    first = background.enqueue(jobs.fail_always, max_attempts=1)
    second = background.enqueue(jobs.add_previous, args=[1], after=first)
    run_jobs()
    second.refresh()
    assert second.status == records.CANCELLED
    assert f"job {first.id}" in second.error["message"] and "failed" in second.error["message"]
    with pytest.raises(JobFailed):
        _ = second.result


def test_a_batch_enqueued_in_a_rolled_back_transaction_leaves_nothing():
    try:
        with transaction.atomic():
            batch = background.batch([(jobs.noop, [], {})], on_finish=jobs.noop)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with pytest.raises(BatchNotFound):
        background.get_batch(batch.id)
    assert unfinished_jobs() == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: background.batch([]), "at least one job"),
        (lambda: background.batch([(jobs.noop, [], {})], unique_key="k"), "unique_key"),
        (lambda: background.batch([(jobs.noop, [], {})], on_finish=lambda: 1), "on_finish"),
        (lambda: background.batch([(jobs.noop, [], {})], description=7), "description"),
        (lambda: background.enqueue(jobs.noop, after="12"), "after must be a JobRef"),
        (lambda: background.enqueue(jobs.noop, after=1, unique_key="k"), "unique_key"),
    ],
)
def test_bad_batches_and_chains_are_refused_with_a_reason(call, message):
    with pytest.raises(InvalidJob, match=message):
        call()
    assert unfinished_jobs() == 0


@override_settings(PGJOBS={"BACKEND": "pgjobs.backends.ImmediateBackend"})
def test_a_backend_that_runs_jobs_in_band_refuses_batches_and_chains():
    with pytest.raises(NotSupported):
        background.batch([(jobs.noop, [], {})])
    with pytest.raises(NotSupported):
        background.enqueue(jobs.noop, after=1)
    with pytest.raises(NotSupported):
        background.chain([(jobs.noop, [], {})])


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_no_job_and_runs_each_callback_once(
    start_worker_with_lease,  # noqa: F811
):
    start = start_worker_with_lease(2.0)
    count = 200
    batch = background.batch(
        [(jobs.record_once, [f"job-{n}", 0.02], {}) for n in range(count)],
        on_finish=(jobs.record_finished, ["finished"], {}),
        on_success=(jobs.record_finished, ["succeeded"], {}),
        max_attempts=5,
    )
    chain = background.chain([(jobs.add_previous, [n], {}) for n in range(1, 6)])
    workers = [start("--concurrency", "4") for _ in range(3)]
    wait_for(lambda: batch.progress().done >= count // 4, timeout=60, message="a quarter done")
    workers[0].send_signal(signal.SIGKILL)
    wait_for(batch.is_finished, timeout=90, message="the batch to finish")
    wait_for(lambda: executed("finished") and executed("succeeded"), timeout=30)
    assert batch.refresh().succeeded == count, batch.counts()
    assert Execution.objects.filter(key__startswith="job-").count() == count
    assert (executed("finished"), executed("succeeded")) == (1, 1)
    wait_for(lambda: chain[-1].refresh().is_finished, timeout=30)
    assert chain[-1].result == 15


@pytest.mark.django_db(transaction=False)
def test_the_redis_scripts_write_the_errors_the_other_stores_write():
    lua = importlib.resources.files("pgjobs.stores").joinpath("lua", "common.lua").read_text()
    assert f"'{records.BATCH_FAILED_MESSAGE}'" in lua
    assert f"'{records.DEPENDENCY_TYPE}'" in lua
    message = records.previous_failed_error(7, "failed")["message"]
    assert message == "cancelled: job 7, which this job runs after, failed"
    assert "'cancelled: job ' .. id .. ', which this job runs after, ' .. status" in lua


@pytest.mark.skipif(VENDOR != "postgres", reason="PostgreSQL's one-statement finish")
def test_a_rescue_pass_settles_a_chained_job_its_finish_could_not_see():
    # PostgreSQL's finish is one statement: a job chained after it by a transaction
    # that committed while that statement ran is not in its snapshot, and stays
    # waiting. Made here by hand: the previous job succeeded, the next still waits.
    from pgjobs.handler import get_backend
    from pgjobs.models import Job

    first = background.enqueue(jobs.add, args=[1, 2])
    second = background.enqueue(jobs.add_previous, args=[10], after=first)
    failed = background.enqueue(jobs.noop)
    third = background.enqueue(jobs.noop, after=failed)
    Job.objects.filter(pk=first.id).update(status=records.SUCCEEDED, result=3)
    Job.objects.filter(pk=failed.id).update(status=records.FAILED)
    assert second.refresh().status == records.WAITING
    get_backend().get_store().rescue()
    assert second.refresh().status == records.READY
    assert third.refresh().status == records.CANCELLED
    run_jobs()
    assert second.refresh().result == 13


@override_settings(PGJOBS={"BACKEND": "pgjobs.testing.InMemoryBackend"})
def test_users_tests_run_batches_and_chains_in_memory():
    from pgjobs.handler import get_backend

    batch = background.batch([(jobs.add, [n, n], {}) for n in range(3)], on_success=jobs.noop)
    chain = background.chain([(jobs.add_previous, [1], {}), (jobs.add_previous, [2], {})])
    get_backend().run_jobs()
    assert batch.progress() == (3, 3) and batch.on_success().status == records.SUCCEEDED
    assert chain[-1].refresh().result == 3
