"""E-mail in the background: ``EmailBackend`` enqueues each message, and a worker
sends it through the site's real backend (``jobs.send_message``).

Django 5.2 and 6.0::

    EMAIL_BACKEND = "pgjobs.contrib.mail.EmailBackend"
    PGJOBS_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # the default

Django 6.1 (``MAILERS``)::

    MAILERS = {
        "default": {"BACKEND": "pgjobs.contrib.mail.EmailBackend", "OPTIONS": {"mailer": "smtp"}},
        "smtp": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend", "OPTIONS": {...}},
    }
"""

from .backend import EmailBackend

__all__ = ["EmailBackend"]
