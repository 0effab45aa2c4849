"""The worker (``pgjobs/worker/``): claim order, deferral, retries, failures, async jobs
and the running job's context. Jobs run in this process unless a test needs a real
worker process."""

import datetime
import itertools
import signal
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgjobs import JobFailed, background, current_job, records
from pgjobs.handler import get_backend
from pgjobs.models import Job
from pgjobs.retry import RetryPolicy
from pgjobs.serialization import sign_job
from pgjobs.worker import Worker
from pgjobs.worker.executor import Outcome
from pgjobs.worker.policy import DUE_NOW_RECHECK, RECORD_WITHIN
from tests.conftest import (
    JOBS_IN_REDIS,
    job_row_locked,
    run_jobs,
    run_worker_while,
    status_counts,
    wait_for,
    work_until,
)
from tests.testapp import jobs
from tests.testapp.models import Event, Execution

# -- claim order -------------------------------------------------------------------

job_sets = st.lists(
    st.tuples(
        st.one_of(st.sampled_from([-100, 0, 0, 7, 100]), st.integers(-100, 100)),  # priority
        st.one_of(st.none(), st.integers(0, 3)),  # seconds in the past; None: enqueue now
        st.sampled_from(["default", "other"]),  # queue
    ),
    min_size=1,
    max_size=12,
)


def claim_order(job):
    return (-job.priority, job.run_at, job.id)


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(job_set=job_sets)
def test_a_single_slot_worker_runs_due_jobs_in_claim_order(job_set):
    """(priority desc, run_at, id), within the queues a worker works, never early."""
    Job.objects.all().delete()
    Event.objects.all().delete()
    base = timezone.now()  # one instant, so equal offsets give equal run_at (ties by id)
    for index, (priority, seconds_ago, queue) in enumerate(job_set):
        options = {"args": [str(index)], "priority": priority, "queue": queue}
        if seconds_ago is None:
            background.enqueue(jobs.record_event, **options)
        else:
            when = base - datetime.timedelta(seconds=seconds_ago)
            background.defer(jobs.record_event, when=when, **options)
    stored = list(Job.objects.all())
    expected = {
        queue: [job.args[0] for job in sorted(stored, key=claim_order) if job.queue in queue]
        for queue in (("other",), ("default", "other"))
    }

    run_jobs(queues=["other"])
    ran = list(Event.objects.order_by("id").values_list("name", flat=True))
    assert ran == expected[("other",)]

    Event.objects.all().delete()
    run_jobs()
    ran = list(Event.objects.order_by("id").values_list("name", flat=True))
    assert ran == [
        name for name in expected[("default", "other")] if name not in expected[("other",)]
    ]
    assert status_counts() == {records.SUCCEEDED: len(job_set)}
    for job in Job.objects.all():
        assert job.started_at >= job.run_at, f"job {job.id} started before its run_at"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_deferred_jobs_never_run_early_and_run_soon_after_their_time(start_worker):
    """DESIGN: never early; late by at most about the poll interval (an idle worker
    is not told of jobs deferred into the future, it finds them when it polls)."""
    poll_interval = 0.5
    worker = start_worker("--concurrency", "2", "--poll-interval", str(poll_interval))
    worker.wait_for_output("Stop with Ctrl-C or SIGTERM.")
    now = timezone.now()
    refs = [
        background.defer(jobs.record, when=now + datetime.timedelta(seconds=s), args=[f"d{s}"])
        for s in (0.3, 0.8, 1.5)
    ]
    background.defer(jobs.record, when=datetime.timedelta(hours=1), args=["later"])
    wait_for(
        lambda: all(ref.refresh().status == records.SUCCEEDED for ref in refs),
        timeout=20,
        message="the deferred jobs to succeed",
    )
    for ref in refs:
        job = Job.objects.get(pk=ref.id)
        assert job.started_at >= job.run_at, f"job {job.id} started before its run_at"
        late = (job.started_at - job.run_at).total_seconds()
        assert late < poll_interval + 1.5, f"job {job.id} started {late:.3f} s after its run_at"
    assert not Execution.objects.filter(key="later").exists()
    assert Job.objects.get(args=["later"]).status == records.READY


@pytest.mark.django_db
def test_jobs_not_due_yet_are_not_claimed():
    ref = background.defer(jobs.add, when=datetime.timedelta(minutes=5), args=[1, 2])
    stats = run_jobs()
    assert stats.claimed == 0
    assert ref.refresh().status == records.READY
    assert ref.attempts == 0


