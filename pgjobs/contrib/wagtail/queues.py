"""The "Queues" page of the Wagtail admin: each queue's controls in force
(``pgjobs/queue_control.py``), with pause and resume buttons.

Seeing it needs ``pgjobs.view_queuecontrol`` (or ``change_queuecontrol``);
pausing and resuming need ``pgjobs.change_queuecontrol``. It works through the
configured backend, so it steers Redis workers as it does database ones. Limits
are set with ``pgjobs_queue limit`` or the Django admin.
"""

from django.contrib import messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from ... import queue_control
from ...handler import get_backend
from ...records import QueueControl

VIEW = "pgjobs.view_queuecontrol"
CHANGE = "pgjobs.change_queuecontrol"


def may_view(user):
    return user.has_perm(VIEW) or user.has_perm(CHANGE)


def _rows(backend):
    controls = backend.queue_controls()
    counts = {row["queue"]: row["counts"] for row in backend.get_store().status()["queues"]}
    configured = list(backend.queues) if backend.queues else []
    names = sorted({*controls, *counts, *configured})
    rows = []
    for name in names:
        control = controls.get(name) or QueueControl(name)
        count = counts.get(name, {})
        rows.append(
            {
                "queue": name,
                "paused": control.paused,
                "concurrency": control.concurrency,
                "rate": queue_control.format_rate(control),
                "ready": count.get("ready", 0),
                "running": count.get("running", 0),
            }
        )
    return rows


@require_http_methods(["GET", "POST"])
def queues_view(request):
    """The listing (GET); a pause or resume (POST ``queue`` and ``action``)."""
    if not may_view(request.user):
        return TemplateResponse(request, "pgjobs_wagtail/403.html", status=403)
    backend = get_backend()
    if not backend.stores_jobs:
        rows, steerable = [], False
    else:
        steerable = True
    if request.method == "POST":
        if not request.user.has_perm(CHANGE) or not steerable:
            return TemplateResponse(request, "pgjobs_wagtail/403.html", status=403)
        action, name = request.POST.get("action"), request.POST.get("queue", "")
        try:
            if action == "pause":
                backend.pause_queue(name)
            elif action == "resume":
                backend.resume_queue(name)
            else:
                raise ValueError(f"action must be pause or resume, not {action!r}")
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            verb = "paused" if action == "pause" else "resumed"
            messages.success(request, f"Queue {name!r} {verb}; workers obey within about a second.")
        return redirect(reverse("pgjobs_queues"))
    if steerable:
        rows = _rows(backend)
    return TemplateResponse(
        request,
        "pgjobs_wagtail/queues.html",
        {"rows": rows, "steerable": steerable, "may_change": request.user.has_perm(CHANGE)},
    )
