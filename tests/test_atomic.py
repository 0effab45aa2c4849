"""Atomic jobs (``pgjobs/atomic.py``, ``pgjobs/worker/atomic.py``): a job run in a
transaction that also records its success, so that its database writes happen
exactly once: rolled back when it fails, when it times out, and when its lease
was lost (rescued, taken by another worker) before it committed; refused at
enqueue where it cannot work (Redis, the in-memory store, another database).

Every job here writes ``Execution`` rows, whose key is unique: a second write of
the same key would fail the job, and the tests count the rows.
"""

import copy
import datetime
import io
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.db.models.signals import pre_delete
from django.test import override_settings
from django.utils import timezone

from pgjobs import InvalidJob, background, records
from pgjobs.atomic import atomic_job, atomic_marker
from pgjobs.backends import ImmediateBackend
from pgjobs.models import Job
from pgjobs.schedule import parse_schedules
from pgjobs.testing import InMemoryBackend
from pgjobs.worker import Worker
from pgjobs.worker.atomic import AtomicRunner
from tests.conftest import JOBS_IN_REDIS, VENDOR, run_jobs, run_worker_while, wait_for
from tests.testapp import jobs
from tests.testapp.models import Event, Execution

SQL_ONLY = pytest.mark.sql_store("atomic jobs live in the database's Job table")


def executions(key):
    return list(Execution.objects.filter(key=key).values_list("attempt", flat=True))


# -- enqueue -------------------------------------------------------------------------


@SQL_ONLY
@pytest.mark.django_db
def test_atomic_is_stored_per_job_by_every_kind_of_enqueue():
    one = background.enqueue(jobs.record, ["a"], atomic=True)
    later = background.defer(jobs.record, timezone.now() + datetime.timedelta(hours=1), ["b"],
                             atomic=True)  # fmt: skip
    many = background.enqueue_many([(jobs.record, ["c"], {}), (jobs.record, ["d"], {})],
                                   atomic=True)  # fmt: skip
    plain = background.enqueue(jobs.record, ["e"])
    unique = background.enqueue(jobs.record, ["f"], atomic=True, unique_key="f")
    atomic = dict(Job.objects.values_list("id", "atomic"))
    assert [atomic[ref.id] for ref in [one, later, *many, unique]] == [True] * 5
    assert atomic[plain.id] is False


@SQL_ONLY
@pytest.mark.django_db
def test_a_marked_function_is_atomic_unless_the_call_says_otherwise():
    marked = background.enqueue(jobs.atomic_record, ["a"])
    by_path = background.enqueue("tests.testapp.jobs.atomic_record", ["b"])
    declined = background.enqueue(jobs.atomic_record, ["c"], atomic=False)
    mixed = background.enqueue_many([(jobs.record, ["d"], {}), (jobs.atomic_record, ["e"], {})])
    atomic = dict(Job.objects.values_list("id", "atomic"))
    assert [atomic[ref.id] for ref in [marked, by_path, declined, *mixed]] == [
        True, True, False, False, True,
    ]  # fmt: skip


@SQL_ONLY
@pytest.mark.django_db
def test_a_scheduled_atomic_job_is_stored_atomic(jobs_backend):
    store = jobs_backend.get_store()
    tick = timezone.now() - datetime.timedelta(minutes=1)
    store.create_schedule("nightly", tick - datetime.timedelta(minutes=1))
    last_tick = store.get_schedules(["nightly"])["nightly"].last_tick
    specs = [
        jobs_backend.prepare(jobs.atomic_record, ["s"], {}),
        jobs_backend.prepare(jobs.noop, [], {}),
    ]
    infos = store.advance_schedule("nightly", last_tick, tick, specs)
    assert [Job.objects.get(pk=info.id).atomic for info in infos] == [True, False]


