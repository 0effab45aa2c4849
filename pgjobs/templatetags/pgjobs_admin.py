"""Template filters for the jobs dashboard and job pages."""

from django import template
from django.utils import timezone

from .. import admin_ui, times
from ..dashboard import charts

register = template.Library()


@register.filter
def seconds(value):
    """12.3 → "12.3 s", 4000 → "67 min"; None → "–"."""
    return charts.format_seconds(value)


@register.filter
def clock(value):
    """A time as the local "HH:MM:SS" (with the date when not today)."""
    if value is None:
        return "–"
    local = times.local(value)  # naive under USE_TZ = False
    if local.date() == times.local(timezone.now()).date():
        return f"{local:%H:%M:%S}"
    return f"{local:%Y-%m-%d %H:%M}"


@register.filter
def status_tag(job):
    return admin_ui.job_status_tag(job)
