"""System checks (``manage.py check``) for the pgjobs settings, with stable ids.

- ``pgjobs.E001``: ``BACKEND`` cannot be imported or is not a ``BaseJobBackend``.
- ``pgjobs.E002``: ``OPTIONS`` are not accepted by the backend.
- ``pgjobs.E003``: a queue name is unknown or invalid.
- ``pgjobs.E004``: ``SCHEDULE`` is set but the backend cannot schedule (no
  ``defer``, or no store for ``pgjobs_worker``/``pgjobs_drain`` to work).
- ``pgjobs.E005``: ``DatabaseBackend`` without ``"pgjobs"`` in ``INSTALLED_APPS``.
  The checks registered here run only when the app is installed, so this one is
  also reachable without it: ``DatabaseBackend.check()``, ``PgJobsBackend.check()``
  (``app_missing_checks``) and the first enqueue (``require_app``).
- ``pgjobs.E006``: the setting is not a dict or has unknown keys.
- ``pgjobs.E007``: ``SCHEDULE`` is not a dict of dicts, an entry has unknown
  keys, or a schedule name is invalid.
- ``pgjobs.E008``: a schedule's ``func`` is missing or cannot be imported.
- ``pgjobs.E009``: a schedule's timing: not exactly one of ``cron`` and ``every``,
  a bad cron expression, croniter not installed, or ``every`` not a timedelta.
- ``pgjobs.E010``: a schedule's job options (``args``, ``kwargs``, ``priority``,
  ``queue``, ``max_attempts``, ``timeout``) or ``catch_up`` are invalid.
- ``pgjobs.E011``: schedule names that differ only in case (a duplicate name on
  databases that compare names without case).
- ``pgjobs.E012``: ``RedisBackend`` without redis-py installed (``pgjobs[redis]``).
- ``pgjobs.E014``: ``JOB_MODULES`` is not a list of module names, or a schedule's
  ``func`` lies outside the job modules (workers would refuse its jobs).
- ``pgjobs.E018``: ``QUEUES`` is not a dict of queue name -> limits, or a limit
  is out of range (``concurrency`` a whole number >= 1, ``rate`` like ``"5/s"``).
- ``pgjobs.W001``: ``DatabaseBackend`` on a SQLite database that is not in WAL mode.
- ``pgjobs.W002``: two schedules enqueue the same job at the same times.
- ``pgjobs.W003``: autovacuum will not run on the PostgreSQL table of jobs (a
  database check: ``migrate`` and ``check --database ALIAS`` run it, and
  ``pgjobs_worker`` at start-up).
"""

import re

from django.apps import apps
from django.core import checks
from django.db import connections
from django.utils.module_loading import import_string

from .backends.base import BaseJobBackend
from .conf import TOP_LEVEL_KEYS, jobs_settings, setting_name
from .exceptions import InvalidBackend


@checks.register("pgjobs")
def check_settings(app_configs=None, **kwargs):
    from django.conf import settings

    name = setting_name()
    raw = getattr(settings, name, None) or {}
    if not isinstance(raw, dict):
        return [
            checks.Error(
                f"{name} must be a dict like {{'BACKEND': ..., 'OPTIONS': {{...}}}}.",
                id="pgjobs.E006",
            )
        ]
    messages = []
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        messages.append(
            checks.Error(
                f"{name} has unknown key(s) {', '.join(unknown)}.",
                hint=f"Keys are {', '.join(sorted(TOP_LEVEL_KEYS))}.",
                id="pgjobs.E006",
            )
        )
    config = jobs_settings()
    path = config["BACKEND"]
    try:
        backend_class = import_string(path) if isinstance(path, str) else None
    except ImportError as exc:
        backend_class = exc
    if not (isinstance(backend_class, type) and issubclass(backend_class, BaseJobBackend)):
        reason = (
            f"cannot be imported ({backend_class})"
            if isinstance(backend_class, Exception)
            else "is not a subclass of pgjobs.BaseJobBackend"
        )
        return messages + [
            checks.Error(
                f"{name}['BACKEND'] {path!r} {reason}.",
                hint="Use 'pgjobs.backends.DatabaseBackend', 'pgjobs.backends.ImmediateBackend' "
                "or the dotted path of your own BaseJobBackend subclass.",
                id="pgjobs.E001",
            )
        ]
    options = config["OPTIONS"]
    if isinstance(options, dict) and "QUEUES" in options:
        # Queue names first, on their own: telling them apart by the words of
        # the backend's message misfiled every unknown option as E003 (the
        # message lists the known ones, QUEUES among them).
        try:
            BaseJobBackend._queue_names(options["QUEUES"])
        except InvalidBackend as exc:
            return messages + [checks.Error(f"{name}['OPTIONS']: {exc}", id="pgjobs.E003")]
    try:
        backend = backend_class(options)
    except InvalidBackend as exc:
        return messages + [
            checks.Error(f"{name}['OPTIONS'] for {backend_class.__name__}: {exc}", id="pgjobs.E002")
        ]
    except Exception as exc:  # a third-party backend's own complaint
        return messages + [
            checks.Error(
                f"{name}['OPTIONS'] rejected by {backend_class.__name__}: {exc}", id="pgjobs.E002"
            )
        ]
    if config["SCHEDULE"]:
        messages.extend(schedule_checks(name, config["SCHEDULE"], backend))
    messages.extend(backend.check())
    return messages


