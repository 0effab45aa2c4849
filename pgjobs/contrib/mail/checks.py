"""``pgjobs.E022`` for the settings of ``pgjobs.contrib.mail``: a real backend that
cannot be imported or is pgjobs' own, a pgjobs mailer whose ``mailer`` option names
no mailer (or another pgjobs one) or job options (``queue``, ``priority``,
``max_attempts``) that every enqueue would refuse. Registered by the ``pgjobs`` app."""

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from .settings import (
    OWN_BACKEND,
    MailSettingError,
    job_option_problem,
    real_backend_path,
    real_mailer_option,
)


@checks.register("pgjobs")
def check_mail_settings(app_configs=None, **kwargs):
    problems = []
    mailers = getattr(settings, "MAILERS", None)
    if isinstance(mailers, dict):
        for alias, entry in mailers.items():
            if not (isinstance(entry, dict) and entry.get("BACKEND") == OWN_BACKEND):
                continue
            options = entry.get("OPTIONS") or {}
            try:
                real_mailer_option(alias, options.get("mailer"))
            except MailSettingError as exc:
                problems.append(str(exc))
            problem = job_option_problem(alias, options)
            if problem is not None:
                problems.append(problem)
    elif settings.is_overridden("EMAIL_BACKEND") and settings.EMAIL_BACKEND == OWN_BACKEND:
        try:
            import_string(real_backend_path())
        except MailSettingError as exc:
            problems.append(str(exc))
        except ImportError as exc:
            problems.append(f"PGJOBS_EMAIL_BACKEND cannot be imported: {exc}")
    return [checks.Error(problem, id="pgjobs.E022") for problem in problems]
