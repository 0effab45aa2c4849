"""Queue control across the fleet: pause a queue, cap how many of its jobs run at
once on every worker together, and how many start per period.

What an operator sets at run time (``background.pause_queue``, ``manage.py
pgjobs_queue``, the admins) is stored by the store, so every worker on every
host obeys it; ``PGJOBS["QUEUES"]`` gives limits in settings, which a stored
value overrides field by field (a stored None follows the setting). This
module holds what every store shares: reading and checking the values, the
decision of how many jobs a limited queue may start (``admit``), and the cache
through which a store knows, without a query per claim, whether a claim may
take the plain path (``ControlCache``).
"""

import dataclasses
import math
import re
import threading
import time

from .records import QueueControl

#: Stored values are read again after this many seconds: a pause or a new limit
#: reaches every worker within about this time (plus its next claim).
REFRESH_SECONDS = 1.0

MAX_QUEUE_NAME_LENGTH = 100
#: The fields an operator sets; None clears a stored value (the setting applies).
FIELDS = ("paused", "concurrency", "rate", "period")
SETTING_KEYS = ("concurrency", "rate")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smhd])\s*$")


def check_queue_name(name, argument="queue"):
    """``name`` if it can name a queue, else ``ValueError`` naming ``argument``."""
    if not isinstance(name, str) or not name or len(name) > MAX_QUEUE_NAME_LENGTH:
        raise ValueError(
            f"{argument} must be a queue name: a non-empty string of at most "
            f"{MAX_QUEUE_NAME_LENGTH} characters, not {name!r}"
        )
    return name


def check_concurrency(value, argument="concurrency"):
    """A concurrency limit: a whole number >= 1, or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{argument} must be a whole number >= 1 (jobs of the queue running at once "
            f"on all workers), or None for no limit; not {value!r}. To stop a queue, pause it."
        )
    return value


def parse_rate(value, argument="rate"):
    """``(starts, period seconds)`` from ``"5/s"``, ``"100/m"``, ``"10/30s"``,
    ``"1000/h"``, ``"5/d"`` or a ``(starts, seconds)`` pair; ``(None, None)`` for
    None (no limit). Anything else: ``ValueError`` naming ``argument``."""
    if value is None:
        return None, None
    hint = (
        f"{argument} must read like '5/s', '100/m', '10/30s', '1000/h' (starts per period) "
        f"or be a (starts, seconds) pair, with starts >= 1; not {value!r}"
    )
    if isinstance(value, str):
        match = _RATE.match(value)
        if match is None:
            raise ValueError(hint)
        count, number, unit = match.groups()
        try:
            period = (float(number) if number else 1.0) * _UNITS[unit]
        except ValueError:
            raise ValueError(hint) from None
        starts = int(count)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        starts, period = value
        if isinstance(starts, bool) or not isinstance(starts, int):
            raise ValueError(hint)
        if isinstance(period, bool) or not isinstance(period, (int, float)):
            raise ValueError(hint)
        period = float(period)
    else:
        raise ValueError(hint)
    if starts < 1 or not (0 < period < math.inf):
        raise ValueError(hint)
    return starts, period


def format_rate(control):
    """``"5/1s"``-like text of a control's rate, or ``"-"``."""
    if control.rate is None:
        return "-"
    return f"{control.rate}/{control.period:g}s"


def configured(setting=None):
    """``{queue: QueueControl}`` of the limits in ``PGJOBS["QUEUES"]``.

    ``{"api": {"concurrency": 4, "rate": "5/s"}}``. Raises ``ValueError`` naming
    the entry when the setting cannot be read (``pgjobs.E018``)."""
    from .conf import jobs_settings, setting_name

    if setting is None:
        setting = jobs_settings().get("QUEUES") or {}
    name = f"{setting_name()}['QUEUES']"
    if not isinstance(setting, dict):
        raise ValueError(
            f"{name} must be a dict of queue name -> limits like "
            f"{{'api': {{'concurrency': 4, 'rate': '5/s'}}}}, not {setting!r}"
        )
    controls = {}
    for queue, limits in setting.items():
        check_queue_name(queue, f"{name} key")
        where = f"{name}[{queue!r}]"
        if not isinstance(limits, dict):
            raise ValueError(f"{where} must be a dict with 'concurrency' and/or 'rate'")
        unknown = sorted(set(limits) - set(SETTING_KEYS))
        if unknown:
            raise ValueError(
                f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; "
                "keys are 'concurrency' and 'rate'"
            )
        concurrency = check_concurrency(limits.get("concurrency"), f"{where}['concurrency']")
        rate, period = parse_rate(limits.get("rate"), f"{where}['rate']")
        controls[queue] = QueueControl(queue, False, concurrency, rate, period)
    return controls


def effective(queue, stored, defaults):
    """The control in force for ``queue``: its stored values (a ``QueueControl``,
    or None), each None one replaced by the setting's (``defaults``)."""
    default = defaults.get(queue) or QueueControl(queue)
    if stored is None:
        return default
    concurrency = stored.concurrency if stored.concurrency is not None else default.concurrency
    if stored.rate is not None:
        rate, period = stored.rate, stored.period
    else:
        rate, period = default.rate, default.period
    return QueueControl(queue, bool(stored.paused), concurrency, rate, period)