@checks.register("pgjobs")
def check_job_modules(app_configs=None, **kwargs):
    """``pgjobs.E014`` for the setting itself; ``schedule_checks`` reports the
    ``SCHEDULE`` entries outside it."""
    from .conf import job_modules

    try:
        job_modules()
    except ValueError as exc:
        return [
            checks.Error(
                str(exc),
                hint="List the modules (and packages) whose functions may be jobs, or leave "
                "JOB_MODULES out for the installed apps' packages.",
                id="pgjobs.E014",
            )
        ]
    return []


@checks.register("pgjobs")
def check_queue_limits(app_configs=None, **kwargs):
    """``pgjobs.E018``: ``QUEUES`` (limits per queue) cannot be read."""
    from .queue_control import configured

    try:
        configured()
    except ValueError as exc:
        return [
            checks.Error(
                str(exc),
                hint="QUEUES maps queue names to limits, e.g. "
                "{'api': {'concurrency': 4, 'rate': '5/s'}}.",
                id="pgjobs.E018",
            )
        ]
    return []


@checks.register("pgjobs", checks.Tags.database)
def check_database(app_configs=None, databases=None, **kwargs):
    """The checks that query the database: only for the aliases Django asks about
    (none unless ``migrate`` or ``check --database``), as its own database checks."""
    if not databases:
        return []
    from .handler import get_backend

    try:
        backend = get_backend()
    except Exception:
        return []  # check_settings says what is wrong with the setting
    if backend.jobs_database not in databases:
        return []
    return upkeep_checks(backend)


def upkeep_checks(backend):
    """``pgjobs.W003``: what keeps the store from reclaiming finished jobs' space.
    Silent when the store cannot be asked (unreachable, or not migrated yet: the
    worker and ``migrate`` say so themselves)."""
    try:
        problems = backend.get_store().upkeep_problems()
    except Exception:
        return []
    if not problems:
        return []
    where = backend.jobs_database
    return [
        checks.Warning(
            f"Autovacuum will not reclaim finished jobs' rows"
            f"{f' in database {where!r}' if where else ''}: {'; '.join(problems)}. The "
            "pgjobs_job table and its indexes then grow for as long as jobs run, and "
            "claims slow down as they grow.",
            hint="Turn autovacuum on again (autovacuum = on and track_counts = on, "
            "PostgreSQL's defaults; ALTER TABLE pgjobs_job RESET (autovacuum_enabled)), "
            "or run VACUUM pgjobs_job every few minutes (cron).",
            id="pgjobs.W003",
        )
    ]


