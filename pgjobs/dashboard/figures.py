"""What the dashboard shows as true now: per-queue counts, live workers, schedules.

Per-queue figures are the store's ``queue_figures()``, which reads ready and running
jobs through the indexes claims and rescues use and recent failures from the
per-minute figures, never by scanning the job table; so the page costs the same with
a million finished rows kept as with none.
"""

import dataclasses
import datetime

from django.db.models import Count

from .. import records
from ..handler import get_backend
from ..models import Job, WorkerProcess


@dataclasses.dataclass
class QueueFigures:
    queue: str
    due: int = 0
    deferred: int = 0
    running: int = 0
    failed_last_hour: int = 0
    oldest_due_seconds: float | None = None
    # None: queues cannot be paused here (the hook for per-queue pause and resume).
    paused: bool | None = None

    @property
    def ready(self):
        return self.due + self.deferred


def paused_queues(backend):
    """The queues paused now, or None where queues cannot be paused: the dashboard
    shows a "paused" column only when this says which. The hook for per-queue pause
    and resume; with ``Store.queue_controls()`` it reads
    ``{queue for queue, control in controls.items() if control.paused}``."""
    return None


def queues(backend=None):
    """A ``QueueFigures`` per configured queue, and per other queue the store reports."""
    backend = backend or get_backend()
    rows = {name: QueueFigures(name) for name in backend.queues or [records.DEFAULT_QUEUE]}
    if backend.stores_jobs:
        for figures in backend.get_store().queue_figures():
            row = rows.setdefault(figures.queue, QueueFigures(figures.queue))
            row.due, row.deferred, row.running = figures.ready, figures.deferred, figures.running
            row.failed_last_hour = figures.failed_last_hour
            row.oldest_due_seconds = figures.oldest_due_seconds
    paused = paused_queues(backend)
    if paused is not None:
        for row in rows.values():
            row.paused = row.queue in paused
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
