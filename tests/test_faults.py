"""Faults with real processes and real servers (DESIGN.md, "Semantics every backend
keeps"): workers SIGKILLed mid-run, connections cut, the database restarted, rows
written by hand. Nothing may be lost, nothing completed twice, and a worker must carry on.

The jobs are ``tests.testapp.jobs.record_once``: each start is logged with the pid of
the process that ran it, and the work is recorded in one transaction at the end, so
these tests can tell a job that was lost, one started again after its worker died,
and one whose work was done twice.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.test import override_settings

from pgjobs import background, records
from pgjobs.handler import get_backend
from pgjobs.models import Job
from pgjobs.serialization import sign_job
from pgjobs.worker import Worker
from tests.conftest import (
    REQUIRE_SERVICES,
    ROOT,
    VENDOR,
    WorkerProcess,
    assert_a_ring_ends_the_sleep,
    status_counts,
    unfinished_jobs,
    wait_for,
)
from tests.testapp import jobs
from tests.testapp.models import Event, Execution

# The jobs' rows and their SQL: RedisBackend keeps none (tests/test_redis.py covers it).
SQL_ONLY = pytest.mark.sql_store("reads pgjobs' tables")
pytestmark = [SQL_ONLY, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def start_worker_with_lease(request, monkeypatch, settings):
    """``start = start_worker_with_lease(2.0)``: ``start_worker`` whose processes (and this
    one) use leases of that many seconds, so that a dead worker's jobs come back quickly."""

    def setup(seconds):
        monkeypatch.setenv("PGJOBS_TEST_LEASE_SECONDS", str(seconds))
        options = {**settings.PGJOBS["OPTIONS"], "LEASE_SECONDS": seconds}
        settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": options}
        return request.getfixturevalue("start_worker")  # set up now: it reads the environment

    return setup


# -- what the jobs left behind ---------------------------------------------------------


def runs_by_key(events):
    """``{key: {"start": [pid, ...], "done": [...], "again": [...]}}`` from
    ``(name, pid)`` pairs in the order they were written."""
    runs = {}
    for name, pid in events:
        kind, key = name.split(":", 1)
        runs.setdefault(key, {"start": [], "done": [], "again": []})[kind].append(pid)
    return runs


def explained_by(runs, dead_pids):
    """The runs that say a job was started, or its work done, more than once; each is
    a finding unless an earlier run's process is one that was killed."""
    restarted, redone, unexplained = [], [], []
    for key, run in runs.items():
        if len(run["start"]) > 1:
            restarted.append(key)
            # Every start but the last was cut short: its process must have died.
            if not set(run["start"][:-1]) <= dead_pids:
                unexplained.append((key, "started again while its worker lived", run))
        if run["again"]:
            redone.append(key)
            # Done, then run again: only if the process that did it died before its
            # worker stored the success.
            if not set(run["done"]) <= dead_pids:
                unexplained.append((key, "completed twice", run))
    return restarted, redone, unexplained


def job_events():
    return list(
        Event.objects.filter(name__regex=r"^(start|done|again):")
        .order_by("id")
        .values_list("name", "value")
    )


# -- SIGKILL -------------------------------------------------------------------------

KILL_JOBS = 3_000
KILL_WORKERS = 3
KILL_LEASE = 2.0
KILLS_AT_MOST = 8  # on a slow (busy) machine; each restart costs a Django start-up


def test_workers_killed_again_and_again_lose_nothing_and_complete_nothing_twice(
    start_worker_with_lease,
):
    start = start_worker_with_lease(KILL_LEASE)
    keys = [f"kill-{n}" for n in range(KILL_JOBS)]
    # 5 ms each, so that kills find jobs in mid-run however fast the machine. Attempts
    # are counted when a dead worker's jobs are put back, and a job caught in several
    # kills running out of them is not what this test is about.
    background.enqueue_many([(jobs.record_once, [key, 0.005], {}) for key in keys], max_attempts=20)

    def worker():
        return start("--concurrency", "4", persistent_connections=True)

    workers = [worker() for _ in range(KILL_WORKERS)]
    killed, interrupted = set(), 0
    chance = random.Random(4)
    started = time.monotonic()
    # Kill while there is work left to interrupt; then let the last victims' jobs come back.
    while len(killed) < KILLS_AT_MOST and Job.objects.filter(status=records.READY).exists():
        time.sleep(chance.uniform(1.0, 2.0))
        victim = workers.pop(0)  # the longest-lived: it has had time to claim work
        running = Job.objects.filter(
            status=records.RUNNING, worker_id__contains=f":{victim.pid}:"
        ).count()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(5)
        killed.add(victim.pid)
        interrupted += running
        workers.append(worker())
    wait_for(lambda: unfinished_jobs() == 0, timeout=90, interval=0.2, message="every job")
    took = time.monotonic() - started

    runs = runs_by_key(job_events())
    restarted, redone, unexplained = explained_by(runs, killed)
    print(
        f"{KILL_JOBS} jobs, {len(killed)} kills ({interrupted} jobs running at a kill), "
        f"{len(restarted)} started again, {len(redone)} redone after a kill, {took:.1f} s"
    )
    assert len(killed) >= 2 and interrupted > 0, "the kills must interrupt work to test anything"
    assert status_counts() == {records.SUCCEEDED: KILL_JOBS}
    # Execution.key is unique, so one row per key: each job's work was done exactly once.
    assert sorted(Execution.objects.values_list("key", flat=True)) == sorted(keys)
    assert set(runs) == set(keys)
    assert not unexplained, unexplained[:5]
    assert Job.objects.filter(attempts__gt=1).exists(), "some killed jobs were put back"
    for process in workers:
        process.wait_for_output("Stop with Ctrl-C or SIGTERM.")  # its signal handlers are in
        process.send_signal(signal.SIGTERM)
    for process in workers:
        assert process.wait() == 0, process.output()
        assert "Traceback" not in process.stderr, process.output()


