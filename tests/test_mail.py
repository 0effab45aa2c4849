"""``pgjobs.contrib.mail``: messages enqueued in the request and sent by a worker
through the real backend, against a real SMTP server (aiosmtpd) on a free port,
including one that refuses at first. Both forms: ``EMAIL_BACKEND`` with
``PGJOBS_EMAIL_BACKEND``, and Django 6.1's ``MAILERS``.
"""

import asyncio
import email
import email.policy
import smtplib
import socket
import threading

import django
import pytest
from django.core import checks, mail
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.test import override_settings

from pgjobs import records
from pgjobs.contrib.mail.jobs import StoredEmail
from tests.conftest import REQUIRE_SERVICES, run_jobs, status_counts, work_until

try:
    from aiosmtpd.controller import Controller
except ImportError:  # pragma: no cover - the test extra installs it
    if REQUIRE_SERVICES:
        raise
    pytest.skip("aiosmtpd is not installed (pip install 'pgjobs[test]')", allow_module_level=True)

pytestmark = pytest.mark.django_db(transaction=True)

OWN = "pgjobs.contrib.mail.EmailBackend"
SMTP = "django.core.mail.backends.smtp.EmailBackend"
PNG = bytes(range(256)) * 4  # binary content, every byte value
MAILERS_ARRIVED = django.VERSION >= (6, 1)


class Recorder:
    """An aiosmtpd handler that keeps what it accepts; refuses the first
    ``refuse`` deliveries with a 451 (try again later)."""

    def __init__(self, refuse=0, answer="451 4.3.0 Try again later"):
        self.refuse = refuse
        self.answer = answer
        self.refused = 0
        self.received = []  # (envelope from, recipients, bytes)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.refused < self.refuse:
                self.refused += 1
                return self.answer
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server():
    """Start a real SMTP server on a free port: ``smtp_server(refuse=N)``; stopped at teardown."""
    started = []

    def start(refuse=0, answer="451 4.3.0 Try again later"):
        recorder = Recorder(refuse, answer)
        controller = Controller(
            recorder, hostname="127.0.0.1", port=free_port(), loop=asyncio.new_event_loop()
        )
        controller.start()
        started.append(controller)
        recorder.port = controller.port
        return recorder

    yield start
    for controller in started:
        controller.stop()


def email_backend_form(port):
    return override_settings(
        EMAIL_BACKEND=OWN,
        PGJOBS_EMAIL_BACKEND=SMTP,
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
        EMAIL_TIMEOUT=5,
    )


def rich_message():
    message = EmailMultiAlternatives(
        subject="Bonjour, café ☕",
        body="Plain text, naïve.",
        from_email="Site <site@example.com>",
        to=["Ann <ann@example.com>"],
        cc=["cc@example.com"],
        bcc=["hidden@example.com"],
        reply_to=["reply@example.com"],
        headers={"X-Campaign": "spring"},
    )
    message.attach_alternative("<p>HTML, <b>naïve</b>.</p>", "text/html")
    message.attach("pixel.png", PNG, "image/png")
    message.attach("notes.txt", "Some notes\n", "text/plain")
    return message


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def assert_rich_message_arrived(received):
    mail_from, rcpt_tos, raw = received
    assert mail_from == "site@example.com"
    assert sorted(rcpt_tos) == [
        "ann@example.com",
        "cc@example.com",
        "hidden@example.com",
    ]
    parsed = parse(raw)
    assert parsed["Subject"] == "Bonjour, café ☕"
    assert parsed["To"] == "Ann <ann@example.com>" and parsed["Cc"] == "cc@example.com"
    assert parsed["Reply-To"] == "reply@example.com" and parsed["X-Campaign"] == "spring"
    assert "Bcc" not in parsed  # only in the envelope
    assert parsed.get_body(("plain",)).get_content().strip() == "Plain text, naïve."
    assert parsed.get_body(("html",)).get_content().strip() == "<p>HTML, <b>naïve</b>.</p>"
    attachments = {part.get_filename(): part for part in parsed.iter_attachments()}
    assert attachments["pixel.png"].get_content_type() == "image/png"
    assert attachments["pixel.png"].get_content() == PNG
    assert (
        attachments["notes.txt"].get_content().replace("\r\n", "\n") == "Some notes\n"
    )  # CRLF on the wire


def test_a_message_is_enqueued_and_a_worker_sends_it_whole(smtp_server):
    server = smtp_server()
    with email_backend_form(server.port):
        assert rich_message().send() == 1
        assert status_counts() == {records.READY: 1}
        assert server.received == []  # not sent in the request

        run_jobs()
    assert status_counts() == {records.SUCCEEDED: 1}
    (received,) = server.received
    assert_rich_message_arrived(received)


def test_send_mail_with_html_and_several_messages(smtp_server):
    server = smtp_server()
    with email_backend_form(server.port):
        mail.send_mail("Hi", "text", "a@example.com", ["b@example.com"], html_message="<i>hi</i>")
        sent = mail.send_mass_mail(
            [("One", "1", "a@example.com", ["c@example.com"]), ("Two", "2", None, ["d@x.org"])]
        )
        assert sent == 2
        run_jobs()
    assert sorted(rcpt for _, (rcpt,), _ in server.received) == [
        "b@example.com",
        "c@example.com",
        "d@x.org",
    ]
    html = [parse(raw).get_body(("html",)) for _, _, raw in server.received]
    assert [p.get_content().strip() for p in html if p is not None] == ["<i>hi</i>"]


def test_nothing_is_sent_when_the_transaction_rolls_back(smtp_server):
    server = smtp_server()
    with email_backend_form(server.port):
        with pytest.raises(RuntimeError), transaction.atomic():
            rich_message().send()
            raise RuntimeError("the view failed")
        run_jobs()
    assert status_counts() == {}
    assert server.received == []


