"""What the dashboard shows as true now: per-queue counts, live workers, schedules.

Every figure is read through an index, never by scanning the job table: ready rows
through the claim index (ready rows only), running rows through the lease index,
failures of the last hour through the finished index. So the page costs the same with
a million finished rows kept as with none. A store without a ``Job`` table (Redis)
answers through its own ``status()`` and ``count_due()``.
"""

import dataclasses
import datetime

from django.db.models import Count, DateTimeField, Min, Q, Value
from django.db.models.functions import Greatest

from .. import records, times
from ..handler import get_backend
from ..models import Job, WorkerProcess

HOUR = datetime.timedelta(hours=1)


@dataclasses.dataclass
class QueueFigures:
    queue: str
    due: int = 0
    deferred: int = 0
    running: int = 0
    failed_last_hour: int | None = 0  # None: the store cannot tell
    oldest_due_seconds: float | None = None
    # None: queues cannot be paused here (the hook for per-queue pause and resume).
    paused: bool | None = None

    @property
    def ready(self):
        return self.due + self.deferred


def paused_queues(backend):
    """The queues paused now, or None where queues cannot be paused."""
    return None


def queues(now, backend=None):
    """A ``QueueFigures`` per configured queue, and per other queue that has jobs."""
    backend = backend or get_backend()
    names = list(backend.queues or [records.DEFAULT_QUEUE])
    rows = {name: QueueFigures(name) for name in names}

    def row(name):
        return rows.setdefault(name, QueueFigures(name))

    if backend.jobs_database:
        jobs = Job.objects.using(backend.jobs_database)
        ready = (
            jobs.filter(status=records.READY)
            .values_list("queue")
            .annotate(
                due=Count("pk", filter=Q(run_at__lte=now)),
                deferred=Count("pk", filter=Q(run_at__gt=now)),
                # Clamped: a '-infinity' run_at written by hand is no datetime.
                oldest=Min(
                    Greatest("run_at", Value(times.EARLIEST, DateTimeField())),
                    filter=Q(run_at__lte=now),
                ),
            )
            .order_by()
        )
        for queue, due, deferred, oldest in ready:
            figures = row(queue)
            figures.due, figures.deferred = due, deferred
            if oldest is not None:
                figures.oldest_due_seconds = max(0.0, (now - oldest).total_seconds())
        running = (
            jobs.filter(status=records.RUNNING, lease_expires_at__isnull=False)
            .values_list("queue")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for queue, n in running:
            row(queue).running = n
        failed = (
            jobs.filter(status=records.FAILED, finished_at__gte=now - HOUR)
            .values_list("queue")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for queue, n in failed:
            row(queue).failed_last_hour = n
    elif backend.stores_jobs:
        store = backend.get_store()
        for q in store.status()["queues"]:
            figures = row(q["queue"])
            ready = q["counts"].get(records.READY, 0)
            figures.due = store.count_due([q["queue"]])
            figures.deferred = max(0, ready - figures.due)
            figures.running = q["counts"].get(records.RUNNING, 0)
            figures.failed_last_hour = None
            figures.oldest_due_seconds = q["oldest_due_seconds"]
    paused = paused_queues(backend)
    if paused is not None:
        for figures in rows.values():
            figures.paused = figures.queue in paused
    return list(rows.values())


def workers(now, backend=None):
    """Live workers (a heartbeat within three leases), each with its running jobs."""
    backend = backend or get_backend()
    if not backend.stores_jobs:
        return []
    store = backend.get_store()
    if not backend.jobs_database:
        rows = store.status()["workers"] if store.supports_live_workers else []
        for w in rows:
            w["heartbeat_seconds"] = max(0.0, (now - w["heartbeat_at"]).total_seconds())
        return rows
    using, lease_seconds = backend.jobs_database, store.lease_seconds
    running = dict(
        Job.objects.using(using)
        .filter(status=records.RUNNING, lease_expires_at__isnull=False)
        .values_list("worker_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    stale = now - datetime.timedelta(seconds=3 * lease_seconds)
    return [
        {
            "id": w.pk,
            "hostname": w.hostname,
            "pid": w.pid,
            "queues": w.queues,
            "concurrency": w.concurrency,
            "started_at": w.started_at,
            "heartbeat_at": w.heartbeat_at,
            "heartbeat_seconds": max(0.0, (now - w.heartbeat_at).total_seconds()),
            "running": running.get(w.pk, 0),
        }
        for w in WorkerProcess.objects.using(using)
        .filter(heartbeat_at__gte=stale)
        .order_by("started_at")
    ]


def schedules(now, backend=None):
    """Each schedule of ``PGJOBS["SCHEDULE"]``: last and next tick, late or not."""
    from ..schedule import configured_scheduler

    backend = backend or get_backend()
    try:
        scheduler = configured_scheduler(backend)
    except Exception:  # a bad SCHEDULE is the system check's to report
        return []
    return scheduler.status(now) if scheduler else []
