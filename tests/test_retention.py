"""Retention (``KEEP_SUCCEEDED``, ``KEEP_FAILED``): the options, the pruner every
``pgjobs_worker`` and ``pgjobs_drain`` runs (``pgjobs/worker/pruning.py``),
the stores' ``prune_batch`` under concurrency, and migration 0005 (the index that
finds expired jobs, PostgreSQL's storage parameters)."""

import datetime
import io
import math
import signal
import threading
import time

import pytest
from django.core import checks
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings
from django.utils import timezone

from pgjobs import JobNotFound, background, records, stats
from pgjobs.backends import DatabaseBackend
from pgjobs.backends.database import DEFAULT_KEEP_FAILED, DEFAULT_KEEP_SUCCEEDED
from pgjobs.backends.redis import RedisBackend
from pgjobs.exceptions import InvalidBackend
from pgjobs.handler import get_backend
from pgjobs.models import Job
from pgjobs.stores.queries import sql
from pgjobs.worker import pruning
from pgjobs.worker.build import pruner_for
from pgjobs.worker.pruning import Pruner
from tests.conftest import JOBS_IN_REDIS, VENDOR, run_jobs, status_counts, wait_for
from tests.testapp import jobs

SQL_ONLY = pytest.mark.sql_store("reads pgjobs' tables")
REDIS_ONLY = pytest.mark.skipif(not JOBS_IN_REDIS, reason="RedisBackend only")

SUCCEEDED = (records.SUCCEEDED,)
FAILED = (records.FAILED, records.CANCELLED)
MINUTE = datetime.timedelta(minutes=1)


def ago(**delta):
    return timezone.now() - datetime.timedelta(**delta)


