"""The job rows in the Wagtail admin: a "Jobs" menu with the jobs dashboard and a
read-only snippet listing, with the Django admin's filters, search, detail and
actions, and Retry, Cancel and Run-now buttons on a job's page; and the batches
(``background.batch``) under "Job batches", each page with its progress, callbacks
and jobs (a job's page links to its batch).

Permissions are Django's, as in the Django admin: ``pgjobs.view_job`` (or
``change_job``) shows the menu, the dashboard, the listing and the detail; ``change_job``
allows retry, cancel and run now; ``delete_job`` allows deleting. Nobody adds or edits
jobs here: code enqueues them, signed with ``SECRET_KEY``.

Every URL registered here needs ``view_job`` (or ``change_job``) before Wagtail's
own view runs: the viewset's, the snippet chooser's (which Wagtail opens to every
editor), and the bulk actions' (whose confirmation page names the jobs). A user
without it gets a 403 page that names no job.

Every view reads a job's times clamped (``pgjobs.times``): a ``run_at`` of
``'infinity'`` written by hand shows as "never", and a future time as "in 3 days".
"""

import functools

import django_filters
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.csrf import csrf_protect
from wagtail import hooks
from wagtail.admin.filters import DateRangePickerWidget, WagtailFilterSet
from wagtail.admin.menu import Menu, MenuItem, SubmenuMenuItem
from wagtail.admin.ui.tables import Column, DateColumn
from wagtail.permission_policies import ModelPermissionPolicy
from wagtail.permissions import register_permission_policy
from wagtail.snippets.bulk_actions.delete import DeleteBulkAction
from wagtail.snippets.bulk_actions.snippet_bulk_action import SnippetBulkAction
from wagtail.snippets.models import register_snippet
from wagtail.snippets.views.chooser import (
    ChooseResultsView,
    ChooseView,
    SnippetChooserViewSet,
    SnippetChosenView,
)
from wagtail.snippets.views.snippets import IndexView, InspectView, SnippetViewSet

from ... import admin_ui, records, times
from ...dashboard.views import render_dashboard
from ...handler import queue_names, store_for_jobs
from ...html import BATCH_PAGE_JOBS, progress_bar
from ...models import STATUS_CHOICES, Batch, Job
from . import bulk, views


class JobPermissionPolicy(ModelPermissionPolicy):
    """Django's model permissions, except that nobody adds or edits a job, and
    ``change_job`` (retry and cancel) implies viewing, as in the Django admin."""

    READ_ONLY = {"add", "change"}

    def user_has_permission(self, user, action):
        if action in self.READ_ONLY:
            return False
        if action == "view":
            return user.has_perm(self._get_permission_name("view")) or user.has_perm(
                self._get_permission_name("change")
            )
        return super().user_has_permission(user, action)

    def user_has_any_permission(self, user, actions):
        return any(self.user_has_permission(user, action) for action in actions)

    def users_with_any_permission(self, actions):
        actions = set(actions) - self.READ_ONLY
        if "view" in actions:
            actions.add("change")
        if not actions:
            return self.auth_model._default_manager.none()
        return super().users_with_any_permission(sorted(actions))


can_change_jobs = admin_ui.can_change_jobs


def queue_choices():
    return [(name, name) for name in queue_names()]


def function_choices():
    return sorted(admin_ui.recent_functions(Job.objects).items())


class JobFilterSet(WagtailFilterSet):
    status = django_filters.ChoiceFilter(choices=STATUS_CHOICES, label=_("Status"))
    queue = django_filters.ChoiceFilter(choices=queue_choices, label=_("Queue"))
    func = django_filters.ChoiceFilter(choices=function_choices, label=_("Function"))
    created_at = django_filters.DateFromToRangeFilter(
        label=_("Created"), widget=DateRangePickerWidget
    )
    finished_at = django_filters.DateFromToRangeFilter(
        label=_("Finished"), widget=DateRangePickerWidget
    )

    class Meta:
        model = Job
        fields = ["status", "queue", "func", "created_at", "finished_at"]


