"""The store contract (``pgjobs/stores/base.py``), one suite for every store.

Each test states a behaviour that workers, backends and users rely on, and
runs against the in-memory store (``pgjobs.testing``) and the store of this
run's ``PGJOBS_TEST_DB``: ``PostgresStore``, ``MySQLStore`` or ``SQLiteStore``
through ``database_store``, or ``RedisStore``, which runs it twice: on one
Redis server and on a Redis Cluster of our own (``redis-cluster``; the
``redis_cluster`` fixture, tests/conftest.py). The tests talk to the store
only, never to the ORM, so that one suite holds every store to the same
answers: a new store passes it, or declares here which behaviour it lacks.

Time: the in-memory store runs on a hand-moved clock; the others on their own
clocks, so ``clock.sleep(s)`` really waits there (``LEASE`` is short for that).

A store that lacks a behaviour is marked on that test alone with
``@gap(store=reason)``: an ``xfail``, strict, so that the day the store gains
the behaviour the run fails until the mark goes. ``strict=False`` only for
behaviour another branch is adding right now.
"""

import datetime
import os
import select
import threading
import time

import pytest
from django.db import connections, transaction
from django.utils import timezone

from pgjobs import records
from pgjobs.records import JobSpec
from pgjobs.testing import InMemoryStore, ManualClock

VENDOR = os.environ.get("PGJOBS_TEST_DB", "postgres")
STORES = ["memory", VENDOR] + (["redis-cluster"] if VENDOR == "redis" else [])
SQL_STORES = {"postgres", "mysql", "sqlite"}
# Short leases, so that rescues can be seen on stores that run on real time.
LEASE = 1.5
WORKER = "contract-worker-a"
OTHER = "contract-worker-b"
ERROR = {"type": "builtins.ValueError", "message": "no", "traceback": "..."}
LATER_ERROR = {"type": "builtins.KeyError", "message": "'x'", "traceback": "..."}


def gap(strict=True, **reasons):
    """Mark a test as failing, for the reason given, on the stores named (``redis``
    names both Redis stores: one server and a cluster)."""
    return pytest.mark.store_gap(strict=strict, **reasons)


class Clock:
    """What the tests read and move time with: the in-memory store's ``ManualClock``,
    or the real time for stores that keep their own."""

    def __init__(self, manual=None):
        self.manual = manual

    def now(self):
        return timezone.now() if self.manual is None else self.manual()

    def ago(self, seconds):
        return self.now() - datetime.timedelta(seconds=seconds)

    def ahead(self, seconds):
        return self.now() + datetime.timedelta(seconds=seconds)

    def sleep(self, seconds):
        if self.manual is None:
            time.sleep(seconds)
        else:
            self.manual.advance(seconds)


@pytest.fixture(
    params=[
        # Threads (concurrent claims, wake-ups) need commits the others can see.
        pytest.param(name, marks=pytest.mark.django_db(transaction=True))
        if name in SQL_STORES
        else name
        for name in STORES
    ]
)
def kind(request):
    return request.param


@pytest.fixture(autouse=True)
def known_gaps(request, kind):
    marker = request.node.get_closest_marker("store_gap")
    store = "redis" if kind == "redis-cluster" else kind
    if marker is not None and store in marker.kwargs:
        reason = f"{kind}: {marker.kwargs[store]}"
        strict = marker.kwargs.get("strict", True)
        request.applymarker(pytest.mark.xfail(strict=strict, reason=reason))


@pytest.fixture
def make_store(kind, request):
    """``make_store(**options)``: a new store of this run's kind, on empty storage."""
    manual = ManualClock() if kind == "memory" else None
    made = []

    def make(**options):
        options.setdefault("lease_seconds", LEASE)
        if kind == "memory":
            store = InMemoryStore(clock=manual, **options)
        elif kind in ("redis", "redis-cluster"):
            from pgjobs.stores.redis import RedisStore
            from tests.redis_settings import PREFIX, URL

            if kind == "redis-cluster":
                url = request.getfixturevalue("redis_cluster").url
            else:
                url = URL
            store = RedisStore(url, prefix=f"{PREFIX}-contract", **options)
            if not made:
                store.flush()
        else:
            from pgjobs.stores import database_store

            store = database_store("default", **options)
        made.append(store)
        return store

    make.clock = Clock(manual)
    yield make
    for store in made:
        store.stop_listening()
        store.close()
    if kind in ("redis", "redis-cluster") and made:
        made[0].flush()
    if kind == "redis-cluster" and made:
        assert_no_stray_keys(made[0])


def assert_no_stray_keys(store):
    """Every key a test wrote is named by ``RedisStore.key`` (or ``P`` in Lua), in the
    site's hash-tagged slot, so ``flush`` found it: a key named from the bare prefix
    would land in another slot, where the scripts cannot reach it on a cluster."""
    from tests.redis_settings import PREFIX

    stray = list(store.client.scan_iter(match=f"*{PREFIX}-contract*", count=1000))
    if stray:
        store.client.unlink(*stray)
    assert not stray, f"keys outside {store.key_prefix!r}: not named by RedisStore.key: {stray}"


@pytest.fixture
def store(make_store):
    return make_store()


@pytest.fixture
def clock(make_store):
    return make_store.clock


def spec(func="tests.testapp.jobs.noop", args=(), kwargs=None, **options):
    return JobSpec(func=func, args=list(args), kwargs=dict(kwargs or {}), **options)


def ids(jobs):
    return [job.id for job in jobs]


def in_threads(count, target):
    """Run ``target(n)`` in ``count`` threads started together; return their results
    in thread order, or raise the first thread's error."""
    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def run(n):
        try:
            barrier.wait(10)
            results[n] = target(n)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a thread is still running"
    if errors:
        raise errors[0]
    return results


# -- producers ------------------------------------------------------------------------


def test_enqueue_returns_the_ready_job_and_get_reads_it_back(store, clock):
    before = clock.ago(1)
    info = store.enqueue(spec("tests.testapp.jobs.add", [1, 2], queue="other", priority=7))
    assert (info.func, info.queue, info.status, info.priority) == (
        "tests.testapp.jobs.add",
        "other",
        records.READY,
        7,
    )
    got = store.get(info.id)
    assert (got.id, got.func, got.queue, got.status) == (info.id, info.func, "other", "ready")
    assert (got.priority, got.attempts, got.max_attempts) == (7, 0, 3)
    assert got.run_at >= before and got.created_at >= before
    assert (got.started_at, got.finished_at, got.result, got.error, got.worker_id) == ((None,) * 5)


def test_get_of_an_unknown_job_is_none(store):
    known = store.enqueue(spec())
    assert store.get(known.id + 1000) is None


def test_get_returns_the_arguments_as_stored(store):
    info = store.enqueue(spec("tests.testapp.jobs.echo", [1, "two", {"x": [3]}], {"k": None}))
    got = store.get(info.id)
    assert (got.args, got.kwargs) == ([1, "two", {"x": [3]}], {"k": None})


def test_enqueue_many_writes_every_job_in_order(store):
    infos = store.enqueue_many([spec(queue=q) for q in ("default", "other", "default")])
    assert [info.queue for info in infos] == ["default", "other", "default"]
    assert ids(infos) == sorted(ids(infos)) and len(set(ids(infos))) == 3
    assert [store.get(job_id).queue for job_id in ids(infos)] == ["default", "other", "default"]
    assert store.enqueue_many([]) == []


def test_enqueue_many_writes_all_or_none(store):
    """A job the storage refuses (priority out of range) keeps its whole batch out;
    each store raises its own error (a database's, Redis's, ``ValueError``)."""
    before = store.enqueue(spec())
    with pytest.raises(Exception):  # noqa: B017
        store.enqueue_many([spec(), spec(priority=records.MAX_PRIORITY + 1), spec()])
    assert store.count_due(None) == 1
    assert ids(store.claim(None, 10, WORKER)) == [before.id]


def test_unique_key_keeps_one_job_while_ready_or_running_and_is_free_after(store):
    first = store.enqueue_unique(spec(unique_key="report"))
    assert store.enqueue_unique(spec(unique_key="report")).id == first.id
    assert store.count_due(None) == 1, "a second job with the key must not be written"
    (claimed,) = store.claim(None, 5, WORKER)
    assert claimed.id == first.id
    assert store.enqueue_unique(spec(unique_key="report")).id == first.id, "running holds it"
    store.finish(WORKER, [(first.id, None)])
    second = store.enqueue_unique(spec(unique_key="report"))
    assert second.id != first.id
    assert store.cancel(second.id)
    third = store.enqueue_unique(spec(unique_key="report"))
    assert third.id not in (first.id, second.id), "a cancelled job frees its key"
    assert store.enqueue_unique(spec(unique_key="other")).id != third.id


