"""Page bulk actions in the background: publish, unpublish, delete and move over more
pages than ``PGJOBS["WAGTAIL_BULK_ACTIONS"]`` (10) run as jobs, one per page.

The request does what Wagtail's does up to the action itself: the confirmation page,
its permission checks, the ``before_bulk_action`` hooks (which may still refuse).
Then it records a ``BulkActionRun`` with one ``BulkActionItem`` per page, enqueues
one job per page in the same transaction, and redirects to a progress page that
updates until every item is done, then lists what was done, refused and failed.

Each job checks the permission again, as Wagtail's view does, for the user who
asked, at the time it runs: a page whose permissions changed meanwhile is refused,
not acted on. It then runs Wagtail's own ``execute_action`` over that one page.

Smaller selections, a backend without workers (``ImmediateBackend``) and
``WAGTAIL_BULK_ACTIONS = None`` keep Wagtail's behaviour: the action runs in the
request. The ``after_bulk_action`` hooks run only then: their arguments (the
request, the action view) cannot travel to a worker.
"""

from django.db import transaction
from django.db.models import Count
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from wagtail.admin.views.pages.bulk_actions.delete import DeleteBulkAction
from wagtail.admin.views.pages.bulk_actions.move import MoveBulkAction
from wagtail.admin.views.pages.bulk_actions.publish import PublishBulkAction
from wagtail.admin.views.pages.bulk_actions.unpublish import UnpublishBulkAction

from ... import background
from ...execution import current_job
from ...handler import get_backend
from . import conf
from .models import BulkActionItem, BulkActionRun


class BackgroundBulkAction:
    """Mixed in before one of Wagtail's page bulk actions: large selections run as jobs."""

    def form_valid(self, form):
        self.cleaned_form = form
        objects, without_access = self.get_actionable_objects()
        threshold = conf.bulk_threshold()
        if threshold is None or len(objects) <= threshold or not get_backend().stores_jobs:
            return super().form_valid(form)
        self.actionable_objects = objects = self.annotate_items(objects)
        response = self.prepare_action(objects, without_access)
        if hasattr(response, "status_code"):
            return response
        with transaction.atomic():
            for hook in _hooks("before_bulk_action"):
                result = hook(self.request, self.action_type, objects, self)
                if hasattr(result, "status_code"):
                    return result
            run = start_run(self.action_type, self.request.user, objects, self.run_options())
            run.next_url = self.next_url
            run.save(update_fields=["next_url"])
        return redirect(reverse("pgjobs_bulk_progress", args=[run.pk]))

    def run_options(self):
        """The form's choices the jobs need, as JSON."""
        return {}

    # -- in the worker ---------------------------------------------------------------------

    @classmethod
    def refusal(cls, page, user, options):
        """Why ``user`` may not act on ``page`` now (None: they may), as Wagtail checks."""
        raise NotImplementedError

    @classmethod
    def execution_kwargs(cls, options, user):
        return {"user": user}


class WithDescendants:
    """The publish and unpublish forms' "include descendants" choice, to the jobs."""

    def run_options(self):
        return {"include_descendants": bool(self.cleaned_form.cleaned_data["include_descendants"])}

    @classmethod
    def execution_kwargs(cls, options, user):
        return {"user": user, "include_descendants": options.get("include_descendants", False)}


class BackgroundPublish(WithDescendants, BackgroundBulkAction, PublishBulkAction):
    @classmethod
    def refusal(cls, page, user, options):
        if not page.permissions_for_user(user).can_publish():
            return "You no longer have permission to publish this page."
        return None


class BackgroundUnpublish(WithDescendants, BackgroundBulkAction, UnpublishBulkAction):
    @classmethod
    def refusal(cls, page, user, options):
        if not page.permissions_for_user(user).can_unpublish():
            return "You no longer have permission to unpublish this page."
        return None

    @classmethod
    def execution_kwargs(cls, options, user):
        return {
            **super().execution_kwargs(options, user),
            "permission_checker": lambda page: page.permissions_for_user(user).can_unpublish(),
        }


class BackgroundDelete(BackgroundBulkAction, DeleteBulkAction):
    @classmethod
    def refusal(cls, page, user, options):
        if not page.permissions_for_user(user).can_delete():
            return "You no longer have permission to delete this page."
        return None


class BackgroundMove(BackgroundBulkAction, MoveBulkAction):
    def run_options(self):
        return {"destination": self.cleaned_form.cleaned_data["chooser"].pk}

    @classmethod
    def refusal(cls, page, user, options):
        from wagtail.models import Page

        destination = Page.objects.filter(pk=options.get("destination")).first()
        if destination is None:
            return "The destination page no longer exists."
        permissions = page.permissions_for_user(user)
        if not permissions.can_move() or not permissions.can_move_to(destination):
            return f"You no longer have permission to move this page to {destination.title!r}."
        if not Page._slug_is_available(page.slug, destination, page=page):
            return f"The slug {page.slug!r} is already in use under {destination.title!r}."
        return None

    @classmethod
    def execution_kwargs(cls, options, user):
        from wagtail.models import Page

        return {"user": user, "destination": Page.objects.get(pk=options["destination"])}


