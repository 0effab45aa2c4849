"""App config of ``pgjobs.contrib.wagtail``: the Wagtail admin views of the job rows
live in its ``wagtail_hooks`` module, which Wagtail finds by itself."""

from django.apps import AppConfig


class PgJobsWagtailConfig(AppConfig):
    name = "pgjobs.contrib.wagtail"
    label = "pgjobs_wagtail"
    verbose_name = "Background jobs for Wagtail"
