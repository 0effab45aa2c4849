"""The Prometheus collector: per-queue figures read from the store at each scrape.

Gauges come from ``Store.queue_figures()`` and ``Store.live_workers()`` (indexed
reads, never the job table). Counters and histograms (jobs finished by outcome,
wait and run times) come from the per-minute figures (``pgjobs/stats.py``):
each scrape reads the last minutes and adds what they gained since the previous
scrape, so the totals only grow, from zero when this process first scraped, as
a Prometheus counter must (``rate()`` and ``histogram_quantile()`` work on
them). Scrapes that come further apart than ``LOOK_BACK`` miss what finished in
between. The totals live in this process: mount the view where one process
answers the scrapes, or run ``pgjobs_metrics``.
"""

import datetime
import threading
import time

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from .. import records, stats

#: How far back each scrape reads the per-minute figures.
LOOK_BACK = datetime.timedelta(minutes=10)
ANY_QUEUE = "*"


class _Totals:
    """What finished in one queue since the collector started counting."""

    __slots__ = ("outcomes", "wait", "run", "wait_sum", "run_sum")

    def __init__(self):
        self.outcomes = dict.fromkeys(records.OUTCOMES, 0)
        self.wait = [0] * stats.BUCKETS
        self.run = [0] * stats.BUCKETS
        self.wait_sum = self.run_sum = 0.0


def _values(figures):
    """A ``MinuteFigures`` as one flat tuple, to subtract from a later reading."""
    return (
        *(figures.outcomes[o] for o in records.OUTCOMES),
        *figures.wait_buckets,
        *figures.run_buckets,
        figures.wait_sum,
        figures.run_sum,
    )


class StoreCollector:
    """Collects pgjobs' metrics from ``store`` (a callable returning it, so that
    the configured backend's store is looked up at scrape time)."""

    def __init__(self, store):
        self._store = store
        self._lock = threading.Lock()  # scrapes may come in on several threads
        self._seen = None  # (queue, minute) -> _values of that minute at the last scrape
        self._totals = {}  # queue -> _Totals
        self._created = time.time()

    def describe(self):
        return []  # not known before a scrape (queues come and go): registered unchecked

    def collect(self):
        store = self._store()
        if store is None:
            return
        figures = store.queue_figures()
        minutes = store.minute_figures(LOOK_BACK)
        workers = store.live_workers() or []
        with self._lock:
            self._add(minutes)
            totals = {queue: self._copy(t) for queue, t in self._totals.items()}
        yield from self._gauges(figures)
        yield from self._workers(workers, {f.queue for f in figures} | set(totals))
        yield from self._finished(totals)

    # -- counting ------------------------------------------------------------------------

    def _add(self, minutes):
        seen = {(m.queue, m.minute): (m, _values(m)) for m in minutes}
        if self._seen is None:  # the first scrape: counting starts now
            self._seen = {key: values for key, (_, values) in seen.items()}
            return
        outcomes = len(records.OUTCOMES)
        for key, (minute, values) in seen.items():
            before = self._seen.get(key)
            gained = (
                values if before is None else [a - b for a, b in zip(values, before, strict=True)]
            )
            if not any(gained):
                continue
            totals = self._totals.get(minute.queue)
            if totals is None:
                totals = self._totals[minute.queue] = _Totals()
            for i, outcome in enumerate(records.OUTCOMES):
                totals.outcomes[outcome] += gained[i]
            wait = gained[outcomes : outcomes + stats.BUCKETS]
            run = gained[outcomes + stats.BUCKETS : outcomes + 2 * stats.BUCKETS]
            totals.wait = [a + b for a, b in zip(totals.wait, wait, strict=True)]
            totals.run = [a + b for a, b in zip(totals.run, run, strict=True)]
            totals.wait_sum += gained[-2]
            totals.run_sum += gained[-1]
        self._seen = {key: values for key, (_, values) in seen.items()}

    @staticmethod
    def _copy(totals):
        copy = _Totals()
        copy.outcomes = dict(totals.outcomes)
        copy.wait, copy.run = list(totals.wait), list(totals.run)
        copy.wait_sum, copy.run_sum = totals.wait_sum, totals.run_sum
        return copy

    # -- the metrics ----------------------------------------------------------------------

    @staticmethod
    def _gauges(figures):
        ready = GaugeMetricFamily(
            "pgjobs_queue_ready_jobs", "Ready jobs due now.", labels=["queue"]
        )
        deferred = GaugeMetricFamily(
            "pgjobs_queue_deferred_jobs", "Ready jobs not due yet.", labels=["queue"]
        )
        running = GaugeMetricFamily("pgjobs_queue_running_jobs", "Running jobs.", labels=["queue"])
        failed = GaugeMetricFamily(
            "pgjobs_queue_failed_last_hour",
            "Jobs that failed for good in the last hour.",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "pgjobs_queue_oldest_due_seconds",
            "How long the oldest due job has waited (0: none waits).",
            labels=["queue"],
        )
        for f in figures:
            ready.add_metric([f.queue], f.ready)
            deferred.add_metric([f.queue], f.deferred)
            running.add_metric([f.queue], f.running)
            failed.add_metric([f.queue], f.failed_last_hour)
            oldest.add_metric([f.queue], f.oldest_due_seconds or 0.0)
        return [ready, deferred, running, failed, oldest]

    @staticmethod
    def _workers(workers, queues):
        live = GaugeMetricFamily(
            "pgjobs_workers",
            f"Live workers working the queue ({ANY_QUEUE!r}: workers of every queue).",
            labels=["queue"],
        )
        every = sum(1 for _, worked in workers if not worked)
        counts = dict.fromkeys(queues, every)
        for _, worked in workers:
            for queue in worked or ():
                counts[queue] = counts.get(queue, every) + 1
        counts[ANY_QUEUE] = every
        for queue in sorted(counts):
            live.add_metric([queue], counts[queue])
        return [live]

    def _finished(self, totals):
        finished = CounterMetricFamily(
            "pgjobs_jobs_finished",
            "Attempts ended, by outcome (succeeded, failed, retried, cancelled).",
            labels=["queue", "outcome"],
            created=self._created,
        )
        wait = HistogramMetricFamily(
            "pgjobs_job_wait_seconds",
            "Seconds from due (enqueued, or retry time) to start.",
            labels=["queue"],
        )
        run = HistogramMetricFamily(
            "pgjobs_job_run_seconds", "Seconds from start to end of an attempt.", labels=["queue"]
        )
        for queue in sorted(totals):
            t = totals[queue]
            for outcome in records.OUTCOMES:
                finished.add_metric([queue, outcome], t.outcomes[outcome], created=self._created)
            wait.add_metric([queue], _cumulative(t.wait), t.wait_sum)
            run.add_metric([queue], _cumulative(t.run), t.run_sum)
        return [finished, wait, run]


def _cumulative(buckets):
    """``[(le, count), ...]`` from per-bucket counts; bucket ``i`` (values below
    ``EDGES[i]``) is reported as ``le=EDGES[i]``."""
    out, seen = [], 0
    for edge, count in zip((*map(str, stats.EDGES), "+Inf"), buckets, strict=True):
        seen += count
        out.append((edge, seen))
    return out
