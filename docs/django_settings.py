"""The Django settings the documentation build imports pgjobs under: nothing is
written, nothing is connected to; autodoc only needs the apps loaded."""

SECRET_KEY = "docs"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "pgjobs",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
