"""Shared fixtures: database availability, real worker processes, polling helpers and
an in-process worker.

Tests that need the database are skipped when it is unreachable, except under
``PGJOBS_REQUIRE_SERVICES=1`` (CI), where an unreachable database stops the run
with an error instead: a green CI run must mean the tests ran.
"""

import contextlib
import faulthandler
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections, transaction
from pytest_django.plugin import blocking_manager_key

from pgjobs import records, stats
from pgjobs.handler import get_backend
from pgjobs.models import Job, JobStat
from pgjobs.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
VENDOR = os.environ.get("PGJOBS_TEST_DB", "postgres")
# PGJOBS_TEST_DB=redis: RedisBackend, the test app's tables in PostgreSQL (tests/redis_settings.py).
JOBS_IN_REDIS = VENDOR == "redis"
REQUIRE_SERVICES = os.environ.get("PGJOBS_REQUIRE_SERVICES") == "1"

# Bounds for processes the tests start: how long a SIGTERM may take before SIGKILL.
STOP_TIMEOUT = 15.0
# How long an in-process worker may ignore a stop request before the run is ended.
WEDGED_WORKER_TIMEOUT = 20.0


# -- database availability ------------------------------------------------------


def _database_problem():
    """Why the test database server cannot be used, or None when it can."""
    if JOBS_IN_REDIS:
        from tests.redis_settings import redis_problem

        problem = redis_problem()
        if problem:
            return problem
    settings = connections["default"].settings_dict
    if connections["default"].vendor == "sqlite":
        return None
    host = settings.get("HOST") or "127.0.0.1"
    default_port = {"postgresql": 5432, "mysql": 3306}[connections["default"].vendor]
    port = int(settings.get("PORT") or default_port)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"cannot reach {connections['default'].vendor} at {host}:{port}: {exc}"
    try:
        with connections["default"]._nodb_cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"cannot log in to {connections['default'].vendor} at {host}:{port}: {exc}"
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "sql_store(reason): about the database stores themselves (their tables, SQL, "
        "locks, the admin); skipped, with the reason, when the jobs are in Redis",
    )
    config.addinivalue_line(
        "markers",
        "store_gap(strict=True, **reasons): tests/test_store_contract.py, a behaviour "
        "the stores named lack (an xfail on those stores, with the reason given)",
    )


def pytest_collection_modifyitems(config, items):
    if JOBS_IN_REDIS:
        for item in items:
            marker = item.get_closest_marker("sql_store")
            if marker is not None:
                reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
                item.add_marker(pytest.mark.skip(reason=f"DatabaseBackend only: {reason}"))
    needs_db = [item for item in items if item.get_closest_marker("django_db")]
    if not needs_db:
        return
    with config.stash[blocking_manager_key].unblock():
        problem = _database_problem()
    if problem is None:
        return
    if REQUIRE_SERVICES:
        pytest.exit(
            f"PGJOBS_REQUIRE_SERVICES=1 but the test database is unavailable: {problem}",
            returncode=pytest.ExitCode.INTERNAL_ERROR,
        )
    skip = pytest.mark.skip(reason=f"database unavailable ({problem})")
    for item in needs_db:
        item.add_marker(skip)


# -- waiting -----------------------------------------------------------------------


