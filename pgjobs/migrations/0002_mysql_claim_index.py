"""The claim index for MySQL and MariaDB, created on those databases only.

They have no partial indexes: Django creates ``pgjobs_job_claim_idx`` there
without its ``status = 'ready'`` condition, which orders every job ever run.
This index leads with ``status`` instead, so a claim (``status = 'ready' ...
ORDER BY priority DESC, run_at, id``) reads ready rows in claim order and
nothing else. It is not part of the model: other databases have the partial
index, and the migration state does not change.
"""

from django.db import migrations


class CreateVendorIndex(migrations.operations.base.Operation):
    """``CREATE INDEX`` on databases of one vendor; a no-op elsewhere."""

    reduces_to_sql = True
    reversible = True

    def __init__(self, vendor, model_name, name, columns):
        self.vendor = vendor
        self.model_name = model_name
        self.name = name
        self.columns = columns

    def deconstruct(self):
        return (
            self.__class__.__name__,
            [],
            {
                "vendor": self.vendor,
                "model_name": self.model_name,
                "name": self.name,
                "columns": self.columns,
            },
        )

    def state_forwards(self, app_label, state):
        pass

    def _applies(self, app_label, schema_editor, state):
        model = state.apps.get_model(app_label, self.model_name)
        return schema_editor.connection.vendor == self.vendor and self.allow_migrate_model(
            schema_editor.connection.alias, model
        ), model

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        applies, model = self._applies(app_label, schema_editor, to_state)
        if applies:
            quote = schema_editor.quote_name
            columns = ", ".join(
                f"{quote(column[1:])} DESC" if column.startswith("-") else quote(column)
                for column in self.columns
            )
            schema_editor.execute(
                f"CREATE INDEX {quote(self.name)} ON {quote(model._meta.db_table)} ({columns})"
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        applies, model = self._applies(app_label, schema_editor, from_state)
        if applies:
            quote = schema_editor.quote_name
            schema_editor.execute(
                f"DROP INDEX {quote(self.name)} ON {quote(model._meta.db_table)}"
            )

    def describe(self):
        return f"Create index {self.name} on {self.model_name} ({self.vendor} only)"

    @property
    def migration_name_fragment(self):
        return f"{self.vendor}_{self.name}"


class Migration(migrations.Migration):

    dependencies = [
        ("pgjobs", "0001_initial"),
    ]

    operations = [
        CreateVendorIndex(
            vendor="mysql",
            model_name="job",
            name="pgjobs_job_mysql_claim_idx",
            columns=["status", "-priority", "run_at", "id"],
        ),
    ]
