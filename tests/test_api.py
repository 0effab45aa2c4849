"""The RFC 72 API (``pgjobs.background``, ``pgjobs/handler.py``): the default in-band
backend, backends written to the RFC's bare signatures, the settings, and the
bad input every storing call rejects without writing anything."""

import contextlib
import datetime

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from pgjobs import (
    BaseJobBackend,
    InvalidBackend,
    InvalidJob,
    NotSupported,
    background,
    records,
)
from pgjobs.backends import DatabaseBackend, ImmediateBackend, RedisBackend
from pgjobs.models import Job
from tests.conftest import JOBS_IN_REDIS, run_jobs, status_counts
from tests.testapp import jobs
from tests.testapp.backends import EnqueueOnlyBackend
from tests.testapp.models import Event

IMMEDIATE = {"BACKEND": "pgjobs.backends.ImmediateBackend"}
# The storing backend this run's PGJOBS_TEST_DB configures (tests/settings.py).
CONFIGURED = RedisBackend if JOBS_IN_REDIS else DatabaseBackend
ENQUEUE_ONLY = {"BACKEND": "tests.testapp.backends.EnqueueOnlyBackend"}


@pytest.fixture
def immediate():
    with override_settings(PGJOBS=IMMEDIATE):
        yield background.backend


@pytest.fixture
def enqueue_only():
    EnqueueOnlyBackend.calls.clear()
    with override_settings(PGJOBS=ENQUEUE_ONLY):
        yield background.backend


def local_function():
    return "local"


# -- settings ----------------------------------------------------------------------


def test_the_test_settings_configure_the_storing_backend_of_this_run():
    assert isinstance(background.backend, CONFIGURED)


def test_override_settings_switches_the_backend_and_back():
    before = background.backend
    with override_settings(PGJOBS=IMMEDIATE):
        assert isinstance(background.backend, ImmediateBackend)
    assert isinstance(background.backend, CONFIGURED)
    assert background.backend is not before  # rebuilt from the restored settings


def test_immediate_is_the_default_backend(settings):
    settings.PGJOBS = {}
    assert isinstance(background.backend, ImmediateBackend)


def test_wagtail_jobs_is_read_when_pgjobs_is_absent(settings):
    del settings.PGJOBS
    settings.WAGTAIL_JOBS = ENQUEUE_ONLY
    assert isinstance(background.backend, EnqueueOnlyBackend)


def test_pgjobs_wins_over_wagtail_jobs(settings):
    settings.WAGTAIL_JOBS = ENQUEUE_ONLY
    settings.PGJOBS = IMMEDIATE
    assert isinstance(background.backend, ImmediateBackend)


def test_neither_setting_means_the_immediate_backend(settings):
    del settings.PGJOBS
    assert isinstance(background.backend, ImmediateBackend)


def test_options_reach_the_backend_constructor(settings):
    settings.PGJOBS = {**IMMEDIATE, "OPTIONS": {"QUEUES": ["mail"], "MAX_ATTEMPTS": 7}}
    assert background.backend.queues == ["mail"]
    assert background.backend.max_attempts == 7


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"BACKEND": "no.such.Backend"}, "cannot import"),
        ({"BACKEND": "tests.testapp.jobs.add"}, "not a subclass"),
        ({"BACKEND": 42}, "dotted path"),
        ({**IMMEDIATE, "OPTIONS": {"NOPE": 1}}, "NOPE"),
        ({**IMMEDIATE, "OPTIONS": ["not", "a", "dict"]}, "OPTIONS must be a dict"),
    ],
)
def test_a_bad_backend_setting_raises_invalid_backend_on_first_use(settings, config, message):
    settings.PGJOBS = config
    with pytest.raises(InvalidBackend, match=message):
        background.enqueue(jobs.noop)


# -- the default backend: in-band, like a direct call ----------------------------------------


@pytest.mark.django_db
def test_immediate_runs_the_job_in_band_and_keeps_its_return_value(immediate):
    ref = background.enqueue(jobs.add, args=[2, 3])
    assert ref.result == 5
    assert ref.status == records.SUCCEEDED
    assert ref.is_finished
    assert ref.refresh() is ref
    assert ref.wait(timeout=0) is ref
    assert Job.objects.count() == 0, "the immediate backend stores nothing"


def test_immediate_passes_and_returns_the_very_objects_a_direct_call_would(immediate):
    argument = {"a": [1, 2]}
    ref = background.enqueue(jobs.echo, args=[argument], kwargs={"same": argument})
    assert ref.result["args"][0] is argument
    assert ref.result["kwargs"]["same"] is argument


