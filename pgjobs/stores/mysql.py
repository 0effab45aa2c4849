"""The MySQL/MariaDB store: jobs in a MySQL or MariaDB database, claimed with
``SELECT ... FOR UPDATE SKIP LOCKED`` and an ``UPDATE`` in one short
transaction; idle workers poll. Its statements are in ``sql/mysql.sql``.

Needs MariaDB >= 10.6 or MySQL >= 8.0 (``SKIP LOCKED``); migration 0002 adds
the claim index these servers need (they ignore partial indexes). MariaDB >=
10.8 and MySQL honour its descending ``priority``, so a claim reads only the
rows it takes; older MariaDB sorts the due rows on each claim instead.

Time: under ``USE_TZ`` Django stores naive UTC in ``DATETIME(6)`` columns but
leaves the session time zone alone, so the server's ``NOW()`` is in whatever
zone it runs in. The statements, and the ORM operations through ``now()``, use
``UTC_TIMESTAMP(6)`` instead.
"""

import contextlib
import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, Func, Value
from django.utils import timezone
from django.utils.functional import cached_property

from .. import stats
from .sqlstore import SqlStore

#: Server errors that only mean "try again": deadlock found (1213), lock wait
#: timeout (1205). InnoDB rolled the statement or transaction back.
RETRYABLE_ERRORS = {1205, 1213}


class UtcNow(Func):
    """``UTC_TIMESTAMP(6)``: now in the form Django stores under ``USE_TZ``."""

    template = "UTC_TIMESTAMP(6)"
    output_field = DateTimeField()


