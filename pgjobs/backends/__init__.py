"""The job backends; ``PGJOBS["BACKEND"]`` names one of these (or your own).

Each is importable from here, built lazily so that importing one backend does
not import the others' dependencies (redis-py, Celery, a database driver).
"""

_BACKENDS = {
    "ImmediateBackend": "pgjobs.backends.immediate",
    "DatabaseBackend": "pgjobs.backends.database",
    "RedisBackend": "pgjobs.backends.redis",
    "CeleryBackend": "pgjobs.backends.celery",
}

__all__ = list(_BACKENDS)


def __getattr__(name):
    if name in _BACKENDS:
        import importlib

        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module 'pgjobs.backends' has no attribute {name!r}")
