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
- ``pgjobs.E017``: ``DatabaseBackend``'s ``LISTEN_DATABASE`` names no alias and is
  no DSN, names a database that is not PostgreSQL, or is set for a jobs database
  that is not PostgreSQL.
- ``pgjobs.W004``: LISTEN would go through a transaction pooler, which drops its
  notifications: the alias has Django's ``DISABLE_SERVER_SIDE_CURSORS`` (said by
  ``check``), or the server that answers the LISTEN connection is a pooler's
  (``check --database ALIAS``; workers say so at start and poll).
"""

import re

from django.apps import apps
from django.core import checks
from django.db import connections
from django.utils.module_loading import import_string

from .backends.base import BaseJobBackend
from .conf import TOP_LEVEL_KEYS, jobs_settings, setting_name
from .exceptions import InvalidBackend

#: Every system check pgjobs reports, by id: what it means. The reference page of the
#: documentation is made from this (``docs/reference/checks.md``), and
#: ``tests/test_docs.py`` fails when an id used in the code is missing here.
CATALOGUE = {
    "pgjobs.E001": "PGJOBS['BACKEND'] cannot be imported, or is not a BaseJobBackend subclass.",
    "pgjobs.E002": "The backend refuses PGJOBS['OPTIONS'] (an unknown or invalid option, or "
    "a DATABASE alias that is not in DATABASES).",
    "pgjobs.E003": "PGJOBS['OPTIONS']['QUEUES'] is not a list of valid queue names.",
    "pgjobs.E004": "SCHEDULE is set but the backend cannot defer jobs or store them for workers.",
    "pgjobs.E005": "A backend that stores jobs in the database is configured, but 'pgjobs' is "
    "not in INSTALLED_APPS.",
    "pgjobs.E006": "The PGJOBS setting is not a dict, or has unknown top-level keys.",
    "pgjobs.E007": "A SCHEDULE entry is malformed: its name, its shape or an unknown key.",
    "pgjobs.E008": "A SCHEDULE entry has no func, or its func is not a job (outside JOB_MODULES, "
    "not importable, not a module-level function).",
    "pgjobs.E009": "A SCHEDULE entry's timing is wrong: neither or both of cron and every, a bad "
    "cron expression, croniter missing, or an every below a microsecond.",
    "pgjobs.E010": "A SCHEDULE entry's job options or catch_up are invalid.",
    "pgjobs.E011": "Two SCHEDULE names differ only in case (MySQL would give them one record).",
    "pgjobs.E012": "RedisBackend is configured but redis-py is not installed.",
    "pgjobs.E014": "PGJOBS['JOB_MODULES'] is not a list of dotted module names, or a SCHEDULE "
    "entry's func lies outside the job modules.",
    "pgjobs.E015": "SCHEDULE is set with a backend whose jobs another system schedules "
    "(CeleryBackend: use Celery beat).",
    "pgjobs.E016": "CeleryBackend is configured but Celery is not installed.",
    "pgjobs.E017": "OPTIONS['LISTEN_DATABASE'] names no DATABASES alias and is no DSN, or names "
    "a database that is not PostgreSQL.",
    "pgjobs.E018": "PGJOBS['QUEUES'] is not a dict of queue name to limits like "
    "{'concurrency': 4, 'rate': '5/s'}, or a limit is out of range.",
    "pgjobs.E020": "A SCHEDULE entry's function is marked @atomic_job, but the backend cannot "
    "run atomic jobs (Redis, Celery, the in-memory backend).",
    "pgjobs.E022": "pgjobs.contrib.wagtail's WAGTAIL_* settings, or pgjobs.contrib.mail's real "
    "backend or mailer, are invalid (cannot be imported, a loop, a rendition spec Wagtail refuses).",
    "pgjobs.E101": "TASKS' PgJobsBackend has unknown OPTIONS.",
    "pgjobs.E102": "TASKS' PgJobsBackend is used with a pgjobs backend that does not store jobs "
    "for workers.",
    "pgjobs.E103": "TASKS' PgJobsBackend names queues that are not pgjobs queues.",
    "pgjobs.W001": "The jobs' SQLite database is not in WAL mode: workers and the site would "
    "block each other.",
    "pgjobs.W002": "Two SCHEDULE entries enqueue the same job at the same times.",
    "pgjobs.W004": "Workers would LISTEN through a transaction pooler (an alias with "
    "DISABLE_SERVER_SIDE_CURSORS; with `check --database`, a server that answers as a pooler): "
    "set OPTIONS['LISTEN_DATABASE'].",
    "pgjobs.W006": "Wagtail's scheduled publishing is on, but the backend cannot defer jobs for "
    "pgjobs workers (use DatabaseBackend or RedisBackend, or turn it off).",
    "pgjobs.W003": "Autovacuum will not run on pgjobs_job (the server's autovacuum or "
    "track_counts is off, or the table's autovacuum_enabled is false), so it grows without "
    "bound. A database check: migrate and `check --database default` run it.",
}


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
    backend_class = _backend_class(name, config["BACKEND"])
    if isinstance(backend_class, checks.Error):
        return messages + [backend_class]
    backend = _backend(name, backend_class, config["OPTIONS"])
    if isinstance(backend, checks.Error):
        return messages + [backend]
    if config["SCHEDULE"]:
        messages.extend(schedule_checks(name, config["SCHEDULE"], backend))
    messages.extend(backend.check())
    return messages


def _backend_class(name, path):
    """The ``BaseJobBackend`` subclass ``BACKEND`` names, or the E001 that says why not."""
    try:
        backend_class = import_string(path) if isinstance(path, str) else None
    except ImportError as exc:
        backend_class = exc
    if isinstance(backend_class, type) and issubclass(backend_class, BaseJobBackend):
        return backend_class
    reason = (
        f"cannot be imported ({backend_class})"
        if isinstance(backend_class, Exception)
        else "is not a subclass of pgjobs.BaseJobBackend"
    )
    return checks.Error(
        f"{name}['BACKEND'] {path!r} {reason}.",
        hint="Use 'pgjobs.backends.DatabaseBackend', 'pgjobs.backends.ImmediateBackend' "
        "or the dotted path of your own BaseJobBackend subclass.",
        id="pgjobs.E001",
    )


def _backend(name, backend_class, options):
    """The backend made with ``OPTIONS``, or the E003 (queues) or E002 it refuses them with."""
    if isinstance(options, dict) and "QUEUES" in options:
        # Queue names first, on their own: telling them apart by the words of
        # the backend's message misfiled every unknown option as E003 (the
        # message lists the known ones, QUEUES among them).
        try:
            BaseJobBackend._queue_names(options["QUEUES"])
        except InvalidBackend as exc:
            return checks.Error(f"{name}['OPTIONS']: {exc}", id="pgjobs.E003")
    try:
        return backend_class(options)
    except InvalidBackend as exc:
        return checks.Error(
            f"{name}['OPTIONS'] for {backend_class.__name__}: {exc}", id="pgjobs.E002"
        )
    except Exception as exc:  # a third-party backend's own complaint
        return checks.Error(
            f"{name}['OPTIONS'] rejected by {backend_class.__name__}: {exc}", id="pgjobs.E002"
        )


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
    return upkeep_checks(backend) + listen_pooler_checks(backend)


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
    else:
        messages.extend(listen_database_checks(backend))
    return messages


LISTEN_HINT = (
    "Set DatabaseBackend OPTIONS['LISTEN_DATABASE'] to a database alias (or DSN) that "
    "reaches PostgreSQL directly, used only for LISTEN; or to False to poll (idle "
    "workers then see new jobs within a second)."
)


def listen_database_checks(backend):
    """``pgjobs.E017`` and the settings' ``pgjobs.W004``: where workers LISTEN."""
    from django.conf import settings

    target = backend.listen_database
    jobs_vendor = connections[backend.alias].vendor
    if target is False or (target is None and jobs_vendor != "postgresql"):
        return []
    if jobs_vendor != "postgresql":
        return [
            checks.Error(
                f"DatabaseBackend OPTIONS['LISTEN_DATABASE'] is set, but the jobs' database "
                f"{backend.alias!r} is {jobs_vendor}: only PostgreSQL workers LISTEN.",
                hint="Remove LISTEN_DATABASE.",
                id="pgjobs.E017",
            )
        ]
    from .stores.postgres import listen_connection_params

    try:
        listen_connection_params(backend.alias, target)
    except ValueError as exc:
        return [
            checks.Error(f"DatabaseBackend OPTIONS: {exc}.", hint=LISTEN_HINT, id="pgjobs.E017")
        ]
    alias = backend.alias if target is None else target
    if alias not in settings.DATABASES:
        return []  # a DSN: only the server can say (check --database)
    if settings.DATABASES[alias].get("DISABLE_SERVER_SIDE_CURSORS"):
        return [
            checks.Warning(
                f"Workers would LISTEN through database {alias!r}, which "
                "DISABLE_SERVER_SIDE_CURSORS says is a transaction pooler (PgBouncer): "
                "it drops notifications, so workers will poll instead.",
                hint=LISTEN_HINT,
                id="pgjobs.W004",
            )
        ]
    return []


