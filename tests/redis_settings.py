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
