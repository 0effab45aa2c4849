"""Django settings for measuring Celery on a Redis broker (databases 12 and 13)."""

import os

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["celery_bench"]  # noqa: F405

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
CELERY_BROKER_URL = f"{REDIS_URL}/12"
# Results are kept, as the other queues keep each job's outcome; the harness
# counts them to see progress.
CELERY_RESULT_BACKEND = f"{REDIS_URL}/13"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
