"""pgjobs in a real Wagtail site: Wagtail's own tasks in workers, background hooks,
and the job rows in the Wagtail admin and the Django admin.

Runs in the integration pass (``--ds=tests.wagtail_settings``).
"""

import datetime

import pytest
from django.conf import settings

if "pgjobs.contrib.wagtail" not in settings.INSTALLED_APPS:
    pytest.skip(
        "integration pass only: pytest --ds=tests.wagtail_settings", allow_module_level=True
    )

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402
from wagtail import hooks as wagtail_hooks  # noqa: E402
from wagtail.models import ReferenceIndex, Site  # noqa: E402

from pgjobs import background, records  # noqa: E402
from pgjobs.contrib.wagtail import hooks  # noqa: E402
from pgjobs.contrib.wagtail.hooks import BackgroundHook, RequestSnapshot  # noqa: E402
from pgjobs.models import Batch, Job  # noqa: E402
from pgjobs.serialization import decode_arguments, encode_arguments  # noqa: E402
from tests.conftest import VENDOR, run_jobs, status_counts  # noqa: E402
from tests.testapp import jobs  # noqa: E402
from tests.testapp.models import Event  # noqa: E402
from tests.wagtailapp.models import ArticlePage  # noqa: E402
from tests.wagtailapp.site import make_home  # noqa: E402
from tests.wagtailapp.wagtail_hooks import remember_publish  # noqa: E402

JOBS_URL = "/admin/pgjobs/jobs/"
DJANGO_ADMIN_URL = "/django-admin/pgjobs/job/"


@pytest.fixture
def home(db):
    """The root page and a home page served by the default site (the tables are made
    without Wagtail's data migrations)."""
    return make_home()


@pytest.fixture
def admin_user(db):
    return User.objects.create_superuser("admin", "admin@example.com", "pw")


def editor(*perms):
    """A Wagtail editor (admin access) with the given ``pgjobs`` permissions."""
    user = User.objects.create_user(f"editor-{'-'.join(perms) or 'none'}", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="access_admin"))
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


# -- Wagtail's own tasks ------------------------------------------------------------------


def test_publishing_enqueues_wagtails_tasks_and_a_worker_runs_them(home, transactional_db):
    article = home.add_child(instance=ArticlePage(title="Article", related_page=home))
    article.save_revision().publish()

    funcs = set(Job.objects.values_list("func", flat=True))
    assert "wagtail.tasks.update_reference_index_task" in funcs
    assert "modelsearch.tasks.insert_or_update_object_task" in funcs
    assert set(Job.objects.values_list("status", flat=True)) == {records.READY}
    # Not run in the request: the reference index does not know the article yet.
    article_refs = ReferenceIndex.get_references_for_object(article)
    assert not article_refs.exists()

    run_jobs()
    assert status_counts() == {records.SUCCEEDED: Job.objects.count()}
    assert article_refs.filter(to_object_id=str(home.pk)).exists()