# -- retries ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_failed_attempts_are_retried_with_exponential_backoff_until_one_succeeds():
    policy = RetryPolicy(base=0.2, cap=10.0, jitter=0.0)
    ref = background.enqueue(jobs.fail_until, args=["flaky", 3], max_attempts=5)

    gaps = []
    for attempt in (1, 2):
        run_jobs(retry_policy=policy)
        job = Job.objects.get(pk=ref.id)
        assert job.status == records.READY
        assert job.attempts == attempt
        assert job.error["type"] == "builtins.ValueError"
        assert job.error["message"] == f"attempt {attempt} fails"
        gaps.append((job.run_at - job.started_at).total_seconds())
        wait_for(lambda: timezone.now() >= Job.objects.get(pk=ref.id).run_at, timeout=5)
    run_jobs(retry_policy=policy)

    ref.refresh()
    assert ref.status == records.SUCCEEDED
    assert ref.result == 3
    assert ref.attempts == 3
    assert list(
        Event.objects.filter(name="flaky").order_by("id").values_list("value", flat=True)
    ) == [
        1,
        2,
        3,
    ]
    # Backoff doubles: 0.2 s after attempt 1, 0.4 s after attempt 2 (no jitter here).
    assert 0.2 <= gaps[0] < 0.2 + 2.0
    assert 0.4 <= gaps[1] < 0.4 + 2.0


@pytest.mark.django_db(transaction=True)
def test_a_job_that_keeps_failing_fails_after_max_attempts_with_its_error_kept():
    ref = background.enqueue(jobs.fail_until, args=["doomed", 99], max_attempts=3)
    work_until(lambda: ref.refresh().is_finished, timeout=20)

    assert ref.status == records.FAILED
    assert ref.attempts == 3
    assert Event.objects.filter(name="doomed").count() == 3
    assert ref.error["type"] == "builtins.ValueError"
    assert ref.error["message"] == "attempt 3 fails"
    assert "fail_until" in ref.error["traceback"]
    assert "ValueError: attempt 3 fails" in ref.error["traceback"]
    assert ref.finished_at is not None
    with pytest.raises(JobFailed, match="attempt 3 fails") as excinfo:
        ref.result  # noqa: B018 (the property raises)
    assert excinfo.value.error["type"] == "builtins.ValueError"


@pytest.mark.django_db
def test_max_attempts_one_means_no_retry():
    ref = background.enqueue(jobs.fail_always, args=["once"], max_attempts=1)
    stats = run_jobs()
    assert (stats.failed, stats.retried) == (1, 0)
    ref.refresh()
    assert (ref.status, ref.attempts) == (records.FAILED, 1)
    assert ref.error["message"] == "once"


@pytest.mark.django_db
def test_max_attempts_defaults_to_three_and_to_the_backend_option(settings):
    assert Job.objects.get(pk=background.enqueue(jobs.noop).id).max_attempts == 3
    settings.PGJOBS = {
        **settings.PGJOBS,
        "OPTIONS": {**settings.PGJOBS["OPTIONS"], "MAX_ATTEMPTS": 5},
    }
    assert Job.objects.get(pk=background.enqueue(jobs.noop).id).max_attempts == 5
    assert Job.objects.get(pk=background.enqueue(jobs.noop, max_attempts=2).id).max_attempts == 2


# -- jobs that cannot start ---------------------------------------------------------------


def hand_written_row(func, args=None, kwargs=None, signed=True):
    """A row as a bad deploy or an old release leaves it: bypasses enqueue's checks
    (but signed with the site's key, unless ``signed=False``).

    ``run_at`` is explicit because the column's default (Django's ``Now()``, the
    statement's time on Postgres) is later than the test transaction's ``now()``.
    """
    args = [] if args is None else args
    kwargs = kwargs or {}
    return Job.objects.create(
        func=func,
        args=args,
        kwargs=kwargs,
        queue="default",
        signature=sign_job(func, args, kwargs, "default") if signed else "",
        run_at=timezone.now() - datetime.timedelta(hours=1),
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("func", "args", "kwargs", "message"),
    [
        ("tests.testapp.jobs.does_not_exist", [], {}, "does_not_exist"),
        ("no_such_module.job", [], {}, "no_such_module"),
        ("tests.testapp.broken_module.job", [], {}, "broken_module cannot be imported"),
        ("tests.testapp.jobs.UNSERIALISABLE", [], {}, "not a function"),
        ("tests.testapp.jobs.add", {"a": 1}, {}, "malformed"),
        ("tests.testapp.jobs.add", [{"__pgjobs__": "no-such-tag", "v": 1}, 2], {}, "no-such-tag"),
        ("tests.testapp.jobs.add", [{"__pgjobs__": "datetime", "v": "nope"}, 2], {}, "decode"),
        (
            "tests.testapp.jobs.echo",
            [],
            {"e": {"__pgjobs__": "model", "v": ["testapp.event", 0]}},
            "DoesNotExist",
        ),
    ],
)
def test_a_job_that_cannot_start_fails_at_once_and_the_worker_runs_the_others(
    func, args, kwargs, message
):
    before = background.enqueue(jobs.add, args=[1, 2], priority=10)
    bad = hand_written_row(func, args, kwargs)
    after = background.enqueue(jobs.add, args=[3, 4], priority=-10)

    stats = run_jobs()

    bad.refresh_from_db()
    assert bad.status == records.FAILED
    assert bad.attempts == 1, "a job that cannot start must not be retried"
    assert bad.error["type"] == "pgjobs.exceptions.InvalidJob"
    assert message in bad.error["message"]
    assert before.refresh().result == 3
    assert after.refresh().result == 7
    assert stats.succeeded == 2