# -- claims ---------------------------------------------------------------------------


def test_claims_follow_priority_then_run_at_then_insertion(store, clock):
    at = clock.ago(30)
    low = store.enqueue(spec(priority=-5, run_at=clock.ago(100)))
    tie_1 = store.enqueue(spec(run_at=at))
    newest = store.enqueue(spec(run_at=clock.ago(10)))
    tie_2 = store.enqueue(spec(run_at=at))
    oldest = store.enqueue(spec(run_at=clock.ago(60)))
    urgent = store.enqueue(spec(priority=10, run_at=clock.ago(1)))
    expected = [urgent, oldest, tie_1, tie_2, newest, low]
    taken = [store.claim(None, 1, WORKER) for _ in expected]
    assert [ids(batch) for batch in taken] == [[info.id] for info in expected]
    assert store.claim(None, 1, WORKER) == []


def test_a_batch_holds_the_first_jobs_in_claim_order(store, clock):
    """A batch is the first ``limit`` jobs in claim order; stores that declare
    ``claims_in_order`` hand them over sorted, the others in any order (the
    worker sorts them)."""
    infos = [store.enqueue(spec(priority=p, run_at=clock.ago(s))) for p, s in
             [(0, 5), (3, 1), (0, 9), (-1, 50), (3, 2)]]  # fmt: skip
    in_order = [infos[4].id, infos[1].id, infos[2].id, infos[0].id, infos[3].id]
    batch = store.claim(None, 3, WORKER)
    if store.claims_in_order:
        assert ids(batch) == in_order[:3]
    else:
        assert sorted(ids(batch)) == sorted(in_order[:3])
    assert sorted(ids(store.claim(None, 10, WORKER))) == sorted(in_order[3:])


def test_claim_marks_the_job_running_under_the_worker(store):
    info = store.enqueue(spec("tests.testapp.jobs.add", [1, 2], {"c": 3}, queue="other",
                              priority=4, max_attempts=5, timeout=2.5, signature="sig"))  # fmt: skip
    (job,) = store.claim(None, 1, WORKER)
    assert (job.id, job.func, job.args, job.kwargs) == (info.id, info.func, [1, 2], {"c": 3})
    assert (job.queue, job.priority, job.attempts, job.max_attempts) == ("other", 4, 1, 5)
    assert (job.timeout, job.signature, job.problem) == (2.5, "sig", None)
    got = store.get(info.id)
    assert (got.status, got.worker_id, got.attempts) == (records.RUNNING, WORKER, 1)
    assert got.started_at is not None


def test_claim_takes_only_the_queues_asked_for(store):
    default = store.enqueue(spec())
    other = store.enqueue(spec(queue="other"))
    third = store.enqueue(spec(queue="third"))
    assert ids(store.claim(["other"], 10, WORKER)) == [other.id]
    assert store.claim(["other"], 10, WORKER) == []
    assert ids(store.claim(["default", "other"], 10, WORKER)) == [default.id]
    assert ids(store.claim(None, 10, WORKER)) == [third.id]


def test_a_job_is_never_claimed_before_its_run_at(store, clock):
    deferred = store.enqueue(spec(run_at=clock.ahead(1.0)))
    assert store.claim(None, 10, WORKER) == []
    assert store.count_due(None) == 0
    assert 0 < store.seconds_until_due(None) <= 1.0
    clock.sleep(1.2)
    assert store.count_due(None) == 1
    assert store.seconds_until_due(None) == 0
    assert ids(store.claim(None, 10, WORKER)) == [deferred.id]


def test_threads_claiming_at_once_never_take_the_same_job(store):
    enqueued = ids(store.enqueue_many([spec() for _ in range(60)]))

    def claim_until_empty(n):
        mine = []
        while batch := store.claim(None, 3, f"worker-{n}"):
            mine += ids(batch)
        return mine

    taken = in_threads(6, claim_until_empty)
    everything = [job_id for mine in taken for job_id in mine]
    assert sorted(everything) == sorted(enqueued), "every job claimed exactly once"
    for n, mine in enumerate(taken):
        assert all(store.get(job_id).worker_id == f"worker-{n}" for job_id in mine)


# -- outcomes --------------------------------------------------------------------------


def test_finish_records_the_result_once_and_only_for_the_claiming_worker(store):
    info = store.enqueue(spec())
    (job,) = store.claim(None, 1, WORKER)
    store.finish(OTHER, [(job.id, "stolen")])
    assert store.get(info.id).status == records.RUNNING, "another worker cannot complete it"
    store.finish(WORKER, [(job.id, {"n": [1, 2]})])
    got = store.get(info.id)
    assert (got.status, got.result) == (records.SUCCEEDED, {"n": [1, 2]})
    assert got.finished_at is not None
    store.finish(WORKER, [(job.id, "again")])
    assert store.get(info.id).result == {"n": [1, 2]}, "a job never completes twice"


def test_a_worker_that_lost_its_lease_cannot_finish_the_job(store, clock):
    info = store.enqueue(spec())
    store.claim(None, 1, WORKER)
    clock.sleep(LEASE + 0.3)
    assert store.rescue() == 1
    (again,) = store.claim(None, 1, OTHER)
    assert (again.id, again.attempts) == (info.id, 2)
    store.finish(WORKER, [(info.id, "late")])
    got = store.get(info.id)
    assert (got.status, got.worker_id) == (records.RUNNING, OTHER)
    store.finish(OTHER, [(info.id, "fresh")])
    assert store.get(info.id).result == "fresh"


def test_finish_and_claim_records_then_claims(store):
    first = store.enqueue(spec(priority=1))
    second = store.enqueue(spec())
    assert ids(store.claim(None, 1, WORKER)) == [first.id]
    assert ids(store.finish_and_claim(WORKER, [(first.id, "done")], None, 5)) == [second.id]
    assert store.get(first.id).result == "done"
    assert store.finish_and_claim(WORKER, [(second.id, None)], None, 5) == []
    assert store.get(second.id).status == records.SUCCEEDED


def test_keep_succeeded_false_deletes_a_job_when_it_succeeds(make_store):
    store = make_store(keep_succeeded=False)
    done, failing = store.enqueue(spec()), store.enqueue(spec())
    store.claim(None, 2, WORKER)
    store.finish(WORKER, [(done.id, "result")])
    store.fail(WORKER, failing.id, ERROR)
    assert store.get(done.id) is None
    assert store.get(failing.id).status == records.FAILED, "failures are kept"


def test_retry_counts_the_attempt_keeps_the_error_and_waits_the_delay(store, clock):
    info = store.enqueue(spec(max_attempts=3))
    store.claim(None, 1, WORKER)
    store.retry(OTHER, info.id, ERROR, 0)
    assert store.get(info.id).status == records.RUNNING, "only the claiming worker retries"
    store.retry(WORKER, info.id, ERROR, 1.0)
    got = store.get(info.id)
    assert (got.status, got.attempts, got.error, got.worker_id) == ("ready", 1, ERROR, None)
    assert store.claim(None, 1, WORKER) == [], "not before the delay"
    clock.sleep(1.2)
    (again,) = store.claim(None, 1, WORKER)
    assert (again.id, again.attempts) == (info.id, 2)
    assert store.get(info.id).error == ERROR, "the last error stays while it runs again"
    store.retry(WORKER, info.id, LATER_ERROR, 0)
    clock.sleep(0.05)
    store.claim(None, 1, WORKER)
    store.fail(WORKER, info.id, ERROR)
    got = store.get(info.id)
    assert (got.status, got.attempts, got.error) == (records.FAILED, 3, ERROR)
    assert got.finished_at is not None


def test_fail_is_final_and_only_for_the_claiming_worker(store):
    info = store.enqueue(spec(unique_key="once"))
    store.claim(None, 1, WORKER)
    store.fail(OTHER, info.id, ERROR)
    assert store.get(info.id).status == records.RUNNING
    store.fail(WORKER, info.id, ERROR)
    got = store.get(info.id)
    assert (got.status, got.error) == (records.FAILED, ERROR)
    assert store.claim(None, 1, WORKER) == []
    assert store.enqueue_unique(spec(unique_key="once")).id != info.id, "the key is free"


def test_release_puts_claimed_jobs_back_without_counting_the_attempt(store):
    first, second = store.enqueue(spec(priority=1)), store.enqueue(spec())
    store.claim(None, 2, WORKER)
    store.release(OTHER, [first.id, second.id])
    assert store.get(first.id).status == records.RUNNING, "only the claiming worker releases"
    store.release(WORKER, [first.id, second.id])
    got = store.get(first.id)
    assert (got.status, got.attempts, got.worker_id) == (records.READY, 0, None)
    again = store.claim(None, 2, OTHER)
    assert sorted((job.id, job.attempts) for job in again) == [(first.id, 1), (second.id, 1)]


