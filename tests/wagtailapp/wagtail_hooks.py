"""A background hook, registered as a site would: Wagtail imports this module itself."""

from pgjobs.contrib.wagtail import hooks
from tests.testapp.models import Event


@hooks.register("after_publish_page", background=True, queue="other")
def remember_publish(request, page):
    """Runs in a worker: ``request`` is a RequestSnapshot, ``page`` is read afresh."""
    Event.objects.create(
        name=f"published {page.title} by {request.user.get_username()} "
        f"{request.method} site={request.site_id} {request.path}",
        value=page.pk,
    )
