"""The admin pages of a bulk action run in the background: its progress bar, which
polls ``bulk_progress_json`` until every page is done, then the summary."""

from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from .bulk import progress
from .models import BulkActionItem, BulkActionRun

#: Pages the summary lists by name, per outcome.
SUMMARY_LIMIT = 200


def _run_for(request, run_id):
    """The run, if ``request.user`` asked for it (or is a superuser); else None."""
    run = get_object_or_404(BulkActionRun.objects.select_related("user"), pk=run_id)
    if run.user_id == request.user.pk or request.user.is_superuser:
        return run
    return None


def bulk_progress(request, run_id):
    run = _run_for(request, run_id)
    if run is None:
        return TemplateResponse(request, "pgjobs_wagtail/403.html", status=403)
    state = progress(run)
    context = {"run": run, "progress": state, "percent": _percent(state)}
    if state["complete"]:
        items = run.items.order_by("pk")
        for status in (BulkActionItem.DONE, BulkActionItem.REFUSED, BulkActionItem.FAILED):
            context[f"{status}_items"] = items.filter(status=status)[:SUMMARY_LIMIT]
        context["children"] = sum(items.values_list("children", flat=True))
    return TemplateResponse(request, "pgjobs_wagtail/bulk_progress.html", context)


def bulk_progress_json(request, run_id):
    run = _run_for(request, run_id)
    if run is None:
        return JsonResponse({"error": "forbidden"}, status=403)
    state = progress(run)
    return JsonResponse({**state, "percent": _percent(state)})


def _percent(state):
    return 100 if not state["total"] else int(100 * state["finished"] / state["total"])
