"""Django settings for measuring django-tasks-db (django-tasks' DatabaseBackend).

On Django 5.2 the tasks framework comes from the ``django-tasks`` package
(installed by ``django-tasks-db[compat]``); on Django 6 it is built in.
"""

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["django_tasks", "django_tasks_db", "dtdb_bench"]  # noqa: F405

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
