"""The ``Job`` table (``pgjobs_job``): one row per job, for every database store."""

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.functions import Now

from . import records

STATUS_CHOICES = [(status, status.capitalize()) for status in records.STATUSES]


class Job(models.Model):
    """One background job: what to call, when, and what came of it.

    The hot paths (enqueue, claim, finish) use the store's own SQL; this model
    serves migrations, the admin, and the cooler operations.
    """

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=100, db_default=records.DEFAULT_QUEUE)
    func = models.CharField("function", max_length=255, help_text="Dotted path of the function.")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    priority = models.SmallIntegerField(
        db_default=records.DEFAULT_PRIORITY, help_text="-100..100; higher runs sooner."
    )
    run_at = models.DateTimeField(db_default=Now(), help_text="Not run before this time.")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, db_default=records.READY)
    attempts = models.IntegerField(db_default=0)
    max_attempts = models.IntegerField(db_default=3)
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds an attempt may take.")
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=100, null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    unique_key = models.CharField(max_length=255, null=True, blank=True)
    signature = models.CharField(max_length=128, blank=True, db_default="")
    cancel_requested = models.BooleanField(
        db_default=False, help_text="Set while running: the job is asked to stop."
    )
    # The W3C trace context (``traceparent``) of the span that enqueued the job,
    # when OpenTelemetry is installed: the job's span continues that trace.
    traceparent = models.CharField(max_length=55, null=True, blank=True)
    atomic = models.BooleanField(
        db_default=False,
        help_text="Runs in a transaction that also records its success: exactly once for "
        "its database writes.",
    )
    # Batches and chains (``background.batch``, ``enqueue(..., after=ref)``).
    # An id, not a foreign key: jobs and batches are pruned apart, and no lock or
    # join is taken across them (nor does Wagtail's reference index follow it).
    batch_id = models.BigIntegerField(
        "batch", null=True, blank=True, help_text="The batch this job belongs to."
    )
    after_id = models.BigIntegerField(
        "runs after",
        null=True,
        blank=True,
        help_text="The job this one runs after: it waits until that job succeeds.",
    )
    has_dependents = models.BooleanField(
        db_default=False, help_text="Jobs wait for this one to succeed (a chain)."
    )
    previous_result = models.JSONField(
        null=True, blank=True, help_text="The result of the job this one ran after."
    )
    # ``unique_key`` while the job is ready or running, NULL otherwise: a unique
    # index on it lets the database refuse a second active job with the same key
    # on every vendor (MySQL/MariaDB have no partial unique indexes).
    active_unique_key = models.GeneratedField(
        expression=models.Case(
            models.When(status__in=[records.READY, records.RUNNING], then=models.F("unique_key")),
            default=models.Value(None),
            output_field=models.CharField(max_length=255, null=True),
        ),
        output_field=models.CharField(max_length=255, null=True),
        db_persist=True,
    )

    class Meta:
        db_table = "pgjobs_job"
        verbose_name = "job"
        ordering = ["-id"]
        indexes = [
            # Claim order over ready rows only, so claim cost does not grow with
            # finished history.
            models.Index(
                fields=["-priority", "run_at", "id"],
                name="pgjobs_job_claim_idx",
                condition=models.Q(status=records.READY),
            ),
            # Running jobs whose lease may have expired, for crash recovery. The
            # predicate is on the lease, not the status, so that the planner cannot
            # pick this index for the batched finish (it must use the primary key).
            models.Index(
                fields=["lease_expires_at"],
                name="pgjobs_job_lease_idx",
                condition=models.Q(lease_expires_at__isnull=False),
            ),
            # Finished jobs by status and age, for the retention every worker
            # enforces (KEEP_SUCCEEDED, KEEP_FAILED) and pgjobs_prune: a prune reads
            # only expired rows of the statuses it deletes, however many failed
            # jobs are kept meanwhile. Partial, so ready and running rows have no
            # entry; MySQL/MariaDB ignore the condition and index every row.
            models.Index(
                fields=["status", "finished_at"],
                name="pgjobs_job_finished_idx",
                condition=models.Q(finished_at__isnull=False),
            ),
            # A batch's jobs, for its page and its counts of unfinished jobs.
            models.Index(
                fields=["batch_id"],
                name="pgjobs_job_batch_idx",
                condition=models.Q(batch_id__isnull=False),
            ),
            # Waiting chained jobs by the job they wait for: what a finish
            # releases or cancels. Partial, so plain jobs have no entry.
            models.Index(
                fields=["after_id"],
                name="pgjobs_job_waiting_idx",
                condition=models.Q(status=records.WAITING),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(priority__gte=records.MIN_PRIORITY)
                & models.Q(priority__lte=records.MAX_PRIORITY),
                name="pgjobs_job_priority_range",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=records.STATUSES), name="pgjobs_job_status_valid"
            ),
            models.UniqueConstraint(
                fields=["active_unique_key"], name="pgjobs_job_unique_active_key"
            ),
        ]

    def __str__(self):
        return f"#{self.id} {self.func} ({self.status})"


