"""The charts' data: per time bucket of the last hour or day, jobs finished by outcome,
queue depth, and wait and run time percentiles.

This module is the charts' one data source. Until workers keep per-minute aggregates
it reads them from the finished jobs still kept, through the finished index: the
counts per minute and outcome are counted by the database (``GROUP BY`` the minute),
while depth and the percentiles come from the newest ``SAMPLE_LIMIT`` rows of each
outcome (reading a row's times costs about 20 µs in Python). So a chart reaches back
only as far as retention keeps rows (``KEEP_SUCCEEDED``), and its percentiles and
depth describe the newest jobs. Where jobs are not rows of a ``Job`` table (Redis),
the series are empty.
"""

import bisect
import dataclasses
import datetime
import math

from django.db.models import Count
from django.db.models.functions import Trunc

from .. import records
from ..handler import get_backend
from ..models import Job

MINUTE = datetime.timedelta(minutes=1)
OUTCOMES = (records.SUCCEEDED, records.FAILED, records.CANCELLED)
#: Rows read per outcome at most: what the interim source costs, whatever is kept.
SAMPLE_LIMIT = 300


@dataclasses.dataclass(frozen=True)
class Window:
    name: str
    label: str
    span: datetime.timedelta
    step: datetime.timedelta

    @property
    def buckets(self):
        return int(self.span / self.step)


WINDOWS = {
    "hour": Window("hour", "last hour", datetime.timedelta(hours=1), MINUTE),
    "day": Window("day", "last day", datetime.timedelta(days=1), 15 * MINUTE),
}


@dataclasses.dataclass
class Series:
    """Values per bucket, oldest first; a percentile is None for a bucket without jobs."""

    window: Window
    starts: list
    finished: dict  # outcome -> jobs finished in each bucket
    depth: list  # jobs due and not started at each bucket's end
    wait: dict  # "p50"/"p95" -> seconds from due to start
    run: dict  # "p50"/"p95" -> seconds from start to end
    source: str  # what the figures were read from, shown under the charts

    @property
    def total_finished(self):
        return sum(sum(counts) for counts in self.finished.values())


def percentile(values, fraction):
    """The nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(0, min(len(values) - 1, math.ceil(fraction * len(values)) - 1))
    return values[rank]


def bucket_starts(window, now):
    """The start of each bucket, oldest first; the last bucket holds ``now``."""
    step = window.step.total_seconds()
    epoch = now.timestamp()
    last = datetime.datetime.fromtimestamp(epoch - epoch % step, tz=datetime.UTC)
    return [last - window.step * (window.buckets - 1 - i) for i in range(window.buckets)]


def series(window, now, backend=None):
    backend = backend or get_backend()
    starts = bucket_starts(window, now)
    empty = Series(
        window,
        starts,
        {outcome: [0] * len(starts) for outcome in OUTCOMES},
        [None] * len(starts),
        {"p50": [None] * len(starts), "p95": [None] * len(starts)},
        {"p50": [None] * len(starts), "p95": [None] * len(starts)},
        "no job rows to read",
    )
    if not backend.jobs_database:
        return empty
    jobs = Job.objects.using(backend.jobs_database)
    since = starts[0]
    rows = []
    for outcome in OUTCOMES:
        rows += (
            jobs.filter(status=outcome, finished_at__gte=since)
            .order_by("-finished_at")
            .values_list("status", "run_at", "started_at", "finished_at")[:SAMPLE_LIMIT]
        )
    started = list(
        jobs.filter(status=records.RUNNING, lease_expires_at__isnull=False).values_list(
            "run_at", "started_at"
        )[:SAMPLE_LIMIT]
    )
    waiting = list(
        jobs.filter(status=records.READY, run_at__lte=now)
        .order_by()
        .values_list("run_at", flat=True)[:SAMPLE_LIMIT]
    )

    def index(when):
        return bisect.bisect_right(starts, when) - 1

    per_minute = (
        jobs.filter(status__in=OUTCOMES, finished_at__gte=since)
        .annotate(minute=Trunc("finished_at", "minute", tzinfo=datetime.UTC))
        .values_list("minute", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for minute, status, n in per_minute:
        i = index(minute)
        if i >= 0:
            empty.finished[status][i] += n
    waits = [[] for _ in starts]
    runs = [[] for _ in starts]
    for _status, _run_at, started_at, finished_at in rows:
        i = index(finished_at)
        if i >= 0 and started_at is not None:
            runs[i].append((finished_at - started_at).total_seconds())
    for run_at, started_at in [(r[1], r[2]) for r in rows] + started:
        if started_at is not None and started_at >= since:
            waits[index(started_at)].append(max(0.0, (started_at - run_at).total_seconds()))
    for name, per_bucket in (("wait", waits), ("run", runs)):
        for i, values in enumerate(per_bucket):
            values.sort()
            getattr(empty, name)["p50"][i] = percentile(values, 0.50)
            getattr(empty, name)["p95"][i] = percentile(values, 0.95)
    # Depth at each bucket's end: jobs due by then and not yet started.
    due = sorted([r[1] for r in rows if r[2] is not None] + [s[0] for s in started] + waiting)
    began = sorted([r[2] for r in rows if r[2] is not None] + [s[1] for s in started])
    for i, start in enumerate(starts):
        end = min(start + window.step, now)
        empty.depth[i] = max(0, bisect.bisect_right(due, end) - bisect.bisect_right(began, end))
    empty.source = "finished jobs still kept (retention limits how far back)"
    return empty