def test_immediate_lets_exceptions_propagate_unchanged(immediate):
    with pytest.raises(RuntimeError) as excinfo:
        background.enqueue(jobs.fail_always, args=["as if called directly"])
    assert type(excinfo.value) is RuntimeError
    assert str(excinfo.value) == "as if called directly"
    assert excinfo.traceback[-1].name == "fail_always"


def test_immediate_runs_async_functions_through_enqueue(immediate):
    assert background.enqueue(jobs.async_add, args=[4, 5]).result == 9


def test_immediate_async_exceptions_propagate_through_enqueue(immediate):
    with pytest.raises(KeyError, match="async boom"):
        background.enqueue(jobs.async_fail)


def test_immediate_aenqueue_runs_async_and_sync_functions(immediate):
    assert async_to_sync(background.aenqueue)(jobs.async_add, args=[1, 2]).result == 3
    assert async_to_sync(background.aenqueue)(jobs.add, args=[1, 2], kwargs={}).result == 3


def test_immediate_aenqueue_exceptions_propagate(immediate):
    with pytest.raises(KeyError, match="async boom"):
        async_to_sync(background.aenqueue)(jobs.async_fail)
    with pytest.raises(RuntimeError, match="sync boom"):
        async_to_sync(background.aenqueue)(jobs.fail_always, args=["sync boom"])


def test_immediate_accepts_a_dotted_path(immediate):
    assert background.enqueue("tests.testapp.jobs.add", args=[1, 1]).result == 2


def test_immediate_enqueue_many_runs_each_in_order(immediate):
    refs = background.enqueue_many([(jobs.add, [1, 2], {}), (jobs.echo, ["x"], {"k": 1})])
    assert [ref.result for ref in refs] == [3, {"args": ["x"], "kwargs": {"k": 1}}]


def test_immediate_does_not_defer(immediate):
    when = timezone.now() + datetime.timedelta(minutes=1)
    with pytest.raises(NotSupported, match="ImmediateBackend does not support defer") as excinfo:
        background.defer(jobs.noop, when=when)
    assert isinstance(excinfo.value, NotImplementedError)
    with pytest.raises(NotSupported):
        async_to_sync(background.adefer)(jobs.noop, when=when)


def test_immediate_validates_like_a_storing_backend(immediate):
    """A call that works in development must work in production: same checks."""
    with pytest.raises(InvalidJob, match="lambda"):
        background.enqueue(lambda: None)
    with pytest.raises(InvalidJob, match=r"args\[0\]"):
        background.enqueue(jobs.echo, args=[object()])
    with pytest.raises(InvalidJob, match="priority"):
        background.enqueue(jobs.noop, priority=101)


def test_immediate_has_no_stored_jobs_to_look_up(immediate):
    with pytest.raises(NotSupported):
        background.get(1)


# -- a backend written to the RFC's exact signatures -----------------------------------------


def test_a_backend_with_only_the_rfc_enqueue_signature_works(enqueue_only):
    assert background.enqueue(jobs.add, args=[1, 2], kwargs={}) == 3
    assert background.enqueue(jobs.add, [3, 4]) == 7
    assert EnqueueOnlyBackend.calls == [(jobs.add, [1, 2], {}), (jobs.add, [3, 4], {})]


def test_job_options_reach_the_backend_only_when_the_caller_gives_them(enqueue_only):
    background.enqueue(jobs.noop, priority=None, queue=None)  # None means not given
    with pytest.raises(TypeError, match="priority"):
        background.enqueue(jobs.noop, priority=5)


def test_a_backend_without_defer_raises_not_supported(enqueue_only):
    with pytest.raises(NotSupported, match="EnqueueOnlyBackend does not support defer"):
        background.defer(jobs.noop, when=datetime.timedelta(seconds=1))
    with pytest.raises(NotImplementedError):
        async_to_sync(background.adefer)(jobs.noop, when=datetime.timedelta(seconds=1))


def test_aenqueue_falls_back_to_the_sync_enqueue(enqueue_only):
    assert async_to_sync(background.aenqueue)(jobs.add, args=[2, 2], kwargs={}) == 4
    assert EnqueueOnlyBackend.calls == [(jobs.add, [2, 2], {})]


def test_enqueue_many_falls_back_to_one_enqueue_per_job(enqueue_only):
    assert background.enqueue_many([(jobs.add, [1, 1], {}), (jobs.noop,)]) == [2, None]
    assert EnqueueOnlyBackend.calls == [(jobs.add, [1, 1], {}), (jobs.noop, [], {})]


def test_backends_declare_the_modes_they_define():
    assert EnqueueOnlyBackend.supported_modes() == ["enqueue"]
    assert ImmediateBackend.supported_modes() == ["enqueue", "aenqueue"]
    assert DatabaseBackend.supported_modes() == ["enqueue", "defer", "aenqueue", "adefer"]
    assert BaseJobBackend.supported_modes() == []