def admit(control, running, window_start, window_count, now, wanted):
    """How many jobs of a limited queue a claim may start, and the rate window
    after it: ``(allowed, window_start, window_count)``; the caller adds the
    jobs it did claim to ``window_count``.

    ``running``: the queue's jobs running now on every worker; ``window_start``
    (seconds since the epoch, or None) and ``window_count``: the current rate
    window and the jobs started in it. A window lasts ``period`` seconds from
    the first start after the previous one ended: at most ``rate`` jobs start in
    each. Pure, so every store decides alike."""
    if control.paused:
        return 0, window_start, window_count
    allowed = max(0, wanted)
    if control.concurrency is not None:
        allowed = min(allowed, max(0, control.concurrency - running))
    if control.rate is not None:
        # A clock behind the window's start (another host's) only finds the
        # window still open: never more starts, only a later new window.
        if window_start is None or now >= window_start + control.period:
            window_start, window_count = now, 0
        allowed = min(allowed, max(0, control.rate - window_count))
    return allowed, window_start, window_count


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimPlan:
    """How a claim from steered queues goes: first each limited queue (by name,
    so that racing claims lock alike) with what ``admit`` allows, then the other
    queues as usual: ``include`` (None: every queue) but ``exclude``."""

    limited: tuple
    include: tuple | None
    exclude: tuple

    @property
    def others(self):
        """Whether any queue is left to claim from the plain way."""
        return self.include is None or bool(self.include)


class ControlCache:
    """A store's view of the controls in force, read through ``load`` (the store's
    ``queue_controls``) at most every ``REFRESH_SECONDS`` and merged with the
    setting. Used by the claiming thread and by whoever changes a control in
    this process (``forget``): the snapshot is swapped whole under its lock."""

    def __init__(self, load, refresh=REFRESH_SECONDS, clock=time.monotonic):
        self._load = load
        self._refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at = None
        self._controls = {}
        self._stored = frozenset()
        self._defaults = {}

    def forget(self):
        """Read the stored values again at the next use (they changed here)."""
        with self._lock:
            self._read_at = None

    def _snapshot(self):
        """``(controls, stored names, defaults)``, read again when stale. The
        read runs outside the lock, which is never held while waiting for
        anything else (the in-memory store reads under its own lock)."""
        with self._lock:
            read_at = self._read_at
            if read_at is not None and self._clock() - read_at < self._refresh:
                return self._controls, self._stored, self._defaults
        now = self._clock()
        defaults = configured()  # checked by pgjobs.E018: errors surface there too
        stored = self._load()
        controls = {
            queue: effective(queue, stored.get(queue), defaults) for queue in {*stored, *defaults}
        }
        with self._lock:
            self._controls, self._stored, self._defaults = controls, frozenset(stored), defaults
            self._read_at = now
        return controls, frozenset(stored), defaults

    def controls(self):
        """``{queue: QueueControl}`` in force, for queues with any control."""
        return dict(self._snapshot()[0])

    def defaults(self):
        """``{queue: QueueControl}`` of the setting, ``PGJOBS["QUEUES"]``."""
        return self._snapshot()[2]

    def unstored(self, queues):
        """Those of ``queues`` with no stored record (their limits are the setting's)."""
        stored = self._snapshot()[1]
        return [queue for queue in queues if queue not in stored]

    def plan(self, queues):
        """None when a claim from ``queues`` (None: every queue) may take the plain
        path, as it does while none of them is paused or limited; else a ``ClaimPlan``."""
        controls = self._snapshot()[0]
        if not controls:
            return None
        if queues:
            steered = [controls[q] for q in queues if q in controls and controls[q].steered]
        else:
            steered = [control for control in controls.values() if control.steered]
        if not steered:
            return None
        limited = tuple(
            sorted((c for c in steered if c.limited and not c.paused), key=lambda c: c.queue)
        )
        names = {control.queue for control in steered}
        if queues:
            include = tuple(q for q in dict.fromkeys(queues) if q not in names)
            return ClaimPlan(limited, include, ())
        return ClaimPlan(limited, None, tuple(sorted(names)))


# -- changing controls: what the API, the command and the admins call ---------------------

#: A limit not given to ``limit``: left as it is.
UNSET = object()


def pause(store, queue):
    """Pause ``queue`` on every worker of ``store``; the control in force."""
    store.set_queue_control(check_queue_name(queue), paused=True)
    return in_force(store, [queue])[queue]


def resume(store, queue):
    """Let ``queue`` run again on every worker of ``store``; the control in force."""
    store.set_queue_control(check_queue_name(queue), paused=False)
    return in_force(store, [queue])[queue]


def limit(store, queue, *, concurrency=UNSET, rate=UNSET):
    """Set (or with None, clear: the setting applies) the limits of ``queue``;
    every value is checked before anything is written. The control in force."""
    check_queue_name(queue)
    changes = {}
    if concurrency is not UNSET:
        changes["concurrency"] = check_concurrency(concurrency)
    if rate is not UNSET:
        changes["rate"], changes["period"] = parse_rate(rate)
    if not changes:
        raise ValueError("give concurrency and/or rate (None clears a limit)")
    store.set_queue_control(queue, **changes)
    return in_force(store, [queue])[queue]


def in_force(store, queues=None):
    """``{queue: QueueControl}`` in force now (stored values over the setting),
    for ``queues``, or every queue with a stored record or a setting."""
    stored = store.queue_controls()
    defaults = configured()
    names = queues if queues is not None else sorted({*stored, *defaults})
    return {queue: effective(queue, stored.get(queue), defaults) for queue in names}
