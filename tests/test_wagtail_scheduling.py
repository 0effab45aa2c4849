"""Scheduled publishing without cron (``pgjobs.contrib.wagtail.scheduling``): real
scheduled revisions of pages and snippets, published and unpublished by a worker at
their time; rescheduled, cancelled, and caught up by the sweep after downtime.

Runs in the integration pass (``--ds=tests.wagtail_settings``).
"""

import datetime

import pytest
from django.conf import settings

if "pgjobs.contrib.wagtail" not in settings.INSTALLED_APPS:
    pytest.skip(
        "integration pass only: pytest --ds=tests.wagtail_settings", allow_module_level=True
    )

from django.core import checks  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from wagtail.models import ModelLogEntry, PageLogEntry  # noqa: E402

from pgjobs import records  # noqa: E402
from pgjobs.contrib.wagtail import scheduling  # noqa: E402
from pgjobs.handler import get_backend  # noqa: E402
from pgjobs.models import Job, ScheduleState  # noqa: E402
from pgjobs.schedule import configured_schedules  # noqa: E402
from pgjobs.worker import build_worker  # noqa: E402
from tests.conftest import VENDOR, run_jobs, run_worker_while, wait_for  # noqa: E402
from tests.wagtailapp.models import ArticlePage, Notice  # noqa: E402
from tests.wagtailapp.site import make_home  # noqa: E402

#: Tests that read or edit the job rows; the others run on every store, Redis included.
reads_jobs = pytest.mark.sql_store("reads and edits the job rows")

#: Tests that wait for a real worker to act at a scheduled time (seconds each): on
#: PostgreSQL only. The stores' deferral is proven on every store by
#: tests/test_store_contract.py, and what publish_due decides runs on every
#: database through the burst-worker and direct tests below.
with_real_worker = pytest.mark.skipif(
    VENDOR != "postgres", reason="waits for a real worker at the scheduled time: once per stack"
)

PUBLISH_DUE = "pgjobs.contrib.wagtail.scheduling.publish_due"
SWEEP = "pgjobs.contrib.wagtail.scheduling.sweep"


@pytest.fixture
def home(transactional_db):
    return make_home()


#: Seconds ahead a page is scheduled when a test then waits for that time: enough for
#: the page to be saved and its revision published first on a loaded machine (at 0.3 s,
#: three test lanes on two cores published some pages at once, already due).
LEAD = 1.5


def soon(seconds):
    return timezone.now() + datetime.timedelta(seconds=seconds)


def schedule_article(home, seconds, title="Article"):
    """A new, never published article scheduled to go live in ``seconds``."""
    article = home.add_child(instance=ArticlePage(title=title, live=False))
    article.go_live_at = soon(seconds)
    article.save_revision().publish()
    article.refresh_from_db()
    assert not article.live and article.go_live_at is not None
    return article


def checks_of(obj_pk):
    return Job.objects.filter(func=PUBLISH_DUE, args__1=str(obj_pk))


def work_until(condition, timeout=15.0):
    """Run a real (non-burst) worker with its schedules until ``condition()`` holds."""
    worker = build_worker(get_backend(), concurrency=2, poll_interval=0.2, grace_period=2.0)
    run_worker_while(worker, lambda: wait_for(condition, timeout=timeout))


def scheduled_publishes(page):
    return PageLogEntry.objects.filter(page=page, action="wagtail.publish.scheduled").count()


@with_real_worker
def test_a_scheduled_page_goes_live_at_its_time(home):
    article = schedule_article(home, 2)
    go_live = article.go_live_at

    work_until(lambda: ArticlePage.objects.get(pk=article.pk).live)
    article.refresh_from_db()
    assert go_live <= article.last_published_at < go_live + datetime.timedelta(seconds=3)
    assert scheduled_publishes(article) == 1
    assert not article.revisions.filter(approved_go_live_at__isnull=False).exists()


@reads_jobs
def test_a_scheduled_revision_defers_a_check_at_its_time(home):
    article = schedule_article(home, 60)
    (check,) = checks_of(article.pk)
    assert check.run_at == article.go_live_at and check.status == records.READY
    assert check.kwargs == {"at": article.go_live_at.isoformat()}


@reads_jobs
def test_saving_the_same_schedule_twice_defers_one_check(home):
    article = schedule_article(home, 60)
    revision = article.revisions.get(approved_go_live_at__isnull=False)
    revision.save()  # saved again, same time
    assert checks_of(article.pk).count() == 1


