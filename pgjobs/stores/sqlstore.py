"""What the MySQL/MariaDB and SQLite stores share: rows read through the model's
fields, errors that only mean "try again" retried with backoff, the ORM's
operations retried like the rest, batches of jobs inserted in one statement.

A subclass supplies its statements (``sql/<vendor>.sql``), which errors are
retryable, how its clock and times are read, and its claim; everything else is
here, written once.
"""

import dataclasses
import functools
import logging
import random
import time

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import BooleanField, DateTimeField, JSONField
from django.utils import timezone
from django.utils.functional import cached_property

from ..records import SUCCEEDED, ClaimedJob, JobInfo
from ..serialization import dumps
from .base import DECODE_ERRORS, args_json, load_json, one_line, read_arguments
from .orm import INFO_FIELDS, Ended, OrmStore
from .queries import sql as vendor_sql
from .queries import values

logger = logging.getLogger("pgjobs")

#: The columns a claim reads: ``ClaimedJob``'s fields, in order, but ``problem``.
CLAIMED_FIELDS = tuple(
    field.name for field in dataclasses.fields(ClaimedJob) if field.name != "problem"
)

#: The columns an enqueue writes, in the order of the ``insert_row`` statement.
INSERT_FIELDS = (
    "func",
    "args",
    "kwargs",
    "queue",
    "priority",
    "run_at",
    "max_attempts",
    "timeout",
    "unique_key",
    "signature",
    "traceparent",
)


def _retried(operation):
    """``operation`` (an ``OrmStore`` method) run through ``SqlStore._retrying``."""

    @functools.wraps(operation)
    def retried(self, *args, **kwargs):
        return self._retrying(operation, self, *args, **kwargs)

    return retried


