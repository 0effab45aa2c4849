"""Scheduled jobs (``pgjobs/schedule.py``): ticks across DST changes, the SCHEDULE
checks, enqueuing each tick exactly once under a fake clock, the store's
compare-and-set, the commands, and real drain processes racing on one tick.

The scheduler and store tests go through the store interface, so they run
against every store (``PGJOBS_TEST_DB=redis`` too); those that read pgjobs'
tables are the database stores'."""

import datetime
import functools
import io
import json
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from django.conf import settings as django_settings
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgjobs import BaseJobBackend, records
from pgjobs.handler import get_backend
from pgjobs.models import Job, ScheduleState
from pgjobs.schedule import (
    CATCH_UP_BATCH,
    RETRY_INTERVAL,
    CronTicks,
    EveryTicks,
    Scheduler,
    parse_schedules,
)
from pgjobs.worker import Worker
from tests.conftest import JOBS_IN_REDIS, VENDOR, wait_for
from tests.testapp import jobs
from tests.testapp.models import Event

UTC = datetime.UTC
MINUTE = datetime.timedelta(minutes=1)
HOUR = datetime.timedelta(hours=1)
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def ticks_after(ticks, start, count):
    out = []
    for _ in range(count):
        start = ticks.after(start)
        out.append(start)
    return out


# -- ticks ---------------------------------------------------------------------------


def test_every_counts_real_time_from_the_epoch():
    hourly = EveryTicks(HOUR)
    assert hourly.after(utc(2024, 5, 1, 10, 30)) == utc(2024, 5, 1, 11)
    assert hourly.after(utc(2024, 5, 1, 11)) == utc(2024, 5, 1, 12)
    assert hourly.at_or_before(utc(2024, 5, 1, 11)) == utc(2024, 5, 1, 11)
    assert hourly.at_or_before(utc(2024, 5, 1, 10, 59, 59)) == utc(2024, 5, 1, 10)
    # DST does not exist for it: an hour is an hour.
    start = datetime.datetime(2024, 10, 27, 1, tzinfo=AMSTERDAM)
    assert [t - start for t in ticks_after(hourly, start, 3)] == [HOUR, 2 * HOUR, 3 * HOUR]
    odd = EveryTicks(datetime.timedelta(seconds=1.5))
    assert odd.after(utc(1970, 1, 1)) == utc(1970, 1, 1, 0, 0, 1, 500000)


def test_cron_runs_on_the_wall_clock_of_the_time_zone():
    nightly = CronTicks("0 3 * * *", AMSTERDAM)
    winter, summer = nightly.after(utc(2024, 1, 10)), nightly.after(utc(2024, 7, 10))
    assert (winter, summer) == (utc(2024, 1, 10, 2), utc(2024, 7, 10, 1))


def test_cron_spring_forward_a_skipped_time_runs_once_when_the_clock_jumps():
    # Amsterdam, 2024-03-31: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    daily = CronTicks("30 2 * * *", AMSTERDAM)
    assert ticks_after(daily, utc(2024, 3, 30, 12), 3) == [
        utc(2024, 3, 31, 1),  # 02:30 does not exist that day: at the jump, 03:00 CEST
        utc(2024, 4, 1, 0, 30),  # 02:30 CEST
        utc(2024, 4, 2, 0, 30),
    ]
    quarterly = CronTicks("*/15 * * * *", AMSTERDAM)
    assert ticks_after(quarterly, utc(2024, 3, 31, 0, 30), 4) == [
        utc(2024, 3, 31, 0, 45),  # 01:45 CET
        utc(2024, 3, 31, 1, 0),  # 02:00-02:45 skipped, run once at 03:00 CEST
        utc(2024, 3, 31, 1, 15),  # 03:15 CEST
        utc(2024, 3, 31, 1, 30),
    ]
    # New York, 2024-03-10: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    assert CronTicks("30 2 * * *", NEW_YORK).after(utc(2024, 3, 10)) == utc(2024, 3, 10, 7)


