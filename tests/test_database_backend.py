"""``DatabaseBackend`` (``pgjobs/backends/database.py``) and the ``JobRef`` it returns
(``pgjobs/refs.py``): what a stored job looks like, refs, cancel, transactions."""

import datetime
import json
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.utils import timezone

from pgjobs import JobFailed, JobNotFinished, JobNotFound, JobRef, background, records
from pgjobs.handler import get_backend
from pgjobs.models import Job
from tests.conftest import VENDOR, run_jobs, wait_for
from tests.testapp import jobs
from tests.testapp.models import Event, Execution


class Rollback(Exception):
    """Raised in an ``atomic()`` block to roll it back."""


# -- the stored row ---------------------------------------------------------------------


@pytest.mark.django_db
def test_enqueue_writes_one_ready_row_with_the_job_as_given():
    before = timezone.now()
    ref = background.enqueue(
        jobs.echo,
        args=[1, "two", (3,)],
        kwargs={"when": datetime.date(2024, 1, 2)},
        priority=42,
        queue="other",
        max_attempts=5,
        timeout=9.5,
        unique_key="echo-1",
    )
    assert Job.objects.count() == 1
    job = Job.objects.get()
    assert job.id == ref.id
    assert job.func == "tests.testapp.jobs.echo"
    assert job.args == [1, "two", {"__pgjobs__": "tuple", "v": [3]}]
    assert job.kwargs == {"when": {"__pgjobs__": "date", "v": "2024-01-02"}}
    assert (job.queue, job.priority, job.max_attempts) == ("other", 42, 5)
    assert (job.timeout, job.unique_key) == (9.5, "echo-1")
    assert (job.status, job.attempts) == (records.READY, 0)
    assert job.started_at is job.finished_at is job.worker_id is job.result is job.error is None
    assert job.created_at is not None
    # Due now: not deferred, by the database's clock (allow for clock granularity).
    assert before - datetime.timedelta(seconds=5) <= job.run_at <= timezone.now()


@pytest.mark.django_db
def test_enqueue_defaults():
    job = Job.objects.get(pk=background.enqueue(jobs.noop).id)
    assert (job.queue, job.priority, job.max_attempts) == ("default", 0, 3)
    assert (job.args, job.kwargs, job.timeout, job.unique_key) == ([], {}, None, None)


@pytest.mark.django_db
def test_the_store_reads_times_as_use_tz_says_after_it_changed():
    """The store outlives an ``override_settings(USE_TZ=False)`` in a site's tests:
    its times read as aware again after it (MySQL's converters were kept from
    the first read, made under the override, and stayed naive)."""
    from django.test import override_settings

    with override_settings(USE_TZ=False):
        background.defer(jobs.add, when=datetime.timedelta(minutes=5), args=[1, 2])
    when = timezone.now() + datetime.timedelta(minutes=10)
    assert background.defer(jobs.add, when=when, args=[1, 2]).run_at == when


@pytest.mark.django_db
@pytest.mark.parametrize("use_tz", [True, False])
def test_an_enqueues_ref_holds_its_times_as_the_orm_reads_them(use_tz):
    """``created_at`` and ``run_at`` come back from the enqueue's own statement:
    aware and equal to the ORM's under ``USE_TZ``, naive local times without it."""
    from django.test import override_settings

    with override_settings(USE_TZ=use_tz, TIME_ZONE="America/Chicago"):
        refs = [background.enqueue(jobs.noop), *background.enqueue_many([(jobs.noop, [], {})])]
        for ref in refs:
            row = Job.objects.get(pk=ref.id)
            assert (ref.created_at, ref.run_at) == (row.created_at, row.run_at)
            assert timezone.is_aware(ref.run_at) is timezone.is_aware(row.run_at) is use_tz
            assert ref.run_at.utcoffset() == row.run_at.utcoffset()


@pytest.mark.django_db
def test_defer_stores_the_time_given():
    when = timezone.now() + datetime.timedelta(minutes=10)
    ref = background.defer(jobs.add, when=when, args=[1, 2], priority=-5)
    job = Job.objects.get(pk=ref.id)
    assert job.run_at == when
    assert ref.run_at == when
    assert (job.status, job.priority) == (records.READY, -5)


@pytest.mark.django_db
def test_defer_with_a_timedelta_counts_from_now():
    before = timezone.now()
    ref = background.defer(jobs.noop, when=datetime.timedelta(minutes=10))
    after = timezone.now()
    run_at = Job.objects.get(pk=ref.id).run_at
    assert (
        before + datetime.timedelta(minutes=10) <= run_at <= after + datetime.timedelta(minutes=10)
    )