# -- connection loss ----------------------------------------------------------------------


def cut_connections(cursor):
    """Terminate every other connection to this database; return how many."""
    if VENDOR == "mysql":
        cursor.execute(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        )
        ids = [connection_id for (connection_id,) in cursor.fetchall()]
        for connection_id in ids:
            cursor.execute(f"KILL {int(connection_id)}")
        return len(ids)
    cursor.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return cursor.fetchone()[0]


def listener_pids(cursor):
    cursor.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
    )
    return {pid for (pid,) in cursor.fetchall()}


def assert_done_once(keys):
    """Every job succeeded and did its work once; work done again only after an
    attempt that failed (the connection went away under it)."""
    assert status_counts() == {records.SUCCEEDED: len(keys)}
    assert sorted(Execution.objects.values_list("key", flat=True)) == sorted(keys)
    attempts = {args[0]: n for args, n in Job.objects.values_list("args", "attempts")}
    runs = runs_by_key(job_events())
    first_try = [key for key, run in runs.items() if run["again"] and attempts[key] == 1]
    assert not first_try, f"jobs done twice in a single attempt: {first_try}"


@pytest.mark.skipif(VENDOR != "postgres", reason="pg_terminate_backend is PostgreSQL's")
def test_a_worker_whose_connections_are_cut_reconnects_and_listens_again(
    start_worker_with_lease,
):
    # A long lease: heartbeats (a third of it) must not wake the idle worker by
    # chance when the test checks that LISTEN does.
    start = start_worker_with_lease(60.0)
    keys = [f"cut-{n}" for n in range(200)]
    background.enqueue_many([(jobs.record_once, [key, 0.02], {}) for key in keys])
    worker = start("--concurrency", "4", "--poll-interval", "30", "-v", "2")
    with connection.cursor() as cursor:
        wait_for(lambda: listener_pids(cursor), timeout=20, message="the worker's LISTEN")
        before = listener_pids(cursor)
        wait_for(lambda: Execution.objects.count() >= 40, timeout=30, message="jobs to run")
        assert cut_connections(cursor) >= 2  # at least the worker's own and its LISTEN
        done_at_cut = Execution.objects.count()
        assert done_at_cut < len(keys), "the cut must come while jobs are running"

        wait_for(lambda: unfinished_jobs() == 0, timeout=60, interval=0.1, message="all jobs")
        assert_done_once(keys)
        assert worker.returncode is None, worker.output()

        # LISTEN is back, on a new connection, and wakes the idle worker at once.
        wait_for(lambda: listener_pids(cursor) - before, timeout=20, message="a new LISTEN")
    for n in range(2):
        time.sleep(0.5)  # idle again, waiting on LISTEN (its next poll is 30 s away)
        ref = background.enqueue(jobs.add, args=[n, 1])
        assert ref.wait(timeout=10).result == n + 1
        job = Job.objects.get(pk=ref.id)
        delay = (job.started_at - job.created_at).total_seconds()
        assert delay < 1.0, f"started {delay:.2f} s after enqueue: LISTEN did not wake it"
    log = worker.stderr
    assert "lost the LISTEN connection" in log
    assert log.count("pgjobs: store reachable again") >= 1, worker.output()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()


