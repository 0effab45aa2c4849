"""System checks (``pgjobs/checks.py``): each misconfiguration has a stable id that
``manage.py check`` shows."""

import contextlib
import signal

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test import override_settings

from tests.conftest import VENDOR

IMMEDIATE = "pgjobs.backends.ImmediateBackend"
DATABASE = "pgjobs.backends.DatabaseBackend"


def pgjobs_messages():
    # Only pgjobs' checks: Django's model checks query SQLite for JSON support,
    # which these database-free tests may not do.
    messages = checks.run_checks(tags=["pgjobs"])
    assert all(m.id.startswith("pgjobs.") for m in messages), messages
    return messages


def ids(config=None, **settings):
    with override_settings(**({"PGJOBS": config} if config is not None else {}), **settings):
        return sorted({m.id for m in pgjobs_messages()})


@pytest.mark.parametrize(
    "config",
    [
        {"BACKEND": DATABASE, "OPTIONS": {"QUEUES": ["default", "other"]}},
        {"BACKEND": IMMEDIATE},
        {},
        {"BACKEND": "tests.testapp.backends.EnqueueOnlyBackend", "OPTIONS": {"ANY": "thing"}},
        {"BACKEND": DATABASE, "SCHEDULE": {}},
    ],
)
def test_good_settings_pass(config):
    assert ids(config) == []


@pytest.mark.parametrize(
    "backend",
    [
        "no.such.module.Backend",
        "pgjobs.backends.NoSuchBackend",
        "tests.testapp.jobs.add",
        "os.path",
    ],
)
def test_e001_backend_that_cannot_be_imported_or_is_not_a_backend(backend):
    with override_settings(PGJOBS={"BACKEND": backend}):
        (message,) = pgjobs_messages()
    assert message.id == "pgjobs.E001"
    assert backend in message.msg
    assert isinstance(message, checks.Error)


@pytest.mark.parametrize(
    "options",
    [
        {"NOT_AN_OPTION": 1},
        {"MAX_ATTEMPTS": 0},
        {"MAX_ATTEMPTS": "3"},
        {"RETRY_DELAY": -1},
        {"LEASE_SECONDS": 0},
        {"DATABASE": "nope"},
    ],
)
def test_e002_options_the_backend_does_not_accept(options):
    assert ids({"BACKEND": DATABASE, "OPTIONS": options}) == ["pgjobs.E002"]


def test_e002_unknown_option_on_the_immediate_backend():
    assert ids({"BACKEND": IMMEDIATE, "OPTIONS": {"POLL_INTERVAL": 1}}) == ["pgjobs.E002"]


def test_e002_names_the_unknown_option():
    with override_settings(PGJOBS={"BACKEND": DATABASE, "OPTIONS": {"NOT_AN_OPTION": 1}}):
        (message,) = pgjobs_messages()
    assert "NOT_AN_OPTION" in message.msg


@pytest.mark.parametrize(
    "queues", ["default", [""], [1], ["x" * 101], [None], {"default": 1}.keys()]
)
def test_e003_bad_queue_names(queues):
    assert ids({"BACKEND": DATABASE, "OPTIONS": {"QUEUES": queues}}) == ["pgjobs.E003"]


def test_e004_schedule_on_a_backend_that_cannot_defer():
    config = {"BACKEND": IMMEDIATE, "SCHEDULE": {"nightly": {"func": "tests.testapp.jobs.noop"}}}
    with override_settings(PGJOBS=config):
        (message,) = pgjobs_messages()
    assert message.id == "pgjobs.E004"
    assert "ImmediateBackend" in message.msg


def test_wagtail_jobs_is_checked_when_pgjobs_is_absent(settings):
    del settings.PGJOBS
    settings.WAGTAIL_JOBS = {"BACKEND": "no.such.Backend"}
    (message,) = pgjobs_messages()
    assert message.id == "pgjobs.E001"
    assert "WAGTAIL_JOBS" in message.msg


def test_e006_setting_that_is_not_a_dict_or_has_unknown_keys():
    assert ids("pgjobs.backends.DatabaseBackend") == ["pgjobs.E006"]
    assert ids({"BACKEND": DATABASE, "OPTION": {}}) == ["pgjobs.E006"]


def test_manage_py_check_reports_the_error():
    with override_settings(PGJOBS={"BACKEND": "no.such.Backend"}):
        with pytest.raises(SystemCheckError, match="pgjobs.E001"):
            call_command("check", "--tag", "pgjobs")