@pytest.mark.django_db
def test_a_row_not_signed_by_this_site_is_refused_before_anything_is_imported():
    unsigned = hand_written_row("tests.testapp.broken_module.job", signed=False)
    good = background.enqueue(jobs.add, args=[1, 1])
    tampered = background.enqueue(jobs.add, args=[1, 2])
    Job.objects.filter(pk=tampered.id).update(args=[1, 3])

    run_jobs()

    for job_id in (unsigned.id, tampered.id):
        job = Job.objects.get(pk=job_id)
        assert (job.status, job.attempts) == (records.FAILED, 1)
        assert "signature mismatch" in job.error["message"]
    assert good.refresh().result == 2


@pytest.mark.django_db(transaction=True)
def test_a_drain_runs_a_due_job_that_another_transaction_held_for_a_moment():
    """A racing drain's pruner or claim can hold a ready row for a moment (on MySQL
    a claim locks rows it reads and does not take). The claim skips it; the drain
    must look again rather than exit and leave it for the next cron run."""
    if connection.vendor == "sqlite" or JOBS_IN_REDIS:
        pytest.skip("row locks: PostgreSQL and MySQL/MariaDB")
    ref = background.enqueue(jobs.add, args=[2, 3])
    with job_row_locked(ref.id, seconds=0.3):
        stats = run_jobs()
    assert stats.succeeded == 1
    assert ref.refresh().result == 5


def test_the_main_thread_sleeps_until_its_nearest_deadline_and_no_longer():
    """At the end of a turn with nothing to do the main thread sleeps until the
    first of: a running job's timeout, the next duty, the recheck of a due job
    another transaction holds, and the moment the oldest success not stored yet
    must be (RECORD_WITHIN); otherwise until the next heartbeat at the latest."""
    worker = Worker(get_backend().get_store(), poll_interval=5.0)
    idle = worker._sleep_seconds(None, None, False)
    assert 0 < idle <= worker.heartbeat_interval
    assert worker._sleep_seconds(0.2, None, False) == 0.2  # a job's timeout
    assert worker._sleep_seconds(None, 0.3, False) == 0.3  # a duty
    assert worker._sleep_seconds(0.2, 0.1, False) == 0.1
    assert worker._sleep_seconds(None, None, True) == DUE_NOW_RECHECK
    worker.recorder.take([(object(), Outcome(True))])  # a success, not stored yet
    # Asked the moment it ended (the real clock would let a stall in between show).
    worker.policy.clock = lambda: worker.recorder.first_unrecorded_at
    assert worker._sleep_seconds(None, None, False) == pytest.approx(RECORD_WITHIN)
    assert worker._sleep_seconds(0.01, None, False) == 0.01


@pytest.mark.django_db(transaction=True)
def test_a_polling_worker_that_just_ran_a_job_looks_again_soon_not_at_the_next_poll():
    """Without wake-ups (SQLite, MySQL/MariaDB), a worker that has caught up would
    leave each job enqueued just after for the next poll: half the interval on
    average, under a steady trickle as much as idle. After a claim that found jobs
    it looks again within BUSY_POLL, doubling the wait while it finds none."""
    store = get_backend().get_store()
    if store.wakeup == "listen":
        pytest.skip("PostgreSQL and Redis wake workers: nothing to poll for")
    first = background.enqueue(jobs.add, args=[1, 1])
    worker = Worker(store, concurrency=1, poll_interval=5.0)
    found = {}

    def drive():
        wait_for(lambda: first.refresh().status == records.SUCCEEDED, timeout=10)
        time.sleep(0.2)
        second = background.enqueue(jobs.add, args=[2, 2])
        enqueued = time.monotonic()
        wait_for(lambda: second.refresh().status == records.SUCCEEDED, timeout=10)
        found["waited"] = time.monotonic() - enqueued

    run_worker_while(worker, drive)
    assert found["waited"] < 1.5, "it waited for the 5 s poll"