# -- leases ----------------------------------------------------------------------------


def test_rescue_takes_back_jobs_whose_lease_expired(store, clock):
    spent = store.enqueue(spec(max_attempts=1, priority=3))
    again = store.enqueue(spec(max_attempts=3, priority=2))
    cancelled = store.enqueue(spec(priority=1))
    store.claim(None, 3, WORKER)
    assert store.cancel(cancelled.id) is False
    clock.sleep(LEASE / 2)
    fresh = store.enqueue(spec())
    store.claim(None, 1, OTHER)
    assert store.rescue() == 0, "no lease has expired yet"
    clock.sleep(LEASE / 2 + 0.4)
    assert store.rescue() == 3
    got = store.get(spent.id)
    assert (got.status, got.error["type"]) == (records.FAILED, "pgjobs.exceptions.WorkerLost")
    assert store.get(cancelled.id).status == records.CANCELLED
    got = store.get(again.id)
    assert (got.status, got.attempts, got.worker_id) == (records.READY, 1, None)
    assert store.get(fresh.id).status == records.RUNNING, "its lease runs on"
    (job,) = store.claim(None, 5, WORKER)
    assert (job.id, job.attempts) == (again.id, 2)


def test_rescue_says_which_jobs_it_ended_and_records_an_error_that_imports(store, clock):
    """Issue 20 bug 6: a rescue's error type did not import and its traceback was
    empty, and nobody could tell which jobs a rescue had failed for good (so no
    finish signal was ever sent for them)."""
    from django.utils.module_loading import import_string

    from pgjobs import PgJobsError, WorkerLost

    spent = store.enqueue(spec(max_attempts=1, priority=3))
    again = store.enqueue(spec(max_attempts=3, priority=2))
    cancelled = store.enqueue(spec(priority=1))
    store.claim(None, 3, WORKER)
    assert store.cancel(cancelled.id) is False
    clock.sleep(LEASE + 0.4)
    rescued = store.rescue()
    assert isinstance(rescued, records.Rescued) and rescued == 3
    assert sorted(rescued.ended) == sorted([spent.id, cancelled.id]), "not the one put back"
    expected = {
        spent.id: "attempt 1/1; its lease ran out, and the job was failed",
        again.id: "attempt 1/3; its lease ran out, and the job was put back",
        cancelled.id: "attempt 1/3; its lease ran out, and the job was cancelled",
    }
    for job_id, text in expected.items():
        error = store.get(job_id).error
        assert import_string(error["type"]) is WorkerLost
        assert issubclass(WorkerLost, PgJobsError)
        assert f"worker {WORKER} stopped heartbeating while running {text}" in error["traceback"]
        assert error["message"] == "the worker running this job stopped sending heartbeats"
    again_rescued = store.rescue()
    assert (again_rescued, again_rescued.ended) == (0, ()), "each job is ended once"


def test_heartbeat_extends_leases_and_reports_cancel_requests(store, clock):
    asked, kept = store.enqueue(spec(priority=1)), store.enqueue(spec())
    store.claim(None, 2, WORKER)
    store.register_worker(WORKER, "host", 1, None, 2)
    clock.sleep(LEASE * 0.7)
    assert store.cancel(asked.id) is False, "a running job is asked to stop, not cancelled"
    assert store.heartbeat(WORKER, [asked.id, kept.id]) == [asked.id]
    assert store.heartbeat(OTHER, [asked.id, kept.id]) == [], "not OTHER's jobs"
    clock.sleep(LEASE * 0.7)
    assert store.rescue() == 0, "the heartbeat extended both leases"
    assert store.get(asked.id).status == records.RUNNING
    store.fail(WORKER, asked.id, ERROR, status=records.CANCELLED)
    assert store.get(asked.id).status == records.CANCELLED
    assert store.heartbeat(WORKER, [kept.id]) == []


# -- cancel and requeue ------------------------------------------------------------------


def test_cancel_of_a_ready_job_is_final(store):
    info = store.enqueue(spec())
    assert store.cancel(info.id) is True
    got = store.get(info.id)
    assert (got.status, got.finished_at is not None) == (records.CANCELLED, True)
    assert store.claim(None, 1, WORKER) == []
    assert store.cancel(info.id) is False, "nothing left to cancel"


def test_cancel_many_cancels_ready_jobs_and_asks_running_ones_to_stop(store):
    running, done = store.enqueue(spec(priority=2)), store.enqueue(spec(priority=1))
    store.claim(None, 2, WORKER)
    store.finish(WORKER, [(done.id, None)])
    ready = store.enqueue(spec())
    assert tuple(store.cancel_many([running.id, ready.id, done.id])) == (1, 1)
    assert store.get(ready.id).status == records.CANCELLED
    assert store.get(done.id).status == records.SUCCEEDED
    assert store.get(running.id).status == records.RUNNING
    assert store.heartbeat(WORKER, [running.id]) == [running.id]
    assert tuple(store.cancel_many([running.id])) == (0, 0), "asked once is enough"


def test_a_job_asked_to_stop_that_fails_ends_cancelled_not_retried(store):
    info = store.enqueue(spec(max_attempts=5))
    store.claim(None, 1, WORKER)
    store.cancel(info.id)
    store.retry(WORKER, info.id, ERROR, 0)
    got = store.get(info.id)
    assert (got.status, got.error) == (records.CANCELLED, ERROR)
    assert store.claim(None, 1, WORKER) == []


def test_requeue_makes_failed_and_cancelled_jobs_ready_with_fresh_attempts(store):
    failed, succeeded = store.enqueue(spec(priority=2)), store.enqueue(spec(priority=1))
    cancelled, ready = store.enqueue(spec()), store.enqueue(spec(priority=-1))
    store.claim(None, 2, WORKER)
    store.fail(WORKER, failed.id, ERROR)
    store.finish(WORKER, [(succeeded.id, "ok")])
    store.cancel(cancelled.id)
    assert store.requeue([failed.id, succeeded.id, cancelled.id, ready.id]) == 2
    for job_id in (failed.id, cancelled.id):
        got = store.get(job_id)
        assert (got.status, got.attempts, got.worker_id, got.finished_at) == (
            records.READY,
            0,
            None,
            None,
        )
    assert store.get(succeeded.id).status == records.SUCCEEDED
    taken = [store.claim(None, 1, WORKER) for _ in range(4)]
    assert [ids(batch) for batch in taken] == [[failed.id], [cancelled.id], [ready.id], []]


def test_requeue_leaves_a_job_whose_unique_key_is_taken(store):
    old = store.enqueue_unique(spec(unique_key="k"))
    store.cancel(old.id)
    holder = store.enqueue_unique(spec(unique_key="k"))
    assert store.requeue([old.id]) == 0
    assert store.get(old.id).status == records.CANCELLED
    assert store.enqueue_unique(spec(unique_key="k")).id == holder.id


def test_run_now_makes_deferred_ready_jobs_due_and_leaves_the_rest(store, clock):
    running = store.enqueue(spec(priority=5))
    store.claim(None, 1, WORKER)
    deferred = store.enqueue(spec(run_at=clock.ahead(3600), max_attempts=5))
    due = store.enqueue(spec(priority=-1))
    cancelled = store.enqueue(spec(run_at=clock.ahead(3600)))
    store.cancel(cancelled.id)
    assert store.run_now([deferred.id, due.id, running.id, cancelled.id, 999999]) == 1
    got = store.get(deferred.id)
    assert (got.status, got.attempts, got.max_attempts) == (records.READY, 0, 5)
    assert ids(store.claim(None, 5, WORKER)) == [deferred.id, due.id]
    assert store.get(cancelled.id).status == records.CANCELLED
    assert store.get(running.id).status == records.RUNNING
    assert store.run_now([deferred.id]) == 0, "a running job is no longer ready"


# -- due jobs -----------------------------------------------------------------------------


def test_seconds_until_due_and_count_due_per_queue(store, clock):
    assert store.seconds_until_due(None) is None
    assert store.count_due(None) == 0
    store.enqueue(spec(queue="other", run_at=clock.ahead(60)))
    assert 55 < store.seconds_until_due(None) <= 60
    assert 55 < store.seconds_until_due(["other"]) <= 60
    assert store.seconds_until_due(["default"]) is None
    assert store.count_due(None) == 0
    store.enqueue_many([spec(), spec(run_at=clock.ago(5))])
    assert store.seconds_until_due(None) == 0
    assert store.seconds_until_due(["other"]) > 55
    assert (store.count_due(None), store.count_due(["default"])) == (2, 2)
    assert store.count_due(["other", "third"]) == 0
    store.claim(None, 1, WORKER)
    assert store.count_due(["default"]) == 1, "a running job is not due"