@SQL_ONLY
@pytest.mark.django_db
def test_atomic_on_another_database_than_the_queues_is_refused_and_writes_nothing():
    with pytest.raises(InvalidJob, match="atomic='reports': .* queue's database 'default'"):
        background.enqueue(jobs.record, ["a"], atomic="reports")
    with pytest.raises(InvalidJob, match="atomic must be True, False or the name of a database"):
        background.enqueue(jobs.record, ["a"], atomic=1)
    assert not Job.objects.exists()
    background.enqueue(jobs.record, ["a"], atomic="default")  # the queue's database: fine
    assert Job.objects.get().atomic


def enqueue_command(*args):
    out = io.StringIO()
    call_command("pgjobs_enqueue", *args, stdout=out)
    return int(out.getvalue())


@SQL_ONLY
@pytest.mark.django_db
def test_the_enqueue_command_takes_atomic_and_no_atomic():
    atomic = enqueue_command("tests.testapp.jobs.record", "--args", '["a"]', "--atomic")
    plain = enqueue_command("tests.testapp.jobs.record", "--args", '["b"]')
    marked = enqueue_command("tests.testapp.jobs.atomic_record", "--args", '["c"]')
    declined = enqueue_command("tests.testapp.jobs.atomic_record", "--args", '["d"]', "--no-atomic")
    stored = dict(Job.objects.values_list("id", "atomic"))
    assert [stored[i] for i in (atomic, plain, marked, declined)] == [True, False, True, False]


@pytest.mark.skipif(not JOBS_IN_REDIS, reason="the configured backend is RedisBackend")
@pytest.mark.django_db
def test_the_enqueue_command_refuses_atomic_on_redis_in_one_line():
    with pytest.raises(CommandError, match=r"^atomic=True: RedisBackend keeps jobs in RedisStore"):
        enqueue_command("tests.testapp.jobs.record", "--args", '["a"]', "--atomic")
    assert background.backend.get_store().status()["queues"] == []


@pytest.mark.skipif(not JOBS_IN_REDIS, reason="the configured backend is RedisBackend")
@pytest.mark.django_db
def test_redis_refuses_atomic_jobs_at_enqueue_and_writes_nothing():
    for enqueue in (
        lambda: background.enqueue(jobs.record, ["a"], atomic=True),
        lambda: background.enqueue(jobs.atomic_record, ["a"]),
        lambda: background.enqueue_many([(jobs.record, ["a"], {})], atomic=True),
    ):
        with pytest.raises(
            InvalidJob, match=r"^atomic=True: RedisBackend keeps jobs in RedisStore"
        ):
            enqueue()
    assert background.backend.get_store().status()["queues"] == []


def test_the_in_memory_backend_refuses_atomic_jobs():
    backend = InMemoryBackend({})
    with pytest.raises(InvalidJob, match="InMemoryStore, outside your database"):
        backend.enqueue(jobs.atomic_record, ["a"], {})
    with pytest.raises(InvalidJob, match="job 1 of enqueue_many|InMemoryStore"):
        backend.enqueue_many([(jobs.record, ["a"], {}), (jobs.atomic_record, ["b"], {})])
    assert backend.store.status()["queues"] == []


def test_a_schedule_of_an_atomic_job_on_a_backend_that_refuses_it_is_a_check_error():
    entry = {"func": "tests.testapp.jobs.atomic_record", "args": ["s"], "cron": "0 3 * * *"}
    schedules, problems = parse_schedules({"nightly": entry}, backend=InMemoryBackend({}))
    assert schedules == [] and [p.id for p in problems] == ["pgjobs.E020"]
    assert "is marked @atomic_job" in problems[0].message and "InMemoryStore" in problems[0].message
    plain = {"nightly": {**entry, "func": "tests.testapp.jobs.record"}}
    assert parse_schedules(plain, backend=InMemoryBackend({}))[1] == []


@pytest.mark.django_db(transaction=True)
def test_the_immediate_backend_runs_an_atomic_job_in_a_transaction():
    with override_settings(PGJOBS={"BACKEND": "pgjobs.backends.ImmediateBackend"}):
        assert isinstance(background.backend, ImmediateBackend)
        with pytest.raises(ValueError, match="attempt 1 fails"):
            background.enqueue(jobs.record_event_then_fail, ["in-band"], atomic=True)
        assert not Event.objects.filter(name="in-band").exists(), "rolled back"
        background.enqueue(jobs.atomic_record, ["in-band"])
        assert executions("in-band") == [1]