class JobIndexView(IndexView):
    # No COUNT(*) beyond the paginator's one, no per-row queries: the listing
    # reads only the columns it shows.
    def get_base_queryset(self):
        return times.with_shown_times(
            super()
            .get_base_queryset()
            .only(
                "id",
                "func",
                "status",
                "queue",
                "priority",
                "attempts",
                "max_attempts",
                "args",
                "kwargs",
            ),
            ("run_at", "created_at", "finished_at"),
        )


class JobInspectView(InspectView):
    template_name = "pgjobs_wagtail/inspect.html"

    def get_object(self, queryset=None):
        return get_object_or_404(times.with_shown_times(Job.objects.all()), pk=self.pk)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["attempts_table"] = admin_ui.attempts_table(self.object)
        if can_change_jobs(self.request.user):
            context["job_actions"] = [
                (action, reverse(f"pgjobs_jobs:{action.url_name}", args=[self.object.pk]))
                for action in admin_ui.actions_for(self.object)
            ]
        return context

    def get_status_display_value(self):
        return admin_ui.job_status_tag(self.object)

    def get_time_display_value(self, field):
        return times.describe(times.shown_time(self.object, field))

    def get_run_at_display_value(self):
        return self.get_time_display_value("run_at")

    def get_created_at_display_value(self):
        return self.get_time_display_value("created_at")

    def get_started_at_display_value(self):
        return self.get_time_display_value("started_at")

    def get_finished_at_display_value(self):
        return self.get_time_display_value("finished_at")

    def get_args_display_value(self):
        return admin_ui.json_html(self.object.args)

    def get_kwargs_display_value(self):
        return admin_ui.json_html(self.object.kwargs)

    def get_result_display_value(self):
        return (
            admin_ui.json_html(self.object.result)
            if self.object.status == records.SUCCEEDED
            else "-"
        )

    def get_batch_id_display_value(self):
        batch_id = self.object.batch_id
        if batch_id is None:
            return "-"
        url = reverse("pgjobs_batches:inspect", args=[batch_id])
        return format_html('<a href="{}">batch {}</a>', url, batch_id)

    def get_after_id_display_value(self):
        return _job_link(self.object.after_id)

    def get_error_display_value(self):
        return admin_ui.error_html(self.object.error)


class TimeColumn(DateColumn):
    """A job's time, read clamped: "in 3 days" when it is ahead, "never"/"any time"
    past what a datetime holds, else Wagtail's own "2 hours ago"."""

    cell_template_name = "pgjobs_wagtail/time_cell.html"

    def get_value(self, instance):
        return times.shown_time(instance, self.name)

    def get_cell_context_data(self, instance, parent_context):
        context = super().get_cell_context_data(instance, parent_context)
        value = context["raw_value"]
        context["words"] = times.relative(value)
        context["exact"] = times.describe(value)
        return context


class StatusColumn(Column):
    """The status as a coloured tag; "deferred · in 3 days" for a ready job not yet due."""

    cell_template_name = "pgjobs_wagtail/html_cell.html"

    def get_value(self, instance):
        return admin_ui.job_status_tag(instance)


class FunctionColumn(Column):
    """The function's last two dotted parts, kept on one line; the whole path on hover."""

    cell_template_name = "pgjobs_wagtail/html_cell.html"

    def get_value(self, instance):
        return admin_ui.function_html(instance.func)


class ArgumentsColumn(Column):
    cell_template_name = "pgjobs_wagtail/html_cell.html"

    def get_value(self, instance):
        return admin_ui.arguments_html(instance.args, instance.kwargs)


class AttemptsColumn(Column):
    def get_value(self, instance):
        return f"{instance.attempts}/{instance.max_attempts}"


class JobsWithShownTimes:
    """A chooser view that reads the jobs' times clamped (``pgjobs.times``)."""

    def get_object_list(self):
        return times.with_shown_times(super().get_object_list())

    def get_object(self, pk):
        return times.with_shown_times(Job.objects.all()).get(pk=pk)


class JobChooseView(JobsWithShownTimes, ChooseView):
    pass


class JobChooseResultsView(JobsWithShownTimes, ChooseResultsView):
    pass


class JobChosenView(JobsWithShownTimes, SnippetChosenView):
    pass


class JobChooserViewSet(SnippetChooserViewSet):
    """The snippet chooser of jobs, for users who may see jobs only."""

    choose_view_class = JobChooseView
    choose_results_view_class = JobChooseResultsView
    chosen_view_class = JobChosenView

    def get_urlpatterns(self):
        return guarded(super().get_urlpatterns())