# -- retention -----------------------------------------------------------------------------


def _finished(store, outcomes):
    """Jobs claimed and ended now: ``outcomes`` is a list of "succeeded"/"failed"."""
    infos = [store.enqueue(spec()) for _ in outcomes]
    store.claim(None, len(infos), WORKER)
    for info, outcome in zip(infos, outcomes, strict=True):
        if outcome == records.SUCCEEDED:
            store.finish(WORKER, [(info.id, None)])
        else:
            store.fail(WORKER, info.id, ERROR)
    return [info.id for info in infos]


def test_prune_deletes_finished_jobs_by_age_and_status(store, clock):
    old_ok, old_failed = _finished(store, ["succeeded", "failed"])
    clock.sleep(1.5)
    new_ok, new_failed = _finished(store, ["succeeded", "failed"])
    ready = store.enqueue(spec()).id
    age = datetime.timedelta(seconds=0.75)
    assert store.prune(age, [records.SUCCEEDED], dry_run=True) == 1
    assert store.get(old_ok) is not None, "a dry run deletes nothing"
    assert store.prune(age, [records.SUCCEEDED]) == 1
    assert store.get(old_ok) is None
    kept = [old_failed, new_ok, new_failed, ready]
    assert [store.get(job_id).id for job_id in kept] == kept
    assert store.prune(datetime.timedelta(hours=1), [records.FAILED]) == 0
    assert store.prune(age, [records.FAILED, records.CANCELLED]) == 1
    assert store.get(old_failed) is None and store.get(new_failed) is not None


def test_prune_batch_deletes_at_most_limit_oldest_first(store, clock):
    oldest = _finished(store, ["succeeded"])
    clock.sleep(0.3)
    older = _finished(store, ["succeeded", "succeeded"])
    clock.sleep(0.9)
    recent = _finished(store, ["succeeded"])
    age = datetime.timedelta(seconds=0.6)
    assert store.prune_batch(age, [records.SUCCEEDED], 2) == 2
    assert store.get(oldest[0]) is None
    assert sum(store.get(job_id) is None for job_id in older) == 1
    assert store.prune_batch(age, [records.SUCCEEDED], 2) == 1
    assert store.prune_batch(age, [records.SUCCEEDED], 2) == 0
    assert store.get(recent[0]) is not None


# -- workers and status ------------------------------------------------------------------------


def test_live_workers_lists_registered_workers_until_they_leave(store):
    store.register_worker(WORKER, "host-a", 11, ["default", "other"], 4)
    store.register_worker(OTHER, "host-b", 12, None, 1)
    live = store.live_workers()
    if not store.supports_live_workers:
        assert live is None
        return
    assert sorted(live) == [(WORKER, ["default", "other"]), (OTHER, None)]
    store.unregister_worker(WORKER)
    assert store.live_workers() == [(OTHER, None)]


def test_status_counts_jobs_per_queue_and_lists_live_workers(store):
    store.register_worker(WORKER, "host-a", 11, ["default"], 4)
    store.enqueue_many([spec(), spec(), spec(queue="other")])
    store.claim(["default"], 1, WORKER)
    status = store.status()
    queues = {q["queue"]: q["counts"] for q in status["queues"]}
    assert queues == {"default": {"ready": 1, "running": 1}, "other": {"ready": 1}}
    (worker,) = status["workers"]
    assert (worker["id"], worker["hostname"], worker["pid"], worker["running"]) == (
        WORKER,
        "host-a",
        11,
        1,
    )
    assert (worker["queues"], worker["concurrency"]) == (["default"], 4)


# -- schedules -------------------------------------------------------------------------------


def test_schedules_are_created_once_and_read_back_to_the_microsecond(store, clock):
    if not store.supports_schedules:
        with pytest.raises(NotImplementedError):
            store.get_schedules(["nightly"])
        return
    tick = clock.ago(3600).replace(microsecond=123456)
    assert store.create_schedule("nightly", tick) is True
    assert store.create_schedule("nightly", clock.ago(10)) is False
    got = store.get_schedules(["nightly", "missing"])
    assert list(got) == ["nightly"]
    assert (got["nightly"].last_tick, got["nightly"].last_run) == (tick, None)
    assert store.create_schedule("future", clock.ahead(3600)) is True
    assert store.get_schedules(["future"])["future"].last_tick <= clock.ahead(1)


def new_schedule(store, clock, name):
    """Schedule ``name`` settled through a minute ago; returns that tick and the
    next, half a minute later (due)."""
    if not store.supports_schedules:
        pytest.skip("the store declares no schedules")
    tick = clock.ago(60).replace(microsecond=0)
    assert store.create_schedule(name, tick) is True
    return tick, tick + datetime.timedelta(seconds=30)


def test_advance_schedule_is_a_compare_and_set(store, clock):
    tick, new_tick = new_schedule(store, clock, "hourly")
    assert store.advance_schedule("hourly", tick - datetime.timedelta(seconds=1), new_tick,
                                  [spec()]) is None  # fmt: skip
    assert store.advance_schedule("hourly", tick, clock.ahead(60), [spec()]) is None, (
        "never settled past the store's own clock"
    )
    assert store.count_due(None) == 0, "a refused advance enqueues nothing"
    (info,) = store.advance_schedule("hourly", tick, new_tick, [spec(unique_key="hourly")])
    assert store.get(info.id).status == records.READY
    got = store.get_schedules(["hourly"])["hourly"]
    assert (got.last_tick, got.last_run) == (new_tick, new_tick)
    newer = new_tick + datetime.timedelta(seconds=10)
    assert store.advance_schedule("hourly", new_tick, newer, []) == []
    got = store.get_schedules(["hourly"])["hourly"]
    assert (got.last_tick, got.last_run) == (newer, new_tick), "no job: last_run stays"


def test_of_two_racing_advances_exactly_one_wins(store, clock):
    _, new_tick = new_schedule(store, clock, "race")
    for _ in range(3):
        (read,) = store.get_schedules(["race"]).values()

        def advance(n, last_tick=read.last_tick, new_tick=new_tick):
            return store.advance_schedule("race", last_tick, new_tick, [spec()])

        results = in_threads(2, advance)
        assert sorted(r is None for r in results) == [False, True], results
        new_tick += datetime.timedelta(seconds=1)
    assert store.count_due(None) == 3, "one job per won advance"


# -- capabilities -----------------------------------------------------------------------------


def test_a_listening_store_wakes_wait_within_a_second_of_an_enqueue(store):
    store.listen(None)
    if not store.supports_listen:
        store.enqueue(spec())
        started = time.monotonic()
        assert not store.wait(0.2), "a polling store only sleeps"
        assert time.monotonic() - started >= 0.15
        return
    for _ in range(20):  # what the store tells at first (Redis: "just subscribed")
        if not store.wait(0.05):
            break
    timer = threading.Timer(0.2, lambda: (store.enqueue(spec()), connections.close_all()))
    started = time.monotonic()
    timer.start()
    try:
        woken = store.wait(5)
    finally:
        timer.join(5)
    assert woken, "wait() was not woken by the enqueue"
    assert time.monotonic() - started < 1.2
    if woken is not True:
        assert "default" in {wakeup.queue for wakeup in woken}


def test_a_store_that_lends_its_wakeup_socket_is_read_there_without_blocking(store):
    """``listens_on_socket``: the worker's main thread sleeps on the socket and
    calls ``wait(0)`` once it is readable, so that call must not block."""
    store.listen(None)
    try:
        if not store.listens_on_socket:
            assert store.listen_socket() is None
            return
        sock = store.listen_socket()
        assert sock is not None, "no socket to sleep on"
        started = time.monotonic()
        assert not store.wait(0)
        assert time.monotonic() - started < 0.1, "wait(0) waited"
        timer = threading.Timer(0.2, lambda: (store.enqueue(spec()), connections.close_all()))
        timer.start()
        readable = select.select([sock], [], [], 5)[0]
        timer.join(5)
        assert readable, "the socket did not become readable for the enqueue"
        woken = store.wait(0)
        assert woken, "wait(0) read nothing from a readable socket"
        assert woken is True or "default" in {wakeup.queue for wakeup in woken}
    finally:
        store.stop_listening()
    assert store.listen_socket() is None, "a socket lent after stop_listening"


@pytest.mark.django_db(transaction=True)
def test_enqueues_join_the_callers_transaction_only_when_declared(store):
    try:
        with transaction.atomic():
            info = store.enqueue(spec())
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    if store.enqueues_in_transaction:
        assert store.get(info.id) is None, "rolled back with the caller's transaction"
    else:
        assert store.get(info.id).status == records.READY, "written at once"


