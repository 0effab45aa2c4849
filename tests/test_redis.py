"""``RedisBackend`` and ``RedisStore`` (``pgjobs/backends/redis.py``,
``pgjobs/stores/redis.py``): the store contract on Redis, exact claim order,
atomic claims across processes, pushes on commit, pub/sub wake-ups, and real
worker processes that are stopped, SIGKILLed, or lose Redis itself mid-run.

Run with ``PGJOBS_TEST_DB=redis`` (``make test`` does); under the database
vendors this module is skipped.
"""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgjobs import JobFailed, JobNotFound, background, records
from pgjobs.handler import get_backend
from tests.conftest import (
    JOBS_IN_REDIS,
    REQUIRE_SERVICES,
    ROOT,
    run_jobs,
    status_counts,
    unfinished_jobs,
    wait_for,
    work_until,
)
from tests.testapp import jobs
from tests.testapp.models import Event, Execution

pytestmark = pytest.mark.skipif(not JOBS_IN_REDIS, reason="run with PGJOBS_TEST_DB=redis")

WORKER = "test-worker-a"
OTHER = "test-worker-b"
ERROR = {"type": "builtins.ValueError", "message": "no", "traceback": "..."}


class Rollback(Exception):
    """Raised in an ``atomic()`` block to roll it back."""


@pytest.fixture
def store():
    return get_backend().get_store()


def spec(func="tests.testapp.jobs.noop", when=None, **options):
    """A job as the backend hands it to the store: validated, encoded, signed."""
    return get_backend().prepare(func, [], {}, when=when, **options)


def ago(seconds):
    return timezone.now() - datetime.timedelta(seconds=seconds)


def job(job_id):
    info = get_backend().get_store().get(job_id)
    assert info is not None, f"job {job_id} is gone"
    return info


def claim_order(info):
    return (-info.priority, info.run_at, info.id)


# -- the store contract ---------------------------------------------------------------


@pytest.mark.django_db
def test_claim_takes_due_jobs_in_claim_order_up_to_the_limit(store):
    low = background.enqueue(jobs.noop, priority=-1)
    high = background.enqueue(jobs.noop, priority=50)
    old = background.defer(jobs.noop, when=ago(60))
    later = background.defer(jobs.noop, when=datetime.timedelta(hours=1), priority=100)

    assert [j.id for j in store.claim(None, 2, WORKER)] == [high.id, old.id]
    assert [j.id for j in store.claim(None, 10, WORKER)] == [low.id]
    assert store.claim(None, 10, WORKER) == []
    assert job(later.id).status == records.READY


@pytest.mark.django_db
def test_claim_marks_the_job_running_for_this_worker_with_a_lease(store):
    ref = background.enqueue(jobs.add, args=[1, 2], max_attempts=4, queue="other", timeout=7)
    (claimed,) = store.claim(None, 1, WORKER)
    assert (claimed.id, claimed.func) == (ref.id, "tests.testapp.jobs.add")
    assert (claimed.args, claimed.kwargs, claimed.timeout) == ([1, 2], {}, 7.0)
    assert (claimed.queue, claimed.attempts, claimed.max_attempts) == ("other", 1, 4)
    assert claimed.signature and claimed.run_at == ref.run_at
    info = job(ref.id)
    assert (info.status, info.worker_id, info.attempts) == (records.RUNNING, WORKER, 1)
    assert info.started_at >= info.created_at
    lease = store.client.zscore(store.key("running"), ref.id)
    assert lease / 1e6 - info.started_at.timestamp() == pytest.approx(store.lease_seconds, abs=0.01)


@pytest.mark.django_db
def test_claim_only_from_the_queues_asked_for(store):
    default = background.enqueue(jobs.noop)
    other = background.enqueue(jobs.noop, queue="other")
    assert [j.id for j in store.claim(["other"], 10, WORKER)] == [other.id]
    assert store.claim(["other"], 10, WORKER) == []
    assert [j.id for j in store.claim(["default", "other"], 10, WORKER)] == [default.id]


@pytest.mark.django_db
def test_finish_records_results_only_for_the_claiming_worker_and_only_once(store):
    ref = background.enqueue(jobs.add, args=[1, 2])
    (claimed,) = store.claim(None, 1, WORKER)
    store.finish(OTHER, [(claimed.id, "stolen")])
    assert ref.refresh().status == records.RUNNING, "another worker must not complete the job"
    store.finish(WORKER, [(claimed.id, 3)])
    assert (ref.refresh().status, ref.result) == (records.SUCCEEDED, 3)
    assert ref.finished_at >= ref.started_at
    store.finish(WORKER, [(claimed.id, 4)])
    assert ref.refresh().result == 3, "a job never completes twice"


