from django.db import models


class BenchRow(models.Model):
    """One row per "orm" job: the smallest write a real job would do."""

    kind = models.CharField(max_length=20)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "bench_row"


def write_row(kind="orm"):
    """The "orm" job's work, the same for every system (sync ORM)."""
    BenchRow.objects.create(kind=kind)


async def awrite_row(kind="orm"):
    """The same write through Django's async ORM (``acreate``)."""
    await BenchRow.objects.acreate(kind=kind)
