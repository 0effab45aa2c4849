"""The jobs dashboard (``pgjobs/dashboard/``) and the job page's buttons
(``pgjobs/admin_ui.py``), through the Django admin and Django's test client: the
figures are right, cost the same queries however many rows are kept, never scan
the job table, and the pages and buttons keep to the permissions.

The same pages in a real browser, in both admins: tests/test_browser.py.
"""

import datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pgjobs import admin_ui, background, records
from pgjobs.dashboard import charts, figures, series
from pgjobs.handler import get_backend
from pgjobs.models import Job, WorkerProcess
from tests.conftest import JOBS_IN_REDIS, VENDOR, add_figures, run_jobs
from tests.testapp import jobs

DASHBOARD = reverse("admin:pgjobs_job_dashboard")
SQL_ONLY = pytest.mark.sql_store("reads pgjobs' tables")


def act_url(job_id, action):
    return reverse("admin:pgjobs_job_act", args=[job_id, action])


@pytest.fixture
def user(db):
    """``user(*codenames)``: a logged-in-able staff user with those pgjobs permissions."""

    def make(*codenames):
        made = User.objects.create(
            username=f"staff-{'-'.join(codenames)}-{User.objects.count()}", is_staff=True
        )
        made.user_permissions.set(
            Permission.objects.filter(content_type__app_label="pgjobs", codename__in=codenames)
        )
        return made

    return make


def as_user(user):
    client = Client()
    client.force_login(user)
    return client


def finished(ref, status, *, ago, waited=2.0, ran=1.0, queue=None):
    """Job ``ref`` ended ``ago`` seconds back with ``status``, after waiting and running."""
    now = timezone.now()
    end = now - datetime.timedelta(seconds=ago)
    start = end - datetime.timedelta(seconds=ran)
    fields = dict(
        status=status,
        run_at=start - datetime.timedelta(seconds=waited),
        started_at=start,
        finished_at=end,
        attempts=1,
    )
    if queue:
        fields["queue"] = queue
    Job.objects.filter(pk=ref.id).update(**fields)


# -- the figures ------------------------------------------------------------------------------


@SQL_ONLY
@pytest.mark.django_db
def test_queue_figures_split_ready_into_due_and_deferred_and_count_recent_failures():
    now = timezone.now()
    due = background.enqueue_many([(jobs.add, [n, n]) for n in range(4)])
    Job.objects.filter(pk=due[0].id).update(run_at=now - datetime.timedelta(seconds=90))
    background.defer(jobs.add, when=now + datetime.timedelta(days=3), args=[1, 1])
    running = background.enqueue(jobs.add, args=[2, 2], queue="other")
    Job.objects.filter(pk=running.id).update(
        status=records.RUNNING, lease_expires_at=now + datetime.timedelta(seconds=30)
    )
    add_figures(
        ("other", records.FAILED, now - datetime.timedelta(minutes=1), 1, 1),
        ("other", records.FAILED, now - datetime.timedelta(hours=2), 1, 1),  # too long ago
        ("other", records.SUCCEEDED, now - datetime.timedelta(minutes=1), 1, 1),
        ("other", records.RETRIED, now - datetime.timedelta(minutes=1), 1, 1),
    )

    rows = {q.queue: q for q in figures.queues()}
    default, other = rows["default"], rows["other"]
    assert (default.due, default.deferred, default.running, default.failed_last_hour) == (
        4,
        1,
        0,
        0,
    )
    assert 89 <= default.oldest_due_seconds < 120
    assert (other.due, other.deferred, other.running, other.failed_last_hour) == (0, 0, 1, 1)
    assert other.oldest_due_seconds is None
    assert default.paused is None, "no pause here yet: the column stays hidden"


@SQL_ONLY
@pytest.mark.django_db
def test_workers_are_the_live_ones_with_their_running_jobs():
    now = timezone.now()
    for name, beat in (("live", now), ("dead", now - datetime.timedelta(hours=1))):
        WorkerProcess.objects.create(
            id=name,
            hostname="web-1",
            pid=1,
            queues=["default"],
            concurrency=4,
            started_at=now,
            heartbeat_at=beat,
        )
    ref = background.enqueue(jobs.add, args=[1, 1])
    Job.objects.filter(pk=ref.id).update(
        status=records.RUNNING, worker_id="live", lease_expires_at=now
    )
    [live] = figures.workers(now)
    assert (live["id"], live["running"], live["concurrency"]) == ("live", 1, 4)