@pytest.mark.skipif(VENDOR != "mysql", reason="KILL of MySQL/MariaDB connections")
def test_a_mysql_worker_whose_connections_are_killed_reconnects_and_carries_on(start_worker):
    keys = [f"cut-{n}" for n in range(200)]
    background.enqueue_many([(jobs.record_once, [key, 0.02], {}) for key in keys])
    worker = start_worker("--concurrency", "4")
    wait_for(lambda: Execution.objects.count() >= 40, timeout=30, message="jobs to run")
    with connection.cursor() as cursor:
        assert cut_connections(cursor) >= 1
    assert Execution.objects.count() < len(keys), "the cut must come while jobs are running"

    wait_for(lambda: unfinished_jobs() == 0, timeout=60, interval=0.1, message="all jobs")
    assert_done_once(keys)
    assert worker.returncode is None, worker.output()
    assert "pgjobs: store reachable again" in worker.stderr, worker.output()
    assert background.enqueue(jobs.add, args=[1, 1]).wait(timeout=10).result == 2


# -- database restart ------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateCluster:
    """A PostgreSQL cluster of our own in a temporary directory, on a free port."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgjobs-cluster-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        if os.geteuid() == 0:  # initdb and the server refuse to run as root
            shutil.chown(self.dir, "postgres", "postgres")

    def run(self, program, *args):
        command = [str(PG_BIN / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self):
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "root", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off "
            f"-c unix_socket_directories={self.dir}"
        )
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def restart(self):
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "restart")

    def stop(self):
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, sql, dbname="pgjobs_restart"):
        """Rows of ``sql`` on a fresh connection, or None while the server is away."""
        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="root", dbname=dbname, connect_timeout=2
            ) as conn:
                return conn.execute(sql).fetchall()
        except psycopg.OperationalError:
            return None

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def private_cluster():
    if VENDOR != "postgres":
        pytest.skip("a PostgreSQL restart")
    if not (PG_BIN / "initdb").exists():
        if REQUIRE_SERVICES:
            pytest.fail(f"PGJOBS_REQUIRE_SERVICES=1 but there is no {PG_BIN / 'initdb'}")
        pytest.skip(f"no {PG_BIN / 'initdb'}")
    cluster = PrivateCluster()
    try:
        cluster.start()
        with psycopg.connect(
            host="127.0.0.1", port=cluster.port, user="root", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE pgjobs_restart")
        yield cluster
    finally:
        cluster.stop()


SETUP_RESTART_DB = """
import django
django.setup()
from django.core.management import call_command
from pgjobs import background
from tests.testapp import jobs
call_command("migrate", verbosity=0)
background.enqueue_many([(jobs.record_once, [f"restart-{n}", 0.02], {}) for n in range(%d)])
"""


def test_a_database_restart_mid_run_loses_nothing(private_cluster, tmp_path):
    count = 300
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PGJOBS_TEST_DB": "postgres",
        "PGJOBS_TEST_DB_NAME": "pgjobs_restart",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(private_cluster.port),
        "PGJOBS_TEST_LEASE_SECONDS": "10",
        "PYTHONUNBUFFERED": "1",
    }
    subprocess.run(
        [sys.executable, "-c", SETUP_RESTART_DB % count],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )
    worker = WorkerProcess("pgjobs_worker", ["--concurrency", "4", "-v", "2"], env, tmp_path)
    try:

        def done():
            rows = private_cluster.query("SELECT count(*) FROM testapp_execution")
            return rows[0][0] if rows else 0

        wait_for(lambda: done() >= count // 4, timeout=30, interval=0.05, message="jobs to run")
        private_cluster.restart()
        assert done() < count, "the restart must come while jobs are running"

        def finished():
            rows = private_cluster.query(
                "SELECT count(*) FROM pgjobs_job WHERE status IN ('ready', 'running')"
            )
            return rows is not None and rows[0][0] == 0

        wait_for(finished, timeout=60, interval=0.2, message="every job to finish")
        assert worker.returncode is None, worker.output()
        statuses = private_cluster.query("SELECT status, count(*) FROM pgjobs_job GROUP BY 1")
        assert statuses == [(records.SUCCEEDED, count)], worker.output()
        keys = private_cluster.query("SELECT key FROM testapp_execution ORDER BY key")
        assert sorted(key for (key,) in keys) == sorted(f"restart-{n}" for n in range(count))
        # Work done again only by a job with an attempt behind it, which the restart broke.
        redone_first_try = private_cluster.query(
            "SELECT j.id FROM pgjobs_job j JOIN testapp_event e "
            "ON e.name = 'again:' || (j.args->>0) WHERE j.attempts = 1"
        )
        assert redone_first_try == [], worker.output()
        assert "pgjobs: store reachable again" in worker.stderr, worker.output()
        assert "terminating connection" in private_cluster.log_text()
    finally:
        code = worker.stop()
        print(worker.output())
    assert code == 0


# -- rows written by hand -----------------------------------------------------------------


def hand_written_row(func, args, signature):
    return Job.objects.create(func=func, args=args, kwargs={}, queue="default", signature=signature)


def test_rows_written_by_hand_fail_at_once_and_the_worker_carries_on(start_worker, tmp_path):
    marker = tmp_path / "written-by-os-system"
    command = [f"touch {marker}"]
    before = background.enqueue_many([(jobs.record_once, [f"before-{n}"], {}) for n in range(5)])
    with override_settings(SECRET_KEY="another site's key", SECRET_KEY_FALLBACKS=[]):
        foreign = sign_job("os.system", command, {}, "default")
    bad = {
        "unsigned": hand_written_row("os.system", command, ""),
        "foreign key": hand_written_row("os.system", command, foreign),
        "another job's signature": hand_written_row(
            "os.system", command, sign_job("os.system", ["true"], {}, "default")
        ),
        "unknown function": hand_written_row(
            "tests.testapp.jobs.no_such_job",
            [],
            sign_job("tests.testapp.jobs.no_such_job", [], {}, "default"),
        ),
        "undecodable args": hand_written_row(
            "tests.testapp.jobs.record_once",
            [{"__pgjobs__": "nope", "v": 1}],
            sign_job(
                "tests.testapp.jobs.record_once", [{"__pgjobs__": "nope", "v": 1}], {}, "default"
            ),
        ),
    }
    after = background.enqueue_many([(jobs.record_once, [f"after-{n}"], {}) for n in range(5)])

    worker = start_worker("--concurrency", "1")  # one slot: the bad rows come between good ones
    wait_for(lambda: unfinished_jobs() == 0, timeout=30, interval=0.1, message="every job")

    messages = {
        "unsigned": "signature mismatch",
        "foreign key": "signature mismatch",
        "another job's signature": "signature mismatch",
        "unknown function": "cannot import job function 'tests.testapp.jobs.no_such_job'",
        "undecodable args": "cannot decode stored arguments: ValueError: unknown tagged value 'nope'",
    }
    for name, row in bad.items():
        row.refresh_from_db()
        assert (row.status, row.attempts) == (records.FAILED, 1), (name, row.error)
        assert row.error["type"] == "pgjobs.exceptions.InvalidJob", name
        assert messages[name] in row.error["message"], (name, row.error["message"])
    assert not marker.exists(), "os.system was called"
    assert not Event.objects.filter(name__startswith="start:").exclude(
        name__regex=r"^start:(before|after)-"
    )
    for ref in before + after:
        assert ref.refresh().status == records.SUCCEEDED
    # Still working: a job enqueued now runs too.
    assert background.enqueue(jobs.add, args=[2, 3]).wait(timeout=20).result == 5
    assert worker.returncode is None, worker.output()


@pytest.mark.skipif(VENDOR != "postgres", reason="pg_terminate_backend is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_listen_connection_that_cannot_be_made_again_does_not_hold_up_the_main_thread():
    """The main thread sleeps on the LISTEN socket. When that connection is cut and
    the server then accepts connections but never answers, connecting again takes
    minutes: done in the main thread, it stopped heartbeats and claims meanwhile,
    and the worker's leases ran out. The main thread must be told at once (it may
    have missed notifications) and go on sleeping and waking as before."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel's backlog), never answers
    worker = Worker(get_backend().get_store())
    store, alarm = worker.store, worker.alarm
    listen_database = store.listen_database  # the backend's store, shared with later tests
    try:
        assert worker.listener.start()
        with connection.cursor() as cursor:
            wait_for(lambda: listener_pids(cursor), timeout=10, message="the worker's LISTEN")
            store.listen_database = f"host=127.0.0.1 port={silent.getsockname()[1]} user=x"
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN %%' "
                "AND pid <> pg_backend_pid()"
            )
        started = time.monotonic()
        alarm.sleep(10)
        assert time.monotonic() - started < 3, "the sleep did not end for the cut connection"
        assert alarm.take()[0], "a cut LISTEN connection must count as a wake-up"
        assert store.listen_socket() is None
        wait_for(
            lambda: any(t.name == "pgjobs-relisten" for t in threading.enumerate()),
            timeout=5,
            message="a thread connecting anew",
        )
        for _ in range(3):  # the main thread sleeps and is rung as usual meanwhile
            assert_a_ring_ends_the_sleep(alarm, after=0.2)
    finally:
        worker.shutdown.stopping.set()
        silent.close()  # the thread's connection attempt now fails, and it ends
        store.stop_listening()
        store.listen_database = listen_database
        alarm.close()
