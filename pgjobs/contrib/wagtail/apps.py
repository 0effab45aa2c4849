"""App config of ``pgjobs.contrib.wagtail``: the Wagtail admin views of the job rows
live in its ``wagtail_hooks`` module, which Wagtail finds by itself; ``ready()``
connects scheduled publishing and renditions ahead of time to Wagtail's models and
adds the scheduled-publishing sweep to the workers' schedules."""

from django.apps import AppConfig


class PgJobsWagtailConfig(AppConfig):
    name = "pgjobs.contrib.wagtail"
    label = "pgjobs_wagtail"
    verbose_name = "Background jobs for Wagtail"
    # As its migrations were made: a site without DEFAULT_AUTO_FIELD (Wagtail's project
    # template sets none) would otherwise hear models.W042 on every command.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.apps import apps
        from django.db.models.signals import post_delete, post_save, pre_save
        from wagtail.models import Revision

        from ...schedule import add_app_schedules
        from . import checks, renditions, scheduling  # noqa: F401  (checks register)

        uid = "pgjobs.contrib.wagtail"
        post_save.connect(scheduling.revision_saved, sender=Revision, dispatch_uid=f"{uid}.rev")
        post_save.connect(scheduling.object_saved, dispatch_uid=f"{uid}.expiry")
        add_app_schedules(scheduling.schedule_entries)

        if not apps.is_installed("wagtail.images"):
            return
        from wagtail.images import get_image_model

        image_model = get_image_model()
        pre_save.connect(renditions.image_saving, sender=image_model, dispatch_uid=f"{uid}.img")
        post_save.connect(renditions.image_saved, sender=image_model, dispatch_uid=f"{uid}.img")
        post_delete.connect(
            renditions.rendition_deleted,
            sender=image_model.get_rendition_model(),
            dispatch_uid=f"{uid}.rendition",
        )
