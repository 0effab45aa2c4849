"""Store behaviour that depends on the database: the MySQL/MariaDB and SQLite
stores under contention, their retried lock errors, clocks, indexes, and the
SQLite WAL check (``pgjobs.W001``).

Run under ``PGJOBS_TEST_DB=mysql`` and ``PGJOBS_TEST_DB=sqlite``; tests for
another vendor skip. The first group holds on every database store.
"""

import datetime
import re
import sqlite3
import threading
import time

import pytest
from django.core import checks
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pgjobs import records
from pgjobs.checks import sqlite_wal_check
from pgjobs.handler import get_backend
from pgjobs.models import Job
from pgjobs.stores import database_store
from pgjobs.worker import Worker
from tests.testapp.models import Event

from .conftest import VENDOR, wait_for

pytestmark = pytest.mark.sql_store("database store internals (SQL statements, locks)")
mysql_only = pytest.mark.skipif(VENDOR != "mysql", reason="MySQL/MariaDB store")
sqlite_only = pytest.mark.skipif(VENDOR != "sqlite", reason="SQLite store")


@pytest.fixture
def store():
    return get_backend().get_store()


def spec(func="tests.testapp.jobs.noop", run_at=None, **options):
    """A job as the backend hands it to the store: validated, encoded, signed."""
    return get_backend().prepare(func, [], {}, when=run_at, **options)


def in_thread(target, *args):
    """Run ``target`` in a thread with its own database connection; return
    (thread, outcome) where outcome gets ``result`` or ``error``."""
    outcome = {}

    def run():
        try:
            outcome["result"] = target(*args)
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


# -- every database store ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_take_a_job_twice(store):
    store.enqueue_many([spec() for _ in range(120)])
    start = threading.Barrier(4)

    def claim_until_empty(worker_id):
        start.wait()
        claimed = []
        while jobs := store.claim(None, 3, worker_id):
            claimed.extend(job.id for job in jobs)
        return claimed

    threads = [in_thread(claim_until_empty, f"worker-{n}") for n in range(4)]
    for thread, _ in threads:
        thread.join(60)
    claimed = []
    for _, outcome in threads:
        assert "error" not in outcome, outcome
        claimed.extend(outcome["result"])
    assert len(claimed) == len(set(claimed)) == 120
    assert Job.objects.filter(status=records.RUNNING, attempts=1).count() == 120


@pytest.mark.django_db
def test_deferred_job_is_never_claimed_early(store):
    job = store.enqueue(spec(run_at=timezone.now() + datetime.timedelta(seconds=0.3)))

    def claimed():
        jobs = store.claim(None, 1, "w")
        return jobs and timezone.now()

    claimed_at = wait_for(claimed, timeout=5, interval=0.005)
    assert claimed_at >= job.run_at
    assert claimed_at - job.run_at < datetime.timedelta(seconds=1)


@pytest.mark.django_db
def test_finish_records_a_batch_in_one_statement(store):
    store.enqueue_many([spec() for _ in range(4)])
    mine = store.claim(None, 3, "me")
    theirs = store.claim(None, 1, "them")
    with CaptureQueriesContext(connection) as queries:
        store.finish("me", [(job.id, {"n": job.id}) for job in mine])
    # With the batch's figures (pgjobs/stats.py), in the same transaction: SQLite
    # runs one statement per call, MySQL sends both at once.
    assert len(queries) == (2 if VENDOR == "sqlite" else 1), [q["sql"][:60] for q in queries]
    for job in mine:
        info = store.get(job.id)
        assert (info.status, info.result) == (records.SUCCEEDED, {"n": job.id})
    # A job that is not ours (its lease lost) is looked at again, in case a batch
    # or a chain waits on it (jobs of those are recorded in a transaction that
    # settles them), and left untouched.
    store.finish("me", [(theirs[0].id, 0)])
    assert store.get(theirs[0].id).status == records.RUNNING


@pytest.mark.django_db(transaction=True)
def test_enqueue_is_part_of_the_callers_transaction(store):
    with pytest.raises(RuntimeError), transaction.atomic():
        store.enqueue(spec())
        store.enqueue_many([spec(), spec()])
        raise RuntimeError("the caller's transaction fails")
    assert not Job.objects.exists()
    info = store.enqueue(spec())  # autocommit: visible to every connection at once
    thread, outcome = in_thread(lambda: Job.objects.filter(pk=info.id).exists())
    thread.join(10)
    assert outcome == {"result": True}