def test_deferred_writes_use_ids_reserved_earlier(store):
    if store.enqueues_in_transaction:
        pytest.skip("the store's enqueues join the caller's transaction: no deferred writes")
    reserved = store.reserve_ids(3)
    assert len(set(reserved)) == 3
    specs = [spec(unique_key="k"), spec(queue="other"), spec()]
    promised = [store.new_info(s, job_id) for s, job_id in zip(specs, reserved, strict=True)]
    assert ids(promised) == reserved and promised[1].queue == "other"
    assert store.active_holder("k") is None
    assert ids(store.enqueue_many(specs, ids=reserved)) == reserved
    assert store.active_holder("k").id == reserved[0]
    assert store.get(reserved[1]).queue == "other"
    assert ids(store.enqueue_many([spec(unique_key="k")], ids=store.reserve_ids(1))) == [
        reserved[0]
    ], "a unique job whose key was taken by then is not written"


# -- atomic jobs ------------------------------------------------------------------------


def test_only_stores_that_declare_atomic_jobs_take_them(store):
    if not store.supports_atomic_jobs:
        for call in (
            lambda: store.mark_atomic([1]),
            store.job_transaction,
            lambda: store.finish_in_transaction(WORKER, 1, 1, None),
        ):
            with pytest.raises(NotImplementedError, match="cannot run atomic jobs"):
                call()
        return
    plain, marked = store.enqueue(spec()), store.enqueue(spec())
    store.mark_atomic([marked.id])
    claimed = {job.id: job.atomic for job in store.claim(None, 2, WORKER)}
    assert claimed == {plain.id: False, marked.id: True}


def test_finish_in_transaction_records_only_the_attempt_that_holds_the_lease(store, clock):
    if not store.supports_atomic_jobs:
        pytest.skip(f"{type(store).__name__} has no atomic jobs")
    info = store.enqueue(spec())
    (job,) = store.claim(None, 1, WORKER)
    with store.job_transaction():
        assert not store.finish_in_transaction(OTHER, job.id, 1, "stolen")
        assert not store.finish_in_transaction(WORKER, job.id, 2, "another attempt")
    try:
        with store.job_transaction():
            assert store.finish_in_transaction(WORKER, job.id, 1, {"n": [1]})
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert store.get(info.id).status == records.RUNNING, "rolled back with the transaction"
    with store.job_transaction():
        assert store.finish_in_transaction(WORKER, job.id, 1, {"n": [1]})
    got = store.get(info.id)
    assert (got.status, got.result) == (records.SUCCEEDED, {"n": [1]})
    with store.job_transaction():
        assert not store.finish_in_transaction(WORKER, job.id, 1, "twice")

    lost = store.enqueue(spec())
    store.claim(None, 1, WORKER)
    clock.sleep(LEASE + 0.3)
    assert store.rescue() == 1
    (again,) = store.claim(None, 1, WORKER)  # the same worker, the next attempt
    assert again.attempts == 2
    with store.job_transaction():
        assert not store.finish_in_transaction(WORKER, lost.id, 1, "late")
    assert store.get(lost.id).status == records.RUNNING


def test_an_atomic_success_settles_its_batch_and_its_chain_with_the_transaction(store):
    if not store.supports_atomic_jobs:
        pytest.skip(f"{type(store).__name__} has no atomic jobs")
    batch, infos = store.enqueue_batch([spec()], spec(queue="callbacks"), None, "")
    chained = store.enqueue(spec(after=infos[0].id))
    (job,) = store.claim(None, 1, WORKER)
    try:
        with store.job_transaction():
            assert store.finish_in_transaction(WORKER, job.id, 1, "rolled back")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert store.get_batch(batch.id).pending == 1, "nothing settled by a rolled-back success"
    assert store.get(chained.id).status == records.WAITING
    with store.job_transaction():
        assert store.finish_in_transaction(WORKER, job.id, 1, {"n": 1})
    assert store.get_batch(batch.id).is_finished
    assert store.get(batch.on_finish_id).status == records.READY
    assert store.get(chained.id).status == records.READY
    assert store.previous_result(chained.id) == {"n": 1}


def test_an_atomic_success_is_counted_in_the_figures_with_its_transaction(store):
    if not store.supports_atomic_jobs:
        pytest.skip(f"{type(store).__name__} has no atomic jobs")
    store.enqueue(spec(queue="atomic-figures"))
    (job,) = store.claim(None, 1, WORKER)
    try:
        with store.job_transaction():
            assert store.finish_in_transaction(WORKER, job.id, 1, None)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert _figures(store, "atomic-figures")[0]["succeeded"] == 0, "rolled back with it"
    with store.job_transaction():
        assert store.finish_in_transaction(WORKER, job.id, 1, None)
    outcomes, wait, run, *_ = _figures(store, "atomic-figures")
    assert (outcomes["succeeded"], sum(wait), sum(run)) == (1, 1, 1)


# -- batches and chains ---------------------------------------------------------------------


def batch_of(store, count=3, on_finish=True, on_success=True, **options):
    """A batch of ``count`` no-op jobs with callbacks (queue ``callbacks``)."""
    finish = spec("tests.testapp.jobs.echo", ["finished"], queue="callbacks") if on_finish else None
    success = spec("tests.testapp.jobs.echo", ["all ok"], queue="callbacks") if on_success else None
    return store.enqueue_batch(
        [spec(args=[n], **options) for n in range(count)], finish, success, "a test batch"
    )


def test_enqueue_batch_writes_its_jobs_and_callbacks_waiting(store):
    batch, infos = batch_of(store, 3)
    assert (batch.total, batch.pending, batch.done, batch.is_finished) == (3, 3, 0, False)
    assert [info.status for info in infos] == [records.READY] * 3
    assert ids(store.batch_jobs(batch.id)) == ids(infos)
    got = store.get_batch(batch.id)
    assert got.counts[records.READY] == 3 and got.counts[records.SUCCEEDED] == 0
    assert got.description == batch.description == "a test batch"
    for callback_id in (got.on_finish_id, got.on_success_id):
        assert store.get(callback_id).status == records.WAITING
    assert store.get_batch(batch.id + 1000) is None


def test_waiting_jobs_are_never_claimed(store):
    batch, _ = batch_of(store, 1)
    first = store.enqueue(spec())
    after = store.enqueue(spec(after=first.id))
    assert after.status == records.WAITING
    claimed = ids(store.claim(None, 10, WORKER))
    assert sorted(claimed) == sorted([first.id, *ids(store.batch_jobs(batch.id))])
    assert store.count_due(None) == 0


def test_the_last_finish_of_a_batch_releases_both_callbacks(store):
    batch, infos = batch_of(store, 3)
    jobs = store.claim(None, 10, WORKER)
    store.finish(WORKER, [(jobs[0].id, 1), (jobs[1].id, 2)])
    progress = store.get_batch(batch.id)
    assert (progress.pending, progress.succeeded, progress.counts[records.RUNNING]) == (1, 2, 1)
    assert store.get(batch.on_finish_id).status == records.WAITING
    assert store.claim(["callbacks"], 10, WORKER) == []
    store.finish(WORKER, [(jobs[2].id, 3)])
    done = store.get_batch(batch.id)
    assert (done.pending, done.succeeded, done.is_finished) == (0, 3, True)
    assert done.finished_at is not None
    assert done.counts[records.SUCCEEDED] == 3 and done.counts[records.READY] == 0
    callbacks = store.claim(["callbacks"], 10, WORKER)
    assert sorted(ids(callbacks)) == sorted([batch.on_finish_id, batch.on_success_id])


def test_finish_and_claim_counts_a_batch_as_finish_does(store):
    batch, _ = batch_of(store, 2)
    jobs = store.claim(["default"], 10, WORKER)
    claimed = store.finish_and_claim(WORKER, [(job.id, None) for job in jobs], None, 10)
    # The same call may claim them (PostgreSQL's one statement cannot: it reads
    # ready jobs as they were when it began).
    claimed += store.claim(None, 10, WORKER)
    assert sorted(ids(claimed)) == sorted([batch.on_finish_id, batch.on_success_id])


def test_a_retry_is_not_an_end_and_a_failure_cancels_on_success(store):
    batch, _ = batch_of(store, 3, max_attempts=2)
    first, second, third = store.claim(None, 10, WORKER)
    store.retry(WORKER, first.id, ERROR, 0)
    assert store.get_batch(batch.id).pending == 3, "a retry is not a final outcome"
    store.fail(WORKER, second.id, ERROR)
    store.finish(WORKER, [(third.id, None)])
    (again,) = store.claim(["default"], 10, WORKER)
    assert again.id == first.id
    store.fail(WORKER, again.id, LATER_ERROR, status=records.CANCELLED)
    done = store.get_batch(batch.id)
    assert (done.pending, done.succeeded, done.failed, done.cancelled) == (0, 1, 1, 1)
    assert store.get(batch.on_finish_id).status == records.READY
    refused = store.get(batch.on_success_id)
    assert refused.status == records.CANCELLED
    assert refused.error["type"] == records.DEPENDENCY_TYPE
    assert "1 failed and 1 cancelled" in refused.error["message"]


