"""Page bulk actions in the background (``pgjobs.contrib.wagtail.bulk``), through the
Wagtail admin's own bulk-action URLs: large selections run as jobs, the progress
endpoint and page follow them, permissions are checked per page when each job runs.

Runs in the integration pass (``--ds=tests.wagtail_settings``).
"""

import pytest
from django.conf import settings

if "pgjobs.contrib.wagtail" not in settings.INSTALLED_APPS:
    pytest.skip(
        "integration pass only: pytest --ds=tests.wagtail_settings", allow_module_level=True
    )

from urllib.parse import urlencode  # noqa: E402

from django.contrib.auth.models import Group, Permission, User  # noqa: E402
from django.test import override_settings  # noqa: E402
from wagtail.models import GroupPagePermission, Page  # noqa: E402

from pgjobs.contrib.wagtail.models import BulkActionItem, BulkActionRun  # noqa: E402
from tests.conftest import REQUIRE_SERVICES, VENDOR, run_jobs, status_counts  # noqa: E402
from tests.wagtailapp.models import ArticlePage  # noqa: E402
from tests.wagtailapp.site import clear_jobs, make_home  # noqa: E402

#: The threshold the tests run with (10 by default): more pages than this run in workers.
THRESHOLD = 3
MANY = 5


@pytest.fixture(autouse=True)
def threshold():
    with override_settings(PGJOBS={**settings.PGJOBS, "WAGTAIL_BULK_ACTIONS": THRESHOLD}):
        yield


@pytest.fixture
def home(transactional_db):
    return make_home()


@pytest.fixture
def admin(transactional_db):
    return User.objects.create_superuser("admin", "admin@example.com", "pw")


def drafts(parent, count, prefix="Draft"):
    return [
        parent.add_child(
            instance=ArticlePage(title=f"{prefix} {n}", slug=f"{prefix.lower()}-{n}", live=False)
        )
        for n in range(count)
    ]


def bulk_url(action, pages, parent):
    query = urlencode(
        [("id", page.pk) for page in pages] + [("next", f"/admin/pages/{parent.pk}/")]
    )
    return f"/admin/bulk/wagtailcore/page/{action}/?{query}"


def post_bulk(client, action, pages, parent, data=None):
    return client.post(bulk_url(action, pages, parent), data or {})


def progress_of(client, run):
    response = client.get(f"/admin/pgjobs/bulk/{run.pk}/progress/")
    assert response.status_code == 200
    return response.json()


def live_count(pages):
    return Page.objects.filter(pk__in=[p.pk for p in pages], live=True).count()


def test_a_large_publish_returns_at_once_and_workers_publish(home, admin, client):
    client.force_login(admin)
    pages = drafts(home, MANY)
    status_before = status_counts()
    response = post_bulk(client, "publish", pages, home, {"include_descendants": ""})
    run = BulkActionRun.objects.get()
    assert response.status_code == 302 and response.url == f"/admin/pgjobs/bulk/{run.pk}/"
    assert live_count(pages) == 0  # nothing published in the request
    jobs_now = status_counts()
    assert jobs_now.get("ready", 0) - status_before.get("ready", 0) >= MANY
    assert progress_of(client, run) == {
        "run": run.pk,
        "action": "publish",
        "total": MANY,
        "finished": 0,
        "done": 0,
        "refused": 0,
        "failed": 0,
        "cancelled": 0,
        "complete": False,
        "percent": 0,
    }
    page = client.get(response.url)
    assert b'id="pgjobs-bulk-bar"' in page.content and b"pgjobs-bulk-summary" not in page.content

    run_jobs()
    assert live_count(pages) == MANY
    state = progress_of(client, run)
    assert (state["finished"], state["done"], state["complete"], state["percent"]) == (
        MANY,
        MANY,
        True,
        100,
    )
    summary = client.get(response.url).content.decode()
    assert f"{MANY} pages done" in summary and "0 pages refused" in summary


