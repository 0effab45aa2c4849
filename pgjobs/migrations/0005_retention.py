"""Retention: an index that finds expired finished jobs, and PostgreSQL storage
parameters for a table whose rows live minutes.

``pgjobs_job_finished_idx`` (status, finished_at), partial on ``finished_at IS
NOT NULL``, is what the pruner every worker runs (``KEEP_SUCCEEDED``,
``KEEP_FAILED``) and ``pgjobs_prune`` read: a prune visits only the expired rows
of the statuses it deletes. A job gets its entry when it finishes (the update
that sets ``finished_at`` writes new index entries anyway, as it changes
``status``), and loses it when deleted. MySQL/MariaDB ignore the condition and
index every row.

On PostgreSQL the index is built ``CONCURRENTLY``, so that migrating a large
table does not stop enqueues and claims meanwhile; that needs a migration
outside a transaction (``atomic = False``). If it is interrupted, PostgreSQL
leaves an INVALID index behind: ``DROP INDEX pgjobs_job_finished_idx`` and
migrate again.

The storage parameters make autovacuum keep up with the table's churn. Every
job leaves about three dead row versions (claimed, finished, deleted) within
minutes, but the defaults wait for dead rows to reach 20% of the table before
vacuuming: 200,000 for a million rows, which claims and prunes then step over.
Here vacuum starts at 2% (plus 1,000 rows), after 2% of the rows are new
(so that new rows are marked all-visible and frozen in small steps), and
statistics are refreshed at 2% too, as the mix of statuses shifts quickly.

``fillfactor`` stays at 100: free space on a page only helps updates that can be
HOT (heap-only tuples), and no update of a job can be. Claims change ``status``
(the claim index's condition) and ``lease_expires_at`` (the lease index's key),
finishes ``status`` and ``finished_at`` (this index), heartbeats
``lease_expires_at``; PostgreSQL needs every indexed column, condition
included, to be unchanged for HOT. ``pg_stat_user_tables.n_tup_hot_upd`` stays
at 0 under a worker.
"""

from django.db import migrations, models

STORAGE_PARAMETERS = {
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_insert_scale_factor": "0.02",
    "autovacuum_analyze_scale_factor": "0.02",
}


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """``AddIndex``, built ``CONCURRENTLY`` on PostgreSQL (outside a transaction)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)


class SetPostgresStorageParameters(migrations.operations.base.Operation):
    """``ALTER TABLE ... SET (...)`` on PostgreSQL, ``RESET (...)`` on the way back;
    a no-op on other databases. The migration state does not change."""

    reduces_to_sql = True
    reversible = True

    def __init__(self, model_name, parameters):
        self.model_name = model_name
        self.parameters = parameters

    def deconstruct(self):
        return (
            self.__class__.__name__,
            [],
            {"model_name": self.model_name, "parameters": self.parameters},
        )

    def state_forwards(self, app_label, state):
        pass

    def _table(self, app_label, schema_editor, state):
        model = state.apps.get_model(app_label, self.model_name)
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            return None
        if not self.allow_migrate_model(connection.alias, model):
            return None
        return schema_editor.quote_name(model._meta.db_table)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        table = self._table(app_label, schema_editor, to_state)
        if table:
            settings = ", ".join(f"{name} = {value}" for name, value in self.parameters.items())
            schema_editor.execute(f"ALTER TABLE {table} SET ({settings})")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        table = self._table(app_label, schema_editor, from_state)
        if table:
            schema_editor.execute(f"ALTER TABLE {table} RESET ({', '.join(self.parameters)})")

    def describe(self):
        return f"Set storage parameters of {self.model_name} (PostgreSQL only)"

    @property
    def migration_name_fragment(self):
        return f"{self.model_name}_storage_parameters"


class Migration(migrations.Migration):

    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ('pgjobs', '0004_schedule'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name='job',
            index=models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['status', 'finished_at'], name='pgjobs_job_finished_idx'),
        ),
        SetPostgresStorageParameters(model_name='job', parameters=STORAGE_PARAMETERS),
    ]