@pytest.mark.django_db(transaction=True)
def test_a_polling_worker_backs_off_to_its_poll_interval_once_jobs_stop_coming():
    """The other half: after the last job, the looks thin out (each wait twice the
    one before) until they are ``poll_interval`` apart, and no further."""
    store = get_backend().get_store()
    if store.wakeup == "listen":
        pytest.skip("PostgreSQL and Redis wake workers: nothing to poll for")
    claims = []
    claim = store.finish_and_claim

    def noted_claim(worker_id, results, *args, **kwargs):
        claims.append((time.monotonic(), bool(results)))
        return claim(worker_id, results, *args, **kwargs)

    store.finish_and_claim = noted_claim  # the real store's claim, its times noted
    ref = background.enqueue(jobs.add, args=[1, 1])
    worker = Worker(store, concurrency=1, poll_interval=0.8)

    def drive():
        wait_for(lambda: ref.refresh().status == records.SUCCEEDED, timeout=10)
        time.sleep(3.4)  # the looks of the 3.2 s window, and a margin

    try:
        run_worker_while(worker, drive)
    finally:
        del store.finish_and_claim
    # The window opens at the claim that stored the job's success (when this test
    # saw it, the driver's polls being late on a busy machine, shifted the gaps):
    # about 0.1 + 0.2 + 0.4 + 0.8 + 0.8 + 0.8 s of looks after it.
    stored = max(t for t, carried_results in claims if carried_results)
    idle = [t for t, _ in claims if stored < t <= stored + 3.2]
    gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(idle)]
    assert len(idle) <= 10, f"{len(idle)} looks in 3.2 s: it kept polling fast ({gaps})"
    assert len(idle) >= 4, f"{len(idle)} looks in 3.2 s: it waited for the poll at once"
    assert gaps[0] < 0.35, f"the first looks after the job came slowly: {gaps}"
    assert max(gaps) >= 0.7, f"it never reached its 0.8 s poll interval: {gaps}"
    assert max(gaps) < 1.3, f"it backed off past its 0.8 s poll interval: {gaps}"


@pytest.mark.django_db(transaction=True)
def test_a_woken_worker_does_not_claim_when_a_slot_runs_dry_after_the_store_ran_out():
    """With a store that wakes workers (PostgreSQL, Redis), a worker that caught up
    claims for each wake-up, not again each time a job ends: under a trickle of
    jobs that second claim found nothing, for every job."""
    store = get_backend().get_store()
    if store.wakeup != "listen":
        pytest.skip("a polled store has no wake-ups: a slot running dry is its cue")
    empty = []
    claim = store.finish_and_claim

    def noted_claim(worker_id, results, queues, limit):
        jobs_claimed = claim(worker_id, results, queues, limit)
        if limit and not jobs_claimed:
            empty.append(time.monotonic())
        return jobs_claimed

    store.finish_and_claim = noted_claim
    worker = Worker(store, concurrency=2, poll_interval=5.0)
    refs = []

    def drive():
        time.sleep(0.3)  # the worker is idle, its first empty claims made
        empty.clear()
        for n in range(20):
            refs.append(background.enqueue(jobs.add, args=[n, n]))
            wait_for(lambda: refs[-1].refresh().status == records.SUCCEEDED, timeout=10)

    try:
        run_worker_while(worker, drive)
    finally:
        del store.finish_and_claim
    assert [ref.result for ref in refs] == [2 * n for n in range(20)]
    assert len(empty) <= 5, f"{len(empty)} claims found nothing for 20 jobs"


@pytest.mark.django_db(transaction=True)
def test_a_retry_runs_when_due_though_no_wake_up_tells_of_it():
    """A retry is due later, and nothing wakes a worker for it: the worker that
    recorded it looks again when it is due, not at the next poll."""
    worker = Worker(
        get_backend().get_store(),
        concurrency=2,
        poll_interval=5.0,
        retry_policy=RetryPolicy(base=0.2, cap=0.2, jitter=0.0),
    )
    found = {}

    def drive():
        ref = background.enqueue(jobs.fail_until, args=["retry-when-due", 2], max_attempts=2)
        wait_for(lambda: ref.refresh().status == records.SUCCEEDED, timeout=15)
        first, second = Event.objects.filter(name="retry-when-due").order_by("value")
        found["waited"] = second.at - first.at

    run_worker_while(worker, drive, timeout=30)
    assert found["waited"] < 1.5, f"the 0.2 s retry ran {found['waited']:.2f} s later (poll: 5 s)"


@pytest.mark.django_db(transaction=True)
def test_a_deferred_job_starts_when_due_while_other_jobs_keep_the_worker_busy():
    """A worker claiming for a trickle of jobs, its claims coming back with fewer
    than it asked for, still starts a deferred job when it is due, not at the
    next poll: no wake-up tells of it."""
    if JOBS_IN_REDIS:
        pytest.skip("reads started_at from the SQL Job table")
    store = get_backend().get_store()
    if store.wakeup != "listen":
        pytest.skip("a polled store hears of no job before its next poll, deferred or not")
    worker = Worker(store, concurrency=2, poll_interval=5.0)
    found = {}

    def drive():
        time.sleep(0.2)
        due = timezone.now() + datetime.timedelta(seconds=0.5)
        deferred = background.enqueue(jobs.add, args=[1, 1], when=due)
        for _ in range(40):  # a trickle of jobs, one every 25 ms, for a second
            background.enqueue(jobs.noop)
            time.sleep(0.025)
        wait_for(lambda: deferred.refresh().status == records.SUCCEEDED, timeout=10)
        found["late"] = (Job.objects.get(pk=deferred.id).started_at - due).total_seconds()

    run_worker_while(worker, drive)
    assert found["late"] < 0.5, f"the deferred job started {found['late']:.2f} s late (poll: 5 s)"


