"""The ``Job`` rows in the Django admin: read-only, with retry and cancel actions, the
job page's Retry, Cancel and Run-now buttons, and the jobs dashboard (``dashboard/``);
the ``Batch`` rows, each with its progress and its jobs; and the queue controls
(``QueueControl``): pause, resume and limits.

A job's times are read clamped (``pgjobs.times``), so a ``run_at`` of ``'infinity'``
written by hand shows as "never" instead of failing the page."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import router
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from . import admin_ui, queue_control, records, times
from .dashboard.views import render_dashboard
from .handler import queue_names, store_for_jobs
from .html import BATCH_PAGE_JOBS, progress_bar
from .models import Batch, Job, QueueControl, WorkerProcess


class QueueFilter(admin.SimpleListFilter):
    """Queues from the settings, not ``SELECT DISTINCT`` over every job ever run."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [(name, name) for name in queue_names()]

    def queryset(self, request, queryset):
        return queryset.filter(queue=self.value()) if self.value() else queryset


class FunctionFilter(admin.SimpleListFilter):
    """Functions of the latest jobs (a bounded read by primary key), not ``SELECT
    DISTINCT`` over every job ever run."""

    title = "function"
    parameter_name = "func"
    recent = 1000

    def lookups(self, request, model_admin):
        names = admin_ui.recent_functions(model_admin.model.objects, self.recent)
        if self.value():
            names.setdefault(self.value(), admin_ui.short_function(self.value()))
        return sorted(names.items())

    def queryset(self, request, queryset):
        return queryset.filter(func=self.value()) if self.value() else queryset


class BatchFilter(admin.SimpleListFilter):
    """The jobs of one batch (``?batch=<id>``, the link on a batch's page); shown
    only while it is applied."""

    title = "batch"
    parameter_name = "batch"

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, f"batch {value}")] if value and value.isdigit() else []

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(batch_id=int(value)) if value and value.isdigit() else queryset


def _admin_link(model, pk, text=None):
    """A link to the admin page of ``model`` row ``pk``."""
    if pk is None:
        return "-"
    url = reverse(f"admin:pgjobs_{model._meta.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text or f"{model._meta.verbose_name} {pk}")


def _time_display(field, description):
    """A detail field for the job's time ``field``, read clamped."""

    @admin.display(description=description, ordering=field)
    def display(self, job):
        return times.describe(times.shown_time(job, field))

    display.__name__ = f"{field}_display"
    return display


def _time_column(field, description):
    """A listing column for the job's time ``field``: "3 min ago", "in 3 days", with the
    exact time on hover; short, so every column fits a 1400 px window."""

    @admin.display(description=description, ordering=field)
    def display(self, job):
        value = times.shown_time(job, field)
        if value is None:
            return "-"
        words = times.relative(value) or _("%(time)s ago") % {"time": timesince(value, depth=1)}
        return format_html(
            '<span title="{}" style="white-space:nowrap">{}</span>', times.describe(value), words
        )

    display.__name__ = f"{field}_column"
    return display


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "func_display",
        "status_display",
        "queue",
        "arguments_display",
        "priority",
        "run_at_column",
        "attempts_display",
        "created_at_column",
        "finished_at_column",
    )
    list_display_links = ("id", "func_display")
    list_filter = (
        "status",
        QueueFilter,
        FunctionFilter,
        BatchFilter,
        ("created_at", admin.DateFieldListFilter),
        ("finished_at", admin.DateFieldListFilter),
    )
    # The arguments' JSON as text: a scan, but of the page's worth of newest rows when
    # matches are common (the listing reads 100 rows by id, newest first).
    search_fields = ("func", "args", "kwargs")
    change_form_template = "pgjobs/admin/job_change_form.html"
    change_list_template = "pgjobs/admin/job_change_list.html"
    ordering = ("-id",)
    # No COUNT(*) over the whole table on every page: it grows with history.
    show_full_result_count = False
    list_per_page = 100
    actions = ("retry_jobs", "cancel_jobs")
    fields = (
        "id",
        "func",
        "status_display",
        "error_display",
        "attempts_history",
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
        "atomic",
        "batch_link",
        "after_link",
        "args_display",
        "kwargs_display",
        "result_display",
    )
    readonly_fields = fields

    run_at_column = _time_column("run_at", "run at")
    created_at_column = _time_column("created_at", "created")
    finished_at_column = _time_column("finished_at", "finished")
    run_at_display = _time_display("run_at", "run at")
    created_at_display = _time_display("created_at", "created at")
    started_at_display = _time_display("started_at", "started at")
    finished_at_display = _time_display("finished_at", "finished at")
    lease_expires_at_display = _time_display("lease_expires_at", "lease expires at")

    def get_queryset(self, request):
        return times.with_shown_times(super().get_queryset(request))

    @admin.display(description="function", ordering="func")
    def func_display(self, job):
        return admin_ui.function_html(job.func)

    @admin.display(description="status", ordering="status")
    def status_display(self, job):
        return admin_ui.job_status_tag(job)

    @admin.display(description="arguments")
    def arguments_display(self, job):
        return admin_ui.arguments_html(job.args, job.kwargs)

    @admin.display(description="batch")
    def batch_link(self, job):
        return _admin_link(Batch, job.batch_id)

    @admin.display(description="runs after")
    def after_link(self, job):
        return _admin_link(Job, job.after_id, f"job {job.after_id}")

    @admin.display(description="attempts")
    def attempts_display(self, job):
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="args")
    def args_display(self, job):
        return admin_ui.json_html(job.args)

    @admin.display(description="kwargs")
    def kwargs_display(self, job):
        return admin_ui.json_html(job.kwargs)

    @admin.display(description="result")
    def result_display(self, job):
        return admin_ui.json_html(job.result) if job.status == records.SUCCEEDED else "-"

    @admin.display(description="attempts")
    def attempts_history(self, job):
        return admin_ui.attempts_table(job)

    @admin.display(description="error")
    def error_display(self, job):
        return admin_ui.error_html(job.error)

    def has_add_permission(self, request):
        return False  # jobs are enqueued by code, signed with SECRET_KEY

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # And seeing jobs, as in the Wagtail admin: the delete page names the job.
        return request.user.has_perm("pgjobs.delete_job") and self.has_view_permission(request, obj)

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
        return admin_ui.can_change_jobs(request.user)

    # -- the job page's buttons and the dashboard --------------------------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="{}_{}_dashboard".format(*info),
            ),
            path(
                "<path:object_id>/act/<str:action>/",
                self.admin_site.admin_view(self.act_view),
                name="{}_{}_act".format(*info),
            ),
            *super().get_urls(),
        ]

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "opts": self.opts}
        return render_dashboard(request, "pgjobs/dashboard/django_admin.html", context)

    def act_view(self, request, object_id, action):
        return _act(self, request, object_id, action)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        if job is not None and self.has_change_status_permission(request):
            extra_context = {
                **(extra_context or {}),
                "job_actions": [
                    (a, reverse("admin:pgjobs_job_act", args=[job.pk, a.name]))
                    for a in admin_ui.actions_for(job)
                ],
            }
        return super().change_view(request, object_id, form_url, extra_context)