def test_cancel_batch_cancels_ready_jobs_and_asks_running_ones_to_stop(store):
    batch, infos = batch_of(store, 3)
    (running,) = store.claim(None, 1, WORKER)
    assert store.cancel_batch(batch.id) == (2, 1)
    got = store.get_batch(batch.id)
    assert (got.pending, got.cancelled, got.counts[records.RUNNING]) == (1, 2, 1)
    assert store.heartbeat(WORKER, [running.id]) == [running.id]
    store.fail(WORKER, running.id, ERROR, status=records.CANCELLED)
    assert store.get_batch(batch.id).is_finished
    assert store.get(batch.on_finish_id).status == records.READY
    assert store.get(batch.on_success_id).status == records.CANCELLED


def test_a_rescue_that_ends_a_batch_job_counts_it(store, clock):
    batch, _ = batch_of(store, 1, max_attempts=1)
    store.claim(None, 1, WORKER)
    clock.sleep(LEASE + 0.5)
    assert store.rescue() == 1
    assert store.get_batch(batch.id).failed == 1
    assert store.get(batch.on_finish_id).status == records.READY


def test_requeue_of_a_failed_batch_job_counts_it_pending_again(store):
    batch, _ = batch_of(store, 1, max_attempts=1, on_success=False)
    (job,) = store.claim(None, 1, WORKER)
    store.fail(WORKER, job.id, ERROR)
    assert store.get_batch(batch.id).is_finished
    assert store.requeue([job.id]) == 1
    again = store.get_batch(batch.id)
    assert (again.pending, again.failed) == (1, 0)
    store.claim(["default"], 1, WORKER)
    store.finish(WORKER, [(job.id, None)])
    assert (store.get_batch(batch.id).succeeded, store.get_batch(batch.id).pending) == (1, 0)


def test_workers_finishing_the_last_jobs_at_once_release_each_callback(store):
    count = 6
    batch, _ = batch_of(store, count)
    workers = [f"contract-racer-{n}" for n in range(count)]
    claimed = {}
    for worker in workers:
        (claimed[worker],) = store.claim(["default"], 1, worker)

    def finish(n):
        worker = workers[n]
        return store.finish_and_claim(worker, [(claimed[worker].id, n)], ["callbacks"], 5)

    picked = [job.id for jobs in in_threads(count, finish) for job in jobs]
    picked += ids(store.claim(["callbacks"], 10, WORKER))
    assert sorted(picked) == sorted([batch.on_finish_id, batch.on_success_id])
    assert store.get_batch(batch.id).succeeded == count


def test_a_chained_job_runs_after_its_previous_job_succeeded_with_its_result(store):
    first = store.enqueue(spec())
    second = store.enqueue(spec(after=first.id))
    third = store.enqueue(spec(after=second.id))
    assert (second.status, third.status) == (records.WAITING, records.WAITING)
    (job,) = store.claim(None, 10, WORKER)
    assert job.id == first.id
    store.finish(WORKER, [(first.id, {"rows": [1, 2]})])
    assert store.get(third.id).status == records.WAITING
    (job,) = store.claim(None, 10, WORKER)
    assert job.id == second.id
    assert store.previous_result(second.id) == {"rows": [1, 2]}
    store.finish_and_claim(WORKER, [(second.id, "two")], None, 0)
    assert store.get(third.id).status == records.READY
    assert store.previous_result(third.id) == "two"
    assert store.previous_result(first.id) is None


def test_a_chain_is_cancelled_after_a_job_that_fails_for_good(store):
    first = store.enqueue(spec(max_attempts=2))
    second = store.enqueue(spec(after=first.id))
    third = store.enqueue(spec(after=second.id))
    (job,) = store.claim(None, 10, WORKER)
    store.retry(WORKER, job.id, ERROR, 0)
    assert store.get(second.id).status == records.WAITING, "a retry is not the end"
    (job,) = store.claim(None, 10, WORKER)
    store.fail(WORKER, job.id, ERROR)
    for chained, previous in ((second, first), (third, second)):
        got = store.get(chained.id)
        assert got.status == records.CANCELLED
        assert got.error["type"] == records.DEPENDENCY_TYPE
        assert f"job {previous.id}" in got.error["message"]
    assert store.claim(None, 10, WORKER) == []


def test_cancelling_a_job_cancels_the_jobs_chained_after_it(store):
    first = store.enqueue(spec())
    second = store.enqueue(spec(after=first.id))
    assert store.cancel(first.id)
    assert store.get(second.id).status == records.CANCELLED
    third = store.enqueue(spec(after=second.id))
    assert third.status == records.CANCELLED, "after a job cancelled already"
    assert store.cancel(store.enqueue(spec(after=store.enqueue(spec()).id)).id), "waiting"


def test_a_job_chained_after_a_finished_job_is_settled_at_once(store):
    done = store.enqueue(spec())
    store.claim(None, 1, WORKER)
    store.finish(WORKER, [(done.id, 42)])
    ready = store.enqueue(spec(after=done.id))
    assert ready.status == records.READY and store.previous_result(ready.id) == 42
    failed = store.enqueue(spec())
    store.claim(None, 1, OTHER)  # the ready one is claimed first (lower id)
    store.claim(None, 1, OTHER)
    store.fail(OTHER, failed.id, ERROR)
    assert store.enqueue(spec(after=failed.id)).status == records.CANCELLED
    with pytest.raises(ValueError):
        store.enqueue(spec(after=failed.id + 1000))


def test_a_chain_passes_results_on_when_succeeded_jobs_are_deleted(make_store):
    store = make_store(keep_succeeded=False)
    first = store.enqueue(spec())
    second = store.enqueue(spec(after=first.id))
    batch, _ = batch_of(store, 1)
    store.claim(None, 10, WORKER)
    store.finish(
        WORKER, [(first.id, "gone"), *[(job.id, None) for job in store.batch_jobs(batch.id)]]
    )
    assert store.get(first.id) is None
    assert store.get(second.id).status == records.READY
    assert store.previous_result(second.id) == "gone"
    assert store.get_batch(batch.id).succeeded == 1
    assert store.get(batch.on_success_id).status == records.READY


def test_deferred_writes_of_a_batch_use_ids_reserved_earlier(store):
    if store.enqueues_in_transaction:
        pytest.skip("the store's enqueues join the caller's transaction: no deferred writes")
    batch_id, *reserved = store.reserve_ids(4)
    specs = [spec(), spec()]
    finish = spec(queue="callbacks")
    batch, infos = store.enqueue_batch(specs, finish, None, "", batch_id=batch_id, ids=reserved)
    assert batch.id == batch_id and ids(infos) == reserved[:2]
    assert batch.on_finish_id == reserved[2] and batch.on_success_id is None
    assert store.get(reserved[2]).status == records.WAITING


def test_workers_finishing_jobs_of_the_same_batches_never_deadlock(store):
    for _ in range(5):
        # Claim order interleaves the batches: each worker holds a job of each.
        first, _ = store.enqueue_batch([spec(priority=9), spec(priority=7)])
        second, _ = store.enqueue_batch([spec(priority=8), spec(priority=6)])
        mine = store.claim(["default"], 2, WORKER)
        theirs = store.claim(["default"], 2, OTHER)
        assert len(mine) == len(theirs) == 2

        held = [(WORKER, mine), (OTHER, theirs[::-1])]  # the batches in turn opposite

        def finish(n, held=held):
            worker, jobs = held[n]
            store.finish(worker, [(job.id, None) for job in jobs])

        in_threads(2, finish)
        assert store.get_batch(first.id).is_finished and store.get_batch(second.id).is_finished


@gap(redis="a finished batch's keys expire with its jobs' result ttl instead")
def test_prune_batches_deletes_the_records_of_finished_batches_only(store, clock):
    done, _ = batch_of(store, 1, on_finish=False, on_success=False)
    still, _ = batch_of(store, 1, on_finish=False, on_success=False)
    (job,) = store.claim(None, 1, WORKER)  # the first batch's (lower id)
    store.finish(WORKER, [(job.id, None)])
    clock.sleep(0.05)
    assert store.prune_batches(datetime.timedelta(days=1), 10) == 0
    assert store.prune_batches(datetime.timedelta(0), 10) == 1
    assert store.get_batch(done.id) is None and store.get_batch(still.id) is not None
    assert store.get(job.id).status == records.SUCCEEDED, "its jobs have their own retention"


