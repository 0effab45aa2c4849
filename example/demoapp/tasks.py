"""A task of Django's tasks framework, run by pgjobs workers like any job."""

from django_tasks import task


@task(priority=10)
def count_words(page_id):
    from wagtail.models import Page

    page = Page.objects.get(pk=page_id).specific
    return len(str(getattr(page, "body", "")).split())