# -- pgjobs.W003, a database check: it asks the database itself --------------------


def database_messages():
    """What ``migrate`` and ``check --database default`` add to the checks."""
    return [m for m in checks.run_checks(databases=["default"]) if m.id.startswith("pgjobs.")]


def server_has_autovacuum():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('autovacuum')::bool")
        return cursor.fetchone()[0]


@contextlib.contextmanager
def job_table_autovacuum(enabled):
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE pgjobs_job SET (autovacuum_enabled = {enabled})")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE pgjobs_job RESET (autovacuum_enabled)")


@pytest.mark.django_db
def test_w003_says_why_autovacuum_will_not_reclaim_the_job_table():
    if VENDOR != "postgres":
        pytest.skip("only PostgreSQL has autovacuum")
    with job_table_autovacuum("false"):
        (warning,) = database_messages()
    assert warning.id == "pgjobs.W003"
    assert "the pgjobs_job table has autovacuum_enabled = false" in warning.msg
    assert "ALTER TABLE pgjobs_job RESET (autovacuum_enabled)" in warning.hint
    # The server's own setting is reported as it is (this machine's CI config may
    # turn it off); a table that allows autovacuum adds nothing to it.
    with job_table_autovacuum("true"):
        messages = database_messages()
    if server_has_autovacuum():
        assert messages == []
    else:
        (warning,) = messages
        assert "the server has autovacuum = off" in warning.msg
        assert "autovacuum_enabled" not in warning.msg


@pytest.mark.django_db
def test_w003_needs_the_database_asked_about():
    """A database check: ``manage.py check`` alone does not query the database."""
    if VENDOR != "postgres":
        assert [m.id for m in database_messages()] == [], "no autovacuum to ask about"
        return
    with job_table_autovacuum("false"):
        assert [m.id for m in database_messages()] == ["pgjobs.W003"]
        plain = checks.run_checks()
        assert "pgjobs.W003" not in {m.id for m in plain}


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_w003_is_logged_when_a_worker_starts(start_worker):
    if VENDOR != "postgres":
        pytest.skip("only PostgreSQL has autovacuum")
    with job_table_autovacuum("false"):
        worker = start_worker("--concurrency", "1")
        worker.wait_for_output("Stop with Ctrl-C or SIGTERM.")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.output()
    assert "(pgjobs.W003)" in worker.stderr
    assert "autovacuum_enabled = false" in worker.stderr


# -- "pgjobs" left out of INSTALLED_APPS (issue 20 bug 7) ---------------------------------


def without_pgjobs():
    from django.conf import settings

    return [app for app in settings.INSTALLED_APPS if app != "pgjobs"]


@pytest.mark.django_db
def test_the_first_enqueue_without_the_app_says_what_to_do():
    """It failed with ``ProgrammingError: relation "pgjobs_job" does not exist``."""
    from pgjobs import InvalidBackend, background

    with override_settings(INSTALLED_APPS=without_pgjobs(), PGJOBS={"BACKEND": DATABASE}):
        with pytest.raises(InvalidBackend, match="'pgjobs' is not in INSTALLED_APPS") as raised:
            background.enqueue("tests.testapp.jobs.add", args=[1, 2])
    assert "\n" not in str(raised.value)


def test_the_backends_own_check_reports_the_missing_app():
    from pgjobs.checks import app_missing_checks
    from pgjobs.handler import load_backend

    with override_settings(INSTALLED_APPS=without_pgjobs()):
        backend = load_backend(DATABASE, {})
        assert [m.id for m in backend.check()] == ["pgjobs.E005"]
        with override_settings(PGJOBS={"BACKEND": IMMEDIATE}):
            assert [m.id for m in app_missing_checks()] == []  # keeps no Job rows
        with override_settings(PGJOBS={"BACKEND": DATABASE}):
            assert [m.id for m in app_missing_checks()] == ["pgjobs.E005"]
    assert app_missing_checks(backend) == []


def test_manage_py_check_reports_the_missing_app():
    """Without the app, nothing registered pgjobs' checks: ``manage.py check`` said
    "no issues" although the README promises ``pgjobs.E005``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "DJANGO_SETTINGS_MODULE": "tests.no_app_settings"}
    done = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pgjobs.E005" in done.stderr and "INSTALLED_APPS" in done.stderr
