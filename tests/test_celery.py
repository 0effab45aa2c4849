"""``CeleryBackend`` against a real RabbitMQ and real Celery worker processes.

Each job runs once, deferred ones not early, priorities hold on a priority queue,
a message not signed by the site never runs, a rolled-back transaction publishes
nothing, and a worker killed mid-job leads to the message's redelivery (at least
once). The workers are ``celery -A tests.celery_app worker --pool solo``
subprocesses on queues of this run's own (``tests.celery_settings``), purged and
deleted at the end. Results go to Redis.

Runs in the PostgreSQL pass (``PGJOBS_TEST_DB=postgres``), skipped on the others;
under ``PGJOBS_REQUIRE_SERVICES=1`` an unreachable RabbitMQ or Redis fails it.
"""

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest
from django.core import checks
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

pytest.importorskip("celery", reason="CeleryBackend needs Celery: pip install 'pgjobs[celery]'")

from pgjobs import InvalidBackend, InvalidJob, background  # noqa: E402
from pgjobs.backends.celery import TASK_NAME, CeleryBackend, priority_level  # noqa: E402
from tests.celery_settings import (  # noqa: E402
    BROKER_URL,
    CACHES,
    PGJOBS_QUEUES,
    RESULT_URL,
    RUN,
    celery_jobs_setting,
    celery_queue,
)
from tests.conftest import REQUIRE_SERVICES, ROOT, VENDOR, wait_for  # noqa: E402
from tests.testapp.models import Event, Execution  # noqa: E402

pytestmark = pytest.mark.skipif(
    VENDOR != "postgres", reason="CeleryBackend is tested once, in the PostgreSQL pass"
)

SETTING = celery_jobs_setting()
JOBS = "tests.testapp.jobs"


def _service_problem():
    for name, url in (("RabbitMQ", BROKER_URL), ("Redis", RESULT_URL)):
        parsed = urllib.parse.urlsplit(url)
        host, port = (
            parsed.hostname or "127.0.0.1",
            parsed.port or {"amqp": 5672}.get(parsed.scheme, 6379),
        )
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            return f"cannot reach {name} at {host}:{port}: {exc}"
    return None


@pytest.fixture(scope="module", autouse=True)
def services():
    problem = _service_problem()
    if problem:
        if REQUIRE_SERVICES:
            pytest.fail(f"PGJOBS_REQUIRE_SERVICES=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    yield
    _delete_queues()


@pytest.fixture(autouse=True)
def celery_backend():
    with override_settings(PGJOBS=SETTING, CACHES=CACHES):
        _purge()
        yield
        _purge()


def _app():
    from tests.celery_app import app

    return app


def _each_queue(action):
    app = _app()
    with app.connection_for_write() as conn:
        for queue in PGJOBS_QUEUES:
            channel = conn.channel()
            try:
                action(channel, celery_queue(queue))
            except Exception:
                pass  # not declared yet
            finally:
                try:
                    channel.close()
                except Exception:
                    pass


def _purge():
    _each_queue(lambda channel, name: channel.queue_purge(name))


def _delete_queues():
    _each_queue(lambda channel, name: channel.queue_delete(name))


def depth(queue):
    """How many messages wait in the Celery queue of pgjobs queue ``queue``."""
    app = _app()
    with app.connection_for_write() as conn:
        channel = conn.channel()
        try:
            return channel.queue_declare(celery_queue(queue), passive=True).message_count
        except Exception:
            return 0  # not declared: nothing was ever published
        finally:
            try:
                channel.close()
            except Exception:
                pass


def _base_settings():
    """The settings module of this pytest run, which the workers' settings extend."""
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings")
    return "tests.settings" if module == "tests.celery_settings" else module


class CeleryWorker:
    """A ``celery worker`` subprocess on this run's queues, set up as docs/howto/celery.md
    advises: with ``--pool solo``, Celery's default prefetch multiplier (4). With 1 (and
    late acknowledgement, on RabbitMQ), the worker now and then took its next message
    only on a 10 s beat counted from its start, the stall the how-to warns of:
    20 jobs took 30-60 s, and this module a third of the PostgreSQL pass."""

    def __init__(self, tmp_path, transactional_db_name, queues=PGJOBS_QUEUES, pool="solo"):
        self.log = tmp_path / f"celery-{time.monotonic_ns()}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.celery_settings",
            "PGJOBS_TEST_DB": VENDOR,
            "PGJOBS_TEST_DB_NAME": transactional_db_name,
            "PGJOBS_TEST_CELERY_RUN": RUN,
            "PGJOBS_TEST_CELERY_BASE": _base_settings(),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
                    "--pool", pool, "--concurrency", "1", "--loglevel", "INFO",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "-n", f"pgjobs-test-{RUN}-{time.monotonic_ns()}@%h",
                    "-Q", ",".join(celery_queue(q) for q in queues),
                ],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for(self._ready, timeout=60, message=f"a ready celery worker ({self.log})")

    def output(self):
        return self.log.read_text(errors="replace")

    def _ready(self):
        if self.process.poll() is not None:
            pytest.fail(f"celery worker exited with {self.process.returncode}\n{self.output()}")
        return " ready." in self.output()

    def kill(self):
        if self.process.poll() is None:
            # The process group: a prefork pool's children go too.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self):
        # SIGKILL: a warm or cold shutdown takes Celery 10 s here, and the queues
        # are purged after each test anyway.
        self.kill()