@pytest.mark.django_db
def test_finish_and_claim_records_then_claims_in_one_call(store):
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
def test_retry_makes_the_job_ready_later_with_its_error(store):
    ref = background.enqueue(jobs.noop)
    (claimed,) = store.claim(None, 1, WORKER)
    store.retry(OTHER, claimed.id, ERROR, 60)
    assert job(ref.id).status == records.RUNNING
    store.retry(WORKER, claimed.id, ERROR, 60)
    info = job(ref.id)
    assert (info.status, info.attempts, info.error, info.worker_id) == (
        records.READY,
        1,
        ERROR,
        None,
    )
    assert info.run_at > timezone.now() + datetime.timedelta(seconds=50)
    assert store.claim(None, 1, WORKER) == []
    assert 50 < store.seconds_until_due(None) <= 60


@pytest.mark.django_db
def test_fail_is_final_and_frees_the_unique_key(store):
    ref = background.enqueue(jobs.noop, unique_key="once")
    (claimed,) = store.claim(None, 1, WORKER)
    store.fail(OTHER, claimed.id, ERROR)
    assert job(ref.id).status == records.RUNNING
    store.fail(WORKER, claimed.id, ERROR)
    ref.refresh()
    assert (ref.status, ref.error) == (records.FAILED, ERROR)
    assert ref.finished_at is not None
    assert store.claim(None, 1, WORKER) == []
    assert background.enqueue(jobs.noop, unique_key="once").id != ref.id


@pytest.mark.django_db
def test_heartbeat_extends_leases_and_reports_cancel_requests(store):
    ref = background.enqueue(jobs.noop)
    store.claim(None, 1, WORKER)
    store.client.zadd(store.key("running"), {ref.id: 0})  # expired long ago
    assert store.heartbeat(OTHER, [ref.id]) == []
    assert store.client.zscore(store.key("running"), ref.id) == 0
    assert store.heartbeat(WORKER, [ref.id]) == []
    assert store.client.zscore(store.key("running"), ref.id) > time.time() * 1e6
    assert store.rescue() == 0
    assert ref.cancel() is False, "a running job is asked to stop, not cancelled"
    assert store.heartbeat(WORKER, [ref.id]) == [ref.id]


@pytest.mark.django_db
def test_rescue_puts_back_jobs_whose_lease_expired(store):
    again = background.enqueue(jobs.noop, max_attempts=3, unique_key="again")
    done = background.enqueue(jobs.noop, max_attempts=1, unique_key="done")
    alive = background.enqueue(jobs.noop)
    store.claim(None, 3, WORKER)
    store.client.zadd(store.key("running"), {again.id: 0, done.id: 0})

    assert store.rescue() == 2

    info = job(again.id)
    assert (info.status, info.attempts, info.worker_id) == (records.READY, 1, None)
    assert info.error["type"] == "pgjobs.exceptions.WorkerLost"
    info = job(done.id)
    assert (info.status, info.attempts) == (records.FAILED, 1)
    assert job(alive.id).status == records.RUNNING
    # The rescued job runs again; its old worker can no longer complete it.
    (claimed,) = store.claim(None, 1, OTHER)
    assert (claimed.id, claimed.attempts) == (again.id, 2)
    store.finish(WORKER, [(again.id, "late")])
    assert job(again.id).status == records.RUNNING
    # The job that ran out of attempts gave its unique key up; the other keeps it.
    assert background.enqueue(jobs.noop, unique_key="done").id != done.id
    assert background.enqueue(jobs.noop, unique_key="again").id == again.id


@pytest.mark.django_db
def test_release_puts_claimed_jobs_back_without_counting_an_attempt(store):
    ref = background.enqueue(jobs.noop, priority=5)
    store.claim(None, 1, WORKER)
    store.release(OTHER, [ref.id])
    assert job(ref.id).status == records.RUNNING
    store.release(WORKER, [ref.id])
    info = job(ref.id)
    assert (info.status, info.attempts, info.worker_id, info.started_at) == (
        records.READY,
        0,
        None,
        None,
    )
    later = background.enqueue(jobs.noop, priority=5)
    assert [j.id for j in store.claim(None, 2, WORKER)] == [ref.id, later.id], "its place kept"