def test_cron_fall_back_a_repeated_time_runs_once_unless_minute_or_hour_is_a_wildcard():
    # Amsterdam, 2024-10-27: 03:00 CEST becomes 02:00 CET (01:00 UTC).
    daily = CronTicks("30 2 * * *", AMSTERDAM)
    assert ticks_after(daily, utc(2024, 10, 26, 12), 2) == [
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST; not again at 02:30 CET
        utc(2024, 10, 28, 1, 30),
    ]
    half_hourly = CronTicks("*/30 * * * *", AMSTERDAM)
    assert ticks_after(half_hourly, utc(2024, 10, 26, 23, 45), 6) == [
        utc(2024, 10, 27, 0, 0),  # 02:00 CEST
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST
        utc(2024, 10, 27, 1, 0),  # 02:00 CET
        utc(2024, 10, 27, 1, 30),  # 02:30 CET
        utc(2024, 10, 27, 2, 0),  # 03:00 CET
        utc(2024, 10, 27, 2, 30),
    ]
    # New York, 2024-11-03: 02:00 EDT becomes 01:00 EST (06:00 UTC).
    assert ticks_after(CronTicks("30 1 * * *", NEW_YORK), utc(2024, 11, 3), 2) == [
        utc(2024, 11, 3, 5, 30),  # 01:30 EDT only
        utc(2024, 11, 4, 6, 30),
    ]
    assert ticks_after(CronTicks("0 * * * *", NEW_YORK), utc(2024, 11, 3, 4, 30), 3) == [
        utc(2024, 11, 3, 5),  # 01:00 EDT
        utc(2024, 11, 3, 6),  # 01:00 EST
        utc(2024, 11, 3, 7),  # 02:00 EST
    ]
    assert CronTicks("0 * * * *", NEW_YORK).at_or_before(utc(2024, 11, 3, 6, 59)) == utc(
        2024, 11, 3, 6
    )
    assert daily.at_or_before(utc(2024, 10, 27, 1, 45)) == utc(2024, 10, 27, 0, 30)


# A brute-force oracle: step through every minute of UTC, read the wall clock,
# and decide by the rules of the module docstring. Expressions restrict minute
# and hour only, so matching is membership in croniter's own expansion.