@pytest.mark.skipif(not JOBS_IN_REDIS, reason="the Redis pass: jobs in Redis")
def test_queue_figures_come_from_the_store_where_jobs_are_not_rows():
    background.enqueue_many([(jobs.add, [n, n]) for n in range(3)])
    background.defer(
        jobs.add, when=timezone.now() + datetime.timedelta(days=1), args=[1, 1], queue="other"
    )
    rows = {q.queue: q for q in figures.queues()}
    assert (rows["default"].due, rows["other"].deferred) == (3, 1)
    run_jobs()  # the Redis store writes the minute figures with each outcome
    data = series.series(series.WINDOWS["hour"], timezone.now())
    assert data.finished[records.SUCCEEDED][-1] + data.finished[records.SUCCEEDED][-2] == 3
    assert data.depth == [None] * 60  # no job rows to rebuild it from


# -- the series the charts draw --------------------------------------------------------------


def test_buckets_end_with_the_one_holding_now():
    now = datetime.datetime(2026, 1, 1, 12, 30, 40, tzinfo=datetime.UTC)
    hour = series.bucket_starts(series.WINDOWS["hour"], now)
    assert len(hour) == 60 and hour[-1] == now.replace(second=0)
    assert hour[0] == datetime.datetime(2026, 1, 1, 11, 31, tzinfo=datetime.UTC)
    day = series.bucket_starts(series.WINDOWS["day"], now)
    assert len(day) == 96 and day[-1] == now.replace(minute=30, second=0)


@SQL_ONLY
@pytest.mark.django_db
def test_the_series_add_up_the_minute_figures_and_estimate_percentiles():
    now = timezone.now()
    minute = now.replace(second=0, microsecond=0) - datetime.timedelta(minutes=5)
    ended = minute + datetime.timedelta(seconds=10)
    add_figures(
        *[("default", records.SUCCEEDED, ended, 2.0, 1.0) for _ in range(4)],
        ("other", records.FAILED, ended, 10.0, 5.0),
        ("other", records.RETRIED, ended, 0.3, 0.3),
        ("default", records.SUCCEEDED, now - datetime.timedelta(days=3), 1.0, 1.0),  # too old
    )
    data = series.series(series.WINDOWS["hour"], now)
    bucket = data.starts.index(minute)
    assert data.finished[records.SUCCEEDED][bucket] == 4
    assert data.finished[records.FAILED][bucket] == 1
    assert data.finished[records.RETRIED][bucket] == 1
    assert data.total_finished == 6
    # Estimated from the buckets of stats.EDGES, as Prometheus's histogram_quantile.
    assert 1.0 <= data.wait["p50"][bucket] <= 2.5
    assert 10.0 <= data.wait["p95"][bucket] <= 30.0
    assert 1.0 <= data.run["p50"][bucket] <= 2.5
    assert 5.0 <= data.run["p95"][bucket] <= 10.0
    assert [p for i, p in enumerate(data.run["p50"]) if i != bucket] == [None] * 59
    day = series.series(series.WINDOWS["day"], now)
    assert day.total_finished == 6 and len(day.starts) == 96


@SQL_ONLY
@pytest.mark.django_db
def test_queue_depth_is_rebuilt_from_the_jobs_kept():
    now = timezone.now()
    refs = background.enqueue_many([(jobs.add, [n, n]) for n in range(3)])
    ten_ago = now - datetime.timedelta(minutes=10)
    Job.objects.filter(pk=refs[0].id).update(  # waited from 10 to 5 minutes ago
        status=records.SUCCEEDED,
        run_at=ten_ago,
        started_at=now - datetime.timedelta(minutes=5),
        finished_at=now - datetime.timedelta(minutes=5),
    )
    Job.objects.filter(pk__in=[refs[1].id, refs[2].id]).update(run_at=ten_ago)  # still due
    data = series.series(series.WINDOWS["hour"], now)
    assert data.depth[-1] == 2
    assert data.depth[-8] == 3  # 7 minutes ago all three waited
    assert data.depth[0] == 0


# -- the charts ----------------------------------------------------------------------------------


def test_charts_draw_a_bar_per_outcome_and_break_lines_at_gaps():
    step = datetime.timedelta(minutes=1)
    starts = [datetime.datetime(2026, 1, 1, 12, m, tzinfo=datetime.UTC) for m in range(4)]
    bars = charts.stacked_bars(
        starts, step, {"succeeded": [1, 0, 3, 0], "failed": [1, 0, 0, 2]}, "<finished>"
    )
    assert bars.count('class="bar bar--succeeded"') == 2
    assert bars.count('class="bar bar--failed"') == 2
    assert "&lt;finished&gt;" in bars and "<finished>" not in bars
    assert 'data-points="7"' in bars
    line = charts.lines(starts, step, {"p95": [0.5, None, 2.0, 3.0]}, "Run time", unit="s")
    assert line.count("<polyline") == 1 and line.count("<circle") == 1