def test_a_server_that_refuses_at_first_gets_the_message_on_a_retry(smtp_server):
    server = smtp_server(refuse=1)
    with email_backend_form(server.port):
        rich_message().send()
        work_until(lambda: server.received, timeout=15)
    assert server.refused == 1
    (received,) = server.received
    assert_rich_message_arrived(received)
    from pgjobs.models import Job

    if status_counts().get(records.SUCCEEDED) == 1 and Job.objects.exists():
        assert Job.objects.get().attempts == 2


def test_a_permanent_refusal_is_not_retried(smtp_server, caplog):
    # A 5xx answer to the message itself: sending it again gets the same answer,
    # so the job ends at once instead of nine more attempts over eight minutes.
    server = smtp_server(refuse=10, answer="554 5.7.1 Message rejected as spam")
    with email_backend_form(server.port):
        rich_message().send()
        run_jobs()
    assert status_counts() == {records.SUCCEEDED: 1}
    assert server.refused == 1 and server.received == []
    assert "554 5.7.1 Message rejected as spam" in caplog.text
    from pgjobs.contrib.mail.jobs import permanent_refusal

    temporary = smtplib.SMTPRecipientsRefused({"a@x.org": (450, b"busy"), "b@x.org": (550, b"no")})
    assert permanent_refusal(temporary) is None  # one recipient may still take it later
    assert permanent_refusal(smtplib.SMTPAuthenticationError(535, b"bad login")) is None


def test_a_server_that_is_down_leaves_the_message_to_a_retry(smtp_server):
    port = free_port()  # nothing listens yet
    with email_backend_form(port):
        rich_message().send()
        run_jobs()
        assert status_counts() == {records.READY: 1}  # failed once, retried later
    server = smtp_server()
    with email_backend_form(server.port):
        work_until(lambda: server.received, timeout=15)
    assert len(server.received) == 1


def test_a_message_without_recipients_is_not_enqueued():
    with override_settings(EMAIL_BACKEND=OWN):
        assert EmailMultiAlternatives("Nobody", "x", "a@example.com", []).send() == 0
    assert status_counts() == {}


def test_stored_email_reads_back_for_backends_that_look_at_fields():
    raw = rich_message().message().as_bytes()
    stored = StoredEmail(raw, "site@example.com", ["ann@example.com", "hidden@example.com"])
    assert stored.subject == "Bonjour, café ☕"
    assert stored.body.strip() == "Plain text, naïve."
    assert stored.to == ["Ann <ann@example.com>"] and stored.cc == ["cc@example.com"]
    assert stored.recipients() == ["ann@example.com", "hidden@example.com"]


def test_checks_name_a_bad_real_backend():
    with override_settings(EMAIL_BACKEND=OWN, PGJOBS_EMAIL_BACKEND=OWN):
        (error,) = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.E022"]
        assert "PGJOBS_EMAIL_BACKEND" in error.msg and "for ever" in error.msg
    with override_settings(EMAIL_BACKEND=OWN, PGJOBS_EMAIL_BACKEND="no.such.Backend"):
        (error,) = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.E022"]
        assert "cannot be imported" in error.msg
    with override_settings(EMAIL_BACKEND=OWN, PGJOBS_EMAIL_BACKEND=SMTP):
        assert "pgjobs.E022" not in [m.id for m in checks.run_checks(tags=["pgjobs"])]


# -- Django 6.1: MAILERS ------------------------------------------------------------------

needs_mailers = pytest.mark.skipif(not MAILERS_ARRIVED, reason="MAILERS arrived in Django 6.1")


def mailers_form(port, **options):
    return override_settings(
        MAILERS={
            "default": {"BACKEND": OWN, "OPTIONS": {"mailer": "smtp", **options}},
            "smtp": {
                "BACKEND": SMTP,
                "OPTIONS": {"host": "127.0.0.1", "port": port, "timeout": 5},
            },
        }
    )


@needs_mailers
def test_mailers_a_pgjobs_mailer_in_front_of_the_real_one(smtp_server):
    server = smtp_server(refuse=1)
    with mailers_form(server.port, queue="other", max_attempts=4):
        assert rich_message().send() == 1
        assert server.received == []
        work_until(lambda: server.received, timeout=15)
    (received,) = server.received
    assert_rich_message_arrived(received)
    from pgjobs.models import Job

    if Job.objects.exists():
        job = Job.objects.get()
        assert (job.queue, job.max_attempts, job.attempts, job.kwargs) == (
            "other",
            4,
            2,
            {"mailer": "smtp"},
        )


@needs_mailers
def test_mailers_rollback_sends_nothing(smtp_server):
    server = smtp_server()
    with mailers_form(server.port):
        with pytest.raises(RuntimeError), transaction.atomic():
            mail.mailers.default.send_messages([rich_message()])
            raise RuntimeError("the view failed")
        run_jobs()
    assert server.received == [] and status_counts() == {}


@needs_mailers
def test_mailers_checks_name_a_bad_mailer_option():
    for options, words in [
        ({}, "must name the mailer"),
        ({"mailer": "nope"}, "not in MAILERS"),
        ({"mailer": "default"}, "for ever"),
        ({"mailer": "smtp", "max_attempts": "ten"}, "max_attempts must be a whole number"),
        ({"mailer": "smtp", "priority": "high"}, "priority must be a whole number"),
        ({"mailer": "smtp", "queue": 5}, "queue must be"),
    ]:
        real = {"smtp": {"BACKEND": SMTP}}
        with override_settings(MAILERS={"default": {"BACKEND": OWN, "OPTIONS": options}, **real}):
            (error,) = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.E022"]
            assert words in error.msg and "MAILERS['default']" in error.msg
