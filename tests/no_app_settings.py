"""Settings of a site that uses ``DatabaseBackend`` but left ``"pgjobs"`` out of
``INSTALLED_APPS`` (issue 20 bug 7): ``manage.py check`` must say so (``pgjobs.E005``).
Used by ``tests/test_checks.py`` in a subprocess."""

SECRET_KEY = "pgjobs-tests-no-app"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "tests.no_app"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
PGJOBS = {"BACKEND": "pgjobs.backends.DatabaseBackend"}