@pytest.mark.django_db(transaction=True)
def test_worker_claims_again_at_once_after_a_job(store):
    """A worker that finishes a job claims the next without waiting for a poll."""
    store.enqueue_many([spec() for _ in range(30)])
    worker = Worker(store, concurrency=1, poll_interval=60)
    thread, outcome = in_thread(worker.run)
    started = time.monotonic()
    try:
        wait_for(
            lambda: not Job.objects.exclude(status=records.SUCCEEDED).exists(),
            timeout=20,
            interval=0.05,
        )
    finally:
        worker.request_stop()
        thread.join(30)
    assert time.monotonic() - started < 10  # one 60 s poll would take far longer
    assert outcome["result"].succeeded == 30


@pytest.mark.skipif(VENDOR not in ("mysql", "sqlite"), reason="MySQL/MariaDB and SQLite stores")
@pytest.mark.django_db
def test_without_use_tz_times_are_local(settings):
    """USE_TZ = False: Django stores local times, so "now" must be local too."""
    settings.USE_TZ, settings.TIME_ZONE = False, "America/Chicago"  # far from UTC
    store = database_store("default")  # a store reads the time settings once
    due = store.enqueue(spec())
    later = store.enqueue(spec(run_at=datetime.datetime.now() + datetime.timedelta(minutes=10)))
    assert abs(due.run_at - datetime.datetime.now()) < datetime.timedelta(seconds=5)
    assert [job.id for job in store.claim(None, 5, "w")] == [due.id]
    assert 590 < store.seconds_until_due(None) <= 600
    store.retry("w", due.id, {"type": "E", "message": "", "traceback": ""}, 600)
    assert store.claim(None, 5, "w") == [] and store.count_due(None) == 0
    assert store.get(later.id).status == records.READY


# -- MySQL and MariaDB ----------------------------------------------------------------


def other_connection():
    """A second connection to the test database, for holding locks."""
    other = connections.create_connection("default")
    other.ensure_connection()
    return other


@mysql_only
@pytest.mark.django_db(transaction=True)
def test_mysql_claim_skips_rows_another_transaction_holds(store):
    first, *rest = store.enqueue_many([spec(priority=10)] + [spec() for _ in range(3)])
    other = other_connection()
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            cursor.execute("SELECT id FROM pgjobs_job WHERE id = %s FOR UPDATE", [first.id])
            started = time.monotonic()
            claimed = store.claim(None, 10, "w")
            assert time.monotonic() - started < 1  # skipped, not waited for
        other.rollback()
    finally:
        other.close()
    assert sorted(job.id for job in claimed) == [job.id for job in rest]