@pytest.mark.django_db
def test_cancel_requeue_and_cancel_many(store):
    first = background.enqueue(jobs.noop)
    second = background.enqueue(jobs.noop)
    deferred = background.defer(jobs.noop, when=datetime.timedelta(hours=1))
    (claimed,) = store.claim(None, 1, WORKER)
    assert claimed.id == first.id
    assert store.cancel(first.id) is False
    assert store.cancel_many([first.id, second.id, deferred.id]) == (2, 0), "asked once only"
    assert job(second.id).status == job(deferred.id).status == records.CANCELLED
    assert store.claim(None, 1, WORKER) == []
    assert store.seconds_until_due(None) is None

    assert store.requeue([second.id, first.id]) == 1, "a running job is not requeued"
    info = job(second.id)
    assert (info.status, info.attempts, info.finished_at) == (records.READY, 0, None)
    assert store.client.ttl(store.key("job", second.id)) == -1, "ready jobs do not expire"
    assert [j.id for j in store.claim(None, 5, WORKER)] == [second.id]


@pytest.mark.django_db
def test_seconds_until_due_and_count_due(store):
    assert store.seconds_until_due(None) is None
    assert store.count_due(None) == 0
    background.defer(jobs.noop, when=datetime.timedelta(seconds=30), queue="other")
    assert 29 < store.seconds_until_due(None) <= 30
    assert store.seconds_until_due(["default"]) is None
    assert store.count_due(None) == 0
    background.defer(jobs.noop, when=ago(10))
    assert store.seconds_until_due(None) == 0
    assert store.seconds_until_due(["other"]) > 20
    assert (store.count_due(None), store.count_due(["other"])) == (1, 0)


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
    assert info.run_at == ref.run_at == info.created_at
    assert store.get(ref.id + 1000) is None
    with pytest.raises(JobNotFound):
        background.get(ref.id + 1000)


@pytest.mark.django_db
def test_finished_jobs_expire_after_result_ttl_and_prune_deletes_them_sooner(store):
    ok = background.enqueue(jobs.add, args=[1, 1])
    bad = background.enqueue(jobs.fail_always, max_attempts=1)
    waiting = background.enqueue(jobs.noop, priority=-1)
    store.claim(None, 2, WORKER)
    store.finish(WORKER, [(ok.id, 2)])
    store.fail(WORKER, bad.id, ERROR)
    ttl = store.client.ttl(store.key("job", ok.id))
    assert 7 * 24 * 3600 - 5 < ttl <= 7 * 24 * 3600
    assert store.client.ttl(store.key("job", waiting.id)) == -1

    week = datetime.timedelta(days=7)
    assert store.prune(week, ["succeeded", "failed"], dry_run=True) == 0
    assert store.prune(datetime.timedelta(0), ["succeeded"], dry_run=True) == 1
    assert store.prune(datetime.timedelta(0), ["succeeded", "failed"], batch_size=1) == 2
    assert store.get(ok.id) is None and store.get(bad.id) is None
    assert status_counts() == {records.READY: 1}


@pytest.mark.django_db
def test_keep_succeeded_false_deletes_a_job_when_it_succeeds(settings):
    options = {**settings.PGJOBS["OPTIONS"], "KEEP_SUCCEEDED": False}
    settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": options}
    ok = background.enqueue(jobs.add, args=[1, 1])
    bad = background.enqueue(jobs.fail_always, max_attempts=1)
    run_jobs()
    with pytest.raises(JobNotFound):
        ok.refresh()
    assert bad.refresh().status == records.FAILED


@pytest.mark.django_db
def test_status_counts_queues_and_live_workers(store):
    background.enqueue_many([(jobs.noop, [], {})] * 3)
    background.defer(jobs.noop, when=ago(5), queue="other")
    store.register_worker(WORKER, "host-a", 123, ["default"], 4)
    store.claim(["default"], 1, WORKER)
    status = store.status()
    (worker,) = status["workers"]
    assert (worker["id"], worker["hostname"], worker["pid"], worker["running"]) == (
        WORKER,
        "host-a",
        123,
        1,
    )
    assert worker["queues"] == ["default"] and worker["concurrency"] == 4
    default, other = status["queues"]
    assert default["counts"] == {records.READY: 2, records.RUNNING: 1}
    assert other["counts"] == {records.READY: 1}
    assert 4 < other["oldest_due_seconds"] < 30
    store.unregister_worker(WORKER)
    assert store.status()["workers"] == []


# -- claim order, exactly -----------------------------------------------------------------