def _act(model_admin, request, object_id, action):
    """Retry, cancel or run now one job (POST, ``change_job``), back to its page."""
    if not model_admin.has_change_status_permission(request):
        raise PermissionDenied
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    job_action = admin_ui.JOB_ACTIONS.get(action)
    job = model_admin.get_object(request, object_id)
    if job_action is None or job is None:
        raise Http404("No such job or action.")
    model_admin.message_user(request, job_action.perform(job.pk, job._state.db), messages.INFO)
    return HttpResponseRedirect(reverse("admin:pgjobs_job_change", args=[job.pk]))


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


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """Batches, read-only: progress, counts, callbacks and jobs; cancel as an action
    (with ``pgjobs.change_job``, as cancelling jobs)."""

    list_display = (
        "id",
        "description",
        "progress_display",
        "succeeded",
        "failed",
        "cancelled",
        "created_at",
        "finished_at",
    )
    search_fields = ("description",)
    ordering = ("-id",)
    show_full_result_count = False
    list_per_page = 100
    actions = ("cancel_batches",)
    fields = (
        "id",
        "description",
        "progress_display",
        "total",
        "pending",
        "succeeded",
        "failed",
        "cancelled",
        "created_at",
        "finished_at",
        "on_finish_link",
        "on_success_link",
        "jobs_display",
    )
    readonly_fields = fields

    @admin.display(description="progress")
    def progress_display(self, batch):
        return progress_bar(batch.done, batch.total)

    @admin.display(description="on finish")
    def on_finish_link(self, batch):
        return _job_with_status(batch.on_finish_id)

    @admin.display(description="on success")
    def on_success_link(self, batch):
        return _job_with_status(batch.on_success_id)

    @admin.display(description="jobs")
    def jobs_display(self, batch):
        jobs = list(
            Job.objects.using(batch._state.db)
            .filter(batch_id=batch.pk)
            .order_by("id")
            .values_list("id", "func", "status", "attempts", "max_attempts")[:BATCH_PAGE_JOBS]
        )
        url = reverse("admin:pgjobs_job_changelist") + f"?batch={batch.pk}"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}/{}</td></tr>',
            (
                (reverse("admin:pgjobs_job_change", args=[pk]), pk, func, status, n, most)
                for pk, func, status, n, most in jobs
            ),
        )
        return format_html(
            "<table><thead><tr><th>job</th><th>function</th><th>status</th><th>attempts</th>"
            '</tr></thead><tbody>{}</tbody></table><p><a href="{}">All of its jobs still stored'
            "</a> (finished jobs are pruned after KEEP_SUCCEEDED and KEEP_FAILED; the counts "
            "above keep them).</p>",
            rows,
            url,
        )

    def has_add_permission(self, request):
        return False  # batches are enqueued by code

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("pgjobs.delete_batch")

    @admin.action(description="Cancel the ready jobs of selected batches", permissions=["cancel"])
    def cancel_batches(self, request, queryset):
        store = store_for_jobs(queryset.db)
        cancelled = asked = 0
        for batch_id in queryset.values_list("id", flat=True):
            n, m = store.cancel_batch(batch_id)
            cancelled, asked = cancelled + n, asked + m
        text = f"{cancelled} ready job(s) cancelled"
        if asked:
            text += f"; {asked} running job(s) asked to stop"
        self.message_user(request, text + ".", messages.SUCCESS)

    def has_cancel_permission(self, request):
        """Cancelling a batch's jobs needs ``pgjobs.change_job``, as cancelling jobs."""
        return request.user.has_perm("pgjobs.change_job")


def _job_with_status(job_id):
    if job_id is None:
        return "-"
    status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
    return format_html("{} ({})", _admin_link(Job, job_id, f"job {job_id}"), status or "pruned")


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
