"""Job times as the admin pages show them, including times Python cannot hold.

A ``run_at`` of ``'infinity'`` or ``'-infinity'`` (PostgreSQL), or beyond the year
9999, cannot become a ``datetime``: psycopg raises ``DataError`` reading the row. The
Django admin and the Wagtail admin therefore read a job's times through
``with_shown_times``, which has the database clamp each time to what Python holds
(``<field>_shown``), and show the clamped ends as "never" and "any time". Future
times read as future ("in 3 days"), not as Wagtail's "just now".
"""

import datetime

from django.conf import settings
from django.db.models import Case, DateTimeField, F, Value, When
from django.db.models.functions import Cast
from django.utils import formats, timezone
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _

#: The job row's times the admin pages show.
TIME_FIELDS = ("run_at", "created_at", "started_at", "finished_at", "lease_expires_at")

#: The ends of what a ``datetime`` holds: a time at or past them is shown as endless.
LATEST = datetime.datetime.max.replace(tzinfo=datetime.UTC)
EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def ends():
    """``(EARLIEST, LATEST)`` in the kind the database's times are read in: naive
    under ``USE_TZ = False`` (comparing kinds is a TypeError, and MySQL refuses an
    aware parameter)."""
    if settings.USE_TZ:
        return EARLIEST, LATEST
    return EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None)


def shown_field(field):
    """The name of the annotation ``with_shown_times`` adds for ``field``."""
    return f"{field}_shown"


def with_shown_times(queryset, fields=TIME_FIELDS):
    """``queryset`` without ``fields`` loaded, each annotated clamped to
    ``EARLIEST``..``LATEST`` as ``<field>_shown``."""
    earliest, latest = ends()
    return queryset.defer(*fields).annotate(
        **{
            # Cast: MySQL's CASE over a column and parameters gives text.
            shown_field(field): Cast(
                Case(
                    When(**{f"{field}__gt": latest}, then=Value(latest)),
                    When(**{f"{field}__lt": earliest}, then=Value(earliest)),
                    default=F(field),
                ),
                DateTimeField(),
            )
            for field in fields
        }
    )


def shown_time(job, field):
    """``job``'s time ``field``, from the ``with_shown_times`` annotation when the
    row was read with it (else the field itself)."""
    name = shown_field(field)
    return getattr(job, name) if hasattr(job, name) else getattr(job, field)


def endless(value):
    """ "never" for a time at the latest end, "any time" at the earliest, else None."""
    if value is None:
        return None
    naive = timezone.is_naive(value)  # USE_TZ = False
    earliest, latest = (end.replace(tzinfo=None) if naive else end for end in (EARLIEST, LATEST))
    if value >= latest:
        return _("never")
    if value <= earliest:
        return _("any time")
    return None


def local(value):
    """``value`` in the current time zone, or in UTC where that would leave the
    years a ``datetime`` holds."""
    try:
        return timezone.localtime(value) if timezone.is_aware(value) else value
    except OverflowError:
        return value


def describe(value):
    """A time as words: "never", "any time", or the local date and time as the
    Django admin formats it."""
    if value is None:
        return "-"
    return endless(value) or formats.localize(local(value))


def relative(value, now=None):
    """How far ``value`` is from now: "in 3 days" for a future time, "2 hours ago" for
    a past one; "never"/"any time" at the ends."""
    if value is None:
        return ""
    words = endless(value)
    if words:
        return words
    now = now or timezone.now()
    if value > now:
        return _("in %(time)s") % {"time": timeuntil(value, now, depth=1)}
    return None  # past: Wagtail's own "2 hours ago"