class JobAttempt(models.Model):
    """An attempt of a job that did not succeed: failed (and retried, or failed
    for good), cancelled, or lost with its worker (``error`` says which).

    Written by the stores as they record the outcome, in the same statement or
    transaction, and deleted with the job (retention, ``pgjobs_prune``, the
    admin). A job's running or succeeded attempt is the job row itself:
    ``Store.job_attempts(job_id)`` returns both, in order, and is the way to
    read a job's history; successes, nearly every attempt, cost no row here.
    """

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(
        Job,
        on_delete=models.CASCADE,
        related_name="failed_attempts",
        db_constraint=False,  # stores delete attempts with their jobs themselves
        db_index=False,  # the unique constraint below indexes job_id first
    )
    attempt = models.IntegerField(help_text="1 for the first attempt.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=100, null=True, blank=True)
    outcome = models.CharField(
        max_length=10, choices=[(o, o.capitalize()) for o in records.OUTCOMES]
    )
    error = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "pgjobs_attempt"
        verbose_name = "job attempt"
        ordering = ["job_id", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["job", "attempt"], name="pgjobs_attempt_job_attempt")
        ]

    def __str__(self):
        return f"#{self.job_id} attempt {self.attempt} ({self.outcome})"


class JobStat(models.Model):
    """Per-minute figures of finished attempts, added to by workers as they
    record outcomes (``pgjobs/stats.py`` says what each metric and bucket
    means); kept ``stats.KEEP`` by the pruning duty. Read them through
    ``Store.minute_figures``, which adds up the shards."""

    pk = models.CompositePrimaryKey("minute", "queue", "shard", "metric", "bucket")
    minute = models.DateTimeField()
    queue = models.CharField(max_length=100)
    shard = models.SmallIntegerField()
    metric = models.CharField(max_length=10)
    bucket = models.SmallIntegerField()
    count = models.BigIntegerField()
    total = models.FloatField(help_text="Seconds, for the wait and run metrics.")

    class Meta:
        db_table = "pgjobs_stat"
        verbose_name = "job figure"

    def __str__(self):
        return f"{self.minute:%Y-%m-%d %H:%M} {self.queue} {self.metric}[{self.bucket}]"


