"""The Django admin for jobs (``pgjobs/admin.py``): a changelist that stays cheap however
many jobs there are, a detail page with the job's arguments, result and error, retry
and cancel actions, and pgjobs' permissions."""

import psycopg
import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pgjobs import background, records
from pgjobs.models import Job
from tests.conftest import VENDOR, run_jobs, status_counts
from tests.testapp import jobs
from tests.testapp.models import Event

CHANGELIST = reverse("admin:pgjobs_job_changelist")

# The jobs' rows and their SQL: RedisBackend keeps none (tests/test_redis.py covers it).
SQL_ONLY = pytest.mark.sql_store("reads pgjobs' tables")
pytestmark = SQL_ONLY


def change_page(job_id):
    return reverse("admin:pgjobs_job_change", args=[job_id])


def queries_for_changelist(client, url=CHANGELIST):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return response, len(queries)


def act(client, action, ids):
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True
    )


@pytest.fixture
def admin_client(db, client):
    """A logged-in superuser; pytest-django's own hashes a password, which costs time
    in every test and is not needed to log in."""
    client.force_login(User.objects.create(username="admin", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def staff(db):
    """``staff(*codenames)``: a staff user with those pgjobs permissions."""

    def make(*codenames):
        user = User.objects.create(username=f"staff-{len(codenames)}", is_staff=True)
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="pgjobs", codename__in=codenames)
        )
        return user

    return make


@pytest.mark.django_db
def test_the_changelist_costs_the_same_queries_for_2000_jobs_as_for_a_few(admin_client):
    background.enqueue_many([(jobs.echo, [n], {"n": n}) for n in range(5)])
    _, few = queries_for_changelist(admin_client)

    background.enqueue_many([(jobs.echo, [n], {"n": n}) for n in range(1995)])
    first = list(Job.objects.order_by("id").values_list("id", flat=True)[:300])
    Job.objects.filter(id__in=first).update(
        status=records.FAILED, error={"type": "E", "message": "m", "traceback": "t"}
    )
    response, many = queries_for_changelist(admin_client)
    assert many == few, "a query per row"
    assert many <= 10
    page = response.content.decode()
    assert page.count('name="_selected_action"') == 100  # a page, not 2,000 rows
    assert "tests.testapp.jobs.echo" in page

    # Filtered and searched pages are no dearer.
    _, filtered = queries_for_changelist(admin_client, CHANGELIST + "?status__exact=failed")
    _, searched = queries_for_changelist(admin_client, CHANGELIST + "?q=echo&queue=default")
    assert filtered <= few and searched <= few


@pytest.mark.django_db
def test_the_detail_page_shows_arguments_result_and_error(admin_client):
    ok = background.enqueue(jobs.echo, args=["hello <b>"], kwargs={"n": 7})
    bad = background.enqueue(jobs.fail_always, args=["it broke"], max_attempts=1)
    run_jobs()

    page = admin_client.get(change_page(ok.id)).content.decode()
    assert "hello &lt;b&gt;" in page, "arguments are shown, escaped"
    assert "&quot;n&quot;: 7" in page
    assert "&quot;kwargs&quot;" in page  # the result: {"args": [...], "kwargs": {...}}
    assert "succeeded" in page.lower()

    page = admin_client.get(change_page(bad.id)).content.decode()
    assert "builtins.RuntimeError" in page
    assert "it broke" in page
    assert "Traceback (most recent call last)" in page


@pytest.mark.django_db(transaction=True)
def test_the_retry_action_makes_failed_and_cancelled_jobs_ready_and_a_worker_runs_them(
    admin_client,
):
    failed = background.enqueue(jobs.fail_unless_event, args=["fixed"], max_attempts=1)
    cancelled = background.enqueue(jobs.add, args=[1, 2])
    succeeded = background.enqueue(jobs.add, args=[3, 4])
    cancelled.cancel()
    run_jobs()
    assert failed.refresh().status == records.FAILED
    Event.objects.create(name="fixed")  # the operator fixes the cause...

    response = act(admin_client, "retry_jobs", [failed.id, cancelled.id, succeeded.id])

    assert "2 job(s) queued again." in response.content.decode()
    assert failed.refresh().status == cancelled.refresh().status == records.READY
    assert failed.attempts == 0
    run_jobs()  # ...and a worker runs the jobs again
    assert failed.refresh().result == "fixed"
    assert cancelled.refresh().result == 3
    assert succeeded.refresh().result == 7
    assert status_counts() == {records.SUCCEEDED: 3}


