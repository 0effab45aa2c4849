"""``Job.atomic``: jobs that run in a transaction which also records their success
(``background.enqueue(..., atomic=True)``). A column with a constant default:
PostgreSQL, MySQL 8 and MariaDB add it without rewriting the table."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0008_attempts_and_stats")]

    operations = [
        migrations.AddField(
            model_name="job",
            name="atomic",
            field=models.BooleanField(
                db_default=False,
                help_text="Runs in a transaction that also records its success: exactly once "
                "for its database writes.",
            ),
        ),
    ]
