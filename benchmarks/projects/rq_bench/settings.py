"""Django settings for measuring RQ through django-rq (Redis database 11)."""

import os

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["django_rq", "rq_bench"]  # noqa: F405

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
RQ_QUEUES = {"default": {"URL": f"{REDIS_URL}/11"}}
