"""The job rows in the Wagtail admin: a read-only snippet listing under its own
"Jobs" menu item, with the Django admin's filters, search, detail and actions.

Permissions are Django's, as in the Django admin: ``pgjobs.view_job`` (or
``change_job``) shows the menu item, the listing and the detail; ``change_job``
allows retry and cancel; ``delete_job`` allows deleting. Nobody adds or edits
jobs here: code enqueues them, signed with ``SECRET_KEY``.

Every URL registered here needs ``view_job`` (or ``change_job``) before Wagtail's
own view runs: the viewset's, the snippet chooser's (which Wagtail opens to every
editor), and the bulk actions' (whose confirmation page names the jobs). A user
without it gets a 403 page that names no job.

Every view reads a job's times clamped (``pgjobs.times``): a ``run_at`` of
``'infinity'`` written by hand shows as "never", and a future time as "in 3 days".
"""

import functools
import json

import django_filters
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from wagtail import hooks
from wagtail.admin.filters import WagtailFilterSet
from wagtail.admin.ui.tables import Column, DateColumn, StatusTagColumn
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

from ... import records, times
from ...handler import queue_names, store_for_jobs
from ...models import STATUS_CHOICES, Job
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


def can_change_jobs(user):
    """Retry and cancel, as the Django admin's actions: ``pgjobs.change_job``."""
    return user.has_perm(f"pgjobs.{get_permission_codename('change', Job._meta)}")


def queue_choices():
    return [(name, name) for name in queue_names()]


class JobFilterSet(WagtailFilterSet):
    status = django_filters.ChoiceFilter(choices=STATUS_CHOICES, label=_("Status"))
    queue = django_filters.ChoiceFilter(choices=queue_choices, label=_("Queue"))

    class Meta:
        model = Job
        fields = ["status", "queue"]


def _pre(value):
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


class JobIndexView(IndexView):
    # No COUNT(*) beyond the paginator's one, no per-row queries: the listing
    # reads only the columns it shows.
    def get_base_queryset(self):
        return times.with_shown_times(
            super()
            .get_base_queryset()
            .only("id", "func", "status", "queue", "priority", "attempts", "max_attempts"),
            ("run_at", "created_at", "finished_at"),
        )


class JobInspectView(InspectView):
    def get_object(self, queryset=None):
        return get_object_or_404(times.with_shown_times(Job.objects.all()), pk=self.pk)

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
        return _pre(self.object.args)

    def get_kwargs_display_value(self):
        return _pre(self.object.kwargs)

    def get_result_display_value(self):
        return _pre(self.object.result) if self.object.status == records.SUCCEEDED else "-"

    def get_error_display_value(self):
        error = self.object.error
        if not error:
            return "-"
        return format_html(
            "<strong>{}</strong>: {}<pre>{}</pre>",
            error.get("type", ""),
            error.get("message", ""),
            error.get("traceback", ""),
        )


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
    add_to_admin_menu = True
    url_prefix = "pgjobs/jobs"
    url_namespace = "pgjobs_jobs"
    index_view_class = JobIndexView
    inspect_view_class = JobInspectView
    inspect_view_enabled = True
    copy_view_enabled = False
    chooser_viewset_class = JobChooserViewSet
    list_display = [
        "func",
        StatusTagColumn("status", primary=lambda job: job.status == records.SUCCEEDED),
        "queue",
        "priority",
        TimeColumn("run_at", label=_("Run at")),
        AttemptsColumn("attempts", label=_("Attempts")),
        TimeColumn("created_at", label=_("Created")),
        TimeColumn("finished_at", label=_("Finished")),
    ]
    filterset_class = JobFilterSet
    search_fields = ["func"]
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
        "args",
        "kwargs",
        "result",
        "error",
    ]

    def get_urlpatterns(self):
        return guarded(super().get_urlpatterns())


def guarded(patterns):
    """``patterns`` with each view behind ``viewing_jobs_required``."""
    for pattern in patterns:
        pattern.callback = viewing_jobs_required(pattern.callback)
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