def cron_field(low, high):
    values = st.integers(low, high)
    # Distinct bounds: croniter reads "5-5" as the whole cycle.
    ranges = st.integers(low, high - 1).flatmap(
        lambda first: st.tuples(st.just(first), st.integers(first + 1, high))
    )
    return st.one_of(
        st.just("*"),
        st.integers(2, 30).map(lambda step: f"*/{step}"),
        values.map(str),
        st.lists(values, min_size=2, max_size=4, unique=True).map(
            lambda v: ",".join(map(str, sorted(v)))
        ),
        ranges.map(lambda pair: f"{pair[0]}-{pair[1]}"),
        st.tuples(ranges, st.integers(2, 5)).map(lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"),
    )


CRON_EXPRESSIONS = st.one_of(
    st.sampled_from(["30 2 * * *", "0 3 * * *", "*/15 * * * *", "0 * * * *", "* 2 * * *"]),
    st.builds(lambda minute, hour: f"{minute} {hour} * * *", cron_field(0, 59), cron_field(0, 23)),
)
ORACLE_DAYS = {
    # zone: the day of each change in 2024 (Sao Paulo: 2018-19, midnight changes)
    "Europe/Amsterdam": [utc(2024, 3, 31), utc(2024, 10, 27)],
    "America/New_York": [utc(2024, 3, 10, 5), utc(2024, 11, 3, 5)],
    "Australia/Lord_Howe": [utc(2024, 4, 6, 13), utc(2024, 10, 5, 13)],  # 30-minute changes
    "America/Sao_Paulo": [utc(2018, 11, 4, 3), utc(2019, 2, 17, 3)],
}
ORACLE_SPAN = datetime.timedelta(hours=52)  # a daily tick either side of +-24 h


@functools.cache
def oracle_ticks(expression, zone, day):
    tz = ZoneInfo(zone)
    minutes, hours = croniter(expression).expanded[:2]

    def matches(wall):
        return (minutes == ["*"] or wall.minute in minutes) and (
            hours == ["*"] or wall.hour in hours
        )

    def wall(instant):
        return instant.astimezone(tz).replace(tzinfo=None)

    wildcard = expression.split()[0].startswith("*") or expression.split()[1].startswith("*")
    ticks = []
    instant = day - ORACLE_SPAN
    previous = wall(instant - MINUTE)
    while instant < day + ORACLE_SPAN:
        here = wall(instant)
        first = here.replace(tzinfo=tz, fold=0).astimezone(UTC) == instant
        hit = matches(here) and (first or wildcard)
        skipped = previous + MINUTE
        while not hit and skipped < here:  # the clock jumped over these
            hit = matches(skipped)
            skipped += MINUTE
        if hit:
            ticks.append(instant)
        previous = here
        instant += MINUTE
    return ticks


@settings(max_examples=200, deadline=None)
@given(
    expression=CRON_EXPRESSIONS,
    zone=st.sampled_from(sorted(ORACLE_DAYS)),
    which=st.integers(0, 1),
    offset=st.integers(-24 * 3600, 24 * 3600),
    micro=st.sampled_from([0, 1, 999999]),
)
def test_cron_ticks_match_a_minute_by_minute_oracle_around_dst_changes(
    expression, zone, which, offset, micro
):
    day = ORACLE_DAYS[zone][which]
    ticks = CronTicks(expression, ZoneInfo(zone))
    instant = day + datetime.timedelta(seconds=offset, microseconds=micro)
    expected = oracle_ticks(expression, zone, day)
    assert ticks.after(instant) == next(t for t in expected if t > instant)
    assert ticks.at_or_before(instant) == [t for t in expected if t <= instant][-1]


# -- the setting and its checks ----------------------------------------------------------


class DeferringWithoutStore(BaseJobBackend):
    """Defers (by itself, somewhere): no store for pgjobs' workers to work."""

    def enqueue(self, func, args, kwargs):
        return None

    def defer(self, func, when, args, kwargs):
        return None


DATABASE = "pgjobs.backends.DatabaseBackend"
GOOD = {
    "nightly": {"func": "tests.testapp.jobs.noop", "cron": "0 3 * * *"},
    "sync": {
        "func": jobs.add,
        "every": datetime.timedelta(minutes=5),
        "args": [1, 2],
        "queue": "other",
        "priority": 5,
        "max_attempts": 2,
        "timeout": 30,
        "catch_up": "all",
    },
    "hourly.report-2": {"func": "tests.testapp.jobs.echo", "cron": "@hourly", "catch_up": 3},
}


def schedule_messages(schedule, backend=DATABASE):
    config = {"BACKEND": backend, "OPTIONS": {"QUEUES": ["default", "other"]}}
    with override_settings(PGJOBS={**config, "SCHEDULE": schedule}):
        return checks.run_checks(tags=["pgjobs"])


def schedule_ids(schedule, backend=DATABASE):
    return sorted({m.id for m in schedule_messages(schedule, backend)})


def test_a_good_schedule_passes_the_checks():
    assert schedule_messages(GOOD) == []


def test_e004_schedule_on_a_backend_that_cannot_be_worked():
    (message,) = schedule_messages(GOOD, backend="tests.test_schedule.DeferringWithoutStore")
    assert message.id == "pgjobs.E004"
    assert "pgjobs_drain" in message.msg and "DeferringWithoutStore" in message.msg


@pytest.mark.parametrize(
    "schedule, text",
    [
        ([GOOD["nightly"]], "must be a dict"),
        ({"nightly": "0 3 * * *"}, "must be a dict"),
        ({"nightly": {**GOOD["nightly"], "when": "3am"}}, "unknown key(s) when"),
        ({"night ly": GOOD["nightly"]}, "'night ly' is not valid"),
        ({"": GOOD["nightly"]}, "'' is not valid"),
        ({"n" * 101: GOOD["nightly"]}, "is not valid"),
        ({42: GOOD["nightly"]}, "42 is not valid"),
    ],
)
def test_e007_malformed_schedule(schedule, text):
    (message,) = schedule_messages(schedule)
    assert (message.id, isinstance(message, checks.Error)) == ("pgjobs.E007", True)
    assert text in message.msg
    assert "PGJOBS['SCHEDULE']" in message.msg


@pytest.mark.parametrize(
    "func, text",
    [
        (None, "has no 'func'"),
        ("tests.testapp.jobs.no_such_job", "cannot import job function"),
        ("no.such.module.job", "cannot import job function"),
        (lambda: None, "is a lambda"),
    ],
)
def test_e008_function_missing_or_unimportable(func, text):
    entry = {"cron": "0 3 * * *"} if func is None else {"func": func, "cron": "0 3 * * *"}
    (message,) = schedule_messages({"nightly": entry})
    assert message.id == "pgjobs.E008"
    assert text in message.msg and "'nightly'" in message.msg
    assert message.hint


@pytest.mark.parametrize(
    "timing, text",
    [
        ({}, "exactly one of 'cron' and 'every'."),
        ({"cron": "0 3 * * *", "every": HOUR}, "not both"),
        ({"cron": "61 * * * *"}, "not a valid cron expression"),
        ({"cron": "0 0 30 2 *"}, "can never occur"),
        ({"cron": "0 3 * *"}, "does not have five fields"),
        ({"cron": "0 0 3 * * *"}, "does not have five fields"),
        ({"cron": "@sometimes"}, "does not have five fields"),
        ({"cron": 3}, "must be a string"),
        ({"every": 300}, "must be a positive datetime.timedelta"),
        ({"every": datetime.timedelta(0)}, "must be a positive datetime.timedelta"),
        ({"every": -HOUR}, "must be a positive datetime.timedelta"),
    ],
)
def test_e009_bad_timing(timing, text):
    (message,) = schedule_messages({"nightly": {"func": "tests.testapp.jobs.noop", **timing}})
    assert message.id == "pgjobs.E009"
    assert text in message.msg
    assert message.hint


@pytest.mark.parametrize(
    "options, text",
    [
        ({"priority": 1000}, "priority 1000 is out of range"),
        ({"priority": "high"}, "priority must be a whole number"),
        ({"queue": "nope"}, "unknown queue 'nope'"),
        ({"args": "x"}, "args must be a list"),
        ({"kwargs": {"when": object()}}, "kwargs['when']"),
        ({"max_attempts": 0}, "max_attempts must be a whole number from 1 to 2,147,483,647"),
        ({"timeout": -1}, "timeout must be a number of seconds > 0"),
        ({"catch_up": "some"}, "['catch_up'] is 'some'"),
        ({"catch_up": 0}, "['catch_up'] is 0"),
        ({"catch_up": 1001}, "['catch_up'] is 1001"),
        ({"catch_up": True}, "['catch_up'] is True"),
    ],
)
def test_e010_bad_job_options_or_catch_up(options, text):
    entry = {"func": "tests.testapp.jobs.noop", "cron": "0 3 * * *", **options}
    (message,) = schedule_messages({"nightly": entry})
    assert message.id == "pgjobs.E010"
    assert text in message.msg


def test_e011_names_that_differ_only_in_case_are_duplicates():
    (message,) = schedule_messages(
        {"Nightly": GOOD["nightly"], "nightly": {**GOOD["nightly"], "cron": "0 4 * * *"}}
    )
    assert message.id == "pgjobs.E011"
    assert "'Nightly', 'nightly'" in message.msg and "MySQL" in message.hint


def test_w002_two_schedules_of_the_same_job_at_the_same_times():
    (message,) = schedule_messages(
        {"a": GOOD["nightly"], "b": {**GOOD["nightly"], "cron": " 0  3 * * * "}}
    )
    assert (message.id, isinstance(message, checks.Warning)) == ("pgjobs.W002", True)
    different_args = {"a": GOOD["sync"], "b": {**GOOD["sync"], "args": [2, 1]}}
    assert schedule_messages(different_args) == []


def test_every_problem_of_every_entry_is_reported():
    assert schedule_ids(
        {
            "a": {"func": "no.such.job", "cron": "61 * * * *", "catch_up": "x"},
            "b": {"func": "tests.testapp.jobs.noop", "cron": "0 3 * * *", "queue": "nope"},
            "c": GOOD["nightly"],
        }
    ) == ["pgjobs.E008", "pgjobs.E009", "pgjobs.E010"]


def test_the_commands_refuse_a_bad_schedule(settings):
    settings.PGJOBS = {**settings.PGJOBS, "SCHEDULE": {"x": {"func": "tests.testapp.jobs.noop"}}}
    with pytest.raises(CommandError, match=r"exactly one of 'cron' and 'every'.*pgjobs.E009"):
        call_command("pgjobs_drain", stdout=io.StringIO())


# -- the scheduler, with a fake clock ------------------------------------------------------

# Fake times are in the past: the store refuses ticks later than its own clock.
T0 = utc(2020, 1, 6, 10, 0, 30)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += datetime.timedelta(**delta)


def make_scheduler(entries, clock, tz=UTC):
    schedules, problems = parse_schedules(entries, get_backend(), tz=tz)
    assert not problems
    return Scheduler(get_backend(), schedules, clock=clock)


def store():
    return get_backend().get_store()


def jobs_in_store():
    return sum(sum(q["counts"].values()) for q in store().status()["queues"])


def succeeded_jobs():
    return sum(q["counts"].get(records.SUCCEEDED, 0) for q in store().status()["queues"])


def clear_store():
    if JOBS_IN_REDIS:
        from tests.redis_settings import flush_jobs

        flush_jobs()
    else:
        Job.objects.all().delete()
        ScheduleState.objects.all().delete()


@pytest.fixture
def enqueued(monkeypatch):
    """The jobs schedulers enqueue (``JobInfo``s, as the store returned them)."""
    jobs_ = []
    advance = store().advance_schedule

    def recording(*args, **kwargs):
        result = advance(*args, **kwargs)
        jobs_.extend(result or [])
        return result

    monkeypatch.setattr(store(), "advance_schedule", recording)
    return jobs_


def runs(enqueued):
    """The run_at of each enqueued job, checked against the store: each job is
    there, once, and the store holds no other."""
    assert len({job.id for job in enqueued}) == len(enqueued)
    assert jobs_in_store() == len(enqueued)
    for job in enqueued:
        assert store().get(job.id).run_at == job.run_at
    return sorted(job.run_at for job in enqueued)


def every(minutes=1, **entry):
    return {
        "func": "tests.testapp.jobs.add",
        "every": datetime.timedelta(minutes=minutes),
        "args": [1, 2],
        **entry,
    }


@pytest.mark.django_db
def test_a_new_schedule_starts_from_the_moment_it_is_first_seen(enqueued):
    clock = Clock(T0)
    scheduler = make_scheduler({"s": every(queue="other", priority=7)}, clock)
    assert scheduler.enqueue_due() == 30.0  # seconds until 10:01
    assert runs(enqueued) == []  # 10:00 was before the schedule existed
    assert store().get_schedules(["s"]) == {"s": records.ScheduleInfo("s", T0, None)}

    clock.advance(seconds=30)
    assert scheduler.enqueue_due() == 60.0
    assert runs(enqueued) == [utc(2020, 1, 6, 10, 1)]  # its tick: never runs early
    job = store().get(enqueued[0].id)
    assert (job.func, job.queue, job.priority) == ("tests.testapp.jobs.add", "other", 7)
    tick = utc(2020, 1, 6, 10, 1)
    assert store().get_schedules(["s"]) == {"s": records.ScheduleInfo("s", tick, tick)}
    assert scheduler.enqueued == 1


@pytest.mark.django_db
def test_a_scheduled_job_is_a_signed_job_with_the_ticks_unique_key():
    clock = Clock(T0)
    scheduler = make_scheduler({"s": every(kwargs={"b": 2}, args=[1])}, clock)
    scheduler.enqueue_due()
    clock.advance(seconds=30)
    scheduler.enqueue_due()
    job = Job.objects.get()
    assert job.unique_key == "schedule:s:2020-01-06T10:01:00+00:00"
    assert (job.args, job.kwargs) == ([1], {"b": 2})
    assert job.signature


@pytest.mark.django_db
def test_each_tick_once_however_many_schedulers_and_after_its_job_finished(enqueued):
    clock = Clock(T0)
    schedulers = [make_scheduler({"s": every()}, clock) for _ in range(3)]
    for scheduler in schedulers:
        scheduler.enqueue_due()
    clock.advance(minutes=1)
    for scheduler in schedulers:
        scheduler.enqueue_due()
    (job,) = enqueued
    (claimed,) = store().claim(None, 10, "test-worker")
    store().finish("test-worker", [(claimed.id, None)])  # its unique key is free again
    assert store().get(job.id).status == records.SUCCEEDED
    newcomer = make_scheduler({"s": every()}, clock)
    for scheduler in [*schedulers, newcomer]:
        scheduler.enqueue_due()
    assert runs(enqueued) == [utc(2020, 1, 6, 10, 1)]
    assert sum(s.enqueued for s in schedulers) == 1


@pytest.mark.django_db
def test_after_downtime_a_missed_schedule_runs_once_for_its_latest_tick(enqueued):
    clock = Clock(T0)
    scheduler = make_scheduler({"s": every(60)}, clock)
    scheduler.enqueue_due()
    clock.advance(hours=10)
    scheduler.enqueue_due()
    assert runs(enqueued) == [utc(2020, 1, 6, 20)]


@pytest.mark.django_db
def test_catch_up_n_runs_the_n_latest_missed_ticks(enqueued):
    clock = Clock(T0)
    scheduler = make_scheduler({"s": every(60, catch_up=3)}, clock)
    scheduler.enqueue_due()
    clock.advance(hours=10)
    scheduler.enqueue_due()
    assert [run.hour for run in runs(enqueued)] == [18, 19, 20]


@pytest.mark.django_db
def test_catch_up_all_runs_every_missed_tick_a_batch_per_pass(enqueued):
    clock = Clock(T0)
    scheduler = make_scheduler({"s": every(catch_up="all")}, clock)
    scheduler.enqueue_due()
    clock.advance(minutes=250)
    assert scheduler.enqueue_due() == 0.0  # more are due: call again at once
    assert len(enqueued) == CATCH_UP_BATCH
    while scheduler.enqueue_due() == 0.0:
        pass
    assert runs(enqueued) == [utc(2020, 1, 6, 10, 1) + n * MINUTE for n in range(250)]


@pytest.mark.django_db
def test_a_schedule_renamed_only_in_case_still_runs(enqueued):
    """MySQL finds the old row ("Nightly") for the new name; the others make a new one."""
    ScheduleState.objects.create(name="Nightly", last_tick=T0)
    clock = Clock(T0)
    scheduler = make_scheduler({"nightly": every()}, clock)
    scheduler.enqueue_due()
    clock.advance(minutes=1)
    scheduler.enqueue_due()
    assert runs(enqueued) == [utc(2020, 1, 6, 10, 1)]


@pytest.mark.django_db
def test_a_tick_later_than_the_stores_clock_is_not_enqueued(enqueued):
    """A host whose clock runs fast cannot enqueue early, nor move the record ahead."""
    tomorrow = timezone.now() + datetime.timedelta(days=1)
    clock = Clock(tomorrow)
    scheduler = make_scheduler({"s": every()}, clock)
    scheduler.enqueue_due()
    # Created at the store's time, not this host's.
    created = store().get_schedules(["s"])["s"].last_tick
    assert created < tomorrow - datetime.timedelta(hours=23)
    clock.advance(minutes=5)
    assert scheduler.enqueue_due() == RETRY_INTERVAL  # refused: look again soon
    assert runs(enqueued) == []
    assert store().get_schedules(["s"])["s"].last_tick == created


@pytest.mark.django_db
def test_a_cron_schedule_enqueues_ticks_of_the_local_wall_clock(enqueued):
    clock = Clock(utc(2020, 3, 28, 12))  # Amsterdam: clocks go forward on the 29th
    scheduler = make_scheduler(
        {"n": {"func": "tests.testapp.jobs.noop", "cron": "30 2 * * *"}}, clock, tz=AMSTERDAM
    )
    for _ in range(3 * 24 * 4):
        scheduler.enqueue_due()
        clock.advance(minutes=15)
    assert runs(enqueued) == [
        utc(2020, 3, 29, 1),  # 02:30 skipped: 03:00 CEST
        utc(2020, 3, 30, 0, 30),  # 02:30 CEST
        utc(2020, 3, 31, 0, 30),
    ]


@pytest.mark.django_db
def test_without_use_tz_times_are_stored_naive_in_time_zone():
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Amsterdam"):
        clock = Clock(datetime.datetime(2020, 1, 6, 11, 0, 30))  # naive, like timezone.now()
        scheduler = make_scheduler({"s": every(60)}, clock, tz=AMSTERDAM)
        scheduler.enqueue_due()
        clock.advance(hours=1)
        scheduler.enqueue_due()
        (job,) = Job.objects.all()
        assert job.run_at == datetime.datetime(2020, 1, 6, 12)  # 11:00 UTC, in Amsterdam
        state = ScheduleState.objects.get()
        assert state.last_tick == state.last_run == datetime.datetime(2020, 1, 6, 12)


@pytest.mark.django_db
def test_status_lists_last_and_next_run_and_overdue_ticks():
    clock = Clock(T0)
    scheduler = make_scheduler({"s": every(60), "t": every(30)}, clock)
    scheduler.enqueue_due()
    clock.advance(hours=1)
    scheduler.enqueue_due()
    clock.advance(hours=2)
    rows = {row["name"]: row for row in scheduler.status()}
    assert rows["s"]["last_run"] == utc(2020, 1, 6, 11)
    assert rows["s"]["next_run"] == utc(2020, 1, 6, 14)
    assert rows["s"]["overdue_since"] == utc(2020, 1, 6, 12)
    assert rows["s"]["when"] == "every 1:00:00"
    scheduler.enqueue_due()
    rows = {row["name"]: row for row in scheduler.status()}
    assert rows["s"]["last_run"] == utc(2020, 1, 6, 13)
    assert rows["s"]["overdue_since"] is None


# The property: random schedules, several schedulers (processes) and a clock that
# jumps back and forth; the jobs in the store are exactly what a plain model of
# the catch-up policy says: no tick twice, none skipped but by the policy.
SCHEDULE_ENTRIES = st.one_of(
    st.builds(
        lambda minutes: {"every": datetime.timedelta(minutes=minutes)},
        st.sampled_from([5, 17, 60, 90, 24 * 60]),
    ),
    st.builds(lambda cron: {"cron": cron}, CRON_EXPRESSIONS),
    st.builds(lambda cron: {"cron": cron}, st.sampled_from(["0 0 * * 1", "15 4 1 * *"])),
)
CATCH_UP = st.sampled_from(["latest", "all", 1, 2, 5])
STARTS = st.sampled_from(
    [utc(2019, 3, 30, 20), utc(2019, 10, 26, 20), utc(2020, 6, 1), utc(2009, 12, 31, 23, 59, 59)]
)
PASSES = st.lists(
    st.tuples(st.integers(0, 2), st.integers(-2 * 3600, 5 * 3600)), min_size=1, max_size=8
)


def model_jobs(entry, catch_up, tz, times):
    """What should be enqueued: a direct reading of the documented policy."""
    schedules, _ = parse_schedules({"m": {"func": "tests.testapp.jobs.noop", **entry}}, tz=tz)
    ticks = schedules[0].ticks
    settled, enqueued = None, []
    for now in times:
        if settled is None:
            settled = now  # first seen: ticks from here on
        while True:
            due, tick = [], ticks.after(settled)
            while tick <= now:
                due.append(tick)
                tick = ticks.after(tick)
            if catch_up == "all":
                due = due[:CATCH_UP_BATCH]
            else:
                due = due[-(1 if catch_up == "latest" else catch_up) :]
            if not due:
                break
            enqueued += due
            settled = due[-1]
            if catch_up != "all":
                break
    return enqueued


@pytest.mark.django_db
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entry=SCHEDULE_ENTRIES, catch_up=CATCH_UP, start=STARTS, passes=PASSES)
def test_random_schedules_and_clock_jumps_enqueue_each_due_tick_once(
    enqueued, entry, catch_up, start, passes
):
    clear_store()
    enqueued.clear()
    entry = {"func": "tests.testapp.jobs.noop", "catch_up": catch_up, **entry}
    clock = Clock(start)
    schedulers = [make_scheduler({"p": entry}, clock, tz=AMSTERDAM) for _ in range(3)]
    times = []
    for which, seconds in passes:
        clock.advance(seconds=seconds)
        # "all" works through a backlog a batch per pass: as a worker would, call again.
        while schedulers[which].enqueue_due() == 0.0:
            times.append(clock.now)
        times.append(clock.now)
    expected = model_jobs(entry, catch_up, AMSTERDAM, times)
    assert runs(enqueued) == expected
    assert all(job.run_at <= max(times) for job in enqueued)  # never early