job_sets = st.lists(
    st.tuples(
        st.sampled_from([-100, -1, 0, 0, 7, 100]),  # priority
        st.one_of(st.none(), st.integers(0, 3_000_000)),  # µs in the past; None: now
        st.sampled_from(["default", "other"]),
        st.booleans(),  # deferred into the future: never claimed
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(job_set=job_sets)
def test_claims_follow_priority_then_run_at_then_id_to_the_microsecond(store, job_set):
    """No float packing: run_at values a microsecond apart, and equal ones, keep
    their order at every priority, across queues."""
    store.flush()
    base = timezone.now()
    specs = []
    for priority, micros_ago, queue, future in job_set:
        when = None
        if future:
            when = base + datetime.timedelta(hours=1, microseconds=micros_ago or 0)
        elif micros_ago is not None:
            when = base - datetime.timedelta(microseconds=micros_ago)
        specs.append(spec(when=when, priority=priority, queue=queue))
    infos = store.enqueue_many(specs)
    due = sorted((i for i in infos if i.run_at <= timezone.now()), key=claim_order)

    other = [i.id for i in due if i.queue == "other"]
    claimed = []
    while batch := store.claim(["other"], 1, WORKER):
        claimed.extend(j.id for j in batch)
    assert claimed == other
    claimed = []
    while batch := store.claim(["default", "other"], 2, WORKER):
        claimed.extend(j.id for j in batch)
    assert claimed == [i.id for i in due if i.queue == "default"]


@pytest.mark.django_db
def test_jobs_that_come_due_take_their_place_by_run_at_not_by_id(store):
    """A deferred job joins the ready jobs in run_at order when it comes due."""
    early = background.defer(jobs.noop, when=datetime.timedelta(seconds=1))
    late = background.enqueue(jobs.noop)  # run_at: now, before early's run_at
    wait_for(lambda: store.count_due(None) == 2, timeout=5, message="early come due")
    assert [j.id for j in store.claim(None, 5, WORKER)] == [late.id, early.id]


# -- atomic claims across processes ------------------------------------------------------

CLAIMER = """
import json, os, sys, time
import django
django.setup()
from pgjobs.handler import get_backend
store = get_backend().get_store()
print("ready", flush=True)
while not store.client.exists(store.key("test-go")):
    time.sleep(0.001)
claimed = []
while jobs := store.claim(None, int(sys.argv[1]), sys.argv[2]):
    claimed.extend(job.id for job in jobs)
print(json.dumps(claimed), flush=True)
"""


@pytest.mark.django_db
@pytest.mark.slow
def test_processes_claiming_at_once_never_take_a_job_twice(store):
    infos = store.enqueue_many([spec() for _ in range(4000)])
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PGJOBS_TEST_DB": "redis"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(limit), f"claimer-{n}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, limit in enumerate([1, 1, 3, 7])
    ]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        store.client.set(store.key("test-go"), 1)
        claimed = [json.loads(process.communicate(timeout=120)[0]) for process in processes]
    finally:
        for process in processes:
            process.kill()
    everything = [job_id for ids in claimed for job_id in ids]
    assert sorted(everything) == sorted(info.id for info in infos), "each job claimed once"
    assert sum(1 for ids in claimed if ids) > 1, "the processes competed"
    assert status_counts() == {records.RUNNING: 4000}


# -- pushed on commit ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_enqueued_in_a_transaction_is_pushed_when_it_commits(store):
    pubsub = store.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.key("wake", "default"))
    pubsub.get_message(timeout=1)
    with transaction.atomic():
        ref = background.enqueue(jobs.record, args=["after commit"])
        many = background.enqueue_many([(jobs.noop, [], {})] * 2)
        assert isinstance(ref.id, int) and ref.status == records.READY
        assert store.get(ref.id) is None, "not in Redis before the commit"
        assert store.count_due(None) == 0
        assert pubsub.get_message(timeout=0.2) is None, "no wake-up before the commit"
    assert pubsub.get_message(timeout=5)["data"] == "default"
    assert ref.refresh().status == records.READY
    assert [ref.id, *(r.id for r in many)] == sorted(r.id for r in [ref, *many])
    run_jobs()
    assert ref.refresh().status == records.SUCCEEDED
    assert Execution.objects.filter(key="after commit").exists()
    pubsub.close()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_no_job(store):
    with pytest.raises(Rollback), transaction.atomic():
        Event.objects.create(name="caller's data")
        ref = background.enqueue(jobs.record, args=["rolled back"])
        background.enqueue_many([(jobs.record, ["also rolled back"], {})])
        background.defer(jobs.record, when=datetime.timedelta(seconds=1), args=["deferred"])
        background.enqueue(jobs.noop, unique_key="rolled back")
        raise Rollback
    assert status_counts() == {}
    assert Event.objects.count() == 0
    with pytest.raises(JobNotFound):
        ref.refresh()
    assert background.enqueue(jobs.noop, unique_key="rolled back").id != ref.id


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_savepoint_takes_its_job_with_it(store):
    with transaction.atomic():
        kept = background.enqueue(jobs.noop)
        try:
            with transaction.atomic():
                background.enqueue(jobs.noop)
                raise ValueError
        except ValueError:
            pass
    assert store.count_due(None) == 1
    assert job(kept.id).status == records.READY


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_job_is_pushed_at_once(store):
    ref = background.enqueue(jobs.noop)
    assert job(ref.id).status == records.READY


