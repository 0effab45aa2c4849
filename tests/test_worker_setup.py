"""A worker started where the store is not set up says what to do, in one line
(issue 20, "weak answers"): tables not migrated yet (it waits, saying "run
manage.py migrate" at once and then at a low rate), or a database that does not
exist (a configuration error: one line and exit status 1). Real commands, in
subprocesses, against a fresh empty database made for the test.
"""

import os
import subprocess
import sys
import uuid

import pytest
from django.db import connections

from tests.conftest import ROOT, VENDOR, WorkerProcess, wait_for

pytestmark = [
    pytest.mark.sql_store("the database's own set-up"),
    pytest.mark.slow,
    pytest.mark.django_db,
]


def command_env(db_name):
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PGJOBS_TEST_DB": VENDOR,
        "PGJOBS_TEST_DB_NAME": str(db_name),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def empty_database(tmp_path):
    """The NAME of a database that exists and holds no table."""
    if VENDOR == "sqlite":
        path = tmp_path / "empty.sqlite3"
        path.touch()
        yield str(path)
        return
    name = f"pgjobs_empty_{uuid.uuid4().hex[:10]}"
    quote = connections["default"].ops.quote_name
    with connections["default"]._nodb_cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {quote(name)}")
    try:
        yield name
    finally:
        with connections["default"]._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quote(name)}")


def missing_database(tmp_path):
    if VENDOR == "sqlite":
        return str(tmp_path / "no-such-directory" / "jobs.sqlite3")
    return f"pgjobs_missing_{uuid.uuid4().hex[:10]}"


def test_a_worker_on_an_unmigrated_database_says_to_migrate_and_keeps_saying_it(
    empty_database, tmp_path
):
    # The real command, with the reminder every half second instead of every minute.
    code = (
        "import sys, django; django.setup(); "
        "import pgjobs.worker.worker as w; w.SETUP_PROBLEM_EVERY = 0.5; "
        "from django.core.management import execute_from_command_line; "
        "execute_from_command_line(['manage.py', 'pgjobs_worker'])"
    )
    err = tmp_path / "worker.err"
    with open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=command_env(empty_database),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        said = "run manage.py migrate"
        wait_for(lambda: err.read_text().count(said) >= 3, timeout=20, message="3 reminders")
        assert process.poll() is None, "it waits for the tables"
    finally:
        process.terminate()
        process.wait(15)
    text = err.read_text()
    assert "Traceback" not in text, text
    assert "pgjobs_job" in text and "are missing from database" in text, text
    assert "store unreachable" not in text, text


def test_the_worker_command_says_it_once_at_the_default_rate(empty_database, tmp_path):
    worker = WorkerProcess("pgjobs_worker", [], command_env(empty_database), tmp_path)
    try:
        worker.wait_for_output("run manage.py migrate", stream="stderr")
        assert worker.returncode is None
    finally:
        worker.stop()
    assert worker.stderr.count("run manage.py migrate") == 1, worker.output()
    assert "Traceback" not in worker.stderr, worker.output()


@pytest.mark.parametrize("command", ["pgjobs_worker", "pgjobs_drain"])
def test_a_database_that_does_not_exist_is_one_line_and_exit_status_1(command, tmp_path):
    name = missing_database(tmp_path)
    process = WorkerProcess(command, [], command_env(name), tmp_path)
    try:
        assert process.wait(timeout=30) == 1, process.output()
    finally:
        process.kill()
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.output()
    assert "Traceback" not in process.stderr
    assert lines[0].startswith("CommandError: pgjobs: database ")
    assert f"{name!r} (DATABASES['default']) does not exist" in lines[0], lines[0]
