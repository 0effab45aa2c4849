"""Options shared by ``pgjobs_worker`` and ``pgjobs_drain``, and the backend they work."""

import logging
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from ...handler import get_backend
from ...schedule import configured_scheduler
from ._retention import Pruner

#: Enough to batch claims of short jobs hundreds at a time; the worker sizes its
#: prefetch to the jobs it sees (see Worker._prefetch_target), so long jobs are
#: not held back from other workers.
DEFAULT_PREFETCH = 200


def add_worker_arguments(parser):
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="Q",
        help="Work this queue (repeat for several). Default: every configured queue.",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="Jobs run at the same time in this process (default 1).",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        metavar="N",
        help="Claim up to N jobs beyond free slots when jobs are short, so that slots do "
        "not wait for the database; the worker holds only about two round trips' worth "
        f"of work (default {DEFAULT_PREFETCH}; 0 claims only for free slots).",
    )


def workable_backend():
    """The configured backend's store, or a CommandError that says what to do."""
    backend = get_backend()
    if not hasattr(backend, "get_store"):
        raise CommandError(
            f"{type(backend).__name__} runs jobs without a worker. Set PGJOBS['BACKEND'] to "
            "'pgjobs.backends.DatabaseBackend' (or RedisBackend) to work a queue."
        )
    return backend


def scheduler_for(backend):
    """The ``Scheduler`` of ``SCHEDULE`` (None without one), or a CommandError."""
    try:
        return configured_scheduler(backend)
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from None


def pruner_for(backend):
    """The ``Pruner`` that deletes finished jobs past ``KEEP_SUCCEEDED`` and
    ``KEEP_FAILED`` (None when none of them expire, or the store cannot)."""
    rules = backend.retention_rules() if hasattr(backend, "retention_rules") else []
    store = backend.get_store()
    if not rules or not hasattr(store, "prune_batch"):
        return None
    return Pruner(store, rules)


def queues_to_work(backend, requested):
    if not requested:
        return list(backend.queues) or None
    if backend.queues:
        unknown = [q for q in requested if q not in backend.queues]
        if unknown:
            raise CommandError(
                f"unknown queue {', '.join(unknown)}; configured queues are "
                f"{', '.join(backend.queues)}"
            )
    return requested


def check_concurrency(value):
    if value < 1:
        raise CommandError("--concurrency must be at least 1")
    return value


def configure_logging(verbosity):
    """Show job logs on stderr unless the site's LOGGING already handles ``pgjobs``."""
    logger = logging.getLogger("pgjobs")
    # pgjobs_drain passes verbosity - 1, so -v 0 arrives as -1: quiet, not DEBUG.
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or verbosity != 1:
        logger.setLevel(level)