def test_nice_axis_tops():
    assert [charts.nice_max(v) for v in (0, 0.3, 1, 7, 12, 99, 101)] == [
        1,
        0.5,
        1,
        10,
        20,
        100,
        200,
    ]


# -- the page --------------------------------------------------------------------------------


@SQL_ONLY
def test_the_dashboard_and_its_fragment(user):
    background.enqueue_many([(jobs.add, [n, n]) for n in range(3)])
    client = as_user(user("view_job"))
    page = client.get(DASHBOARD)
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    html = page.content.decode()
    assert "<html" in html and html.count('class="pgjobs-chart"') == 4
    assert 'data-fragment-url="?fragment=1&amp;window=hour"' in html
    fragment = client.get(DASHBOARD, {"fragment": 1, "window": "day"}).content.decode()
    assert "<html" not in fragment and "<script" not in fragment
    assert 'data-queue="default"' in fragment and "The last day" in fragment
    assert "The last hour" in client.get(DASHBOARD, {"window": "week"}).content.decode()


@SQL_ONLY
def test_the_dashboard_needs_view_or_change_permission(user):
    assert as_user(user()).get(DASHBOARD).status_code == 403
    assert as_user(user()).get(DASHBOARD, {"fragment": 1}).status_code == 403
    assert as_user(user("change_job")).get(DASHBOARD).status_code == 200
    assert Client().get(DASHBOARD).status_code == 302  # to the login page


