"""Prometheus metrics (``pgjobs[prometheus]``): a collector that reads the store's
figures at scrape time (``collector.py``), a view a site mounts (``views.py``)
and ``manage.py pgjobs_metrics --port N``, which serves the same on its own."""

from django.core.exceptions import ImproperlyConfigured

try:
    import prometheus_client  # noqa: F401
except ImportError:
    raise ImproperlyConfigured(
        "pgjobs.metrics needs prometheus_client: pip install 'pgjobs[prometheus]'"
    ) from None