class SqlStore(OrmStore):
    """An ``OrmStore`` whose hot paths are its vendor's own statements."""

    #: Attempts at an operation that keeps meeting retryable errors.
    max_attempts = 8
    #: Backoff: the first retry waits about ``retry_base * 2`` seconds, doubling
    #: up to ``retry_cap`` (each wait jittered by ±50%).
    retry_base = 0.005
    retry_cap = 0.5
    #: Rows per INSERT in ``enqueue_many``.
    insert_batch = 500

    def __init__(self, alias="default", **options):
        super().__init__(alias, **options)
        self.sql = vendor_sql(self.connection)

    # -- hooks -------------------------------------------------------------------

    def is_retryable(self, exc):
        """Whether ``exc`` (a ``DatabaseError``) only means "try again"."""
        raise NotImplementedError

    def _datetime_converter(self):
        """How a raw datetime from the driver becomes the model's value, or None
        when the driver's value is already right."""
        return self._from_db_time

    def _from_db_time(self, value):
        if value is None:
            return None
        return self.connection.ops.convert_datetimefield_value(value, None, self.connection)

    def _insert_now(self):
        """The ``now`` parameter of ``insert_row`` (None: the server's clock)."""
        raise NotImplementedError

    # -- reading rows --------------------------------------------------------------

    @property
    def _converters(self):
        """Column -> how a raw value from the driver becomes the model's value;
        made again when ``USE_TZ`` changes (``override_settings`` in a site's tests:
        the store outlives it), since the datetime converter depends on it."""
        use_tz = settings.USE_TZ
        made = self.__dict__.get("_made_converters")
        if made is None or made[0] != use_tz:
            made = self.__dict__["_made_converters"] = (use_tz, self._make_converters())
        return made[1]

    def _make_converters(self):
        converters = {}
        to_datetime = self._datetime_converter()
        for field in self.jobs().model._meta.concrete_fields:
            if isinstance(field, JSONField):
                converters[field.column] = load_json
            elif isinstance(field, BooleanField):
                converters[field.column] = _boolean
            elif isinstance(field, DateTimeField) and to_datetime is not None:
                converters[field.column] = to_datetime
        return converters

    def _from_db(self, names, row):
        converters = self._converters
        return {
            name: converters[name](value) if name in converters else value
            for name, value in zip(names, row, strict=True)
        }

    def _claimed(self, row, attempts_added=0):
        """A ``ClaimedJob`` from a claimed row (``CLAIMED_FIELDS``). A row it
        cannot read (arguments it cannot decode, a time it cannot parse) comes
        back with its ``problem`` set, not as an error of the whole claim."""
        args, kwargs = row[2], row[3]
        try:
            values = self._from_db(CLAIMED_FIELDS, (*row[:2], "[]", "{}", *row[4:]))
        except DECODE_ERRORS as exc:
            values = dict(zip(CLAIMED_FIELDS, row, strict=True))
            values.update(
                args=None,
                kwargs=None,
                run_at=timezone.now(),  # any time: claim order sorts by it
                problem="cannot read the job's row: " + one_line(exc),
            )
        else:
            values["args"], values["kwargs"], values["problem"] = read_arguments(args, kwargs)
        values["attempts"] += attempts_added
        return ClaimedJob(**values)

    # -- plumbing ----------------------------------------------------------------

    def _in_transaction(self):
        connection = self.connection
        return connection.in_atomic_block or not connection.get_autocommit()

    def _retrying(self, operation, *args, **kwargs):
        """Run ``operation``, again with backoff after an error that only means
        "try again" (``is_retryable``).

        Inside the caller's transaction there is nothing to retry (the server
        rolled it back, or the statement's effects are the caller's to judge),
        so the error goes to the caller.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                return operation(*args, **kwargs)
            except DatabaseError as exc:
                if (
                    not self.is_retryable(exc)
                    or attempt == self.max_attempts
                    or self._in_transaction()
                ):
                    raise
                delay = min(self.retry_cap, self.retry_base * 2**attempt)
                delay *= random.uniform(0.5, 1.5)
                logger.debug("pgjobs: %s; retrying in %.3f s", exc, delay)
                time.sleep(delay)

    # -- producers ---------------------------------------------------------------

    def _insert_params(self, spec, now, batch_id=None):
        """The parameters of one ``insert_row``, through Django's own adapters."""
        fields = self._insert_fields
        given = self._model_kwargs(spec)
        given.setdefault("run_at", None)
        params = []
        for name in INSERT_FIELDS:
            field = fields[name]
            value = given[name]
            if name == "args":
                params.append(args_json(spec))  # the text its preparer signed, if any
            elif isinstance(field, JSONField):
                params.append(dumps(value))
            else:
                params.append(field.get_db_prep_save(value, self.connection))
            if name == "run_at":
                params.append(now)
        params.append(now)  # created_at
        params.append(batch_id)
        return params

    @cached_property
    def _insert_fields(self):
        return {field.name: field for field in self.jobs().model._meta.concrete_fields}

    def _insert_statement(self, rows):
        """``insert`` with ``rows`` copies of ``insert_row``: the placeholders of
        a batch, the statement's only part that varies."""
        return f"{self.sql.insert} VALUES {values(self.sql.insert_row, rows)}"

    def enqueue(self, spec):
        if spec.after is not None:
            return super().enqueue(spec)  # OrmStore: the previous job's row locked first
        return self._retrying(self._enqueue_rows, [spec])[0]

    def enqueue_many(self, specs, ids=None):
        if ids is not None:
            return super().enqueue_many(specs, ids)
        specs = list(specs)  # read once, see Store.enqueue_many
        if not specs:
            return []
        if any(spec.after is not None for spec in specs):
            return self._retrying(self._enqueue_each, specs)
        if len(specs) <= self.insert_batch:
            return self._retrying(self._enqueue_rows, specs)
        return self._retrying(self._enqueue_batches, specs)

    def _enqueue_batches(self, specs, batch_id=None):
        batch = self.insert_batch
        with transaction.atomic(using=self.alias):  # all or nothing
            return [
                info
                for start in range(0, len(specs), batch)
                for info in self._enqueue_rows(specs[start : start + batch], batch_id)
            ]

    def _enqueue_members(self, specs, batch_id):
        return self._enqueue_batches(specs, batch_id)

    def _enqueue_rows(self, specs, batch_id=None):
        """One multi-row INSERT whose rows come back with RETURNING; where the
        server has none (MySQL), each row inserted and read back by its id, in
        one transaction."""
        now = self._insert_now()
        rows = [self._insert_params(spec, now, batch_id) for spec in specs]
        if not self.connection.features.can_return_columns_from_insert:
            with transaction.atomic(using=self.alias), self.connection.cursor() as cursor:
                infos = []
                for row in rows:
                    cursor.execute(self._insert_statement(1), row)
                    cursor.execute(self.sql.get_info, [cursor.lastrowid])
                    infos.append(JobInfo(**self._from_db(INFO_FIELDS, cursor.fetchone())))
                return infos
        query = f"{self._insert_statement(len(rows))} {self.sql.returning_info}"
        with self.connection.cursor() as cursor:
            cursor.execute(query, [value for row in rows for value in row])
            infos = [JobInfo(**self._from_db(INFO_FIELDS, row)) for row in cursor.fetchall()]
        return sorted(infos, key=lambda info: info.id)

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
        plan = self.controls.plan(queues)
        if plan is not None:  # some queue paused or limited: counted in its own transaction
            self.finish(worker_id, results)
            return self._retrying(self._steered_claim, plan, queues, limit, worker_id)
        return self._retrying(self._finish_and_claim, worker_id, results, queues, limit)

    @staticmethod
    def _results_json(results):
        """``{"<job id>": "<encoded result>", ...}`` as JSON text: a batch's results
        as one parameter, each stored as its text."""
        return dumps({str(int(job_id)): dumps(result) for job_id, result in results})

    def _finish(self, worker_id, results):
        """Record successes outside the caller's transaction: the plain jobs in one
        statement; then, only when some were left (jobs of a batch or with jobs
        chained after them, or whose lease was lost), the rest in a transaction
        that settles them (``_finish_settling``)."""
        if self._finish_plain(worker_id, results) < len(results):
            self._finish_settling(worker_id, results)

    def _finish_plain(self, worker_id, results):
        """The ``finish`` statement with ``plain_only``; returns how many it recorded."""
        raise NotImplementedError

    def _finish_settling(self, worker_id, results):
        """Lock the jobs a batch or a chain waits on (``finishing``), record every
        success, settle: in one transaction (the caller's, if any)."""
        raise NotImplementedError

    def _settle_finished(self, tracked, results):
        """Settle what the jobs just finished (``tracked``: the ``finishing``
        statement's rows, jobs of a batch or with jobs chained after them)
        belong to, in the finish's transaction."""
        if tracked:
            results = {int(job_id): result for job_id, result in results}
            self._settle(
                [
                    Ended(job_id, SUCCEEDED, batch_id, bool(deps), results.get(job_id))
                    for job_id, batch_id, deps in tracked
                ]
            )

    def _finish_and_claim(self, worker_id, results, queues, limit):
        raise NotImplementedError

    def _add_figures(self, rows):
        if not rows:
            return
        adapt = self.connection.ops.adapt_datetimefield_value
        query = (
            f"{self.sql.add_figures} VALUES {values(self.sql.figures_row, len(rows))} "
            f"{self.sql.add_figures_conflict}"
        )
        params = [value for row in rows for value in (adapt(row[0]), *row[1:])]
        with self.connection.cursor() as cursor:
            cursor.execute(query, params)

    def prune_batch(self, older_than, statuses, limit):
        """Delete up to ``limit`` expired jobs in a short transaction of their own,
        retried while the database says "try again"."""
        return self._retrying(self._prune_batch, older_than, statuses, limit)

    def _prune_batch(self, older_than, statuses, limit):
        raise NotImplementedError

    # The ORM's operations, retried like the rest.
    retry = _retried(OrmStore.retry)
    fail = _retried(OrmStore.fail)
    heartbeat = _retried(OrmStore.heartbeat)
    rescue = _retried(OrmStore.rescue)
    release = _retried(OrmStore.release)
    snooze = _retried(OrmStore.snooze)
    set_queue_control = _retried(OrmStore.set_queue_control)


def _boolean(value):
    return value if value is None else bool(value)