@pytest.mark.django_db(transaction=True)
def test_database_none_pushes_at_once_even_inside_a_transaction(settings, store):
    settings.PGJOBS = {
        **settings.PGJOBS,
        "OPTIONS": {**settings.PGJOBS["OPTIONS"], "DATABASE": None},
    }
    with pytest.raises(Rollback), transaction.atomic():
        ref = background.enqueue(jobs.noop)
        raise Rollback
    assert job(ref.id).status == records.READY


@pytest.mark.django_db(transaction=True)
def test_unique_keys_inside_and_outside_transactions(store):
    with transaction.atomic():
        first = background.enqueue(jobs.noop, unique_key="k")
        assert background.enqueue(jobs.noop, unique_key="k") == first
    assert background.enqueue(jobs.noop, unique_key="k") == first
    with transaction.atomic():
        assert background.enqueue(jobs.noop, unique_key="k") == first
    assert status_counts() == {records.READY: 1}
    run_jobs()
    assert background.enqueue(jobs.noop, unique_key="k") != first


# -- workers --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_every_job_runs_exactly_once_across_competing_worker_processes(start_worker, store):
    count = 3000
    refs = background.enqueue_many([(jobs.record, [f"job-{n}"], {}) for n in range(count)])
    workers = [start_worker("--concurrency", "4", persistent_connections=True) for _ in range(3)]
    wait_for(lambda: unfinished_jobs() == 0, timeout=120, interval=0.2, message="an empty queue")

    assert status_counts() == {records.SUCCEEDED: count}
    assert Execution.objects.count() == count  # Execution.key is unique: no job ran twice
    pipe = store.client.pipeline()
    for ref in refs:
        pipe.hmget(store.key("job", ref.id), "attempts", "worker_id")
    rows = pipe.execute()
    assert {attempts for attempts, _ in rows} == {"1"}, "no job was retried or run twice"
    assert len({worker for _, worker in rows}) > 1, "the work was shared between processes"
    for worker in workers:
        worker.wait_until_started()  # the others may have run every job before it was up
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait() == 0, worker.output()
        assert "Traceback" not in worker.stderr, worker.output()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_sigterm_lets_running_jobs_finish_and_puts_unstarted_ones_back(start_worker, store):
    refs = background.enqueue_many(
        [(jobs.sleep_then_record, [f"sleep-{n}", 1.0], {}) for n in range(6)]
    )
    worker = start_worker("--concurrency", "2", "--grace-period", "20", "-v", "2")
    # Claimed is not yet started: the worker imports a job's function before handing the
    # first job of it on, and a job still unstarted at SIGTERM is rightly put back. (A
    # pause of 0.3 s after the claim is too short for that on a busy machine.)
    wait_for(lambda: worker.stderr.count("started (attempt") == 2, timeout=20, message="2 started")
    running = {ref.id for ref in refs if ref.refresh().status == records.RUNNING}
    assert len(running) == 2
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0, worker.output()
    for ref in refs:
        ref.refresh()
        if ref.id in running:
            assert ref.status == records.SUCCEEDED, worker.output()
        else:
            assert (ref.status, ref.attempts) == (records.READY, 0), worker.output()
    drain = start_worker("--concurrency", "4", command="pgjobs_drain")
    assert drain.wait(timeout=30) == 0, drain.output()
    assert "ran 4, succeeded 4, failed 0" in drain.stdout
    assert status_counts() == {records.SUCCEEDED: 6}
    assert Execution.objects.count() == 6


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_deferred_jobs_never_run_early_and_run_on_time(start_worker):
    worker = start_worker("--concurrency", "2", "--poll-interval", "30")
    worker.wait_for_output("Stop with Ctrl-C or SIGTERM.")
    time.sleep(0.5)
    now = timezone.now()
    refs = [
        background.defer(jobs.record, when=now + datetime.timedelta(seconds=s), args=[f"d{s}"])
        for s in (0.3, 0.8, 1.5)
    ]
    later = background.defer(jobs.record, when=datetime.timedelta(hours=1), args=["later"])
    wait_for(lambda: all(r.refresh().status == records.SUCCEEDED for r in refs), timeout=20)
    for ref in refs:
        assert ref.started_at >= ref.run_at, f"job {ref.id} started before its run_at"
        late = (ref.started_at - ref.run_at).total_seconds()
        # Woken by its deferral, the idle worker sleeps until the job is due:
        # the 30 s poll interval never comes into it.
        assert late < 0.5, f"job {ref.id} started {late:.3f} s after its run_at"
    assert later.refresh().status == records.READY


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_an_idle_worker_starts_a_new_job_within_milliseconds(start_worker, store):
    worker = start_worker("--poll-interval", "30", "-v", "2")
    worker.wait_for_output("wake-up:     notified")
    assert background.enqueue(jobs.add, args=[1, 1]).wait(timeout=20).result == 2
    delays = []
    for n in range(5):
        time.sleep(0.3)  # idle: blocked on pub/sub (its next poll is 30 s away)
        ref = background.enqueue(jobs.add, args=[n, n]).wait(timeout=5)
        delays.append((ref.started_at - ref.created_at).total_seconds())
    delays.sort()
    # Measured in the benchmark (a few ms); generous here for a busy machine.
    assert delays[2] < 0.2, f"enqueue-to-start delays {delays}"
    assert "RedisBackend (redis 127.0.0.1" in worker.stdout


