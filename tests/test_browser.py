"""The dashboard and the job pages in a real browser: Debian's headless Chromium driven
by Selenium against pytest-django's live server, in both admins.

What a person relies on: the figures and charts are there with data and refresh
without a reload, the job page's buttons change the job, and a user without the
permission is refused the page and each button's POST.

Integration pass (``--ds=tests.wagtail_settings``), PostgreSQL only: the pages are the
same on every database, and tests/test_dashboard.py reads the figures on each one.
``PGJOBS_SCREENSHOTS=DIR`` saves the README's screenshots there.
"""

import datetime
import os
import shutil

import pytest
from django.conf import settings

if "pgjobs.contrib.wagtail" not in settings.INSTALLED_APPS:
    pytest.skip(
        "integration pass only: pytest --ds=tests.wagtail_settings", allow_module_level=True
    )

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.utils import timezone  # noqa: E402

from pgjobs import background, records  # noqa: E402
from pgjobs.dashboard import views as dashboard_views  # noqa: E402
from pgjobs.models import Job, JobAttempt, WorkerProcess  # noqa: E402
from tests.conftest import REQUIRE_SERVICES, VENDOR, add_figures, wait_for  # noqa: E402
from tests.testapp import jobs  # noqa: E402

pytestmark = [
    pytest.mark.sql_store("the pages read the Job table"),
    pytest.mark.skipif(VENDOR != "postgres", reason="browser tests run in the PostgreSQL pass"),
]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAGTAIL_DASHBOARD = "/admin/pgjobs/dashboard/"
WAGTAIL_JOB = "/admin/pgjobs/jobs/inspect/{}/"
DJANGO_DASHBOARD = "/django-admin/pgjobs/job/dashboard/"
DJANGO_JOB = "/django-admin/pgjobs/job/{}/change/"
SHOTS = os.environ.get("PGJOBS_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (starting one costs a second or two)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if REQUIRE_SERVICES:
            pytest.fail("selenium is not installed (pip install -e '.[test]')")
        pytest.skip("selenium is not installed")
    if not (CHROMIUM and CHROMEDRIVER):
        if REQUIRE_SERVICES:
            pytest.fail("chromium and chromium-driver are not installed (apt-get install them)")
        pytest.skip("chromium and chromium-driver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def site(transactional_db):
    """A Wagtail root page (the admin's sidebar and dashboard read it)."""
    from wagtail.models import Collection, Locale, Page

    Locale.objects.get_or_create(language_code="en")
    Collection.add_root(name="Root")
    Page.add_root(instance=Page(title="Root"))
    Job.objects.all().delete()  # the save above enqueued Wagtail's tasks


def user_with(*codenames, superuser=False):
    user = User.objects.create_user(
        f"user-{'-'.join(codenames) or 'none'}{'-super' if superuser else ''}",
        is_staff=True,
        is_superuser=superuser,
    )
    user.user_permissions.add(Permission.objects.get(codename="access_admin"))
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.fixture
def login(browser, live_server, client):
    """``login(user)``: the browser's session is ``user``'s."""

    def log_in(user):
        client.force_login(user)
        browser.get(live_server.url + "/admin/login/")
        browser.delete_all_cookies()
        browser.add_cookie({"name": "sessionid", "value": client.cookies["sessionid"].value})
        return browser

    return log_in


def open_page(browser, live_server, path, width=1400):
    browser.set_window_size(width, 1000)
    browser.get(live_server.url + path)
    return browser


# Read in one script each, so that the dashboard's refresh swapping the panels in
# between finding an element and reading it cannot leave a stale reference.
def text(browser, selector):
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.innerText.trim();",
        selector,
    )


def count(browser, selector):
    return browser.execute_script(
        "return document.querySelectorAll(arguments[0]).length;", selector
    )


def history(now):
    """Jobs of the last half hour: 40 succeeded, 3 failed, some due, some deferred."""
    refs = background.enqueue_many([(jobs.add, [n, n]) for n in range(50)])
    for n, ref in enumerate(refs[:43]):
        started = now - datetime.timedelta(minutes=30 - n // 2, seconds=10)
        Job.objects.filter(pk=ref.id).update(
            status=records.SUCCEEDED if n < 40 else records.FAILED,
            run_at=started - datetime.timedelta(seconds=2 + n % 5),
            started_at=started,
            finished_at=started + datetime.timedelta(seconds=1 + n % 3),
            attempts=1,
            error=None
            if n < 40
            else {"type": "builtins.ValueError", "message": "no such page", "traceback": "..."},
        )
    # What the workers would have written as they recorded those outcomes.
    add_figures(
        *[
            (
                "default",
                records.SUCCEEDED if n < 40 else records.FAILED,
                now - datetime.timedelta(minutes=30 - n // 2),
                2 + n % 5,
                1 + n % 3,
            )
            for n in range(43)
        ],
        *[
            ("default", records.RETRIED, now - datetime.timedelta(minutes=m), 0.5, 3)
            for m in (9, 7)
        ],
    )
    background.defer(jobs.add, when=now + datetime.timedelta(days=3), args=[7, 7])
    WorkerProcess.objects.create(
        id="web-1:4242",
        hostname="web-1",
        pid=4242,
        queues=["default"],
        concurrency=4,
        started_at=now - datetime.timedelta(minutes=5),
        heartbeat_at=now,
    )
    return refs


def js_fetch_status(browser, url):
    """POST ``url`` from the page with its CSRF cookie; the response's status."""
    return browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const token = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "";
        fetch(arguments[0], {method: "POST", credentials: "same-origin", redirect: "manual",
                             headers: {"X-CSRFToken": token}})
          .then(r => done(r.type === "opaqueredirect" ? 302 : r.status));
        """,
        url,
    )


# -- the dashboard ----------------------------------------------------------------------------


def test_the_dashboard_shows_figures_and_charts_and_refreshes_without_a_reload(
    site, login, live_server, monkeypatch
):
    monkeypatch.setattr(dashboard_views, "REFRESH_SECONDS", 1)
    history(timezone.now())
    browser = login(user_with("view_job"))
    row = '#pgjobs-queues tr[data-queue="default"] '
    due = 7
    for path in (DJANGO_DASHBOARD, WAGTAIL_DASHBOARD):
        open_page(browser, live_server, path)
        assert text(browser, row + '[data-figure="due"]') == str(due), path
        assert text(browser, row + '[data-figure="deferred"]') == "1"
        assert text(browser, row + '[data-figure="failed"]') == "3"
        assert count(browser, ".pgjobs-chart svg") == 4
        assert count(browser, "rect.bar--succeeded") > 5
        assert count(browser, "rect.bar--failed") >= 1
        assert count(browser, "rect.bar--retried") == 2
        assert count(browser, "polyline.line--p95") >= 1
        assert "web-1" in text(browser, "#pgjobs-workers")
        if SHOTS and path == WAGTAIL_DASHBOARD:
            browser.set_window_size(1400, 1150)
            browser.save_screenshot(os.path.join(SHOTS, "dashboard.png"))
            browser.set_window_size(1400, 1000)

        browser.execute_script("window.notReloaded = true")
        background.enqueue_many([(jobs.add, [1, 1])] * 5)
        due += 5
        wait_for(
            lambda: text(browser, row + '[data-figure="due"]') == str(due),  # noqa: B023
            timeout=10,
            message="the due figure to refresh",
        )
        assert browser.execute_script("return window.notReloaded") is True
        assert count(browser, ".pgjobs-chart svg") == 4

    # Found and clicked in one script: the refresh swaps the panels every second, and a
    # link found in one call could be gone by the next.
    browser.execute_script(
        "Array.from(document.querySelectorAll('.pgjobs-windows a'))"
        ".find(a => a.textContent.trim() === 'last day').click();"
    )
    wait_for(
        lambda: (
            "window=day" in browser.current_url
            and browser.execute_script("return document.readyState") == "complete"
        ),
        message="the day window",
    )
    assert count(browser, ".pgjobs-chart svg") == 4
    assert count(browser, "rect.bar--succeeded") >= 1

    # Signed out meanwhile (the session ended): the next refresh takes the page to the
    # login page, instead of swapping the login form in as the dashboard's panels.
    browser.delete_cookie("sessionid")
    wait_for(lambda: "/login/" in browser.current_url, message="the login page")
    assert count(browser, "#pgjobs-dashboard") == 0


# -- the job pages ------------------------------------------------------------------------------


def failed_job():
    """A job that failed three times, with its attempts kept as the stores keep them."""
    ref = background.enqueue(jobs.add, args=[1, 2], kwargs={"note": "publish page 7"})
    now = timezone.now()
    for attempt in (1, 2, 3):
        JobAttempt.objects.create(
            job_id=ref.id,
            attempt=attempt,
            started_at=now - datetime.timedelta(minutes=10 - 3 * attempt),
            finished_at=now - datetime.timedelta(minutes=10 - 3 * attempt, seconds=-2),
            worker_id="web-1:4242",
            outcome=records.RETRIED if attempt < 3 else records.FAILED,
            error={
                "type": "builtins.ValueError",
                "message": f"page 7 has no body (attempt {attempt})",
                "traceback": "Traceback (most recent call last):\n...",
            },
        )
    Job.objects.filter(pk=ref.id).update(
        status=records.FAILED,
        attempts=3,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        error={
            "type": "builtins.ValueError",
            "message": "page 7 has no body",
            "traceback": 'Traceback (most recent call last):\n  File "jobs.py", line 3, in add\n'
            "ValueError: page 7 has no body",
        },
    )
    return ref.id


def click_action(browser, name):
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'button[data-action="{name}"]').click()
    wait_for(
        lambda: browser.execute_script("return document.readyState") == "complete",
        message="the page after the button",
    )


def test_the_job_page_buttons_retry_run_now_and_cancel(site, login, live_server):
    browser = login(user_with("change_job"))
    for page in (WAGTAIL_JOB, DJANGO_JOB):
        job_page_buttons(browser, live_server, page)


def job_page_buttons(browser, live_server, page):
    failed = failed_job()
    deferred = background.defer(
        jobs.add, when=timezone.now() + datetime.timedelta(days=3), args=[3, 4]
    ).id
    open_page(browser, live_server, page.format(failed))
    assert count(browser, ".pgjobs-status--failed") >= 1
    assert count(browser, 'button[data-action="run-now"]') == 0
    assert "page 7 has no body" in text(browser, ".pgjobs-error" if page == WAGTAIL_JOB else "body")
    assert count(browser, ".pgjobs-attempts tr[data-attempt]") == 3
    assert "(attempt 1)" in text(browser, '.pgjobs-attempts tr[data-attempt="1"]')
    assert count(browser, ".pgjobs-attempts .pgjobs-status--retried") == 2
    if SHOTS:
        browser.set_window_size(1400, 760)
        name = "failed-job.png" if page == WAGTAIL_JOB else "django-admin-failed-job.png"
        browser.save_screenshot(os.path.join(SHOTS, name))
        browser.set_window_size(1400, 1000)
    click_action(browser, "retry")
    wait_for(lambda: Job.objects.get(pk=failed).status == records.READY, message="retried")
    assert Job.objects.get(pk=failed).attempts == 0
    assert "queued again" in browser.page_source

    open_page(browser, live_server, page.format(deferred))
    assert "deferred" in text(browser, ".pgjobs-status--deferred")
    click_action(browser, "run-now")
    wait_for(lambda: Job.objects.get(pk=deferred).run_at <= timezone.now(), message="due now")
    assert Job.objects.get(pk=deferred).status == records.READY

    open_page(browser, live_server, page.format(deferred))
    assert count(browser, 'button[data-action="run-now"]') == 0
    click_action(browser, "cancel")
    wait_for(lambda: Job.objects.get(pk=deferred).status == records.CANCELLED, message="cancel")


def test_refusals_the_dashboard_without_permission_and_each_post_to_a_viewer(
    site, login, live_server
):
    Job.objects.create(func="tests.testapp.jobs.secret_report", status=records.FAILED)
    browser = login(user_with())
    for path in (WAGTAIL_DASHBOARD, DJANGO_DASHBOARD, WAGTAIL_DASHBOARD + "?fragment=1"):
        page = open_page(browser, live_server, path).page_source
        assert "secret_report" not in page and "pgjobs-queues" not in page, path
        assert "403" in page or "Forbidden" in page or "permission" in page.lower(), path

    viewer, changer = user_with("view_job"), user_with("change_job")
    for page in (WAGTAIL_JOB, DJANGO_JOB):
        refusals(login, viewer, changer, live_server, page)


def refusals(login, viewer, changer, live_server, page):
    failed = failed_job()
    deferred = background.defer(
        jobs.add, when=timezone.now() + datetime.timedelta(days=3), args=[3, 4]
    ).id
    ready = background.enqueue(jobs.add, args=[5, 6]).id
    actions = {"retry": failed, "run-now": deferred, "cancel": ready}
    act = (
        "/admin/pgjobs/jobs/{action}/{id}/"
        if page == WAGTAIL_JOB
        else "/django-admin/pgjobs/job/{id}/act/{action}/"
    )
    before = dict(Job.objects.filter(pk__in=actions.values()).values_list("pk", "status"))

    browser = open_page(login(viewer), live_server, page.format(failed))
    assert "page 7 has no body" in browser.page_source
    assert count(browser, "button.pgjobs-act") == 0
    for action, job_id in actions.items():
        assert js_fetch_status(browser, act.format(action=action, id=job_id)) == 403, action
    assert dict(Job.objects.filter(pk__in=actions.values()).values_list("pk", "status")) == before
    assert Job.objects.get(pk=deferred).run_at > timezone.now()

    # The same POSTs from a user who may change jobs go through: the 403s above were
    # the permission's, not the CSRF check's.
    open_page(login(changer), live_server, page.format(failed))
    for action, job_id in actions.items():
        assert js_fetch_status(browser, act.format(action=action, id=job_id)) == 302, action
    assert Job.objects.get(pk=failed).status == records.READY
    assert Job.objects.get(pk=ready).status == records.CANCELLED


# -- the listings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/pgjobs/jobs/", "/django-admin/pgjobs/job/"])
def test_the_listings_show_status_colours_and_arguments_and_fit(site, login, live_server, path):
    failed_job()
    background.defer(
        jobs.add, when=timezone.now() + datetime.timedelta(days=3, minutes=1), args=[8, 9]
    )
    browser = login(user_with("view_job", superuser=True))
    for width in (1024, 1400):
        open_page(browser, live_server, path, width)
        assert count(browser, ".pgjobs-status--failed") == 1
        assert "in 3" in text(browser, ".pgjobs-status--deferred")
        assert '1, 2, note="publish page 7"' in browser.page_source
        # No cell squeezed letter by letter: no text is on more lines than it has words.
        squeezed = browser.execute_script(
            """const found = [];
               for (const cell of document.querySelectorAll('tbody td, thead th')) {
                   const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
                   for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                       const words = node.textContent.trim().split(/\\s+/).filter(Boolean);
                       if (!words.length) continue;
                       const range = document.createRange();
                       range.selectNodeContents(node);
                       if (range.getClientRects().length > words.length)
                           found.push(node.textContent.trim());
                   }
               }
               return found;"""
        )
        assert squeezed == [], (width, squeezed)
    # At 1400 px every column is in view, Created and Finished included.
    overflow = browser.execute_script(
        """return Array.from(document.querySelectorAll('table thead > tr > th'))
              .filter(th => th.getBoundingClientRect().right > window.innerWidth + 1)
              .map(th => th.innerText.trim());"""
    )
    assert overflow == [], overflow
    if SHOTS:
        name = "wagtail-jobs.png" if path.startswith("/admin/") else "django-admin-jobs.png"
        browser.save_screenshot(os.path.join(SHOTS, name))