@pytest.fixture
def start_celery(transactional_db, tmp_path):
    from django.db import connection

    started = []

    def start(**kwargs):
        worker = CeleryWorker(tmp_path, str(connection.settings_dict["NAME"]), **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    for worker in started:
        print(f"--- celery worker log\n{worker.output()}")


def events(name):
    return list(Event.objects.filter(name=name).order_by("at", "id"))


# -- options and checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "OPTIONS['APP'] must be the dotted path of the site's Celery app"),
        ({"APP": 3}, "OPTIONS['APP'] must be the dotted path"),
        ({"APP": "a.b", "ROUTES": ["x"]}, "OPTIONS['ROUTES'] must map pgjobs queue names"),
        ({"APP": "a.b", "ROUTES": {"nope": "q"}}, "names queues nope that are not in"),
        ({"APP": "a.b", "MAX_PRIORITY": 256}, "OPTIONS['MAX_PRIORITY'] must be a whole number"),
        ({"APP": "a.b", "MAX_PRIORITY": True}, "OPTIONS['MAX_PRIORITY'] must be a whole number"),
        ({"APP": "a.b", "RETRY_DELAY": 0}, "OPTIONS['RETRY_DELAY'] must be a finite number"),
        ({"APP": "a.b", "TIMEOUT": -1}, "OPTIONS['TIMEOUT'] must be a finite number"),
        ({"APP": "a.b", "DATABASE": 1}, "OPTIONS['DATABASE'] must be a database alias"),
        ({"APP": "a.b", "UNIQUE_CACHE": ""}, "OPTIONS['UNIQUE_CACHE'] must be a cache alias"),
        ({"APP": "a.b", "BROKER": "x"}, "does not understand OPTIONS BROKER"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(InvalidBackend, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
        CeleryBackend(options)
    assert "\n" not in str(e.value)


def test_an_app_that_does_not_import_is_one_line():
    backend = CeleryBackend({"APP": "tests.no_such_module.app"})
    with pytest.raises(InvalidBackend, match="cannot import OPTIONS\\['APP'\\]") as e:
        background.backend  # noqa: B018 (the configured one is fine)
        backend.enqueue(f"{JOBS}.noop", [], {})
    assert "\n" not in str(e.value)


def test_schedule_is_refused_by_a_check():
    from pgjobs.checks import check_settings

    setting = {**SETTING, "SCHEDULE": {"tick": {"func": f"{JOBS}.noop", "cron": "* * * * *"}}}
    with override_settings(PGJOBS=setting):
        found = [m for m in check_settings() if m.level >= checks.ERROR]
    assert [m.id for m in found] == ["pgjobs.E015"]
    assert "Celery beat" in found[0].msg


def test_backend_does_not_claim_a_store_for_pgjobs_workers():
    from django.core.exceptions import ImproperlyConfigured

    from pgjobs.worker import build_worker

    backend = background.backend
    assert isinstance(backend, CeleryBackend)
    assert not backend.stores_jobs and backend.tracks_jobs
    with pytest.raises(ImproperlyConfigured):
        build_worker(backend)


def test_priority_levels():
    assert [priority_level(p, 9) for p in (-100, -80, -79, -20, -19, 0, 1, 20, 21, 81, 100)] == [
        0, 0, 1, 3, 4, 4, 5, 5, 6, 9, 9,
    ]  # fmt: skip
    assert priority_level(-100, 255) == 0 and priority_level(100, 255) == 255


def test_invalid_jobs_publish_nothing():
    with pytest.raises(InvalidJob):
        background.enqueue(lambda: None)
    with pytest.raises(InvalidJob):
        background.enqueue(f"{JOBS}.noop", queue="unknown")
    assert depth("default") == 0


# -- against a worker ------------------------------------------------------------------------


def test_every_job_runs_once_with_results(start_celery):
    start_celery()
    refs = [background.enqueue(f"{JOBS}.record", args=[f"one-{n}"]) for n in range(10)]
    refs += background.enqueue_many([(f"{JOBS}.record", [f"many-{n}"], {}) for n in range(10)])
    for ref in refs:
        ref.wait(timeout=60)
    assert Execution.objects.count() == 20  # record() refuses a second run of a key
    assert sorted(ref.result for ref in refs) == sorted(
        [f"one-{n}" for n in range(10)] + [f"many-{n}" for n in range(10)]
    )
    assert refs[0].status == "succeeded" and refs[0].func == f"{JOBS}.record"
    assert background.get(refs[0].id).result == "one-0"
    assert background.enqueue(f"{JOBS}.add", args=[2, 3]).wait(timeout=30).result == 5


def test_async_enqueue_and_async_jobs(start_celery):
    import asyncio

    start_celery()
    ref = asyncio.run(background.aenqueue(f"{JOBS}.async_add", args=[2, 5]))
    assert ref.wait(timeout=30).result == 7
    when = timezone.now() + datetime.timedelta(seconds=1)
    ref = asyncio.run(background.adefer(f"{JOBS}.add", when=when, args=[1, 1]))
    assert ref.wait(timeout=30).result == 2


def test_deferred_jobs_never_run_early(start_celery):
    start_celery()
    when = timezone.now() + datetime.timedelta(seconds=2)
    ref = background.defer(f"{JOBS}.record_event", when=when, args=["deferred"])
    ref.wait(timeout=30)
    (event,) = events("deferred")
    assert event.at >= when.timestamp()
    assert event.at < when.timestamp() + 5


def test_priorities_are_respected_on_a_priority_queue(start_celery):
    priorities = [-100, 0, 50, -50, 100, 10]  # each in its own band of 0..9
    refs = [
        background.enqueue(f"{JOBS}.record_event", args=["prio", p], queue="prio", priority=p)
        for p in priorities
    ]
    # Every message is in the queue before a worker starts, so that the broker orders them all
    # (RabbitMQ may count a message published a moment ago only a moment later).
    wait_for(lambda: depth("prio") == len(priorities), timeout=10, message="all six queued")
    start_celery(queues=["prio"])
    for ref in refs:
        ref.wait(timeout=60)
    assert [e.value for e in events("prio")] == sorted(priorities, reverse=True)


def test_retries_with_backoff_then_fails_with_the_error(start_celery):
    start_celery()
    ok = background.enqueue(f"{JOBS}.fail_until", args=["flaky", 3], max_attempts=3)
    bad = background.enqueue(f"{JOBS}.fail_always", args=["no luck"], max_attempts=2)
    assert ok.wait(timeout=60).result == 3
    assert [e.value for e in events("flaky")] == [1, 2, 3]
    bad.wait(timeout=60)
    assert bad.status == "failed"
    assert bad.error["type"].endswith("RuntimeError") and bad.error["message"] == "no luck"
    assert "fail_always" in bad.error["traceback"]
    assert bad.attempts == 2


def test_a_forged_message_never_runs(start_celery):
    start_celery()
    app = _app()
    forged = {
        "v": 1,
        "func": f"{JOBS}.record_event",
        "args": ["forged"],
        "kwargs": {},
        "queue": "default",
        "signature": "not-a-signature",
        "max_attempts": 3,
        "unique_key": None,
    }
    result = app.send_task(
        TASK_NAME, args=[forged], queue=CeleryBackend(SETTING["OPTIONS"]).celery_queue("default")
    )
    bogus = app.send_task(
        TASK_NAME, args=[{"func": "os.system", "args": ["true"]}], queue=celery_queue("default")
    )
    after = background.enqueue(f"{JOBS}.record_event", args=["genuine"])
    after.wait(timeout=30)
    wait_for(lambda: result.state == "FAILURE" and bogus.state == "FAILURE", timeout=30)
    assert "signature mismatch" in str(result.result)
    assert "not a pgjobs job payload" in str(bogus.result)
    assert events("forged") == [] and len(events("genuine")) == 1
    ref = background.get(result.id)
    assert ref.status == "failed" and ref.error["type"].endswith("InvalidJob")


def test_rollback_publishes_nothing_and_commit_publishes_once(transactional_db):
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        background.enqueue(f"{JOBS}.noop")
        background.enqueue_many([(f"{JOBS}.noop", [], {})] * 3)
        raise Rollback
    assert depth("default") == 0
    with transaction.atomic():
        background.enqueue(f"{JOBS}.noop")
        with pytest.raises(Rollback), transaction.atomic():
            background.enqueue(f"{JOBS}.noop")
            raise Rollback
        assert depth("default") == 0  # held until commit
    assert depth("default") == 1


def test_unique_key_publishes_one_job_and_frees_the_key_when_done(start_celery):
    first = background.enqueue(f"{JOBS}.record_event", args=["unique"], unique_key="k")
    second = background.enqueue(f"{JOBS}.record_event", args=["unique"], unique_key="k")
    assert second.id == first.id
    many = background.enqueue_many([(f"{JOBS}.record_event", ["unique"], {})] * 2, unique_key="m")
    assert many[0].id == many[1].id != first.id
    assert depth("default") == 2
    start_celery()
    first.wait(timeout=30)
    many[0].wait(timeout=30)
    assert len(events("unique")) == 2
    third = background.enqueue(f"{JOBS}.record_event", args=["unique"], unique_key="k")
    assert third.id != first.id
    third.wait(timeout=30)
    assert len(events("unique")) == 3


def test_cancel_revokes_a_job_not_started(start_celery):
    start_celery()
    ref = background.defer(f"{JOBS}.record_event", datetime.timedelta(seconds=2), args=["revoked"])
    time.sleep(0.5)  # the worker holds the message until its eta
    assert ref.cancel() is True
    wait_for(lambda: ref.refresh().status == "cancelled", timeout=30)
    time.sleep(1)
    assert events("revoked") == []


def test_a_worker_killed_mid_job_leads_to_redelivery(start_celery):
    worker = start_celery()
    ref = background.enqueue(f"{JOBS}.record_once", args=["killed", 3.0])
    wait_for(lambda: events("start:killed"), timeout=30)
    worker.kill()  # SIGKILL: the message was not acknowledged (acks_late)
    assert Execution.objects.filter(key="killed").count() == 0
    start_celery()
    ref.wait(timeout=60)
    starts = events("start:killed")
    assert len(starts) == 2 and starts[0].value != starts[1].value  # two processes
    assert len(events("done:killed")) == 1 and events("again:killed") == []


def test_timeout_is_a_soft_time_limit_on_the_prefork_pool(start_celery):
    start_celery(pool="prefork")
    ref = background.enqueue(f"{JOBS}.sleep", args=[30], timeout=1, max_attempts=1)
    started = time.monotonic()
    ref.wait(timeout=30)
    assert time.monotonic() - started < 15
    assert ref.status == "failed"
    assert ref.error["type"].endswith("SoftTimeLimitExceeded")
