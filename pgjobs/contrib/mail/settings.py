"""Which real backend a worker sends through, read from the settings.

- ``EMAIL_BACKEND`` form (Django 5.2, 6.0; 6.1 without ``MAILERS``): the dotted path
  in ``PGJOBS_EMAIL_BACKEND``, Django's SMTP backend by default.
- ``MAILERS`` form (Django >= 6.1): the ``mailer`` option of the pgjobs mailer names
  the alias of the real one.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
OWN_BACKEND = "pgjobs.contrib.mail.EmailBackend"
#: Attempts per message: SMTP servers refuse for minutes at a time (greylisting,
#: restarts); with the default backoff ten attempts span about eight minutes.
DEFAULT_MAX_ATTEMPTS = 10


class MailSettingError(ImproperlyConfigured):
    """A setting of ``pgjobs.contrib.mail`` is wrong (``pgjobs.E022``)."""


def real_backend_path():
    """The backend a worker sends through in the ``EMAIL_BACKEND`` form."""
    path = getattr(settings, "PGJOBS_EMAIL_BACKEND", None) or SMTP_BACKEND
    if not isinstance(path, str):
        raise MailSettingError(
            f"PGJOBS_EMAIL_BACKEND must be the dotted path of an e-mail backend, not {path!r}"
        )
    if path == OWN_BACKEND or path.startswith("pgjobs.contrib.mail."):
        raise MailSettingError(
            "PGJOBS_EMAIL_BACKEND names pgjobs' own backend, which would enqueue the message "
            f"again for ever; name the real one (default {SMTP_BACKEND!r})"
        )
    return path


def real_mailer_option(alias, mailer):
    """The ``mailer`` option of the pgjobs mailer ``alias`` (None in the
    ``EMAIL_BACKEND`` form, where ``alias`` is None too)."""
    if alias is None:
        if mailer is not None:
            raise MailSettingError(
                "pgjobs.contrib.mail.EmailBackend got mailer= outside MAILERS; with "
                "EMAIL_BACKEND, name the real backend in PGJOBS_EMAIL_BACKEND"
            )
        return None
    mailers = getattr(settings, "MAILERS", {}) or {}
    where = f"MAILERS[{alias!r}]['OPTIONS']['mailer']"
    if not isinstance(mailer, str) or not mailer:
        raise MailSettingError(
            f"{where} must name the mailer that really sends, e.g. "
            "{'BACKEND': 'pgjobs.contrib.mail.EmailBackend', 'OPTIONS': {'mailer': 'smtp'}}"
        )
    if mailer not in mailers:
        raise MailSettingError(f"{where} is {mailer!r}, which is not in MAILERS")
    if mailer == alias or str(mailers[mailer].get("BACKEND", "")).startswith(
        "pgjobs.contrib.mail."
    ):
        raise MailSettingError(
            f"{where} is {mailer!r}, another pgjobs mailer: the message would be enqueued "
            "again for ever; name the mailer that really sends"
        )
    return mailer


def job_option_problem(alias, options):
    """What is wrong with the ``queue``, ``priority`` and ``max_attempts`` OPTIONS of
    the pgjobs mailer ``alias`` (the jobs it enqueues), as one line; None: nothing."""
    from ...backends.base import validate_priority
    from ...exceptions import InvalidJob
    from ...handler import get_backend

    backend = get_backend()
    checks = {
        "queue": backend.validate_queue,
        "priority": validate_priority,
        "max_attempts": backend.validate_max_attempts,
    }
    for name, validate in checks.items():
        if options.get(name) is None:
            continue
        try:
            validate(options[name])
        except InvalidJob as exc:
            return f"MAILERS[{alias!r}]['OPTIONS']: {exc}"
    return None
