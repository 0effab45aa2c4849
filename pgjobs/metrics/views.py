"""The metrics view a site mounts, e.g. ``path("metrics", pgjobs.metrics.views.metrics)``.

It answers anyone who can reach it, as Prometheus endpoints do: mount it on an
internal address, or wrap it (``staff_member_required``, a firewall rule).
"""

from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .registry import registry


def metrics(request):
    """pgjobs' metrics in Prometheus's text format."""
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