@pytest.mark.django_db
def test_the_cancel_action_cancels_ready_jobs_and_asks_running_ones_to_stop(admin_client):
    ready = background.enqueue(jobs.noop)
    running = background.enqueue(jobs.noop)
    done = background.enqueue(jobs.noop)
    store = background.backend.get_store()
    store.claim(None, 1, "w")  # "ready" is claimed first: same priority, enqueued first
    Job.objects.filter(pk=ready.id).update(status=records.READY, worker_id=None)
    Job.objects.filter(pk=running.id).update(status=records.RUNNING, worker_id="w")
    Job.objects.filter(pk=done.id).update(status=records.SUCCEEDED)

    response = act(admin_client, "cancel_jobs", [ready.id, running.id, done.id])

    assert "1 ready job(s) cancelled; 1 running job(s) asked to stop." in (
        response.content.decode()
    )
    assert ready.refresh().status == records.CANCELLED
    job = Job.objects.get(pk=running.id)
    assert (job.status, job.cancel_requested) == (records.RUNNING, True)
    assert store.heartbeat("w", [running.id]) == [running.id]  # delivered to its worker
    assert done.refresh().status == records.SUCCEEDED


@pytest.mark.django_db
def test_staff_without_pgjobs_permissions_get_403(client, staff):
    background.enqueue(jobs.noop)
    client.force_login(staff())
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(change_page(Job.objects.get().id)).status_code == 403


@pytest.mark.django_db
def test_viewers_see_jobs_but_cannot_retry_or_cancel_them(client, staff):
    ref = background.enqueue(jobs.noop)
    client.force_login(staff("view_job"))
    page = client.get(CHANGELIST).content.decode()
    assert "tests.testapp.jobs.noop" in page
    assert "cancel_jobs" not in page and "retry_jobs" not in page

    act(client, "cancel_jobs", [ref.id])
    assert ref.refresh().status == records.READY

    client.force_login(staff("view_job", "change_job"))
    page = client.get(CHANGELIST).content.decode()
    assert "cancel_jobs" in page and "retry_jobs" in page
    act(client, "cancel_jobs", [ref.id])
    assert ref.refresh().status == records.CANCELLED


@pytest.mark.django_db
def test_jobs_cannot_be_added_or_edited_in_the_admin(admin_client):
    ref = background.enqueue(jobs.add, args=[1, 2])
    assert admin_client.get(reverse("admin:pgjobs_job_add")).status_code == 403
    response = admin_client.post(change_page(ref.id), {"func": "os.system", "args": '["id"]'})
    assert response.status_code == 403
    assert Job.objects.get(pk=ref.id).func == "tests.testapp.jobs.add"