# -- the store's schedule records ----------------------------------------------------------


def spec_for(tick, **options):
    return get_backend().prepare(
        jobs.noop, [], {}, when=tick, unique_key=f"schedule:x:{tick.isoformat()}", **options
    )


@pytest.mark.django_db
def test_create_schedule_once_and_never_ahead_of_the_stores_clock():
    store = get_backend().get_store()
    assert store.create_schedule("x", T0) is True
    assert store.create_schedule("x", T0 + HOUR) is False
    assert store.create_schedule("future", timezone.now() + datetime.timedelta(days=1))
    states = store.get_schedules(["x", "future", "unknown"])
    assert sorted(states) == ["future", "x"]
    assert states["x"] == records.ScheduleInfo("x", T0, None)
    assert states["future"].last_tick <= timezone.now()


@pytest.mark.django_db
def test_advance_schedule_is_a_compare_and_set_with_its_jobs():
    store = get_backend().get_store()
    store.create_schedule("x", T0)
    tick = T0 + MINUTE
    assert store.advance_schedule("x", T0 - MINUTE, tick, [spec_for(tick)]) is None  # stale
    (info,) = store.advance_schedule("x", T0, tick, [spec_for(tick)])
    assert store.advance_schedule("x", T0, tick, [spec_for(tick)]) is None  # lost the race
    assert (info.run_at, info.status) == (tick, records.READY)
    assert store.get_schedules(["x"])["x"] == records.ScheduleInfo("x", tick, tick)
    assert store.advance_schedule("x", tick, tick + HOUR, []) == []  # settles, enqueues none
    assert store.get_schedules(["x"])["x"] == records.ScheduleInfo("x", tick + HOUR, tick)
    assert jobs_in_store() == 1


