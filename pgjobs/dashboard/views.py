"""The dashboard's context and responses, shared by the Wagtail admin's view
(``contrib/wagtail``) and the Django admin's (``JobAdmin.dashboard_view``); each
admin checks permissions and supplies its page template.

``?window=hour|day`` picks the charts' span; ``?fragment=1`` answers with the panels
only, which the page's script fetches every ``REFRESH_SECONDS`` and swaps in.
"""

from django.template.response import TemplateResponse
from django.utils import timezone

from ..handler import get_backend
from . import charts, figures, series

REFRESH_SECONDS = 5
FRAGMENT_TEMPLATE = "pgjobs/dashboard/panels.html"
OUTCOME_LABELS = {
    "succeeded": "succeeded",
    "retried": "failed, retried",
    "failed": "failed for good",
    "cancelled": "cancelled",
}


def dashboard_context(request):
    now = timezone.now()
    backend = get_backend()
    window = series.WINDOWS.get(request.GET.get("window"), series.WINDOWS["hour"])
    data = series.series(window, now, backend)
    per = "minute" if window.step == series.MINUTE else f"{window.step.seconds // 60} minutes"
    queues = figures.queues(backend)
    return {
        "now": now,
        "stores_jobs": backend.stores_jobs,
        "window": window,
        "windows": series.WINDOWS.values(),
        "queues": queues,
        "can_pause": any(q.paused is not None for q in queues),
        "workers": figures.workers(now, backend),
        "schedules": figures.schedules(now, backend),
        "series": data,
        "refresh_seconds": REFRESH_SECONDS,
        "charts": [
            charts.stacked_bars(
                data.starts,
                window.step,
                {outcome: data.finished[outcome] for outcome in OUTCOME_LABELS},
                f"Attempts ended per {per}",
                OUTCOME_LABELS,
            ),
            charts.lines(
                data.starts,
                window.step,
                {"depth": data.depth},
                "Queue depth (due, not started; from the jobs kept)",
                labels={"depth": "jobs waiting"},
            ),
            charts.lines(
                data.starts,
                window.step,
                {"p50": data.wait["p50"], "p95": data.wait["p95"]},
                "Wait, due → start",
                unit="s",
            ),
            charts.lines(
                data.starts,
                window.step,
                {"p50": data.run["p50"], "p95": data.run["p95"]},
                "Run time",
                unit="s",
            ),
        ],
    }


def render_dashboard(request, page_template, extra=None):
    """The page, or only its panels when the refresh script asks (``?fragment=1``)."""
    context = {**(extra or {}), **dashboard_context(request)}
    template = FRAGMENT_TEMPLATE if request.GET.get("fragment") else page_template
    response = TemplateResponse(request, template, context)
    response["Cache-Control"] = "no-store"
    return response