# -- async jobs ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_async_jobs_run_and_their_result_is_stored():
    refs = background.enqueue_many([(jobs.async_add, [i, i], {}) for i in range(5)])
    run_jobs(concurrency=3)
    assert [ref.refresh().result for ref in refs] == [0, 2, 4, 6, 8]


@pytest.mark.django_db
def test_async_job_failures_are_recorded_like_sync_ones():
    ref = background.enqueue(jobs.async_fail, max_attempts=1)
    run_jobs()
    ref.refresh()
    assert ref.status == records.FAILED
    assert ref.error["type"] == "builtins.KeyError"
    assert "async boom" in ref.error["message"]
    assert "async_fail" in ref.error["traceback"]


@pytest.mark.django_db
def test_async_jobs_run_side_by_side_but_never_more_than_concurrency_at_once():
    """They share one event loop, each holding a slot while it awaits, so jobs
    prefetched beyond the slots (for short jobs) wait their turn."""
    jobs.ASYNC_STATE.update(running=0, most=0)
    background.enqueue_many([(jobs.async_overlap, [0.005], {})] * 150)
    stats = run_jobs(concurrency=3, prefetch=100)
    assert stats.succeeded == 150
    assert jobs.ASYNC_STATE["most"] == 3
    assert jobs.ASYNC_STATE["running"] == 0


@pytest.mark.django_db
def test_an_async_job_past_its_timeout_is_cancelled_on_its_event_loop():
    jobs.ASYNC_STATE["cancelled"].clear()
    ref = background.enqueue(
        jobs.async_sleep_noting_cancel, args=["overdue", 30], timeout=0.2, max_attempts=1
    )
    run_jobs(timeout=10)
    assert ref.refresh().status == records.FAILED
    assert ref.error["type"] == "builtins.TimeoutError"
    wait_for(lambda: "overdue" in jobs.ASYNC_STATE["cancelled"], timeout=5)


@pytest.mark.django_db
def test_a_stopping_worker_cancels_async_jobs_still_running_after_the_grace_period():
    jobs.ASYNC_STATE["started"].clear()
    jobs.ASYNC_STATE["cancelled"].clear()
    ref = background.enqueue(jobs.async_sleep_noting_cancel, args=["stuck", 30])
    worker = Worker(get_backend().get_store(), concurrency=2, grace_period=0.2, burst=True)

    def stop_once_started():
        wait_for(lambda: "stuck" in jobs.ASYNC_STATE["started"], timeout=10)
        worker.request_stop()

    threading.Thread(target=stop_once_started, daemon=True).start()
    started = time.monotonic()
    worker.run()
    assert time.monotonic() - started < 5, "the worker waited for the job, not the grace period"
    job = Job.objects.get(pk=ref.id)
    assert (job.status, job.attempts) == (records.READY, 0), "put back, attempt uncounted"
    wait_for(lambda: "stuck" in jobs.ASYNC_STATE["cancelled"], timeout=5)


@pytest.mark.django_db
def test_sync_and_async_jobs_together_never_run_more_than_concurrency_at_once():
    """Async jobs start as tasks on the loop, without a slot thread each; a token
    per running job keeps slots and tasks together within ``concurrency``."""
    jobs.ASYNC_STATE.update(running=0, most=0)
    background.enqueue_many(
        [(jobs.overlap if n % 2 else jobs.async_overlap, [0.005], {}) for n in range(160)]
    )
    stats = run_jobs(concurrency=3, prefetch=100)
    assert stats.succeeded == 160
    assert jobs.ASYNC_STATE["most"] == 3
    assert jobs.ASYNC_STATE["running"] == 0


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kinds=st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=20, max_size=60))
def test_prefetched_sync_and_async_jobs_start_in_claim_order(kinds):
    """One slot, batches of prefetched jobs of both kinds: an async job started
    straight on the loop must not overtake a sync job claimed before it."""
    if JOBS_IN_REDIS:
        from tests.redis_settings import flush_jobs

        flush_jobs()
    else:
        Job.objects.all().delete()
    jobs.ASYNC_STATE["order"] = []
    for index, (priority, is_async) in enumerate(kinds):
        func = jobs.async_note_start if is_async else jobs.note_start
        background.enqueue(func, args=[index], priority=priority)
    expected = [index for index, _ in sorted(enumerate(kinds), key=lambda k: -k[1][0])]
    stats = run_jobs(concurrency=1, prefetch=50)
    assert stats.succeeded == len(kinds)
    assert jobs.ASYNC_STATE["order"] == expected


