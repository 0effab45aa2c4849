"""``manage.py pgjobs_drain`` and ``manage.py pgjobs_worker``
(``pgjobs/management/commands/``)."""

import datetime
import gc
import io
import signal

import pytest
from django.core.management import CommandError, call_command

from pgjobs import background, records
from pgjobs.handler import get_backend
from pgjobs.models import Job
from pgjobs.worker import build_worker
from tests.conftest import status_counts, wait_for
from tests.testapp import jobs


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """The commands install SIGTERM/SIGINT handlers; give pytest its own back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def drain(*args):
    out = io.StringIO()
    call_command("pgjobs_drain", *args, stdout=out)
    return out.getvalue().strip()


# -- pgjobs_drain --------------------------------------------------------------------


@pytest.mark.django_db
def test_drain_runs_every_due_job_and_prints_a_summary(settings):
    # The retry a minute away, not the suite's 0.05 s: a drain that ended more than
    # that after recording it (a loaded machine) counted it due, "left 1".
    options = {**settings.PGJOBS["OPTIONS"], "RETRY_DELAY": 60.0, "RETRY_MAX_DELAY": 60.0}
    settings.PGJOBS = {**settings.PGJOBS, "OPTIONS": options}
    ok = background.enqueue_many([(jobs.add, [n, n], {}) for n in range(5)])
    bad = background.enqueue(jobs.fail_always, max_attempts=1)
    flaky = background.enqueue(jobs.fail_always, max_attempts=2)
    later = background.defer(jobs.noop, when=datetime.timedelta(hours=1))

    summary = drain()

    assert summary == "pgjobs_drain: ran 7, succeeded 5, failed 2 (1 to retry), left 0"
    assert [ref.refresh().result for ref in ok] == [0, 2, 4, 6, 8]
    assert bad.refresh().status == records.FAILED
    assert flaky.refresh().status == records.READY  # its retry is not due yet
    assert later.refresh().status == records.READY


@pytest.mark.django_db
def test_drain_of_an_empty_queue_says_so():
    assert drain() == "pgjobs_drain: ran 0, succeeded 0, failed 0 (0 to retry), left 0"


@pytest.mark.django_db
def test_drain_max_jobs_stops_after_that_many_and_reports_what_is_left():
    background.enqueue_many([(jobs.noop, [], {}) for _ in range(5)])
    assert (
        drain("--max-jobs", "2")
        == "pgjobs_drain: ran 2, succeeded 2, failed 0 (0 to retry), left 3"
    )
    assert status_counts() == {records.SUCCEEDED: 2, records.READY: 3}
    assert drain("--max-jobs", "10", "--concurrency", "3").startswith("pgjobs_drain: ran 3,")
    assert status_counts() == {records.SUCCEEDED: 5}


@pytest.mark.django_db
def test_drain_queue_works_only_that_queue():
    other = background.enqueue_many([(jobs.noop, [], {}) for _ in range(2)], queue="other")
    default = background.enqueue(jobs.noop)
    assert (
        drain("--queue", "other")
        == "pgjobs_drain: ran 2, succeeded 2, failed 0 (0 to retry), left 0"
    )
    assert {ref.refresh().status for ref in other} == {records.SUCCEEDED}
    assert default.refresh().status == records.READY
    assert drain("--queue", "default", "--queue", "other").startswith("pgjobs_drain: ran 1,")


@pytest.mark.django_db
def test_drain_max_seconds_bounds_claiming():
    background.enqueue_many([(jobs.noop, [], {}) for _ in range(3)])
    assert drain("--max-seconds", "30").startswith("pgjobs_drain: ran 3,")


@pytest.mark.parametrize("command", ["pgjobs_drain", "pgjobs_worker"])
@pytest.mark.django_db
def test_an_unknown_queue_is_a_command_error(command):
    with pytest.raises(CommandError, match="unknown queue nope"):
        call_command(command, "--queue", "nope", stdout=io.StringIO())


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("pgjobs_drain", ["--concurrency", "0"], "--concurrency"),
        ("pgjobs_worker", ["--concurrency", "0"], "--concurrency"),
        ("pgjobs_drain", ["--max-jobs", "0"], "--max-jobs"),
        ("pgjobs_drain", ["--max-seconds", "-1"], "--max-seconds"),
    ],
)
@pytest.mark.django_db
def test_bad_numbers_are_command_errors(command, args, message):
    with pytest.raises(CommandError, match=message):
        call_command(command, *args, stdout=io.StringIO())


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("pgjobs_worker", ["--poll-interval", "-1"], r"--poll-interval .*must be a finite number"),
        ("pgjobs_worker", ["--poll-interval", "0"], r"--poll-interval .*must be a finite number"),
        ("pgjobs_worker", ["--poll-interval", "nan"], r"--poll-interval .*must be a finite number"),
        ("pgjobs_worker", ["--poll-interval", "inf"], r"--poll-interval .*must be a finite number"),
        ("pgjobs_worker", ["--grace-period", "-1"], r"--grace-period .*must be a finite number"),
        ("pgjobs_worker", ["--grace-period", "nan"], r"--grace-period .*must be a finite number"),
        (
            "pgjobs_worker",
            ["--concurrency", "-3"],
            r"--concurrency .*must be a whole number from 1",
        ),
        ("pgjobs_worker", ["--concurrency", "100000"], "run more worker processes"),
        ("pgjobs_drain", ["--concurrency", "100000"], "run more worker processes"),
        ("pgjobs_worker", ["--prefetch", "-1"], r"--prefetch .*must be a whole number, 0 or more"),
        ("pgjobs_drain", ["--prefetch", "-1"], r"--prefetch .*must be a whole number, 0 or more"),
        ("pgjobs_drain", ["--max-seconds", "nan"], "--max-seconds"),
        ("pgjobs_worker", ["--hostname", "web:3"], r"--hostname: 'web:3' is not a host name"),
        ("pgjobs_drain", ["--hostname", ""], r"--hostname: '' is not a host name"),
        ("pgjobs_worker", ["--hostname", "x" * 61], r"--hostname: 'x+' is not a host name"),
    ],
)
@pytest.mark.django_db
def test_numbers_a_worker_cannot_honour_are_one_line_errors_and_nothing_is_written(
    command, args, message
):
    """Issue 20 (items 4 and 5): a negative or NaN poll interval made an idle worker
    spin; a huge concurrency started that many threads."""
    store = get_backend().store
    with pytest.raises(CommandError, match=message) as refused:
        call_command(command, *args, stdout=io.StringIO())
    assert "\n" not in str(refused.value)
    assert not store.live_workers(), "the worker registered before refusing"


def test_build_worker_refuses_the_same_numbers_with_value_errors():
    with pytest.raises(ValueError, match="--poll-interval"):
        build_worker(poll_interval=float("nan"))
    with pytest.raises(ValueError, match="--grace-period"):
        build_worker(grace_period=-1)
    with pytest.raises(ValueError, match="--concurrency"):
        build_worker(concurrency=10**6)
    with pytest.raises(ValueError, match="unknown queue nope"):
        build_worker(queues=["nope"])


@pytest.mark.parametrize("command", ["pgjobs_drain", "pgjobs_worker"])
def test_a_backend_without_a_queue_to_work_is_a_command_error(settings, command):
    settings.PGJOBS = {"BACKEND": "pgjobs.backends.ImmediateBackend"}
    with pytest.raises(CommandError, match="runs jobs without a worker"):
        call_command(command, stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_drain_as_cron_runs_it(start_worker):
    refs = background.enqueue_many([(jobs.add, [n, 1], {}) for n in range(10)])
    process = start_worker("--concurrency", "2", command="pgjobs_drain")
    assert process.wait(timeout=30) == 0, process.output()
    assert process.stdout.strip() == (
        "pgjobs_drain: ran 10, succeeded 10, failed 0 (0 to retry), left 0"
    )
    assert [ref.refresh().result for ref in refs] == [n + 1 for n in range(10)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.parametrize("command", ["pgjobs_drain", "pgjobs_worker"])
def test_a_command_run_from_the_command_line_freezes_its_start_up_objects(start_worker, command):
    ref = background.enqueue(jobs.frozen_objects)
    process = start_worker(command=command)
    wait_for(lambda: ref.refresh().status == records.SUCCEEDED, timeout=30)
    # Django's and pgjobs' modules, classes and settings: tens of thousands.
    assert ref.result > 10_000, process.output()


@pytest.mark.django_db
def test_a_drain_called_inside_a_process_leaves_its_garbage_collector_alone():
    frozen = gc.get_freeze_count()
    ref = background.enqueue(jobs.frozen_objects)
    drain()
    assert ref.refresh().result == frozen
    assert gc.get_freeze_count() == frozen


# -- pgjobs_worker -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_worker_prints_its_banner_and_stops_cleanly_on_sigterm(start_worker):
    worker = start_worker("--concurrency", "3", "--queue", "other", "--poll-interval", "0.5")
    worker.wait_for_output("Stop with Ctrl-C or SIGTERM.")
    banner = worker.stdout
    store = background.backend.get_store()
    assert f"backend:     {type(background.backend).__name__} ({store.describe()})" in banner
    assert "queues:      other\n" in banner
    assert "concurrency: 3\n" in banner
    if store.supports_listen:
        assert "wake-up:     notified, polling every 0.5 s as a safety net" in banner
    else:
        assert "wake-up:     polling every 0.5 s" in banner

    ref = background.enqueue(jobs.add, args=[1, 2], queue="other")
    ignored = background.enqueue(jobs.add, args=[1, 2])
    assert ref.wait(timeout=20).result == 3
    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert "pgjobs worker stopped: ran 1 (1 succeeded, 0 failed), put back 0" in worker.stdout
    assert ignored.refresh().status == records.READY


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_worker_logs_each_job_through_the_pgjobs_logger(start_worker):
    worker = start_worker("-v", "2")
    ref = background.enqueue(jobs.add, args=[2, 2])
    failed = background.enqueue(jobs.fail_always, args=["logged"], max_attempts=1)
    assert ref.wait(timeout=20).result == 4
    failed.wait(timeout=20)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0
    log = worker.stderr
    assert f"job {ref.id} tests.testapp.jobs.add started" in log
    assert f"job {ref.id} tests.testapp.jobs.add succeeded" in log
    assert f"job {failed.id} tests.testapp.jobs.fail_always failed for good" in log
    assert "RuntimeError: logged" in log
    assert Job.objects.get(pk=failed.id).status == records.FAILED


@pytest.mark.parametrize(
    ("verbosity", "summary", "per_job"),
    [(0, False, False), (1, True, False), (2, True, True)],
)
def test_per_job_lines_need_verbosity_2_and_the_default_logs_summaries(verbosity, summary, per_job):
    """Issue 21: a line per job at the default verbosity cost as much as the rest
    of the worker; it logs a summary every few seconds instead (``pgjobs`` at
    INFO) and each job at ``-v 2`` (``pgjobs.jobs``)."""
    import logging

    from pgjobs.management.commands._options import configure_logging

    loggers = [logging.getLogger("pgjobs"), logging.getLogger("pgjobs.jobs")]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.NOTSET)
        configure_logging(verbosity)
        assert loggers[0].isEnabledFor(logging.INFO) is summary
        assert loggers[1].isEnabledFor(logging.INFO) is per_job
        assert loggers[1].isEnabledFor(logging.WARNING)
    finally:
        for logger, level, handlers in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_drains_overlap_safely_with_each_other_and_with_a_worker(start_worker):
    import re

    from tests.testapp.models import Execution

    total = 400
    background.enqueue_many([(jobs.record, [f"k{n}"], {}) for n in range(total)])
    worker = start_worker("--concurrency", "2", persistent_connections=True)
    drains = [
        start_worker("--concurrency", "2", command="pgjobs_drain", persistent_connections=True)
        for _ in range(2)
    ]
    for drain in drains:
        assert drain.wait(timeout=60) == 0, drain.output()
    wait_for(lambda: status_counts() == {records.SUCCEEDED: total}, timeout=60)
    worker.wait_until_started()  # the drains may have run every job before it was up
    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()

    assert Execution.objects.count() == total  # unique keys: none ran twice
    ran = [int(re.findall(r"\bran (\d+)", p.stdout)[-1]) for p in [*drains, worker]]
    assert sum(ran) == total, [p.stdout for p in [*drains, worker]]
