"""``pgjobs.testing``: what a user's test does with it. A real ``Worker`` works
an ``InMemoryStore`` in this process, with no database and no Redis: jobs run,
fail, retry on a hand-moved clock, and an idle worker is woken by an enqueue.
The store's contract itself is held in ``test_store_contract.py``."""

import json
import time

from pgjobs import records
from pgjobs.handler import get_backend
from pgjobs.records import JobSpec
from pgjobs.testing import InMemoryStore, ManualClock
from pgjobs.worker import Worker
from tests.conftest import run_worker_while, wait_for
from tests.testapp import jobs


def prepared(func, *args, when=None, **options):
    """The ``JobSpec`` any enqueue of ``func(*args)`` would store: validated, signed."""
    return get_backend().prepare(func, list(args), {}, when, **options)


def test_a_burst_worker_runs_the_due_jobs_and_stores_their_results():
    store = InMemoryStore()
    sums = [store.enqueue(prepared(jobs.add, n, 10)) for n in range(5)]
    later = store.enqueue(prepared(jobs.add, 1, 1, when=store.clock() + _seconds(3600)))
    stats = Worker(store, burst=True).run()
    assert (stats.claimed, stats.succeeded, stats.failed) == (5, 5, 0)
    assert [store.get(ref.id).result for ref in sums] == [10, 11, 12, 13, 14]
    assert store.get(later.id).status == records.READY, "not due: not run"
    assert [info.id for info in store.jobs(records.SUCCEEDED)] == [ref.id for ref in sums]


def test_async_jobs_run_too():
    store = InMemoryStore()
    ref = store.enqueue(prepared(jobs.async_add, 2, 3))
    Worker(store, burst=True).run()
    assert store.get(ref.id).result == 5


def test_a_failing_job_is_retried_when_the_clock_reaches_its_delay_then_fails():
    clock = ManualClock()
    store = InMemoryStore(clock=clock)
    ref = store.enqueue(prepared(jobs.fail_always, max_attempts=2))
    worker_options = {"burst": True, "retry_policy": get_backend().retry_policy}
    Worker(store, **worker_options).run()
    got = store.get(ref.id)
    assert (got.status, got.attempts, got.error["message"]) == (records.READY, 1, "boom")
    clock.advance(seconds=1)
    Worker(store, **worker_options).run()
    got = store.get(ref.id)
    assert (got.status, got.attempts, got.error["type"]) == (
        records.FAILED,
        2,
        "builtins.RuntimeError",
    )


def test_a_job_that_was_not_signed_by_this_site_is_not_run():
    store = InMemoryStore()
    spec = prepared(jobs.record, "unsigned")
    spec.signature = "forged"
    ref = store.enqueue(spec)
    Worker(store, burst=True).run()
    assert store.get(ref.id).status == records.FAILED


def test_keep_succeeded_false_forgets_a_job_once_it_succeeds():
    store = InMemoryStore(keep_succeeded=False)
    ref = store.enqueue(prepared(jobs.noop))
    Worker(store, burst=True).run()
    assert store.get(ref.id) is None
    assert store.jobs() == []


def test_an_idle_worker_is_woken_by_an_enqueue():
    store = InMemoryStore()
    worker = Worker(store, poll_interval=30.0)  # would poll only every 30 s
    ref = {}

    def drive():
        time.sleep(0.3)  # the worker is idle, waiting
        started = time.monotonic()
        ref["job"] = store.enqueue(prepared(jobs.add, 20, 22))
        wait_for(lambda: store.get(ref["job"].id).status == records.SUCCEEDED, timeout=5)
        ref["seconds"] = time.monotonic() - started

    stats = run_worker_while(worker, drive)
    assert stats.succeeded == 1
    assert store.get(ref["job"].id).result == 42
    assert ref["seconds"] < 1.0


def test_a_job_whose_arguments_cannot_be_read_is_claimed_with_the_problem():
    store = InMemoryStore()
    deep = "[" * 100_000 + "]" * 100_000  # beyond what the JSON decoder reads
    spec = JobSpec(func="tests.testapp.jobs.noop", args=[], kwargs={}, args_json=deep)
    ok = store.enqueue(JobSpec(func="tests.testapp.jobs.noop", args=[], kwargs={}))
    bad = store.enqueue(spec)
    claimed = {job.id: job for job in store.claim(None, 10, "w")}
    assert claimed[ok.id].problem is None
    assert claimed[bad.id].problem.startswith("cannot decode the job's arguments: RecursionError")
    assert claimed[bad.id].args is None


def test_jobs_and_clear_for_inspecting_and_resetting_the_store():
    store = InMemoryStore()
    first = store.enqueue(prepared(jobs.noop))
    second = store.enqueue(prepared(jobs.add, 1, 2, queue="other"))
    assert [info.id for info in store.jobs()] == [first.id, second.id]
    assert store.get(str(first.id)).id == first.id, "an id as text (from a URL) finds it"
    assert json.loads(json.dumps(store.jobs()[1].args)) == [1, 2]
    store.clear()
    assert store.jobs() == []
    assert store.enqueue(prepared(jobs.noop)).id > second.id, "ids are never reused"


def _seconds(n):
    import datetime

    return datetime.timedelta(seconds=n)


def test_the_in_memory_backend_stores_enqueued_jobs_and_runs_them_on_request(settings):
    settings.PGJOBS = {"BACKEND": "pgjobs.testing.InMemoryBackend", "OPTIONS": {"QUEUES": []}}
    from pgjobs import background

    first = background.enqueue(jobs.add, args=[1, 2])
    second = background.enqueue(jobs.add, args=[3, 4], priority=10)
    assert (first.status, second.status) == (records.READY, records.READY), "stored, not run"
    stats = get_backend().run_jobs()
    assert (stats.claimed, stats.succeeded) == (2, 2)
    first.refresh()
    second.refresh()
    assert (first.result, second.result) == (3, 7)
    assert second.started_at <= first.started_at, "the higher priority ran first"
