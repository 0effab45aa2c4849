"""``DatabaseBackend``: jobs stored in the site's own database, in the ``Job`` table.

It validates and serialises a job (``StoringBackend``), then hands it to the
store for the database's vendor (``pgjobs/stores/``), which owns every SQL
statement. An enqueue inside ``transaction.atomic()`` is part of that
transaction. ``pgjobs_worker`` and ``pgjobs_drain`` work the same store.
"""

# DEFAULT_KEEP_*: defined here before StoringBackend; still importable from here.
from ..exceptions import InvalidBackend
from .storing import DEFAULT_KEEP_FAILED, DEFAULT_KEEP_SUCCEEDED, StoringBackend

__all__ = ["DEFAULT_KEEP_FAILED", "DEFAULT_KEEP_SUCCEEDED", "DatabaseBackend"]


class DatabaseBackend(StoringBackend):
    """Stores jobs in ``pgjobs_job`` through Django's database connections.

    OPTIONS (all optional): ``DATABASE`` (alias, default ``"default"``),
    ``CHANNEL`` (Postgres NOTIFY channel, ``"pgjobs"``), ``LISTEN_DATABASE``
    (PostgreSQL: where workers LISTEN; an alias or a DSN that reaches the server
    directly when ``DATABASE`` goes through PgBouncer, or False to poll), and those of every
    storing backend: ``QUEUES``, ``MAX_ATTEMPTS``, ``RETRY_DELAY``,
    ``RETRY_MAX_DELAY``, ``TIMEOUT``, ``LEASE_SECONDS``, ``POLL_INTERVAL``,
    ``KEEP_SUCCEEDED`` (300 s) and ``KEEP_FAILED`` (7 days); see
    ``StoringBackend``.
    """

    option_names = StoringBackend.option_names | {"DATABASE", "CHANNEL", "LISTEN_DATABASE"}

    def __init__(self, options):
        super().__init__(options)
        # The jobs' table and the transactions an enqueue joins are this database's.
        self.alias = self.database = self.options.get("DATABASE", "default")
        self.channel = self.options.get("CHANNEL", "pgjobs")
        self.listen_database = self.options.get("LISTEN_DATABASE")
        if self.listen_database is not None and self.listen_database is not False:
            if not isinstance(self.listen_database, str) or not self.listen_database:
                raise InvalidBackend(
                    "OPTIONS['LISTEN_DATABASE'] must be a database alias, a DSN like "
                    "'postgresql://host:5432/db', or False (poll), not "
                    f"{self.listen_database!r}"
                )

    @property
    def jobs_database(self):
        return self.alias

    def make_store(self):
        from ..stores import database_store

        options = {}
        if self.listen_database is not None:
            from django.conf import settings
            from django.db import connections

            vendor = connections[self.alias].vendor if self.alias in settings.DATABASES else None
            if vendor != "postgresql":
                raise InvalidBackend(
                    f"OPTIONS['LISTEN_DATABASE'] is for PostgreSQL; database {self.alias!r} "
                    f"is {vendor}: remove it"
                )
            options["listen_database"] = self.listen_database
        return database_store(
            self.alias,
            channel=self.channel,
            lease_seconds=self.lease_seconds,
            keep_succeeded=self.keep_succeeded,
            **options,
        )

    def check(self, **kwargs):
        from ..checks import database_backend_checks

        return database_backend_checks(self)