@pytest.mark.django_db
def test_defer_accepts_any_aware_timezone():
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    when = datetime.datetime(2040, 1, 1, 9, 0, tzinfo=tokyo)
    ref = background.defer(jobs.noop, when=when)
    assert Job.objects.get(pk=ref.id).run_at == datetime.datetime(
        2040, 1, 1, 0, 0, tzinfo=datetime.UTC
    )


@pytest.mark.django_db
def test_a_job_deferred_into_the_past_is_due_at_once():
    ref = background.defer(jobs.add, when=datetime.timedelta(hours=-1), args=[1, 1])
    run_jobs()
    assert ref.refresh().result == 2


@pytest.mark.django_db
def test_aenqueue_and_adefer_store_jobs():
    ref = async_to_sync(background.aenqueue)(jobs.add, args=[1, 2], kwargs={}, priority=3)
    later = async_to_sync(background.adefer)(
        jobs.add, when=datetime.timedelta(hours=1), args=[3, 4]
    )
    assert isinstance(ref, JobRef) and isinstance(later, JobRef)
    assert Job.objects.get(pk=ref.id).priority == 3
    assert Job.objects.get(pk=later.id).run_at > timezone.now()
    run_jobs()
    assert ref.refresh().result == 3
    assert later.refresh().status == records.READY


@pytest.mark.django_db
def test_enqueue_many_writes_one_row_per_job_in_order():
    refs = background.enqueue_many(
        [(jobs.add, [i, i], {}) for i in range(50)] + [(jobs.echo, [], {"x": 1})],
        priority=7,
        queue="other",
    )
    assert len(refs) == 51
    assert [ref.id for ref in refs] == sorted(ref.id for ref in refs)
    rows = {job.id: job for job in Job.objects.all()}
    assert len(rows) == 51
    assert [rows[ref.id].args for ref in refs[:50]] == [[i, i] for i in range(50)]
    assert rows[refs[-1].id].kwargs == {"x": 1}
    assert {(job.priority, job.queue, job.status) for job in rows.values()} == {
        (7, "other", "ready")
    }
    run_jobs(concurrency=4)
    assert [ref.refresh().result for ref in refs[:50]] == [2 * i for i in range(50)]


@pytest.mark.django_db
def test_enqueue_many_of_nothing_writes_nothing():
    assert background.enqueue_many([]) == []
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_enqueue_accepts_a_dotted_path():
    ref = background.enqueue("tests.testapp.jobs.add", args=[2, 2])
    run_jobs()
    assert ref.refresh().result == 4


@pytest.mark.django_db
def test_a_queue_outside_the_configured_ones_is_accepted_when_queues_is_empty(settings):
    settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": {"QUEUES": []}}
    ref = background.enqueue(jobs.noop, queue="anything")
    assert Job.objects.get(pk=ref.id).queue == "anything"


# -- refs ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_ref_reads_its_job_from_the_database():
    ref = background.enqueue(jobs.add, args=[20, 22])
    assert isinstance(ref.id, int)
    assert ref.status == records.READY
    assert not ref.is_finished
    assert ref.error is None
    with pytest.raises(JobNotFinished):
        ref.result  # noqa: B018 (the property raises)

    run_jobs()
    assert ref.status == records.READY, "a ref is a snapshot until refreshed"
    assert ref.refresh() is ref
    assert ref.status == records.SUCCEEDED
    assert ref.result == 42
    assert ref.attempts == 1
    assert ref.started_at <= ref.finished_at
    assert ref.error is None
    assert ref == background.get(ref.id)
    assert "add" in repr(ref)


@pytest.mark.django_db
def test_get_of_an_unknown_id_raises_job_not_found():
    with pytest.raises(JobNotFound):
        background.get(123456789)


@pytest.mark.django_db
def test_refresh_of_a_deleted_job_raises_job_not_found():
    ref = background.enqueue(jobs.noop)
    Job.objects.filter(pk=ref.id).delete()
    with pytest.raises(JobNotFound):
        ref.refresh()


@pytest.mark.django_db
def test_wait_raises_timeout_error_when_no_worker_runs_the_job():
    ref = background.enqueue(jobs.noop)
    with pytest.raises(TimeoutError, match=f"job {ref.id} still ready"):
        ref.wait(timeout=0.2)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_wait_returns_once_a_worker_has_run_the_job(start_worker):
    ref = background.enqueue(jobs.add, args=[1, 2])
    start_worker()
    assert ref.wait(timeout=20).result == 3


