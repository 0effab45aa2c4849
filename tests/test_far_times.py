"""Run times Python cannot hold: a ``run_at`` of ``'infinity'`` or ``'-infinity'``
written by hand on PostgreSQL (psycopg cannot turn it into a ``datetime``), and the
year 9999 that every database holds. The Django admin's listing and detail and
``pgjobs_status`` must show them (issue 20); the Wagtail pages are covered in
``tests/test_wagtail.py``.
"""

import datetime
import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from pgjobs import background
from pgjobs.models import Job
from tests.conftest import JOBS_IN_REDIS, VENDOR
from tests.testapp import jobs

pytestmark = pytest.mark.skipif(JOBS_IN_REDIS, reason="DatabaseBackend only: rows in SQL")
POSTGRES_ONLY = pytest.mark.skipif(
    VENDOR != "postgres", reason="only PostgreSQL has 'infinity' timestamps"
)
CHANGELIST = reverse("admin:pgjobs_job_changelist")
YEAR_9999 = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


def job_in_year_9999():
    """A ready job due at the end of the year 9999, written by hand: ``defer``
    refuses times that late."""
    job_id = background.enqueue(jobs.add, args=[1, 2]).id
    Job.objects.filter(pk=job_id).update(run_at=YEAR_9999)
    return job_id


def job_with_run_at(sql_value):
    """A ready job whose ``run_at`` is set with raw SQL to ``sql_value``."""
    job_id = background.enqueue(jobs.add, args=[1, 2]).id
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE pgjobs_job SET run_at = {sql_value} WHERE id = %s",  # noqa: S608
            [job_id],
        )
    return job_id


@pytest.fixture
def admin_client(db, client):
    client.force_login(User.objects.create(username="admin", is_staff=True, is_superuser=True))
    return client


def assert_admin_pages_show(admin_client, job_id, text):
    listing = admin_client.get(CHANGELIST)
    assert listing.status_code == 200
    assert text in listing.content.decode()
    detail = admin_client.get(reverse("admin:pgjobs_job_change", args=[job_id]))
    assert detail.status_code == 200
    assert text in detail.content.decode()


@POSTGRES_ONLY
@pytest.mark.parametrize(("sql", "shown"), [("'infinity'", "never"), ("'-infinity'", "any time")])
def test_the_django_admin_shows_infinite_run_times(admin_client, sql, shown):
    job_id = job_with_run_at(sql)
    assert_admin_pages_show(admin_client, job_id, shown)


def test_the_django_admin_shows_the_year_9999(admin_client):
    job_id = job_in_year_9999()
    assert_admin_pages_show(admin_client, job_id, "9999")


def pgjobs_status(*args):
    out = io.StringIO()
    call_command("pgjobs_status", *args, stdout=out)
    return out.getvalue()


@POSTGRES_ONLY
@pytest.mark.django_db
@pytest.mark.parametrize("sql", ["'infinity'", "'-infinity'"])
def test_pgjobs_status_prints_infinite_run_times(sql):
    job_with_run_at(sql)
    assert "default" in pgjobs_status()
    assert '"queue": "default"' in pgjobs_status("--json")


@pytest.mark.django_db
def test_pgjobs_status_prints_the_year_9999():
    job_in_year_9999()
    assert "default" in pgjobs_status()
