"""The MySQL/MariaDB store: claims with ``SELECT ... FOR UPDATE SKIP LOCKED`` and
an ``UPDATE`` in one short transaction; idle workers poll. All of pgjobs' MySQL
SQL is here.

Needs MariaDB >= 10.6 or MySQL >= 8.0 (``SKIP LOCKED``); migration 0002 adds
the claim index these servers need (they ignore partial indexes). MariaDB >=
10.8 and MySQL honour its descending ``priority``, so a claim reads only the
rows it takes; older MariaDB sorts the due rows on each claim instead.

Time: under ``USE_TZ`` Django stores naive UTC in ``DATETIME(6)`` columns but
leaves the session time zone alone, so the server's ``NOW()`` is in whatever
zone it runs in. Every statement here, and the ORM operations through
``now()``, use ``UTC_TIMESTAMP(6)`` instead.
"""

import contextlib
import datetime
import logging
import random
import time

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import BooleanField, DateTimeField, Func, JSONField, Value
from django.utils import timezone
from django.utils.functional import cached_property

from ..records import ClaimedJob, JobInfo
from ..serialization import dumps
from .orm import INFO_FIELDS, OrmStore, load_json

logger = logging.getLogger("pgjobs")

#: Server errors that only mean "try again": deadlock found (1213), lock wait
#: timeout (1205). InnoDB rolled the statement or transaction back.
RETRYABLE_ERRORS = {1205, 1213}
MAX_ATTEMPTS = 8

#: Rows per INSERT in ``enqueue_many``, well under ``max_allowed_packet``.
INSERT_BATCH = 500

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

# Lock up to N due rows in claim order, skipping rows other workers hold. The
# rows are read here, locked, so the UPDATE that follows need not return them.
CLAIM_LOCK = f"""
SELECT {", ".join(CLAIMED_FIELDS)} FROM pgjobs_job
WHERE status = 'ready' AND run_at <= {{now}} {{queue_filter}}
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

CLAIM_MARK = """
UPDATE pgjobs_job
SET status = 'running', attempts = attempts + 1, started_at = {now},
    worker_id = %(worker_id)s, lease_expires_at = {now} + INTERVAL %(lease)s MICROSECOND
WHERE id IN ({ids})
"""

# KEEP_SUCCEEDED False: succeeded jobs are deleted instead of updated.
FINISH_DELETE = """
DELETE FROM pgjobs_job WHERE id IN ({ids}) AND status = 'running' AND worker_id = %(worker_id)s
"""

# One statement for every success of a batch; the guard keeps a job whose
# lease was lost from completing twice.
FINISH = """
UPDATE pgjobs_job
SET status = 'succeeded', result = CASE id {cases} END, finished_at = {now},
    lease_expires_at = NULL
WHERE id IN ({ids}) AND status = 'running' AND worker_id = %(worker_id)s
"""

SECONDS_UNTIL_DUE = """
SELECT TIMESTAMPDIFF(MICROSECOND, {now}, MIN(run_at)) FROM pgjobs_job
WHERE status = 'ready' {queue_filter}
"""

# Retention: lock up to N jobs in the given statuses that finished before now -
# age, oldest first (in the order of pgjobs_job_finished_idx, so that it is read
# and no more), skipping rows another pruner holds, then delete them in the same
# short transaction. Concurrent pruners take different rows and never wait for
# each other; each row is deleted once.
PRUNE_LOCK = """
SELECT id FROM pgjobs_job
WHERE status IN %(statuses)s AND finished_at < {now} - INTERVAL %(age)s MICROSECOND
ORDER BY status, finished_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

PRUNE_DELETE = "DELETE FROM pgjobs_job WHERE id IN ({ids})"


class UtcNow(Func):
    """``UTC_TIMESTAMP(6)``: now in the form Django stores under ``USE_TZ``."""

    template = "UTC_TIMESTAMP(6)"
    output_field = DateTimeField()


