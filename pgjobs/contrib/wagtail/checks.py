"""System checks of ``pgjobs.contrib.wagtail``'s settings.

- ``pgjobs.E022``: a ``WAGTAIL_*`` key of ``PGJOBS`` has a bad value (also used by
  ``pgjobs.contrib.mail`` for its settings).
- ``pgjobs.W006``: scheduled publishing is on, but the backend cannot defer jobs
  for workers, so scheduled pages still need Wagtail's ``publish_scheduled`` in cron.
"""

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from ...conf import setting_name
from . import conf


@checks.register("pgjobs")
def check_wagtail_settings(app_configs=None, **kwargs):
    messages = []
    for read in (conf.scheduled_publishing_setting, conf.rendition_specs, conf.bulk_threshold):
        try:
            read()
        except ImproperlyConfigured as exc:
            messages.append(checks.Error(str(exc), id="pgjobs.E022"))
    if messages:
        return messages
    try:
        defers = conf.workers_can_defer()
    except Exception:  # noqa: BLE001
        return []  # the core checks report the backend
    if conf.scheduled_publishing_setting() and not defers:
        messages.append(
            checks.Warning(
                "Scheduled publishing needs a backend that defers jobs for workers: pages "
                "and snippets scheduled in Wagtail go live only when Wagtail's "
                "publish_scheduled command runs.",
                hint=f"Use DatabaseBackend or RedisBackend, or set "
                f"{setting_name()}['WAGTAIL_SCHEDULED_PUBLISHING'] = False and keep "
                "publish_scheduled in cron.",
                id="pgjobs.W006",
            )
        )
    return messages
