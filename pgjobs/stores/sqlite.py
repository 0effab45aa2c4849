"""The SQLite store: claims under SQLite's single writer with ``BEGIN IMMEDIATE``
and one ``UPDATE ... RETURNING``; idle workers poll. All of pgjobs' SQLite SQL
is here.

SQLite lets one connection write at a time; the others wait up to the busy
timeout (Django's ``OPTIONS["timeout"]``, 5 s unless set). A write transaction
that began by reading cannot wait for the lock, so every transaction here
takes the write lock first, and a "database is locked" error that still gets
through is retried here with backoff rather than shown to the caller. In WAL
mode readers never wait for the writer (system check ``pgjobs.W001`` asks for
it); Django >= 5.1 turns it on per connection::

    "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL", "transaction_mode": "IMMEDIATE"}

(``transaction_mode`` makes your own ``atomic()`` blocks take the write lock
first too, so enqueueing inside one waits instead of failing.)

Time: SQLite runs in this process, so "now" is this process's clock, in the
text form Django stores (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC under ``USE_TZ``),
which compares correctly as text.
"""

import contextlib
import logging
import random
import sqlite3
import time

from django.db import OperationalError, transaction
from django.db.models import BooleanField, DateTimeField, JSONField, Value
from django.utils import timezone
from django.utils.functional import cached_property

from ..records import ClaimedJob, JobInfo
from ..serialization import dumps
from .orm import INFO_FIELDS, OrmStore, load_json, seconds

logger = logging.getLogger("pgjobs")

MAX_ATTEMPTS = 8
BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}

CLAIMED_FIELDS = (
    "id",
    "func",
    "args",
    "kwargs",
    "queue",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "timeout",
    "signature",
)

# ``status = 'ready'`` is written out, not bound: SQLite uses a partial index
# only when the query's own text implies the index's condition.
DUE = """
SELECT id FROM pgjobs_job
WHERE status = 'ready' AND run_at <= %(now)s {queue_filter}
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
"""

MARK = """
UPDATE pgjobs_job
SET status = 'running', attempts = attempts + 1, started_at = %(now)s,
    worker_id = %(worker_id)s, lease_expires_at = %(lease_expires_at)s
WHERE id IN ({ids})
"""

# SQLite >= 3.35: the claim is one statement.
CLAIM = MARK.format(ids=DUE) + f"RETURNING {', '.join(CLAIMED_FIELDS)}"

# KEEP_SUCCEEDED False: succeeded jobs are deleted instead of updated.
FINISH_DELETE = """
DELETE FROM pgjobs_job WHERE id IN ({ids}) AND status = 'running' AND worker_id = %(worker_id)s
"""

FINISH = """
UPDATE pgjobs_job
SET status = 'succeeded', result = CASE id {cases} END, finished_at = %(now)s,
    lease_expires_at = NULL
WHERE id IN ({ids}) AND status = 'running' AND worker_id = %(worker_id)s
"""

NEXT_RUN_AT = "SELECT MIN(run_at) FROM pgjobs_job WHERE status = 'ready' {queue_filter}"

COUNT_DUE = (
    "SELECT COUNT(*) FROM pgjobs_job WHERE status = 'ready' AND run_at <= %(now)s {queue_filter}"
)

# Retention: up to N jobs in the given statuses that finished before a cutoff,
# oldest first, read from pgjobs_job_finished_idx (``finished_at <`` implies
# its ``finished_at IS NOT NULL``). SQLite has one writer: pruners take turns.
PRUNE_BATCH = """
DELETE FROM pgjobs_job WHERE id IN (
    SELECT id FROM pgjobs_job
    WHERE status IN ({statuses}) AND finished_at < %(cutoff)s
    ORDER BY status, finished_at
    LIMIT %(limit)s
)
"""


