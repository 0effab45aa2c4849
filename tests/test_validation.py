"""Bad input from code and from ``manage.py pgjobs_enqueue`` (issue 20): every refusal is
one line that names the argument and says how to fix it, and writes nothing. Also which
modules may hold jobs (``PGJOBS["JOB_MODULES"]``), enforced at enqueue, in the worker
and by ``manage.py check``."""

import datetime
import io
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core import checks
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from pgjobs import InvalidJob, background, records
from pgjobs.conf import job_modules
from pgjobs.handler import get_backend
from pgjobs.serialization import (
    MAX_DEPTH,
    decode_arguments,
    encode_arguments,
    job_module_problem,
    load_function,
    sign_job,
)
from tests.conftest import JOBS_IN_REDIS, run_jobs, status_counts
from tests.testapp import jobs

pytestmark = pytest.mark.django_db


def job_count():
    return sum(status_counts().values())


def refused(call, *names):
    """Run ``call``; it must raise a one-line ``InvalidJob`` naming each of ``names``,
    and leave no job behind. Returns the message."""
    before = job_count()
    with pytest.raises(InvalidJob) as excinfo:
        call()
    message = str(excinfo.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, (name, message)
    assert job_count() == before
    return message


def command_refused(*args):
    """``pgjobs_enqueue`` with ``args`` must fail with a one-line ``CommandError``."""
    before = job_count()
    with pytest.raises(CommandError) as excinfo:
        call_command("pgjobs_enqueue", *args, stdout=io.StringIO())
    message = str(excinfo.value)
    assert "\n" not in message and len(message) < 400, message
    assert job_count() == before
    return message


# -- 1. timeout and --delay ---------------------------------------------------------------


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), float("-inf"), -1, 0, 1e30])
def test_a_timeout_that_is_not_a_sane_number_of_seconds_is_refused(timeout):
    message = refused(lambda: background.enqueue(jobs.noop, timeout=timeout), "timeout")
    assert "seconds" in message


def test_a_timeout_of_a_day_is_accepted():
    assert background.enqueue(jobs.noop, timeout=86400.0).refresh().status == records.READY


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_the_enqueue_command_refuses_a_bad_timeout(value):
    assert "timeout" in command_refused("tests.testapp.jobs.noop", "--timeout", value)


@pytest.mark.parametrize("value", ["nan", "1e30", "inf", "-inf", "1e13"])
def test_the_enqueue_command_refuses_a_delay_it_cannot_count(value):
    assert "--delay" in command_refused("tests.testapp.jobs.noop", "--delay", value)


def test_the_enqueue_command_refuses_a_number_python_will_not_read():
    message = command_refused("tests.testapp.jobs.echo", "--args", f"[{'9' * 5000}]")
    assert "--args" in message and "digits" in message


def test_the_enqueue_command_refuses_json_nested_deeper_than_python_reads():
    assert "--args" in command_refused("tests.testapp.jobs.echo", "--args", "[" * 3000 + "]" * 3000)


def test_an_integer_too_long_for_json_readers_is_refused_from_code():
    refused(lambda: background.enqueue(jobs.echo, args=[10**5000]), "args[0]", "digits")
    refused(lambda: background.enqueue(jobs.echo, kwargs={"n": -(10**5000)}), "kwargs['n']")


# -- 2. when --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        datetime.timedelta.max,
        datetime.timedelta.min,
        datetime.timedelta(days=9_000 * 366),
        datetime.datetime.max.replace(tzinfo=datetime.UTC),
        datetime.datetime(9999, 12, 31, 20, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
        datetime.datetime.min.replace(tzinfo=datetime.UTC),
    ],
    ids=[
        "timedelta-max",
        "timedelta-min",
        "9000-years",
        "datetime-max",
        "max-west",
        "datetime-min",
    ],
)
def test_a_when_out_of_the_databases_range_is_refused(when):
    refused(lambda: background.defer(jobs.noop, when), "when")


def test_defer_with_when_none_is_refused_naming_when():
    message = refused(lambda: background.defer(jobs.noop, None), "when")
    assert "enqueue()" in message


def test_adefer_with_when_none_is_refused_naming_when():
    from asgiref.sync import async_to_sync

    refused(lambda: async_to_sync(background.adefer)(jobs.noop, None), "when")


def test_a_when_a_thousand_years_ahead_is_accepted():
    when = timezone.now() + datetime.timedelta(days=365 * 1000)
    assert background.defer(jobs.noop, when).refresh().status == records.READY


