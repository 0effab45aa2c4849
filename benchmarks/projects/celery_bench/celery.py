"""The Celery app, configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "celery_bench.settings")

app = Celery("celery_bench", include=["celery_bench.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
