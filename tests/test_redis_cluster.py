"""``RedisBackend`` on a Redis Cluster (``pgjobs/stores/redis.py``): a URL naming any
node finds the cluster, keys share one hash-tagged slot, and real worker processes
enqueue, claim and finish jobs there, through a master failing over mid-run.

The cluster is our own (three masters with a replica each; the ``redis_cluster``
fixture of tests/conftest.py, started once per session). The store contract runs on
it too (tests/test_store_contract.py, the ``redis-cluster`` store). Run with
``PGJOBS_TEST_DB=redis`` (``make test`` does); under the database vendors this
module is skipped.
"""

import signal

import pytest
import redis
from django.test import override_settings

from pgjobs import background, records
from pgjobs.exceptions import InvalidBackend
from pgjobs.handler import get_backend
from pgjobs.stores.redis import RedisStore, hash_tagged
from tests.conftest import JOBS_IN_REDIS, status_counts, unfinished_jobs, wait_for
from tests.redis_settings import PREFIX
from tests.testapp import jobs
from tests.testapp.models import Event, Execution

pytestmark = pytest.mark.skipif(not JOBS_IN_REDIS, reason="run with PGJOBS_TEST_DB=redis")


def test_a_prefix_is_hash_tagged_once():
    assert hash_tagged("pgjobs") == "{pgjobs}"
    assert hash_tagged("site:{jobs}") == "site:{jobs}", "the user's own tag is kept"
    assert hash_tagged("a{}b") == "{a{}b}", "an empty tag is no tag"
    assert hash_tagged("a{}b}") == "{a{}b}}", "the first } after the first { ends the tag"


def test_every_url_naming_a_node_finds_the_cluster_and_one_slot(redis_cluster):
    slots = set()
    for port in redis_cluster.ports:  # masters and replicas alike
        store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix=f"{PREFIX}-any")
        try:
            assert store.cluster is None, "nothing connects before the first command"
            assert store.key("job", 1) == f"{{{PREFIX}-any}}:job:1"
            assert store.cluster is True
            assert "redis cluster of 3 masters" in store.describe()
            slots |= {store.client.keyslot(store.key(*parts)) for parts in KEYS}
        finally:
            store.close()
    assert len(slots) == 1, "every key of a site in one slot"


# A key of each kind (stores/redis.py's docstring lists them).
KEYS = [
    ("seq",),
    ("job", 7),
    ("queues",),
    ("ready", "default"),
    ("scheduled", "other"),
    ("running",),
    ("done", "default", "succeeded"),
    ("unique", "k"),
    ("workers",),
    ("worker", "w"),
    ("schedule", "s"),
    ("wake", "default"),
]


def test_a_script_may_declare_keys_of_its_own_made_by_key(redis_cluster):
    store = RedisStore(redis_cluster.url, prefix=f"{PREFIX}-keys")
    try:
        # The ``due`` script reads its keys from P; KEYS only routes the call.
        spec = records.JobSpec(func="tests.testapp.jobs.noop", args=[], kwargs={})
        store.enqueue(spec)
        assert store._run("due", "default", keys=[store.key("ready", "default")]) == [1, 0]
    finally:
        store.flush()
        store.close()


def test_a_single_server_keeps_its_key_names():
    from tests.redis_settings import URL

    store = RedisStore(URL, prefix="pgjobs")
    try:
        assert store.key("job", 1) == "pgjobs:job:1", "no migration: the keys as before"
        assert store.cluster is False
    finally:
        store.close()


def test_a_store_whose_server_is_down_at_start_describes_itself_and_connects_later():
    """Whether the URL names a cluster is found out at the first command: a worker
    started before Redis prints its banner and waits, as it did before clusters."""
    from tests.redis_cluster import free_port

    port = free_port()  # nothing listens there
    store = RedisStore(f"redis://:secret@127.0.0.1:{port}/0", prefix="down")
    assert store.describe() == f"redis 127.0.0.1:{port} (not reachable yet), key prefix 'down'"
    with pytest.raises(redis.ConnectionError):
        store.key("job", 1)
    assert store.cluster is None, "found out again at the next command"


def test_a_cluster_url_with_another_database_is_refused_in_one_line(redis_cluster):
    store = RedisStore(redis_cluster.url.replace("/0", "/3"), prefix=f"{PREFIX}-db")
    with pytest.raises(InvalidBackend, match=r"database 3, but a Redis Cluster .* /0"):
        store.key("job", 1)