def innodb_deadlocks():
    """The deadlocks the server has counted since it started."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
        return int(cursor.fetchone()[1])


def deadlocked(caplog, a, b, operation, *args):
    """Run ``operation(*args)`` in a thread into a real deadlock: another
    connection holds ``b``'s row; once ``operation`` waits for it, holding
    ``a``'s, the other asks for ``a``'s. The other has written 300 rows of a
    table of its own first: InnoDB rolls back the transaction that changed less,
    and no job's row but ``a``'s and ``b``'s is locked, whatever plan the
    operation's statements take. Returns the thread's outcome, once the server
    has counted the deadlock and the store has said it retries."""
    deadlocks_before = innodb_deadlocks()
    other = other_connection()
    other.set_autocommit(False)
    cursor = other.cursor()
    try:
        cursor.executemany(
            f"INSERT INTO {Event._meta.db_table} (name, value, at) VALUES (%s, %s, %s)",
            [("weight", n, 0.0) for n in range(300)],
        )
        cursor.execute("UPDATE pgjobs_job SET max_attempts = 4 WHERE id = %s", [b.id])
        caplog.set_level("DEBUG", logger="pgjobs")
        thread, outcome = in_thread(operation, *args)
        wait_for(lambda: lock_waits(other), timeout=10, interval=0.25, message="a lock wait")
        cursor.execute("UPDATE pgjobs_job SET max_attempts = 4 WHERE id = %s", [a.id])
        other.commit()
    finally:
        cursor.close()
        other.close()
    thread.join(30)
    assert innodb_deadlocks() > deadlocks_before
    assert "Deadlock" in caplog.text and "retrying" in caplog.text
    return outcome


@mysql_only
@pytest.mark.django_db(transaction=True)
def test_mysql_deadlock_is_retried(store, caplog):
    """A real deadlock between finish() and another transaction: the server
    rolls finish() back (the smaller transaction) and the store runs it again."""
    a, b = store.enqueue_many([spec(), spec()])
    store.claim(None, 2, "w")
    results = [(a.id, "a"), (b.id, "b")]
    outcome = deadlocked(caplog, a, b, store.finish, "w", results)
    assert outcome == {"result": None}
    assert [store.get(job.id).status for job in (a, b)] == [records.SUCCEEDED] * 2


@mysql_only
@pytest.mark.django_db(transaction=True)
def test_mysql_cancel_batch_retries_a_deadlock_with_a_worker(store, caplog):
    """A cancel that deadlocks with the transaction finishing one of the batch's
    jobs: the server rolls the cancel's statement back, the store runs that step
    again, and the cancel counts every job once (a Wagtail bulk action's
    cancel button got a server error here). It waits for b holding a, in its
    first step's locking read."""
    batch, (a, b) = store.enqueue_batch([spec(), spec()])
    store.claim(None, 2, "w")
    outcome = deadlocked(caplog, a, b, store.cancel_batch, batch.id)
    assert outcome == {"result": (0, 2)}  # both running: asked to stop, once each
    assert Job.objects.filter(pk__in=[a.id, b.id], cancel_requested=True).count() == 2


@mysql_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "operation, status",
    [("cancel_many", records.CANCELLED), ("requeue", records.READY), ("run_now", records.READY)],
)
def test_mysql_the_admins_operations_retry_a_deadlock(store, caplog, operation, status):
    """The admin's Cancel, Retry and Run now buttons on two jobs, deadlocked with
    a transaction holding one of them: each acts on both jobs and counts them once."""
    later = timezone.now() + datetime.timedelta(hours=1)
    a, b = store.enqueue_many([spec(run_at=later), spec(run_at=later)])
    if operation == "requeue":
        assert store.cancel_many([a.id, b.id]) == (2, 0)
    outcome = deadlocked(caplog, a, b, getattr(store, operation), [a.id, b.id])
    assert outcome == {"result": (2, 0) if operation == "cancel_many" else 2}
    assert [store.get(job.id).status for job in (a, b)] == [status] * 2
    assert store.count_due(None) == (0 if status == records.CANCELLED else 2)


def lock_waits(other):
    """How many connections opened after ``other`` wait for a lock. (The server
    refreshes innodb_trx only when it was not read for 0.1 s: a wait that a test
    just before left there may be listed still, under an older connection.)"""
    with other.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.innodb_trx"
            " WHERE trx_state = 'LOCK WAIT' AND trx_mysql_thread_id > CONNECTION_ID()"
        )
        return cursor.fetchone()[0]


@pytest.fixture
def mysql_row_lock():
    """Lock a job's row from another connection (in a thread of its own, as
    Django's connections are per thread) for ``seconds``."""
    threads = []

    def hold(job_id, seconds):
        locked = threading.Event()

        def run():
            other = other_connection()
            try:
                other.set_autocommit(False)
                with other.cursor() as cursor:
                    cursor.execute("SELECT id FROM pgjobs_job WHERE id = %s FOR UPDATE", [job_id])
                locked.set()
                time.sleep(seconds)
                other.rollback()
            finally:
                other.close()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        assert locked.wait(10)

    yield hold
    for thread in threads:
        thread.join()


@mysql_only
@pytest.mark.django_db(transaction=True)
def test_mysql_lock_wait_timeout_is_retried(store, mysql_row_lock):
    job = store.enqueue(spec())
    store.claim(None, 1, "w")
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
    try:
        mysql_row_lock(job.id, 1.5)
        started = time.monotonic()
        store.finish("w", [(job.id, 1)])  # times out once, then gets the lock
        assert time.monotonic() - started >= 1
    finally:
        connection.close()  # forget the session setting
    assert store.get(job.id).status == records.SUCCEEDED


