# --- pgjobs ---------------------------------------------------------------------------
INSTALLED_APPS += ["pgjobs", "pgjobs.contrib.wagtail"]

# Jobs live in the site's own database (SQLite here; PostgreSQL in production). In WAL
# mode a worker's writes do not block the site's reads (manage.py check says so: W001).
DATABASES["default"].setdefault("OPTIONS", {}).update(
    {"init_command": "PRAGMA journal_mode=WAL", "transaction_mode": "IMMEDIATE"}
)
PGJOBS = {
    "BACKEND": "pgjobs.backends.DatabaseBackend",
    "OPTIONS": {"QUEUES": ["default"]},
}

# Wagtail's own tasks (search and reference index updates) go through Django's tasks
# framework; this backend makes them pgjobs jobs, run by pgjobs workers.
TASKS = {"default": {"BACKEND": "pgjobs.django_tasks.PgJobsBackend"}}
