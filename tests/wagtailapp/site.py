"""The least a Wagtail site needs, for the integration tests' ``home`` fixtures (the
tables are made without Wagtail's data migrations)."""

from wagtail.models import Collection, Locale, Page, Site

from pgjobs.models import Job


def make_home():
    """The root page, the root collection and a home page served by the default site;
    the jobs their saves enqueued are deleted."""
    Locale.objects.get_or_create(language_code="en")
    Collection.add_root(name="Root")
    root = Page.add_root(instance=Page(title="Root"))
    home = root.add_child(instance=Page(title="Home", slug="home"))
    Site.objects.create(hostname="testserver", root_page=home, is_default_site=True)
    clear_jobs()  # the saves above enqueued Wagtail's tasks
    return home


def clear_jobs():
    """Delete every job, wherever the test run keeps them (the job table or Redis)."""
    from tests.conftest import JOBS_IN_REDIS

    if JOBS_IN_REDIS:
        from tests.redis_settings import flush_jobs

        flush_jobs()
    else:
        Job.objects.all().delete()
