"""Test settings for the Celery worker processes of ``tests/test_celery.py``.

The test settings (``tests.settings``, or ``PGJOBS_TEST_CELERY_BASE``: the test
app's tables in the test run's database) with ``PGJOBS`` on ``CeleryBackend``. Queues and the vhost-wide names
carry a suffix of the test run's own (``PGJOBS_TEST_CELERY_RUN``, inherited by
the worker processes), so that runs side by side never share a queue.
"""

import importlib
import os

# The settings these extend: tests.settings, or the integration pass's
# tests.wagtail_settings (Django's tasks framework and Wagtail installed).
BASE = os.environ.get("PGJOBS_TEST_CELERY_BASE", "tests.settings")
globals().update({k: v for k, v in vars(importlib.import_module(BASE)).items() if k.isupper()})

BROKER_URL = os.environ.get("PGJOBS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
RESULT_URL = os.environ.get("PGJOBS_TEST_CELERY_RESULTS", "redis://127.0.0.1:6379/14")
RUN = os.environ.setdefault(
    "PGJOBS_TEST_CELERY_RUN", f"{os.environ.get('PGJOBS_TEST_RUN', os.getpid())}"
)
PGJOBS_QUEUES = ["default", "other", "prio"]


def celery_queue(queue):
    """The Celery queue of pgjobs queue ``queue`` in this run."""
    return f"pgjobs-test-{RUN}-{queue}"


def celery_jobs_setting(**options):
    return {
        "BACKEND": "pgjobs.backends.CeleryBackend",
        "OPTIONS": {
            "APP": "tests.celery_app.app",
            "QUEUES": PGJOBS_QUEUES,
            "ROUTES": {queue: celery_queue(queue) for queue in PGJOBS_QUEUES},
            "RETRY_DELAY": 0.05,
            "RETRY_MAX_DELAY": 0.2,
            **options,
        },
    }


PGJOBS = celery_jobs_setting()
# unique_key locks live in the site's cache: one that the workers share.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": RESULT_URL,
        "KEY_PREFIX": f"pgjobs-test-{RUN}",
    }
}