# -- queue control (pgjobs/queue_control.py) --------------------------------------------


def _queues(jobs):
    return sorted(job.queue for job in jobs)


def test_a_paused_queue_starts_nothing_until_resumed(store):
    held = store.enqueue(spec(queue="emails", priority=5))
    other = store.enqueue(spec(queue="default"))
    store.set_queue_control("emails", paused=True)
    assert store.queue_controls()["emails"].paused
    assert ids(store.claim(None, 10, WORKER)) == [other.id], "every queue but the paused one"
    assert store.claim(["emails"], 10, WORKER) == []
    assert store.get(held.id).status == records.READY
    store.set_queue_control("emails", paused=False)
    assert ids(store.claim(["emails", "default"], 10, WORKER)) == [held.id]


def test_every_worker_sees_a_pause_within_the_refresh(make_store, kind):
    if kind == "memory":
        pytest.skip("one process's memory: no other worker to tell")
    from pgjobs.queue_control import REFRESH_SECONDS

    steering, worker = make_store(), make_store()
    store_jobs = steering.enqueue_many([spec(queue="emails") for _ in range(2)])
    assert len(worker.claim(["emails"], 1, WORKER)) == 1  # its view is now cached
    steering.set_queue_control("emails", paused=True)
    time.sleep(REFRESH_SECONDS + 0.1)
    assert worker.claim(["emails"], 1, WORKER) == []
    assert steering.get(store_jobs[1].id).status == records.READY


def test_claims_from_steered_queues_keep_what_a_job_is(store):
    """A claim that leaves the plain path (a paused or limited queue among those
    asked) returns jobs as the plain claim does: an atomic job stays atomic."""
    if not store.supports_atomic_jobs:
        pytest.skip(f"{type(store).__name__} has no atomic jobs")
    limited, other = store.enqueue(spec(queue="heavy")), store.enqueue(spec(queue="light"))
    store.mark_atomic([limited.id, other.id])
    store.set_queue_control("heavy", concurrency=5)
    store.set_queue_control("paused", paused=True)
    claimed = store.claim(["heavy", "light", "paused"], 10, WORKER)
    assert {job.id: job.atomic for job in claimed} == {limited.id: True, other.id: True}


def test_a_concurrency_limit_holds_when_workers_race(store):
    store.set_queue_control("heavy", concurrency=3)
    store.enqueue_many([spec(queue="heavy") for _ in range(20)])
    free = ids(store.enqueue_many([spec(queue="light") for _ in range(20)]))

    def claim_twice(n):
        taken = store.claim(None, 4, f"worker-{n}")
        return taken + store.claim(["heavy", "light"], 4, f"worker-{n}")

    taken = [job for batch in in_threads(8, claim_twice) for job in batch]
    assert _queues(taken).count("heavy") == 3, "exactly the limit, however the claims race"
    assert sorted(job.id for job in taken if job.queue == "light") == sorted(free)
    # One heavy job ends: one more may start, and no more.
    first = next(job for job in taken if job.queue == "heavy")
    store.finish(store.get(first.id).worker_id, [(first.id, None)])
    assert _queues(store.claim(None, 10, WORKER)) == ["heavy"]
    assert store.claim(None, 10, WORKER) == []


def test_a_rate_limit_caps_starts_per_period_across_workers(store, clock):
    store.set_queue_control("api", rate=4, period=60)
    store.enqueue_many([spec(queue="api") for _ in range(12)])
    taken = in_threads(6, lambda n: store.claim(["api"], 3, f"worker-{n}"))
    assert sum(len(batch) for batch in taken) == 4, "at most rate starts in a window"
    assert store.claim(["api"], 3, WORKER) == []
    store.set_queue_control("api", rate=3, period=0.4)
    clock.sleep(0.5)  # a new window opens
    assert len(store.claim(["api"], 10, WORKER)) == 3
    assert store.claim(["api"], 10, WORKER) == []


def test_limits_come_from_the_setting_unless_stored(make_store, settings):
    settings.PGJOBS = {**getattr(settings, "PGJOBS", {}), "QUEUES": {"api": {"concurrency": 2}}}
    store = make_store()
    store.enqueue_many([spec(queue="api") for _ in range(5)])
    assert len(store.claim(None, 5, WORKER)) == 2
    assert store.queue_controls().get("api", records.QueueControl("api")).concurrency is None
    store.set_queue_control("api", concurrency=3)  # stored: overrides the setting
    assert len(store.claim(None, 5, WORKER)) == 1
    store.set_queue_control("api", concurrency=None)  # cleared: the setting again
    assert store.claim(None, 5, WORKER) == []


def test_a_claim_takes_limited_and_free_queues_in_one_call(store):
    store.set_queue_control("heavy", concurrency=1)
    store.enqueue_many([spec(queue="heavy", priority=1) for _ in range(3)])
    store.enqueue_many([spec(queue="light") for _ in range(3)])
    got = store.claim(["heavy", "light"], 3, WORKER)
    assert [job.queue for job in got] == ["heavy", "light", "light"], "priority order kept"


def test_snooze_makes_the_job_ready_later_without_using_an_attempt(store, clock):
    info = store.enqueue(spec(max_attempts=1))
    (job,) = store.claim(None, 1, WORKER)
    store.snooze(OTHER, job.id, 0.3)
    assert store.get(info.id).status == records.RUNNING, "only the claiming worker snoozes"
    store.snooze(WORKER, job.id, 0.3)
    got = store.get(info.id)
    assert (got.status, got.attempts, got.worker_id, got.error) == (records.READY, 0, None, None)
    assert got.run_at > clock.now()
    assert store.claim(None, 1, WORKER) == [], "never early"
    clock.sleep(0.4)
    (again,) = store.claim(None, 1, WORKER)
    assert (again.id, again.attempts) == (info.id, 1)


# -- history and figures ------------------------------------------------------------------


def test_job_attempts_keep_each_failed_attempt_then_the_running_or_succeeded_one(store, clock):
    info = store.enqueue(spec(max_attempts=3))
    assert store.job_attempts(info.id) == [], "not started yet"
    store.claim(None, 1, WORKER)
    store.retry(WORKER, info.id, ERROR, 0)
    clock.sleep(0.05)
    store.claim(None, 1, OTHER)
    store.retry(OTHER, info.id, LATER_ERROR, 0)
    clock.sleep(0.05)
    store.claim(None, 1, WORKER)
    running = store.job_attempts(info.id)
    assert [(a.attempt, a.outcome, a.worker_id) for a in running] == [
        (1, records.RETRIED, WORKER),
        (2, records.RETRIED, OTHER),
        (3, records.RUNNING, WORKER),
    ]
    assert [a.error for a in running] == [ERROR, LATER_ERROR, None]
    assert running[-1].finished_at is None
    store.finish(WORKER, [(info.id, None)])
    attempts = store.job_attempts(info.id)
    assert [(a.attempt, a.outcome) for a in attempts][-1] == (3, records.SUCCEEDED)
    for attempt in attempts:
        assert attempt.started_at <= attempt.finished_at
    assert attempts[0].finished_at <= attempts[1].started_at, "in the order they ran"
    assert attempts[:2] == running[:2], "kept as they were"
    assert store.job_attempts(info.id + 1000) == [], "no such job"


def test_job_attempts_of_jobs_failed_cancelled_and_lost(store, clock):
    failed = store.enqueue(spec(max_attempts=1, priority=3))
    cancelled = store.enqueue(spec(priority=2))
    lost = store.enqueue(spec(priority=1))
    store.claim(None, 3, WORKER)
    store.fail(WORKER, failed.id, ERROR)
    store.cancel(cancelled.id)
    store.retry(WORKER, cancelled.id, LATER_ERROR, 0)  # asked to stop: ends cancelled
    clock.sleep(LEASE + 0.4)
    assert store.rescue() == 1
    ((attempt,),) = [store.job_attempts(failed.id)]
    assert (attempt.attempt, attempt.outcome, attempt.error) == (1, records.FAILED, ERROR)
    ((attempt,),) = [store.job_attempts(cancelled.id)]
    assert (attempt.outcome, attempt.error) == (records.CANCELLED, LATER_ERROR)
    ((attempt,),) = [store.job_attempts(lost.id)]
    assert (attempt.attempt, attempt.outcome, attempt.worker_id) == (1, records.RETRIED, WORKER)
    assert attempt.error["type"] == "pgjobs.exceptions.WorkerLost"
    assert attempt.error == store.get(lost.id).error


