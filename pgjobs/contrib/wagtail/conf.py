"""The ``PGJOBS`` keys of ``pgjobs.contrib.wagtail``, read and validated in one place.

- ``WAGTAIL_SCHEDULED_PUBLISHING`` (default ``True``): workers publish and
  unpublish scheduled pages and snippets at their time (``scheduling.py``).
- ``WAGTAIL_RENDITIONS`` (default ``[]``): rendition specs workers generate after an
  image is uploaded or its file replaced (``renditions.py``).
- ``WAGTAIL_BULK_ACTIONS`` (default ``10``): page bulk actions over more than this
  many pages run as a batch in workers; ``None`` (or ``False``) keeps them all in
  the request (``bulk.py``).

Each reader raises ``ImproperlyConfigured`` naming the key for a bad value;
``checks.py`` reports the same problems as ``pgjobs.E022``.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ...conf import setting_name
from ...handler import get_backend

DEFAULT_BULK_THRESHOLD = 10


def _raw(key, default):
    raw = getattr(settings, setting_name(), None)
    return raw.get(key, default) if isinstance(raw, dict) else default


def scheduled_publishing_setting():
    value = _raw("WAGTAIL_SCHEDULED_PUBLISHING", True)
    if not isinstance(value, bool):
        raise ImproperlyConfigured(
            f"{setting_name()}['WAGTAIL_SCHEDULED_PUBLISHING'] must be True or False, not {value!r}"
        )
    return value


def workers_can_defer():
    """Whether the configured backend stores jobs for workers and can defer them."""
    backend = get_backend()
    return backend.stores_jobs and backend.supports("defer")


def scheduled_publishing():
    """Whether workers publish scheduled pages: the setting on, and a backend that
    defers jobs for workers (otherwise Wagtail's ``publish_scheduled`` is needed)."""
    return scheduled_publishing_setting() and workers_can_defer()


def rendition_specs():
    """The specs of ``WAGTAIL_RENDITIONS``, validated with Wagtail's own ``Filter``."""
    value = _raw("WAGTAIL_RENDITIONS", [])
    where = f"{setting_name()}['WAGTAIL_RENDITIONS']"
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ImproperlyConfigured(
            f"{where} must be a list of rendition specs like ['fill-800x600', "
            f"'width-400|format-webp'], not {value!r}"
        )
    from wagtail.images.exceptions import InvalidFilterSpecError
    from wagtail.images.models import Filter

    for spec in value:
        if not isinstance(spec, str) or not spec:
            raise ImproperlyConfigured(f"{where} holds {spec!r}, which is not a spec string")
        try:
            Filter(spec=spec).operations  # noqa: B018  (parses the spec)
        except InvalidFilterSpecError as exc:
            raise ImproperlyConfigured(
                f"{where} holds {spec!r}, which Wagtail refuses: {exc}"
            ) from None
    return list(dict.fromkeys(value))


def bulk_threshold():
    """Selections larger than this run as a batch; None: every bulk action in the request."""
    value = _raw("WAGTAIL_BULK_ACTIONS", DEFAULT_BULK_THRESHOLD)
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImproperlyConfigured(
            f"{setting_name()}['WAGTAIL_BULK_ACTIONS'] must be a whole number of pages "
            f"(0 or more) or None, not {value!r}"
        )
    return value
