"""Django's tasks framework through ``CeleryBackend``: ``PgJobsBackend`` publishes tasks
as pgjobs jobs, a real Celery worker runs them, and their results are read back.

Integration pass only (``pytest --ds=tests.wagtail_settings``, which sets ``TASKS``),
on PostgreSQL; see ``tests/test_celery.py`` for the services it needs.
"""

import pytest
from django.conf import settings

if "pgjobs.django_tasks" not in str(getattr(settings, "TASKS", "")):
    pytest.skip(
        "integration pass only: pytest --ds=tests.wagtail_settings", allow_module_level=True
    )

from tests.conftest import VENDOR, wait_for  # noqa: E402
from tests.test_celery import celery_backend, services, start_celery  # noqa: E402, F401
from tests.testapp.models import Event  # noqa: E402

pytestmark = pytest.mark.skipif(
    VENDOR != "postgres",
    reason="CeleryBackend is tested once, in the PostgreSQL pass",
)


def test_tasks_run_in_a_celery_worker_and_report_back(start_celery):  # noqa: F811
    from tests.wagtailapp import tasks

    start_celery()
    result = tasks.add.enqueue(2, 3)
    assert result.id

    def finished():
        got = tasks.add.get_result(result.id)
        return got if got.status.name in ("SUCCESSFUL", "SUCCEEDED", "FAILED") else None

    got = wait_for(finished, timeout=30)
    assert got.status.name in ("SUCCESSFUL", "SUCCEEDED"), got.errors
    assert got.return_value == 5
    names = set(Event.objects.values_list("name", flat=True))
    assert any(name.startswith("task_finished:") for name in names), names