def schedule_checks(name, schedule, backend):
    """``pgjobs.E004``, ``E015`` and ``E007``-``E011``, ``W002``: ``SCHEDULE`` and the backend."""
    from .schedule import parse_schedules

    backend_name = type(backend).__name__
    if backend.schedules_elsewhere:
        return [
            checks.Error(
                f"{name}['SCHEDULE'] is set but {backend_name} leaves schedules to "
                f"{backend.schedules_elsewhere}: pgjobs would never run them.",
                hint=f"Move the entries to {backend.schedules_elsewhere} (they may call "
                "background.enqueue), or remove SCHEDULE.",
                id="pgjobs.E015",
            )
        ]
    reason = None
    if not backend.supports("defer"):
        reason = "it does not define defer()"
    elif not backend.stores_jobs:
        reason = "pgjobs_worker and pgjobs_drain, which enqueue scheduled jobs, cannot work it"
    if reason is not None:
        # The entries are checked once the backend can run them.
        return [
            checks.Error(
                f"{name}['SCHEDULE'] is set but {backend_name} cannot schedule jobs ({reason}).",
                hint="Use a backend that defers, such as pgjobs.backends.DatabaseBackend, "
                "or remove SCHEDULE.",
                id="pgjobs.E004",
            )
        ]
    _, problems = parse_schedules(schedule, backend, setting=name)
    return [
        (checks.Warning if problem.warning else checks.Error)(
            problem.message, hint=problem.hint, id=problem.id
        )
        for problem in problems
    ]


APP_MISSING = (
    "DatabaseBackend stores jobs in the pgjobs_job table, but 'pgjobs' is not in INSTALLED_APPS."
)
APP_MISSING_HINT = "Add 'pgjobs' to INSTALLED_APPS and run manage.py migrate."


def _needs_app(backend):
    """Whether ``backend`` keeps its jobs in the ``Job`` table while the app is missing."""
    return backend.jobs_database is not None and not apps.is_installed("pgjobs")


def app_missing_checks(backend=None):
    """``pgjobs.E005`` when ``backend`` (default: the configured one) keeps its jobs
    in the ``Job`` table and the app is not installed. Callable without the app (the
    tasks framework's check calls it)."""
    if backend is None:
        from .handler import get_backend

        try:
            backend = get_backend()
        except Exception:
            return []  # check_settings says what is wrong with the setting
    if not _needs_app(backend):
        return []
    return [checks.Error(APP_MISSING, hint=APP_MISSING_HINT, id="pgjobs.E005")]


def require_app():
    """Raise ``InvalidBackend`` (one line) instead of the database's "relation
    pgjobs_job does not exist" when the app is missing: called where a store for
    the ``Job`` table is built (``pgjobs.stores.database_store``)."""
    if apps.ready and not apps.is_installed("pgjobs"):
        raise InvalidBackend(f"{APP_MISSING} {APP_MISSING_HINT}")


def database_backend_checks(backend):
    """Checks specific to ``DatabaseBackend`` (called through ``backend.check()``)."""
    messages = app_missing_checks(backend)
    from django.conf import settings

    if backend.alias not in settings.DATABASES:
        messages.append(
            checks.Error(
                f"DatabaseBackend OPTIONS['DATABASE'] is {backend.alias!r}, which is not in "
                f"DATABASES ({', '.join(settings.DATABASES)}).",
                id="pgjobs.E002",
            )
        )
    elif connections[backend.alias].vendor == "sqlite":
        messages.extend(sqlite_wal_check(backend.alias))
    return messages


def sqlite_wal_check(alias):
    """``pgjobs.W001``: outside WAL mode, a worker's writes make web requests wait
    (and readers make the worker wait). Read from the file's header, so the
    check opens no connection and creates no file."""
    connection = connections[alias]
    init_command = connection.settings_dict.get("OPTIONS", {}).get("init_command", "")
    if connection.is_in_memory_db() or re.search(r"journal_mode\s*=\s*'?wal", init_command, re.I):
        return []
    try:
        with open(connection.settings_dict["NAME"], "rb") as file:
            header = file.read(20)
    except FileNotFoundError:
        header = b""  # created on first use, in rollback-journal mode
    except (OSError, TypeError, ValueError):
        return []  # not a file we can read (a URI, no permission): nothing to say
    if header[18:20] == b"\x02\x02":  # file format versions: 2 is WAL
        return []
    return [
        checks.Warning(
            f"DatabaseBackend stores jobs in the SQLite database {alias!r}, which is not in "
            "WAL mode: while a worker writes, web requests cannot read, and the reverse.",
            hint=f"Add 'init_command': 'PRAGMA journal_mode=WAL' to DATABASES[{alias!r}]"
            "['OPTIONS'] (with 'transaction_mode': 'IMMEDIATE'), or run `PRAGMA "
            "journal_mode=WAL;` once in `manage.py dbshell`: the mode is kept in the file.",
            id="pgjobs.W001",
        )
    ]
