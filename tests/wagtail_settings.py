"""Settings for the integration pass: Wagtail, Django's tasks framework and the
``pgjobs.contrib.wagtail`` admin views, over the same databases as ``tests.settings``.

Run as ``pytest --ds=tests.wagtail_settings tests/test_django_tasks.py tests/test_wagtail.py``
(``make test`` does). A pass of its own, so the core suite's transactional tests do not
flush Wagtail's tables after every test. Tables are made from the models, without
migrations: Wagtail's hundred-odd migrations would cost more than the tests.
"""

from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS, PGJOBS, VENDOR


class _NoMigrations:
    """``MIGRATION_MODULES`` that makes every app's tables from its models."""

    def __contains__(self, app_label):
        return True

    def __getitem__(self, app_label):
        return None


MIGRATION_MODULES = _NoMigrations()

INSTALLED_APPS = [
    *INSTALLED_APPS,
    "pgjobs.contrib.wagtail",
    "tests.wagtailapp",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.sites",
    "wagtail.admin",
    "wagtail",
    "wagtail.search",
    "modelcluster",
    "taggit",
    "django.contrib.staticfiles",
]
if VENDOR == "postgres":  # Wagtail's search index uses its full-text fields there
    INSTALLED_APPS.append("django.contrib.postgres")
ROOT_URLCONF = "tests.wagtail_urls"
WAGTAIL_SITE_NAME = "pgjobs tests"
WAGTAILADMIN_BASE_URL = "http://testserver"
STATIC_URL = "/static/"

PGJOBS = {**PGJOBS, "OPTIONS": {**PGJOBS["OPTIONS"], "QUEUES": ["default", "other"]}}
TASKS = {
    "default": {
        "BACKEND": "pgjobs.django_tasks.PgJobsBackend",
        "QUEUES": ["default", "other"],
    }
}
LANGUAGE_CODE = "en"
WAGTAILADMIN_COMMENTS_ENABLED = False
