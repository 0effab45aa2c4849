"""The job that sends one enqueued message through the real backend."""

import base64
import email
import email.message
import email.policy
import email.utils
import logging
import smtplib

from django.core.mail import EmailMessage

from .settings import real_backend_path


class StoredMIME(email.message.EmailMessage):
    """A parsed stored message that also takes Django 5.2's ``as_bytes(linesep=...)``."""

    def as_bytes(self, unixfrom=False, policy=None, linesep=None):
        policy = policy or self.policy
        if linesep is not None:
            policy = policy.clone(linesep=linesep)
        return super().as_bytes(unixfrom, policy=policy)


class StoredEmail(EmailMessage):
    """An enqueued message as the real backend sees it: ``message()`` is the stored
    MIME form, ``recipients()`` the stored envelope (Bcc included); subject, body
    and addresses are read back from it for backends that look at them."""

    def __init__(self, raw, from_email, recipients):
        self.raw = raw
        self.envelope = list(recipients)
        parsed = self.message()
        body = parsed.get_body(("plain",))
        super().__init__(
            subject=str(parsed.get("Subject", "")),
            body=body.get_content() if body is not None else "",
            from_email=from_email,
            to=_addresses(parsed, "To"),
            cc=_addresses(parsed, "Cc"),
            reply_to=_addresses(parsed, "Reply-To"),
        )

    def message(self, *, policy=email.policy.default):
        return email.message_from_bytes(self.raw, _class=StoredMIME, policy=policy)

    def recipients(self):
        return list(self.envelope)


def _addresses(parsed, header):
    return [
        email.utils.formataddr(pair)
        for pair in email.utils.getaddresses(parsed.get_all(header, []))
    ]


logger = logging.getLogger("pgjobs")


def send_message(raw, from_email, recipients, mailer=None):
    """Send one stored message through the real backend; an error (a server down, a
    temporary 4xx refusal) fails the attempt, and pgjobs retries it. A permanent
    (5xx) refusal of this message (its sender, every recipient, its content) ends
    the job at once: sending the same message again gets the same answer. It is
    logged as an error and returned as ``refused``."""
    message = StoredEmail(base64.b64decode(raw), from_email, recipients)
    try:
        with real_connection(mailer) as connection:
            sent = connection.send_messages([message])
    except smtplib.SMTPException as exc:
        refusal = permanent_refusal(exc)
        if refusal is None:
            raise
        logger.error("pgjobs: the SMTP server refused a message for good: %s", refusal)
        return {"sent": 0, "recipients": len(recipients), "refused": refusal}
    return {"sent": sent or 0, "recipients": len(recipients)}


def permanent_refusal(exc):
    """The server's permanent (5xx) refusal of this message in ``exc``, as text, or
    None for an error worth a retry (4xx, a lost connection, a login refused: the
    site's settings can be fixed meanwhile)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(500 <= code < 600 for code in codes):
            return "; ".join(
                f"{rcpt}: {code} {_text(answer)}" for rcpt, (code, answer) in exc.recipients.items()
            )
        return None
    if isinstance(exc, (smtplib.SMTPSenderRefused, smtplib.SMTPDataError)):
        if 500 <= exc.smtp_code < 600:
            return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return None


def _text(answer):
    return answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)


def real_connection(mailer):
    """The backend that really sends: mailer ``mailer`` of ``MAILERS``, or
    ``PGJOBS_EMAIL_BACKEND``."""
    if mailer is not None:
        from django.core.mail import mailers

        return mailers[mailer]
    from django.core.mail import get_connection

    return get_connection(real_backend_path(), fail_silently=False)