class MySQLStore(SqlStore):
    """Jobs in a MySQL or MariaDB database, through Django's connection for the alias."""

    default_poll_interval = 1.0

    def is_retryable(self, exc):
        return (exc.args[0] if exc.args else None) in RETRYABLE_ERRORS

    def _missing_database(self, exc):
        return (exc.args[0] if exc.args else None) == 1049  # ER_BAD_DB_ERROR: Unknown database

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

    def _now_param(self):
        """The ``%(now)s`` of the statements: None for the server's UTC clock,
        else this process's time in the stored form."""
        if self._utc_clock:
            return None
        return self.connection.ops.adapt_datetimefield_value(timezone.now())

    _insert_now = _now_param

    def _datetime_converter(self):
        return self._from_db_time if settings.USE_TZ else None

    @staticmethod
    def _queue_params(queues):
        # A list the driver expands must not be empty: ("",) stands for none
        # when every_queue makes the list moot.
        return {"every_queue": not queues, "queues": tuple(queues) if queues else ("",)}

    # -- workers -----------------------------------------------------------------

    def _finish_params(self, worker_id, results, plain_only=False):
        """The statements recording ``results`` with their figures (count_finished,
        then finish, or with ``KEEP_SUCCEEDED = False`` the attempts kept and
        finish_delete) and their parameters; ``plain_only``: only the jobs no batch
        counts and none is chained after, which need no settling."""
        params = {
            "worker_id": worker_id,
            "ids": tuple(int(job_id) for job_id, _ in results),
            "now": self._now_param(),
            "plain_only": plain_only,
            "minute": self.connection.ops.adapt_datetimefield_value(
                stats.minute_of(timezone.now())
            ),
            "shard": stats.shard_of(worker_id),
        }
        if not self.keep_succeeded:
            return [
                self.sql.count_finished,
                self.sql.finish_attempts,
                self.sql.finish_delete,
            ], params
        params["results"] = self._results_json(results)
        return [self.sql.count_finished, self.sql.finish], params

    def _finish_plain(self, worker_id, results):
        """The plain successes with their figures (and the attempts kept of jobs
        deleted), in one transaction: one round trip with multi-statements.
        Returns how many finish recorded."""
        queries, params = self._finish_params(worker_id, results, plain_only=True)
        queries = [*queries, self.sql.row_count]
        own = not self._in_transaction()
        begin = self._begin() if own else []
        queries = [*begin, *queries, *([self.sql.commit] if own else [])]
        counted = len(queries) - (2 if own else 1)  # row_count's rows
        connection = self.connection
        together = connection.settings_dict["OPTIONS"].get("multi_statements", True)
        with connection.cursor() as cursor, connection.wrap_database_errors:
            try:
                sets = _execute_all(cursor, queries, params, together)
            except BaseException:
                if own:
                    with contextlib.suppress(Exception):
                        cursor.execute(self.sql.rollback)
                raise
        return sets[counted][0][0]

    def _finish_settling(self, worker_id, results):
        queries, params = self._finish_params(worker_id, results)

        def settle(sets):
            self._settle_finished(sets[0], results)
            return [], params

        self._lock_then([self.sql.finishing, *queries], params, settle)

    def _begin(self):
        """The statements that begin a transaction of our own: READ COMMITTED
        (Django's default for MySQL; without it a locking read takes gap locks)."""
        begin = []
        if self.connection.isolation_level != "read committed":
            begin.append(self.sql.begin_read_committed)
        begin.append(self.sql.begin)
        return begin

    def _finish_and_claim(self, worker_id, results, queues, limit):
        """Two round trips: begin, record the successes and lock the next jobs;
        then mark those running and commit. Inside the caller's transaction,
        the same statements without the begin and the commit."""
        params = {
            "limit": limit,
            "worker_id": worker_id,
            "lease": round(self.lease_seconds * 1e6),
            "now": self._now_param(),
            **self._queue_params(queues),
        }
        first = []
        if results:
            finish, finish_params = self._finish_params(worker_id, results)
            first += [self.sql.finishing, *finish]
            params.update(finish_params)
        first.append(self.sql.claim_lock)

        def mark(sets):
            if results:  # before the commit: in the finish's transaction
                self._settle_finished(sets[0], results)
            rows = sets[-1]
            if not rows:
                return [], params
            return [self.sql.claim_mark], {**params, "ids": tuple(row[0] for row in rows)}

        rows = self._lock_then(first, params, mark)[-1]
        return [self._claimed(row, attempts_added=1) for row in rows]  # as claim_mark set it

    @contextlib.contextmanager
    def _control_transaction(self):
        """A steered claim's transaction, READ COMMITTED as the plain claim's: each
        statement then sees the jobs claimed by the transaction it waited for."""
        with transaction.atomic(using=self.alias):
            if self.connection.isolation_level != "read committed":
                with self.connection.cursor() as cursor:
                    cursor.execute(self.sql.begin_read_committed)
            yield

    def _claim_others(self, include, exclude, limit, worker_id):
        return self._claim_steered(include, exclude, limit, worker_id)  # atomic by itself

    def _claim_steered(self, include, exclude, limit, worker_id):
        params = {
            "limit": limit,
            "worker_id": worker_id,
            "lease": round(self.lease_seconds * 1e6),
            "now": self._now_param(),
            "excluded": tuple(exclude) or ("",),
            **self._queue_params(include),
        }

        def mark(sets):
            if not sets[-1]:
                return [], params
            return [self.sql.claim_mark], {**params, "ids": tuple(row[0] for row in sets[-1])}

        rows = self._lock_then([self.sql.claim_lock_steered], params, mark)[-1]
        return [self._claimed(row, attempts_added=1) for row in rows]

    def _lock_then(self, first, params, then):
        """Run ``first`` (ending in a locking read), then ``then(sets)``'s statements
        (``sets``: the rows of each statement of ``first``), in one short READ
        COMMITTED transaction of our own, or inside the caller's. One round trip
        each when the site allows multi-statements. Returns ``sets``."""
        own = not self._in_transaction()
        begin = self._begin() if own else []
        connection = self.connection
        together = connection.settings_dict["OPTIONS"].get("multi_statements", True)
        with connection.cursor() as cursor, connection.wrap_database_errors:
            try:
                sets = _execute_all(cursor, begin + first, params, together)[len(begin) :]
                follow, follow_params = then(sets)
                follow += [self.sql.commit] if own else []
                if follow:
                    _execute_all(cursor, follow, follow_params, together)
            except BaseException:
                if own:
                    with contextlib.suppress(Exception):
                        cursor.execute(self.sql.rollback)
                raise
        return sets

    def _prune_batch(self, older_than, statuses, limit):
        params = {
            "statuses": tuple(statuses),
            "age": older_than // datetime.timedelta(microseconds=1),
            "limit": limit,
            "now": self._now_param(),
        }

        def delete(sets):
            if not sets[-1]:
                return [], params
            ids = {"ids": tuple(job_id for (job_id,) in sets[-1])}
            return [self.sql.prune_attempts, self.sql.prune_delete], ids

        return len(self._lock_then([self.sql.prune_lock], params, delete)[-1])

    def seconds_until_due(self, queues):
        params = {"now": self._now_param(), **self._queue_params(queues)}
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql.seconds_until_due, params)
            (microseconds,) = cursor.fetchone()
        return None if microseconds is None else max(0.0, microseconds / 1e6)


def _execute_all(cursor, statements, params, together=True):
    """Run ``statements`` in one round trip (mysqlclient sends several at once
    unless told not to), else one by one; return the rows of each, in order."""
    if not together:
        sets = []
        for statement in statements:
            cursor.execute(statement, params)
            sets.append(cursor.fetchall())
        return sets
    cursor.execute(";\n".join(statements), params)
    sets = [cursor.fetchall()]
    while cursor.nextset():
        sets.append(cursor.fetchall())
    return sets