@pytest.mark.skipif(VENDOR != "postgres", reason="LISTEN/NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_retried_jobs_wake_workers_on_the_configured_channel(admin_client, settings):
    settings.PGJOBS = {
        **settings.PGJOBS,
        "OPTIONS": {**settings.PGJOBS["OPTIONS"], "CHANNEL": "site_jobs"},
    }
    ref = background.enqueue(jobs.noop)
    ref.cancel()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    with psycopg.Connection.connect(**params, autocommit=True) as listener:
        listener.execute("LISTEN site_jobs")
        act(admin_client, "retry_jobs", [ref.id])
        woken = list(listener.notifies(timeout=2, stop_after=1))
    assert ref.refresh().status == records.READY
    assert [n.channel for n in woken] == ["site_jobs"], "idle workers were not woken"


@pytest.mark.django_db
def test_retry_skips_a_job_whose_unique_key_another_job_now_holds(admin_client):
    old = background.enqueue(jobs.fail_always, unique_key="nightly", max_attempts=1)
    older = background.enqueue(jobs.fail_always, unique_key="daily", max_attempts=1)
    plain = background.enqueue(jobs.fail_always, max_attempts=1)
    run_jobs()
    holder = background.enqueue(jobs.noop, unique_key="nightly")  # the key is free again
    twin = background.enqueue(jobs.fail_always, unique_key="daily", max_attempts=1, priority=9)
    run_jobs(max_jobs=1)  # twin fails too: two failed jobs with the key "daily"
    assert twin.refresh().status == records.FAILED

    response = act(admin_client, "retry_jobs", [old.id, older.id, twin.id, plain.id])

    assert response.status_code == 200
    assert "2 job(s) queued again." in response.content.decode()
    assert old.refresh().status == records.FAILED, "nightly is held by another job"
    assert holder.refresh().status == records.READY
    assert {older.refresh().status, twin.refresh().status} == {records.READY, records.FAILED}
    assert plain.refresh().status == records.READY


# -- batches --------------------------------------------------------------------------


def test_a_batch_page_shows_its_progress_callbacks_and_jobs(admin_client):
    batch = background.batch(
        [(jobs.noop, [], {}) for _ in range(3)], on_finish=jobs.noop, description="nightly"
    )
    first = batch.jobs[0]
    background.get_batch(batch.id)  # the jobs written, whatever the store
    page = admin_client.get(reverse("admin:pgjobs_batch_change", args=[batch.id]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "nightly" in text and '<progress value="0" max="3">' in text
    assert change_page(first.id) in text and "waiting" in text  # on_finish, and a job
    listing = admin_client.get(reverse("admin:pgjobs_batch_changelist")).content.decode()
    assert "0/3" in listing
    run_jobs()
    text = admin_client.get(reverse("admin:pgjobs_batch_change", args=[batch.id])).content
    assert b'<progress value="3" max="3">' in text


def test_a_job_page_links_to_its_batch_and_the_batch_lists_its_jobs(admin_client):
    batch = background.batch([(jobs.noop, [], {}), (jobs.add, [1, 2], {})])
    plain = background.enqueue(jobs.noop)
    text = admin_client.get(change_page(batch.jobs[1].id)).content.decode()
    assert reverse("admin:pgjobs_batch_change", args=[batch.id]) in text
    filtered = admin_client.get(f"{CHANGELIST}?batch={batch.id}").content.decode()
    assert change_page(batch.jobs[0].id) in filtered
    assert change_page(plain.id) not in filtered


def test_cancelling_a_batch_in_the_admin_cancels_its_ready_jobs(admin_client, staff):
    batch = background.batch([(jobs.noop, [], {}) for _ in range(2)])
    url = reverse("admin:pgjobs_batch_changelist")
    form = {"action": "cancel_batches", "_selected_action": [str(batch.id)]}
    viewer = Client()
    viewer.force_login(staff("view_batch"))
    viewer.post(url, form)
    assert batch.counts()[records.CANCELLED] == 0, "viewers may not cancel"
    response = admin_client.post(url, form, follow=True)
    assert "2 ready job(s) cancelled" in response.content.decode()
    assert batch.counts()[records.CANCELLED] == 2


# -- queue controls ----------------------------------------------------------------------


QUEUES = reverse("admin:pgjobs_queuecontrol_changelist")


def test_admin_pauses_and_resumes_queues_and_sets_limits(admin_client):
    from pgjobs.models import QueueControl

    response = admin_client.post(
        reverse("admin:pgjobs_queuecontrol_add"),
        {"queue": "other", "paused": "on", "concurrency": "3", "rate": "", "period": ""},
        follow=True,
    )
    assert response.status_code == 200
    assert background.queue_controls(["other"])["other"] == records.QueueControl("other", True, 3)
    response = admin_client.post(
        QUEUES, {"action": "resume_queues", "_selected_action": ["other"]}, follow=True
    )
    assert "1 queue(s) resumed" in response.content.decode()
    assert QueueControl.objects.get(pk="other").paused is False
    admin_client.post(QUEUES, {"action": "pause_queues", "_selected_action": ["other"]})
    assert background.queue_controls(["other"])["other"].paused


def test_admin_refuses_a_rate_without_its_period_and_a_negative_limit(admin_client):
    add = reverse("admin:pgjobs_queuecontrol_add")
    response = admin_client.post(add, {"queue": "other", "rate": "5", "period": ""})
    assert "Set both rate and period, or neither." in response.content.decode()
    response = admin_client.post(add, {"queue": "other", "concurrency": "-1"})
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert background.queue_controls(["other"])["other"] == records.QueueControl("other")


def test_queue_actions_need_the_change_permission(client, staff):
    background.pause_queue("other")
    client.force_login(staff("view_queuecontrol"))
    assert client.get(QUEUES).status_code == 200
    client.post(QUEUES, {"action": "resume_queues", "_selected_action": ["other"]})
    assert background.queue_controls(["other"])["other"].paused, "viewing is not steering"