class JobViewSet(SnippetViewSet):
    model = Job
    icon = "cogs"
    menu_label = _("Jobs")
    menu_name = "pgjobs"
    menu_order = 900
    add_to_admin_menu = False  # an item of the "Jobs" menu (jobs_menu_item below)
    url_prefix = "pgjobs/jobs"
    url_namespace = "pgjobs_jobs"
    index_view_class = JobIndexView
    inspect_view_class = JobInspectView
    inspect_view_enabled = True
    copy_view_enabled = False
    chooser_viewset_class = JobChooserViewSet
    list_display = [
        FunctionColumn("func", label=_("Function"), sort_key="func"),
        StatusColumn("status", label=_("Status"), sort_key="status"),
        "queue",
        ArgumentsColumn("arguments", label=_("Arguments")),
        "priority",
        TimeColumn("run_at", label=_("Run at")),
        AttemptsColumn("attempts", label=_("Attempts")),
        TimeColumn("created_at", label=_("Created")),
        TimeColumn("finished_at", label=_("Finished")),
    ]
    filterset_class = JobFilterSet
    # The arguments' JSON as text: a scan, but of a page's worth of newest rows when
    # matches are common (the listing reads 50 rows by id, newest first).
    search_fields = ["func", "args", "kwargs"]
    search_backend_name = None  # the ORM: the Job table is not in a search index
    ordering = ["-id"]
    list_per_page = 50
    inspect_view_fields = [
        "id",
        "func",
        "status",
        "queue",
        "priority",
        "run_at",
        "attempts",
        "max_attempts",
        "timeout",
        "created_at",
        "started_at",
        "finished_at",
        "worker_id",
        "cancel_requested",
        "unique_key",
        "batch_id",
        "after_id",
        "args",
        "kwargs",
        "result",
        "error",
    ]

    def get_urlpatterns(self):
        acts = [
            path(f"{action.name}/<str:pk>/", act_view(action), name=action.url_name)
            for action in admin_ui.JOB_ACTIONS.values()
        ]
        return guarded(super().get_urlpatterns() + acts)


def act_view(action):
    """The view of a job page's button: POST only, ``change_job`` only, back to the page."""

    def view(request, pk):
        if not can_change_jobs(request.user):
            return forbidden(request)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            job = Job.objects.filter(pk=pk).values_list("pk", flat=True).first()
        except (ValueError, ValidationError):  # no job id: "cancel/nope/"
            job = None
        if job is None:
            raise Http404("No such job.")
        messages.info(request, action.perform(job, Job.objects.db))
        return redirect("pgjobs_jobs:inspect", pk)

    view.__name__ = f"{action.url_name}_view"
    return view


def dashboard_view(request):
    return render_dashboard(
        request, "pgjobs_wagtail/dashboard.html", {"jobs_url": reverse("pgjobs_jobs:list")}
    )


@hooks.register("register_admin_urls")
def dashboard_urls():
    return [
        path(
            "pgjobs/dashboard/",
            viewing_jobs_required(dashboard_view),
            name="pgjobs_dashboard",
        )
    ]


class ViewingJobsMenuItem(MenuItem):
    def is_shown(self, request):
        return job_permission_policy.user_has_permission(request.user, "view")


@hooks.register("register_admin_menu_item")
def jobs_menu_item():
    return SubmenuMenuItem(
        _("Jobs"),
        Menu(
            items=[
                ViewingJobsMenuItem(
                    _("Dashboard"),
                    reverse("pgjobs_dashboard"),
                    name="pgjobs-dashboard",
                    icon_name="view",
                    order=100,
                ),
                ViewingJobsMenuItem(
                    _("All jobs"),
                    reverse("pgjobs_jobs:list"),
                    name="pgjobs-jobs",
                    icon_name="list-ul",
                    order=200,
                ),
            ]
        ),
        name="pgjobs",
        icon_name="cogs",
        order=900,
    )


def _job_link(job_id, text=None):
    if job_id is None:
        return "-"
    url = reverse("pgjobs_jobs:inspect", args=[job_id])
    return format_html('<a href="{}">{}</a>', url, text or f"job {job_id}")