@with_real_worker
@reads_jobs
def test_a_rescheduled_page_goes_live_at_the_new_time_only(home):
    article = schedule_article(home, 60, title="First")
    article.title, article.go_live_at = "Second", soon(2)
    article.save_revision().publish()  # moved earlier: the job at +60 s must not hold it
    assert checks_of(article.pk).count() == 2

    work_until(lambda: ArticlePage.objects.get(pk=article.pk).live)
    article.refresh_from_db()
    assert article.title == "Second" and scheduled_publishes(article) == 1

    # The check deferred for the old time runs and finds nothing to do.
    old = checks_of(article.pk).get(status=records.READY)
    Job.objects.filter(pk=old.pk).update(run_at=timezone.now())
    run_jobs()
    old.refresh_from_db()
    assert old.status == records.SUCCEEDED
    assert old.result == {"published": 0, "unpublished": 0}
    assert scheduled_publishes(article) == 1


@reads_jobs
def test_a_schedule_moved_later_is_not_published_early(home):
    article = schedule_article(home, LEAD)
    article.go_live_at = soon(3600)
    article.save_revision().publish()
    first = checks_of(article.pk).earliest("run_at")
    wait_for(lambda: timezone.now() > first.run_at, timeout=5)
    run_jobs()  # the first check, now due, finds the revision scheduled an hour ahead
    first.refresh_from_db()
    assert first.status == records.SUCCEEDED
    article.refresh_from_db()
    assert not article.live and scheduled_publishes(article) == 0
    assert checks_of(article.pk).filter(status=records.READY).count() == 1  # the new time's


@reads_jobs
def test_a_cancelled_schedule_publishes_nothing(home):
    article = schedule_article(home, LEAD)
    revision = article.revisions.get(approved_go_live_at__isnull=False)
    revision.approved_go_live_at = None  # what the admin's "cancel scheduled publish" does
    revision.save(update_fields=["approved_go_live_at"])

    wait_for(lambda: timezone.now() > article.go_live_at, timeout=5)
    run_jobs()
    (check,) = checks_of(article.pk)
    assert check.status == records.SUCCEEDED
    assert check.result == {"published": 0, "unpublished": 0}
    article.refresh_from_db()
    assert not article.live and scheduled_publishes(article) == 0


@with_real_worker
def test_a_live_page_expires_at_its_time(home):
    article = home.add_child(instance=ArticlePage(title="Expiring"))
    article.expire_at = soon(2)
    article.save_revision().publish()
    article.refresh_from_db()
    assert article.live

    work_until(lambda: not ArticlePage.objects.get(pk=article.pk).live)
    article.refresh_from_db()
    assert article.expired
    assert (
        PageLogEntry.objects.filter(page=article, action="wagtail.unpublish.scheduled").count() == 1
    )