@pytest.mark.django_db
def test_advance_schedule_refuses_a_tick_later_than_the_stores_clock():
    store = get_backend().get_store()
    store.create_schedule("x", T0)
    soon = timezone.now() + datetime.timedelta(minutes=10)
    assert store.advance_schedule("x", T0, soon, [spec_for(soon)]) is None
    assert jobs_in_store() == 0
    assert store.get_schedules(["x"])["x"].last_tick == T0


@pytest.mark.django_db
def test_advance_schedule_writes_nothing_when_a_job_cannot_be_written():
    store = get_backend().get_store()
    store.create_schedule("x", T0)
    good, bad = spec_for(T0 + MINUTE), spec_for(T0 + 2 * MINUTE)
    bad.priority = 1000  # past validation: the store refuses it (a check constraint, a script)
    with pytest.raises(Exception):  # noqa: B017  (IntegrityError; OperationalError; ResponseError)
        store.advance_schedule("x", T0, T0 + 2 * MINUTE, [good, bad])
    assert jobs_in_store() == 0
    assert store.get_schedules(["x"])["x"].last_tick == T0


# -- the worker and the commands ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_worker_runs_its_periodic_callables_and_survives_their_errors(caplog):
    calls = []

    def count():
        calls.append(1)
        return 3600.0

    def broken():
        raise RuntimeError("no database")

    worker = Worker(get_backend().get_store(), burst=True, periodic=[(60, count), (60, broken)])
    worker.run()
    assert calls == [1]
    assert "broken failed (no database)" in caplog.text


