"""The admin pages of a bulk action run in the background: its progress bar, which
polls ``bulk_progress_json`` until every page is done, then the summary."""

from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from .bulk import cancel_run, progress
from .models import BulkActionItem, BulkActionRun

#: Pages the summary lists by name, per outcome.
SUMMARY_LIMIT = 200


def _may_see_jobs(user):
    from .wagtail_hooks import job_permission_policy

    return job_permission_policy.user_has_permission(user, "view")


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
    if run.batch_id and _may_see_jobs(request.user):
        context["batch_url"] = reverse("pgjobs_batches:inspect", args=[run.batch_id])
    if state["complete"]:
        items = run.items.order_by("pk")
        for status in (
            BulkActionItem.DONE,
            BulkActionItem.REFUSED,
            BulkActionItem.FAILED,
            BulkActionItem.CANCELLED,
        ):
            context[f"{status}_items"] = items.filter(status=status)[:SUMMARY_LIMIT]
        context["children"] = sum(items.values_list("children", flat=True))
    return TemplateResponse(request, "pgjobs_wagtail/bulk_progress.html", context)


@require_POST
def bulk_cancel(request, run_id):
    """Cancel the pages not acted on yet; back to the progress page."""
    run = _run_for(request, run_id)
    if run is None:
        return TemplateResponse(request, "pgjobs_wagtail/403.html", status=403)
    cancel_run(run, request.user)
    return redirect("pgjobs_bulk_progress", run.pk)


def bulk_progress_json(request, run_id):
    run = _run_for(request, run_id)
    if run is None:
        return JsonResponse({"error": "forbidden"}, status=403)
    state = progress(run)
    return JsonResponse({**state, "percent": _percent(state)})


def _percent(state):
    return 100 if not state["total"] else int(100 * state["finished"] / state["total"])