def test_attempts_go_with_their_job(make_store, clock):
    store = make_store()
    info = store.enqueue(spec(max_attempts=1))
    store.claim(None, 1, WORKER)
    store.fail(WORKER, info.id, ERROR)
    assert len(store.job_attempts(info.id)) == 1
    assert store.requeue([info.id]) == 1
    assert store.job_attempts(info.id) == [], "requeued afresh, attempts from 0"
    store.claim(None, 1, WORKER)
    store.fail(WORKER, info.id, LATER_ERROR)
    clock.sleep(0.3)
    assert store.prune(datetime.timedelta(seconds=0.2), [records.FAILED]) == 1
    assert store.job_attempts(info.id) == []
    fresh = make_store(keep_succeeded=False)
    info = fresh.enqueue(spec(max_attempts=2))
    fresh.claim(None, 1, WORKER)
    fresh.retry(WORKER, info.id, ERROR, 0)
    clock.sleep(0.05)
    fresh.claim(None, 1, WORKER)
    fresh.finish_and_claim(WORKER, [(info.id, None)], None, 1)
    assert fresh.get(info.id) is None
    assert fresh.job_attempts(info.id) == [], "deleted with the job that succeeded"


def _figures(store, queue):
    """Outcomes, wait and run counts and sums of ``queue`` over the last hour."""
    from pgjobs import stats

    minutes = [m for m in store.minute_figures(datetime.timedelta(hours=1)) if m.queue == queue]
    outcomes = {o: sum(m.outcomes[o] for m in minutes) for o in records.OUTCOMES}
    wait = stats.add_buckets(*(m.wait_buckets for m in minutes))
    run = stats.add_buckets(*(m.run_buckets for m in minutes))
    return outcomes, wait, run, sum(m.wait_sum for m in minutes), sum(m.run_sum for m in minutes)


def test_minute_figures_count_each_ended_attempt_by_outcome_with_its_times(store, clock):
    from pgjobs import stats

    jobs = [store.enqueue(spec(queue="figures", priority=-n)) for n in range(5)]
    other = store.enqueue(spec(queue="elsewhere"))
    clock.sleep(0.3)
    store.claim(["figures"], 5, WORKER)
    store.claim(["elsewhere"], 1, OTHER)
    clock.sleep(0.3)
    store.finish_and_claim(WORKER, [(jobs[0].id, None), (jobs[1].id, 7)], None, 0)
    store.retry(WORKER, jobs[2].id, ERROR, 60)
    store.fail(WORKER, jobs[3].id, ERROR)
    store.cancel(jobs[4].id)
    store.retry(WORKER, jobs[4].id, ERROR, 0)
    store.finish(OTHER, [(other.id, None)])
    store.finish(OTHER, [(jobs[0].id, None)])  # not its job: nothing counted
    outcomes, wait, run, wait_sum, run_sum = _figures(store, "figures")
    assert outcomes == {"succeeded": 2, "failed": 1, "retried": 1, "cancelled": 1}
    assert sum(wait) == sum(run) == 5
    assert sum(wait[stats.bucket_of(0.25) :]) == 5, "each waited 0.3 s or more"
    assert sum(run[stats.bucket_of(0.25) :]) == 5, "each ran 0.3 s or more"
    assert 1.5 <= wait_sum < 60 and 1.5 <= run_sum < 60
    assert _figures(store, "elsewhere")[0]["succeeded"] == 1
    assert store.minute_figures(clock.ahead(120)) == [], "none from the future"


def test_queue_figures_tell_ready_deferred_running_failed_and_the_oldest_wait(store, clock):
    store.enqueue(spec(queue="qa"))
    clock.sleep(0.3)
    store.enqueue(spec(queue="qa"))
    store.enqueue(spec(queue="qa", run_at=clock.ahead(3600)))
    store.enqueue(spec(queue="qb"))
    failing = store.enqueue(spec(queue="qc", max_attempts=1))
    store.claim(["qb"], 1, WORKER)
    store.claim(["qc"], 1, WORKER)
    store.fail(WORKER, failing.id, ERROR)
    figures = {f.queue: f for f in store.queue_figures()}
    assert sorted(figures) == ["qa", "qb", "qc"]
    qa, qb, qc = figures["qa"], figures["qb"], figures["qc"]
    assert (qa.ready, qa.deferred, qa.running, qa.failed_last_hour) == (2, 1, 0, 0)
    assert 0.3 <= qa.oldest_due_seconds < 30
    assert (qb.ready, qb.deferred, qb.running, qb.oldest_due_seconds) == (0, 0, 1, None)
    assert (qc.ready, qc.running, qc.failed_last_hour) == (0, 0, 1)


def test_prune_figures_deletes_old_minutes_only(store, clock):
    info = store.enqueue(spec(queue="pruned"))
    store.claim(None, 1, WORKER)
    store.finish(WORKER, [(info.id, None)])
    assert store.prune_figures(datetime.timedelta(days=1)) == 0
    assert _figures(store, "pruned")[0]["succeeded"] == 1
    assert store.prune_figures(datetime.timedelta(minutes=-2)) >= 1
    assert _figures(store, "pruned")[0]["succeeded"] == 0


def test_folding_the_figures_shards_changes_no_figure(store, clock):
    for worker in (WORKER, OTHER, "contract-worker-c", "contract-worker-d"):
        info = store.enqueue(spec(queue="folded"))
        store.claim(["folded"], 1, worker)
        store.finish(worker, [(info.id, None)])
    before = _figures(store, "folded")
    assert before[0]["succeeded"] == 4
    assert store.fold_figures(datetime.timedelta(minutes=1)) == 0, "the last minutes stay"
    store.fold_figures(datetime.timedelta(minutes=-2))  # every minute, for the test
    after = _figures(store, "folded")
    assert after[:3] == before[:3]
    assert after[3:] == pytest.approx(before[3:]), "sums of seconds, added in another order"
    assert store.fold_figures(datetime.timedelta(minutes=-2)) == 0, "folded once"


def test_outcomes_of_batch_and_chain_jobs_keep_their_attempts_and_figures(store):
    # The stores settle these in other statements than plain jobs' (PostgreSQL's
    # retry and fail leave them to the ORM's transaction): attempts and figures too.
    batch, infos = batch_of(store, 2, on_success=False, queue="settled", max_attempts=2)
    first = store.enqueue(spec(queue="settled", priority=-1))
    chained = store.enqueue(spec(after=first.id))
    jobs = {job.id: job for job in store.claim(["settled"], 3, WORKER)}
    assert sorted(jobs) == sorted([*ids(infos), first.id])
    store.retry(WORKER, infos[0].id, ERROR, 0)
    store.fail(WORKER, infos[1].id, ERROR)
    store.fail(WORKER, first.id, LATER_ERROR)
    assert [a.outcome for a in store.job_attempts(infos[0].id)][:1] == [records.RETRIED]
    assert [a.outcome for a in store.job_attempts(infos[1].id)] == [records.FAILED]
    assert [a.outcome for a in store.job_attempts(first.id)] == [records.FAILED]
    assert store.get(chained.id).status == records.CANCELLED
    assert store.get_batch(batch.id).failed == 1
    outcomes = _figures(store, "settled")[0]
    assert (outcomes["retried"], outcomes["failed"]) == (1, 2)


def test_a_job_asked_to_stop_that_snoozes_ends_cancelled_and_counts_in_its_batch(store, clock):
    batch, (asked, _) = batch_of(store, 2, on_success=False)
    store.claim(["default"], 2, WORKER)
    assert store.cancel(asked.id) is False, "running: asked to stop"
    store.snooze(WORKER, asked.id, 0)
    got = store.get(asked.id)
    assert got.status == records.CANCELLED, "a cancelled job is not made ready again"
    assert got.finished_at is not None
    clock.sleep(0.1)
    assert store.claim(["default"], 10, WORKER) == [], "it never runs again"
    assert (store.get_batch(batch.id).pending, store.get_batch(batch.id).cancelled) == (1, 1)


def test_a_snooze_is_not_an_end_of_a_batch_job_nor_of_a_chained_one(store, clock):
    batch, (member,) = batch_of(store, 1)
    first = store.enqueue(spec(queue="first"))
    after = store.enqueue(spec(queue="after", after=first.id))
    store.claim(None, 10, WORKER)
    store.snooze(WORKER, member.id, 0)
    store.snooze(WORKER, first.id, 0)
    assert store.get_batch(batch.id).pending == 1, "a snoozed member is still to come"
    assert store.get(batch.on_finish_id).status == records.WAITING
    assert store.get(after.id).status == records.WAITING, "a snooze is no success"
    clock.sleep(0.1)
    assert sorted(ids(store.claim(["default", "first"], 10, WORKER))) == [member.id, first.id]
