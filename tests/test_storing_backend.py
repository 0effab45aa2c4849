"""``pgjobs.backends.storing.StoringBackend``: the options and modes every storing
backend shares, a storing backend of a user's own built on it, the capabilities
backends declare, and the handler (``pgjobs.handler``): one backend per process,
and the one store lookup the Django admin and the Wagtail views share."""

import datetime
import re
import threading

import pytest
from django.test import override_settings

from pgjobs import InvalidBackend, JobNotFound, NotSupported, background, records
from pgjobs.backends import DatabaseBackend, ImmediateBackend, RedisBackend
from pgjobs.backends.base import BaseJobBackend
from pgjobs.backends.storing import StoringBackend
from pgjobs.handler import backends, get_backend, store_for_jobs
from pgjobs.models import Job
from pgjobs.stores import database_store
from tests.conftest import run_jobs
from tests.testapp import jobs
from tests.testapp.backends import EnqueueOnlyBackend

STORING_BACKENDS = [DatabaseBackend, RedisBackend]


class TableBackend(StoringBackend):
    """A storing backend of a user's own: the shared options, and the ``Job``
    table's store with a ``CHANNEL`` of its own."""

    option_names = StoringBackend.option_names | {"CHANNEL"}
    jobs_database = "default"

    def make_store(self):
        return database_store(
            "default",
            channel=self.options.get("CHANNEL", "pgjobs"),
            lease_seconds=self.lease_seconds,
        )


TABLE = {"BACKEND": "tests.test_storing_backend.TableBackend", "OPTIONS": {"CHANNEL": "own"}}


# -- shared options -------------------------------------------------------------------


@pytest.mark.parametrize("backend_class", STORING_BACKENDS)
def test_every_storing_backend_takes_the_shared_options_with_the_same_defaults(backend_class):
    assert StoringBackend.option_names <= backend_class.option_names
    backend = backend_class({})
    assert backend.stores_jobs
    assert (backend.queues, backend.max_attempts) == (["default"], 3)
    assert (backend.retry_policy.base, backend.retry_policy.cap) == (1.0, 3600.0)
    assert (backend.default_timeout, backend.lease_seconds, backend.poll_interval) == (
        None,
        20.0,
        None,
    )
    assert (backend.keep_succeeded, backend.keep_failed) == (300.0, 7 * 24 * 3600.0)
    given = backend_class(
        {"TIMEOUT": 5, "LEASE_SECONDS": 3, "POLL_INTERVAL": 0.5, "RETRY_DELAY": 2}
    )
    assert (given.default_timeout, given.lease_seconds, given.poll_interval) == (5.0, 3.0, 0.5)
    assert given.retry_policy.base == 2.0


@pytest.mark.parametrize("backend_class", STORING_BACKENDS)
def test_the_timeout_option_is_every_jobs_timeout_unless_the_enqueue_gives_one(backend_class):
    backend = backend_class({"TIMEOUT": 5})
    assert backend.prepare(jobs.add, [1, 2], {}).timeout == 5.0
    assert backend.prepare(jobs.add, [1, 2], {}, timeout=2).timeout == 2.0
    bulk = backend.prepare_many([(jobs.add, [1, 2], {}), (jobs.add, [3, 4], {})])
    assert [spec.timeout for spec in bulk] == [5.0, 5.0]
    assert backend_class({}).prepare(jobs.add, [1, 2], {}).timeout is None


