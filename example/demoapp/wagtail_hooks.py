"""A background hook: when an editor publishes a page, subscribers are told by a
pgjobs worker, not by the request."""

import time

from pgjobs.contrib.wagtail import hooks


@hooks.register("after_publish_page", background=True, queue="hooks")
def notify_subscribers(request, page):
    """``request`` is a RequestSnapshot; ``page`` is read from the database afresh."""
    time.sleep(0.1)  # pretend to send mail
    return f"told subscribers about {page.title!r} (published by {request.user.get_username()})"
