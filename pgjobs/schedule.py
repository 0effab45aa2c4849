"""Scheduled jobs: the ``SCHEDULE`` setting, the ticks of each schedule, and the
``Scheduler`` that every worker and drain runs to enqueue each due tick once.

::

    PGJOBS = {
        "BACKEND": "pgjobs.backends.DatabaseBackend",
        "SCHEDULE": {
            "nightly-report": {"func": "reports.jobs.nightly", "cron": "0 3 * * *"},
            "sync": {"func": "shop.jobs.sync", "every": timedelta(minutes=5), "queue": "sync"},
        },
    }

Ticks. ``cron`` (five fields, or ``@hourly``, ``@daily``, ...) is read on the wall
clock of ``TIME_ZONE`` with croniter (``pip install "pgjobs[schedule]"``). Across
daylight saving changes, a wall-clock time the clock skips (spring forward) runs
once, at the moment the clock jumps; a time the clock shows twice (fall back)
runs once, at its first occurrence, unless the minute or hour field starts with
``*`` (``*/15 * * * *``, ``0 * * * *``): those run at both, as the hours still
pass (Vixie cron's rule). ``every`` (a ``timedelta``) counts real time from the
Unix epoch, so ``every=timedelta(hours=1)`` ticks on the hour (UTC), whatever
the clocks do.

Exactly once. Each schedule has a record in the store (``pgjobs_schedule`` in
the database stores): the time through which its ticks are settled. A worker
enqueues a due tick and moves that time forward in one compare-and-set
transaction, so however many workers and drains race, on however many hosts,
one wins and the others find nothing left to do; a tick whose job has long
finished is never enqueued again. The store refuses a tick later than its own
clock, so a host whose clock runs fast can neither enqueue early nor move the
record ahead. A schedule seen for the first time starts from that moment: ticks
before it are not run.

When. Ticks are enqueued when they are due, not ahead (a config change cannot
leave stale deferred jobs behind); the job's ``run_at`` is its tick, so it never
runs early by the store's clock. Workers look at each tick, and every 10 s.

Catch-up. After downtime (no worker or drain ran), a schedule runs once, for its
latest missed tick, not once per missed tick. ``"catch_up": N`` runs up to the
N latest missed ticks (N <= 1000); ``"catch_up": "all"`` runs every missed tick,
oldest first, 100 per pass. The same policy applies when one pass finds several
ticks due (a schedule more frequent than passes).
"""

import dataclasses
import datetime
import json
import logging
import math
import re

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from .atomic import atomic_marker
from .backends.base import validate_priority, validate_timeout
from .exceptions import InvalidJob
from .serialization import encode_arguments, function_path

logger = logging.getLogger("pgjobs")

UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = datetime.timedelta(microseconds=1)
SECOND = datetime.timedelta(seconds=1)

ENTRY_KEYS = (
    "func",
    "cron",
    "every",
    "args",
    "kwargs",
    "priority",
    "queue",
    "max_attempts",
    "timeout",
    "catch_up",
)
JOB_OPTIONS = ("priority", "queue", "max_attempts", "timeout")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME_LENGTH = 100
CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: Ticks one pass enqueues for a schedule with ``"catch_up": "all"``.
CATCH_UP_BATCH = 100
#: The largest number ``"catch_up"`` takes.
MAX_CATCH_UP = 1000
#: Seconds between scheduler passes in a worker, at most: passes happen at each
#: tick; this bounds the delay after the wall clock jumps or the host sleeps.
PASS_INTERVAL = 10.0
#: Seconds before a tick the store refused (its clock is behind ours) is tried again.
RETRY_INTERVAL = 1.0
#: Seconds before a schedule whose job cannot be built (InvalidJob) is tried again.
RETRY_AFTER_ERROR = 60.0
#: Longer than any backward clock change (DST or other) in the tz database since 1970.
FOLD_WINDOW = datetime.timedelta(hours=3)


# -- ticks ----------------------------------------------------------------------------


