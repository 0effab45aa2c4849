"""Django settings for measuring pgjobs on Celery (CeleryBackend on RabbitMQ).

The jobs are pgjobs_bench's; they are published to the RabbitMQ queue
``pgjobs-bench`` (a priority queue, x-max-priority 9) and run by ``celery worker``.
Results go to Redis database 9, where the harness counts them.
"""

import os

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["pgjobs", "pgjobs_bench"]  # noqa: F405

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
QUEUE = "pgjobs-bench"
PGJOBS = {
    "BACKEND": "pgjobs.backends.CeleryBackend",
    "OPTIONS": {"APP": "pgjobs_celery_bench.celery.app", "ROUTES": {"default": QUEUE}},
}
CELERY_BROKER_URL = AMQP_URL
CELERY_RESULT_BACKEND = f"{REDIS_URL}/9"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The harness starts every worker process with the same argv, hence the same node
# name; on RabbitMQ two workers of one name cannot both hold the remote-control
# queue (RESOURCE_LOCKED). Nothing here revokes, so remote control is off.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