@pytest.mark.django_db(transaction=True)
def test_failed_attempts_are_retried_with_exponential_backoff(store):
    from pgjobs.retry import RetryPolicy

    policy = RetryPolicy(base=0.2, cap=10.0, jitter=0.0)
    ref = background.enqueue(jobs.fail_until, args=["flaky", 3], max_attempts=5)
    gaps = []
    for attempt in (1, 2):
        run_jobs(retry_policy=policy)
        info = job(ref.id)
        assert (info.status, info.attempts) == (records.READY, attempt)
        assert info.error["message"] == f"attempt {attempt} fails"
        gaps.append((info.run_at - info.started_at).total_seconds())
        wait_for(lambda: store.count_due(None) > 0, timeout=5)
    run_jobs(retry_policy=policy)
    assert (ref.refresh().result, ref.attempts) == (3, 3)
    # Backoff doubles. A gap holds the attempt too (a slot thread, a database
    # connection for the Event), slow on a busy machine: the SQL twin's 2 s of slack.
    assert 0.2 <= gaps[0] < 0.2 + 2.0 and 0.4 <= gaps[1] < 0.4 + 2.0
    assert list(Event.objects.filter(name="flaky").values_list("value", flat=True)) == [1, 2, 3]


@pytest.mark.django_db(transaction=True)
def test_a_job_that_keeps_failing_fails_after_max_attempts_with_its_error_kept():
    ref = background.enqueue(jobs.fail_until, args=["doomed", 99], max_attempts=3)
    work_until(lambda: ref.refresh().is_finished, timeout=20)
    assert (ref.status, ref.attempts) == (records.FAILED, 3)
    assert ref.error["message"] == "attempt 3 fails"
    assert "ValueError: attempt 3 fails" in ref.error["traceback"]
    with pytest.raises(JobFailed, match="attempt 3 fails"):
        ref.result  # noqa: B018 (the property raises)


@pytest.mark.django_db(transaction=True)
def test_cancel_of_a_running_job_reaches_it_at_the_next_heartbeat(store):
    import threading

    from django.db import connections

    from pgjobs.stores.redis import RedisStore
    from pgjobs.worker import Worker

    short = RedisStore(store.url, prefix=store.prefix, lease_seconds=0.6)
    worker = Worker(short, poll_interval=0.2)
    ref = background.enqueue(jobs.wait_for_cancel)

    def work():
        try:
            worker.run()
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        wait_for(lambda: ref.refresh().status == records.RUNNING, timeout=10)
        assert ref.cancel() is False
        wait_for(lambda: ref.refresh().status == records.CANCELLED, timeout=10)
    finally:
        worker.request_stop()
        thread.join(15)
    assert not thread.is_alive()
    assert (ref.error["type"], ref.attempts) == ("pgjobs.exceptions.JobCancelled", 1)


@pytest.fixture
def start_worker_with_lease(request, monkeypatch, settings):
    """``start_worker`` whose processes (and this one) use leases of ``seconds``."""

    def setup(seconds):
        monkeypatch.setenv("PGJOBS_TEST_LEASE_SECONDS", str(seconds))
        options = {**settings.PGJOBS["OPTIONS"], "LEASE_SECONDS": seconds}
        settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": options}
        return request.getfixturevalue("start_worker")

    return setup