def test_a_small_selection_runs_in_the_request(home, admin, client):
    client.force_login(admin)
    pages = drafts(home, THRESHOLD)
    response = post_bulk(client, "publish", pages, home)
    assert response.status_code == 302 and response.url == f"/admin/pages/{home.pk}/"
    assert live_count(pages) == THRESHOLD
    assert not BulkActionRun.objects.exists()


def test_turned_off_every_selection_runs_in_the_request(home, admin, client):
    client.force_login(admin)
    pages = drafts(home, MANY)
    with override_settings(PGJOBS={**settings.PGJOBS, "WAGTAIL_BULK_ACTIONS": None}):
        post_bulk(client, "publish", pages, home)
    assert live_count(pages) == MANY and not BulkActionRun.objects.exists()


def test_permissions_are_checked_per_page_when_each_job_runs(home, admin, client):
    section = home.add_child(instance=Page(title="Section", slug="section"))
    elsewhere = home.add_child(instance=Page(title="Elsewhere", slug="elsewhere"))
    editors = Group.objects.create(name="Section editors")
    editors.permissions.add(Permission.objects.get(codename="access_admin"))
    for codename in ("add_page", "change_page", "publish_page"):
        GroupPagePermission.objects.create(
            group=editors, page=section, permission=Permission.objects.get(codename=codename)
        )
    editor = User.objects.create_user("editor", password="pw")
    editor.groups.add(editors)
    pages = drafts(section, MANY + 2)
    gone = pages[-1]

    client.force_login(editor)
    response = post_bulk(client, "publish", pages, section)
    run = BulkActionRun.objects.get()
    assert response.status_code == 302 and run.user == editor and run.total == len(pages)
    # Meanwhile, an administrator moves two pages out of the editor's section and
    # deletes one.
    for page in pages[:2]:
        page.refresh_from_db()
        page.move(elsewhere, pos="last-child")
    Page.objects.get(pk=gone.pk).delete()

    run_jobs()
    assert live_count(pages[:2]) == 0  # refused: no longer in a section the editor publishes
    assert live_count(pages[2:-1]) == len(pages) - 3
    outcomes = dict(run.items.values_list("title", "status"))
    assert [outcomes[p.title] for p in pages[:2]] == [BulkActionItem.REFUSED] * 2
    assert outcomes[gone.title] == BulkActionItem.FAILED
    state = progress_of(client, run)
    assert (state["done"], state["refused"], state["failed"], state["complete"]) == (
        len(pages) - 3,
        2,
        1,
        True,
    )
    summary = client.get(f"/admin/pgjobs/bulk/{run.pk}/").content.decode()
    assert "You no longer have permission to publish this page." in summary
    assert "The page no longer exists." in summary
    assert f"{len(pages) - 3} pages done" in summary and "2 pages refused" in summary


def test_cancelling_leaves_the_pages_not_done_yet_alone(home, admin, client):
    client.force_login(admin)
    pages = drafts(home, MANY)
    clear_jobs()  # Wagtail's own tasks: the worker below runs only the pages'
    progress_url = post_bulk(client, "publish", pages, home).url
    run = BulkActionRun.objects.get()
    run_jobs(max_jobs=2)
    published = live_count(pages)
    assert 0 < published < MANY

    response = client.post(f"/admin/pgjobs/bulk/{run.pk}/cancel/")
    assert response.status_code == 302 and response.url == progress_url
    run_jobs()  # the remaining jobs find their pages cancelled
    assert live_count(pages) == published
    state = progress_of(client, run)
    assert (state["done"], state["cancelled"], state["complete"]) == (
        published,
        MANY - published,
        True,
    )
    summary = client.get(progress_url).content.decode()
    assert "Cancelled by admin before it ran." in summary


