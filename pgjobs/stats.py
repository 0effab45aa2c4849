"""Per-minute figures of what workers finished, and how to read them.

Workers add to them as they record outcomes (the stores write them with the
outcome itself), so that a dashboard or a Prometheus scrape reads a few
hundred small rows rather than counting jobs, which retention deletes anyway.
A figure is a count (and a sum of seconds) keyed by minute, queue, a shard
(``shard_of``: workers writing the same minute and queue mostly touch
different rows, so they do not wait on each other's locks), a metric and a
bucket:

- ``succeeded``, ``failed``, ``retried``, ``cancelled``: attempts that ended so
  (bucket 0);
- ``wait``: seconds from due (``run_at``: enqueued, or the retry's time) to
  start; ``run``: seconds from start to end. Bucket ``i`` counts the values
  below ``EDGES[i]`` and at or above ``EDGES[i - 1]`` (PostgreSQL's
  ``width_bucket``); the last bucket, ``len(EDGES)``, those at or above the
  last edge. Fixed edges, so that figures from any worker add up, quantiles
  can be estimated (``quantile``) and Prometheus histograms fed.
"""

import bisect
import datetime
import zlib

from . import records

#: Bucket edges in seconds (Prometheus's default buckets, then longer waits).
EDGES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
BUCKETS = len(EDGES) + 1
WAIT = "wait"
RUN = "run"
METRICS = (*records.OUTCOMES, WAIT, RUN)
#: Rows per minute and queue that writers spread over (see the module's docstring).
SHARDS = 8
#: How long figures are kept: the pruning duty deletes older minutes.
KEEP = datetime.timedelta(days=2)
#: Minutes older than this are folded from the writers' shards into shard 0 by
#: the pruning duty (``Store.fold_figures``): no worker writes them any more.
FOLD_AFTER = datetime.timedelta(minutes=5)
#: Minutes older than this are folded further, into one row per ``COARSE``
#: minutes (at the start of them), so that a day is a few thousand rows: chart
#: longer spans in bins of ``COARSE`` minutes (``binned``).
COARSE_AFTER = datetime.timedelta(hours=1)
COARSE = 10


def bucket_of(seconds):
    """The bucket of a duration in seconds (negative ones, from clocks apart: 0)."""
    return bisect.bisect_right(EDGES, seconds)


def shard_of(worker_id):
    """The shard a worker writes its figures to: fixed for a worker id."""
    return zlib.crc32(str(worker_id or "").encode()) % SHARDS


def minute_of(when):
    """``when`` truncated to its minute."""
    return when.replace(second=0, microsecond=0)


def coarse_of(minute):
    """The start of the ``COARSE`` minutes ``minute`` falls in."""
    return minute.replace(minute=minute.minute - minute.minute % COARSE, second=0, microsecond=0)


def binned(figures, minutes=COARSE):
    """``MinuteFigures`` added up into bins of ``minutes`` (a divisor of 60, and a
    multiple of ``COARSE`` for figures older than ``COARSE_AFTER``), each at the
    start of its bin: how to chart a day."""
    bins = {}
    for f in figures:
        start = f.minute.replace(minute=f.minute.minute - f.minute.minute % minutes)
        key = (start, f.queue)
        into = bins.get(key)
        if into is None:
            into = bins[key] = records.MinuteFigures(
                f.queue, start, dict.fromkeys(records.OUTCOMES, 0), [0] * BUCKETS, [0] * BUCKETS
            )
        for outcome, count in f.outcomes.items():
            into.outcomes[outcome] = into.outcomes.get(outcome, 0) + count
        into.wait_buckets = add_buckets(into.wait_buckets, f.wait_buckets)
        into.run_buckets = add_buckets(into.run_buckets, f.run_buckets)
        into.wait_sum += f.wait_sum
        into.run_sum += f.run_sum
    return [bins[key] for key in sorted(bins)]


def attempt_rows(minute, queue, shard, outcome, wait, run):
    """The figures one attempt adds: ``[(minute, queue, shard, metric, bucket,
    count, total), ...]``; ``wait`` or ``run`` None when unknown."""
    rows = [(minute, queue, shard, outcome, 0, 1, 0.0)]
    if wait is not None:
        rows.append((minute, queue, shard, WAIT, bucket_of(wait), 1, float(wait)))
    if run is not None:
        rows.append((minute, queue, shard, RUN, bucket_of(run), 1, float(run)))
    return rows


def merge_rows(rows):
    """Rows as ``attempt_rows`` makes them, those with the same key added up, in
    key order (so that concurrent writers lock rows in the same order)."""
    merged = {}
    for minute, queue, shard, metric, bucket, count, total in rows:
        key = (minute, queue, shard, metric, bucket)
        have = merged.get(key)
        merged[key] = (count, total) if have is None else (have[0] + count, have[1] + total)
    return [(*key, count, total) for key, (count, total) in sorted(merged.items())]


def figures_from_rows(rows):
    """``MinuteFigures`` from ``(minute, queue, metric, bucket, count, total)``
    rows (shards already added up or not), sorted by minute, then queue."""
    by_key = {}
    for minute, queue, metric, bucket, count, total in rows:
        figures = by_key.get((minute, queue))
        if figures is None:
            figures = by_key[(minute, queue)] = records.MinuteFigures(
                queue,
                minute,
                dict.fromkeys(records.OUTCOMES, 0),
                [0] * BUCKETS,
                [0] * BUCKETS,
            )
        count = int(count)
        if metric == WAIT:
            figures.wait_buckets[min(int(bucket), BUCKETS - 1)] += count
            figures.wait_sum += float(total or 0)
        elif metric == RUN:
            figures.run_buckets[min(int(bucket), BUCKETS - 1)] += count
            figures.run_sum += float(total or 0)
        elif metric in figures.outcomes:
            figures.outcomes[metric] += count
    return [by_key[key] for key in sorted(by_key)]


def add_buckets(*bucket_lists):
    """Bucket counts added up, bucket by bucket."""
    total = [0] * BUCKETS
    for buckets in bucket_lists:
        for i, count in enumerate(buckets):
            total[i] += count
    return total


def quantile(buckets, q):
    """Estimate the ``q`` quantile (0..1) in seconds from bucket counts, by
    linear interpolation inside the bucket it falls in (as Prometheus's
    ``histogram_quantile``); None when there are no counts. Values in the last
    bucket read as the last edge."""
    count = sum(buckets)
    if not count:
        return None
    rank = q * count
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            if i >= len(EDGES):
                return EDGES[-1]
            low = EDGES[i - 1] if i else 0.0
            return low + (EDGES[i] - low) * max(0.0, rank - seen) / n
        seen += n
    return EDGES[-1]