def runs_by_key():
    """``{key: {"start": [pid, ...], "done": [...], "again": [...]}}`` from record_once."""
    runs = {}
    events = Event.objects.filter(name__regex=r"^(start|done|again):").order_by("id")
    for name, pid in events.values_list("name", "value"):
        kind, key = name.split(":", 1)
        runs.setdefault(key, {"start": [], "done": [], "again": []})[kind].append(pid)
    return runs


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(start_worker_with_lease, store):
    start = start_worker_with_lease(2.0)
    # One long job, claimed first (same priority, enqueued first), is surely mid-run
    # when the victim dies: short jobs alone leave the kill to land between a claim
    # and a start, where nothing has run yet and nothing would run twice.
    background.enqueue(jobs.record_once, args=["kill-long", 5.0], max_attempts=5)
    keys = [f"kill-{n}" for n in range(400)]
    background.enqueue_many([(jobs.record_once, [key, 0.01], {}) for key in keys], max_attempts=5)
    keys.append("kill-long")
    victim = start("--concurrency", "4", persistent_connections=True)
    wait_for(
        lambda: (
            Execution.objects.count() >= 40
            and Event.objects.filter(name="start:kill-long").exists()
        ),
        timeout=30,
        message="jobs to run",
    )
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(5)
    assert not Execution.objects.filter(key="kill-long").exists(), "the long job ended too soon"
    assert Execution.objects.count() < len(keys)

    survivor = start("--concurrency", "4", persistent_connections=True)
    wait_for(lambda: unfinished_jobs() == 0, timeout=60, interval=0.2, message="the rescue")
    assert status_counts() == {records.SUCCEEDED: len(keys)}
    assert sorted(Execution.objects.values_list("key", flat=True)) == sorted(keys)
    runs = runs_by_key()
    for key, run in runs.items():
        if len(run["start"]) > 1 or run["again"]:
            assert set(run["start"][:-1]) <= {victim.pid}, (key, run)
    assert runs["kill-long"]["start"] == [victim.pid, survivor.pid], "the killed job ran again"
    assert survivor.stop() == 0, survivor.output()