class EveryTicks:
    """Ticks every ``every`` of real time, counted from the Unix epoch."""

    wildcard = False

    def __init__(self, every):
        self.step = every // MICROSECOND  # whole microseconds: exact arithmetic

    def after(self, instant):
        """The first tick later than ``instant``."""
        return EPOCH + ((instant - EPOCH) // MICROSECOND // self.step + 1) * self.step * MICROSECOND

    def at_or_before(self, instant):
        """The last tick not later than ``instant``."""
        return EPOCH + ((instant - EPOCH) // MICROSECOND // self.step) * self.step * MICROSECOND


class CronTicks:
    """Ticks of a cron expression on the wall clock of ``tz``.

    croniter walks naive wall-clock times (plain calendar arithmetic, no time
    zone); this class maps each matching wall-clock time to the instant(s) it
    runs at, by the rules in the module docstring.
    """

    def __init__(self, expression, tz):
        from croniter import croniter

        self._croniter = croniter
        self.expression = expression
        self.tz = tz
        minute, hour = expression.split()[:2]
        #: Runs at both occurrences of a wall-clock time the clock shows twice.
        self.wildcard = minute.startswith("*") or hour.startswith("*")

    def _walls(self, start):
        return self._croniter(self.expression, start)

    def _wall(self, instant):
        return instant.astimezone(self.tz).replace(tzinfo=None)

    def _offset(self, instant):
        return instant.astimezone(self.tz).utcoffset()

    def _transition(self, before, after):
        """The first whole second in (before, after] with ``after``'s UTC offset
        (``before`` has another): where the clock changed."""
        target = self._offset(after)
        low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
        while high - low > 1:
            middle = (low + high) // 2
            if self._offset(datetime.datetime.fromtimestamp(middle, UTC)) == target:
                high = middle
            else:
                low = middle
        return datetime.datetime.fromtimestamp(high, UTC)

    def _first(self, wall):
        """The instant a matching wall-clock time runs at first: itself; its first
        occurrence when the clock shows it twice; the jump when the clock skips it."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if self._wall(first) == wall:
            return first
        # Skipped: fold=1 reads it with the offset after the change, an instant
        # before the jump; fold=0 with the offset before, an instant after it.
        return self._transition(wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC), first)

    def _fold(self, start, end):
        """The clock going back between ``start`` and ``end`` (at most
        ``2 * FOLD_WINDOW`` apart): ``(when, first repeated wall time, length)``,
        or None."""
        before, after = self._offset(start), self._offset(end)
        if before <= after:
            return None
        when = self._transition(start, end)
        return when, self._wall(when), before - after

    def _next_wall(self, walls):
        from croniter import CroniterBadDateError

        try:
            return walls.get_next(datetime.datetime)
        except CroniterBadDateError:  # no match for decades
            return None

    def _prev_wall(self, walls):
        from croniter import CroniterBadDateError

        try:
            return walls.get_prev(datetime.datetime)
        except CroniterBadDateError:
            return None

    def after(self, instant):
        """The first tick later than ``instant`` (None: none for decades)."""
        walls = self._walls(self._wall(instant))
        while True:
            wall = self._next_wall(walls)
            if wall is None:
                return None
            tick = self._first(wall)
            if tick > instant:
                break
        if self.wildcard:
            # A second occurrence can come first only when the clock goes back near ``instant``.
            fold = self._fold(instant - FOLD_WINDOW, instant + FOLD_WINDOW)
            if fold is not None:
                when, start, length = fold
                walls = self._walls(start - SECOND)
                wall = self._next_wall(walls)
                while wall is not None and wall < start + length:
                    second = when + (wall - start)
                    if second > instant:
                        tick = min(tick, second)
                        break
                    wall = self._next_wall(walls)
        return tick

    def at_or_before(self, instant):
        """The last tick not later than ``instant`` (None: none for decades)."""
        local = instant.astimezone(self.tz)
        start = local.replace(tzinfo=None)
        if local.fold:
            # In the second pass: the whole first pass is earlier than ``instant``.
            _, first_repeated, length = self._fold(instant - FOLD_WINDOW, instant + SECOND)
            start = first_repeated + length
        walls = self._walls(start + SECOND)
        while True:
            wall = self._prev_wall(walls)
            if wall is None:
                return None
            tick = self._first(wall)
            if tick <= instant:
                break
        if self.wildcard:
            # A second occurrence is later only if the clock went back after ``tick``.
            fold = self._fold(tick, min(instant, tick + FOLD_WINDOW))
            if fold is not None:
                when, start, length = fold
                last = start + min(length - MICROSECOND, instant - when)
                walls = self._walls(last + MICROSECOND)
                wall = self._prev_wall(walls)
                if wall is not None and wall >= start:
                    tick = max(tick, when + (wall - start))
        return tick


# -- the setting --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something wrong with ``SCHEDULE``, for ``manage.py check`` (``pgjobs/checks.py``)."""

    id: str
    message: str
    hint: str | None = None
    warning: bool = False


@dataclasses.dataclass
class Schedule:
    """One entry of ``SCHEDULE``, validated."""

    name: str
    func: str
    args: list
    kwargs: dict
    options: dict  # job options given: priority, queue, max_attempts, timeout
    catch_up: object  # "latest", "all" or a number of ticks
    ticks: object  # CronTicks or EveryTicks
    cron: str | None = None
    every: datetime.timedelta | None = None

    def describe(self):
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.ticks.tz})"
        return f"every {self.every}"

    def next_tick(self, after):
        return self.ticks.after(after)

    def due_ticks(self, settled, now):
        """The ticks to enqueue now, oldest first, when those up to ``settled`` are
        settled: the due ones the catch-up policy keeps."""
        ticks = []
        if self.catch_up == "all":
            tick = self.ticks.after(settled)
            while tick is not None and tick <= now and len(ticks) < CATCH_UP_BATCH:
                ticks.append(tick)
                tick = self.ticks.after(tick)
            return ticks
        limit = 1 if self.catch_up == "latest" else self.catch_up
        tick = self.ticks.at_or_before(now)
        while tick is not None and tick > settled and len(ticks) < limit:
            ticks.append(tick)
            tick = self.ticks.at_or_before(tick - MICROSECOND)
        return ticks[::-1]

    def unique_key(self, tick):
        return f"schedule:{self.name}:{tick.astimezone(UTC).isoformat()}"