def test_a_run_is_one_batch_and_cancelling_the_batch_settles_its_pages(home, admin, client):
    from pgjobs import background

    client.force_login(admin)
    pages = drafts(home, MANY)
    post_bulk(client, "publish", pages, home)
    run = BulkActionRun.objects.get()
    batch = background.get_batch(run.batch_id)
    assert batch.total == MANY and str(run.pk) in batch.description
    batch.cancel()  # as the jobs admin's batch page does

    run_jobs()  # the on_finish callback settles the pages whose job never ran
    assert live_count(pages) == 0
    state = progress_of(client, run)
    assert (state["cancelled"], state["complete"]) == (MANY, True)
    page = client.get(f"/admin/pgjobs/bulk/{run.pk}/").content.decode()
    assert "cancelled in the jobs admin" in page and 'id="pgjobs-bulk-batch"' in page


def test_another_user_cannot_follow_a_run(home, admin, client):
    client.force_login(admin)
    post_bulk(client, "publish", drafts(home, MANY), home)
    run = BulkActionRun.objects.get()
    other = User.objects.create_user("other", password="pw")
    other.user_permissions.add(Permission.objects.get(codename="access_admin"))
    client.force_login(other)
    assert client.get(f"/admin/pgjobs/bulk/{run.pk}/").status_code == 403
    assert client.get(f"/admin/pgjobs/bulk/{run.pk}/progress/").status_code == 403
    assert client.post(f"/admin/pgjobs/bulk/{run.pk}/cancel/").status_code == 403
    assert run.items.filter(status=BulkActionItem.PENDING).count() == MANY


def test_unpublish_delete_and_move_run_in_workers(home, admin, client):
    client.force_login(admin)
    target = home.add_child(instance=Page(title="Archive", slug="archive"))
    to_unpublish = drafts(home, MANY, prefix="Live")
    for page in to_unpublish:
        page.save_revision().publish()
    assert post_bulk(client, "unpublish", to_unpublish, home).status_code == 302
    to_delete = drafts(home, MANY, prefix="Old")
    response = post_bulk(client, "delete", to_delete, home, {"confirm_site_name": "pgjobs tests"})
    assert response.status_code == 302, response.content.decode()[:2000]
    to_move = drafts(home, MANY, prefix="Moving")
    response = post_bulk(client, "move", to_move, home, {"chooser": target.pk})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert BulkActionRun.objects.count() == 3
    assert live_count(to_unpublish) == MANY
    assert Page.objects.filter(pk__in=[p.pk for p in to_delete]).count() == MANY

    run_jobs()
    assert live_count(to_unpublish) == 0
    assert not Page.objects.filter(pk__in=[p.pk for p in to_delete]).exists()
    target.refresh_from_db()
    assert set(target.get_children().values_list("pk", flat=True)) == {p.pk for p in to_move}
    for run in BulkActionRun.objects.all():
        assert progress_of(client, run)["done"] == MANY, run.action


# -- the progress bar in headless Chromium ------------------------------------------------


