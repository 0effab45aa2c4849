"""The one registry of this process's pgjobs metrics, made at first use: the
view and ``pgjobs_metrics`` serve it, so counters keep counting between scrapes."""

import threading

from prometheus_client import CollectorRegistry

from ..handler import get_backend
from .collector import StoreCollector

_lock = threading.Lock()
_registry = None


def store():
    """The configured backend's store (looked up at each scrape: settings may
    change), or None for a backend that stores no jobs."""
    backend = get_backend()
    return backend.get_store() if backend.stores_jobs else None


def registry():
    global _registry
    with _lock:
        if _registry is None:
            made = CollectorRegistry(auto_describe=False)
            made.register(StoreCollector(store))
            _registry = made
        return _registry