def test_a_backend_defining_nothing_supports_nothing(settings):
    settings.PGJOBS = {"BACKEND": "pgjobs.BaseJobBackend"}
    with pytest.raises(NotSupported, match="supports nothing"):
        background.enqueue(jobs.noop)


# -- bad input: InvalidJob, and nothing written --------------------------------------------


class Thing:
    def method(self):
        pass


def _nested_function():
    def inner():
        pass

    return inner


NAIVE = datetime.datetime(2030, 1, 1, 12, 0)

BAD_CALLS = {
    "lambda": (lambda: None, {}, "lambda"),
    "nested function": (_nested_function(), {}, "inside another function"),
    "bound method": (Thing().method, {}, "bound method"),
    "builtin": (len, {"args": [[1]]}, "builtin"),
    "callable instance": (jobs.triple, {"args": [1]}, "not a function"),
    "unimportable path": ("tests.testapp.jobs.nope", {}, "cannot import"),
    "non-JSON positional argument": (jobs.echo, {"args": [1, object()]}, r"args\[1\]"),
    "non-JSON keyword argument": (jobs.echo, {"kwargs": {"user": Thing()}}, r"kwargs\['user'\]"),
    "NaN argument": (jobs.echo, {"args": [float("nan")]}, r"args\[0\]"),
    "nested non-JSON argument": (jobs.echo, {"args": [{"a": {1, Thing()}}]}, r"args\[0\]\['a'\]"),
    "priority too high": (jobs.noop, {"priority": 101}, "out of range"),
    "priority too low": (jobs.noop, {"priority": -101}, "out of range"),
    "priority not an int": (jobs.noop, {"priority": 1.5}, "whole number"),
    "priority a string": (jobs.noop, {"priority": "10"}, "whole number"),
    "priority a bool": (jobs.noop, {"priority": True}, "whole number"),
    "unknown queue": (jobs.noop, {"queue": "nope"}, "unknown queue 'nope'"),
    "empty queue name": (jobs.noop, {"queue": ""}, "queue"),
    "unknown option": (jobs.noop, {"prority": 5}, "unknown job option prority"),
    "max_attempts zero": (jobs.noop, {"max_attempts": 0}, "max_attempts"),
    "max_attempts a float": (jobs.noop, {"max_attempts": 2.0}, "max_attempts"),
    "max_attempts a bool": (jobs.noop, {"max_attempts": True}, "max_attempts"),
    "max_attempts past 32 bits": (jobs.noop, {"max_attempts": 2**31}, "2,147,483,647"),
    "timeout negative": (jobs.noop, {"timeout": -1}, "timeout"),
    "unique_key not a string": (jobs.noop, {"unique_key": 5}, "unique_key"),
    "args not a list": (jobs.echo, {"args": "abc"}, "args must be a list"),
}


def call_api(how, func, **call):
    """Every public way to store a job, so each bad input is checked on every path."""
    if how == "enqueue":
        return background.enqueue(func, **call)
    if how == "defer":
        return background.defer(func, when=datetime.timedelta(seconds=60), **call)
    if how == "aenqueue":
        return async_to_sync(background.aenqueue)(func, **call)
    if how == "adefer":
        return async_to_sync(background.adefer)(func, when=datetime.timedelta(seconds=60), **call)
    if how == "enqueue_many":
        args, kwargs = call.pop("args", []), call.pop("kwargs", {})
        return background.enqueue_many([(jobs.noop, [], {}), (func, args, kwargs)], **call)
    raise AssertionError(how)


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["enqueue", "defer", "aenqueue", "adefer", "enqueue_many"])
@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_invalid_job_and_writes_nothing(how, case):
    func, call, message = BAD_CALLS[case]
    with pytest.raises(InvalidJob, match=message):
        call_api(how, func, **call)
    assert status_counts() == {}


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["defer", "adefer"])
def test_a_naive_when_under_use_tz_raises_invalid_job_and_writes_nothing(how):
    call = background.defer if how == "defer" else async_to_sync(background.adefer)
    with pytest.raises(InvalidJob, match="naive"):
        call(jobs.noop, when=NAIVE)
    with pytest.raises(InvalidJob, match="datetime or a timedelta"):
        call(jobs.noop, when="2030-01-01T00:00:00Z")
    assert status_counts() == {}


