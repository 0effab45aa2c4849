"""The SQLite store: jobs in a SQLite database file, claimed under SQLite's single
writer with ``BEGIN IMMEDIATE`` and one ``UPDATE ... RETURNING``; idle workers
poll. Its statements are in ``sql/sqlite.sql``.

SQLite lets one connection write at a time; the others wait up to the busy
timeout (Django's ``OPTIONS["timeout"]``, 5 s unless set). A write transaction
that began by reading cannot wait for the lock, so every transaction here
takes the write lock first, and a "database is locked" error that still gets
through is retried with backoff rather than shown to the caller. In WAL mode
readers never wait for the writer (system check ``pgjobs.W001`` asks for it);
Django >= 5.1 turns it on per connection::

    "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL", "transaction_mode": "IMMEDIATE"}

(``transaction_mode`` makes your own ``atomic()`` blocks take the write lock
first too, so enqueueing inside one waits instead of failing.)

Time: SQLite runs in this process, so "now" is this process's clock, in the
text form Django stores (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC under ``USE_TZ``),
which compares correctly as text.
"""

import contextlib
import json
import sqlite3

from django.db import OperationalError, transaction
from django.db.models import DateTimeField, Value
from django.utils import timezone
from django.utils.functional import cached_property

from .. import stats
from .orm import seconds
from .sqlstore import SqlStore

BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def is_busy(exc):
    """SQLite's "database is locked" (or "database table is locked")."""
    code = getattr(exc.__cause__, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in BUSY_CODES
    return "is locked" in str(exc)


def _json_list(values):
    """A list as one parameter: a JSON array for ``json_each``; None for none."""
    return json.dumps(list(values)) if values else None


class SQLiteStore(SqlStore):
    """Jobs in a SQLite database file, through Django's connection for the alias."""

    default_poll_interval = 1.0
    retry_base = 0.01
    retry_cap = 1.0

    def is_retryable(self, exc):
        return isinstance(exc, OperationalError) and is_busy(exc)

    def _missing_database(self, exc):
        # SQLite makes a missing file, but not a missing directory.
        return isinstance(exc, OperationalError) and "unable to open database file" in str(exc)

    @cached_property
    def insert_batch(self):
        per_row = self.sql.insert_row.count("%s")
        return max(1, self.connection.features.max_query_params // per_row)

    # -- time --------------------------------------------------------------------

    def now(self):
        return Value(timezone.now(), output_field=DateTimeField())

    def _db_time(self, value):
        return self.connection.ops.adapt_datetimefield_value(value)

    def _insert_now(self):
        return self._db_time(timezone.now())

    # -- plumbing ----------------------------------------------------------------

    @cached_property
    def _returning(self):
        return self.connection.features.can_return_columns_from_insert  # SQLite >= 3.35

    def _in_transaction(self):
        # Also our own BEGIN IMMEDIATE, which Django does not know of.
        raw = self.connection.connection
        return super()._in_transaction() or (raw is not None and raw.in_transaction)

    @contextlib.contextmanager
    def _write_transaction(self):
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock before reading,
        waiting the busy timeout for it (claims, outcomes with their attempts and
        figures, rescues: no busy upgrade). Inside the caller's transaction, use it."""
        if self._in_transaction():
            yield
            return
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql.begin_immediate)
            try:
                yield
                cursor.execute(self.sql.commit)  # can be refused (busy): then roll back too
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute(self.sql.rollback)
                raise

    def _rescue_transaction(self):
        return self._write_transaction()  # the write lock first: no busy upgrade

    @contextlib.contextmanager
    def job_transaction(self):
        """An atomic job's transaction begins with ``BEGIN IMMEDIATE``: it waits
        the busy timeout for the write lock, then holds it until it ends. A
        deferred transaction that read and then wrote (as every atomic job does,
        recording its success last) could be refused the lock at once, in WAL
        mode, whenever another connection wrote meanwhile. SQLite has one writer:
        while an atomic job runs, every other write (claims, heartbeats, other
        workers) waits for it."""
        connection = self.connection
        connection.ensure_connection()
        with contextlib.ExitStack() as stack:
            mode, connection.transaction_mode = connection.transaction_mode, "IMMEDIATE"
            try:
                stack.enter_context(transaction.atomic(using=self.alias))
            finally:
                connection.transaction_mode = mode
            yield

    # -- workers -----------------------------------------------------------------

    def _finish(self, worker_id, results):
        with self._write_transaction():
            self._record_successes(worker_id, results)

    def _record_successes(self, worker_id, results):
        """The successes of a batch with their figures (and the attempts kept of
        jobs deleted), inside the caller's write transaction: the plain jobs
        first, then, only when some were left (jobs of a batch or with jobs
        chained after them, or whose lease was lost), the rest, settled."""
        if self._finish_plain(worker_id, results) < len(results):
            self._finish_settling(worker_id, results)

    def _finish_params(self, worker_id, results, plain_only):
        now = timezone.now()
        params = {
            "worker_id": worker_id,
            "results": self._results_json(results),
            "plain_only": plain_only,
            "now": self._db_time(now),
            "minute": self._db_time(stats.minute_of(now)),
            "shard": stats.shard_of(worker_id),
        }
        if self.keep_succeeded:
            queries = [self.sql.count_finished, self.sql.finish]
        else:
            queries = [self.sql.count_finished, self.sql.delete_attempts, self.sql.finish_delete]
        return queries, params

    def _finish_plain(self, worker_id, results):
        """Inside the write transaction: returns how many the finish recorded."""
        queries, params = self._finish_params(worker_id, results, True)
        with self.connection.cursor() as cursor:
            for query in queries:
                cursor.execute(query, params)
            return cursor.rowcount

    def _finish_settling(self, worker_id, results):
        """Inside the write transaction: lock-free here (SQLite's write lock is held)."""
        queries, params = self._finish_params(worker_id, results, False)
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql.finishing, params)
            tracked = cursor.fetchall()
            for query in queries:
                cursor.execute(query, params)
            self._settle_finished(tracked, results)

    def _finish_and_claim(self, worker_id, results, queues, limit):
        """One transaction, one commit (SQLite's cost is mostly the commit's sync)."""
        params = self._claim_params(queues, limit, worker_id)
        with self._write_transaction():
            if results:
                self._record_successes(worker_id, results)
            return self._claim_rows(self.sql.claim, self.sql.due, params)

    def _control_transaction(self):
        return self._write_transaction()

    def _claim_steered(self, include, exclude, limit, worker_id):
        params = self._claim_params(include, limit, worker_id)
        params["excluded"] = json.dumps(list(exclude))
        return self._claim_rows(self.sql.claim_steered, self.sql.due_steered, params)

    def _claim_params(self, queues, limit, worker_id):
        now = timezone.now()
        return {
            "now": self._db_time(now),
            "lease_expires_at": self._db_time(now + seconds(self.lease_seconds)),
            "worker_id": worker_id,
            "limit": limit,
            "queues": _json_list(queues),
        }

    def _claim_rows(self, claim, due, params):
        """Claim in the caller's write transaction: ``claim`` where SQLite has
        RETURNING (3.35), else ``due``, ``mark`` and ``claimed``."""
        with self.connection.cursor() as cursor:
            if self._returning:
                cursor.execute(claim, params)
                rows = cursor.fetchall()
            else:
                cursor.execute(due, params)
                ids = _json_list(job_id for (job_id,) in cursor.fetchall())
                rows = []
                if ids:
                    cursor.execute(self.sql.mark, {**params, "ids": ids})
                    cursor.execute(self.sql.claimed, {"ids": ids})
                    rows = cursor.fetchall()
        return [self._claimed(row) for row in rows]

    # Written out (not the ORM's) so that the partial claim index serves them.

    def seconds_until_due(self, queues):
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql.next_run_at, {"queues": _json_list(queues)})
            (next_run,) = cursor.fetchone()
        if next_run is None:
            return None
        return max(0.0, (self._from_db_time(next_run) - timezone.now()).total_seconds())

    def _prune_batch(self, older_than, statuses, limit):
        params = {
            "cutoff": self._db_time(timezone.now() - older_than),
            "limit": limit,
            "statuses": _json_list(statuses),
        }
        with self._write_transaction(), self.connection.cursor() as cursor:
            cursor.execute(self.sql.prune_attempts, params)
            cursor.execute(self.sql.prune_batch, params)
            return cursor.rowcount

    def count_due(self, queues):
        params = {"now": self._db_time(timezone.now()), "queues": _json_list(queues)}
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql.count_due, params)
            (count,) = cursor.fetchone()
        return count