@pytest.fixture
def with_schedule(settings):
    settings.PGJOBS = {
        **settings.PGJOBS,
        "SCHEDULE": {
            "weekly": {
                "func": "tests.testapp.jobs.record_event",
                "every": datetime.timedelta(days=7),
                "args": ["scheduled"],
            }
        },
    }


def missed_a_tick(name):
    """Make schedule ``name`` look as if its latest tick had not been enqueued."""
    store().create_schedule(name, timezone.now() - datetime.timedelta(days=8))


@pytest.mark.django_db(transaction=True)
def test_drain_enqueues_and_runs_due_scheduled_jobs(with_schedule):
    missed_a_tick("weekly")
    out = io.StringIO()
    call_command("pgjobs_drain", stdout=out)
    assert out.getvalue().splitlines() == [
        "pgjobs_drain: ran 1, succeeded 1, failed 0 (0 to retry), left 0",
        "pgjobs_drain: enqueued 1 scheduled job(s)",
    ]
    assert Event.objects.filter(name="scheduled").count() == 1
    out = io.StringIO()
    call_command("pgjobs_drain", stdout=out)
    assert "enqueued 0 scheduled job(s)" in out.getvalue()


@pytest.mark.django_db
def test_status_shows_each_schedule_with_its_last_and_next_run(with_schedule):
    out = io.StringIO()
    call_command("pgjobs_status", stdout=out)
    text = out.getvalue()
    assert f"Schedules (times in {django_settings.TIME_ZONE})" in text
    (line,) = [line for line in text.splitlines() if "weekly" in line]
    assert " last -  next 20" in line and "every 7 days" in line

    out = io.StringIO()
    call_command("pgjobs_status", "--json", stdout=out)
    (row,) = json.loads(out.getvalue())["schedules"]
    assert row["name"] == "weekly" and row["last_run"] is None and row["next_run"]