@pytest.mark.django_db
@pytest.mark.parametrize("overdue", [jobs.sleep, jobs.async_sleep])
def test_a_timed_out_job_gives_its_share_of_the_concurrency_back(overdue):
    """A slot's overdue thread cannot be stopped: a new slot takes its place. An
    overdue task is cancelled and returns its share itself. Either way, with one
    slot, the jobs after it still run."""
    late = background.enqueue(overdue, args=[30], timeout=0.2, max_attempts=1, priority=1)
    after = [background.enqueue(kind, args=[0.01]) for kind in (jobs.sleep, jobs.async_sleep)]
    stats = run_jobs(concurrency=1, timeout=15)
    assert late.refresh().status == records.FAILED
    assert late.error["type"] == "builtins.TimeoutError"
    assert [ref.refresh().status for ref in after] == [records.SUCCEEDED] * 2
    assert stats.succeeded == 2


@pytest.mark.django_db(transaction=True)
def test_a_prefetched_job_waiting_for_a_share_of_the_concurrency_is_handed_back_unrun():
    """An async job on the loop holds the one share of the concurrency; a sync job
    claimed meanwhile (prefetched) waits for it. A stopping worker hands it back
    unstarted, and it must not start when the cancelled task frees its share."""
    for name in ("started", "cancelled"):
        jobs.ASYNC_STATE[name].clear()
    jobs.ASYNC_STATE["order"] = []
    worker = Worker(
        get_backend().get_store(),
        concurrency=1,
        prefetch=50,
        grace_period=0.3,
        poll_interval=0.05,
    )
    # The worker prefetches once it has timed jobs far quicker than a claim: one job
    # timed at a microsecond stands for quick ones, as for the worker subprocesses of
    # tests/testapp/apps.py (which says why timing real ones made this flaky). The job
    # that holds the share never ends, so nothing moves the estimate after it.
    worker.policy.jobs_timed([1e-6])
    found = {}

    def drive():
        # The job that holds the share, then the late one.
        background.enqueue(jobs.async_sleep_noting_cancel, args=["stuck", 30])
        wait_for(lambda: "stuck" in jobs.ASYNC_STATE["started"], timeout=10)
        found["late"] = late = background.enqueue(jobs.note_start, args=["late"])
        wait_for(lambda: late.refresh().status == records.RUNNING, timeout=10)
        time.sleep(0.1)  # claimed, waiting for the share

    run_worker_while(worker, drive)
    wait_for(lambda: "stuck" in jobs.ASYNC_STATE["cancelled"], timeout=5)
    time.sleep(0.3)  # time enough for the slot to start it, if it were going to
    assert "late" not in jobs.ASYNC_STATE["order"]
    late = found["late"].refresh()
    assert (late.status, late.attempts) == (records.READY, 0), "put back, attempt uncounted"


@pytest.mark.django_db
def test_an_async_job_whose_function_only_imports_at_the_second_look_runs_on_the_loop():
    """The claim looks at a job's function to start async ones on the loop; when
    the import fails there and works in the slot a moment later, the job still
    runs as an async job (on the loop thread), not as a call returning a coroutine."""
    import sys

    from tests.testapp import flaky_async

    ref = background.enqueue(flaky_async.where_am_i, args=[1, 2], max_attempts=1)
    sys.modules.pop(flaky_async.__name__)
    jobs.IMPORT_FAILURES[0] = 1
    try:
        run_jobs(concurrency=1)
    finally:
        jobs.IMPORT_FAILURES[0] = 0
    assert ref.refresh().status == records.SUCCEEDED, ref.error
    assert ref.result == ["pgjobs-async", 3]


@pytest.mark.django_db
def test_current_job_tells_an_async_job_about_itself():
    ref = background.enqueue(jobs.async_whoami, max_attempts=2)
    run_jobs()
    assert ref.refresh().result["id"] == ref.id
    assert ref.result["attempt"] == 1


# -- the running job's context ----------------------------------------------------------------


@pytest.mark.django_db
def test_current_job_tells_a_job_about_itself():
    ref = background.enqueue(jobs.whoami, queue="other", max_attempts=4)
    run_jobs()
    assert ref.refresh().result == {
        "id": ref.id,
        "func": "tests.testapp.jobs.whoami",
        "queue": "other",
        "attempt": 1,
        "max_attempts": 4,
    }
    assert current_job() is None, "the context must not leak out of the job"


@pytest.mark.django_db(transaction=True)
def test_current_job_attempt_counts_retries():
    ref = background.enqueue(jobs.fail_until, args=["counting", 2])
    work_until(lambda: ref.refresh().is_finished, timeout=20)
    assert ref.result == 2
    assert list(Event.objects.filter(name="counting").values_list("value", flat=True)) == [1, 2]


# -- results ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_return_values_are_stored_with_their_types():
    value = (1, datetime.date(2024, 2, 29), {"k": {1, 2}})
    ref = background.enqueue(jobs.echo, args=[value], kwargs={"when": datetime.timedelta(days=1)})
    run_jobs()
    assert ref.refresh().result == {"args": [value], "kwargs": {"when": datetime.timedelta(days=1)}}
    assert isinstance(ref.result["args"][0], tuple)