@with_real_worker
def test_a_snippet_with_publishing_goes_live_and_expires(home):
    notice = Notice.objects.create(text="Sale", live=False)
    notice.go_live_at = soon(1)
    notice.expire_at = soon(4)
    notice.save_revision().publish()
    notice.refresh_from_db()
    assert not notice.live

    work_until(lambda: Notice.objects.get(pk=notice.pk).live)
    work_until(lambda: Notice.objects.get(pk=notice.pk).expired)
    actions = list(
        ModelLogEntry.objects.filter(object_id=str(notice.pk))
        .filter(action__endswith=".scheduled")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["wagtail.publish.scheduled", "wagtail.unpublish.scheduled"]


@with_real_worker
@reads_jobs
def test_the_sweep_catches_up_once_after_workers_were_down(home):
    # A page whose time passed while no worker ran, its check lost (scheduled before
    # pgjobs was installed, say), and the sweep's schedule last settled long ago.
    article = schedule_article(home, 1)
    checks_of(article.pk).delete()
    wait_for(lambda: timezone.now() > article.go_live_at, timeout=5)
    long_ago = timezone.now() - datetime.timedelta(hours=2)
    ScheduleState.objects.create(name=scheduling.SWEEP_NAME, last_tick=long_ago)

    work_until(lambda: ArticlePage.objects.get(pk=article.pk).live)
    sweeps = Job.objects.filter(func=SWEEP)
    assert sweeps.count() == 1  # one run for two hours of missed minutes
    assert sweeps.get().result == {"objects": 1, "published": 1, "unpublished": 0}
    assert scheduled_publishes(article) == 1


def test_the_sweep_is_a_schedule_while_scheduled_publishing_is_on():
    names = {schedule.name: schedule for schedule in configured_schedules()}
    assert names[scheduling.SWEEP_NAME].func == SWEEP
    off = {**settings.PGJOBS, "WAGTAIL_SCHEDULED_PUBLISHING": False}
    with override_settings(PGJOBS=off):
        assert scheduling.SWEEP_NAME not in {s.name for s in configured_schedules()}


@reads_jobs
def test_turned_off_nothing_is_deferred(home):
    with override_settings(PGJOBS={**settings.PGJOBS, "WAGTAIL_SCHEDULED_PUBLISHING": False}):
        article = schedule_article(home, 60)
    assert not checks_of(article.pk).exists()


def test_checks_report_bad_settings_and_a_backend_that_cannot_defer():
    with override_settings(PGJOBS={**settings.PGJOBS, "WAGTAIL_SCHEDULED_PUBLISHING": "yes"}):
        ids = [m.id for m in checks.run_checks(tags=["pgjobs"])]
        assert ids.count("pgjobs.E022") == 1
    with override_settings(PGJOBS={"BACKEND": "pgjobs.backends.ImmediateBackend"}):
        (warning,) = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.W006"]
        assert "publish_scheduled" in warning.msg
    immediate_off = {
        "BACKEND": "pgjobs.backends.ImmediateBackend",
        "WAGTAIL_SCHEDULED_PUBLISHING": False,
    }
    with override_settings(PGJOBS=immediate_off):
        assert "pgjobs.W006" not in [m.id for m in checks.run_checks(tags=["pgjobs"])]


def test_a_schedule_entry_of_the_same_name_replaces_the_sweeps():
    every = datetime.timedelta(minutes=5)
    entry = {"func": SWEEP, "every": every}
    with override_settings(PGJOBS={**settings.PGJOBS, "SCHEDULE": {scheduling.SWEEP_NAME: entry}}):
        (sweep,) = [s for s in configured_schedules() if s.name == scheduling.SWEEP_NAME]
        assert sweep.describe() == configured_description(every)


def configured_description(every):
    from pgjobs.schedule import parse_schedules

    (schedule,), _ = parse_schedules({"x": {"func": SWEEP, "every": every}})
    return schedule.describe()


def test_two_due_revisions_publish_the_page_once_with_the_latest(home):
    # Two revisions both approved (two editors scheduling at once): the page is
    # published once, with the revision due last, not twice with both.
    article = schedule_article(home, LEAD, title="Earlier")
    first = article.revisions.get(approved_go_live_at__isnull=False)
    article.title = "Later"
    second = article.save_revision()
    wait_for(lambda: timezone.now() > article.go_live_at, timeout=5)
    past = timezone.now() - datetime.timedelta(seconds=5)
    type(first).objects.filter(pk=first.pk).update(approved_go_live_at=past)
    type(second).objects.filter(pk=second.pk).update(
        approved_go_live_at=past + datetime.timedelta(seconds=1)
    )

    done = scheduling.publish_due(first.base_content_type_id, str(article.pk))
    assert done == {"published": 1, "unpublished": 0}
    article.refresh_from_db()
    assert article.live and article.title == "Later"
    assert article.live_revision_id == second.pk
    assert scheduled_publishes(article) == 1
    assert scheduling.sweep()["published"] == 0  # nothing left for the sweep


def test_the_sweep_unpublishes_expired_pages_and_snippets_and_publishes_due_snippets(home):
    # What the real-worker tests above prove on PostgreSQL, through publish_due
    # directly, on every database.
    past = timezone.now() - datetime.timedelta(seconds=5)
    article = home.add_child(instance=ArticlePage(title="Expired"))
    article.save_revision().publish()
    ArticlePage.objects.filter(pk=article.pk).update(expire_at=past)
    expired = Notice.objects.create(text="Old sale", live=True)
    Notice.objects.filter(pk=expired.pk).update(expire_at=past)
    due = Notice.objects.create(text="Sale", live=False)
    due.go_live_at = soon(LEAD)
    due.save_revision().publish()
    wait_for(lambda: timezone.now() > due.go_live_at, timeout=5)

    assert scheduling.sweep() == {"objects": 3, "published": 1, "unpublished": 2}
    article.refresh_from_db()
    assert not article.live and article.expired
    assert Notice.objects.get(pk=expired.pk).expired
    assert Notice.objects.get(pk=due.pk).live
    assert scheduling.sweep() == {"objects": 0, "published": 0, "unpublished": 0}


def test_one_page_that_cannot_be_published_does_not_hold_back_the_sweep(home):
    from wagtail.signals import page_published

    broken = schedule_article(home, LEAD, title="Broken")
    fine = schedule_article(home, LEAD, title="Fine")
    wait_for(lambda: timezone.now() > fine.go_live_at, timeout=5)

    def refuse(sender, instance, **kwargs):
        if instance.pk == broken.pk:
            raise RuntimeError("a hook refuses this page")

    page_published.connect(refuse)
    try:
        totals = scheduling.sweep()
    finally:
        page_published.disconnect(refuse)
    assert (totals["published"], len(totals["failed"])) == (1, 1)
    assert ArticlePage.objects.get(pk=fine.pk).live
    assert not ArticlePage.objects.get(pk=broken.pk).live
    assert scheduling.sweep()["published"] == 1  # tried again at the next sweep
