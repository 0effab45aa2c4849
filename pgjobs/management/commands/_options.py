"""Argument parsing and logging set-up shared by ``pgjobs_worker`` and ``pgjobs_drain``
(the worker itself comes from ``pgjobs.worker.build_worker``)."""

import argparse
import gc
import logging
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from ...exceptions import StoreNotSetUp
from ...handler import get_backend
from ...schedule import configured_scheduler
from ...worker import DEFAULT_PREFETCH, MAX_CONCURRENCY, build_worker


class WorkerCommand(BaseCommand):
    """A command that works the configured store (``pgjobs_worker``, ``pgjobs_drain``).

    Django's system checks run before ``handle`` and may reach the database (on
    MySQL, Django 6 asks the server about the models' fields): a database that
    does not exist, or a server that cannot be reached, must read as one line
    there too, not as a traceback."""

    def check(self, *args, **kwargs):
        try:
            return super().check(*args, **kwargs)
        except DatabaseError as exc:
            raise CommandError(f"pgjobs: {_database_problem(exc)}") from None


def _database_problem(exc):
    """One sentence on a database error met before the worker started."""
    from ...stores.base import one_line

    backend = get_backend()
    problem = backend.store.setup_problem(exc) if backend.stores_jobs else None
    if problem is not None:
        return problem[0]
    return f"the database cannot be reached for Django's system checks: {one_line(exc)}"


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
        help="Jobs run at the same time in this process (default 1, at most "
        f"{MAX_CONCURRENCY:,}: run more processes for more). Sync jobs each take a "
        "thread while they run; async jobs take none.",
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
    parser.add_argument(
        "--hostname",
        type=hostname_argument,
        default=None,
        metavar="NAME",
        help="The host name this worker reports (pgjobs_status, the admin, its worker id). "
        "Default: the machine's; set it where containers share one.",
    )


def hostname_argument(value):
    """``--hostname``: printable, no colon (worker ids are host:pid:random), at most 60."""
    if (
        not value
        or len(value) > 60
        or ":" in value
        or not value.isprintable()
        or value != value.strip()
    ):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a host name: give 1 to 60 printable characters, no colon "
            "and no surrounding spaces, like 'web-3'"
        )
    return value


def worker_from_options(options, **kwargs):
    """``build_worker`` with the command's options, or a one-line CommandError."""
    try:
        return build_worker(
            queues=options["queues"],
            concurrency=options["concurrency"],
            prefetch=options["prefetch"],
            hostname=options["hostname"],
            **kwargs,
        )
    except (ImproperlyConfigured, ValueError) as exc:
        raise CommandError(str(exc)) from None


def run_worker(worker, own_process=False):
    """``worker.run()``, or a one-line CommandError when its store is not set up
    in a way waiting cannot fix (``StoreNotSetUp``: no such database).

    ``own_process``: the worker is what this process is for (the command run from
    the command line, not ``call_command`` inside a longer-lived process), so its
    start-up objects are frozen first (``freeze_start_up_objects``)."""
    if own_process:
        freeze_start_up_objects()
    try:
        return worker.run()
    except StoreNotSetUp as exc:
        raise CommandError(f"pgjobs: {exc}") from None


def freeze_start_up_objects():
    """Collect garbage once, then move every object alive now out of the cyclic
    garbage collector's sight (``gc.freeze``): the modules, classes, settings and
    caches that start-up made and the worker keeps for its whole life. Left in
    the collector's oldest generation, they are walked again at every full
    collection, and the short-lived objects of every job a worker runs keep
    setting those off: about 1 µs of CPU per no-op job, a twelfth of the
    worker's, and a quicker exit (``benchmarks/throughput_floor.py``, the
    worker's CPU between its first job and its last). Objects made from here
    on are collected as ever."""
    gc.collect()
    gc.freeze()


def workable_backend():
    """The configured backend, if it stores jobs, or a CommandError that says what to do."""
    backend = get_backend()
    if not backend.stores_jobs:
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


def configure_logging(verbosity):
    """Show the worker's logs on stderr unless the site's LOGGING already handles
    ``pgjobs``: warnings at ``-v 0``, a summary of what ran every few seconds at
    ``-v 1`` (the default), a line per job (``pgjobs.jobs``) and debug at ``-v 2``.

    A level the site's LOGGING sets is kept at the default verbosity, except that
    per-job lines need ``-v 2`` or a level set for ``pgjobs.jobs`` itself."""
    logger = logging.getLogger("pgjobs")
    # pgjobs_drain passes verbosity - 1, so -v 0 arrives as -1: quiet, not DEBUG.
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or verbosity != 1:
        logger.setLevel(level)
    jobs_logger = logging.getLogger("pgjobs.jobs")
    if jobs_logger.level == logging.NOTSET or verbosity != 1:
        jobs_logger.setLevel(logging.INFO if verbosity >= 2 else logging.WARNING)