@pytest.mark.django_db
def test_a_return_value_that_cannot_be_encoded_at_all_is_kept_as_its_repr():
    ref = background.enqueue(jobs.self_referential)
    after = background.enqueue(jobs.add, args=[1, 2], priority=-1)
    run_jobs(timeout=10)
    assert ref.refresh().status == records.SUCCEEDED
    assert ref.result == "[[...]]"
    assert after.refresh().result == 3


@pytest.mark.django_db
def test_a_return_value_json_cannot_hold_is_kept_as_its_repr():
    ref = background.enqueue(jobs.echo, args=["x"])
    Job.objects.filter(pk=ref.id).update(
        func="tests.testapp.jobs.Multiplier",
        signature=sign_job("tests.testapp.jobs.Multiplier", ["x"], {}, "default"),
    )
    run_jobs()
    assert ref.refresh().status == records.SUCCEEDED
    assert ref.result.startswith("<tests.testapp.jobs.Multiplier object")


class CountingStore:
    """Wraps a store and counts the worker's claims; polls (no LISTEN connection)."""

    supports_listen = False

    def __init__(self, store):
        self._store = store
        self.claims = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def claim(self, *args):
        self.claims += 1
        return self._store.claim(*args)

    def finish_and_claim(self, *args):
        self.claims += 1
        return self._store.finish_and_claim(*args)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("queue_state", ["empty", "only a job due later"])
def test_an_idle_worker_does_not_poll_faster_than_its_poll_interval(jobs_backend, queue_state):
    import threading

    from django.db import connections

    from pgjobs.worker import Worker

    if queue_state != "empty":
        background.defer(jobs.noop, when=datetime.timedelta(hours=1))
    store = CountingStore(jobs_backend.get_store())
    worker = Worker(store, poll_interval=0.25)

    def work():
        try:
            worker.run()
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        wait_for(lambda: store.claims >= 1, timeout=10, message="the first claim")
        started, claims = time.monotonic(), store.claims
        time.sleep(1.0)  # measuring a rate: how many claims in one second of idling
        elapsed, claims = time.monotonic() - started, store.claims - claims
    finally:
        worker.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    assert claims <= elapsed / 0.25 + 2, f"{claims} claims in {elapsed:.2f} s while idle"


@pytest.mark.django_db
def test_a_job_with_many_attempts_behind_it_is_retried_at_the_capped_delay():
    """Backoff is capped (RETRY_MAX_DELAY=0.2 s in the test settings) however many
    attempts a job has had; computing it must not overflow and wedge the worker."""
    ref = background.enqueue(jobs.fail_always, max_attempts=5000)
    Job.objects.filter(pk=ref.id).update(attempts=1500)
    other = background.enqueue(jobs.add, args=[1, 2], priority=-1)
    run_jobs(timeout=10)
    job = Job.objects.get(pk=ref.id)
    assert (job.status, job.attempts) == (records.READY, 1501)
    assert (job.run_at - job.started_at).total_seconds() < 0.2 * 1.25 + 1.0
    assert other.refresh().result == 3


# -- values the database is picky about ------------------------------------------------------


@pytest.mark.django_db
def test_text_jsonb_cannot_hold_is_stored_in_arguments_results_and_errors():
    """PostgreSQL's jsonb holds neither U+0000 nor lone surrogates. A job that takes,
    returns or raises them must still be recorded (not wedge the worker in a loop of
    failing writes)."""
    text = "before\x00 \udcff after"  # NUL, and a lone surrogate (os.fsdecode)
    echoed = background.enqueue(jobs.echo, args=[text], kwargs={"k": {text: text}})
    failed = background.enqueue(jobs.fail_always, args=[text], max_attempts=1)
    after = background.enqueue(jobs.add, args=[1, 2], priority=-1)
    run_jobs(timeout=10)
    assert echoed.refresh().result == {"args": [text], "kwargs": {"k": {text: text}}}
    failed.refresh()
    assert failed.status == records.FAILED
    assert failed.error["type"] == "builtins.RuntimeError"
    assert failed.error["message"].startswith("before") and failed.error["message"].endswith(
        "after"
    )
    assert after.refresh().result == 3


@pytest.mark.django_db
def test_large_floats_come_back_as_floats():
    """jsonb prints 1e+16 back as 10000000000000000, which JSON reads as an int."""
    values = [1e16, -3.602879701896397e16, 1.5e300, 1e-7, 0.1]
    ref = background.enqueue(jobs.echo, args=values)
    run_jobs()
    result = ref.refresh().result["args"]
    assert result == values
    assert [type(v) for v in result] == [float] * len(values)


@pytest.mark.django_db
def test_integers_of_any_size_come_back_exactly():
    values = [2**53 + 1, 2**63 - 1, -(2**63), 2**64 + 1, -(2**70), 10**30]
    ref = background.enqueue(jobs.echo, args=values)
    run_jobs()
    result = ref.refresh().result["args"]
    assert result == values
    assert [type(v) for v in result] == [int] * len(values)