def listen_pooler_checks(backend):
    """The server's ``pgjobs.W004``: the LISTEN connection reaches a pooler (its
    process id is not the one the connection was told at start). A database
    check; silent when the settings' check already said so, or the server
    cannot be asked."""
    from .backends.database import DatabaseBackend

    if isinstance(backend, DatabaseBackend) and any(
        m.id in ("pgjobs.W004", "pgjobs.E017") for m in listen_database_checks(backend)
    ):
        return []
    try:
        store = backend.get_store()
        pooled = store.supports_listen and store.listens_through_pooler()
    except Exception:
        return []
    if not pooled:
        return []
    hint = LISTEN_HINT
    if isinstance(backend, DatabaseBackend) and backend.listen_database is None:
        from django.conf import settings

        if not settings.DATABASES[backend.alias].get("DISABLE_SERVER_SIDE_CURSORS"):
            hint += (
                f" And set DISABLE_SERVER_SIDE_CURSORS = True in DATABASES[{backend.alias!r}], "
                "as Django documents for PgBouncer: pgjobs then prepares no statements there, "
                "which a transaction pooler would mix up between its clients."
            )
    return [
        checks.Warning(
            "Workers would LISTEN through a connection pooler (the server that answers is "
            "not the one the connection was told), which drops notifications in transaction "
            "mode: workers will poll instead.",
            hint=hint,
            id="pgjobs.W004",
        )
    ]


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