class BatchInspectView(InspectView):
    labels = {"progress": _("Progress"), "jobs": _("Jobs")}

    def get_field_label(self, field_name, field):
        if field_name in self.labels:
            return self.labels[field_name]
        return super().get_field_label(field_name, field)

    def get_progress_display_value(self):
        return progress_bar(self.object.done, self.object.total)

    def _callback(self, job_id):
        if job_id is None:
            return "-"
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        return format_html("{} ({})", _job_link(job_id), status or "pruned")

    def get_on_finish_id_display_value(self):
        return self._callback(self.object.on_finish_id)

    def get_on_success_id_display_value(self):
        return self._callback(self.object.on_success_id)

    def get_jobs_display_value(self):
        jobs = (
            Job.objects.filter(batch_id=self.object.pk)
            .order_by("id")
            .values_list("id", "func", "status", "attempts", "max_attempts")[:BATCH_PAGE_JOBS]
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td></tr>",
            ((_job_link(pk), func, status, n, most) for pk, func, status, n, most in jobs),
        )
        return format_html(
            '<table class="listing"><thead><tr><th>Job</th><th>Function</th><th>Status</th>'
            "<th>Attempts</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


class ProgressColumn(Column):
    def get_value(self, instance):
        return progress_bar(instance.done, instance.total)


class BatchPermissionPolicy(JobPermissionPolicy):
    """A batch is seen by whoever may see jobs (``view_job`` or ``change_job``);
    nobody adds, edits or deletes one here."""

    READ_ONLY = {"add", "change", "delete"}


class BatchViewSet(SnippetViewSet):
    model = Batch
    icon = "list-ul"
    menu_label = _("Job batches")
    menu_name = "pgjobs_batches"
    menu_order = 901
    add_to_admin_menu = True
    url_prefix = "pgjobs/batches"
    url_namespace = "pgjobs_batches"
    inspect_view_class = BatchInspectView
    inspect_view_enabled = True
    copy_view_enabled = False
    list_display = [
        "__str__",
        ProgressColumn("progress", label=_("Progress")),
        "succeeded",
        "failed",
        "cancelled",
        "created_at",
        "finished_at",
    ]
    search_fields = ["description"]
    search_backend_name = None
    ordering = ["-id"]
    list_per_page = 50
    inspect_view_fields = [
        "id",
        "description",
        "progress",
        "total",
        "pending",
        "succeeded",
        "failed",
        "cancelled",
        "created_at",
        "finished_at",
        "on_finish_id",
        "on_success_id",
        "jobs",
    ]

    def get_urlpatterns(self):
        return guarded(super().get_urlpatterns())


def guarded(patterns):
    """``patterns`` with each view behind ``viewing_jobs_required`` and CSRF checked
    (and its cookie set for the page's forms), as the Django admin's ``admin_view``
    does: a site without ``CsrfViewMiddleware`` must not let another site press a
    job page's buttons."""
    for pattern in patterns:
        pattern.callback = csrf_protect(viewing_jobs_required(pattern.callback))
    return patterns


def forbidden(request):
    """The 403 page. Wagtail's own views redirect to the dashboard instead; a job
    listing says plainly that it is closed."""
    return TemplateResponse(request, "pgjobs_wagtail/403.html", status=403)


def viewing_jobs_required(view):
    """Run ``view`` only for a user who may see jobs (a 403 page otherwise, also
    for the ``PermissionDenied`` Wagtail's view raises itself)."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not job_permission_policy.user_has_permission(request.user, "view"):
            return forbidden(request)
        try:
            return view(request, *args, **kwargs)
        except PermissionDenied:
            return forbidden(request)

    return wrapped


job_permission_policy = JobPermissionPolicy(Job)
register_permission_policy(Job, job_permission_policy)
register_snippet(JobViewSet)
# Job's permissions: batches are seen by those who see jobs.
register_permission_policy(Batch, BatchPermissionPolicy(Job))
register_snippet(BatchViewSet)


class JobsBulkActionMixin:
    """Refuses the whole bulk action, confirmation page included, to a user who may
    not see jobs or may not take the action: the page would name the jobs."""

    def user_may_act(self, user):
        raise NotImplementedError

    def dispatch(self, request, *args, **kwargs):
        user = request.user
        if not (
            job_permission_policy.user_has_permission(user, "view") and self.user_may_act(user)
        ):
            return forbidden(request)
        return super().dispatch(request, *args, **kwargs)

    def check_perm(self, job):
        return self.user_may_act(self.request.user)


class JobBulkAction(JobsBulkActionMixin, SnippetBulkAction):
    """A Django admin action over the selected jobs, for users with ``change_job``."""

    models = [Job]
    template_name = "pgjobs_wagtail/confirm_bulk_action.html"

    def user_may_act(self, user):
        return can_change_jobs(user)

    def object_context(self, job):
        return {"item": job}

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "action": self}


@hooks.register("register_bulk_action")
class RetryJobsBulkAction(JobBulkAction):
    display_name = _("Retry")
    action_type = "retry"
    aria_label = _("Retry the selected failed or cancelled jobs")
    action_priority = 10
    question = _("Queue these jobs again? Only failed and cancelled jobs are retried.")

    @classmethod
    def execute_action(cls, objects, **kwargs):
        ids = [job.pk for job in objects]
        return store_for_jobs(Job.objects.db).requeue(ids), 0

    def get_success_message(self, num_parent_objects, num_child_objects):
        return ngettext(
            "%(count)d job queued again.", "%(count)d jobs queued again.", num_parent_objects
        ) % {"count": num_parent_objects}


@hooks.register("register_bulk_action")
class CancelJobsBulkAction(JobBulkAction):
    display_name = _("Cancel")
    action_type = "cancel"
    aria_label = _("Cancel the selected jobs")
    action_priority = 20
    classes = {"serious"}
    question = _("Cancel these jobs? Ready jobs are cancelled; running jobs are asked to stop.")

    @classmethod
    def execute_action(cls, objects, **kwargs):
        cancelled, asked = store_for_jobs(Job.objects.db).cancel_many([j.pk for j in objects])
        return cancelled, asked

    def get_success_message(self, num_parent_objects, num_child_objects):
        text = ngettext(
            "%(count)d ready job cancelled", "%(count)d ready jobs cancelled", num_parent_objects
        ) % {"count": num_parent_objects}
        if num_child_objects:
            text += ngettext(
                "; %(count)d running job asked to stop",
                "; %(count)d running jobs asked to stop",
                num_child_objects,
            ) % {"count": num_child_objects}
        return text + "."


# Registered after Wagtail's snippet delete action (a higher ``order``), so that the
# jobs' "delete" is this one.
@hooks.register("register_bulk_action", order=100)
class DeleteJobsBulkAction(JobsBulkActionMixin, DeleteBulkAction):
    """Wagtail's delete of selected snippets, for users with ``delete_job`` who may
    see jobs."""

    models = [Job]

    def user_may_act(self, user):
        return job_permission_policy.user_has_permission(user, "delete")


# -- the Queues page (``queues.py``) ---------------------------------------------------


@hooks.register("register_admin_urls")
def register_queue_urls():
    from django.urls import path

    from .queues import queues_view

    return [path("pgjobs/queues/", queues_view, name="pgjobs_queues")]


class QueuesMenuItem(MenuItem):
    def is_shown(self, request):
        from .queues import may_view

        return may_view(request.user)


@hooks.register("register_admin_menu_item")
def register_queues_menu_item():
    from django.urls import reverse

    return QueuesMenuItem(_("Queues"), reverse("pgjobs_queues"), icon_name="cogs", order=901)


# -- page bulk actions in the background (bulk.py) ---------------------------------------

# Registered after Wagtail's own page actions (a higher ``order``), so that these replace
# them: the same confirmation pages, and large selections run as jobs.
for _action in bulk.ACTIONS.values():
    hooks.register("register_bulk_action", _action, order=100)


@hooks.register("register_admin_urls")
def bulk_progress_urls():
    return [
        path("pgjobs/bulk/<int:run_id>/", views.bulk_progress, name="pgjobs_bulk_progress"),
        path("pgjobs/bulk/<int:run_id>/cancel/", views.bulk_cancel, name="pgjobs_bulk_cancel"),
        path(
            "pgjobs/bulk/<int:run_id>/progress/",
            views.bulk_progress_json,
            name="pgjobs_bulk_progress_json",
        ),
    ]