def parse_schedules(raw, backend=None, tz=None, setting="PGJOBS"):
    """Validate a ``SCHEDULE`` setting: return ``(schedules, problems)``.

    ``backend`` (the configured one) checks queues and other job options;
    ``tz`` defaults to ``TIME_ZONE``; ``setting`` names the setting in messages.
    Invalid entries are left out of ``schedules``.
    """
    if not isinstance(raw, dict):
        return [], [
            Problem(
                "pgjobs.E007",
                f"{setting}['SCHEDULE'] must be a dict of {{name: {{'func': ..., 'cron': ...}}}}, "
                f"not {type(raw).__name__}.",
            )
        ]
    tz = tz or timezone.get_default_timezone()
    schedules, problems = [], []
    for name, entry in raw.items():
        found = []
        schedule = _parse_entry(setting, name, entry, backend, tz, found)
        problems += found
        if schedule is not None and not any(not p.warning for p in found):
            schedules.append(schedule)
    problems += _duplicates(setting, raw)
    return schedules, problems


def _parse_entry(setting, name, entry, backend, tz, problems):
    where = f"{setting}['SCHEDULE'][{name!r}]"
    if not _entry_shaped(setting, name, entry, where, problems):
        return None
    func = _parse_func(where, entry, problems)
    ticks, cron, every = _parse_timing(where, entry, tz, problems)
    catch_up = _parse_catch_up(where, entry.get("catch_up", "latest"), problems)
    args, kwargs = entry.get("args", []), entry.get("kwargs", {})
    options = {key: entry[key] for key in JOB_OPTIONS if key in entry}
    try:
        encode_arguments(args, kwargs)
        validate_priority(options.get("priority"))
        validate_timeout(options.get("timeout"))
        if backend is not None:
            backend.validate_queue(options.get("queue"))
            backend.validate_max_attempts(options.get("max_attempts"))
    except InvalidJob as exc:
        problems.append(Problem("pgjobs.E010", f"{where}: {exc}."))
        return None
    if func is None or ticks is None or catch_up is None:
        return None
    if backend is not None:
        try:
            backend.validate_atomic(atomic_marker(func))
        except InvalidJob as exc:
            problems.append(
                Problem(
                    "pgjobs.E020",
                    f"{where}['func'] is marked @atomic_job, which this backend refuses: {exc}.",
                    hint="Use pgjobs.backends.DatabaseBackend, or remove @atomic_job from it.",
                )
            )
            return None
    return Schedule(
        name=name,
        func=func,
        args=list(args),
        kwargs=dict(kwargs),
        options=options,
        catch_up=catch_up,
        ticks=ticks,
        cron=cron,
        every=every,
    )