@pytest.mark.django_db
def test_enqueue_many_writes_nothing_when_any_job_is_bad():
    with pytest.raises(InvalidJob, match=r"args\[0\]"):
        background.enqueue_many([(jobs.add, [1, 2], {})] * 3 + [(jobs.echo, [object()], {})])
    assert status_counts() == {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_transaction", [False, True])
@pytest.mark.parametrize("bad", [1, 11_000])
def test_a_bad_job_deep_in_a_bulk_enqueue_writes_nothing_though_earlier_ones_were_sent(
    in_transaction, bad
):
    # 12,000 jobs: on PostgreSQL job 1 is prepared while the ids are reserved, and
    # by job 11,000 the first chunks of the COPY (5,000 rows each) have gone to
    # the server.
    calls = [(jobs.echo, [n, "x"], {}) for n in range(12_000)]
    calls[bad] = (jobs.echo, [bad, object()], {})
    with transaction.atomic() if in_transaction else contextlib.nullcontext():
        with pytest.raises(InvalidJob, match=rf"job {bad} of enqueue_many: args\[1\]"):
            background.enqueue_many(calls)
        # The caller's transaction is still usable, and nothing of the call is in it.
        assert status_counts() == {}
        background.enqueue(jobs.noop)
    assert status_counts() == {"ready": 1}


@pytest.mark.django_db(transaction=True)
def test_arguments_whose_encoding_reads_the_database_go_in_a_big_bulk_enqueue():
    # Job 5,500 comes after the first chunk: on PostgreSQL the COPY is open by
    # then, and its connection can run no query. Encoding happens before.
    Event.objects.create(name="one")
    calls = [(jobs.echo, [n], {}) for n in range(6_000)]
    calls[5_500] = (jobs.echo, [jobs.EventCount()], {})
    refs = background.enqueue_many(calls)
    assert status_counts() == {"ready": 6_000}
    if not JOBS_IN_REDIS:  # stored as the count when it was encoded
        assert Job.objects.get(pk=refs[5_500].id).args[0]["v"] == [
            "tests.testapp.jobs.EventCount",
            1,
        ]


@pytest.mark.django_db(transaction=True)
def test_a_bulk_enqueue_keeps_the_arguments_as_they_were_when_called():
    # On Redis the jobs are written when the transaction commits: a list the
    # caller changes meanwhile must not change the job (nor break its signature).
    args = [1, "one"]
    with transaction.atomic():
        refs = background.enqueue_many([(jobs.echo, args, {})] * 2)
        args[0] = 2
    run_jobs()
    assert [ref.refresh().result for ref in refs] == [{"args": [1, "one"], "kwargs": {}}] * 2


@pytest.mark.django_db
def test_a_bad_job_in_a_unique_bulk_enqueue_writes_nothing():
    calls = [(jobs.echo, [1], {}), (jobs.echo, [object()], {}), (jobs.echo, [3], {})]
    with pytest.raises(InvalidJob, match=r"job 1 of enqueue_many: args\[0\]"):
        background.enqueue_many(calls, unique_key="nightly")
    assert status_counts() == {}


def test_invalid_job_is_a_value_error():
    assert issubclass(InvalidJob, ValueError)
    assert issubclass(NotSupported, NotImplementedError)


# -- ImmediateBackend parity -----------------------------------------------------------------------

PARITY_CASES = [
    (jobs.add, [2, 3], {}),
    (jobs.add, ["a", "b"], {}),
    (jobs.add, [(1, 2), (3,)], {}),
    (jobs.add, [datetime.date(2024, 2, 28), datetime.timedelta(days=1)], {}),
    (
        jobs.echo,
        [{1: "one", (2, 3): {4, 5}}],
        {"when": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)},
    ),
    (jobs.async_add, [1.5, 2.25], {}),
    (jobs.decorated_add, [[1], [2]], {}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("func", "args", "kwargs"), PARITY_CASES)
def test_database_backend_gives_the_result_the_immediate_backend_gives(func, args, kwargs):
    stored = background.enqueue(func, args=args, kwargs=kwargs)
    run_jobs()
    stored.refresh()
    with override_settings(PGJOBS=IMMEDIATE):
        in_band = background.enqueue(func, args=args, kwargs=kwargs)
    assert stored.status == in_band.status == records.SUCCEEDED
    assert stored.result == in_band.result
    assert type(stored.result) is type(in_band.result)


@pytest.mark.django_db
def test_both_backends_fail_the_same_way():
    stored = background.enqueue(jobs.fail_always, args=["same"], max_attempts=1)
    run_jobs()
    stored.refresh()
    with override_settings(PGJOBS=IMMEDIATE), pytest.raises(RuntimeError) as excinfo:
        background.enqueue(jobs.fail_always, args=["same"])
    assert (
        stored.error["type"]
        == "builtins.RuntimeError"
        == f"builtins.{type(excinfo.value).__name__}"
    )
    assert stored.error["message"] == str(excinfo.value)