def wait_for(condition, timeout=10.0, interval=0.02, message=None):
    """Poll ``condition()`` until it returns something truthy; return that value.

    Fails the test once ``timeout`` seconds pass. Never loops without a bound.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(condition, "__name__", "condition")
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def assert_a_ring_ends_the_sleep(alarm, after=0.1, within=2.0):
    """Ring the worker's ``alarm`` from another thread ``after`` seconds on, while
    the main thread sleeps: the sleep must end within ``within`` seconds."""
    started = time.monotonic()
    ringer = threading.Timer(after, alarm.ring)
    ringer.start()
    alarm.sleep(within + 3)
    ringer.join(5)
    assert time.monotonic() - started < within, "a ring did not end the main thread's sleep"
    alarm.clear()


def status_counts():
    """``{status: count}`` over every job, read from the database now."""
    if JOBS_IN_REDIS:
        from tests.redis_settings import redis_status_counts

        return redis_status_counts()
    counts = {}
    for status in Job.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def add_figures(*attempts):
    """Write the per-minute figures of ``(queue, outcome, ended, wait, run)`` attempts
    into the ``JobStat`` table, as the SQL stores' workers do (``pgjobs/stats.py``)."""
    rows = []
    for queue, outcome, ended, wait, run in attempts:
        rows += stats.attempt_rows(stats.minute_of(ended), queue, 0, outcome, wait, run)

    JobStat.objects.bulk_create(
        JobStat(
            minute=minute,
            queue=queue,
            shard=shard,
            metric=metric,
            bucket=bucket,
            count=count,
            total=total,
        )
        for minute, queue, shard, metric, bucket, count, total in stats.merge_rows(rows)
    )


def unfinished_jobs():
    if JOBS_IN_REDIS:
        counts = status_counts()
        return counts.get(records.READY, 0) + counts.get(records.RUNNING, 0)
    return Job.objects.filter(status__in=[records.READY, records.RUNNING]).count()


@contextlib.contextmanager
def job_row_locked(job_id, seconds=30.0):
    """Hold job ``job_id``'s row (``SELECT ... FOR UPDATE``) in another thread and
    transaction, as another worker's claim in flight would, until ``release()``
    (what the block gets), the block's end, or ``seconds``, whichever comes first."""
    locked, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=job_id)
                locked.set()
                release.wait(seconds)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10), "the job's row could not be locked"
        yield release.set
    finally:
        release.set()
        holder.join(10)


# -- in-process worker ---------------------------------------------------------------


def run_jobs(timeout=30.0, **options):
    """Run every due job in this process with a single-slot burst worker; return its stats.

    The worker's claims and outcomes use the test's own connection; job functions
    run in a slot thread with a connection of their own, so jobs that write to
    the database need ``django_db(transaction=True)``. A watchdog stops the worker
    (and fails the test) if it is still busy after ``timeout`` seconds; a worker that
    ignores the stop request too is a wedged worker, and the whole run ends with
    every thread's traceback rather than hanging CI.
    """
    backend = get_backend()
    options.setdefault("concurrency", 1)
    options.setdefault("retry_policy", backend.retry_policy)
    options.setdefault("grace_period", 1.0)
    worker = Worker(backend.get_store(), burst=True, **options)
    fired = threading.Event()

    def watchdog():
        fired.set()
        faulthandler.dump_traceback_later(WEDGED_WORKER_TIMEOUT, exit=True)
        worker.request_stop()

    timer = threading.Timer(timeout, watchdog)
    timer.start()
    try:
        stats = worker.run()
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
    if fired.is_set():
        pytest.fail(f"the in-process worker was still busy after {timeout} s: {stats}")
    return stats


def run_worker_while(worker, drive, timeout=30.0):
    """Run ``worker`` in this thread while ``drive()`` runs in another, which stops
    the worker when it returns; return the worker's stats. A failure in ``drive``
    (a ``wait_for`` that timed out) fails the test here."""
    failures = []

    def driver():
        try:
            drive()
        except BaseException as exc:  # pytest.fail's exception too
            failures.append(exc)
        finally:
            worker.request_stop()
            connections.close_all()

    thread = threading.Thread(target=driver, daemon=True)
    thread.start()
    stats = worker.run()
    thread.join(timeout=timeout)
    if failures:
        raise failures[0]
    return stats


def work_until(condition, timeout=10.0, **options):
    """Run burst passes (retries become due over time) until ``condition()`` holds."""

    def done():
        run_jobs(**options)
        return condition()

    return wait_for(done, timeout=timeout, interval=0.02, message="jobs to finish")


@pytest.fixture(autouse=True)
def empty_redis_jobs():
    """Under PGJOBS_TEST_DB=redis, every test starts and leaves with no jobs, as
    the database tests do (their jobs go with the test database's rollback or flush)."""
    if JOBS_IN_REDIS:
        from tests.redis_settings import flush_jobs, skip_if_job_table_is_read

        flush_jobs()
        with skip_if_job_table_is_read():
            yield
        flush_jobs()
    else:
        yield


