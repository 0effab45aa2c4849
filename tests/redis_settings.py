"""Test settings for ``PGJOBS_TEST_DB=redis``: the suite against ``RedisBackend``.

The test app's own tables (``Event``, ``Execution``) stay in PostgreSQL; the
jobs live in Redis database ``PGJOBS_TEST_REDIS_URL`` (default db 15) under a
key prefix of this run's own, which worker subprocesses inherit, so that
test runs side by side never see or flush each other's jobs.
"""

import contextlib
import os

URL = os.environ.get("PGJOBS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = os.environ.setdefault(
    "PGJOBS_TEST_REDIS_PREFIX", f"pgjobs-test-{os.environ.get('PGJOBS_TEST_RUN', os.getpid())}"
)


def redis_jobs_setting(pgjobs):
    """``PGJOBS`` with the same options, on Redis."""
    options = {**pgjobs["OPTIONS"], "URL": URL, "PREFIX": PREFIX}
    return {**pgjobs, "BACKEND": "pgjobs.backends.RedisBackend", "OPTIONS": options}


def _store():
    from pgjobs.stores.redis import RedisStore

    return RedisStore(URL, prefix=PREFIX)


def redis_problem():
    """Why the test Redis cannot be used, or None when it can."""
    try:
        _store().client.ping()
    except Exception as exc:
        return f"cannot reach Redis at {URL}: {exc}"
    return None


def flush_jobs():
    """Delete this run's keys (only those under its prefix)."""
    _store().flush()


def redis_status_counts():
    """``{status: count}`` over every job of the configured backend."""
    from pgjobs.handler import get_backend

    counts = {}
    for queue in get_backend().get_store().status()["queues"]:
        for status, n in queue["counts"].items():
            counts[status] = counts.get(status, 0) + n
    return counts


@contextlib.contextmanager
def skip_if_job_table_is_read():
    """A test that reads or writes pgjobs' tables (``pgjobs_job``, the worker and
    schedule records) checks the database stores' rows, which RedisBackend does
    not write: it is skipped, saying so, at its first use of the model
    (tests/test_redis.py covers the same behaviour through refs, the store and
    real workers)."""
    import pytest
    from django.apps import apps

    def skip(*args, **kwargs):
        pytest.skip("reads pgjobs' tables, which RedisBackend does not use")

    managers = [model._default_manager for model in apps.get_app_config("pgjobs").get_models()]
    for manager in managers:
        manager.get_queryset = skip
    try:
        yield
    finally:
        for manager in managers:
            del manager.get_queryset


# Tests about the database stores themselves, skipped under PGJOBS_TEST_DB=redis
# before they start (tests/conftest.py); node id prefix: reason.
SQL_ONLY = {
    "tests/test_api.py::test_the_test_settings_configure_the_database_backend": (
        "asserts the DatabaseBackend of the test settings"
    ),
    "tests/test_api.py::test_override_settings_switches_the_backend_and_back": (
        "asserts the DatabaseBackend of the test settings"
    ),
    "tests/test_stores_vendors.py::": "database store internals (SQL statements, locks)",
    "tests/test_schedule.py::test_two_drain_processes_racing_on_one_tick": (
        "stages the race with the database's row locks"
    ),
    "tests/test_commands.py::test_worker_prints_its_banner": (
        "asserts the DatabaseBackend banner (test_redis.py: the Redis banner)"
    ),
    "tests/test_database_backend.py::test_a_job_enqueued_in_a_transaction_is_invisible": (
        "reads the pgjobs_job table from another connection (test_redis.py: on_commit)"
    ),
    "tests/test_database_backend.py::test_cancel_of_a_running_job_asks_it_to_stop": (
        "builds a database store (test_redis.py cancels a running job on Redis)"
    ),
}


def sql_only_reason(nodeid):
    for prefix, reason in SQL_ONLY.items():
        if nodeid.startswith(prefix):
            return reason
    return None
