"""The e-mail backend that enqueues: each message becomes a job that a worker sends
through the real backend (``PGJOBS_EMAIL_BACKEND``, or the mailer its ``mailer``
option names under Django 6.1's ``MAILERS``).

A message travels as the bytes of its MIME form (attachments, HTML alternatives and
headers as Django renders them, base64 in the job's JSON) with its envelope: the
sender and every recipient, Bcc included. No pickle. The job is written in the
caller's transaction, so a message enqueued in a transaction that rolls back is
never sent.
"""

import base64

from django.core.mail.backends.base import BaseEmailBackend

from ... import background
from .settings import DEFAULT_MAX_ATTEMPTS, MailSettingError, real_mailer_option


class EmailBackend(BaseEmailBackend):
    """Enqueues messages for a worker to send.

    Job options: under ``MAILERS``, the ``queue``, ``priority`` and ``max_attempts``
    OPTIONS; with ``EMAIL_BACKEND``, the class attributes of a subclass. An SMTP
    error (or any other) in the worker retries the message with backoff, up to
    ``max_attempts`` (10) attempts, except a permanent 5xx refusal of the message
    (``jobs.permanent_refusal``), which ends its job at once.
    """

    queue = None
    priority = None
    max_attempts = DEFAULT_MAX_ATTEMPTS

    def __init__(self, *args, mailer=None, queue=None, priority=None, max_attempts=None, **kwargs):
        super().__init__(*args, **kwargs)
        alias = getattr(self, "alias", None)  # set by Django >= 6.1's BaseEmailBackend
        self.mailer = real_mailer_option(alias, mailer)
        if queue is not None:
            self.queue = queue
        if priority is not None:
            self.priority = priority
        if max_attempts is not None:
            self.max_attempts = max_attempts

    def job_options(self):
        options = {"max_attempts": self.max_attempts}
        if self.queue is not None:
            options["queue"] = self.queue
        if self.priority is not None:
            options["priority"] = self.priority
        return options

    def send_messages(self, email_messages):
        """Enqueue each message that has recipients; return how many were enqueued."""
        from .jobs import send_message

        jobs = []
        for message in email_messages or ():
            recipients = message.recipients()
            if not recipients:
                continue
            jobs.append((send_message, *self.encode(message, recipients)))
        if not jobs:
            return 0
        background.enqueue_many(jobs, **self.job_options())
        return len(jobs)

    def encode(self, message, recipients):
        """The job's ``(args, kwargs)`` for ``message``: its MIME bytes and envelope."""
        raw = message.message().as_bytes()
        return (
            [base64.b64encode(raw).decode("ascii"), str(message.from_email), list(recipients)],
            {"mailer": self.mailer},
        )


__all__ = ["EmailBackend", "MailSettingError"]
