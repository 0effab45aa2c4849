"""Django app config for pgjobs: registers the system checks and the settings reset."""

from django.apps import AppConfig


class PgJobsConfig(AppConfig):
    name = "pgjobs"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401  (registers the checks)