# -- 3. nesting -----------------------------------------------------------------------------


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def test_an_argument_that_refers_to_itself_is_refused():
    loop = []
    loop.append(loop)
    message = refused(lambda: background.enqueue(jobs.echo, args=[1, loop]), "args[1]")
    assert "refers to itself" in message
    cyclic = {"a": {}}
    cyclic["a"]["b"] = cyclic
    message = refused(lambda: background.enqueue(jobs.echo, kwargs={"data": cyclic}), "kwargs")
    assert "refers to itself" in message and "data" in message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3000, 100_000])
def test_an_argument_nested_too_deep_is_refused(depth):
    message = refused(lambda: background.enqueue(jobs.echo, args=[nested(depth)]), "args[0]")
    assert f"deeper than {MAX_DEPTH} levels" in message
    refused(lambda: background.enqueue(jobs.echo, args=[(nested(depth),)]), "args[0]")


def test_nesting_up_to_the_limit_is_accepted_and_decodes():
    args, kwargs = encode_arguments([nested(MAX_DEPTH - 1)], {})
    assert decode_arguments(args, kwargs) == ([nested(MAX_DEPTH - 1)], {})
    # The deepest list may hold values that travel tagged.
    deepest = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC), "nul\x00", b"bytes"]
    value = deepest
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    args, kwargs = encode_arguments([], {"value": value})
    assert decode_arguments(args, kwargs) == ([], {"value": value})


def test_stored_arguments_nested_deeper_than_the_limit_are_not_decoded():
    with pytest.raises(InvalidJob, match=f"deeper than {MAX_DEPTH} levels"):
        decode_arguments([nested(MAX_DEPTH + 5)], {})


def test_an_encode_hook_that_returns_itself_is_refused():
    class Loops:
        def __pgjobs_encode__(self):
            return self

    refused(lambda: background.enqueue(jobs.echo, args=[Loops()]), "args[0]")


# -- 4. queue names -------------------------------------------------------------------------


@pytest.fixture
def any_queue(settings):
    settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": {**settings.PGJOBS["OPTIONS"], "QUEUES": []}}


@pytest.mark.parametrize(
    ("queue", "words"),
    [
        ("q" * 101, ["queue", "100 characters"]),
        ("", ["queue", "non-empty"]),
        (7, ["queue", "string"]),
        (b"default", ["queue", "string"]),
        ("nul\x00queue", ["queue"]),
    ],
    ids=["101-chars", "empty", "int", "bytes", "nul"],
)
def test_a_queue_name_the_database_cannot_hold_is_refused(any_queue, queue, words):
    refused(lambda: background.enqueue(jobs.noop, queue=queue), *words)
    refused(lambda: background.enqueue_many([(jobs.noop, [], {})], queue=queue), *words)


def test_a_queue_name_of_100_characters_is_accepted(any_queue):
    assert background.enqueue(jobs.noop, queue="q" * 100).refresh().queue == "q" * 100


def test_a_unique_key_the_database_cannot_hold_is_refused():
    refused(lambda: background.enqueue(jobs.noop, unique_key="a\x00b"), "unique_key")


# -- 5. which modules may hold jobs -----------------------------------------------------------


@pytest.mark.parametrize(
    "func",
    ["os.system", "builtins.eval", "subprocess.call", "shutil.rmtree", "subprocess.Popen"],
)
def test_stdlib_functions_by_dotted_path_are_refused(func):
    refused(lambda: background.enqueue(func, args=["true"]), func, "JOB_MODULES")


@pytest.mark.parametrize("func", [os.system, eval, subprocess.call, subprocess.Popen])
def test_stdlib_functions_as_objects_are_refused(func):
    refused(lambda: background.enqueue(func, args=["true"]), func.__name__)


def test_a_path_counts_only_if_the_functions_own_module_is_a_job_module_too():
    """``os.path.join`` is ``posixpath.join``: listing ``os.path`` does not list it."""
    with override_settings(PGJOBS={**background_settings(), "JOB_MODULES": ["tests", "os.path"]}):
        refused(lambda: background.enqueue("os.path.join", args=["a"]), "posixpath", "JOB_MODULES")
    refused(lambda: background.enqueue("tests.testapp.jobs.time"), "tests.testapp.jobs.time")
    refused(lambda: background.enqueue("tests.testapp.jobs.IntegrityError"), "django.db")


def test_functions_of_the_sites_apps_are_accepted_by_path_and_as_objects():
    assert background.enqueue("tests.testapp.jobs.add", args=[1, 2]).refresh().func == (
        "tests.testapp.jobs.add"
    )
    assert background.enqueue(jobs.add, args=[1, 2]).refresh().func == "tests.testapp.jobs.add"


def background_settings():
    return dict(settings.PGJOBS)


