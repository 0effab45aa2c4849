"""What both admins (Django's and Wagtail's) show of a job beyond its columns: the
status as a coloured tag, a short summary of its arguments, its attempts (each
failed one with its error and traceback), and the job page's Retry, Cancel and
Run-now buttons (``JOB_ACTIONS``), which act through the store as
the listings' bulk actions do and need ``pgjobs.change_job``."""

import dataclasses
import json

from django.contrib.auth import get_permission_codename
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import format_html

from . import records, times
from .handler import store_for_jobs
from .models import Job

#: Status → (background, text) colours: failed red, succeeded green, running blue,
#: ready grey; a ready job not yet due reads "deferred" with its time.
STATUS_COLOURS = {
    records.FAILED: ("#fde2e1", "#9b1c1c"),
    records.SUCCEEDED: ("#dcf5e3", "#166534"),
    records.RUNNING: ("#dbeafe", "#1e40af"),
    records.READY: ("#e5e7eb", "#374151"),
    records.CANCELLED: ("#fef3c7", "#92400e"),
    records.RETRIED: ("#fee2e2", "#b45309"),
    "deferred": ("#f3f4f6", "#4b5563"),
}
SUMMARY_LENGTH = 48


def status_label(status, run_at, now=None):
    """``(key, words)``: "deferred · in 3 days" for a ready job not yet due, else the
    status itself."""
    now = now or timezone.now()
    if status == records.READY and run_at is not None and run_at > now:
        return "deferred", f"deferred · {times.relative(run_at, now)}"
    return status, status


def status_tag(status, run_at=None, now=None):
    key, words = status_label(status, run_at, now)
    background, colour = STATUS_COLOURS.get(key, STATUS_COLOURS[records.READY])
    return format_html(
        '<span class="pgjobs-status pgjobs-status--{}" style="background:{};color:{};'
        "border-radius:3px;padding:1px 6px;white-space:nowrap;font-weight:600;"
        'font-size:0.85em">{}</span>',
        key,
        background,
        colour,
        words,
    )


def job_status_tag(job, now=None):
    return status_tag(job.status, times.shown_time(job, "run_at"), now)


def job_attempts(job):
    """The job's attempts, oldest first (``Store.job_attempts``)."""
    return store_for_jobs(job._state.db).job_attempts(job.pk)


def attempts_table(job):
    """The job's attempts as an HTML table: start, end, time taken, worker, outcome,
    and the error and traceback of each that did not succeed."""
    rows = [
        {
            "attempt": a,
            "tag": status_tag(a.outcome),
            "took": (a.finished_at - a.started_at).total_seconds()
            if a.started_at and a.finished_at
            else None,
        }
        for a in job_attempts(job)
    ]
    return render_to_string("pgjobs/admin/attempts.html", {"rows": rows})


def _value(value):
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def summarize_arguments(args, kwargs, length=SUMMARY_LENGTH):
    """``42, "csv", fmt: "pdf"`` cut to ``length`` characters with an ellipsis."""
    parts = [_value(a) for a in (args or [])]
    parts += [f"{k}={_value(v)}" for k, v in (kwargs or {}).items()]
    text = ", ".join(parts)
    return text if len(text) <= length else text[: length - 1] + "…"


def short_function(func):
    """The last two parts of a dotted path (``jobs.send_report``), for narrow columns."""
    return ".".join(func.rsplit(".", 2)[-2:])


def function_html(func):
    """The function's short name kept on one line, its whole path on hover."""
    return format_html(
        '<span title="{}" style="white-space:nowrap">{}</span>', func, short_function(func)
    )


def arguments_html(args, kwargs):
    return format_html("<code>{}</code>", summarize_arguments(args, kwargs))


def json_html(value):
    """A JSON value (arguments, result) indented, as a ``<pre>`` block."""
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


def error_html(error):
    """A job's last error: its type, message and traceback ("-" when none)."""
    if not error:
        return "-"
    return format_html(
        "<strong>{}</strong>: {}<pre>{}</pre>",
        error.get("type", ""),
        error.get("message", ""),
        error.get("traceback", ""),
    )


def recent_functions(jobs, recent=1000):
    """``(path, short name)`` of the functions of the latest ``recent`` jobs (a
    bounded read by primary key), not ``SELECT DISTINCT`` over every job ever run."""
    return {
        name: short_function(name)
        for name in jobs.order_by("-id").values_list("func", flat=True)[:recent]
    }


def can_change_jobs(user):
    """Retry, cancel and run now, as the listings' actions: ``pgjobs.change_job``."""
    return user.has_perm(f"pgjobs.{get_permission_codename('change', Job._meta)}")


@dataclasses.dataclass(frozen=True)
class JobAction:
    name: str  # in URLs
    label: str
    serious: bool = False

    @property
    def url_name(self):
        return self.name.replace("-", "_")

    def applies(self, job, now):
        status, run_at = job.status, times.shown_time(job, "run_at")
        if self.name == "retry":
            return status in (records.FAILED, records.CANCELLED)
        if self.name == "cancel":
            return status == records.READY or (
                status == records.RUNNING and not job.cancel_requested
            )
        return status == records.READY and run_at is not None and run_at > now

    def perform(self, job_id, using):
        """Act on job ``job_id``; returns the message to show."""
        store = store_for_jobs(using)
        if self.name == "retry":
            done = store.requeue([job_id])
            return "Job queued again." if done else "Only a failed or cancelled job is retried."
        if self.name == "cancel":
            cancelled, asked = store.cancel_many([job_id])
            if cancelled:
                return "Job cancelled."
            return "Job asked to stop." if asked else "Only a ready or running job is cancelled."
        done = store.run_now([job_id])
        return "Job due now." if done else "Only a ready job not yet due is run now."


JOB_ACTIONS = {
    action.name: action
    for action in (
        JobAction("retry", "Retry"),
        JobAction("run-now", "Run now"),
        JobAction("cancel", "Cancel", serious=True),
    )
}


def actions_for(job, now=None):
    now = now or timezone.now()
    return [action for action in JOB_ACTIONS.values() if action.applies(job, now)]