class Batch(models.Model):
    """Jobs enqueued together as one unit (``background.batch``).

    ``pending`` counts the jobs that have not reached a final status; each final
    outcome decrements it in the transaction that records it, under this row's
    lock, and the one that brings it to zero releases the callbacks:
    ``on_finish`` (a job stored ``waiting`` with the batch) becomes ready, and
    ``on_success`` too if every job succeeded (else it is cancelled). A callback
    leaves ``waiting`` once, so it runs once however many workers finish the
    last jobs together.
    """

    id = models.BigAutoField(primary_key=True)
    description = models.CharField(max_length=255, blank=True, db_default="")
    total = models.IntegerField(help_text="Jobs in the batch.")
    pending = models.IntegerField(help_text="Jobs not finished yet (ready, running, retrying).")
    succeeded = models.IntegerField(db_default=0)
    failed = models.IntegerField(db_default=0)
    cancelled = models.IntegerField(db_default=0)
    created_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)
    on_finish_id = models.BigIntegerField(
        "on-finish job", null=True, blank=True, help_text="Runs when every job has finished."
    )
    on_success_id = models.BigIntegerField(
        "on-success job", null=True, blank=True, help_text="Runs when every job succeeded."
    )

    class Meta:
        db_table = "pgjobs_batch"
        verbose_name = "batch"
        verbose_name_plural = "batches"
        ordering = ["-id"]
        indexes = [
            # Finished batches by age, for the retention workers enforce.
            models.Index(
                fields=["finished_at"],
                name="pgjobs_batch_finished_idx",
                condition=models.Q(finished_at__isnull=False),
            ),
        ]

    def __str__(self):
        return f"batch {self.id}" + (f" {self.description}" if self.description else "")

    @property
    def done(self):
        return self.total - self.pending


class WorkerProcess(models.Model):
    """A live worker (``pgjobs_worker`` or ``pgjobs_drain``), for ``pgjobs_status``.

    Each worker writes its row at start, refreshes ``heartbeat_at`` with its
    leases and deletes it when it stops; a row whose heartbeat is old belongs to
    a worker that died and is removed by the next rescue.
    """

    id = models.CharField(max_length=100, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.JSONField(default=list)
    concurrency = models.IntegerField(default=1)
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()

    class Meta:
        db_table = "pgjobs_worker"
        verbose_name = "worker"
        ordering = ["started_at"]

    def __str__(self):
        return self.id


class ScheduleState(models.Model):
    """Where each schedule of ``PGJOBS["SCHEDULE"]`` stands, shared by every worker
    and drain so that each tick is enqueued once (``pgjobs/schedule.py``).

    ``last_tick`` only moves forward, by compare-and-set together with the
    enqueue of the ticks it passes. A schedule removed from the setting keeps
    its row (harmless); deleting the row makes the schedule start afresh.
    """

    name = models.CharField(max_length=100, primary_key=True)
    last_tick = models.DateTimeField(
        help_text="Ticks up to this time are settled: enqueued, or passed over by catch-up."
    )
    last_run = models.DateTimeField(null=True, blank=True, help_text="The latest tick enqueued.")

    class Meta:
        db_table = "pgjobs_schedule"
        verbose_name = "schedule"
        ordering = ["name"]

    def __str__(self):
        return self.name


class QueueControl(models.Model):
    """How a queue is steered across the fleet (``pgjobs/queue_control.py``):
    paused, its limits, and the rate limit's current window.

    Written by ``background.pause_queue`` and friends, ``pgjobs_queue`` and the
    admins; read by every worker at most a second later. A limit left empty
    follows ``PGJOBS["QUEUES"]``. Claims from a limited queue lock its row, so
    that racing workers count its running jobs one after the other.
    """

    queue = models.CharField(max_length=100, primary_key=True)
    paused = models.BooleanField(
        default=False, help_text="No job of the queue starts; running ones finish."
    )
    concurrency = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="At most this many jobs of the queue run at once, on all workers together.",
    )
    rate = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="At most this many jobs of the queue start per period, on all workers.",
    )
    period = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001)],
        help_text="The rate limit's period, in seconds.",
    )
    window_start = models.FloatField(null=True, blank=True, editable=False)
    window_count = models.PositiveIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "pgjobs_queue"
        verbose_name = "queue control"
        ordering = ["queue"]

    def clean(self):
        from django.core.exceptions import ValidationError

        if (self.rate is None) != (self.period is None):
            raise ValidationError("Set both rate and period, or neither.")

    def __str__(self):
        return self.queue
