"""The Celery app of ``tests/test_celery.py``: a site's ``proj/celery.py``.

JSON only (no pickle), late acknowledgement, Celery's default prefetch (with one
message per worker process the solo pool stalled: see ``CeleryWorker`` in
``tests/test_celery.py``), results in Redis (``tests.celery_settings.RESULT_URL``).
The task that runs pgjobs jobs is found as a site's would be:
``autodiscover_tasks()`` imports ``pgjobs.tasks``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.celery_settings")

from tests.celery_settings import BROKER_URL, RESULT_URL  # noqa: E402

app = Celery("pgjobs_tests")
app.conf.update(
    broker_url=BROKER_URL,
    result_backend=RESULT_URL,
    result_extended=True,
    result_expires=600,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()
