"""The ``Job`` rows in the Django admin: read-only, with retry and cancel actions;
and the queue controls (``QueueControl``): pause, resume and limits.

A job's times are read clamped (``pgjobs.times``), so a ``run_at`` of ``'infinity'``
written by hand shows as "never" instead of failing the page."""

import json

from django.contrib import admin, messages
from django.db import router
from django.utils.html import format_html

from . import queue_control, records, times
from .handler import queue_names, store_for_jobs
from .models import Job, QueueControl, WorkerProcess


class QueueFilter(admin.SimpleListFilter):
    """Queues from the settings, not ``SELECT DISTINCT`` over every job ever run."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [(name, name) for name in queue_names()]

    def queryset(self, request, queryset):
        return queryset.filter(queue=self.value()) if self.value() else queryset


def _time_display(field, description):
    """A column and detail field for the job's time ``field``, read clamped."""

    @admin.display(description=description, ordering=field)
    def display(self, job):
        return times.describe(times.shown_time(job, field))

    display.__name__ = f"{field}_display"
    return display


def _pretty(value):
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "func",
        "status",
        "queue",
        "priority",
        "run_at_display",
        "attempts_display",
        "created_at_display",
        "finished_at_display",
    )
    list_filter = ("status", QueueFilter)
    search_fields = ("func",)
    ordering = ("-id",)
    # No COUNT(*) over the whole table on every page: it grows with history.
    show_full_result_count = False
    list_per_page = 100
    actions = ("retry_jobs", "cancel_jobs")
    fields = (
        "id",
        "func",
        "status",
        "queue",
        "priority",
        "run_at_display",
        "attempts",
        "max_attempts",
        "timeout",
        "created_at_display",
        "started_at_display",
        "finished_at_display",
        "worker_id",
        "lease_expires_at_display",
        "cancel_requested",
        "unique_key",
        "args_display",
        "kwargs_display",
        "result_display",
        "error_display",
    )
    readonly_fields = fields

    run_at_display = _time_display("run_at", "run at")
    created_at_display = _time_display("created_at", "created at")
    started_at_display = _time_display("started_at", "started at")
    finished_at_display = _time_display("finished_at", "finished at")
    lease_expires_at_display = _time_display("lease_expires_at", "lease expires at")

    def get_queryset(self, request):
        return times.with_shown_times(super().get_queryset(request))

    @admin.display(description="attempts")
    def attempts_display(self, job):
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="args")
    def args_display(self, job):
        return _pretty(job.args)

    @admin.display(description="kwargs")
    def kwargs_display(self, job):
        return _pretty(job.kwargs)

    @admin.display(description="result")
    def result_display(self, job):
        return _pretty(job.result) if job.status == records.SUCCEEDED else "-"

    @admin.display(description="error")
    def error_display(self, job):
        if not job.error:
            return "-"
        return format_html(
            "<strong>{}</strong>: {}<pre>{}</pre>",
            job.error.get("type", ""),
            job.error.get("message", ""),
            job.error.get("traceback", ""),
        )

    def has_add_permission(self, request):
        return False  # jobs are enqueued by code, signed with SECRET_KEY

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("pgjobs.delete_job")

    @admin.action(
        description="Retry selected failed or cancelled jobs", permissions=["change_status"]
    )
    def retry_jobs(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True))
        count = store_for_jobs(queryset.db).requeue(ids)
        self.message_user(request, f"{count} job(s) queued again.", messages.SUCCESS)

    @admin.action(description="Cancel selected jobs", permissions=["change_status"])
    def cancel_jobs(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True))
        cancelled, asked = store_for_jobs(queryset.db).cancel_many(ids)
        text = f"{cancelled} ready job(s) cancelled"
        if asked:
            text += f"; {asked} running job(s) asked to stop"
        self.message_user(request, text + ".", messages.SUCCESS)

    def has_change_status_permission(self, request):
        """Retry and cancel need the ``pgjobs.change_job`` permission."""
        return request.user.has_perm("pgjobs.change_job")


@admin.register(WorkerProcess)
class WorkerProcessAdmin(admin.ModelAdmin):
    list_display = ("id", "hostname", "pid", "concurrency", "started_at", "heartbeat_at")
    readonly_fields = (
        "id",
        "hostname",
        "pid",
        "queues",
        "concurrency",
        "started_at",
        "heartbeat_at",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(QueueControl)
class QueueControlAdmin(admin.ModelAdmin):
    """Pause, resume and limit queues on every worker (``pgjobs/queue_control.py``).
    Changes go through the store, as ``pgjobs_queue`` does; workers obey within
    about a second. Limits left empty follow ``PGJOBS["QUEUES"]``."""

    list_display = ("queue", "paused", "concurrency", "rate_display", "updated_at")
    list_filter = ("paused",)
    fields = ("queue", "paused", "concurrency", "rate", "period")
    actions = ["pause_queues", "resume_queues"]

    def get_readonly_fields(self, request, obj=None):
        return ("queue",) if obj is not None else ()

    @admin.display(description="rate")
    def rate_display(self, row):
        return queue_control.format_rate(row)

    def save_model(self, request, obj, form, change):
        # Only the fields an operator sets: the rate window stays the claims'.
        store_for_jobs(obj._state.db or router.db_for_write(QueueControl)).set_queue_control(
            obj.queue,
            paused=obj.paused,
            concurrency=obj.concurrency,
            rate=obj.rate,
            period=obj.period,
        )

    def _steer(self, request, queryset, paused):
        store = store_for_jobs(queryset.db)
        names = list(queryset.values_list("queue", flat=True))
        for name in names:
            store.set_queue_control(name, paused=paused)
        verb = "paused" if paused else "resumed"
        self.message_user(
            request,
            f"{len(names)} queue(s) {verb}; workers obey within about a second.",
            messages.SUCCESS,
        )

    @admin.action(description="Pause selected queues", permissions=["change"])
    def pause_queues(self, request, queryset):
        self._steer(request, queryset, True)

    @admin.action(description="Resume selected queues", permissions=["change"])
    def resume_queues(self, request, queryset):
        self._steer(request, queryset, False)
