"""Settings for the pgjobs example site: a small Wagtail site whose background work,
Wagtail's own tasks included, runs in pgjobs workers.

The database is a SQLite file beside this project unless ``DATABASE_URL`` names
another one: ``postgres://user@host:port/name`` or ``mysql://user:pass@host/name``.
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("SECRET_KEY", "pgjobs-example-not-secret")
DEBUG = os.environ.get("DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"


def database_from_url(url):
    """A DATABASES entry from a URL, so the demo runs on any supported database."""
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "example.sqlite3",
            # WAL lets web requests enqueue while a worker claims; the timeout
            # makes writers wait for each other instead of failing. synchronous=NORMAL
            # is safe in WAL mode and spares an fsync per commit (migrations: dozens).
            "OPTIONS": {
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
                "transaction_mode": "IMMEDIATE",
            },
        }
    parts = urlparse(url)
    engines = {
        "postgres": "django.db.backends.postgresql",
        "postgresql": "django.db.backends.postgresql",
        "mysql": "django.db.backends.mysql",
        "mariadb": "django.db.backends.mysql",
    }
    if parts.scheme not in engines:
        raise ValueError(f"DATABASE_URL scheme must be one of {', '.join(engines)}: {url!r}")
    return {
        "ENGINE": engines[parts.scheme],
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


DATABASES = {"default": database_from_url(os.environ.get("DATABASE_URL"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "demoapp",
    "pgjobs",
    "pgjobs.contrib.wagtail",  # the "Jobs" menu item in the Wagtail admin
    "wagtail.sites",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    INSTALLED_APPS.append("django.contrib.postgres")  # Wagtail's full-text search there
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = BASE_DIR / "media"

WAGTAIL_SITE_NAME = "pgjobs example"
WAGTAILADMIN_BASE_URL = os.environ.get("WAGTAILADMIN_BASE_URL", "http://localhost:8000")

# pgjobs: jobs in the site's database, worked by `manage.py pgjobs_worker`.
PGJOBS = {
    "BACKEND": "pgjobs.backends.DatabaseBackend",
    "OPTIONS": {"QUEUES": ["default", "emails", "hooks"], "RETRY_DELAY": 0.5},
    # pgjobs.contrib.wagtail: renditions a worker makes as soon as an image is uploaded.
    "WAGTAIL_RENDITIONS": ["fill-400x300", "width-200|format-webp"],
}
# E-mail leaves the request: a worker sends each message through the real backend,
# here files in sent-mail/ (SMTP, Django's default, on a real site).
EMAIL_BACKEND = "pgjobs.contrib.mail.EmailBackend"
PGJOBS_EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = BASE_DIR / "sent-mail"
# Django's tasks framework, and so Wagtail's own tasks (reference index, search
# index, ...), on pgjobs: saving a page enqueues them instead of running them.
TASKS = {"default": {"BACKEND": "pgjobs.django_tasks.PgJobsBackend", "QUEUES": ["default"]}}