@mysql_only
@pytest.mark.parametrize("offset", ["+05:00", "-05:00"])
@pytest.mark.django_db(transaction=True)
def test_mysql_times_are_utc_whatever_the_session_time_zone(store, offset):
    """Django stores UTC but leaves the session time zone alone: NOW() is local."""
    with connection.cursor() as cursor:
        cursor.execute("SET time_zone = %s", [offset])
    try:
        later = store.enqueue(spec(run_at=timezone.now() + datetime.timedelta(minutes=10)))
        now = store.enqueue(spec())
        assert abs(now.created_at - timezone.now()) < datetime.timedelta(seconds=5)
        assert [job.id for job in store.claim(None, 5, "w")] == [now.id]
        assert 590 < store.seconds_until_due(None) <= 600
        store.retry("w", now.id, {"type": "E", "message": "", "traceback": ""}, 600)
        assert store.claim(None, 5, "w") == []
        assert store.count_due(None) == 0
        again = store.enqueue(spec())
        store.claim(None, 5, "w")
        store.heartbeat("w", [again.id])
        assert store.rescue() == 0  # the lease is seconds ahead, not hours behind
        info = store.get(again.id)
        lease = (Job.objects.get(pk=again.id).lease_expires_at - timezone.now()).total_seconds()
        assert store.lease_seconds - 10 < lease <= store.lease_seconds
        assert info.status == records.RUNNING
        assert store.get(later.id).status == records.READY
    finally:
        connection.close()  # forget the session setting


@mysql_only
@pytest.mark.django_db(transaction=True)
def test_mysql_claims_without_multi_statements(store, monkeypatch):
    """A site may turn mysqlclient's multi-statements off: one statement per round trip."""
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "multi_statements", False)
    connection.close()  # reconnect with the option
    try:
        first, second = store.enqueue_many([spec(), spec()])
        (claimed,) = store.claim(None, 1, "w")
        assert (claimed.id, claimed.attempts) == (first.id, 1)
        (claimed,) = store.finish_and_claim("w", [(first.id, "done")], None, 5)
        assert claimed.id == second.id
        assert store.get(first.id).result == "done"
    finally:
        connection.close()


@mysql_only
@pytest.mark.django_db
def test_mysql_enqueue_without_insert_returning(store, monkeypatch):
    """MySQL 8 has no INSERT ... RETURNING: rows are inserted and read back one by one."""
    monkeypatch.setattr(connection.features, "can_return_columns_from_insert", False)
    one = store.enqueue(spec(priority=5))
    many = store.enqueue_many([spec(queue="other"), spec(run_at=timezone.now())])
    assert [info.id for info in many] == [one.id + 1, one.id + 2]
    assert (one.status, one.priority, many[0].queue) == (records.READY, 5, "other")
    assert one.created_at is not None and one.created_at.tzinfo is not None


