"""Queue control: one row per steered queue (paused, limits, the rate window)."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0010_batches")]

    operations = [
        migrations.CreateModel(
            name="QueueControl",
            fields=[
                (
                    "queue",
                    models.CharField(max_length=100, primary_key=True, serialize=False),
                ),
                (
                    "paused",
                    models.BooleanField(
                        default=False,
                        help_text="No job of the queue starts; running ones finish.",
                    ),
                ),
                (
                    "concurrency",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="At most this many jobs of the queue run at once, on all "
                        "workers together.",
                        null=True,
                        validators=[django.core.validators.MinValueValidator(1)],
                    ),
                ),
                (
                    "rate",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="At most this many jobs of the queue start per period, on "
                        "all workers.",
                        null=True,
                        validators=[django.core.validators.MinValueValidator(1)],
                    ),
                ),
                (
                    "period",
                    models.FloatField(
                        blank=True,
                        help_text="The rate limit's period, in seconds.",
                        null=True,
                        validators=[django.core.validators.MinValueValidator(0.001)],
                    ),
                ),
                ("window_start", models.FloatField(blank=True, editable=False, null=True)),
                ("window_count", models.PositiveIntegerField(default=0, editable=False)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "verbose_name": "queue control",
                "db_table": "pgjobs_queue",
                "ordering": ["queue"],
            },
        ),
    ]
