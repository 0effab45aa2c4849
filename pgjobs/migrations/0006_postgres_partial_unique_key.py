"""PostgreSQL: the unique-key constraint becomes a partial unique index.

The constraint on ``active_unique_key`` (migration 0003) indexes every row, and
nearly every job has no unique key: each enqueue, claim and finish wrote a NULL
entry into it, a third of the index writes a job costs. On PostgreSQL the
constraint is replaced by a unique index of the same name over the rows that
have a key (``WHERE active_unique_key IS NOT NULL``), which enforces the same
rule; enqueues find it with ``ON CONFLICT (active_unique_key) WHERE ...``.
MySQL/MariaDB and SQLite keep the constraint: MySQL has no partial indexes, and
SQLite's writes are not where its time goes.

The migration state is unchanged (Django still sees the constraint), so a later
migration that drops the constraint must drop the index on PostgreSQL instead.
"""

from django.db import migrations

FORWARD = [
    "CREATE UNIQUE INDEX pgjobs_job_unique_active_key_partial ON pgjobs_job "
    "(active_unique_key) WHERE active_unique_key IS NOT NULL",
    "ALTER TABLE pgjobs_job DROP CONSTRAINT pgjobs_job_unique_active_key",
    "ALTER INDEX pgjobs_job_unique_active_key_partial RENAME TO pgjobs_job_unique_active_key",
]
BACKWARD = [
    "DROP INDEX pgjobs_job_unique_active_key",
    "ALTER TABLE pgjobs_job ADD CONSTRAINT pgjobs_job_unique_active_key "
    "UNIQUE (active_unique_key)",
]


def _run_on_postgres(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("pgjobs", "0005_retention")]

    operations = [
        migrations.RunPython(_run_on_postgres(FORWARD), _run_on_postgres(BACKWARD), elidable=False),
    ]
