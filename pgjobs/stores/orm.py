"""The parts of a database store that Django's ORM expresses portably.

Vendor stores (``postgres.py``, ``mysql.py``, ``sqlite.py``) subclass ``OrmStore``
and replace the hot paths (enqueue, claim, finish) with their own SQL. The
operations here are off the hot path: refs, retries, failures, leases.
"""

import datetime
import json

from django.db import connections
from django.db.models import Case, F, Min, Q, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from .. import records
from ..records import JobInfo
from .base import Store

INFO_FIELDS = (
    "id",
    "func",
    "queue",
    "status",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "created_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "worker_id",
)


def load_json(value):
    """JSON columns come back as text from some drivers and as data from others."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def seconds(delta_seconds):
    return datetime.timedelta(seconds=delta_seconds)


class OrmStore(Store):
    """A store over the ``Job`` model on one database alias."""

    def __init__(self, alias="default", *, lease_seconds=30.0, channel="pgjobs"):
        self.alias = alias
        self.lease_seconds = lease_seconds
        self.channel = channel

    @property
    def connection(self):
        return connections[self.alias]

    def jobs(self):
        from ..models import Job

        return Job.objects.using(self.alias)

    def describe(self):
        return f"{self.connection.vendor} database {self.alias!r}, polling"

    def now(self):
        """The current time as a query expression, in the form the ``DateTimeField``
        columns store. Django's ``Now()`` is right where the database's clock is
        in that form; stores for other databases override this."""
        return Now()

    @staticmethod
    def _queue_filter(queues):
        return Q() if not queues else Q(queue__in=list(queues))

    # -- producers ---------------------------------------------------------------

    def _model_kwargs(self, spec):
        kwargs = dict(
            func=spec.func,
            args=spec.args,
            kwargs=spec.kwargs,
            queue=spec.queue,
            priority=spec.priority,
            max_attempts=spec.max_attempts,
            timeout=spec.timeout,
            unique_key=spec.unique_key,
        )
        if spec.run_at is not None:
            kwargs["run_at"] = spec.run_at
        return kwargs

    def enqueue(self, spec):
        from ..models import Job

        job = self.jobs().create(**self._model_kwargs(spec))
        job = Job.objects.using(self.alias).only(*INFO_FIELDS).get(pk=job.pk)
        return self._info(job)

    def enqueue_many(self, specs):
        from ..models import Job

        rows = [Job(**self._model_kwargs(spec)) for spec in specs]
        created = self.jobs().bulk_create(rows)
        if created and created[0].pk is not None:
            return [self.get(job.pk) for job in created]
        return [self.enqueue(spec) for spec in specs]  # vendors without RETURNING

    def get(self, job_id):
        job = self.jobs().only(*INFO_FIELDS).filter(pk=job_id).first()
        return None if job is None else self._info(job)

    @staticmethod
    def _info(job):
        return JobInfo(**{name: getattr(job, name) for name in INFO_FIELDS})

    def cancel(self, job_id):
        cancelled = (
            self.jobs()
            .filter(pk=job_id, status=records.READY)
            .update(status=records.CANCELLED, finished_at=self.now())
        )
        return bool(cancelled)

    # -- workers -----------------------------------------------------------------

    def _mine(self, worker_id, job_ids):
        return self.jobs().filter(pk__in=list(job_ids), status=records.RUNNING, worker_id=worker_id)

    def finish(self, worker_id, results):
        # Portable fallback: one UPDATE per job. Vendor stores batch this.
        for job_id, result in results:
            self._mine(worker_id, [job_id]).update(
                status=records.SUCCEEDED,
                result=result,
                finished_at=self.now(),
                lease_expires_at=None,
            )

    def retry(self, worker_id, job_id, error, delay):
        self._mine(worker_id, [job_id]).update(
            status=records.READY,
            error=error,
            run_at=self.now() + Value(seconds(delay)),
            worker_id=None,
            lease_expires_at=None,
        )

    def fail(self, worker_id, job_id, error):
        self._mine(worker_id, [job_id]).update(
            status=records.FAILED, error=error, finished_at=self.now(), lease_expires_at=None
        )

    def heartbeat(self, worker_id, job_ids):
        if job_ids:
            self._mine(worker_id, job_ids).update(
                lease_expires_at=self.now() + Value(seconds(self.lease_seconds))
            )

    def rescue(self):
        error = {
            "type": "pgjobs.WorkerLost",
            "message": "the worker running this job stopped sending heartbeats",
            "traceback": "",
        }
        return (
            self.jobs()
            .filter(status=records.RUNNING, lease_expires_at__lt=self.now())
            .update(
                status=Case(
                    When(attempts__gte=F("max_attempts"), then=Value(records.FAILED)),
                    default=Value(records.READY),
                ),
                finished_at=Case(
                    When(attempts__gte=F("max_attempts"), then=self.now()), default=None
                ),
                error=Value(error, output_field=self.jobs().model._meta.get_field("error")),
                worker_id=None,
                lease_expires_at=None,
            )
        )

    def release(self, worker_id, job_ids):
        if job_ids:
            self._mine(worker_id, job_ids).update(
                status=records.READY,
                attempts=F("attempts") - 1,
                worker_id=None,
                started_at=None,
                lease_expires_at=None,
            )

    def seconds_until_due(self, queues):
        next_run = (
            self.jobs()
            .filter(self._queue_filter(queues), status=records.READY)
            .aggregate(next_run=Min("run_at"))["next_run"]
        )
        if next_run is None:
            return None
        return max(0.0, (next_run - timezone.now()).total_seconds())

    def count_due(self, queues):
        return (
            self.jobs()
            .filter(self._queue_filter(queues), status=records.READY, run_at__lte=self.now())
            .count()
        )

    def close(self):
        self.connection.close()
