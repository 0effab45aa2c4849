"""Attempts and per-minute figures (issue 23).

``pgjobs_attempt``: the attempts of a job that did not succeed, deleted with it.
``pgjobs_stat``: per-minute figures workers add to as they record outcomes.
``pgjobs_job.traceparent``: the trace context of the enqueuing span.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pgjobs", "0006_postgres_partial_unique_key"),
    ]

    operations = [
        migrations.CreateModel(
            name="JobStat",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "minute",
                        "queue",
                        "shard",
                        "metric",
                        "bucket",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("minute", models.DateTimeField()),
                ("queue", models.CharField(max_length=100)),
                ("shard", models.SmallIntegerField()),
                ("metric", models.CharField(max_length=10)),
                ("bucket", models.SmallIntegerField()),
                ("count", models.BigIntegerField()),
                ("total", models.FloatField(help_text="Seconds, for the wait and run metrics.")),
            ],
            options={
                "verbose_name": "job figure",
                "db_table": "pgjobs_stat",
            },
        ),
        migrations.AddField(
            model_name="job",
            name="traceparent",
            field=models.CharField(blank=True, max_length=55, null=True),
        ),
        migrations.CreateModel(
            name="JobAttempt",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("attempt", models.IntegerField(help_text="1 for the first attempt.")),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("worker_id", models.CharField(blank=True, max_length=100, null=True)),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("succeeded", "Succeeded"),
                            ("failed", "Failed"),
                            ("retried", "Retried"),
                            ("cancelled", "Cancelled"),
                        ],
                        max_length=10,
                    ),
                ),
                ("error", models.JSONField(blank=True, null=True)),
                (
                    "job",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="failed_attempts",
                        to="pgjobs.job",
                    ),
                ),
            ],
            options={
                "verbose_name": "job attempt",
                "db_table": "pgjobs_attempt",
                "ordering": ["job_id", "attempt"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("job", "attempt"), name="pgjobs_attempt_job_attempt"
                    )
                ],
            },
        ),
    ]
