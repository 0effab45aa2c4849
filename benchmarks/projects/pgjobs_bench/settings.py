"""Django settings for measuring pgjobs (DatabaseBackend on PostgreSQL)."""

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["pgjobs", "pgjobs_bench"]  # noqa: F405

PGJOBS = {"BACKEND": "pgjobs.backends.DatabaseBackend", "OPTIONS": {}}