@pytest.mark.django_db
def test_cancel_of_a_ready_job_stops_it_from_running():
    ref = background.enqueue(jobs.add, args=[1, 2])
    other = background.enqueue(jobs.add, args=[3, 4])
    assert ref.cancel() is True
    assert ref.status == records.CANCELLED
    assert ref.is_finished
    with pytest.raises(JobFailed, match="cancelled"):
        ref.result  # noqa: B018 (the property raises)

    stats = run_jobs()
    assert stats.claimed == 1
    assert ref.refresh().status == records.CANCELLED
    assert other.refresh().result == 7


@pytest.mark.django_db
def test_cancel_of_a_finished_job_changes_nothing():
    ref = background.enqueue(jobs.add, args=[1, 2])
    run_jobs()
    assert ref.cancel() is False
    assert ref.status == records.SUCCEEDED
    assert ref.result == 3


@pytest.mark.django_db
def test_a_ref_of_a_failed_job_raises_job_failed_with_the_error():
    ref = background.enqueue(jobs.fail_always, args=["no luck"], max_attempts=1)
    run_jobs()
    ref.refresh()
    assert ref.status == records.FAILED
    with pytest.raises(JobFailed, match="no luck") as excinfo:
        ref.result  # noqa: B018 (the property raises)
    assert excinfo.value.error == ref.error
    assert ref.error["type"] == "builtins.RuntimeError"


# -- transactions ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_no_job():
    with pytest.raises(Rollback), transaction.atomic():
        Event.objects.create(name="caller's data")
        background.enqueue(jobs.record, args=["rolled back"])
        background.enqueue_many([(jobs.record, ["also rolled back"], {})])
        background.defer(jobs.record, when=datetime.timedelta(seconds=1), args=["deferred"])
        raise Rollback
    assert Job.objects.count() == 0
    assert Event.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_job_enqueued_in_a_transaction_is_invisible_to_workers_until_commit():
    with transaction.atomic():
        ref = background.enqueue(jobs.record, args=["after commit"])
        # Another connection (as a worker has) sees nothing yet.
        seen = _count_jobs_from_another_connection()
        assert seen == 0
    assert _count_jobs_from_another_connection() == 1
    run_jobs()
    assert ref.refresh().status == records.SUCCEEDED
    assert Execution.objects.filter(key="after commit").exists()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_savepoint_takes_its_job_with_it():
    with transaction.atomic():
        kept = background.enqueue(jobs.noop)
        try:
            with transaction.atomic():
                background.enqueue(jobs.noop)
                raise ValueError
        except ValueError:
            pass
    assert list(Job.objects.values_list("id", flat=True)) == [kept.id]


def _count_jobs_from_another_connection():
    """How many jobs are due, as a worker (another thread, another connection) sees it."""
    import threading

    from django.db import connections

    store = get_backend().get_store()
    result = []

    def count():
        try:
            result.append(store.count_due(None))
        finally:
            connections.close_all()

    thread = threading.Thread(target=count)
    thread.start()
    thread.join(10)
    return result[0]