# -- the worker -------------------------------------------------------------------------


@SQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_a_failing_atomic_job_rolls_back_its_writes_and_is_retried():
    ref = background.enqueue(jobs.fail_until, ["flaky", 3], atomic=True)
    later = background.enqueue(jobs.async_fail_until, ["async-flaky", 2], atomic=True)
    wait_for(lambda: run_jobs() and ref.refresh().status == records.SUCCEEDED, timeout=30)
    wait_for(lambda: run_jobs() and later.refresh().status == records.SUCCEEDED, timeout=30)
    assert (ref.attempts, ref.result) == (3, 3)
    # Each attempt wrote its own Event; only the one that succeeded committed.
    assert list(Event.objects.filter(name="flaky").values_list("value", flat=True)) == [3]
    assert list(Event.objects.filter(name="async-flaky").values_list("value", flat=True)) == [2]


@SQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_atomic_jobs_of_enqueue_many_and_defer_run_once_each():
    refs = background.enqueue_many([(jobs.record, [f"k{n}"], {}) for n in range(20)], atomic=True)
    refs.append(background.defer(jobs.atomic_record, datetime.timedelta(seconds=0.2), ["later"]))
    wait_for(lambda: run_jobs(concurrency=4) is not None and all(
        ref.refresh().status == records.SUCCEEDED for ref in refs), timeout=30)  # fmt: skip
    assert Execution.objects.count() == 21
    assert Job.objects.filter(atomic=True, status=records.SUCCEEDED).count() == 21


@SQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_an_atomic_job_that_lost_its_lease_before_committing_rolls_back(jobs_backend):
    """The lease check at the end, on every vendor: the attempt was rescued and
    claimed again (by this very worker) before the job's transaction ended."""
    store = jobs_backend.get_store()
    ref = background.enqueue(jobs.record, ["lost"], atomic=True)
    (job,) = store.claim(None, 1, "worker-a")
    assert job.atomic
    Job.objects.filter(pk=ref.id).update(lease_expires_at=timezone.now() - datetime.timedelta(1))
    assert store.rescue() == 1
    (again,) = store.claim(None, 1, "worker-a")
    assert again.attempts == 2
    runner = AtomicRunner(store, "worker-a")
    assert runner.run(job, lambda: jobs.record("lost")) == (False, None)
    assert executions("lost") == [], "the first attempt's write rolled back"
    assert runner.run(again, lambda: jobs.record("lost")) == (True, "lost")
    assert executions("lost") == [1]  # record() saw no current job: attempt 1
    assert ref.refresh().status == records.SUCCEEDED and ref.attempts == 2


@SQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_a_timed_out_atomic_job_runs_exactly_once():
    """The worker gives up on attempt 1 (its timeout) and records a retry while the
    job's thread still runs; that thread then finds its lease gone and rolls back.
    (SQLite: the retry waits for the job's write lock, then finds it succeeded.)"""
    # Later attempts wait for the key attempt 1 holds until its thread rolls back (on
    # MySQL two of them may deadlock there): attempts to spare. The timeout is 1.5 s
    # before attempt 1 ends, so that a main thread slowed by a loaded machine still
    # gives up on it first (with 0.5 s, it could see attempt 1 succeed).
    ref = background.enqueue(
        jobs.record_slow_first, ["slow", 2.0], atomic=True, timeout=0.5, max_attempts=10
    )
    wait_for(lambda: run_jobs() and ref.refresh().status == records.SUCCEEDED, timeout=30)
    assert executions("slow") == [ref.attempts], "one row: the attempt that succeeded"
    if VENDOR != "sqlite":
        assert ref.attempts >= 2