@SQL_ONLY
def test_the_dashboard_costs_the_same_queries_with_many_rows(user):
    client = as_user(user("view_job"))
    background.enqueue_many([(jobs.add, [n, n]) for n in range(3)])
    client.get(DASHBOARD)  # warm the caches (content types, permissions)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get(DASHBOARD).status_code == 200
        return len(captured)

    few = queries()
    refs = background.enqueue_many([(jobs.add, [n, n]) for n in range(1500)], queue="other")
    Job.objects.filter(pk__in=[r.id for r in refs[:1000]]).update(
        status=records.SUCCEEDED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    assert queries() == few <= 16


@pytest.mark.skipif(VENDOR not in ("postgres", "mysql") or JOBS_IN_REDIS, reason="plans")
@pytest.mark.django_db(transaction=VENDOR == "mysql")  # ANALYZE TABLE commits there
def test_the_figures_never_scan_the_job_table():
    """Every statement the figures run, EXPLAINed over 20,000 finished rows: an index
    scan each, never a sequential (PostgreSQL) or full (MariaDB: type ALL) scan of
    ``pgjobs_job``."""
    with connection.cursor() as cursor:
        if VENDOR == "postgres":
            cursor.execute(
                """INSERT INTO pgjobs_job (func, queue, args, kwargs, status, run_at,
                                           created_at, started_at, finished_at, attempts)
                   SELECT 'tests.testapp.jobs.add', 'default', '[]', '{}',
                          CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'succeeded' END,
                          now() - interval '2 days', now() - interval '2 days',
                          now() - interval '2 days', now() - interval '2 days', 1
                   FROM generate_series(1, 20000) AS n"""
            )
            cursor.execute("ANALYZE pgjobs_job")
        else:  # MariaDB's sequence engine
            cursor.execute(
                """INSERT INTO pgjobs_job (func, queue, args, kwargs, status, run_at,
                                           created_at, started_at, finished_at, attempts,
                                           priority, max_attempts, cancel_requested, atomic)
                   SELECT 'tests.testapp.jobs.add', 'default', '[]', '{}',
                          CASE WHEN seq % 10 = 0 THEN 'failed' ELSE 'succeeded' END,
                          NOW() - INTERVAL 2 DAY, NOW() - INTERVAL 2 DAY,
                          NOW() - INTERVAL 2 DAY, NOW() - INTERVAL 2 DAY, 1, 0, 1, 0, 0
                   FROM seq_1_to_20000"""
            )
            cursor.execute("ANALYZE TABLE pgjobs_job")
    background.enqueue_many([(jobs.add, [n, n]) for n in range(5)])
    with CaptureQueriesContext(connection) as captured:
        figures.queues()
        figures.workers(timezone.now())
        series.series(series.WINDOWS["hour"], timezone.now())
    statements = [q["sql"] for q in captured if "pgjobs_job" in q["sql"]]
    assert len(statements) >= 6
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute("EXPLAIN " + sql)
            if VENDOR == "postgres":
                plan = "\n".join(row[0] for row in cursor.fetchall())
                assert "Seq Scan on pgjobs_job" not in plan, (sql, plan)
                continue
            names = [column[0] for column in cursor.description]
            for row in map(dict, (zip(names, r, strict=True) for r in cursor.fetchall())):
                assert row["table"] != "pgjobs_job" or row["type"] != "ALL", (sql, row)


# -- the job page's buttons ----------------------------------------------------------------------


@SQL_ONLY
def test_the_buttons_retry_run_now_and_cancel(user):
    client = as_user(user("change_job"))
    failed = background.enqueue(jobs.add, args=[1, 1])
    finished(failed, records.FAILED, ago=5)
    later = background.defer(
        jobs.add, when=timezone.now() + datetime.timedelta(days=3), args=[1, 1]
    )
    page = client.get(reverse("admin:pgjobs_job_change", args=[failed.id])).content.decode()
    assert 'data-action="retry"' in page and 'data-action="run-now"' not in page

    response = client.post(act_url(failed.id, "retry"))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:pgjobs_job_change", args=[failed.id])
    assert Job.objects.get(pk=failed.id).status == records.READY

    page = client.get(reverse("admin:pgjobs_job_change", args=[later.id])).content.decode()
    assert 'data-action="run-now"' in page and 'data-action="cancel"' in page
    client.post(act_url(later.id, "run-now"))
    assert Job.objects.get(pk=later.id).run_at <= timezone.now()
    client.post(act_url(later.id, "cancel"))
    assert Job.objects.get(pk=later.id).status == records.CANCELLED
    assert client.post(act_url(later.id, "explode")).status_code == 404
    assert client.post(act_url(10**9, "retry")).status_code == 404


@SQL_ONLY
def test_the_buttons_refuse_viewers_gets_and_posts_without_a_csrf_token(user):
    ref = background.defer(jobs.add, when=timezone.now() + datetime.timedelta(days=3), args=[1, 1])
    viewer = as_user(user("view_job"))
    page = viewer.get(reverse("admin:pgjobs_job_change", args=[ref.id])).content.decode()
    assert "data-action=" not in page
    for action in admin_ui.JOB_ACTIONS:
        assert viewer.post(act_url(ref.id, action)).status_code == 403, action
    changer = as_user(user("change_job"))
    for action in admin_ui.JOB_ACTIONS:
        assert changer.get(act_url(ref.id, action)).status_code == 405, action
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.filter(username__startswith="staff-change_job").get())
    assert strict.post(act_url(ref.id, "cancel")).status_code == 403
    job = Job.objects.get(pk=ref.id)
    assert job.status == records.READY and job.run_at > timezone.now()


# -- what the listings show ------------------------------------------------------------------------


def test_argument_summaries_are_short_and_json():
    assert admin_ui.summarize_arguments([42, "csv"], {"fmt": "pdf"}) == '42, "csv", fmt="pdf"'
    long = admin_ui.summarize_arguments(["x" * 100], {})
    assert len(long) == admin_ui.SUMMARY_LENGTH and long.endswith("…")
    assert admin_ui.summarize_arguments([], {}) == ""


def test_a_ready_job_not_yet_due_reads_deferred_with_its_time():
    now = timezone.now()
    later = now + datetime.timedelta(days=3, minutes=1)
    key, words = admin_ui.status_label(records.READY, later, now)
    assert (key, words.replace("\xa0", " ")) == ("deferred", "deferred · in 3 days")
    assert admin_ui.status_label(records.READY, now, now) == (records.READY, records.READY)
    assert "pgjobs-status--failed" in admin_ui.status_tag(records.FAILED)


@SQL_ONLY
def test_the_django_listing_filters_by_function_and_date_and_searches_arguments(user):
    client = as_user(user("view_job"))
    background.enqueue(jobs.add, args=[1, 2], kwargs={"note": "publish page 7"})
    background.enqueue(jobs.echo, args=["hello"])
    changelist = reverse("admin:pgjobs_job_changelist")

    def count(**params):
        response = client.get(changelist, params)
        assert response.status_code == 200, params
        return len(response.context["cl"].result_list)

    assert count(func="tests.testapp.jobs.echo") == 1
    assert count(q="page 7") == 1
    assert count(q="hello") == 1
    since = timezone.now() - datetime.timedelta(hours=1)
    assert count(created_at__gte=since.isoformat()) == 2
    assert count(finished_at__isnull="True") == 2
    assert get_backend().queues  # the queue filter's choices come from the settings