def _entry_shaped(setting, name, entry, where, problems):
    """Whether the entry can be read: a valid name and a dict. Unknown keys are a
    problem too, recorded, but the rest of the entry is still read."""
    if not isinstance(name, str) or not (
        NAME_PATTERN.fullmatch(name) and len(name) <= MAX_NAME_LENGTH
    ):
        problems.append(
            Problem(
                "pgjobs.E007",
                f"{setting}['SCHEDULE']: schedule name {name!r} is not valid.",
                hint=f"Use letters, digits, '_', '-' and '.', starting with a letter or digit, "
                f"at most {MAX_NAME_LENGTH} characters.",
            )
        )
        return False
    if not isinstance(entry, dict):
        problems.append(
            Problem(
                "pgjobs.E007",
                f"{where} must be a dict like {{'func': 'myapp.jobs.nightly', "
                f"'cron': '0 3 * * *'}}, not {type(entry).__name__}.",
            )
        )
        return False
    unknown = sorted(set(entry) - set(ENTRY_KEYS), key=str)
    if unknown:
        problems.append(
            Problem(
                "pgjobs.E007",
                f"{where} has unknown key(s) {', '.join(map(str, unknown))}.",
                hint=f"Keys are {', '.join(ENTRY_KEYS)}.",
            )
        )
    return True


def _parse_func(where, entry, problems):
    if "func" not in entry:
        problems.append(
            Problem(
                "pgjobs.E008",
                f"{where} has no 'func'.",
                hint="Add 'func': the dotted path of a module-level function, like "
                "'myapp.jobs.nightly'.",
            )
        )
        return None
    try:
        return function_path(entry["func"])
    except InvalidJob as exc:
        try:
            function_path(entry["func"], check_modules=False)
        except InvalidJob as reason:
            problem = Problem(
                "pgjobs.E008",
                f"{where}['func']: {reason}",
                hint="Give the dotted path of a module-level function that workers can import.",
            )
        else:  # a job function, but in a module workers refuse jobs from
            problem = Problem(
                "pgjobs.E014",
                f"{where}['func']: {exc}",
                hint="Add the function's module to PGJOBS['JOB_MODULES'], or schedule a "
                "function of your own apps.",
            )
        problems.append(problem)
        return None


def _parse_timing(where, entry, tz, problems):
    """``(ticks, cron, every)``, or Nones after recording the problem."""
    if ("cron" in entry) == ("every" in entry):
        problems.append(
            Problem(
                "pgjobs.E009",
                f"{where} needs exactly one of 'cron' and 'every'"
                + (", not both." if "cron" in entry else "."),
                hint="'cron': '0 3 * * *' (minute hour day month weekday, in TIME_ZONE) or "
                "'every': timedelta(minutes=5).",
            )
        )
        return None, None, None
    if "every" in entry:
        return _parse_every(where, entry["every"], problems)
    return _parse_cron(where, entry["cron"], tz, problems)


def _parse_every(where, every, problems):
    """``_parse_timing`` for an ``every`` entry."""
    if not isinstance(every, datetime.timedelta) or every < MICROSECOND:
        problems.append(
            Problem(
                "pgjobs.E009",
                f"{where}['every'] must be a positive datetime.timedelta, not {every!r}.",
                hint="For example 'every': timedelta(minutes=5).",
            )
        )
        return None, None, None
    return EveryTicks(every), None, every


def _parse_cron(where, cron, tz, problems):
    """``_parse_timing`` for a ``cron`` entry."""
    none = None, None, None
    if not isinstance(cron, str):
        problems.append(
            Problem(
                "pgjobs.E009",
                f"{where}['cron'] must be a string, not {cron!r}.",
                hint="For example 'cron': '0 3 * * *' (03:00 every day, in TIME_ZONE).",
            )
        )
        return none
    try:
        from croniter import CroniterError, croniter
    except ImportError:
        problems.append(
            Problem(
                "pgjobs.E009",
                f"{where} uses 'cron', which needs croniter, and it is not installed.",
                hint='pip install "pgjobs[schedule]"',
            )
        )
        return none
    expression = " ".join(CRON_ALIASES.get(cron.strip().lower(), cron).split())
    if len(expression.split()) != 5:
        problems.append(
            Problem(
                "pgjobs.E009",
                f"{where}['cron'] {cron!r} does not have five fields.",
                hint="Use 'minute hour day-of-month month day-of-week' or one of "
                f"{', '.join(CRON_ALIASES)}. For seconds, use 'every'.",
            )
        )
        return none
    try:
        croniter.expand(expression, strict=True)
    except (CroniterError, ValueError, TypeError) as exc:
        problems.append(
            Problem(
                "pgjobs.E009",
                f"{where}['cron'] {cron!r} is not a valid cron expression: {exc}.",
                hint="Five fields: minute (0-59), hour (0-23), day of month (1-31), "
                "month (1-12), day of week (0-6, Sunday is 0); see crontab(5).",
            )
        )
        return none
    return CronTicks(expression, tz), cron, None


