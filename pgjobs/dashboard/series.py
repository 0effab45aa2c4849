"""The charts' data: per time bucket of the last hour or day, attempts finished by
outcome, queue depth, and wait and run time percentiles.

This module is the charts' one data source. Outcomes and times come from the
per-minute figures workers write with each outcome (``Store.minute_figures``,
``pgjobs/stats.py``): a few hundred small rows a day, whatever the traffic, and
percentiles estimated from their histogram buckets. Queue depth is not among those
figures: it is rebuilt from the jobs still kept (when each became due and started),
from the newest ``SAMPLE_LIMIT`` finished jobs plus the ready and running ones, so it
reaches back only as far as retention keeps rows, and is left empty where jobs are
not rows of a ``Job`` table (Redis).
"""

import bisect
import dataclasses
import datetime

from .. import records, stats
from ..handler import get_backend
from ..models import Job

MINUTE = datetime.timedelta(minutes=1)
OUTCOMES = records.OUTCOMES
#: Rows read per outcome at most for the depth chart (a row's times cost ~20 µs).
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
    finished: dict  # outcome -> attempts that ended so in each bucket
    depth: list  # jobs due and not started at each bucket's end (None: unknown)
    wait: dict  # "p50"/"p95" -> seconds from due to start
    run: dict  # "p50"/"p95" -> seconds from start to end

    @property
    def total_finished(self):
        return sum(sum(counts) for counts in self.finished.values())


def bucket_starts(window, now):
    """The start of each bucket, oldest first; the last bucket holds ``now``."""
    # Naive under USE_TZ = False, as the stores' times are: floored in ``now``'s kind.
    epoch = datetime.datetime(1970, 1, 1, tzinfo=now.tzinfo and datetime.UTC)
    last = now - (now - epoch) % window.step
    return [last - window.step * (window.buckets - 1 - i) for i in range(window.buckets)]


def series(window, now, backend=None):
    backend = backend or get_backend()
    starts = bucket_starts(window, now)
    size = len(starts)
    finished = {outcome: [0] * size for outcome in OUTCOMES}
    wait_buckets = [[0] * stats.BUCKETS for _ in starts]
    run_buckets = [[0] * stats.BUCKETS for _ in starts]
    if backend.stores_jobs:
        for figures in backend.get_store().minute_figures(starts[0]):
            i = bisect.bisect_right(starts, figures.minute) - 1
            if i < 0:
                continue
            for outcome, count in figures.outcomes.items():
                finished.setdefault(outcome, [0] * size)[i] += count
            wait_buckets[i] = stats.add_buckets(wait_buckets[i], figures.wait_buckets)
            run_buckets[i] = stats.add_buckets(run_buckets[i], figures.run_buckets)

    def quantiles(per_bucket):
        return {
            "p50": [stats.quantile(b, 0.50) for b in per_bucket],
            "p95": [stats.quantile(b, 0.95) for b in per_bucket],
        }

    return Series(
        window,
        starts,
        finished,
        depth(starts, window.step, now, backend),
        quantiles(wait_buckets),
        quantiles(run_buckets),
    )


def depth(starts, step, now, backend):
    """Jobs due and not started at each bucket's end, rebuilt from the rows still kept:
    due times of the newest finished, the running and the ready jobs, less their starts."""
    if not backend.jobs_database:
        return [None] * len(starts)
    jobs = Job.objects.using(backend.jobs_database)
    since = starts[0]
    rows = []
    for outcome in (records.SUCCEEDED, records.FAILED, records.CANCELLED):
        rows += (
            jobs.filter(status=outcome, finished_at__gte=since)
            .order_by("-finished_at")
            .values_list("run_at", "started_at")[:SAMPLE_LIMIT]
        )
    rows += jobs.filter(status=records.RUNNING, lease_expires_at__isnull=False).values_list(
        "run_at", "started_at"
    )[:SAMPLE_LIMIT]
    waiting = jobs.filter(status=records.READY, run_at__lte=now).order_by()
    due = sorted(
        [run_at for run_at, started_at in rows if started_at is not None]
        + list(waiting.values_list("run_at", flat=True)[:SAMPLE_LIMIT])
    )
    began = sorted(started_at for _, started_at in rows if started_at is not None)
    values = []
    for start in starts:
        end = min(start + step, now)
        values.append(max(0, bisect.bisect_right(due, end) - bisect.bisect_right(began, end)))
    return values