@pytest.fixture(scope="session")
def redis_cluster():
    """A real Redis Cluster of our own (tests/redis_cluster.py): three masters with a
    replica each, on free local ports, started once per session and killed at its end.
    Skipped without redis-server/redis-cli, except under PGJOBS_REQUIRE_SERVICES=1."""
    from tests.redis_cluster import LocalRedisCluster, missing_binaries

    missing = missing_binaries()
    if missing:
        if REQUIRE_SERVICES:
            pytest.fail(f"PGJOBS_REQUIRE_SERVICES=1 but {' and '.join(missing)} missing")
        pytest.skip(f"no {' or '.join(missing)} for a Redis Cluster")
    cluster = LocalRedisCluster(masters=3, replicas=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def jobs_backend():
    """The DatabaseBackend the test settings configure."""
    return get_backend()


# -- real worker processes -------------------------------------------------------------


class WorkerProcess:
    """A ``manage.py``-style command (``pgjobs_worker``, ``pgjobs_drain``) in a subprocess."""

    def __init__(self, command, args, env, log_dir):
        self.command = command
        self.args = list(args)
        self._stdout_path = log_dir / f"{command}-{id(self)}.out"
        self._stderr_path = log_dir / f"{command}-{id(self)}.err"
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", command, *self.args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def __repr__(self):
        return f"<WorkerProcess {self.process.pid} {self.command} {' '.join(self.args)}>"

    @property
    def pid(self):
        return self.process.pid

    @property
    def stdout(self):
        return self._stdout_path.read_text(errors="replace")

    @property
    def stderr(self):
        return self._stderr_path.read_text(errors="replace")

    @property
    def returncode(self):
        return self.process.poll()

    def send_signal(self, signum=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout=STOP_TIMEOUT):
        """Wait for the process to exit; fail the test (and kill it) if it does not."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self!r} did not exit within {timeout} s\n{self.output()}")

    def wait_for_output(self, text, timeout=15.0, stream="stdout"):
        """Wait until ``text`` appears in ``stream`` (the process must stay alive)."""

        def seen():
            if text in getattr(self, stream):
                return True
            if self.process.poll() is not None:
                pytest.fail(f"{self!r} exited with {self.process.returncode}\n{self.output()}")
            return False

        wait_for(seen, timeout=timeout, message=f"{text!r} in the {stream} of {self!r}")

    def wait_until_started(self, timeout=60.0):
        """Wait for a worker's banner (default verbosity), printed once its signal
        handlers are in: a SIGTERM before that kills the process (exit -15), as it
        would any Django command still starting. On a loaded machine other workers
        can finish every job before this one is up."""
        self.wait_for_output("Stop with Ctrl-C or SIGTERM.", timeout=timeout)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL when it does not exit within ``timeout``; return the code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def output(self):
        return f"--- stdout of {self!r}\n{self.stdout}--- stderr\n{self.stderr}"


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """Start real worker processes on the test database: ``start_worker("--concurrency", "4")``.

    ``command="pgjobs_drain"`` runs a drain instead; ``persistent_connections=True``
    keeps database connections across jobs (``CONN_MAX_AGE``); ``env`` adds to the
    process's environment. Every process is stopped at teardown (SIGTERM, then SIGKILL
    after a bound), before the database is flushed.
    """
    base_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PGJOBS_TEST_DB": VENDOR,
        "PGJOBS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PYTHONUNBUFFERED": "1",
    }
    started = []

    def start(*args, command="pgjobs_worker", persistent_connections=False, env=None):
        process_env = {**base_env, **(env or {})}
        if persistent_connections:
            process_env["PGJOBS_TEST_CONN_MAX_AGE"] = "600"
        process = WorkerProcess(command, args, process_env, tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    for process in started:
        # Shown by pytest when the test failed: what the workers said.
        print(process.output())