def _parse_catch_up(where, value, problems):
    if value in ("latest", "all"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CATCH_UP:
        return value
    problems.append(
        Problem(
            "pgjobs.E010",
            f"{where}['catch_up'] is {value!r}.",
            hint=f"Use 'latest' (the default: run the latest missed tick), 'all', or a number "
            f"of missed ticks from 1 to {MAX_CATCH_UP}.",
        )
    )
    return None


def _duplicates(setting, raw):
    problems = []
    by_folded = {}
    for name in raw:
        if isinstance(name, str):
            by_folded.setdefault(name.casefold(), []).append(name)
    for names in by_folded.values():
        if len(names) > 1:
            problems.append(
                Problem(
                    "pgjobs.E011",
                    f"{setting}['SCHEDULE']: schedule names {', '.join(map(repr, names))} "
                    "differ only in case.",
                    hint="Rename all but one: some databases (MySQL, MariaDB) compare names "
                    "without case, so these schedules would share one record and one of "
                    "them would not run.",
                )
            )
    same_job = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        func = entry.get("func")
        func = func if isinstance(func, str) else getattr(func, "__qualname__", repr(func))
        cron = entry.get("cron")
        cron = (
            " ".join(CRON_ALIASES.get(cron.strip().lower(), cron).split()).lower()
            if isinstance(cron, str)
            else cron
        )
        key = (
            func,
            json.dumps(
                [entry.get("args", []), entry.get("kwargs", {})], sort_keys=True, default=repr
            ),
            entry.get("queue"),
            cron,
            entry.get("every"),
        )
        same_job.setdefault(repr(key), []).append(name)
    for names in same_job.values():
        if len(names) > 1:
            problems.append(
                Problem(
                    "pgjobs.W002",
                    f"{setting}['SCHEDULE']: schedules {', '.join(map(repr, names))} enqueue "
                    "the same job at the same times, so it runs once for each of them.",
                    hint="Remove all but one.",
                    warning=True,
                )
            )
    return problems


#: Callables an app registered with ``add_app_schedules``.
_app_schedules = []


def add_app_schedules(entries):
    """Let an installed app add schedules: ``entries()`` returns ``{name: entry}``
    (entries as in ``SCHEDULE``) and is read each time the schedules are, so it
    can follow the settings. An entry of ``SCHEDULE`` with the same name wins,
    so a site can change an app's schedule or move it. Call it from
    ``AppConfig.ready()``; registering the same callable twice adds it once."""
    if entries not in _app_schedules:
        _app_schedules.append(entries)


def app_schedules():
    """The entries the installed apps add (``add_app_schedules``)."""
    merged = {}
    for entries in _app_schedules:
        merged.update(entries() or {})
    return merged


def configured_schedules():
    """The schedules of the ``SCHEDULE`` setting, with those the installed apps
    add; ``ImproperlyConfigured`` when it has errors (``manage.py check`` lists
    them)."""
    from .conf import jobs_settings, setting_name
    from .handler import get_backend

    raw = jobs_settings()["SCHEDULE"]
    extra = app_schedules()
    if extra and (isinstance(raw, dict) or not raw):
        raw = {**extra, **(raw or {})}
    if not raw:
        return []
    schedules, problems = parse_schedules(raw, get_backend(), setting=setting_name())
    errors = [p for p in problems if not p.warning]
    if errors:
        raise ImproperlyConfigured(
            "; ".join(f"{p.message} ({p.id})" for p in errors) + " Run manage.py check."
        )
    return schedules


# -- enqueuing -------------------------------------------------------------------------------


def _aware(value):
    """A time read from the store (or a clock), as an aware datetime."""
    if value is None or timezone.is_aware(value):
        return value
    return timezone.make_aware(value, timezone.get_default_timezone())


def _stored(value):
    """A time to write to the store: naive, in TIME_ZONE, when USE_TZ is off."""
    if settings.USE_TZ:
        return value
    return timezone.make_naive(value, timezone.get_default_timezone())


class Scheduler:
    """Enqueues the due ticks of ``schedules`` through ``backend``'s store.

    Every worker and drain runs one (``enqueue_due`` at each tick, and every
    ``PASS_INTERVAL`` seconds); the store settles races between them.
    ``clock`` returns the current time; tests pass a fake one. It remembers,
    per schedule, the next tick after the last settled one it saw, and asks
    the store only when that is due.
    """

    def __init__(self, backend, schedules, clock=None):
        self.backend = backend
        self.store = backend.get_store()
        self.schedules = list(schedules)
        self.clock = clock or timezone.now
        self.enqueued = 0  # jobs this scheduler enqueued
        self._look_at = {}  # name -> when to look at it again (None: never)

    def periodic(self):
        """The ``(interval, callable)`` pair a ``Worker`` runs (its ``periodic`` argument)."""
        return (PASS_INTERVAL, self.enqueue_due)

    def enqueue_due(self, now=None):
        """Enqueue every due tick (as the catch-up policy says); return the
        seconds until the next tick (None: no tick to wait for)."""
        now = _aware(now or self.clock())
        due = [s for s in self.schedules if self._due(s.name, now)]
        if due:
            states = self.store.get_schedules([s.name for s in due])
            for schedule in due:
                self._settle(schedule, states.get(schedule.name), now)
        upcoming = [when for when in self._look_at.values() if when is not None]
        if not upcoming:
            return None
        return max(0.0, (min(upcoming) - now).total_seconds())

    def _due(self, name, now):
        if name not in self._look_at:
            return True
        when = self._look_at[name]
        return when is not None and when <= now

    def _settle(self, schedule, state, now):
        name = schedule.name
        for _ in range(5):
            if state is None:
                # First sight: its ticks count from now (or from the store's clock,
                # if that is behind ours).
                self.store.create_schedule(name, _stored(now))
                state = self.store.get_schedules([name]).get(name)
                continue
            settled = _aware(state.last_tick)
            ticks = schedule.due_ticks(settled, now)
            if not ticks:
                self._look_at[name] = schedule.next_tick(settled)
                return
            try:
                specs = [self._spec(schedule, tick) for tick in ticks]
            except InvalidJob as exc:
                logger.error(
                    "pgjobs: schedule %s cannot enqueue %s: %s; trying again in %g s",
                    name,
                    schedule.func,
                    exc,
                    RETRY_AFTER_ERROR,
                )
                self._look_at[name] = now + datetime.timedelta(seconds=RETRY_AFTER_ERROR)
                return
            jobs = self.store.advance_schedule(name, state.last_tick, _stored(ticks[-1]), specs)
            if jobs is not None:
                self.enqueued += len(jobs)
                for tick, job in zip(ticks, jobs, strict=True):
                    logger.info(
                        "schedule %s: job %s %s enqueued for %s",
                        name,
                        job.id,
                        schedule.func,
                        timezone.localtime(tick).isoformat(),
                    )
                self._look_at[name] = schedule.next_tick(ticks[-1])
                return
            fresh = self.store.get_schedules([name]).get(name)
            if fresh is not None and fresh.last_tick == state.last_tick:
                # Nobody else moved it: the store's clock has not reached the tick.
                logger.debug("pgjobs: schedule %s: the store's clock is behind %s", name, ticks[-1])
                self._look_at[name] = now + datetime.timedelta(seconds=RETRY_INTERVAL)
                return
            state = fresh  # another worker got there first: look again
        self._look_at[name] = now + datetime.timedelta(seconds=RETRY_INTERVAL)

    def _spec(self, schedule, tick):
        return self.backend.prepare(
            schedule.func,
            schedule.args,
            schedule.kwargs,
            when=tick,
            unique_key=schedule.unique_key(tick),
            **schedule.options,
        )

    def status(self, now=None):
        """Per schedule: what and when, its last run (the latest tick enqueued),
        its next run, and since when a tick has been waiting (None: on time)."""
        now = _aware(now or self.clock())
        states = self.store.get_schedules([s.name for s in self.schedules])
        rows = []
        for schedule in self.schedules:
            state = states.get(schedule.name)
            settled = _aware(state.last_tick) if state is not None else now
            waiting = schedule.next_tick(settled)
            rows.append(
                {
                    "name": schedule.name,
                    "func": schedule.func,
                    "when": schedule.describe(),
                    "last_run": _aware(state.last_run) if state is not None else None,
                    "next_run": schedule.next_tick(max(settled, now)),
                    "overdue_since": waiting if waiting is not None and waiting <= now else None,
                }
            )
        return rows


def configured_scheduler(backend):
    """A ``Scheduler`` for the ``SCHEDULE`` setting, or None when there is none."""
    schedules = configured_schedules()
    return Scheduler(backend, schedules) if schedules else None