@SQL_ONLY
def test_the_dashboard_shows_schedules_and_whether_a_tick_is_late(user, settings):
    settings.PGJOBS = {
        **settings.PGJOBS,
        "SCHEDULE": {
            "hourly-report": {"func": "tests.testapp.jobs.noop", "cron": "0 * * * *"},
        },
    }
    client = as_user(user("view_job"))
    html = client.get(DASHBOARD, {"fragment": 1}).content.decode()
    assert 'id="pgjobs-schedules"' in html and "hourly-report" in html
    assert "on time" in html  # never ticked: the first tick is ahead
    from pgjobs.models import ScheduleState

    ScheduleState.objects.update_or_create(
        name="hourly-report",
        defaults={"last_tick": timezone.now() - datetime.timedelta(hours=3)},
    )
    html = client.get(DASHBOARD, {"fragment": 1}).content.decode()
    assert "late since" in html


@SQL_ONLY
def test_a_paused_column_appears_once_queues_can_be_paused(user, monkeypatch):
    client = as_user(user("view_job"))
    assert ">paused<" not in client.get(DASHBOARD, {"fragment": 1}).content.decode()
    monkeypatch.setattr(figures, "paused_queues", lambda backend: {"other"})
    html = client.get(DASHBOARD, {"fragment": 1}).content.decode()
    assert "<th>paused</th>" in html
    assert html.count("<td>paused</td>") == 1


@pytest.mark.django_db
def test_the_dashboard_of_a_backend_that_stores_no_jobs_is_empty_not_an_error(user, settings):
    settings.PGJOBS = {"BACKEND": "pgjobs.backends.ImmediateBackend"}
    html = as_user(user("view_job")).get(DASHBOARD, {"fragment": 1}).content.decode()
    assert 'data-queue="default"' in html and "runs jobs as they are enqueued" in html


@SQL_ONLY
def test_the_dashboard_under_use_tz_false_shows_the_naive_figures(user, settings):
    """Under ``USE_TZ = False`` the stores' times are naive (in ``TIME_ZONE``): the
    buckets, charts and clocks must be too, not a TypeError comparing the two kinds."""
    settings.USE_TZ = False
    now = timezone.now()
    assert timezone.is_naive(now)
    add_figures(("default", records.SUCCEEDED, now - datetime.timedelta(minutes=5), 2.0, 1.0))
    background.enqueue(jobs.add, args=[1, 2])
    starts = series.bucket_starts(series.WINDOWS["day"], now)
    assert timezone.is_naive(starts[-1]) and starts[-1] <= now < starts[-1] + (
        starts[1] - starts[0]
    )
    response = as_user(user("view_job")).get(DASHBOARD, {"fragment": 1})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-figure="due">1<' in html and 'data-points="1"' in html
    assert f"updated {now:%H:}" in html


@SQL_ONLY
def test_the_job_listing_and_page_under_use_tz_false(user, settings):
    """The times clamped for the admin pages (``pgjobs.times``) in the stores' naive
    kind: no TypeError comparing kinds, no aware parameter MySQL refuses."""
    settings.USE_TZ = False
    ref = background.defer(
        jobs.add, when=timezone.now() + datetime.timedelta(days=3, minutes=1), args=[1, 2]
    )
    client = as_user(user("view_job"))
    listing = client.get(reverse("admin:pgjobs_job_changelist"))
    assert listing.status_code == 200
    assert "in 3\xa0days" in listing.content.decode()
    assert client.get(reverse("admin:pgjobs_job_change", args=[ref.id])).status_code == 200
    assert figures.queues()[0].deferred == 1


@SQL_ONLY
def test_deleting_a_job_in_the_django_admin_needs_seeing_jobs_too(user):
    """As in the Wagtail admin: ``delete_job`` alone does not open a job's delete page,
    which names the job."""
    ref = background.enqueue(jobs.add, args=[1, 2])
    delete = reverse("admin:pgjobs_job_delete", args=[ref.id])
    assert as_user(user("delete_job")).get(delete).status_code == 403
    assert as_user(user("delete_job")).post(delete, {"post": "yes"}).status_code == 403
    assert Job.objects.filter(pk=ref.id).exists()
    assert as_user(user("view_job", "delete_job")).get(delete).status_code == 200
    assert as_user(user("view_job")).get(delete).status_code == 403
