"""Django app config for pgjobs: registers the system checks and the settings reset."""

from django.apps import AppConfig


class PgJobsConfig(AppConfig):
    name = "pgjobs"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401  (registers the checks)
        from .contrib.mail import checks as mail_checks  # noqa: F401  (E022 for e-mail)

        if _tasks_use_pgjobs():
            # Connects its receivers (pgjobs.signals.job_lost -> task_finished) in
            # every process, a worker that has run no task yet included.
            from . import django_tasks  # noqa: F401


def _tasks_use_pgjobs():
    """Whether a ``TASKS`` entry names a backend of ``pgjobs.django_tasks``."""
    from django.conf import settings

    entries = getattr(settings, "TASKS", None)
    if not isinstance(entries, dict):
        return False
    return any(
        isinstance(params, dict)
        and str(params.get("BACKEND", "")).startswith("pgjobs.django_tasks.")
        for params in entries.values()
    )