@pytest.fixture
def browser():
    """Headless Chromium through Debian's chromedriver; quit at teardown."""
    import shutil

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if REQUIRE_SERVICES:
            raise
        pytest.skip("selenium is not installed (pip install 'pgjobs[test]')")
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        if REQUIRE_SERVICES:
            pytest.fail("chromedriver is missing (apt-get install chromium chromium-driver)")
        pytest.skip("chromedriver is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.mark.skipif(
    VENDOR != "postgres",
    reason="the browser's view does not depend on the database: once per stack",
)
def test_the_progress_bar_updates_in_a_browser_until_the_summary(
    home, admin, client, live_server, browser
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client.force_login(admin)
    pages = drafts(home, MANY)
    clear_jobs()  # Wagtail's own tasks: the worker below runs only the pages'
    progress_url = post_bulk(client, "publish", pages, home).url
    browser.get(f"{live_server.url}/admin/login/")
    browser.add_cookie(
        {"name": "sessionid", "value": client.cookies["sessionid"].value, "path": "/"}
    )
    browser.get(f"{live_server.url}{progress_url}")
    bar = browser.find_element(By.ID, "pgjobs-bulk-bar")
    assert (bar.get_property("max"), bar.get_property("value")) == (MANY, 0)

    run_jobs(max_jobs=2)  # part of the way: the bar follows without a reload
    done = BulkActionItem.objects.exclude(status=BulkActionItem.PENDING).count()
    assert 0 < done < MANY
    WebDriverWait(browser, 15).until(
        lambda b: b.find_element(By.ID, "pgjobs-bulk-bar").get_property("value") == done
    )
    assert f"{done} of {MANY} pages" in browser.find_element(By.ID, "pgjobs-bulk-status").text
    assert not browser.find_elements(By.ID, "pgjobs-bulk-summary")

    run_jobs()
    summary = WebDriverWait(browser, 15).until(
        lambda b: b.find_elements(By.ID, "pgjobs-bulk-summary")
    )[0]
    assert f"{MANY} pages done" in summary.text and "0 pages failed" in summary.text
    assert browser.find_element(By.ID, "pgjobs-bulk-bar").get_property("value") == MANY


@pytest.mark.parametrize("value", [-1, "10", True, 2.5])
def test_checks_report_a_bad_threshold(value):
    from django.core import checks

    with override_settings(PGJOBS={**settings.PGJOBS, "WAGTAIL_BULK_ACTIONS": value}):
        (error,) = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.E022"]
        assert "WAGTAIL_BULK_ACTIONS" in error.msg and repr(value) in error.msg


def test_a_cancel_while_a_page_is_acted_on_leaves_it_done_not_cancelled(home, admin, client):
    # The cancel arrives while a job is publishing its page (inside the job's
    # transaction): the page ends published, so its item must say done, not
    # "cancelled before it ran"; the pages not started are cancelled.
    import threading

    from django.db import connection
    from wagtail.signals import page_published

    from pgjobs.contrib.wagtail.bulk import cancel_run

    client.force_login(admin)
    pages = drafts(home, MANY)
    clear_jobs()
    post_bulk(client, "publish", pages, home)
    run = BulkActionRun.objects.get()
    cancels = []

    def cancel():
        try:
            cancels.append(cancel_run(BulkActionRun.objects.get(pk=run.pk), admin))
        finally:
            connection.close()

    def cancel_meanwhile(sender, **kwargs):
        if not cancels and not threads:
            threads.append(threading.Thread(target=cancel))
            threads[0].start()
            threads[0].join(1.0)  # with the item locked, it waits for this job's commit

    threads = []
    page_published.connect(cancel_meanwhile)
    try:
        run_jobs(max_jobs=1)
    finally:
        page_published.disconnect(cancel_meanwhile)
        for thread in threads:
            thread.join(10)
    assert cancels == [MANY - 1]
    assert live_count(pages) == 1
    state = progress_of(client, run)
    assert (state["done"], state["cancelled"], state["complete"]) == (1, MANY - 1, True)


@override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, "django.middleware.csrf.CsrfViewMiddleware"])
def test_cancelling_needs_the_csrf_token(home, admin):
    # As on a real site (the test settings leave Django's CSRF middleware out).
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    pages = drafts(home, MANY)
    assert client.get(bulk_url("publish", pages, home)).status_code == 200  # the confirmation
    token = client.cookies["csrftoken"].value
    client.post(bulk_url("publish", pages, home), {"csrfmiddlewaretoken": token})
    run = BulkActionRun.objects.get()
    assert client.post(f"/admin/pgjobs/bulk/{run.pk}/cancel/").status_code == 403
    assert run.items.filter(status=BulkActionItem.PENDING).count() == MANY
    response = client.post(f"/admin/pgjobs/bulk/{run.pk}/cancel/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert run.items.filter(status=BulkActionItem.CANCELLED).count() == MANY