@SQL_ONLY
@pytest.mark.skipif(
    VENDOR == "sqlite",
    reason="SQLite has one writer: while an atomic job runs nobody else writes, so no "
    "rescue can take it meanwhile (covered before it starts, above)",
)
@pytest.mark.django_db(transaction=True)
def test_a_rescue_while_an_atomic_job_runs_rolls_it_back_without_waiting_for_it(jobs_backend):
    """A long atomic job holds no lock a heartbeat, a claim or a rescue needs: all
    three go through while it waits inside its transaction (if any waited for it,
    the job, waiting for this test, would commit first and the rescue find nothing).
    The rescued attempt rolls back; the next one runs the job: one row, attempt 2."""
    store = jobs_backend.get_store()
    started, go = threading.Event(), threading.Event()
    jobs.ATOMIC_GATES["rescued"] = (started, go)
    ref = background.enqueue(jobs.record_gated, ["rescued"], atomic=True)
    elsewhere = background.enqueue(jobs.noop, queue="other")
    worker = Worker(store, queues=["default"], poll_interval=0.1, grace_period=5.0)

    def drive():
        try:
            assert started.wait(20), "the job never started"
            store.heartbeat(worker.worker_id, [ref.id])
            assert [job.id for job in store.claim(["other"], 1, "another-worker")] == [elsewhere.id]
            expired = timezone.now() - datetime.timedelta(days=1)
            Job.objects.filter(pk=ref.id).update(lease_expires_at=expired)
            assert store.rescue() == 1
        finally:
            go.set()
            connections.close_all()
        wait_for(lambda: ref.refresh().status == records.SUCCEEDED, timeout=20)

    try:
        stats = run_worker_while(worker, drive)
    finally:
        jobs.ATOMIC_GATES.pop("rescued", None)
    assert executions("rescued") == [2], "attempt 1 rolled back; attempt 2 committed"
    assert ref.attempts == 2 and stats.lost == 1


@SQL_ONLY
@pytest.mark.skipif(VENDOR == "sqlite", reason="SQLite has one writer: nobody rescues meanwhile")
@pytest.mark.django_db(transaction=True)
def test_a_rescue_while_an_atomic_job_finishes_unkept_is_either_before_or_after(jobs_backend):
    """KEEP_SUCCEEDED off: the success deletes the job's row. Django's delete()
    reads the rows first (it cascades to JobAttempt), then deletes by id: a rescue
    there must either wait for the commit and find nothing (the row is locked by a
    guarded update first), or win and roll the attempt back; never both commit."""
    store = copy.copy(jobs_backend.get_store())
    store.keep_succeeded = False
    ref = background.enqueue(jobs.record, ["unkept"], atomic=True)
    (job,) = store.claim(None, 1, "worker-a")
    rescued, threads = [], []

    def rescue():  # as Store.rescue: only if still running under worker-a
        mine = Job.objects.filter(pk=ref.id, status=records.RUNNING, worker_id="worker-a")
        rescued.append(mine.update(status=records.READY, worker_id=None))
        connections.close_all()

    def rescue_meanwhile(sender, instance, **kwargs):
        if instance.pk == ref.id and not threads:
            threads.append(threading.Thread(target=rescue))
            threads[0].start()
            threads[0].join(1.0)  # a rescue that waits for a lock waits on, below

    pre_delete.connect(rescue_meanwhile, sender=Job)
    try:
        outcome = AtomicRunner(store, "worker-a").run(job, lambda: jobs.record("unkept"))
    finally:
        pre_delete.disconnect(rescue_meanwhile, sender=Job)
        for thread in threads:
            thread.join(20)
    assert threads and rescued, "the rescue ran while the job's row was deleted"
    if outcome == (True, "unkept"):
        assert rescued == [0], "the job committed: the rescue must have found nothing"
        assert executions("unkept") == [1] and not Job.objects.filter(pk=ref.id).exists()
    else:
        assert outcome == (False, None) and rescued == [1]
        assert executions("unkept") == [], "the lost attempt's write rolled back"


@pytest.mark.parametrize("using", [123, "", True])
def test_atomic_job_with_a_using_that_is_no_alias_is_refused_where_it_is_written(using):
    def credit():
        pass

    with pytest.raises(TypeError, match=r"^atomic_job\(using=\.\.\.\) takes the alias"):
        atomic_job(using=using)(credit)
    assert atomic_marker(credit) is False