# -- real processes ------------------------------------------------------------------------------


def waiting_for_locks():
    """How many sessions of the test database wait for a lock now."""
    with connection.cursor() as cursor:
        if VENDOR == "postgres":
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        else:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "
                "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                "WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()"
            )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_drain_processes_racing_on_one_tick_enqueue_it_once(start_worker):
    missed_a_tick("race")
    drain_args = ("--settings", "tests.schedule_settings")
    if VENDOR not in ("postgres", "mysql"):
        # SQLite has one writer at a time and Redis runs one script at a time:
        # the drains take turns, and the second must find the tick settled.
        drains = [start_worker(*drain_args, command="pgjobs_drain") for _ in range(2)]
    else:
        # Hold the schedule's row: both drains read the same record, compute the
        # same tick and block on their compare-and-set; then let them race.
        with transaction.atomic():
            ScheduleState.objects.select_for_update().get(name="race")
            drains = [start_worker(*drain_args, command="pgjobs_drain") for _ in range(2)]
            wait_for(
                lambda: waiting_for_locks() == 2,
                timeout=60,
                interval=0.2,
                message="both drains to block",
            )
    for drain in drains:
        assert drain.wait(timeout=60) == 0, drain.output()
    enqueued = sorted(line for drain in drains for line in drain.stdout.splitlines()[1:])
    assert enqueued == [
        "pgjobs_drain: enqueued 0 scheduled job(s)",
        "pgjobs_drain: enqueued 1 scheduled job(s)",
    ], [drain.output() for drain in drains]
    assert succeeded_jobs() == jobs_in_store() == 1
    assert Event.objects.filter(name="scheduled").count() == 1

    # The job has finished, so its unique key no longer keeps a copy out: the
    # schedule's record does.
    again = start_worker(*drain_args, command="pgjobs_drain")
    assert again.wait(timeout=60) == 0, again.output()
    assert "enqueued 0 scheduled job(s)" in again.stdout
    assert jobs_in_store() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_worker_enqueues_scheduled_jobs_on_its_own(start_worker):
    missed_a_tick("race")
    worker = start_worker("--settings", "tests.schedule_settings", "--poll-interval", "0.5")
    worker.wait_for_output("Stop with Ctrl-C or SIGTERM.")
    assert "schedules:   1 (race)\n" in worker.stdout
    wait_for(lambda: Event.objects.filter(name="scheduled").exists(), timeout=30)
    assert worker.stop() == 0, worker.output()
    assert Event.objects.filter(name="scheduled").count() == 1
    assert jobs_in_store() == 1