@mysql_only
@pytest.mark.django_db(transaction=True)  # ANALYZE TABLE commits
def test_mysql_claim_uses_the_claim_index(store):
    Job.objects.bulk_create(
        [Job(func="x", status=records.SUCCEEDED) for _ in range(300)]
        + [Job(func="x") for _ in range(20)]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE pgjobs_job")
        for queues in (None, ["default", "other"]):
            params = {"limit": 4, "now": None, **store._queue_params(queues)}
            cursor.execute("EXPLAIN " + store.sql.claim_lock, params)
            columns = [column[0] for column in cursor.description]
            (plan,) = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            assert plan["key"] == "pgjobs_job_mysql_claim_idx", plan
            assert "filesort" not in (plan["Extra"] or ""), plan


# -- SQLite ---------------------------------------------------------------------------


def explain(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return " / ".join(row[-1] for row in cursor.fetchall())


@sqlite_only
@pytest.mark.django_db
def test_sqlite_claim_and_idle_queries_use_indexes(store):
    Job.objects.bulk_create([Job(func="x", status=records.SUCCEEDED) for _ in range(50)])
    store.enqueue(spec())
    with CaptureQueriesContext(connection) as queries:
        store.claim(["default", "other"], 4, "w")
        store.claim(None, 4, "w")
        store.seconds_until_due(["default"])
        store.count_due(None)
        store.rescue()
    plans = {
        query["sql"]: explain(query["sql"])
        for query in queries
        if '"pgjobs_job"' in query["sql"] or " pgjobs_job" in query["sql"]
    }
    assert len(plans) == 5  # two claims, next due time, count due, rescue
    for sql, plan in plans.items():
        assert "USING INDEX pgjobs_job_" in plan or "PRIMARY KEY" in plan, (sql, plan)
        assert not re.search(r"SCAN pgjobs_job(?! USING)", plan), (sql, plan)  # no table scan
        assert "TEMP B-TREE" not in plan, (sql, plan)  # rows read in claim order


@pytest.fixture
def write_lock_holder():
    """Hold SQLite's write lock from another connection, as a claim does, for a while."""
    threads = []

    def hold(seconds):
        locked = threading.Event()

        def run():
            other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("UPDATE pgjobs_job SET priority = priority")
                locked.set()
                time.sleep(seconds)
                other.execute("COMMIT")
            finally:
                other.close()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        assert locked.wait(10)

    yield hold
    for thread in threads:
        thread.join()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_sqlite_enqueue_waits_for_an_open_claim_transaction(store, write_lock_holder):
    write_lock_holder(0.5)
    started = time.monotonic()
    info = store.enqueue(spec())  # waits (busy timeout), never "database is locked"
    assert time.monotonic() - started >= 0.4
    assert store.get(info.id).status == records.READY


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_sqlite_database_is_locked_is_retried(store, write_lock_holder, caplog):
    """Past the busy timeout, SQLite says "database is locked"; the store tries again."""
    caplog.set_level("DEBUG", logger="pgjobs")
    store.enqueue(spec())
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 20")
    try:
        write_lock_holder(0.6)
        info = store.enqueue(spec())
        assert [job.id for job in store.claim(None, 5, "w")] == [info.id - 1, info.id]
    finally:
        connection.close()  # back to the configured timeout
    assert "database is locked; retrying" in caplog.text


@sqlite_only
@pytest.mark.django_db
def test_sqlite_without_returning(store, monkeypatch):
    """SQLite < 3.35 has no RETURNING: the claim selects, updates and reads back."""
    monkeypatch.setattr(store, "_returning", False)
    low, high = store.enqueue_many([spec(), spec(priority=9)])
    later = store.enqueue(spec(run_at=timezone.now() + datetime.timedelta(minutes=1)))
    assert (low.status, later.status) == (records.READY, records.READY)
    claimed = store.claim(None, 5, "w")
    assert sorted((job.id, job.attempts) for job in claimed) == [(low.id, 1), (high.id, 1)]
    assert store.get(high.id).worker_id == "w"


@sqlite_only
@pytest.mark.django_db
def test_sqlite_enqueue_many_beyond_one_statement(store):
    infos = store.enqueue_many([spec(priority=n % 7) for n in range(250)])
    assert [info.id for info in infos] == sorted({info.id for info in infos})
    assert Job.objects.count() == 250


# -- pgjobs.W001 ----------------------------------------------------------------------


@pytest.fixture
def sqlite_settings(monkeypatch, tmp_path):
    """Point the check at another database file (it only reads the settings)."""
    settings = connection.settings_dict

    def use(name, init_command=""):
        monkeypatch.setitem(settings, "NAME", str(name))
        monkeypatch.setitem(settings, "OPTIONS", {"init_command": init_command})

    return use


def sqlite_file(path, journal_mode):
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={journal_mode}")
    db.execute("CREATE TABLE t (x)")
    db.close()
    return path


@sqlite_only
@pytest.mark.parametrize(
    ("journal_mode", "warned"), [("DELETE", True), ("TRUNCATE", True), ("WAL", False)]
)
def test_wal_check_reads_the_journal_mode(sqlite_settings, tmp_path, journal_mode, warned):
    sqlite_settings(sqlite_file(tmp_path / "db.sqlite3", journal_mode))
    messages = sqlite_wal_check("default")
    assert [message.id for message in messages] == (["pgjobs.W001"] if warned else [])


@sqlite_only
def test_wal_check_through_manage_py_check(sqlite_settings, tmp_path):
    sqlite_settings(sqlite_file(tmp_path / "db.sqlite3", "DELETE"))
    (message,) = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.W001"]
    assert message.level == checks.WARNING
    assert "journal_mode=WAL" in message.hint


@sqlite_only
def test_wal_check_trusts_init_command(sqlite_settings, tmp_path):
    sqlite_settings(tmp_path / "new.sqlite3", init_command="PRAGMA journal_mode = wal;")
    assert sqlite_wal_check("default") == []


@sqlite_only
def test_wal_check_without_a_file(sqlite_settings, tmp_path):
    sqlite_settings(tmp_path / "missing.sqlite3")  # created later, not in WAL mode
    assert [m.id for m in sqlite_wal_check("default")] == ["pgjobs.W001"]
    assert not (tmp_path / "missing.sqlite3").exists()  # the check created nothing
    sqlite_settings(tmp_path)  # a directory: cannot be read, so nothing to say
    assert sqlite_wal_check("default") == []
    sqlite_settings(":memory:")
    assert sqlite_wal_check("default") == []


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.mark.skipif(VENDOR != "postgres", reason="PostgreSQL store")
@pytest.mark.django_db(transaction=True)
def test_postgres_limited_claim_failing_on_a_later_queue_returns_what_it_took(store, caplog):
    """Each limited queue is claimed in a transaction of its own: when a later
    one fails, the jobs an earlier one committed as this worker's are handed
    back, not left running unseen until a rescue spends their attempt."""
    from pgjobs.models import QueueControl

    store.set_queue_control("default", concurrency=5)
    store.set_queue_control("other", concurrency=5)
    taken = sorted(info.id for info in store.enqueue_many([spec(queue="default")] * 2))
    store.enqueue(spec(queue="other"))
    other = other_connection()  # holds the second queue's row
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor, connection.cursor() as mine:
            table = other.ops.quote_name(QueueControl._meta.db_table)
            cursor.execute(f"SELECT 1 FROM {table} WHERE queue = 'other' FOR UPDATE")
            mine.execute("SET lock_timeout = '100ms'")
            try:
                claimed = store.claim(None, 10, "limited-claimer")
            finally:
                mine.execute("RESET lock_timeout")
        other.rollback()
    finally:
        other.close()
    store.controls.forget()  # the controls go with the test's rows
    running = Job.objects.filter(status=records.RUNNING, worker_id="limited-claimer")
    assert sorted(job.id for job in claimed) == taken
    assert sorted(running.values_list("id", flat=True)) == taken, "none left unseen"
    assert "claim from the limited queues failed" in caplog.text


@pytest.mark.skipif(VENDOR != "postgres", reason="PostgreSQL store (row locks, no write lock)")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["cancel_many", "cancel_batch"])
def test_a_job_that_goes_back_to_ready_while_cancelled_is_not_missed(store, monkeypatch, how):
    """Cancelling cancels the ready jobs, then asks the running ones to stop: a
    running job its worker retries between the two (ready again, so not asked)
    is cancelled all the same, not left to run again."""
    if how == "cancel_batch":
        batch, (info,) = store.enqueue_batch([spec(max_attempts=3)])
    else:
        info = store.enqueue(spec(max_attempts=3))
    (job,) = store.claim(None, 1, "w")
    cancel_ready = store._cancel_waiting
    error = {"type": "builtins.ValueError", "message": "no", "traceback": "..."}

    def then_the_worker_retries(jobs, error_=None):
        cancelled = cancel_ready(jobs, error_)
        thread, outcome = in_thread(store.retry, "w", job.id, error, 0)
        thread.join(5)
        assert "error" not in outcome
        return cancelled

    monkeypatch.setattr(store, "_cancel_waiting", then_the_worker_retries)
    if how == "cancel_batch":
        store.cancel_batch(batch.id)
    else:
        store.cancel_many([info.id])
    monkeypatch.undo()
    assert store.get(info.id).status == records.CANCELLED
    assert store.claim(None, 1, "w") == [], "it never runs again"