# -- timeouts --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("func", [jobs.sleep, jobs.async_sleep], ids=["sync", "async"])
def test_an_attempt_past_its_timeout_fails_and_frees_its_slot(func):
    slow = background.enqueue(func, args=[5], timeout=0.3, max_attempts=1)
    quick = background.enqueue(jobs.add, args=[1, 2], priority=-1)
    started = time.monotonic()
    run_jobs(timeout=10)
    assert time.monotonic() - started < 3, "the worker waited for the slow job"
    slow.refresh()
    assert slow.status == records.FAILED
    assert slow.error["type"] == "builtins.TimeoutError"
    assert quick.refresh().result == 3


@pytest.mark.django_db
def test_a_timed_out_attempt_is_retried_like_any_failure():
    ref = background.enqueue(jobs.sleep, args=[5], timeout=0.2, max_attempts=2)
    run_jobs(timeout=10)
    job = Job.objects.get(pk=ref.id)
    assert (job.status, job.attempts) == (records.READY, 1)
    assert job.error["type"] == "builtins.TimeoutError"


@pytest.mark.django_db
def test_a_job_within_its_timeout_succeeds():
    ref = background.enqueue(jobs.sleep, args=[0.05], timeout=5)
    run_jobs()
    assert ref.refresh().result == 0.05


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", [None, 30], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("func", [jobs.exit_process, jobs.async_exit_process])
def test_a_job_that_calls_sys_exit_fails_and_the_worker_goes_on(func, timeout):
    """With a timeout, an async job runs inside ``asyncio.wait_for``, as a task of its
    own on Python 3.11: its SystemExit must not stop the loop the others run on."""
    ref = background.enqueue(func, max_attempts=1, timeout=timeout)
    after = background.enqueue(jobs.async_add, args=[1, 2], priority=-1)
    run_jobs(timeout=10)
    ref.refresh()
    assert ref.status == records.FAILED
    assert ref.error["type"] == "builtins.SystemExit"
    assert after.refresh().result == 3, "sync and async jobs still run after it"


# -- signals -------------------------------------------------------------------------


def test_a_signal_that_arrives_while_the_worker_holds_its_wake_up_lock_still_stops_it():
    """A handler runs in the main thread between two bytecodes, so it can find the
    alarm's lock held by that very thread (entering or leaving a sleep). A
    handler that rang the alarm there would wait for itself forever: the worker
    logged the signal and never stopped. Here the lock is held by the thread
    that runs the handler, as it is at that moment."""
    worker = Worker(get_backend().get_store())
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    handled = threading.Event()

    def signalled_while_holding_the_lock():
        with worker.alarm._lock:  # what the main thread holds on its way in and out of a sleep
            worker.shutdown.on_signal(signal.SIGTERM, None)
        handled.set()

    try:
        worker.install_signal_handlers()
        threading.Thread(target=signalled_while_holding_the_lock, daemon=True).start()
        assert handled.wait(5), "the signal handler waited on a lock its own thread holds"
        assert worker.shutdown.stopping.wait(5), "the signal did not ask the worker to stop"
        # The relay thread sets stopping, then rings: wait for both, do not peek.
        wait_for(lambda: worker.alarm.rung, timeout=5, message="a ring for the main loop")
    finally:
        worker.shutdown.close()
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_installed_signal_handlers_frees_their_pipe_and_thread_when_it_ends():
    """Drains run in-process (cron wrappers, tests) install handlers each time: the
    relay thread and its pipe must not outlive the run."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker = Worker(get_backend().get_store(), burst=True)
        worker.install_signal_handlers()
        relays = [t for t in threading.enumerate() if t.name == "pgjobs-signals" and t.is_alive()]
        assert relays, "no relay thread"
        worker.run()
        for relay in relays:
            relay.join(5)
        assert not any(relay.is_alive() for relay in relays), "the relay thread outlived run()"
        worker.shutdown.on_signal(signal.SIGTERM, None)  # after the run: nothing to stop, no error
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


# -- what a worker logs ------------------------------------------------------------


def test_the_summary_duty_says_what_ran_since_its_last_line(caplog):
    """At the default verbosity a worker logs a summary every few seconds, not a
    line per job (issue 21): failed for good, retried and succeeded add up to ran."""
    from pgjobs.worker import duties
    from pgjobs.worker.worker import WorkerStats

    class Running:
        def running(self):
            return 3

    stats = WorkerStats()
    duty = duties.summary(stats, Running(), 10.0)
    caplog.set_level("INFO", logger="pgjobs")
    duty.run()
    assert not caplog.records, "nothing ran: no line"
    stats.succeeded, stats.failed, stats.retried = 12_300, 45, 5
    duty.run()
    assert caplog.messages == [
        "pgjobs: ran 12,345 job(s) in the last 0 s: 12,300 succeeded, 40 failed, 5 retried; "
        "3 running"
    ]
    duty.run()
    assert len(caplog.records) == 1, "nothing ran since: no line"