class MySQLStore(OrmStore):
    """Jobs in a MySQL or MariaDB database, through Django's connection for the alias."""

    default_poll_interval = 1.0

    # -- time --------------------------------------------------------------------

    @cached_property
    def _utc_clock(self):
        """The server's UTC clock matches the stored times (the usual setup).
        Otherwise (``USE_TZ = False``, or a ``TIME_ZONE`` on the database) the
        times are local: use this process's clock, converted by Django."""
        return settings.USE_TZ and self.connection.timezone_name == "UTC"

    def now(self):
        if self._utc_clock:
            return UtcNow()
        return Value(timezone.now(), output_field=DateTimeField())

    def _now_sql(self):
        """Now, as SQL for the statements below."""
        if self._utc_clock:
            return "UTC_TIMESTAMP(6)"
        # Our own formatting of a datetime: nothing in it needs escaping.
        local = self.connection.ops.adapt_datetimefield_value(timezone.now())
        return f"CAST('{local}' AS DATETIME(6))"

    @cached_property
    def _converters(self):
        """Column -> how a raw value from the driver becomes the model's value."""
        converters = {}
        for field in self.jobs().model._meta.concrete_fields:
            if isinstance(field, JSONField):
                converters[field.column] = load_json
            elif isinstance(field, BooleanField):
                converters[field.column] = _boolean
            elif isinstance(field, DateTimeField) and settings.USE_TZ:
                converters[field.column] = self._aware
        return converters

    def _aware(self, value):
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

    def _in_transaction(self):
        connection = self.connection
        return connection.in_atomic_block or not connection.get_autocommit()

    def _retrying(self, operation, *args, **kwargs):
        """Run ``operation``, again after a deadlock or lock wait timeout.

        Inside the caller's transaction there is nothing to retry (the server
        rolled it back, or the statement's effects are the caller's to judge),
        so the error goes to the caller.
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return operation(*args, **kwargs)
            except DatabaseError as exc:
                code = exc.args[0] if exc.args else None
                if code not in RETRYABLE_ERRORS or attempt == MAX_ATTEMPTS:
                    raise
                if self._in_transaction():
                    raise
                delay = min(0.5, 0.005 * 2**attempt) * random.uniform(0.5, 1.5)
                logger.debug("pgjobs: %s; retrying in %.3f s", exc, delay)
                time.sleep(delay)

    @staticmethod
    def _sql_queue_filter(queues):
        return "AND queue IN %(queues)s" if queues else ""

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
        now = self._now_sql()
        one_row = ", ".join(
            f"COALESCE(%s, {now})" if column == "run_at" else "%s" for column in columns
        )
        quoted = ", ".join(self.connection.ops.quote_name(column) for column in columns)
        values = ", ".join([f"({one_row}, {now})"] * rows)
        return f"INSERT INTO pgjobs_job ({quoted}, created_at) VALUES {values}"

    def enqueue(self, spec):
        return self._retrying(self._enqueue_rows, [spec])[0]

    def enqueue_many(self, specs):
        specs = list(specs)  # read once, see Store.enqueue_many
        if not specs:
            return []
        if len(specs) <= INSERT_BATCH:
            return self._retrying(self._enqueue_rows, specs)
        return self._retrying(self._enqueue_batches, specs)

    def _enqueue_batches(self, specs):
        with transaction.atomic(using=self.alias):  # all or nothing
            return [
                info
                for start in range(0, len(specs), INSERT_BATCH)
                for info in self._enqueue_rows(specs[start : start + INSERT_BATCH])
            ]

    def _enqueue_rows(self, specs):
        """One multi-row INSERT; its rows come back with RETURNING on MariaDB.

        MySQL has no INSERT ... RETURNING, and a multi-row INSERT's ids need not
        be consecutive there (``innodb_autoinc_lock_mode = 2``), so on MySQL
        each row is inserted and read back by its own id, in one transaction.
        """
        rows = [self._row_values(spec) for spec in specs]
        columns = list(rows[0])
        if not self.connection.features.can_return_columns_from_insert:
            with transaction.atomic(using=self.alias), self.connection.cursor() as cursor:
                return [self._insert_one(cursor, columns, row) for row in rows]
        query = f"{self._insert_sql(columns, len(rows))} RETURNING {', '.join(INFO_FIELDS)}"
        with self.connection.cursor() as cursor:
            cursor.execute(query, [value for row in rows for value in row.values()])
            infos = [JobInfo(**self._from_db(INFO_FIELDS, row)) for row in cursor.fetchall()]
        return sorted(infos, key=lambda info: info.id)

    def _insert_one(self, cursor, columns, row):
        cursor.execute(self._insert_sql(columns, 1), list(row.values()))
        cursor.execute(
            f"SELECT {', '.join(INFO_FIELDS)} FROM pgjobs_job WHERE id = %s", [cursor.lastrowid]
        )
        return JobInfo(**self._from_db(INFO_FIELDS, cursor.fetchone()))

    def cancel(self, *args, **kwargs):
        return self._retrying(super().cancel, *args, **kwargs)

    # -- workers -----------------------------------------------------------------

    def claim(self, queues, limit, worker_id):
        return self.finish_and_claim(worker_id, [], queues, limit)

    def finish(self, worker_id, results):
        if results:
            self._retrying(self._finish, worker_id, results)

    def finish_and_claim(self, worker_id, results, queues, limit):
        """Record a batch's successes and claim the next batch in one transaction."""
        if limit <= 0:
            self.finish(worker_id, results)
            return []
        return self._retrying(self._finish_and_claim, worker_id, results, queues, limit)

    def _finish_statement(self, worker_id, results):
        """The statement recording ``results``: an UPDATE, or with
        ``KEEP_SUCCEEDED = False`` a DELETE. Job ids are integers."""
        ids = ", ".join(str(int(job_id)) for job_id, _ in results)
        params = {"worker_id": worker_id}
        if not self.keep_succeeded:
            return FINISH_DELETE.format(ids=ids), params
        cases = []
        for n, (job_id, result) in enumerate(results):
            cases.append(f"WHEN {int(job_id)} THEN %(result{n})s")
            params[f"result{n}"] = dumps(result)
        return FINISH.format(now=self._now_sql(), cases=" ".join(cases), ids=ids), params

    def _finish(self, worker_id, results):
        query, params = self._finish_statement(worker_id, results)
        with self.connection.cursor() as cursor:
            cursor.execute(query, params)

    def _finish_and_claim(self, worker_id, results, queues, limit):
        """Two round trips: begin, record the successes and lock the next jobs;
        then mark those running and commit. Inside the caller's transaction,
        the same statements without the begin and the commit."""
        now = self._now_sql()
        params = {
            "limit": limit,
            "worker_id": worker_id,
            "lease": round(self.lease_seconds * 1e6),
            "queues": tuple(queues or ()),
        }
        first = []
        if results:
            finish, finish_params = self._finish_statement(worker_id, results)
            first.append(finish)
            params.update(finish_params)
        first.append(CLAIM_LOCK.format(now=now, queue_filter=self._sql_queue_filter(queues)))

        def mark(rows):
            ids = ", ".join(str(int(row[0])) for row in rows)
            return [CLAIM_MARK.format(now=now, ids=ids)], params

        rows = self._lock_then(first, params, mark)
        return [self._claimed(row) for row in rows]

    def _claimed(self, row):
        values = self._from_db(CLAIMED_FIELDS, row)
        values["attempts"] += 1  # as the UPDATE set it
        return ClaimedJob(**values)

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

    def prune_batch(self, older_than, statuses, limit):
        """Delete up to ``limit`` expired jobs: lock them (``SKIP LOCKED``), delete
        them, commit; two round trips, retried after a deadlock."""
        return self._retrying(self._prune_batch, older_than, statuses, limit)

    def _lock_then(self, first, params, then):
        """Run ``first`` (ending in a locking read), then ``then(rows)``'s statements
        for the rows it returned, in one short READ COMMITTED transaction of our
        own, or inside the caller's. One round trip each when the site allows
        multi-statements. Returns the locking read's rows."""
        own = not self._in_transaction()
        begin = []
        if own:
            if self.connection.isolation_level != "read committed":
                # Django's default for MySQL; without it the locking read takes gap locks.
                begin.append("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            begin.append("START TRANSACTION")
        connection = self.connection
        together = connection.settings_dict["OPTIONS"].get("multi_statements", True)
        with connection.cursor() as cursor, connection.wrap_database_errors:
            try:
                rows = _execute_all(cursor, begin + first, params, together)
                follow, follow_params = then(rows) if rows else ([], None)
                follow += ["COMMIT"] if own else []
                if follow:
                    _execute_all(cursor, follow, follow_params, together)
            except BaseException:
                if own:
                    with contextlib.suppress(Exception):
                        cursor.execute("ROLLBACK")
                raise
        return rows

    def _prune_batch(self, older_than, statuses, limit):
        params = {
            "statuses": tuple(statuses),
            "age": older_than // datetime.timedelta(microseconds=1),
            "limit": limit,
        }

        def delete(rows):
            ids = ", ".join(str(int(job_id)) for (job_id,) in rows)
            return [PRUNE_DELETE.format(ids=ids)], None

        rows = self._lock_then([PRUNE_LOCK.format(now=self._now_sql())], params, delete)
        return len(rows)

    def seconds_until_due(self, queues):
        query = SECONDS_UNTIL_DUE.format(
            now=self._now_sql(), queue_filter=self._sql_queue_filter(queues)
        )
        with self.connection.cursor() as cursor:
            cursor.execute(query, {"queues": tuple(queues or ())})
            (microseconds,) = cursor.fetchone()
        return None if microseconds is None else max(0.0, microseconds / 1e6)


def _execute_all(cursor, statements, params, together=True):
    """Run ``statements`` in one round trip (mysqlclient sends several at once
    unless told not to), else one by one; return the rows of the last."""
    if not together:
        for statement in statements:
            cursor.execute(statement, params)
        return cursor.fetchall()
    cursor.execute(";\n".join(statements), params)
    for _ in statements[1:]:
        cursor.nextset()
    rows = cursor.fetchall()
    while cursor.nextset():
        pass
    return rows


def _boolean(value):
    return value if value is None else bool(value)
