"""A claimed row whose arguments cannot be decoded fails alone (issue 20, bug 1).

PostgreSQL's jsonb takes nesting 3,000 deep and numbers of 5,000 digits, which
Python's ``json`` refuses (``RecursionError``; ``ValueError`` past
``sys.get_int_max_str_digits()``). Such a row, written by hand here as a careless
or hostile user could, must come back from the claim as a ``ClaimedJob`` with
``problem`` set, and every other job of the batch as usual, on every store.
SQLite's ``json_valid`` stops at 2,000 levels and MariaDB's at 32 (the JSON
column's CHECK), so deep nesting is tried where the database stores it.
"""

import pytest
from django.db import connection

from pgjobs import background, records
from tests.conftest import JOBS_IN_REDIS, VENDOR, run_jobs
from tests.testapp import jobs

WORKER = "test-worker-decode"

BIG_NUMBER = "[" + "9" * 5000 + "]"
DEEP = {"postgres": 3000, "sqlite": 1500}.get("redis" if JOBS_IN_REDIS else VENDOR, 3000)
DEEP_NESTING = "[" * DEEP + "]" * DEEP


@pytest.fixture
def store(jobs_backend):
    return jobs_backend.get_store()


def write_args(store, job_id, text):
    """Put ``text`` in the job's stored ``args``, bypassing pgjobs."""
    if JOBS_IN_REDIS:
        store.client.hset(store.key("job", job_id), "args", text)
        return
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE pgjobs_job SET args = %s{cast} WHERE id = %s", [text, job_id])


def claim_good_and_bad(store, text):
    good = background.enqueue(jobs.add, args=[1, 2])
    bad = background.enqueue(jobs.add, args=[3, 4])
    write_args(store, bad.id, text)
    claimed = {job.id: job for job in store.claim(None, 10, WORKER)}  # must not raise
    assert set(claimed) == {good.id, bad.id}
    return claimed[good.id], claimed[bad.id]


def assert_fails_alone(store, text, reason):
    good, bad = claim_good_and_bad(store, text)
    assert good.problem is None and (good.args, good.kwargs) == ([1, 2], {})
    assert bad.problem is not None and reason in bad.problem, bad.problem
    assert "\n" not in bad.problem
    assert (bad.args, bad.kwargs) == (None, None)
    assert (bad.func, bad.attempts) == ("tests.testapp.jobs.add", 1)
    # Both stay claimed by this worker: the worker fails the bad one, runs the other.
    assert store.get(bad.id).status == records.RUNNING
    assert store.get(good.id).status == records.RUNNING


@pytest.mark.django_db(transaction=True)
def test_a_5000_digit_number_fails_only_its_job(store):
    assert_fails_alone(store, BIG_NUMBER, "ValueError")


@pytest.mark.skipif(
    VENDOR == "mysql", reason="MariaDB's JSON CHECK refuses nesting beyond 32 levels"
)
@pytest.mark.django_db(transaction=True)
def test_arguments_nested_too_deep_fail_only_their_job(store):
    assert_fails_alone(store, DEEP_NESTING, "RecursionError")


@pytest.mark.parametrize(
    "text, reason",
    [
        pytest.param(BIG_NUMBER, "ValueError", id="5000-digit number"),
        pytest.param(
            DEEP_NESTING,
            "RecursionError",
            id=f"nested {DEEP} deep",
            marks=pytest.mark.skipif(
                VENDOR == "mysql", reason="MariaDB's JSON CHECK refuses nesting beyond 32 levels"
            ),
        ),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_a_worker_fails_the_unreadable_job_at_once_and_runs_the_rest_of_its_batch(
    store, text, reason
):
    """Issue 20 bug 1, end to end: a signed good job and a row written by hand that
    cannot be decoded, claimed in one batch by a real (in-process) worker. The bad
    one fails at once, alone, with its reason; it is never rescued nor retried."""
    good = background.enqueue(jobs.add, args=[1, 2])
    bad = background.enqueue(jobs.add, args=[3, 4])
    write_args(store, bad.id, text)
    run_jobs(concurrency=4)  # one claim takes both
    got = store.get(bad.id)
    assert (got.status, got.attempts) == (records.FAILED, 1), got.error
    assert got.error["type"] == "pgjobs.exceptions.InvalidJob"
    assert "cannot decode the job's arguments" in got.error["message"]
    assert reason in got.error["message"], got.error["message"]
    assert background.get(good.id).status == records.SUCCEEDED
    assert background.get(good.id).result == 3
    assert store.rescue() == 0, "no lease was left to run out"
    again = store.get(bad.id)
    assert (again.status, again.attempts, again.error) == (records.FAILED, 1, got.error)


@pytest.mark.django_db(transaction=True)
def test_finish_and_claim_returns_the_undecodable_job_with_the_rest(store):
    first = background.enqueue(jobs.noop)
    (claimed,) = store.claim(None, 1, WORKER)
    good = background.enqueue(jobs.add, args=[1, 2])
    bad = background.enqueue(jobs.add, args=[3, 4])
    write_args(store, bad.id, BIG_NUMBER)
    jobs_ = store.finish_and_claim(WORKER, [(claimed.id, None)], None, 10)
    assert {job.id: job.problem is None for job in jobs_} == {good.id: True, bad.id: False}
    assert store.get(first.id).status == records.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_get_returns_the_arguments_as_stored(store):
    ref = background.enqueue(jobs.add, args=[1, 2], kwargs={"x": "y"})
    info = store.get(ref.id)
    assert (info.args, info.kwargs) == ([1, 2], {"x": "y"})


@pytest.mark.skipif(VENDOR != "sqlite", reason="SQLite stores times as text anyone can change")
@pytest.mark.django_db(transaction=True)
def test_a_row_whose_time_cannot_be_read_fails_only_its_job(store):
    good = background.enqueue(jobs.noop)
    bad = background.enqueue(jobs.noop)
    with connection.cursor() as cursor:  # due (it sorts before now), but no date
        cursor.execute(
            "UPDATE pgjobs_job SET run_at = '2000-13-45 00:00:00' WHERE id = %s", [bad.id]
        )
    claimed = {job.id: job for job in store.claim(None, 10, WORKER)}
    assert claimed[good.id].problem is None
    assert "cannot read the job's row" in claimed[bad.id].problem
    assert sorted(claimed.values(), key=lambda job: job.claim_order())  # sortable