@pytest.fixture
def cluster_url_with_database_3(redis_cluster, monkeypatch):
    # Set before start_worker takes its environment (fixtures set up in order).
    monkeypatch.setenv("PGJOBS_TEST_REDIS_URL", redis_cluster.url.replace("/0", "/3"))


@pytest.mark.django_db(transaction=True)
def test_a_worker_on_a_cluster_url_with_another_database_stops_with_one_line(
    cluster_url_with_database_3, start_worker
):
    worker = start_worker()
    assert worker.wait() == 1, worker.output()
    assert "Traceback" not in worker.stderr, worker.output()
    assert "CommandError: pgjobs: OPTIONS['URL'] names database 3" in worker.stderr


@pytest.fixture
def on_cluster(redis_cluster, monkeypatch, settings):
    """This process and the worker processes it starts use the cluster."""
    monkeypatch.setenv("PGJOBS_TEST_REDIS_URL", redis_cluster.url)
    monkeypatch.setenv("PGJOBS_TEST_LEASE_SECONDS", "5")
    options = {**settings.PGJOBS["OPTIONS"], "URL": redis_cluster.url, "LEASE_SECONDS": 5.0}
    with override_settings(PGJOBS={**settings.PGJOBS, "OPTIONS": options}):
        store = get_backend().get_store()
        store.flush()
        try:
            yield store
        finally:
            store.flush()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_worker_processes_run_every_job_once_on_a_cluster(on_cluster, start_worker):
    count = 400
    workers = [start_worker("--concurrency", "4") for _ in range(2)]
    # Both idle first: pub/sub on the cluster wakes them, and both take part.
    wait_for(lambda: len(on_cluster.live_workers()) == 2, timeout=30, message="two workers")
    refs = background.enqueue_many([(jobs.record, [f"job-{n}"], {}) for n in range(count)])
    wait_for(lambda: unfinished_jobs() == 0, timeout=60, interval=0.2, message="an empty queue")

    assert status_counts() == {records.SUCCEEDED: count}
    assert Execution.objects.count() == count  # Execution.key is unique: no job ran twice
    infos = [on_cluster.get(ref.id) for ref in refs]
    assert {info.attempts for info in infos} == {1}
    assert len({info.worker_id for info in infos}) == 2, "the work was shared between processes"
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait() == 0, worker.output()
        assert "Traceback" not in worker.stderr, worker.output()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_master_failing_over_mid_run_loses_no_job(on_cluster, start_worker, redis_cluster):
    count = 500
    keys = [f"failover-{n}" for n in range(count)]
    workers = [start_worker("--concurrency", "4", "-v", "2") for _ in range(2)]
    wait_for(lambda: len(on_cluster.live_workers()) == 2, timeout=30, message="two workers")
    # 0.02 s a job: about 1.3 s of work for 8 slots, so the failover lands mid-run.
    refs = background.enqueue_many([(jobs.record_once, [key, 0.02], {}) for key in keys])
    wait_for(lambda: Execution.objects.count() >= count // 4, timeout=30, message="jobs to run")
    old, new = redis_cluster.failover(on_cluster.key_prefix)
    ran_before = Execution.objects.count()
    assert ran_before < count, "the failover must come while jobs run"
    wait_for(lambda: unfinished_jobs() == 0, timeout=60, interval=0.2, message="every job")

    assert redis_cluster.master_of(on_cluster.key_prefix) == new != old
    assert status_counts() == {records.SUCCEEDED: count}
    assert sorted(Execution.objects.values_list("key", flat=True)) == sorted(keys)
    # Jobs may start again only as attempts the store counted (a claim whose reply was
    # lost, its lease then expired and rescued): never silently.
    starts = {}
    for name in Event.objects.filter(name__startswith="start:").values_list("name", flat=True):
        starts[name.split(":", 1)[1]] = starts.get(name.split(":", 1)[1], 0) + 1
    attempts = {info.args[0]: info.attempts for info in map(on_cluster.get, (r.id for r in refs))}
    repeated = {key: (starts[key], attempts[key]) for key in keys if starts[key] > 1}
    print(f"failover {old} -> {new} after {ran_before} of {count} jobs; repeated: {repeated}")
    assert all(starts[key] <= attempts[key] for key in keys), repeated
    for worker in workers:
        assert worker.returncode is None, worker.output()
        assert worker.stop() == 0, worker.output()
        assert "Traceback" not in worker.stderr, worker.output()
