"""Scheduled publishing without cron: workers publish a page (or a snippet with
``DraftStateMixin``) scheduled to go live, and unpublish one that expires, within a
few seconds of its time.

Two parts, both over ``publish_due``, which does for one object what Wagtail's
``publish_scheduled`` command does for all:

- a deferred job per scheduled time: saving a revision with ``approved_go_live_at``
  (what ``revision.publish()`` does for a future ``go_live_at``) or a live object
  with an ``expire_at`` defers ``publish_due`` to that time. The job looks again
  when it runs, so a schedule cancelled or moved meanwhile makes it do nothing;
  its ``unique_key`` names the object and the time, so saving twice defers once,
  and moving a schedule earlier is not held up by the job at the old time.
- a sweep (``sweep``), a pgjobs schedule every minute (``wagtail-publish-scheduled``),
  for what the jobs miss: schedules made before pgjobs was installed, jobs deleted
  by hand, a worker host whose clock is far behind.

Off with ``PGJOBS["WAGTAIL_SCHEDULED_PUBLISHING"] = False``, and idle on a backend
that cannot defer jobs for workers (``ImmediateBackend``; check ``pgjobs.W006``).
"""

import datetime
import logging
import time

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from ... import background
from . import conf

logger = logging.getLogger("pgjobs")

#: The sweep's schedule: its name, and how often it runs.
SWEEP_NAME = "wagtail-publish-scheduled"
SWEEP_EVERY = datetime.timedelta(minutes=1)
#: How far the worker's clock may be behind the database's at the job's time:
#: Wagtail compares ``go_live_at`` with the worker's clock, so the job waits it out.
MAX_CLOCK_SKEW = 10.0


def schedule_entries():
    """The sweep, for ``pgjobs.schedule.add_app_schedules``, while scheduled publishing is on."""
    if not conf.scheduled_publishing():
        return {}
    return {SWEEP_NAME: {"func": "pgjobs.contrib.wagtail.scheduling.sweep", "every": SWEEP_EVERY}}


# -- deferring a check for each scheduled time -----------------------------------------------


def revision_saved(sender, instance, **kwargs):
    """``post_save`` of ``Revision``: defer a check at its approved go-live time."""
    if instance.approved_go_live_at is None or not conf.scheduled_publishing():
        return
    defer_check(instance.base_content_type_id, instance.object_id, instance.approved_go_live_at)


def object_saved(sender, instance, **kwargs):
    """``post_save`` of any model: for a live object with publishing and an expiry
    time, defer a check at that time."""
    from wagtail.models import DraftStateMixin

    if not isinstance(instance, DraftStateMixin):
        return
    if not (instance.live and instance.expire_at) or not conf.scheduled_publishing():
        return
    content_type = instance.get_base_content_type()
    defer_check(content_type.pk, str(instance.pk), instance.expire_at)


def defer_check(content_type_id, object_id, when):
    """Defer ``publish_due`` for one object to ``when`` (once per object and time)."""
    key = f"wagtail-scheduled:{content_type_id}:{object_id}:{when.timestamp():.6f}"
    background.defer(
        publish_due,
        when=when,
        args=[content_type_id, str(object_id)],
        kwargs={"at": when.isoformat()},
        unique_key=key,
    )


# -- publishing what is due ------------------------------------------------------------------


def publish_due(content_type_id, object_id, at=None):
    """Publish the object's revisions whose go-live time has come, and unpublish it
    when it has expired, as ``publish_scheduled`` does; return what it did.

    ``at`` is the time the job was deferred to: the store ran it then by the
    database's clock, and when the worker's clock is a little behind, the job
    waits until Wagtail, which reads the worker's clock, sees it too.
    """
    if at is not None:
        wait = (datetime.datetime.fromisoformat(at) - timezone.now()).total_seconds()
        if 0 < wait <= MAX_CLOCK_SKEW:
            time.sleep(wait)
    model = _model_for(content_type_id)
    if model is None:
        return {"published": 0, "unpublished": 0}
    with transaction.atomic():
        # The object's row locked: a sweep and a job (or two jobs) for the same
        # object publish its revision once.
        obj = model._default_manager.select_for_update().filter(pk=object_id).first()
        if obj is None:
            return {"published": 0, "unpublished": 0}
        obj = _specific(obj)
        now = timezone.now()
        unpublished = 0
        if obj.live and obj.expire_at is not None and obj.expire_at <= now:
            obj.unpublish(set_expired=True, log_action="wagtail.unpublish.scheduled")
            unpublished = 1
        # The latest due revision only: publishing it clears every revision's
        # approved_go_live_at, so an older one still approved (two editors
        # scheduling at once) would be published over it, the page twice.
        revision = (
            obj.revisions.filter(approved_go_live_at__lte=now)
            .order_by("-approved_go_live_at", "-pk")
            .first()
        )
        published = 0
        if revision is not None:
            revision.publish(log_action="wagtail.publish.scheduled")
            published = 1
    if published or unpublished:
        logger.info(
            "pgjobs: scheduled publishing of %s %s: %d published, %d unpublished",
            model._meta.label,
            object_id,
            published,
            unpublished,
        )
    return {"published": published, "unpublished": unpublished}


def sweep():
    """Publish and unpublish everything whose time has passed (the safety net):
    Wagtail's ``publish_scheduled``, object by object through ``publish_due``."""
    from wagtail.models import DraftStateMixin, Page, Revision

    now = timezone.now()
    due = set()
    models = [Page] + [
        model
        for model in apps.get_models()
        if issubclass(model, DraftStateMixin) and not issubclass(model, Page)
    ]
    for model in models:
        content_type = ContentType.objects.get_for_model(model)
        expired = model._default_manager.filter(live=True, expire_at__lt=now)
        due.update((content_type.pk, str(pk)) for pk in expired.values_list("pk", flat=True))
    due.update(
        Revision.objects.filter(approved_go_live_at__lt=now).values_list(
            "base_content_type_id", "object_id"
        )
    )
    totals = {"objects": len(due), "published": 0, "unpublished": 0}
    failed = []
    for content_type_id, object_id in sorted(due):
        try:
            done = publish_due(content_type_id, object_id)
        except Exception:
            # One object that cannot be published (a hook refusing, invalid content)
            # must not hold back the others at every sweep: logged, counted, and
            # the sweep goes on; it is tried again at the next sweep.
            logger.exception(
                "pgjobs: scheduled publishing of content type %s object %s failed",
                content_type_id,
                object_id,
            )
            failed.append(f"{content_type_id}:{object_id}")
            continue
        totals["published"] += done["published"]
        totals["unpublished"] += done["unpublished"]
    if failed:
        totals["failed"] = failed
    return totals


def _model_for(content_type_id):
    try:
        return ContentType.objects.get_for_id(content_type_id).model_class()
    except ContentType.DoesNotExist:
        return None


def _specific(obj):
    from wagtail.models import Page

    return obj.specific if isinstance(obj, Page) else obj
