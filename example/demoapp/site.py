"""What the demo commands set up: the admin login and the pages of the example site."""

from django.contrib.auth import get_user_model
from wagtail.models import Page, Site

from .models import ArticlePage

#: The login the README documents for the example site's admin.
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"

ARTICLES = [
    ("Background jobs", "Jobs live in the site's own database."),
    ("Workers", "pgjobs_worker claims jobs with SKIP LOCKED and runs them."),
    ("Wagtail's tasks", "Publishing a page updates the reference index in a worker."),
]


def ensure_admin():
    """The superuser ``admin`` / ``admin``, created once."""
    users = get_user_model()._default_manager
    user = users.filter(username=ADMIN_USERNAME).first()
    if user is None:
        user = users.create_superuser(ADMIN_USERNAME, "admin@example.com", ADMIN_PASSWORD)
    return user


def home_page():
    """The page the default site serves (Wagtail's migrations make one)."""
    site = Site.objects.filter(is_default_site=True).select_related("root_page").first()
    if site is not None:
        return site.root_page
    root = Page.get_first_root_node()
    home = root.get_children().first() or root.add_child(instance=Page(title="Home"))
    Site.objects.create(hostname="localhost", root_page=home, is_default_site=True)
    return home


def reset_articles(home):
    """Remove the articles of an earlier run, so each run starts the same."""
    for page in ArticlePage.objects.child_of(home):
        page.delete()
