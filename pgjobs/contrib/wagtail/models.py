"""What a bulk action run in the background records: the run (who asked for which
action with which options) and one outcome per page, which the admin's progress bar
counts and the summary lists (``bulk.py``)."""

from django.conf import settings
from django.db import models


class BulkActionRun(models.Model):
    action = models.CharField(max_length=50)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    options = models.JSONField(default=dict, blank=True)
    total = models.PositiveIntegerField(default=0)
    next_url = models.CharField(max_length=2000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    #: The pgjobs batch of its jobs, when the backend runs batches.
    batch_id = models.CharField(max_length=100, blank=True)

    class Meta:
        db_table = "pgjobs_wagtail_bulk_run"

    def __str__(self):
        return f"{self.action} of {self.total} pages (run {self.pk})"


class BulkActionItem(models.Model):
    PENDING, DONE, REFUSED, FAILED, CANCELLED = "pending", "done", "refused", "failed", "cancelled"
    STATUS_CHOICES = [(s, s) for s in (PENDING, DONE, REFUSED, FAILED, CANCELLED)]

    run = models.ForeignKey(BulkActionRun, on_delete=models.CASCADE, related_name="items")
    object_id = models.CharField(max_length=255)
    title = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PENDING)
    message = models.TextField(blank=True)
    #: Pages the action reached below this one (descendants published, deleted, ...).
    children = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "pgjobs_wagtail_bulk_item"
        indexes = [models.Index(fields=["run", "status"], name="pgjobs_wagtail_bulk_status")]

    def __str__(self):
        return f"{self.title or self.object_id}: {self.status}"