# -- a Redis restart ------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own, with the append-only file on, on a free port."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgjobs-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--logfile", str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self.answers, timeout=10, message="the private redis-server")

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis():
    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("PGJOBS_REQUIRE_SERVICES=1 but there is no redis-server")
        pytest.skip("no redis-server")
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_redis_restart_with_aof_mid_run_loses_nothing(
    private_redis, request, monkeypatch, settings
):
    monkeypatch.setenv("PGJOBS_TEST_REDIS_URL", private_redis.url)
    monkeypatch.setenv("PGJOBS_TEST_LEASE_SECONDS", "3")
    options = {**settings.PGJOBS["OPTIONS"], "URL": private_redis.url, "LEASE_SECONDS": 3.0}
    count = 300
    with override_settings(PGJOBS={**settings.PGJOBS, "OPTIONS": options}):
        refs = background.enqueue_many(
            [(jobs.record_once, [f"restart-{n}", 0.01], {}) for n in range(count)],
            max_attempts=10,
        )
        worker = request.getfixturevalue("start_worker")("--concurrency", "4", "-v", "2")
        wait_for(lambda: Execution.objects.count() >= count // 4, timeout=30, message="jobs")
        private_redis.kill()  # SIGKILL: no chance to write anything more
        assert Execution.objects.count() < count, "the restart must come while jobs run"
        time.sleep(0.5)
        private_redis.start()

        def finished():
            try:
                return unfinished_jobs() == 0
            except Exception:  # Redis still loading
                return False

        wait_for(finished, timeout=60, interval=0.2, message="every job to finish")
        assert status_counts() == {records.SUCCEEDED: count}, worker.output()
        assert {ref.refresh().status for ref in refs} == {records.SUCCEEDED}
        assert worker.returncode is None, worker.output()
    assert sorted(Execution.objects.values_list("key", flat=True)) == sorted(
        f"restart-{n}" for n in range(count)
    )
    # Work done again only by a job whose first attempt the restart broke.
    for key, run in runs_by_key().items():
        assert len(run["done"]) <= 1, (key, run)
    assert "pgjobs: store reachable again" in worker.stderr, worker.output()
    assert worker.stop() == 0, worker.output()


@pytest.mark.django_db
def test_a_batch_with_a_job_redis_must_refuse_writes_nothing(store):
    good, bad = spec(), spec()
    bad.priority = 1000  # past validation, as a row written by hand would be
    with pytest.raises(Exception, match="priority out of range"):
        store.enqueue_many([good, bad])
    assert status_counts() == {}
    assert store.client.get(store.key("seq")) is None, "not even an id was taken"


@pytest.mark.django_db(transaction=True)
def test_jobs_of_one_transaction_are_written_together_at_commit(store):
    from django.db import connection

    from pgjobs.backends.storing import HeldJobs

    with transaction.atomic():
        first = [background.enqueue(jobs.noop) for _ in range(5)]
        try:
            with transaction.atomic():
                dropped = background.enqueue(jobs.noop)
                raise Rollback
        except Rollback:
            pass
        later = background.enqueue_many([(jobs.noop, [], {})] * 3)
        pushes = [f for _, f, *_ in connection.run_on_commit if isinstance(f, HeldJobs)]
        assert len(pushes) == 1, "one write for the transaction, not one per job"
        assert store.count_due(None) == 0
    ids = [ref.id for ref in first + later]
    assert ids == sorted(ids) and len(set(ids)) == 8
    assert [job(job_id).status for job_id in ids] == [records.READY] * 8
    assert store.get(dropped.id) is None
    assert store.count_due(None) == 8


@pytest.mark.django_db
def test_status_prune_and_drain_commands_work_the_redis_store(store):
    import io

    from django.core.management import call_command

    def command(*args):
        out = io.StringIO()
        # pgjobs_drain installs its SIGTERM/SIGINT handlers: give pytest its own back.
        saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            call_command(*args, stdout=out)
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
        return out.getvalue()

    background.enqueue_many([(jobs.add, [n, n], {}) for n in range(3)])
    background.enqueue(jobs.fail_always, max_attempts=1, queue="other")
    background.defer(jobs.noop, when=datetime.timedelta(hours=1))
    assert command("pgjobs_drain").strip() == (
        "pgjobs_drain: ran 4, succeeded 3, failed 1 (0 to retry), left 0"
    )
    status = json.loads(command("pgjobs_status", "--json"))
    counts = {q["queue"]: q["counts"] for q in status["queues"]}
    assert counts == {
        "default": {records.READY: 1, records.SUCCEEDED: 3},
        "other": {records.FAILED: 1},
    }
    assert "default" in command("pgjobs_status")
    assert "would delete 4" in command("pgjobs_prune", "--older-than", "0s", "--dry-run")
    assert "deleted 3 succeeded" in command(
        "pgjobs_prune", "--older-than", "0s", "--status", "succeeded"
    )
    assert status_counts() == {records.READY: 1, records.FAILED: 1}


def test_a_finished_batch_expires_with_its_jobs_and_a_requeue_keeps_it(store):
    batch = background.batch([(jobs.noop, [], {}), (jobs.noop, [], {})])
    batch_key = store.key("batch", batch.id)
    first, second = store.claim(None, 2, WORKER)
    store.finish(WORKER, [(first.id, None)])
    assert store.client.ttl(batch_key) == -1, "unfinished: kept"
    store.fail(WORKER, second.id, ERROR)
    assert 7 * 24 * 3600 - 5 < store.client.ttl(batch_key) <= 7 * 24 * 3600
    assert store.client.ttl(store.key("batch", batch.id, "jobs")) > 0
    assert store.requeue([second.id]) == 1
    assert store.client.ttl(batch_key) == -1 and batch.refresh().pending == 1


def test_a_limited_claim_failing_on_a_later_queue_returns_what_it_took(store, caplog):
    """Each limited queue is its own script call: when a later one fails (here a
    control Redis cannot read; in life a connection lost, a failover), the jobs
    an earlier one marked as this worker's are handed back, not left running
    unseen until a rescue spends their attempt."""
    store.set_queue_control("default", concurrency=5)
    store.set_queue_control("other", concurrency=5)
    taken = sorted(info.id for info in store.enqueue_many([spec(queue="default")] * 2))
    store.enqueue(spec(queue="other"))
    assert len(store.controls.controls()) == 2  # read now; kept for a second
    store.client.delete(store.key("control", "other"))
    store.client.set(store.key("control", "other"), "not a hash")  # the script fails on it
    claimed = store.claim(None, 10, "limited-claimer")
    store.controls.forget()  # the controls go with the test's keys
    assert sorted(job.id for job in claimed) == taken
    running = [store.get(job_id) for job_id in taken]
    assert {(job.status, job.worker_id) for job in running} == {("running", "limited-claimer")}
    assert "a claim from steered queues failed part way" in caplog.text