@pytest.mark.skipif(VENDOR != "postgres", reason="LISTEN/NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_notify_is_sent_at_commit_only_and_only_for_jobs_due_now():
    import psycopg

    params = dict(connection.get_connection_params())
    for django_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    with psycopg.Connection.connect(**params, autocommit=True) as listener:
        listener.execute("LISTEN pgjobs")

        def notifications(timeout):
            return [n.payload for n in listener.notifies(timeout=timeout, stop_after=1)]

        with pytest.raises(Rollback), transaction.atomic():
            background.enqueue(jobs.noop, queue="other")
            raise Rollback
        assert notifications(0.3) == [], "a rolled-back enqueue must wake nobody"

        background.defer(jobs.noop, when=datetime.timedelta(hours=1))
        assert notifications(0.3) == [], "a deferred job must not wake workers now"

        with transaction.atomic():
            ref = background.enqueue(jobs.noop, queue="other")
        (payload,) = notifications(5)
        # The queue, and the job's id and count, by which workers share out who answers.
        assert json.loads(payload) == {"q": "other", "id": ref.id, "n": 1}

        background.enqueue_many([(jobs.noop, [], {})] * 150 + [(jobs.noop, [1], {})] * 2)
        (payload,) = notifications(5)
        assert json.loads(payload)["n"] == 152, "one NOTIFY for a bulk enqueue, with its count"


@pytest.mark.skipif(VENDOR != "postgres", reason="LISTEN/NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_jobs_put_back_by_a_stopping_worker_or_a_rescue_wake_the_workers():
    """No enqueue tells of them: without a wake-up, idle workers would find them at
    their next poll, busy ones at their next short claim."""
    import psycopg

    params = dict(connection.get_connection_params())
    for django_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    store = get_backend().get_store()
    ref = background.enqueue(jobs.noop)
    with psycopg.Connection.connect(**params, autocommit=True) as listener:
        listener.execute("LISTEN pgjobs")

        def notifications(timeout):
            return [n.payload for n in listener.notifies(timeout=timeout, stop_after=1)]

        (job,) = store.claim(None, 1, "w")
        store.release("w", [job.id])
        assert notifications(5) == ["*"], "released"
        assert Job.objects.get(pk=ref.id).status == records.READY

        (job,) = store.claim(None, 1, "w")
        Job.objects.filter(pk=job.id).update(
            lease_expires_at=timezone.now() - datetime.timedelta(hours=1)
        )
        assert store.rescue() == 1
        assert notifications(5) == ["*"], "rescued"
        assert store.rescue() == 0
        assert notifications(0.3) == [], "nothing put back, nobody woken"


@pytest.mark.skipif(VENDOR != "postgres", reason="LISTEN/NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("queues", [None, ["other"]], ids=["every queue", "one queue"])
def test_a_listening_store_reports_every_wakeup_even_those_that_arrive_together(queues):
    """Jobs committed together notify together, and psycopg reads such NOTIFYs in
    one go. Each names the job a different worker answers (Listener.answers): a
    store that handed over only the first lost the others' turn."""
    store = get_backend().get_store()
    store.listen(queues)
    try:
        with transaction.atomic():
            refs = [background.enqueue(jobs.noop, queue=q) for q in ("other", "default", "other")]
        time.sleep(0.3)  # every NOTIFY has reached the socket: one read takes them all
        reported = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            woken = store.wait(0.2) or []  # [] too: a read with none for our queues
            reported += [(wakeup.queue, wakeup.first_id) for wakeup in woken]
    finally:
        store.stop_listening()
    assert reported == [
        (ref.queue, ref.id) for ref in refs if queues is None or ref.queue in queues
    ]


# -- unique keys -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_unique_key_admits_one_ready_or_running_job():
    first = background.enqueue(jobs.add, args=[1, 2], unique_key="report-42")
    again = background.enqueue(jobs.add, args=[5, 5], unique_key="report-42")
    other = background.enqueue(jobs.add, args=[1, 2], unique_key="report-43")
    assert again.id == first.id, "the existing job is returned, nothing new is written"
    assert other.id != first.id
    assert Job.objects.count() == 2

    store = background.backend.get_store()
    store.claim(None, 10, "w")  # running: still holds the key
    assert background.enqueue(jobs.noop, unique_key="report-42").id == first.id
    store.finish("w", [(first.id, 3)])  # finished: the key is free again
    fresh = background.enqueue(jobs.noop, unique_key="report-42")
    assert fresh.id not in (first.id, other.id)
    assert fresh.status == records.READY


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_unique_key_does_not_break_the_callers_transaction():
    with transaction.atomic():
        first = background.enqueue(jobs.noop, unique_key="k")
        again = background.enqueue(jobs.noop, unique_key="k")
        Event.objects.create(name="after the duplicate")  # the transaction still works
    assert again.id == first.id
    assert Event.objects.count() == 1
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_racing_enqueues_of_one_unique_key_write_one_job():
    import threading

    from django.db import connections

    barrier = threading.Barrier(4)
    ids, errors = [], []

    def enqueue():
        try:
            barrier.wait(10)
            ids.append(background.enqueue(jobs.noop, unique_key="race").id)
        except Exception as exc:  # handed to the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=enqueue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(ids) == 4 and len(set(ids)) == 1
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_enqueue_many_with_a_unique_key_writes_one_job():
    refs = background.enqueue_many([(jobs.noop, [], {})] * 3, unique_key="batch")
    assert len({ref.id for ref in refs}) == 1
    assert Job.objects.count() == 1


# -- cancelling a running job -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_cancel_of_a_running_job_asks_it_to_stop_and_it_ends_cancelled(settings):
    import threading

    from django.db import connections

    from pgjobs.worker import Worker

    # A short lease: heartbeats, which carry the request, come every lease / 3 s.
    options = {**settings.PGJOBS["OPTIONS"], "LEASE_SECONDS": 0.6}
    settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": options}
    store = get_backend().get_store()
    assert store.lease_seconds == 0.6
    worker = Worker(store, poll_interval=0.2)
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
        assert ref.cancel() is False, "a running job is asked to stop, not cancelled at once"
        wait_for(lambda: ref.refresh().status == records.CANCELLED, timeout=10)
    finally:
        worker.request_stop()
        thread.join(15)
    assert not thread.is_alive()
    assert ref.error["type"] == "pgjobs.exceptions.JobCancelled"
    assert ref.attempts == 1