def test_the_default_job_modules_are_the_installed_apps_and_pgjobs():
    with override_settings(
        PGJOBS={k: v for k, v in background_settings().items() if k != "JOB_MODULES"}
    ):
        modules = job_modules()
        assert "tests.testapp" in modules and "pgjobs" in modules
        assert "django.contrib.auth" in modules
        assert not {"os", "subprocess", "shutil", "builtins", "tests"} & set(modules)
        refused(lambda: background.enqueue("os.system", args=["true"]), "JOB_MODULES")
        assert background.enqueue(jobs.noop).refresh().status == records.READY


def test_the_default_covers_the_packages_an_apps_config_derives_from():
    """wagtail.search's AppConfig derives from modelsearch's, and Wagtail enqueues
    modelsearch's tasks: the default must let them through."""
    pytest.importorskip("wagtail")
    default = {k: v for k, v in background_settings().items() if k != "JOB_MODULES"}
    apps = [*settings.INSTALLED_APPS, "wagtail.search"]
    with override_settings(PGJOBS=default, INSTALLED_APPS=apps):
        assert {"wagtail.search", "modelsearch"} <= set(job_modules())
        assert job_module_problem("modelsearch.tasks.insert_or_update_object_task") is None
    assert "modelsearch" not in job_modules()
    assert "JOB_MODULES" in job_module_problem("modelsearch.tasks.insert_or_update_object_task")


def test_a_listed_module_prefix_covers_its_submodules_only_at_a_dot():
    with override_settings(PGJOBS={**background_settings(), "JOB_MODULES": ["tests.test"]}):
        # "tests.testapp" starts with "tests.test" but is another module.
        refused(lambda: background.enqueue(jobs.noop), "tests.testapp.jobs.noop", "JOB_MODULES")


def test_job_modules_must_be_a_list_of_module_names():
    with override_settings(PGJOBS={**background_settings(), "JOB_MODULES": "tests"}):
        refused(lambda: background.enqueue(jobs.noop), "JOB_MODULES")


@pytest.mark.django_db(transaction=True)
def test_a_signed_row_naming_os_system_fails_in_the_worker_without_running(tmp_path):
    marker = tmp_path / "ran"
    args = [f"touch {marker}"]
    ok = background.enqueue(jobs.add, args=[1, 2])
    if JOBS_IN_REDIS:
        pytest.skip("a row written by hand is a DatabaseBackend row")
    from pgjobs.models import Job

    row = Job.objects.create(
        func="os.system",
        args=args,
        kwargs={},
        queue="default",
        signature=sign_job("os.system", args, {}, "default"),
    )
    run_jobs()
    row.refresh_from_db()
    assert (row.status, row.attempts) == (records.FAILED, 1), row.error
    assert row.error["type"] == "pgjobs.exceptions.InvalidJob"
    assert "JOB_MODULES" in row.error["message"], row.error
    assert not marker.exists(), "os.system was called"
    assert ok.refresh().result == 3


def test_load_function_refuses_a_module_outside_job_modules_before_importing_it():
    name = "tests.testapp.never_imported_job_module"
    with pytest.raises(InvalidJob, match="JOB_MODULES"):
        with override_settings(
            PGJOBS={**background_settings(), "JOB_MODULES": ["tests.testapp.jobs"]}
        ):
            load_function(f"{name}.run")
    assert name not in sys.modules


def test_check_reports_schedule_entries_outside_job_modules():
    hourly = datetime.timedelta(hours=1)
    config = {
        **background_settings(),
        "JOB_MODULES": ["tests.testapp"],
        "SCHEDULE": {
            "nightly": {"func": "tests.testapp.jobs.noop", "every": hourly},
            "spawn": {"func": "subprocess.call", "args": [["true"]], "every": hourly},
            "shell": {"func": "os.system", "args": ["true"], "every": hourly},
        },
    }
    with override_settings(PGJOBS=config):
        messages = [m for m in checks.run_checks() if m.id and m.id.startswith("pgjobs.")]
    assert [m.id for m in messages] == ["pgjobs.E014", "pgjobs.E008"], messages
    assert "subprocess.call" in messages[0].msg and "JOB_MODULES" in messages[0].hint
    assert "builtin" in messages[1].msg  # refused whatever JOB_MODULES says


def test_check_reports_a_job_modules_setting_that_is_not_a_list_of_names():
    with override_settings(PGJOBS={**background_settings(), "JOB_MODULES": ["ok", ""]}):
        messages = [m for m in checks.run_checks() if m.id and m.id.startswith("pgjobs.")]
    assert [m.id for m in messages] == ["pgjobs.E014"], messages


# -- options in the settings ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["TIMEOUT", "RETRY_DELAY", "RETRY_MAX_DELAY", "LEASE_SECONDS"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_backend_option_that_is_not_a_finite_number_is_refused(key, value):
    from pgjobs import InvalidBackend

    backend_class = type(get_backend())
    with pytest.raises(InvalidBackend, match=key):
        backend_class({**settings.PGJOBS["OPTIONS"], key: value})
