"""The site's Celery app: RabbitMQ broker, Redis results, JSON only, late acks."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pgjobs_celery_bench.settings")

app = Celery("pgjobs_celery_bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # finds pgjobs.tasks: the task that runs pgjobs jobs