def is_busy(exc):
    """SQLite's "database is locked" (or "database table is locked")."""
    code = getattr(exc.__cause__, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in BUSY_CODES
    return "is locked" in str(exc)


class SQLiteStore(OrmStore):
    """Jobs in a SQLite database file, through Django's connection for the alias."""

    default_poll_interval = 1.0

    # -- time --------------------------------------------------------------------

    def now(self):
        return Value(timezone.now(), output_field=DateTimeField())

    def _db_time(self, value):
        return self.connection.ops.adapt_datetimefield_value(value)

    @cached_property
    def _converters(self):
        """Column -> how a raw value from sqlite3 becomes the model's value."""
        converters = {}
        for field in self.jobs().model._meta.concrete_fields:
            if isinstance(field, JSONField):
                converters[field.column] = load_json
            elif isinstance(field, BooleanField):
                converters[field.column] = _boolean
            elif isinstance(field, DateTimeField):
                converters[field.column] = self._from_db_time
        return converters

    def _from_db_time(self, value):
        if value is None:
            return None
        return self.connection.ops.convert_datetimefield_value(value, None, self.connection)

    def _from_db(self, names, row):
        converters = self._converters
        return {
            name: converters[name](value) if name in converters else value
            for name, value in zip(names, row, strict=True)
        }

    # -- plumbing ----------------------------------------------------------------

    @cached_property
    def _returning(self):
        return self.connection.features.can_return_columns_from_insert  # SQLite >= 3.35

    def _in_transaction(self):
        connection = self.connection
        return connection.in_atomic_block or not connection.get_autocommit()

    def _retrying(self, operation, *args, **kwargs):
        """Run ``operation``, again (with backoff) while the database is locked.

        Inside the caller's transaction the error is the caller's: their
        transaction must be rolled back and retried as a whole.
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return operation(*args, **kwargs)
            except OperationalError as exc:
                if not is_busy(exc) or attempt == MAX_ATTEMPTS or self._in_transaction():
                    raise
                delay = min(1.0, 0.01 * 2**attempt) * random.uniform(0.5, 1.5)
                logger.debug("pgjobs: %s; retrying in %.3f s", exc, delay)
                time.sleep(delay)

    @contextlib.contextmanager
    def _write_transaction(self):
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock before reading,
        waiting the busy timeout for it. Inside the caller's transaction, use it."""
        if self._in_transaction():
            yield
            return
        with self.connection.cursor() as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield
                cursor.execute("COMMIT")  # can be refused (busy): then roll back too
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise

    @staticmethod
    def _sql_queue_filter(queues, params):
        if not queues:
            return ""
        names = []
        for n, queue in enumerate(queues):
            params[f"queue{n}"] = queue
            names.append(f"%(queue{n})s")
        return f"AND queue IN ({', '.join(names)})"

    # -- producers ---------------------------------------------------------------

    def _row_values(self, spec):
        """Column -> database value for one job, through Django's own adapters."""
        fields = {field.name: field for field in self.jobs().model._meta.concrete_fields}
        values = self._model_kwargs(spec)
        values.setdefault("run_at", None)
        return {
            name: dumps(value)
            if isinstance(fields[name], JSONField)
            else fields[name].get_db_prep_save(value, self.connection)
            for name, value in values.items()
        }

    def _insert_sql(self, columns, rows):
        one_row = ", ".join(
            "COALESCE(%s, %s)" if column == "run_at" else "%s" for column in columns
        )
        quoted = ", ".join(self.connection.ops.quote_name(column) for column in columns)
        values = ", ".join([f"({one_row}, %s)"] * rows)
        return f"INSERT INTO pgjobs_job ({quoted}, created_at) VALUES {values}"

    def _insert_params(self, row, now):
        params = []
        for column, value in row.items():
            params.extend([value, now] if column == "run_at" else [value])
        params.append(now)  # created_at
        return params

    def enqueue(self, spec):
        return self._retrying(self._enqueue_rows, [spec])[0]

    def enqueue_many(self, specs):
        specs = list(specs)  # read once, see Store.enqueue_many
        if not specs:
            return []
        return self._retrying(self._enqueue_many, specs)

    def _enqueue_many(self, specs):
        per_row = len(self._row_values(specs[0])) + 2
        batch = max(1, self.connection.features.max_query_params // per_row)
        if len(specs) <= batch:
            return self._enqueue_rows(specs)
        with transaction.atomic(using=self.alias):  # all or nothing
            return [
                info
                for start in range(0, len(specs), batch)
                for info in self._enqueue_rows(specs[start : start + batch])
            ]

    def _enqueue_rows(self, specs):
        """One INSERT (several rows); they come back with RETURNING (SQLite >= 3.35)."""
        now = self._db_time(timezone.now())
        rows = [self._row_values(spec) for spec in specs]
        columns = list(rows[0])
        select = f"SELECT {', '.join(INFO_FIELDS)} FROM pgjobs_job"
        with self.connection.cursor() as cursor:
            if not self._returning:
                infos = []
                for row in rows:
                    cursor.execute(self._insert_sql(columns, 1), self._insert_params(row, now))
                    cursor.execute(f"{select} WHERE id = %s", [cursor.lastrowid])
                    infos.append(JobInfo(**self._from_db(INFO_FIELDS, cursor.fetchone())))
                return infos
            params = [param for row in rows for param in self._insert_params(row, now)]
            query = f"{self._insert_sql(columns, len(rows))} RETURNING {', '.join(INFO_FIELDS)}"
            cursor.execute(query, params)
            infos = [JobInfo(**self._from_db(INFO_FIELDS, row)) for row in cursor.fetchall()]
        return sorted(infos, key=lambda info: info.id)

    def cancel(self, *args, **kwargs):
        return self._retrying(super().cancel, *args, **kwargs)

    # -- workers -----------------------------------------------------------------

    def claim(self, queues, limit, worker_id):
        return self.finish_and_claim(worker_id, [], queues, limit)

    def finish(self, worker_id, results):
        if results:
            self._retrying(self._finish, worker_id, results)

    def finish_and_claim(self, worker_id, results, queues, limit):
        """Record a batch's successes and claim the next batch: one transaction,
        one commit (SQLite's cost is mostly the commit's sync)."""
        if limit <= 0:
            self.finish(worker_id, results)
            return []
        return self._retrying(self._finish_and_claim, worker_id, results, queues, limit)

    def _finish(self, worker_id, results):
        if not self.keep_succeeded:
            ids = ", ".join(str(int(job_id)) for job_id, _ in results)
            with self.connection.cursor() as cursor:
                cursor.execute(FINISH_DELETE.format(ids=ids), {"worker_id": worker_id})
            return
        params = {"worker_id": worker_id, "now": self._db_time(timezone.now())}
        for n, (job_id, result) in enumerate(results):
            params[f"id{n}"], params[f"result{n}"] = job_id, dumps(result)
        query = FINISH.format(
            cases=" ".join(f"WHEN %(id{n})s THEN %(result{n})s" for n in range(len(results))),
            ids=", ".join(f"%(id{n})s" for n in range(len(results))),
        )
        with self.connection.cursor() as cursor:
            cursor.execute(query, params)

    def _finish_and_claim(self, worker_id, results, queues, limit):
        now = timezone.now()
        params = {
            "now": self._db_time(now),
            "lease_expires_at": self._db_time(now + seconds(self.lease_seconds)),
            "worker_id": worker_id,
            "limit": limit,
        }
        queue_filter = self._sql_queue_filter(queues, params)
        with self._write_transaction(), self.connection.cursor() as cursor:
            if results:
                self._finish(worker_id, results)
            if self._returning:
                cursor.execute(CLAIM.format(queue_filter=queue_filter), params)
                rows = cursor.fetchall()
            else:
                cursor.execute(DUE.format(queue_filter=queue_filter), params)
                ids = ", ".join(str(int(job_id)) for (job_id,) in cursor.fetchall())
                rows = []
                if ids:
                    cursor.execute(MARK.format(ids=ids), params)
                    cursor.execute(
                        f"SELECT {', '.join(CLAIMED_FIELDS)} FROM pgjobs_job WHERE id IN ({ids})"
                    )
                    rows = cursor.fetchall()
        return [ClaimedJob(**self._from_db(CLAIMED_FIELDS, row)) for row in rows]

    # The ORM's operations, retried like the rest.

    def retry(self, *args, **kwargs):
        return self._retrying(super().retry, *args, **kwargs)

    def fail(self, *args, **kwargs):
        return self._retrying(super().fail, *args, **kwargs)

    def heartbeat(self, *args, **kwargs):
        return self._retrying(super().heartbeat, *args, **kwargs)

    def rescue(self, *args, **kwargs):
        return self._retrying(super().rescue, *args, **kwargs)

    def release(self, *args, **kwargs):
        return self._retrying(super().release, *args, **kwargs)

    # Written out (not the ORM's) so that the partial claim index serves them.

    def seconds_until_due(self, queues):
        params = {}
        query = NEXT_RUN_AT.format(queue_filter=self._sql_queue_filter(queues, params))
        with self.connection.cursor() as cursor:
            cursor.execute(query, params)
            (next_run,) = cursor.fetchone()
        if next_run is None:
            return None
        return max(0.0, (self._from_db_time(next_run) - timezone.now()).total_seconds())

    def prune_batch(self, older_than, statuses, limit):
        """Delete up to ``limit`` expired jobs in one statement, under the write
        lock (taken first, waiting the busy timeout), retried while busy."""
        return self._retrying(self._prune_batch, older_than, statuses, limit)

    def _prune_batch(self, older_than, statuses, limit):
        params = {"cutoff": self._db_time(timezone.now() - older_than), "limit": limit}
        names = []
        for n, status in enumerate(statuses):
            params[f"status{n}"] = status
            names.append(f"%(status{n})s")
        query = PRUNE_BATCH.format(statuses=", ".join(names))
        with self._write_transaction(), self.connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.rowcount

    def count_due(self, queues):
        params = {"now": self._db_time(timezone.now())}
        query = COUNT_DUE.format(queue_filter=self._sql_queue_filter(queues, params))
        with self.connection.cursor() as cursor:
            cursor.execute(query, params)
            (count,) = cursor.fetchone()
        return count


def _boolean(value):
    return value if value is None else bool(value)