@pytest.mark.parametrize("backend_class", STORING_BACKENDS)
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RETRY_DELAY", 0, "OPTIONS['RETRY_DELAY'] must be a finite number > 0, not 0"),
        ("RETRY_MAX_DELAY", "1", "OPTIONS['RETRY_MAX_DELAY'] must be a finite number > 0, not '1'"),
        ("TIMEOUT", -1, "OPTIONS['TIMEOUT'] must be a finite number > 0, not -1"),
        ("LEASE_SECONDS", True, "OPTIONS['LEASE_SECONDS'] must be a finite number > 0, not True"),
        ("POLL_INTERVAL", 0, "OPTIONS['POLL_INTERVAL'] must be a finite number > 0, not 0"),
        ("KEEP_FAILED", False, "OPTIONS['KEEP_FAILED'] must be True (keep them until"),
        ("MAX_ATTEMPTS", 0, "OPTIONS['MAX_ATTEMPTS'] must be a whole number >= 1, not 0"),
    ],
)
def test_every_storing_backend_rejects_a_shared_option_alike(backend_class, key, value, message):
    with pytest.raises(InvalidBackend, match=re.escape(message)):
        backend_class({key: value})


def test_a_subclass_lists_its_own_options_beside_the_shared_ones():
    with pytest.raises(
        InvalidBackend, match="TableBackend does not understand OPTIONS URL"
    ) as info:
        TableBackend({"URL": "redis://"})
    assert "CHANNEL, KEEP_FAILED, KEEP_SUCCEEDED, LEASE_SECONDS, MAX_ATTEMPTS" in str(info.value)


# -- a storing backend of one's own ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_storing_backend_of_ones_own_stores_runs_and_cancels_jobs():
    with override_settings(PGJOBS=TABLE):
        assert background.backend.get_store().channel == "own"
        ref = background.enqueue(jobs.add, args=[1, 2])
        deferred = background.defer(jobs.noop, when=datetime.timedelta(hours=1))
        many = background.enqueue_many([(jobs.add, [n, n], {}) for n in range(3)], priority=5)
        unique = [background.enqueue(jobs.noop, unique_key="k") for _ in range(2)]
        assert unique[0] == unique[1], "the second enqueue found the first job"
        assert [r.priority for r in many] == [5] * 3
        assert background.get(ref.id) == ref
        with pytest.raises(JobNotFound):
            background.get(10**9)
        assert ref.cancel() is True and ref.status == records.CANCELLED
        run_jobs()
        assert [r.refresh().result for r in many] == [0, 2, 4]
        assert deferred.refresh().status == records.READY  # not due yet
        statuses = sorted(Job.objects.values_list("status", flat=True))
        assert statuses == sorted([records.CANCELLED, records.READY] + [records.SUCCEEDED] * 4)


# -- declared capabilities ---------------------------------------------------------------


def test_backends_declare_whether_they_store_jobs_and_where():
    assert (BaseJobBackend.stores_jobs, BaseJobBackend.jobs_database) == (False, None)
    assert not ImmediateBackend({}).stores_jobs
    assert DatabaseBackend({"DATABASE": "other"}).jobs_database == "other"
    assert RedisBackend({}).jobs_database is None  # its jobs are not Job rows


def test_a_backend_that_stores_nothing_has_no_jobs_to_get_or_cancel():
    with override_settings(PGJOBS={"BACKEND": "tests.testapp.backends.EnqueueOnlyBackend"}):
        EnqueueOnlyBackend.calls.clear()
        with pytest.raises(NotSupported, match="EnqueueOnlyBackend does not store jobs"):
            background.get(1)


# -- the handler ------------------------------------------------------------------------


def test_threads_racing_for_the_first_use_share_one_backend():
    backends.reset()
    start = threading.Barrier(8)
    seen = []

    def first_use():
        start.wait()
        seen.append(get_backend())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and all(backend is seen[0] for backend in seen)


@pytest.mark.django_db
def test_the_admin_acts_on_job_rows_through_the_backend_that_holds_them():
    with override_settings(PGJOBS=TABLE):
        assert store_for_jobs("default") is background.backend.get_store()
        assert store_for_jobs("default").channel == "own"  # a retry wakes its workers
    with override_settings(PGJOBS={"BACKEND": "pgjobs.backends.ImmediateBackend"}):
        store = store_for_jobs("default")
        assert type(store) is type(database_store("default")) and store.channel == "pgjobs"