def with_options(settings, **options):
    """The test settings' backend with ``options`` added."""
    settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": {**settings.PGJOBS["OPTIONS"], **options}}
    return get_backend()


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """The commands install SIGTERM/SIGINT handlers; give pytest its own back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


# -- options ---------------------------------------------------------------------------


def test_defaults_keep_succeeded_jobs_five_minutes_and_failed_ones_a_week():
    backend = DatabaseBackend({})
    assert (backend.keep_succeeded, backend.keep_failed) == (300.0, 7 * 24 * 3600.0)
    assert (DEFAULT_KEEP_SUCCEEDED, DEFAULT_KEEP_FAILED) == (300.0, 604800.0)
    assert backend.retention_rules() == [
        (SUCCEEDED, datetime.timedelta(minutes=5)),
        (FAILED, datetime.timedelta(days=7)),
    ]


@pytest.mark.parametrize(
    ("options", "succeeded", "failed"),
    [
        ({"KEEP_SUCCEEDED": 60}, 60.0, 604800.0),
        ({"KEEP_SUCCEEDED": 0.5, "KEEP_FAILED": 3600}, 0.5, 3600.0),
        ({"KEEP_SUCCEEDED": datetime.timedelta(hours=1)}, 3600.0, 604800.0),
        ({"KEEP_FAILED": datetime.timedelta(days=30)}, 300.0, 2592000.0),
        ({"KEEP_SUCCEEDED": True, "KEEP_FAILED": True}, True, True),
        ({"KEEP_SUCCEEDED": False}, False, 604800.0),
    ],
)
def test_retention_options_take_seconds_timedeltas_and_booleans(options, succeeded, failed):
    backend = DatabaseBackend(options)
    assert backend.keep_succeeded == succeeded and type(backend.keep_succeeded) is type(succeeded)
    assert backend.keep_failed == failed and type(backend.keep_failed) is type(failed)


def test_only_numbers_expire():
    assert DatabaseBackend({"KEEP_SUCCEEDED": True, "KEEP_FAILED": True}).retention_rules() == []
    assert DatabaseBackend({"KEEP_SUCCEEDED": False, "KEEP_FAILED": 10}).retention_rules() == [
        (FAILED, datetime.timedelta(seconds=10))
    ]
    assert DatabaseBackend({"KEEP_FAILED": True}).retention_rules() == [
        (SUCCEEDED, datetime.timedelta(minutes=5))
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KEEP_SUCCEEDED", 0),
        ("KEEP_SUCCEEDED", -5),
        ("KEEP_SUCCEEDED", "300"),
        ("KEEP_SUCCEEDED", None),
        ("KEEP_SUCCEEDED", math.nan),
        ("KEEP_SUCCEEDED", math.inf),
        ("KEEP_SUCCEEDED", datetime.timedelta(0)),
        ("KEEP_FAILED", False),
        ("KEEP_FAILED", 0),
        ("KEEP_FAILED", "7d"),
        ("KEEP_FAILED", datetime.timedelta(seconds=-1)),
    ],
)
@pytest.mark.parametrize("backend_class", [DatabaseBackend, RedisBackend])
def test_bad_retention_values_are_refused_naming_the_option_and_what_it_takes(
    backend_class, key, value
):
    with pytest.raises(InvalidBackend) as caught:
        backend_class({key: value})
    message = str(caught.value)
    assert f"OPTIONS['{key}']" in message and repr(value) in message
    assert "True" in message and "seconds" in message and "timedelta" in message
    # False is offered where it is accepted.
    assert ("False" in message.replace(repr(value), "")) == (key == "KEEP_SUCCEEDED")


def test_manage_py_check_reports_a_bad_retention_as_e002():
    config = {"BACKEND": "pgjobs.backends.DatabaseBackend", "OPTIONS": {"KEEP_FAILED": False}}
    with override_settings(PGJOBS=config):
        (message,) = checks.run_checks(tags=["pgjobs"])
    assert message.id == "pgjobs.E002"
    assert "KEEP_FAILED" in message.msg


@pytest.mark.parametrize(
    ("options", "result_ttl", "rules"),
    [
        # Keys expire after a week; workers delete succeeded jobs after 5 minutes.
        ({}, 604800.0, [(SUCCEEDED, datetime.timedelta(minutes=5))]),
        ({"KEEP_SUCCEEDED": 3600, "KEEP_FAILED": 3600}, 3600.0, []),
        ({"KEEP_SUCCEEDED": False}, 604800.0, []),
        ({"KEEP_SUCCEEDED": 86400, "KEEP_FAILED": 60}, 86400.0, [(FAILED, MINUTE)]),
        # A retention of True means no expiry at all; workers enforce the other one.
        ({"KEEP_FAILED": True}, None, [(SUCCEEDED, datetime.timedelta(minutes=5))]),
        ({"KEEP_SUCCEEDED": True}, None, [(FAILED, datetime.timedelta(days=7))]),
        # RESULT_TTL, the older option, sets both; None means True.
        ({"RESULT_TTL": 3600}, 3600.0, []),
        ({"RESULT_TTL": None}, None, []),
        ({"RESULT_TTL": 3600, "KEEP_SUCCEEDED": 60}, 3600.0, [(SUCCEEDED, MINUTE)]),
        ({"RESULT_TTL": 3600, "KEEP_SUCCEEDED": False}, 3600.0, []),
    ],
)
def test_redis_keys_expire_after_the_longest_retention_and_workers_enforce_shorter_ones(
    options, result_ttl, rules
):
    backend = RedisBackend(options)
    assert backend.result_ttl == result_ttl
    assert backend.retention_rules() == rules


# -- the pruner, on its own ----------------------------------------------------------------


class FakeStore:
    """``prune_batch`` over counts of expired rows per status group."""

    def __init__(self, **expired):
        self.expired = {FAILED if name == "failed" else SUCCEEDED: n for name, n in expired.items()}
        self.calls = []

    def prune_batch(self, older_than, statuses, limit):
        self.calls.append((statuses, older_than, limit))
        n = min(limit, self.expired.get(statuses, 0))
        self.expired[statuses] = self.expired.get(statuses, 0) - n
        return n

    def prune_batches(self, older_than, limit):
        self.batch_calls = [*getattr(self, "batch_calls", []), older_than]
        return 0


RULES = [(SUCCEEDED, datetime.timedelta(minutes=5)), (FAILED, datetime.timedelta(days=7))]


def test_the_pruner_deletes_batch_records_after_the_longest_retention():
    store = FakeStore()
    Pruner(store, RULES).prune()
    assert store.batch_calls == [datetime.timedelta(days=7)], "a batch outlives its jobs"


def test_pruner_runs_every_half_retention_at_most_a_minute_jittered():
    assert Pruner(FakeStore(), RULES).interval == 60.0
    assert Pruner(FakeStore(), [(SUCCEEDED, datetime.timedelta(seconds=30))]).interval == 15.0
    assert Pruner(FakeStore(), [(SUCCEEDED, datetime.timedelta(seconds=0.5))]).interval == 1.0
    pruner = Pruner(FakeStore(), RULES)
    interval, func = pruner.periodic()
    assert func == pruner.prune
    delays = {round(pruner.prune(), 3) for _ in range(20)}
    assert len(delays) > 1  # jittered
    assert all(48.0 <= delay <= 72.0 <= interval for delay in delays)


def test_pruner_deletes_in_small_batches_and_comes_back_soon_with_rows_left():
    store = FakeStore(succeeded=25_000)
    pruner = Pruner(store, RULES, batch_size=1000, max_batches=10, time_budget=60)
    assert pruner.prune() <= 1.2  # more to do: again in about a second
    # Ten statements: one found no failed jobs, nine deleted 1,000 succeeded ones each.
    assert len(store.calls) == 10 and pruner.deleted == 9_000
    assert all(limit == 1000 for _, _, limit in store.calls)
    assert pruner.prune() <= 1.2
    assert pruner.deleted == 18_000
    assert pruner.prune() >= 48  # the last 7,000 went: back to the interval
    assert pruner.deleted == 25_000 and store.expired[SUCCEEDED] == 0


def test_pruner_stops_at_its_time_budget():
    now = [0.0]

    def clock():
        now[0] += 0.1  # each look at the clock, a tenth of a second later
        return now[0]

    store = FakeStore(succeeded=100_000)
    pruner = Pruner(store, RULES, batch_size=10, max_batches=100, time_budget=0.25, clock=clock)
    assert pruner.prune() <= 1.2
    assert len(store.calls) == 3  # 0.1, 0.2, then 0.3 s in: past the budget


def test_pruner_takes_its_rules_in_turn_so_that_one_backlog_does_not_starve_the_other():
    store = FakeStore(succeeded=10_000, failed=3)
    pruner = Pruner(store, RULES, batch_size=100, max_batches=4, time_budget=60)
    pruner.prune()
    assert [statuses for statuses, _, _ in store.calls[:2]] == [SUCCEEDED, FAILED]
    assert store.expired[FAILED] == 0
    assert [statuses for statuses, _, _ in store.calls[2:]] == [SUCCEEDED, SUCCEEDED]


def test_pruner_deletes_old_figures_once_a_minute_whatever_the_jobs_retention():
    class Figures(FakeStore):
        def prune_figures(self, older_than):
            self.calls.append(("figures", older_than))
            return 3

        def fold_figures(self, older_than):
            self.calls.append(("fold", older_than))
            return 0

    now = [0.0]
    store = Figures(succeeded=5)
    pruner = Pruner(store, RULES, keep_figures=stats.KEEP, clock=lambda: now[0])
    pruner.prune()
    assert store.calls[:2] == [("fold", stats.FOLD_AFTER), ("figures", stats.KEEP)]
    now[0] = 59.0
    pruner.prune()
    assert [call for call in store.calls if call[0] == "figures"] == [("figures", stats.KEEP)]
    now[0] = 61.0
    pruner.prune()
    assert [call[0] for call in store.calls].count("figures") == 2


def test_when_no_job_expires_the_pruner_deletes_only_old_figures(settings):
    pruner = pruner_for(with_options(settings, KEEP_SUCCEEDED=True, KEEP_FAILED=True))
    assert (pruner.rules, pruner.keep_figures) == ([], stats.KEEP)
    assert pruner.describe() == "deletes figures after 2 d (looks every 1 min)"
    assert pruner_for(with_options(settings, KEEP_SUCCEEDED=30)).rules[0] == (
        SUCCEEDED,
        datetime.timedelta(seconds=30),
    )


def test_worker_banner_and_constants_describe_the_retention():
    pruner = Pruner(FakeStore(), RULES)
    assert pruner.describe() == (
        "deletes succeeded after 5 min, failed/cancelled after 7 d (looks every 1 min)"
    )
    assert pruning.BATCH_SIZE * pruning.MAX_BATCHES <= 50_000


# -- the stores ----------------------------------------------------------------------------


def finished_job(status, finished_at):
    ref = background.enqueue(jobs.noop)
    Job.objects.filter(pk=ref.id).update(status=status, finished_at=finished_at)
    return ref.id


def remaining():
    return set(Job.objects.values_list("id", flat=True))


@SQL_ONLY
@pytest.mark.django_db
def test_pruner_deletes_expired_jobs_of_each_status_and_keeps_the_rest(settings):
    backend = with_options(settings, KEEP_SUCCEEDED=300, KEEP_FAILED=datetime.timedelta(days=7))
    old_ok = finished_job(records.SUCCEEDED, ago(minutes=6))
    new_ok = finished_job(records.SUCCEEDED, ago(minutes=4))
    day_old_failed = finished_job(records.FAILED, ago(days=1))
    old_failed = finished_job(records.FAILED, ago(days=8))
    old_cancelled = finished_job(records.CANCELLED, ago(days=8))
    ready = finished_job(records.READY, ago(days=30))  # not finished, whatever it says
    running = finished_job(records.RUNNING, ago(days=30))

    pruner = pruner_for(backend)
    pruner.prune()

    assert pruner.deleted == 3
    assert remaining() == {new_ok, day_old_failed, ready, running}
    with pytest.raises(JobNotFound):
        background.get(old_ok)
    assert {old_failed, old_cancelled}.isdisjoint(remaining())


@SQL_ONLY
@pytest.mark.django_db
def test_true_keeps_finished_jobs_forever(settings):
    backend = with_options(settings, KEEP_SUCCEEDED=True, KEEP_FAILED=True)
    kept = {finished_job(status, ago(days=3650)) for status in records.FINISHED_STATUSES}
    pruner_for(backend).prune()
    assert remaining() >= kept, "only figures go"
    # Only the succeeded jobs' retention is True: the old failed ones go.
    backend = with_options(settings, KEEP_SUCCEEDED=True, KEEP_FAILED=60)
    pruner_for(backend).prune()
    assert {Job.objects.get(pk=pk).status for pk in remaining()} == {records.SUCCEEDED}
    assert len(remaining() & kept) == 1


@SQL_ONLY
@pytest.mark.django_db
def test_prune_batch_deletes_at_most_its_limit_oldest_statuses_only(jobs_backend):
    store = jobs_backend.get_store()
    old = [finished_job(records.SUCCEEDED, ago(hours=2)) for _ in range(5)]
    failed = finished_job(records.FAILED, ago(hours=2))
    assert store.prune_batch(datetime.timedelta(hours=1), SUCCEEDED, 3) == 3
    assert store.prune_batch(datetime.timedelta(hours=1), SUCCEEDED, 3) == 2
    assert store.prune_batch(datetime.timedelta(hours=1), SUCCEEDED, 3) == 0
    assert remaining() == {failed} and not set(old) & remaining()


@SQL_ONLY
@pytest.mark.django_db
def test_the_prune_uses_the_finished_index():
    """The prune's statement can be answered from pgjobs_job_finished_idx (the
    planner's choice on a big table is measured, not tested: a table of a few
    rows is read whole)."""
    with connection.cursor() as cursor:
        statements = sql(connection)
        if VENDOR == "postgres":
            cursor.execute("SET LOCAL enable_seqscan = off")
            params = {"statuses": ["succeeded"], "age": 300, "limit": 1000}
            cursor.execute(f"EXPLAIN {statements.prune_batch}", params)
        elif VENDOR == "sqlite":
            cutoff = connection.ops.adapt_datetimefield_value(timezone.now())
            params = {"statuses": '["failed"]', "cutoff": cutoff, "limit": 10}
            cursor.execute(f"EXPLAIN QUERY PLAN {statements.prune_batch}", params)
        else:
            params = {"statuses": ("failed",), "age": 1, "limit": 10, "now": None}
            cursor.execute(f"EXPLAIN {statements.prune_lock}", params)
        plan = " ".join(str(cell) for row in cursor.fetchall() for cell in row)
    assert "pgjobs_job_finished_idx" in plan, plan


@SQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_racing_pruners_delete_each_row_once_and_neither_fails(jobs_backend):
    refs = background.enqueue_many([(jobs.noop, [], {})] * 1200)
    Job.objects.filter(pk__in=[ref.id for ref in refs]).update(
        status=records.SUCCEEDED, finished_at=ago(hours=1)
    )
    keep = finished_job(records.SUCCEEDED, ago(seconds=1))
    start = threading.Barrier(3)
    outcomes = [{} for _ in range(3)]

    def prune(outcome):
        store = jobs_backend.get_store()
        try:
            start.wait()
            deleted = 0
            while n := store.prune_batch(datetime.timedelta(minutes=5), SUCCEEDED, 50):
                deleted += n
            outcome["deleted"] = deleted
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=prune, args=(outcome,)) for outcome in outcomes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all("error" not in outcome for outcome in outcomes), outcomes
    assert sum(outcome["deleted"] for outcome in outcomes) == 1200
    assert remaining() == {keep}


@REDIS_ONLY
@pytest.mark.django_db
def test_redis_pruner_deletes_succeeded_jobs_sooner_than_their_keys_expire(settings):
    backend = with_options(settings, KEEP_SUCCEEDED=1, KEEP_FAILED=120)
    store = backend.get_store()
    ok = background.enqueue(jobs.add, args=[1, 1])
    bad = background.enqueue(jobs.fail_always, max_attempts=1)
    run_jobs()
    assert 115 < store.client.ttl(store.key("job", ok.id)) <= 120  # the longest retention
    pruner = pruner_for(backend)
    pruner.prune()
    assert ok.refresh().result == 2  # not a second old yet
    time.sleep(1.1)
    pruner.prune()
    with pytest.raises(JobNotFound):
        ok.refresh()
    assert bad.refresh().status == records.FAILED
    assert status_counts() == {records.FAILED: 1}


# -- workers run the pruner -------------------------------------------------------------------


def drain(*args):
    out = io.StringIO()
    call_command("pgjobs_drain", *args, stdout=out)
    return out.getvalue().strip().splitlines()


@pytest.mark.django_db(transaction=True)
def test_drain_prunes_expired_jobs_and_says_so(settings):
    with_options(settings, KEEP_SUCCEEDED=1)
    first = background.enqueue(jobs.add, args=[1, 2])
    assert drain() == ["pgjobs_drain: ran 1, succeeded 1, failed 0 (0 to retry), left 0"]
    assert first.refresh().result == 3  # kept for a second
    time.sleep(1.2)
    second = background.enqueue(jobs.add, args=[2, 2])
    assert drain() == [
        "pgjobs_drain: ran 1, succeeded 1, failed 0 (0 to retry), left 0",
        "pgjobs_drain: deleted 1 finished job(s) past their retention",
    ]
    with pytest.raises(JobNotFound):
        first.refresh()
    assert second.refresh().result == 4


@SQL_ONLY
def test_worker_process_prunes_by_itself(start_worker):
    old_ok = finished_job(records.SUCCEEDED, ago(hours=1))  # past the default 5 minutes
    new_ok = finished_job(records.SUCCEEDED, ago(minutes=1))
    old_failed = finished_job(records.FAILED, ago(hours=1))  # kept for a week
    worker = start_worker()
    worker.wait_for_output("retention:   deletes succeeded after 5 min")
    wait_for(lambda: old_ok not in remaining(), timeout=15, message="the worker to prune")
    assert {new_ok, old_failed} <= remaining()
    assert worker.stop() == 0


# -- migration 0005 ----------------------------------------------------------------------------


def job_indexes():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "pgjobs_job")
    return {name: info["columns"] for name, info in constraints.items() if info["index"]}


def storage_parameters():
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'pgjobs_job'")
        (options,) = cursor.fetchone()
    return dict(option.split("=", 1) for option in options or [])


@SQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_migration_0005_applies_and_reverses():
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("pgjobs")
    try:
        executor.migrate([("pgjobs", "0004_schedule")])
        assert "pgjobs_job_finished_idx" not in job_indexes()
        if VENDOR == "postgres":
            assert storage_parameters() == {}

        executor = MigrationExecutor(connection)
        executor.migrate([("pgjobs", "0005_retention")])
        assert job_indexes()["pgjobs_job_finished_idx"] == ["status", "finished_at"]
        if VENDOR == "postgres":
            assert storage_parameters() == {
                "autovacuum_vacuum_scale_factor": "0.02",
                "autovacuum_vacuum_threshold": "1000",
                "autovacuum_vacuum_insert_scale_factor": "0.02",
                "autovacuum_analyze_scale_factor": "0.02",
            }
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_get_indexdef('pgjobs_job_finished_idx'::regclass), indisvalid "
                    "FROM pg_index WHERE indexrelid = 'pgjobs_job_finished_idx'::regclass"
                )
                definition, valid = cursor.fetchone()
            assert valid and "WHERE (finished_at IS NOT NULL)" in definition
    finally:
        MigrationExecutor(connection).migrate(latest)
    assert "pgjobs_job_finished_idx" in job_indexes()