def test_publishing_in_the_admin_leaves_the_work_to_workers(home, admin_user, client):
    client.force_login(admin_user)
    response = client.post(
        f"/admin/pages/add/wagtailapp/articlepage/{home.pk}/",
        {"title": "Hello", "slug": "hello", "related_page": home.pk, "action-publish": "1"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    article = ArticlePage.objects.get(slug="hello")
    assert article.live
    rows = dict(Job.objects.values_list("func", "status"))
    assert rows["wagtail.tasks.update_reference_index_task"] == records.READY
    assert rows["tests.wagtailapp.wagtail_hooks.remember_publish"] == records.READY
    assert not Event.objects.exists()  # the background hook has not run either


def test_the_background_hook_runs_in_a_worker(home, admin_user, transactional_db):
    request = RequestFactory().post("/admin/pages/7/edit/", HTTP_HOST="testserver")
    request.user = admin_user
    article = home.add_child(instance=ArticlePage(title="Draft title"))
    Job.objects.all().delete()
    for hook in wagtail_hooks.get_hooks("after_publish_page"):
        assert hook(request, article) is None  # Wagtail goes on at once
    (job,) = Job.objects.all()
    assert (job.func, job.queue) == ("tests.wagtailapp.wagtail_hooks.remember_publish", "other")
    ArticlePage.objects.filter(pk=article.pk).update(title="Fresh title")  # fetched fresh

    run_jobs()
    job.refresh_from_db()
    assert job.status == records.SUCCEEDED, job.error
    site = Site.objects.get()
    assert list(Event.objects.values_list("name", "value")) == [
        (f"published Fresh title by admin POST site={site.pk} /admin/pages/7/edit/", article.pk)
    ]


# -- background hooks -----------------------------------------------------------------------


def sync_hook(request, page):
    return "sync"


def test_register_without_background_is_wagtails_register():
    before = list(wagtail_hooks.get_hooks("after_edit_page"))
    assert hooks.register("after_edit_page", order=-5)(sync_hook) is sync_hook
    try:
        assert wagtail_hooks.get_hooks("after_edit_page") == [sync_hook, *before]
        assert hooks.get_hooks is wagtail_hooks.get_hooks
    finally:
        wagtail_hooks._hooks["after_edit_page"].remove((sync_hook, -5))


def test_background_registration_wraps_the_hook():
    hooks.register("after_edit_page", sync_hook, order=3, background=True, priority=5)
    try:
        proxies = [fn for fn, order in wagtail_hooks._hooks["after_edit_page"] if order == 3]
        (proxy,) = proxies
        assert isinstance(proxy, BackgroundHook) and proxy.fn is sync_hook
        assert proxy.job_options == {"priority": 5}
    finally:
        wagtail_hooks._hooks["after_edit_page"].remove((proxy, 3))


@pytest.mark.parametrize(
    "hook_name",
    ["register_admin_urls", "construct_main_menu", "before_edit_page", "insert_editor_js"],
)
def test_synchronous_hooks_refuse_background(hook_name):
    with pytest.raises(ImproperlyConfigured) as raised:
        hooks.register(hook_name, background=True)
    message = str(raised.value)
    assert hook_name in message and "after_publish_page" in message


def test_hooks_whose_objects_are_gone_refuse_background():
    with pytest.raises(ImproperlyConfigured, match="no longer exists"):
        hooks.register("after_delete_page", sync_hook, background=True)


def test_background_hooks_must_be_importable_functions():
    def nested(request, page):
        pass

    with pytest.raises(ImproperlyConfigured, match="module-level"):
        hooks.register("after_edit_page", nested, background=True)
    with pytest.raises(TypeError, match="retries"):
        hooks.register("after_edit_page", sync_hook, background=True, retries=3)
    with pytest.raises(TypeError, match="background=True"):
        hooks.register("after_edit_page", sync_hook, priority=3)


def test_request_snapshot_travels_as_json(home, admin_user):
    request = RequestFactory().get("/admin/?q=1", HTTP_HOST="testserver")
    request.user = admin_user
    snapshot = RequestSnapshot.from_request(request)
    assert snapshot == RequestSnapshot(
        user_id=admin_user.pk,
        path="/admin/?q=1",
        method="GET",
        site_id=Site.objects.get().pk,
        hostname="testserver",
    )
    encoded = encode_arguments([snapshot, home], {})
    (back, page), _ = decode_arguments(*encoded)
    assert back == snapshot and back.user == admin_user and back.site.root_page_id == home.pk
    assert page == home and page is not home
    assert remember_publish.__module__ == "tests.wagtailapp.wagtail_hooks"


# -- the Wagtail admin view -----------------------------------------------------------------


@pytest.fixture
def some_jobs(db):
    refs = background.enqueue_many([(jobs.add, [n, n]) for n in range(3)])
    failed = Job.objects.get(pk=refs[0].id)
    failed.status = records.FAILED
    failed.error = {"type": "builtins.ValueError", "message": "boom", "traceback": "Traceback"}
    failed.save()
    return refs


def test_wagtail_listing_filters_searches_and_inspects(home, admin_user, client, some_jobs):
    client.force_login(admin_user)
    response = client.get(JOBS_URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "tests.testapp.jobs.add" in html and "Jobs" in html
    assert client.get(JOBS_URL, {"status": "failed"}).context["object_list"].count() == 1
    assert client.get(JOBS_URL, {"queue": "other"}).context["object_list"].count() == 0
    assert client.get(JOBS_URL, {"q": "jobs.add"}).context["object_list"].count() == 3
    assert client.get(JOBS_URL, {"q": "nothing"}).context["object_list"].count() == 0
    detail = client.get(f"{JOBS_URL}inspect/{some_jobs[0].id}/").content.decode()
    assert "builtins.ValueError" in detail and "boom" in detail and "[\n  0,\n  0\n]" in detail
    # Read-only, even for a superuser.
    assert client.get(reverse("pgjobs_jobs:add")).status_code == 403
    assert client.get(reverse("pgjobs_jobs:edit", args=[some_jobs[0].id])).status_code == 403


def test_wagtail_retry_and_cancel_actions(home, client, some_jobs):
    client.force_login(editor("change_job"))
    failed, ready = some_jobs[0].id, some_jobs[1].id
    response = client.post(f"/admin/bulk/pgjobs/job/retry/?id={failed}&next={JOBS_URL}")
    assert response.status_code == 302
    assert Job.objects.get(pk=failed).status == records.READY
    client.post(f"/admin/bulk/pgjobs/job/cancel/?id={ready}")
    assert Job.objects.get(pk=ready).status == records.CANCELLED


def test_wagtail_views_respect_permissions(home, client, some_jobs):
    nobody = editor()
    client.force_login(nobody)
    assert client.get(JOBS_URL).status_code == 403
    assert client.get(f"{JOBS_URL}inspect/{some_jobs[0].id}/").status_code == 403
    assert JOBS_URL not in client.get("/admin/").content.decode()  # no menu item

    viewer = editor("view_job")
    client.force_login(viewer)
    assert client.get(JOBS_URL).status_code == 200
    assert JOBS_URL in client.get("/admin/").content.decode()
    client.post(f"/admin/bulk/pgjobs/job/retry/?id={some_jobs[0].id}")
    assert Job.objects.get(pk=some_jobs[0].id).status == records.FAILED  # not allowed


# Every URL the Wagtail integration registers for jobs, found from the viewsets and the
# bulk-action registry rather than listed by hand, so a URL Wagtail adds later is tested too.
# ``usage`` (where a snippet is referenced) and ``history`` (its log) are Wagtail's for
# editors who may change or delete it: refused with ``view_job`` alone, as Wagtail decides.
READ_VIEWS = {
    "list",
    "list_results",
    "inspect",
    "choose",
    "choose_results",
    "chosen",
    "chosen_multiple",
}
# The job page's buttons: POST only, with ``change_job``.
ACT_VIEWS = {"retry", "cancel", "run_now"}


def job_urls(job_id):
    """``(view name, url)`` of every URL of the jobs viewset, its chooser and the bulk
    actions registered for ``Job``."""
    from wagtail.admin.views.bulk_action.registry import bulk_action_registry

    viewset = Job.snippet_viewset
    urls = []
    for vs in (viewset, viewset.chooser_viewset):
        for pattern in vs.get_urlpatterns():
            args = [job_id] if pattern.pattern.converters else []
            url = reverse(vs.get_url_name(pattern.name), args=args)
            if pattern.name == "chosen_multiple":
                url += f"?id={job_id}"
            urls.append((pattern.name, url))
    for action in bulk_action_registry.get_bulk_actions_for_model("pgjobs", "job"):
        urls.append(
            (
                f"bulk:{action.action_type}",
                f"/admin/bulk/pgjobs/job/{action.action_type}/?id={job_id}",
            )
        )
    return urls


def test_job_urls_are_enumerated(home, some_jobs):
    names = {name for name, _ in job_urls(some_jobs[0].id)}
    assert READ_VIEWS <= names
    assert ACT_VIEWS <= names
    assert {"bulk:retry", "bulk:cancel", "bulk:delete", "add", "edit", "create"} <= names


def refused(response):
    """A 403, or a redirect away (Wagtail's own answer), never the page."""
    return response.status_code == 403 or (
        response.status_code == 302 and "/pgjobs/" not in response["Location"]
    )


def test_no_job_url_shows_jobs_without_permission(home, client, some_jobs):
    """Issue 20 bug 2: the snippet chooser and the bulk-action pages named jobs to an
    editor without pgjobs permissions."""
    client.force_login(editor())
    job_id = some_jobs[0].id
    for name, url in job_urls(job_id):
        for method in (client.get, client.post):
            response = method(url)
            body = response.content.decode()
            assert refused(response), (name, url, response.status_code)
            assert "tests.testapp.jobs.add" not in body, (name, url)
            assert f"#{job_id}" not in body, (name, url)
    assert status_counts() == {records.FAILED: 1, records.READY: 2}


def test_view_job_reads_but_does_not_act(home, client, some_jobs):
    client.force_login(editor("view_job"))
    job_id = some_jobs[0].id
    for name, url in job_urls(job_id):
        response = client.get(url)
        if name in READ_VIEWS:
            assert response.status_code == 200, (name, url, response.status_code)
        else:
            assert refused(response), (name, url, response.status_code)
            assert refused(client.post(url)), (name, url)
    assert status_counts() == {records.FAILED: 1, records.READY: 2}


def test_change_job_reads_and_acts(home, client, some_jobs):
    client.force_login(editor("change_job"))
    failed, ready = some_jobs[0].id, some_jobs[1].id
    for name, url in job_urls(failed):
        response = client.get(url)
        if name in READ_VIEWS or name in {"bulk:retry", "bulk:cancel"}:
            assert response.status_code == 200, (name, url, response.status_code)
        elif name in ACT_VIEWS:
            assert response.status_code == 405, (name, url, response.status_code)
        else:  # nobody adds or edits a job; deleting needs delete_job
            assert refused(response), (name, url, response.status_code)
            assert refused(client.post(url)), (name, url)
    assert Job.objects.filter(pk=failed).exists()
    assert client.post(f"/admin/bulk/pgjobs/job/retry/?id={failed}").status_code == 302
    assert Job.objects.get(pk=failed).status == records.READY
    assert client.post(f"/admin/bulk/pgjobs/job/cancel/?id={ready}").status_code == 302
    assert Job.objects.get(pk=ready).status == records.CANCELLED


def test_delete_job_deletes(home, client, some_jobs):
    client.force_login(editor("view_job", "delete_job"))
    job_id = some_jobs[0].id
    url = f"/admin/bulk/pgjobs/job/delete/?id={job_id}"
    assert client.get(url).status_code == 200
    assert client.post(url).status_code == 302
    assert not Job.objects.filter(pk=job_id).exists()


def test_deferred_jobs_read_as_future(home, admin_user, client):
    """Issue 20 bug 8: a job due in 3 days read "Just now" under "Run at"."""
    client.force_login(admin_user)
    when = timezone.now() + datetime.timedelta(days=3, minutes=1)
    background.defer(jobs.add, when=when, args=[1, 2])
    html = client.get(JOBS_URL).content.decode()
    assert "in 3\xa0days" in html or "in 3 days" in html, html


def job_with_run_at(sql_value):
    job_id = background.enqueue(jobs.add, args=[1, 2]).id
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE pgjobs_job SET run_at = {sql_value} WHERE id = %s", [job_id])
    return job_id


def wagtail_job_pages(client, job_id):
    """The pages that show a job's times: listing, inspect, and the chooser's."""
    viewset = Job.snippet_viewset
    return {
        url: client.get(url)
        for url in (
            JOBS_URL,
            f"{JOBS_URL}results/",
            reverse(viewset.get_url_name("inspect"), args=[job_id]),
            reverse(viewset.chooser_viewset.get_url_name("choose")),
            reverse(viewset.chooser_viewset.get_url_name("choose_results")),
            reverse(viewset.chooser_viewset.get_url_name("chosen"), args=[job_id]),
        )
    }


@pytest.mark.skipif(VENDOR != "postgres", reason="only PostgreSQL has 'infinity' timestamps")
@pytest.mark.parametrize(("sql", "shown"), [("'infinity'", "never"), ("'-infinity'", "any time")])
def test_infinite_run_times_render(home, admin_user, client, sql, shown):
    """Issue 20: a run_at of 'infinity' written by hand gave a 500 on the listing and
    the inspect page (psycopg cannot make it a datetime)."""
    client.force_login(admin_user)
    job_id = job_with_run_at(sql)
    pages = wagtail_job_pages(client, job_id)
    for url, response in pages.items():
        assert response.status_code == 200, url
    assert shown in pages[JOBS_URL].content.decode()
    assert shown in pages[f"{JOBS_URL}inspect/{job_id}/"].content.decode()


def test_the_year_9999_renders(home, admin_user, client):
    client.force_login(admin_user)
    when = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
    job_id = background.enqueue(jobs.add, args=[1, 2]).id
    Job.objects.filter(pk=job_id).update(run_at=when)  # by hand: defer refuses it
    pages = wagtail_job_pages(client, job_id)
    for url, response in pages.items():
        assert response.status_code == 200, url
    assert "9999" in pages[f"{JOBS_URL}inspect/{job_id}/"].content.decode()


def queries_for(client, url):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("url", [JOBS_URL, DJANGO_ADMIN_URL])
def test_listings_do_not_query_per_row(home, admin_user, client, url):
    """A full page costs what a nearly empty one does; a table of 100,000 jobs only
    makes the paginator's count slower, never adds queries."""
    client.force_login(admin_user)
    background.enqueue_many([(jobs.add, [n, n]) for n in range(3)])
    client.get(url)  # warm the caches (content types, permissions)
    few = queries_for(client, url)
    background.enqueue_many([(jobs.add, [n, n]) for n in range(2000)], queue="other")
    assert queries_for(client, url) == few
    assert queries_for(client, f"{url}?status=ready&queue=other") <= few


# -- the Django admin -------------------------------------------------------------------------


def test_django_admin_list_detail_and_actions(admin_user, client, some_jobs):
    client.force_login(admin_user)
    html = client.get(DJANGO_ADMIN_URL).content.decode()
    for column in ("status", "queue", "priority", "function", "run at", "attempts"):
        assert column in html.lower()
    assert client.get(DJANGO_ADMIN_URL, {"q": "jobs.add"}).context["cl"].result_count == 3
    detail = client.get(f"{DJANGO_ADMIN_URL}{some_jobs[0].id}/change/").content.decode()
    assert "builtins.ValueError" in detail and "boom" in detail
    client.post(
        DJANGO_ADMIN_URL,
        {"action": "retry_jobs", "_selected_action": [some_jobs[0].id]},
    )
    assert Job.objects.get(pk=some_jobs[0].id).status == records.READY
    client.post(
        DJANGO_ADMIN_URL,
        {"action": "cancel_jobs", "_selected_action": [some_jobs[1].id]},
    )
    assert Job.objects.get(pk=some_jobs[1].id).status == records.CANCELLED


def test_django_admin_respects_permissions(client, some_jobs):
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(DJANGO_ADMIN_URL).status_code == 403
    assert "pgjobs/job" not in client.get("/django-admin/").content.decode()


# -- batches -------------------------------------------------------------------------------

BATCHES_URL = "/admin/pgjobs/batches/"


def test_wagtail_batch_pages_show_progress_and_jobs_to_job_viewers(home, client):
    batch = background.batch(
        [(jobs.add, [n, n], {}) for n in range(3)], on_finish=jobs.noop, description="thumbs"
    )
    client.force_login(editor())
    assert client.get(BATCHES_URL).status_code == 403
    assert client.get(f"{BATCHES_URL}inspect/{batch.id}/").status_code == 403
    client.force_login(editor("view_job"))
    listing = client.get(BATCHES_URL)
    assert listing.status_code == 200 and "thumbs" in listing.content.decode()
    page = client.get(f"{BATCHES_URL}inspect/{batch.id}/").content.decode()
    assert '<progress value="0" max="3">' in page
    assert f"{JOBS_URL}inspect/{batch.jobs[0].id}/" in page and "waiting" in page
    job_page = client.get(f"{JOBS_URL}inspect/{batch.jobs[1].id}/").content.decode()
    assert f"{BATCHES_URL}inspect/{batch.id}/" in job_page
    assert client.get(reverse("pgjobs_batches:delete", args=[batch.id])).status_code in (302, 403)
    assert Batch.objects.filter(pk=batch.id).exists()


# -- the Queues page ------------------------------------------------------------------------

QUEUES_URL = "/admin/pgjobs/queues/"


def test_the_queues_page_pauses_and_resumes(home, admin_user, client):
    background.enqueue(jobs.noop, queue="other")
    client.force_login(admin_user)
    page = client.get(QUEUES_URL).content.decode()
    assert 'data-queue="other"' in page and "Pause" in page
    assert QUEUES_URL in client.get("/admin/").content.decode()  # the menu item
    response = client.post(QUEUES_URL, {"queue": "other", "action": "pause"}, follow=True)
    assert "Queue &#x27;other&#x27; paused" in response.content.decode()
    assert background.queue_controls(["other"])["other"].paused
    client.post(QUEUES_URL, {"queue": "other", "action": "resume"})
    assert not background.queue_controls(["other"])["other"].paused


def test_the_queues_page_respects_permissions(home, client):
    client.force_login(editor())
    assert client.get(QUEUES_URL).status_code == 403
    assert QUEUES_URL not in client.get("/admin/").content.decode()
    client.force_login(editor("view_queuecontrol"))
    page = client.get(QUEUES_URL).content.decode()
    assert 'name="action"' not in page, "no buttons for a viewer"
    assert client.post(QUEUES_URL, {"queue": "other", "action": "pause"}).status_code == 403
    assert not background.queue_controls(["other"])["other"].paused
    client.force_login(editor("change_queuecontrol"))
    client.post(QUEUES_URL, {"queue": "other", "action": "pause"})
    assert background.queue_controls(["other"])["other"].paused


def test_the_job_page_buttons_need_a_csrf_token_and_a_job_id(home, some_jobs):
    """The buttons' POSTs are refused without the CSRF token even on a site whose
    middleware does not check it (as the Django admin's ``admin_view`` does), and a
    job id that is no number is a 404, not a server error."""
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(editor("change_job"))
    ready = some_jobs[1].id
    assert strict.post(reverse("pgjobs_jobs:cancel", args=[ready])).status_code == 403
    assert Job.objects.get(pk=ready).status == records.READY
    page = strict.get(reverse("pgjobs_jobs:inspect", args=[ready]))  # sets the cookie
    token = page.content.decode().split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    assert strict.post(reverse("pgjobs_jobs:cancel", args=[ready])).status_code == 403
    lenient = Client()
    lenient.force_login(User.objects.get(username="editor-change_job"))
    assert lenient.post(reverse("pgjobs_jobs:cancel", args=["nope"])).status_code == 404
    response = strict.post(
        reverse("pgjobs_jobs:cancel", args=[ready]), {"csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert Job.objects.get(pk=ready).status == records.CANCELLED
