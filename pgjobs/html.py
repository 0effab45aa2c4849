"""HTML both admins (Django's, ``admin.py``, and Wagtail's, ``contrib/wagtail``)
show for a batch: its progress bar, and how many of its jobs a page lists."""

from django.utils.html import format_html

#: Jobs listed on a batch's page; the Django admin links to the rest (the jobs'
#: list, filtered by batch).
BATCH_PAGE_JOBS = 100


def progress_bar(done, total):
    """``done``/``total`` as a ``<progress>`` bar with the numbers beside it."""
    return format_html(
        '<progress value="{}" max="{}"></progress> {}/{}', done, max(total, 1), done, total
    )
