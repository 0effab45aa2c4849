"""Queue control (``pgjobs/queue_control.py``): the values and how they are read,
the API (``background.pause_queue``...), ``manage.py pgjobs_queue``, the check,
``Snooze``, and real workers obeying a pause and a global limit. What every store
must do with a control is in tests/test_store_contract.py."""

import io
import time

import pytest
from django.core import checks
from django.core.management import CommandError, call_command
from django.test import override_settings

from pgjobs import NotSupported, Snooze, background, records
from pgjobs.queue_control import (
    ClaimPlan,
    ControlCache,
    admit,
    check_concurrency,
    configured,
    parse_rate,
)
from tests.conftest import run_jobs, wait_for
from tests.test_ops_commands import manage
from tests.testapp import jobs
from tests.testapp.models import Event

QueueControl = records.QueueControl


def status(ref):
    ref.refresh()
    return ref.status


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5/s", (5, 1.0)),
        ("100/m", (100, 60.0)),
        ("10/30s", (10, 30.0)),
        (" 1000 / h ", (1000, 3600.0)),
        ("2/0.5s", (2, 0.5)),
        ((3, 2), (3, 2.0)),
        (None, (None, None)),
    ],
)
def test_rates_read_as_starts_per_period(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("bad", ["5", "5/x", "0/s", "-1/s", "5/0s", "five/s", (0, 1), 5, "5/s/s"])
def test_a_bad_rate_is_one_line_naming_the_argument(bad):
    with pytest.raises(ValueError) as raised:
        parse_rate(bad, "--rate")
    message = str(raised.value)
    assert message.startswith("--rate must read like '5/s'") and "\n" not in message


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", True])
def test_a_concurrency_limit_is_a_whole_number_from_one(bad):
    with pytest.raises(ValueError, match="^concurrency must be a whole number >= 1"):
        check_concurrency(bad)


def test_the_setting_reads_as_controls():
    controls = configured({"api": {"concurrency": 4, "rate": "5/s"}, "heavy": {"concurrency": 2}})
    assert controls == {
        "api": QueueControl("api", False, 4, 5, 1.0),
        "heavy": QueueControl("heavy", False, 2, None, None),
    }


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        (["api"], "PGJOBS['QUEUES'] must be a dict"),
        ({"api": 4}, "PGJOBS['QUEUES']['api'] must be a dict"),
        ({"api": {"concurency": 4}}, "unknown key(s) 'concurency'"),
        ({"api": {"concurrency": -1}}, "PGJOBS['QUEUES']['api']['concurrency'] must be"),
        ({"api": {"rate": "fast"}}, "PGJOBS['QUEUES']['api']['rate'] must read like"),
        ({"": {"rate": "5/s"}}, "PGJOBS['QUEUES'] key must be a queue name"),
    ],
)
def test_a_bad_setting_is_check_e018_naming_the_entry(setting, named):
    with override_settings(
        PGJOBS={"BACKEND": "pgjobs.backends.ImmediateBackend", "QUEUES": setting}
    ):
        messages = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.E018"]
    assert len(messages) == 1 and named in messages[0].msg, messages


def test_a_good_setting_passes_the_checks():
    config = {"BACKEND": "pgjobs.backends.ImmediateBackend", "QUEUES": {"api": {"rate": "5/s"}}}
    with override_settings(PGJOBS=config):
        assert not checks.run_checks(tags=["pgjobs"])


def test_admit_caps_by_running_jobs_and_by_the_rate_window():
    both = QueueControl("q", False, 3, 5, 10.0)
    assert admit(both, 1, None, 0, 100.0, 8) == (2, 100.0, 0), "concurrency: 3 - 1 running"
    assert admit(both, 0, 100.0, 4, 105.0, 8) == (1, 100.0, 4), "rate: 5 - 4 in the window"
    assert admit(both, 0, 100.0, 5, 110.0, 8) == (3, 110.0, 0), "a new window opens"
    assert admit(QueueControl("q", True, 3), 0, None, 0, 1.0, 8)[0] == 0, "paused"


def test_a_claim_without_controls_takes_the_plain_path():
    reads = []

    def load():
        reads.append(1)
        return {}

    cache = ControlCache(load)
    assert cache.plan(["default"]) is None
    assert cache.plan(None) is None
    assert len(reads) == 1, "read once a refresh, not once a claim"


def test_the_plan_excludes_steered_queues_and_orders_limited_ones():
    stored = {
        "emails": QueueControl("emails", paused=True),
        "b": QueueControl("b", concurrency=2),
        "a": QueueControl("a", rate=1, period=1.0),
    }
    cache = ControlCache(lambda: stored)
    assert cache.plan(["default"]) is None, "queues beside the steered ones pay nothing"
    plan = cache.plan(["default", "b", "emails", "a"])
    assert [c.queue for c in plan.limited] == ["a", "b"]
    assert (plan.include, plan.exclude) == (("default",), ())
    assert cache.plan(None) == ClaimPlan(plan.limited, None, ("a", "b", "emails"))


# -- the API and the command ------------------------------------------------------------------