#: The actions that run in the background, by Wagtail's ``action_type``.
ACTIONS = {
    cls.action_type: cls
    for cls in (BackgroundPublish, BackgroundUnpublish, BackgroundDelete, BackgroundMove)
}


def _hooks(name):
    from wagtail import hooks

    return hooks.get_hooks(name)


def start_run(action_type, user, pages, options):
    """Record a run over ``pages`` and enqueue a job per page (in the caller's transaction)."""
    run = BulkActionRun.objects.create(
        action=action_type, user=user, options=options, total=len(pages)
    )
    items = BulkActionItem.objects.bulk_create(
        [
            BulkActionItem(run=run, object_id=str(page.pk), title=page.get_admin_display_title())
            for page in pages
        ]
    )
    if any(item.pk is None for item in items):  # databases that return no ids (MySQL)
        items = list(run.items.order_by("pk"))
    jobs = [(run_item, [item.pk], {}) for item in items]
    if get_backend().supports_batches:
        # One batch: written in one statement, cancellable as one, shown on the jobs
        # admin's batch page, and its on_finish callback settles the pages whose job
        # ended without acting (cancelled there, or failed for good mid-way).
        batch = background.batch(
            jobs,
            on_finish=(finish_run, [run.pk], {}),
            description=f"Wagtail bulk {action_type} of {len(items)} pages (run {run.pk})",
        )
        run.batch_id = str(batch.id)
        run.save(update_fields=["batch_id"])
    else:
        background.enqueue_many(jobs)
    return run


def finish_run(run_id):
    """The batch's ``on_finish``: every job has ended; a page still pending had its
    job cancelled (or lost) before it acted."""
    ended = BulkActionItem.objects.filter(run_id=run_id, status=BulkActionItem.PENDING).update(
        status=BulkActionItem.CANCELLED,
        message="Its job ended before it acted (cancelled in the jobs admin).",
        finished_at=timezone.now(),
    )
    return {"settled": ended}


def run_item(item_id):
    """Run one page of a bulk action, for the user who asked, if they still may."""
    from wagtail.models import Page

    item = BulkActionItem.objects.select_related("run", "run__user").filter(pk=item_id).first()
    if item is None or item.status != BulkActionItem.PENDING:
        return {"status": item.status if item else "gone"}
    run = item.run
    action = ACTIONS[run.action]
    user = run.user
    page = Page.objects.filter(pk=item.object_id).first()
    if page is None:
        return finish(item, BulkActionItem.FAILED, "The page no longer exists.")
    if user is None or not user.is_active:
        return finish(item, BulkActionItem.REFUSED, "The user who asked can no longer act.")
    page = page.specific
    reason = action.refusal(page, user, run.options)
    if reason is not None:
        return finish(item, BulkActionItem.REFUSED, reason)
    try:
        with transaction.atomic():
            # The item locked while its page is acted on: a cancel from the progress
            # page waits for it (then leaves it done), or came first and the job
            # does nothing; without the lock a page could be acted on and still
            # be listed as cancelled before it ran.
            pending = BulkActionItem.objects.select_for_update().filter(
                pk=item.pk, status=BulkActionItem.PENDING
            )
            if not pending.exists():
                return {"status": "already finished", "message": ""}
            counts = action.execute_action([page], **action.execution_kwargs(run.options, user))
            children = counts[1] if counts else 0
            return finish(item, BulkActionItem.DONE, children=children)
    except Exception as exc:
        job = current_job()
        if job is None or job.attempt >= job.max_attempts:
            finish(item, BulkActionItem.FAILED, f"{type(exc).__name__}: {exc}")
        raise


def finish(item, status, message="", children=0):
    updated = BulkActionItem.objects.filter(pk=item.pk, status=BulkActionItem.PENDING).update(
        status=status, message=message, children=children, finished_at=timezone.now()
    )
    return {"status": status if updated else "already finished", "message": message}


def cancel_run(run, user):
    """Cancel the pages of ``run`` not acted on yet: their jobs, when they run, do nothing."""
    who = user.get_username() if user is not None else "someone"
    cancelled = run.items.filter(status=BulkActionItem.PENDING).update(
        status=BulkActionItem.CANCELLED,
        message=f"Cancelled by {who} before it ran.",
        finished_at=timezone.now(),
    )
    if run.batch_id and get_backend().supports_batches:
        background.get_batch(run.batch_id).cancel()  # the ready jobs: no worker claims them
    return cancelled


def progress(run):
    """Counts of ``run``'s items by status, and whether it is done."""
    counts = dict.fromkeys((status for status, _ in BulkActionItem.STATUS_CHOICES), 0)
    for row in run.items.order_by().values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    finished = run.total - counts[BulkActionItem.PENDING]
    return {
        "run": run.pk,
        "action": run.action,
        "total": run.total,
        "finished": finished,
        "done": counts[BulkActionItem.DONE],
        "refused": counts[BulkActionItem.REFUSED],
        "failed": counts[BulkActionItem.FAILED],
        "cancelled": counts[BulkActionItem.CANCELLED],
        "complete": finished >= run.total,
    }
