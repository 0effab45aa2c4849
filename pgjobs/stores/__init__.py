"""Stores: the storage-specific half of pgjobs, one module per database or broker.

``database_store(alias)`` picks the store for a Django database by its vendor.
"""

from django.db import connections
from django.utils.module_loading import import_string

from ..exceptions import InvalidBackend

DATABASE_STORES = {
    "postgresql": "pgjobs.stores.postgres.PostgresStore",
    "mysql": "pgjobs.stores.mysql.MySQLStore",
    "sqlite": "pgjobs.stores.sqlite.SQLiteStore",
}


def database_store(alias="default", **options):
    """The store for Django database ``alias``, chosen by its vendor."""
    from ..checks import require_app

    require_app()  # not "relation pgjobs_job does not exist" at the first enqueue
    try:
        vendor = connections[alias].vendor
    except Exception as exc:  # ConnectionDoesNotExist and friends
        raise InvalidBackend(f"DatabaseBackend: no database {alias!r}: {exc}") from None
    if vendor not in DATABASE_STORES:
        raise InvalidBackend(
            f"DatabaseBackend does not support {vendor} databases; "
            f"it supports {', '.join(sorted(DATABASE_STORES))}"
        )
    return import_string(DATABASE_STORES[vendor])(alias, **options)