def command(*args):
    out = io.StringIO()
    call_command("pgjobs_queue", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_the_api_pauses_limits_and_resumes_a_queue():
    assert background.pause_queue("other") == QueueControl("other", paused=True)
    limited = background.limit_queue("other", concurrency=4, rate="5/s")
    assert limited == QueueControl("other", True, 4, 5, 1.0)
    assert background.resume_queue("other").paused is False
    background.limit_queue("other", rate=None)
    assert background.queue_controls(["other"])["other"] == QueueControl("other", False, 4)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: background.limit_queue("other", concurrency=-2), "concurrency must be"),
        (lambda: background.limit_queue("other", rate="5 per second"), "rate must read like"),
        (lambda: background.pause_queue(""), "queue must be a queue name"),
        (lambda: background.limit_queue("other"), "give concurrency and/or rate"),
    ],
)
def test_bad_input_to_the_api_names_the_argument_and_writes_nothing(call, named):
    with pytest.raises(ValueError, match=named):
        call()
    assert background.queue_controls(["other"])["other"] == QueueControl("other")


def test_queue_control_needs_a_backend_with_workers():
    with override_settings(PGJOBS={"BACKEND": "pgjobs.backends.ImmediateBackend"}):
        with pytest.raises(NotSupported, match="queue control needs a backend that stores jobs"):
            background.pause_queue("default")


@pytest.mark.django_db
def test_the_command_pauses_limits_shows_and_resumes():
    assert "queue 'other' paused" in command("pause", "other")
    out = command("limit", "other", "--concurrency", "3", "--rate", "10/m")
    assert "at most 3 running, at most 10 starts per 60 s" in out
    shown = command("show", "other").splitlines()
    assert shown[1].split() == ["other", "paused", "3", "10/60s", "0", "0"]
    command("limit", "other", "--concurrency", "none")
    assert "queue 'other' running, at most 10 starts" in command("resume", "other")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["limit", "other", "--concurrency", "-1"], "--concurrency must be a whole number"),
        (["limit", "other", "--concurrency", "lots"], "--concurrency must be a whole number"),
        (["limit", "other", "--rate", "5/fortnight"], "--rate must read like"),
        (["limit", "other"], "limit needs --concurrency and/or --rate"),
        (["pause"], "name the queue"),
        (["pause", "other", "--rate", "5/s"], "go with the limit action"),
    ],
)
def test_bad_input_to_the_command_is_one_line_and_writes_nothing(args, named):
    with pytest.raises(CommandError, match=named):
        command(*args)
    assert background.queue_controls(["other"])["other"] == QueueControl("other")


@pytest.mark.django_db(transaction=True)
def test_manage_py_says_what_is_wrong_in_one_line_without_a_traceback():
    code, out, err = manage("pgjobs_queue", "limit", "other", "--rate", "fast")
    assert code == 1 and "Traceback" not in err
    # The last line is ours; Django's own system-check warnings may come before it
    # (Django 6.1 on MariaDB: models.W037 for the partial indexes it ignores).
    lines = err.strip().splitlines()
    assert lines[-1] == (
        "CommandError: --rate must read like '5/s', '100/m', '10/30s', '1000/h' (starts per "
        "period) or be a (starts, seconds) pair, with starts >= 1; not 'fast'"
    )
    assert not [line for line in lines[:-1] if "pgjobs_queue" in line or "rate" in line]


# -- workers ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_that_snoozes_runs_again_later_on_the_same_attempt():
    ref = background.enqueue(jobs.snooze_once, args=["nap", 0.3], max_attempts=1)
    run_jobs()
    ref.refresh()
    assert (ref.status, ref.error) == (records.READY, None), "back to ready, no error"
    time.sleep(0.35)
    run_jobs()
    assert status(ref) == records.SUCCEEDED
    assert ref.result == "woke"
    runs = list(Event.objects.filter(name="nap").order_by("at"))
    assert [event.value for event in runs] == [1, 1], "the snooze used up no attempt"
    assert runs[1].at - runs[0].at >= 0.3, "never before the snooze ends"


def test_snooze_takes_a_number_of_seconds():
    with pytest.raises(ValueError, match="seconds must be a number >= 0"):
        Snooze(-1)


@pytest.mark.django_db(transaction=True)
def test_a_worker_leaves_a_paused_queue_alone_and_runs_the_rest():
    background.pause_queue("other")
    held = background.enqueue(jobs.noop, queue="other")
    free = background.enqueue(jobs.noop)
    run_jobs()
    assert (status(free), status(held)) == (records.SUCCEEDED, records.READY)
    background.resume_queue("other")
    run_jobs()
    assert status(held) == records.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_worker_processes_together_never_exceed_the_global_limit(start_worker):
    background.limit_queue("other", concurrency=2)
    background.enqueue_many([(jobs.stint, ["heavy", 0.25], {}) for _ in range(10)], queue="other")
    free = background.enqueue_many([(jobs.noop, [], {}) for _ in range(10)])
    for _ in range(4):
        start_worker("--concurrency", "3", "--queue", "other", "--queue", "default")
    wait_for(lambda: Event.objects.filter(name="heavy", value=-1).count() == 10, timeout=60)
    running, most = 0, 0
    for event in Event.objects.filter(name="heavy").order_by("at", "value"):
        running += event.value
        most = max(most, running)
    assert most == 2, f"at most 2 of the queue ran at once on 4 workers; saw {most}"
    wait_for(lambda: all(status(ref) == records.SUCCEEDED for ref in free))


@pytest.mark.django_db(transaction=True)
def test_a_rate_limit_spaces_starts_on_an_in_process_worker():
    background.limit_queue("other", rate="2/0.5s")
    background.enqueue_many([(jobs.record_event, ["tick"], {}) for _ in range(6)], queue="other")
    run_jobs(concurrency=4, timeout=20)
    starts = sorted(Event.objects.filter(name="tick").values_list("at", flat=True))
    assert len(starts) == 6
    assert starts[-1] - starts[0] >= 2 * 0.5 * 0.9, "three windows of two starts each"
