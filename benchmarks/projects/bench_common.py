"""Settings and helpers shared by the three benchmark Django projects.

Each system's project (``<system>_bench/settings.py``) star-imports this module
and adds only what that queue needs, so the Django side is identical across
systems: same database server, persistent connections, no DEBUG (which would
keep every query in memory), quiet logging.
"""

import os

SECRET_KEY = "benchmarks-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BENCH_DB", "postgres"),
        "HOST": os.environ.get("BENCH_PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("BENCH_PGPORT", "5432"),
        "USER": os.environ.get("BENCH_PGUSER", "root"),
        # Persistent connections: each worker keeps one connection for its life,
        # the best setting for every system (django-tasks-db reconnects per task
        # without it).
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": False,
    }
}

# run.py --database mysql|sqlite: the same settings on the other databases
# (only queues that support them are measured there).
if os.environ.get("BENCH_DATABASE") == "mysql":
    DATABASES["default"].update(
        ENGINE="django.db.backends.mysql",
        HOST=os.environ.get("BENCH_MYSQLHOST", "127.0.0.1"),
        PORT=os.environ.get("BENCH_MYSQLPORT", "3306"),
        USER=os.environ.get("BENCH_MYSQLUSER", "root"),
        OPTIONS={"charset": "utf8mb4"},
    )
elif os.environ.get("BENCH_DATABASE") == "sqlite":
    # BENCH_DB is the file. WAL and IMMEDIATE transactions, as pgjobs recommends.
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["BENCH_DB"],
        "OPTIONS": {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL",
            "transaction_mode": "IMMEDIATE",
        },
    }

# bench_rows: the table the "orm" job kind inserts into (one row per job).
BASE_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "bench_rows"]

# Per-job log lines cost real time at 1,000+ jobs/s; every system is run at
# WARNING so none pays for logging the others do not.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
