"""Django settings for the test suite.

``PGJOBS_TEST_DB`` picks the database (postgres, mysql or sqlite); the worker
subprocesses the tests start inherit ``PGJOBS_TEST_DB_NAME`` so that they open the
test database pytest-django created, not the real one.
"""

import os
import tempfile

VENDOR = os.environ.get("PGJOBS_TEST_DB", "postgres")
# redis: the jobs in Redis (tests/redis_settings.py), the test app's tables in PostgreSQL.
JOBS_IN_REDIS = VENDOR == "redis"
VENDOR = "postgres" if JOBS_IN_REDIS else VENDOR
TEST_NAME = os.environ.get("PGJOBS_TEST_DB_NAME")  # set for worker subprocesses
SQLITE_DIR = os.environ.get("PGJOBS_TEST_SQLITE_DIR", tempfile.gettempdir())
# Each pytest run gets test databases of its own, so that runs side by side (two
# checkouts, two stacks, several developers on one machine) never drop each other's.
TEST_DB = f"test_pgjobs_{os.environ.get('PGJOBS_TEST_RUN', os.getpid())}"

if VENDOR == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": TEST_NAME or "pgjobs",
            "USER": os.environ.get("PGUSER", "root"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "TEST": {"NAME": TEST_DB},
        }
    }
elif VENDOR == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": TEST_NAME or "pgjobs",
            "USER": "root",
            "PASSWORD": "",
            "HOST": os.environ.get("MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("MYSQL_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {"NAME": TEST_DB, "CHARSET": "utf8mb4"},
        }
    }
elif VENDOR == "sqlite":
    # A file, not :memory:, so that worker subprocesses share it. The OPTIONS are
    # the ones pgjobs recommends (system check pgjobs.W001): WAL, so readers and
    # the writer do not wait for each other, and transactions that take the write
    # lock first, so they wait for it (up to "timeout" seconds) instead of failing.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": TEST_NAME or os.path.join(SQLITE_DIR, "pgjobs.sqlite3"),
            "TEST": {"NAME": os.path.join(SQLITE_DIR, f"{TEST_DB}.sqlite3")},
            "OPTIONS": {
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL",
                "transaction_mode": "IMMEDIATE",
            },
        }
    }
else:
    raise RuntimeError(f"PGJOBS_TEST_DB must be postgres, mysql or sqlite, not {VENDOR!r}")

# Through a private PgBouncer in transaction mode (tests/pgbouncer.py), configured as
# Django documents it; LISTEN_DATABASE "direct" LISTENs on the server itself.
PGBOUNCER_PORT = os.environ.get("PGJOBS_TEST_PGBOUNCER_PORT")
LISTEN_DATABASE = os.environ.get("PGJOBS_TEST_LISTEN_DATABASE")
if VENDOR == "postgres" and PGBOUNCER_PORT:
    DATABASES["direct"] = {**DATABASES["default"]}
    DATABASES["default"]["PORT"] = PGBOUNCER_PORT
    # PGJOBS_TEST_PGBOUNCER_UNTOLD: a site that forgot to tell Django.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = not os.environ.get(
        "PGJOBS_TEST_PGBOUNCER_UNTOLD"
    )
elif VENDOR == "postgres" and os.environ.get("PGJOBS_TEST_UNPREPARED"):
    # Directly, but as pgjobs runs through a pooler: benchmarks/pgbouncer.py --unprepared.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

# Django's default (0) opens a connection per job that touches the database. Worker
# processes of the load tests keep theirs, as a tuned deployment would; set by
# tests/conftest.py's start_worker(persistent_connections=True).
if os.environ.get("PGJOBS_TEST_CONN_MAX_AGE"):
    DATABASES["default"]["CONN_MAX_AGE"] = float(os.environ["PGJOBS_TEST_CONN_MAX_AGE"])

SECRET_KEY = "pgjobs-tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "pgjobs",
    "tests.testapp",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The least the Django admin needs, for tests/test_admin.py.
ROOT_URLCONF = "tests.urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
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

PGJOBS = {
    "BACKEND": "pgjobs.backends.DatabaseBackend",
    "OPTIONS": {"QUEUES": ["default", "other"], "RETRY_DELAY": 0.05, "RETRY_MAX_DELAY": 0.2},
}
# Worker processes of the fault tests run with short leases, so that a killed worker's
# jobs come back in seconds (set by the tests that start them).
if os.environ.get("PGJOBS_TEST_LEASE_SECONDS"):
    PGJOBS["OPTIONS"]["LEASE_SECONDS"] = float(os.environ["PGJOBS_TEST_LEASE_SECONDS"])
# Seconds succeeded jobs are kept; "forever" for benchmarks/chaos.py, which checks every
# job's row at the end however long the run took.
if os.environ.get("PGJOBS_TEST_KEEP_SUCCEEDED"):
    keep = os.environ["PGJOBS_TEST_KEEP_SUCCEEDED"]
    PGJOBS["OPTIONS"]["KEEP_SUCCEEDED"] = True if keep == "forever" else float(keep)
if LISTEN_DATABASE:
    PGJOBS["OPTIONS"]["LISTEN_DATABASE"] = False if LISTEN_DATABASE == "false" else LISTEN_DATABASE
if JOBS_IN_REDIS:
    from tests.redis_settings import redis_jobs_setting

    PGJOBS = redis_jobs_setting(PGJOBS)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"pgjobs": {"handlers": ["stderr"], "level": "WARNING"}},
}
