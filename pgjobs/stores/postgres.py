"""The PostgreSQL store: jobs in a PostgreSQL database, claimed with ``FOR UPDATE
SKIP LOCKED`` in one statement, idle workers woken by ``LISTEN/NOTIFY``.

Its statements are in ``sql/postgres.sql``; this module runs them prepared on
Django's connection for the alias, keeps their plans fit for the table's size,
and bulk-enqueues by binary ``COPY``.

Behind a transaction pooler (PgBouncer ``pool_mode = transaction``, which Django's
``DISABLE_SERVER_SIDE_CURSORS`` says the alias is) a session lasts one transaction:
nothing is prepared (unless the site's ``prepare_threshold`` asks, for PgBouncer
1.21's ``max_prepared_statements``), nothing is ``SET`` on the session, and LISTEN
goes to ``LISTEN_DATABASE`` or not at all (see ``listen``).
"""

import contextlib
import datetime
import itertools
import json
import logging
import re
import struct
import time
import zoneinfo

import psycopg
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg import sql
from psycopg.types.datetime import TimestamptzLoader

from .. import records, stats
from ..exceptions import InvalidBackend
from ..records import ClaimedJob, JobInfo
from ..serialization import dumps
from .base import args_json, load_json, one_line, read_arguments
from .orm import INFO_FIELDS, OrmStore
from .queries import sql as vendor_sql

logger = logging.getLogger("pgjobs")

#: stats.EDGES as one array literal, the finish statements' bucket edges.
_EDGES = "{" + ",".join(repr(edge) for edge in stats.EDGES) + "}"
#: Below this many jobs, one INSERT statement beats three round trips (COPY).
COPY_THRESHOLD = 100
COPY_CHUNK = 5000
#: Read with psycopg's own loader (in C) on our cursors where Django's would give
#: the same aware datetimes; see ``_cursor``.
_TIMESTAMPTZ = psycopg.postgres.types["timestamptz"].oid
#: Seconds between polls of a worker that does not LISTEN (``LISTEN_DATABASE``
#: False, or a pooler in the way): at most, as it backs off from a busy queue.
POLL_ONLY_INTERVAL = 1.0


class PostgresStore(OrmStore):
    """Jobs in a PostgreSQL database, through Django's connection for the alias."""

    supports_listen = True
    listens_on_socket = True
    claims_in_order = True
    # LISTEN wakes workers for jobs due now; polling only backs it up (and
    # deferred jobs are waited for exactly, see ``seconds_until_due``).
    default_poll_interval = 2.0

    def __init__(self, alias="default", *, listen_database=None, **options):
        super().__init__(alias, **options)
        # Where LISTEN goes: None, this alias's server; an alias or a DSN (a direct
        # connection beside a pooler); False, nowhere: workers poll.
        self.listen_database = listen_database
        if listen_database not in (None, False):
            try:
                listen_connection_params(alias, listen_database)  # no connection: a look
            except ValueError as exc:
                raise InvalidBackend(f"DatabaseBackend OPTIONS: {exc}") from None
        if listen_database is False:
            self.supports_listen = False
            self.default_poll_interval = POLL_ONLY_INTERVAL
        # Django's switch for transaction poolers: each transaction may get another
        # server session, so none may hold state a later statement relies on.
        self.pooled = bool(self.connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"))
        self._listener = None
        self._listen_queues = None
        self._listening = False
        self._listener_failed_at = None
        self._sequence = None  # the job table's id sequence, once looked up
        self.sql = vendor_sql(self.connection)

    def describe(self):
        where = f"postgresql database {self.alias!r}"
        if self.pooled:
            where += " (through a transaction pooler: no prepared statements, no session state)"
        if not self.supports_listen:
            return f"{where}, polling (no LISTEN)"
        listen = "" if self.listen_database is None else f" of {self._listen_target()}"
        return f"{where}, woken by LISTEN/NOTIFY{listen} on channel {self.channel!r}"

    def _missing_database(self, exc):
        # 3D000 invalid_catalog_name; at connect, psycopg gives only the server's text.
        cause = exc.__cause__ or exc
        if getattr(cause, "sqlstate", None) == "3D000":
            return True
        return re.search(r'database "[^"]*" does not exist', str(exc)) is not None

    def _execute(self, query, params, fetch=True):
        """Run one statement on Django's connection for the alias, prepared.

        Django's own cursors bind parameters on the client, so Postgres would
        plan every claim and finish afresh (about a millisecond each, ten times
        their execution time). A server-side-binding cursor on the same
        connection lets psycopg prepare each statement once. It shares the
        connection, so it takes part in the caller's ``atomic()`` blocks, and
        errors are Django's ``DatabaseError``s as usual.
        """
        connection = self.connection
        connection.ensure_connection()
        raw = connection.connection
        if raw.prepare_threshold is None and self._may_prepare():
            # Only our cursors can prepare: Django's bind on the client.
            raw.prepare_threshold = 0
        started = time.perf_counter()
        try:
            with connection.wrap_database_errors:
                with _cursor(connection) as cursor:
                    cursor.execute(query, params, prepare=True)
                    return cursor.fetchall() if fetch else None
        finally:
            if connection.queries_logged:  # DEBUG, or a test capturing queries
                elapsed = time.perf_counter() - started
                connection.queries_log.append({"sql": query, "time": f"{elapsed:.3f}"})

    # -- producers -----------------------------------------------------------------

    def _may_prepare(self):
        """Prepared statements unless the site set ``prepare_threshold`` itself
        (``None``: never; a number, PgBouncer 1.21's ``max_prepared_statements``:
        psycopg's threshold), binds on the server, or connects through a
        transaction pooler (``DISABLE_SERVER_SIDE_CURSORS``), where a statement
        prepared in one transaction's server session is missing in the next's,
        or already there under the same name, prepared by another client."""
        options = self.connection.settings_dict.get("OPTIONS", {})
        return (
            "prepare_threshold" not in options
            and not options.get("server_side_binding")
            and not self.pooled
        )

    def enqueue(self, spec):
        if spec.after is not None:
            return super().enqueue(spec)  # OrmStore: the previous job's row locked first
        return _info(self._execute(self.sql.enqueue, self._enqueue_params(spec))[0])

    def enqueue_unique(self, spec):
        for _ in range(10):
            rows = self._execute(self.sql.enqueue_unique, self._enqueue_params(spec))
            if rows:
                return _info(rows[0])
            existing = self._active_with_key(spec.unique_key)
            if existing is not None:
                return existing
            # The holder finished between our INSERT and our look: try again.
        raise RuntimeError(f"cannot enqueue unique_key {spec.unique_key!r}: it keeps conflicting")

    def notify_ready(self, queues=None):
        self._execute(
            self.sql.notify_ready, [self.channel, list(queues) if queues else ["*"]], fetch=False
        )

    def _enqueue_params(self, spec):
        return [
            spec.func,
            args_json(spec),
            dumps(spec.kwargs),
            spec.queue,
            spec.priority,
            spec.run_at,
            spec.max_attempts,
            spec.timeout,
            spec.unique_key,
            spec.signature,
            spec.traceparent,
            self.channel,
        ]

    def enqueue_many(self, specs, ids=None):
        if ids is not None:
            return super().enqueue_many(specs, ids)
        if isinstance(specs, list) and any(spec.after is not None for spec in specs):
            return self._enqueue_each(specs)
        count = len(specs)
        if count >= COPY_THRESHOLD:
            return self._copy_many(specs, count)
        specs = list(specs)  # read once, see Store.enqueue_many
        if not specs:
            return []
        rows = self._execute(self.sql.enqueue_many, [*_columns(specs), self.channel])
        return [_info(row) for row in rows]

    def _enqueue_members(self, specs, batch_id):
        params = [batch_id, *_columns(specs), self.channel]
        return [_info(row) for row in self._execute(self.sql.enqueue_members, params)]

    def _copy_many(self, specs, count):
        """Many jobs by COPY, in one transaction (the caller's, if any): reserve ids
        and read the clock, COPY the rows, then one NOTIFY per queue with a job due
        now, delivered at commit. Three round trips however many jobs.

        The specs are read a chunk at a time and each chunk is sent before the
        next is read, so the server stores one chunk while the backend prepares
        the next (``PreparedJobs``), each on its own core. A spec
        that turns out invalid part way aborts the COPY, and nothing is stored."""
        connection = self.connection
        infos = []
        due = {}  # queue -> [first id, count] of the jobs due now
        pending = None

        def first_chunk():
            # Starting to read a PreparedJobs encodes every job: imports and
            # arguments that may query the database, which must be done before
            # the COPY keeps the connection busy.
            nonlocal pending
            pending = iter(specs)
            return list(itertools.islice(pending, COPY_CHUNK))

        with transaction.atomic(using=self.alias):
            # Reserving ids costs the server about a microsecond each: the jobs
            # are encoded and the first chunk made meanwhile.
            now, ids, chunk = self._reserve_ids(count, first_chunk)
            # Naive times (USE_TZ = False) are in the zone the connection reads
            # them in (``_cursor``); refs then hold naive times, as the ORM's would.
            zone = zoneinfo.ZoneInfo(connection.timezone_name)
            rows = _CopyRows(now, zone)
            start = 0
            with connection.wrap_database_errors:
                with psycopg.Cursor(connection.connection) as cursor:
                    # write() returns once a chunk is in the socket's buffers, so
                    # the server stores it while the next is prepared (a writer
                    # thread, psycopg's QueuedLibpqWriter, measured no faster).
                    with cursor.copy(self.sql.copy_jobs) as copy:
                        while chunk:
                            chunk_ids = ids[start : start + len(chunk)]
                            copy.write(rows.data(chunk_ids, chunk))
                            infos += _copied_infos(chunk_ids, chunk, now, due)
                            start += len(chunk)
                            chunk = list(itertools.islice(pending, COPY_CHUNK))
                        if start != count:
                            raise ValueError(f"enqueue_many was given {start} jobs, not {count}")
                        copy.write(rows.end())
            if due:
                queues = sorted(due)
                params = [queues, [due[q][0] for q in queues], [due[q][1] for q in queues]]
                self._execute(self.sql.notify_queues, [self.channel, *params], fetch=False)
        return infos

    def _reserve_ids(self, count, meanwhile):
        """``(now, ids, meanwhile())``: ``count`` new job ids and the database's clock,
        with ``meanwhile`` run while the server reserves them: the query is sent in
        pipeline mode (libpq 14 or later; else first), and its answer read once
        ``meanwhile`` returns."""
        query = self.sql.reserve_ids
        sequence = self._id_sequence()
        connection = self.connection
        started = time.perf_counter()
        with connection.wrap_database_errors:
            raw = connection.connection
            if psycopg.Pipeline.is_supported():
                with raw.pipeline(), _cursor(connection) as cursor:
                    cursor.execute(query, [sequence, count], prepare=True)
                    done = meanwhile()
                    ((now, low, high),) = cursor.fetchall()
            else:
                with _cursor(connection) as cursor:
                    cursor.execute(query, [sequence, count], prepare=True)
                    ((now, low, high),) = cursor.fetchall()
                done = meanwhile()
        if connection.queries_logged:
            elapsed = time.perf_counter() - started
            connection.queries_log.append({"sql": query, "time": f"{elapsed:.3f}"})
        if high - low + 1 == count:
            return now, range(low, high + 1), done
        ((ids,),) = self._execute(self.sql.reserve_id_list, [sequence, count])
        return now, ids, done

    def _id_sequence(self):
        """The name of the sequence that numbers jobs (looked up once)."""
        if self._sequence is None:
            table = self.connection.ops.quote_name(self.jobs().model._meta.db_table)
            ((self._sequence,),) = self._execute(self.sql.serial_sequence, [table])
        return self._sequence

    # -- workers -------------------------------------------------------------------

    def claim(self, queues, limit, worker_id):
        plan = self.controls.plan(queues)
        if plan is not None:
            return self._steered_claim(plan, queues, limit, worker_id) if limit > 0 else []
        return self._plain_claim(queues, limit, worker_id)

    def _plain_claim(self, queues, limit, worker_id):
        return _claimed(self._execute(self.sql.claim, self._claim_params(queues, limit, worker_id)))

    def _claim_limited(self, limited, limit, worker_id):
        """Per limited queue, one round trip: BEGIN, ``lock_queue``,
        ``claim_limited`` (``queue_control.admit`` in SQL) and COMMIT sent
        together in a pipeline. Two statements, so that the claim's snapshot,
        taken once the lock is held, sees every job the claims before it took.
        Inside the caller's transaction, or without pipelines (libpq < 14),
        the portable way."""
        connection = self.connection
        if connection.in_atomic_block or not psycopg.Pipeline.is_supported():
            return super()._claim_limited(limited, limit, worker_id)
        connection.ensure_connection()
        raw = connection.connection
        defaults = self.controls.defaults()
        prepare = True if self._may_prepare() else None
        claimed = []
        for control in limited:
            wanted = limit - len(claimed)
            if wanted <= 0:
                break
            default = defaults.get(control.queue)
            params = {
                "queue": control.queue,
                "limit": wanted,
                "worker_id": worker_id,
                "lease": self.lease_seconds,
                "concurrency": default.concurrency if default else None,
                "rate": default.rate if default else None,
                "period": default.period if default else None,
            }
            try:
                with connection.wrap_database_errors:
                    try:
                        with raw.pipeline(), psycopg.Cursor(raw) as cursor:
                            cursor.execute("BEGIN")
                            cursor.execute(self.sql.lock_queue, params, prepare=prepare)
                            cursor.execute(self.sql.claim_limited, params, prepare=prepare)
                            rows = cursor.fetchall()
                            cursor.execute("COMMIT")
                    except BaseException:
                        with contextlib.suppress(Exception):
                            raw.execute("ROLLBACK")
                        raise
            except DatabaseError:
                if not claimed:
                    raise
                # The queues before it committed theirs: those jobs run under this
                # worker now, and only a rescue would find them if the claim raised.
                logger.warning("pgjobs: claim from the limited queues failed", exc_info=True)
                break
            claimed += _claimed(rows)
        return claimed

    def _claim_others(self, include, exclude, limit, worker_id):
        return self._claim_steered(include, exclude, limit, worker_id)  # atomic by itself

    def _claim_steered(self, include, exclude, limit, worker_id):
        params = self._claim_params(include, limit, worker_id)
        params["excluded"] = list(exclude)
        return _claimed(self._execute(self.sql.claim_steered, params))

    def _claim_params(self, queues, limit, worker_id):
        return {
            "limit": limit,
            "worker_id": worker_id,
            "lease": self.lease_seconds,
            "queues": list(queues) if queues else None,  # None: every queue
        }

    def finish(self, worker_id, results):
        if results:
            query = self.sql.finish if self.keep_succeeded else self.sql.finish_delete
            self._execute(query, self._finish_params(worker_id, results), fetch=False)

    def finish_and_claim(self, worker_id, results, queues, limit):
        plan = self.controls.plan(queues)
        if plan is not None:  # some queue paused or limited: counted in its own transaction
            self.finish(worker_id, results)
            return self._steered_claim(plan, queues, limit, worker_id) if limit > 0 else []
        if not results:
            return self._plain_claim(queues, limit, worker_id)
        params = self._claim_params(queues, limit, worker_id)
        params.update(self._finish_params(worker_id, results))
        query = self.sql.finish_and_claim if self.keep_succeeded else self.sql.delete_and_claim
        try:
            return _claimed(self._execute(query, params))
        except DatabaseError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
                raise
            # Rare, and harmless but for the wait: a claim's FOR UPDATE keeps the
            # lock on a row it rechecked and skipped (one another worker had just
            # claimed, found through a stale index entry), so two workers each
            # finishing jobs the other's claim touched can wait on each other.
            # Apart, neither can: a finish alone waits on no claim that waits.
            logger.debug("pgjobs: finish-and-claim deadlocked; finishing, then claiming")
            self.finish(worker_id, results)
            return self.claim(queues, limit, worker_id)

    def rescue(self):
        self._settle_orphans()  # see there: the one race of chains here
        return super().rescue()

    def retry(self, worker_id, job_id, error, delay):
        """One statement (``retry``): the outcome, the attempt kept, its figures. A
        job of a batch or chain takes the ORM's transaction instead, which settles
        them when the retry ends it cancelled (the statement leaves such jobs be)."""
        params = self._outcome_params(worker_id, job_id, error)
        params["delay"] = float(delay)
        if not self._execute(self.sql.retry, params)[0][0]:
            super().retry(worker_id, job_id, error, delay)

    def fail(self, worker_id, job_id, error, status=records.FAILED):
        """One statement (``fail``): the outcome, the attempt kept, its figures; as
        ``retry``, a job of a batch or chain through the ORM, which settles them."""
        params = self._outcome_params(worker_id, job_id, error)
        params["status"] = status
        if not self._execute(self.sql.fail, params)[0][0]:
            super().fail(worker_id, job_id, error, status)

    @staticmethod
    def _outcome_params(worker_id, job_id, error):
        return {
            "id": int(job_id),
            "worker_id": worker_id,
            "error": dumps(error),
            "shard": stats.shard_of(worker_id),
            "edges": _EDGES,
        }

    def heartbeat(self, worker_id, job_ids):
        cancel = super().heartbeat(worker_id, job_ids)
        self._replan()
        return cancel

    def unregister_worker(self, worker_id):
        try:
            super().unregister_worker(worker_id)
        finally:
            if self._replans():  # the connection may serve others now
                with self.connection.cursor() as cursor:
                    cursor.execute("RESET plan_cache_mode")

    def _prepares(self):
        """Whether our statements are prepared on this thread's connection (see
        ``_execute``): not where the site keeps psycopg from preparing, as for
        PgBouncer in transaction mode, where a session's SET would reach whoever
        gets its server connection next."""
        raw = self.connection.connection
        if raw is None:
            return False
        return raw.prepare_threshold is not None or self._may_prepare()

    def _replans(self):
        """Whether ``_replan`` sets the session's plan cache mode: where statements
        are prepared and the session is the worker's own (not a pooler's, where a
        SET outside a transaction would reach whoever gets the session next)."""
        return not self.pooled and self._prepares()

    def _replan(self):
        """Plan the worker's prepared statements again, for the table as it is now,
        once per plan: run with each heartbeat, on the worker's connection only.

        PostgreSQL plans a prepared statement for its parameters (a custom plan)
        five times, then settles on a generic plan, or on planning every time
        when its estimates favour that; the generic plan is kept until an ANALYZE
        or VACUUM of the table invalidates it. Both go wrong for a worker:

        - A worker that starts on a near-empty table gets generic plans that
          scan it whole (the cheapest way through a few rows), and keeps them
          while retained jobs grow the table, until autovacuum replans, if it
          is on: then every finish scans the table.
        - Claims of one or two jobs at a time look cheaper planned afresh (the
          generic plan assumes ten ids to finish): with the plans discarded
          regularly, planning becomes a large part of the server's work.

        So the worker's connection always uses generic plans (the statements in
        ``sql/postgres.sql`` are written for one: ids as arrays, read through
        the primary key; a claim's LIMIT leaves the claim index the cheapest way
        whatever its value), and ``DISCARD PLANS`` drops them each heartbeat, so
        that they are made again for the table's current size. Nothing to do
        where nothing is prepared (``_prepares``). With Django's
        ``server_side_binding`` and a ``prepare_threshold`` of your own, the
        ORM's statements on this connection get generic plans too.

        Best effort: a worker whose plans cannot be dropped still works.
        Behind a transaction pooler, never (``_replans``).
        """
        if not self._replans():
            return
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("SET plan_cache_mode = force_generic_plan")
                cursor.execute("DISCARD PLANS")
        except DatabaseError as exc:
            logger.debug("pgjobs: cannot replan the worker's statements (%s)", exc)

    def _finish_params(self, worker_id, results):
        # One array literal, built from integers: cheaper to send than a list.
        ids = "{" + ",".join([str(int(job_id)) for job_id, _ in results]) + "}"
        if all(result is None for _, result in results):
            encoded = None  # unnest pads a NULL array: every result NULL
        else:
            encoded = [None if result is None else dumps(result) for _, result in results]
        return {
            "worker_id": worker_id,
            "ids": ids,
            "results": encoded,
            # What settling a batch or a chain in the same statement needs.
            "channel": self.channel,
            "dependency_type": records.DEPENDENCY_TYPE,
            "batch_failed": records.BATCH_FAILED_MESSAGE,
            # The figures, written by the same statement.
            "shard": stats.shard_of(worker_id),
            "edges": _EDGES,
        }

    def minute_figures(self, since):
        """As ``OrmStore.minute_figures``, without the ORM's per-row work: a day is
        tens of thousands of rows."""
        if isinstance(since, datetime.timedelta):
            since = self._clock() - since
        rows = self._execute(self.sql.minute_figures, {"since": stats.minute_of(since)})
        return stats.figures_from_rows(rows)

    def _add_figures(self, rows):
        if rows:
            columns = [list(column) for column in zip(*rows, strict=True)]
            self._execute(self.sql.add_figures, columns, fetch=False)

    def seconds_until_due(self, queues):
        params = {"queues": list(queues) if queues else None}
        ((value,),) = self._execute(self.sql.seconds_until_due, params)
        return None if value is None else max(0.0, value)

    # -- wake-ups ------------------------------------------------------------------

    def listen(self, queues):
        """LISTEN on a connection of its own: to this alias's server, or to
        ``listen_database``. A LISTEN through a pooler would be lost with the
        transaction's server session (PgBouncer in transaction mode hands it to
        the next client, with its notifications): when the connection turns out
        to be a pooler's, the store does not listen (``supports_listen`` turns
        False) and says so once; the worker then polls, backing off. When that
        pooler is the jobs' database's own and Django was not told
        (``DISABLE_SERVER_SIDE_CURSORS``), the worker stops preparing
        statements too, which the pooler would mix up between its clients."""
        if not self.supports_listen:
            return
        self._listen_queues = set(queues) if queues else None
        self._listening = True
        try:
            self._connect_listener()
        except ListenThroughPooler as exc:
            self._listening = False
            self.supports_listen = False
            logger.warning("pgjobs: %s; polling instead", exc)
            if self.listen_database is None and not self.pooled:
                self._stop_preparing()
                logger.warning(
                    "pgjobs: database %r answers through a connection pooler, but its settings "
                    "lack DISABLE_SERVER_SIDE_CURSORS: this worker prepares no statements from "
                    "now on; set DISABLE_SERVER_SIDE_CURSORS = True there (as Django documents "
                    "for PgBouncer) so that web processes do not either",
                    self.alias,
                )

    def _stop_preparing(self):
        """Behave as behind a known pooler from now on (see ``_may_prepare``)."""
        self.pooled = True
        raw = self.connection.connection
        options = self.connection.settings_dict.get("OPTIONS", {})
        if raw is not None and "prepare_threshold" not in options:
            raw.prepare_threshold = None  # as Django left it: psycopg prepares nothing

    def _connect_listener(self):
        conn = psycopg.Connection.connect(**self.listen_params(), autocommit=True)
        try:
            if through_pooler(conn, self.sql.backend_pid):
                raise ListenThroughPooler(
                    f"LISTEN would go through a connection pooler ({self._listen_target()}), "
                    "which does not deliver notifications in transaction mode. Set "
                    "OPTIONS['LISTEN_DATABASE'] to a database alias or DSN that reaches "
                    "PostgreSQL directly, or to False to poll without this warning"
                )
            conn.execute(f"LISTEN {sql.Identifier(self.channel).as_string(conn)}")
        except BaseException:
            conn.close()
            raise
        self._listener = conn

    def listens_through_pooler(self):
        """Whether the LISTEN connection would reach a pooler, not PostgreSQL
        (one connection, opened and closed; for the system check)."""
        with psycopg.Connection.connect(**self.listen_params(), autocommit=True) as conn:
            return through_pooler(conn, self.sql.backend_pid)

    def _listen_target(self):
        target = self.listen_database
        if target is None:
            return f"database {self.alias!r}"
        if target in settings.DATABASES:
            return f"database {target!r}"
        return "LISTEN_DATABASE's DSN"

    def listen_params(self):
        """psycopg's connection parameters for the LISTEN connection: those of
        this alias, of the alias ``listen_database`` names, or of its DSN."""
        return listen_connection_params(self.alias, self.listen_database)

    def listen_socket(self):
        listener = self._listener
        return None if listener is None or listener.closed else listener.fileno()

    def wait(self, timeout):
        """Block on the listener connection until NOTIFYs arrive; return the
        wake-ups among them for our queues (an empty list: none for us).

        Every notification that arrived is read: those that come in one packet
        (two enqueues committed together) are handed over together. Stopping
        at the first would drop the rest, which psycopg has already read, and
        a worker whose turn a dropped one was (workers share out wake-ups) would not
        answer it. A broken listener is reconnected with backoff; the caller
        is told it was woken then, since notifications may have been missed.
        ``wait(0)`` (the worker's main thread, ``listens_on_socket``) never
        blocks: it closes a broken listener and returns True, and the next
        ``wait``, from another thread, connects anew.
        """
        if not self._listening:
            return False
        if self._listener is None:
            return self._reconnect_listener(timeout)
        try:
            # stop_after=1 ends the wait once a packet has been read, whole.
            notifies = self._listener.notifies(timeout=timeout, stop_after=1)
            wakeups = [_wakeup(notify.payload) for notify in notifies]
            queues = self._listen_queues
            if queues is None:
                return wakeups
            return [w for w in wakeups if w.queue in queues or w.queue == "*"]
        except psycopg.Error as exc:
            if not self._listening:
                return False  # stop_listening() closed it under us
            logger.warning("pgjobs: lost the LISTEN connection (%s); reconnecting", exc)
            self._close_listener()
            if not timeout:
                return True  # wait(0) never blocks: the next wait connects anew
            return self._reconnect_listener(timeout)

    def _reconnect_listener(self, timeout):
        try:
            self._connect_listener()
        except (psycopg.Error, ListenThroughPooler) as exc:
            time.sleep(min(timeout, 1.0))
            if self._listener_failed_at is None:
                self._listener_failed_at = time.monotonic()
                logger.warning("pgjobs: cannot LISTEN yet (%s); polling until it can", exc)
            return False
        if not self._listening:  # stop_listening() came while it connected
            self._close_listener()
            return False
        if self._listener_failed_at is not None:
            logger.warning("pgjobs: LISTEN connection restored")
            self._listener_failed_at = None
        return True

    def stop_listening(self):
        self._listening = False  # a wait() in the listener thread must not reconnect
        self._close_listener()

    def _close_listener(self):
        if self._listener is not None:
            try:
                self._listener.close()
            except psycopg.Error:
                pass
            self._listener = None

    def upkeep_problems(self):
        table = self.jobs().model._meta.db_table
        params = {"table": table, "regclass": self.connection.ops.quote_name(table)}
        return [problem for (problem,) in self._execute(self.sql.upkeep_problems, params)]

    def prune_batch(self, older_than, statuses, limit):
        """Delete up to ``limit`` expired jobs in one statement (``prune_batch``)."""
        params = {
            "statuses": list(statuses),
            "age": older_than.total_seconds(),
            "limit": limit,
        }
        ((deleted,),) = self._execute(self.sql.prune_batch, params)
        return deleted


class ListenThroughPooler(Exception):
    """The LISTEN connection is a pooler's, not PostgreSQL's own."""


def listen_connection_params(alias, listen_database=None):
    """psycopg's ``connect()`` parameters for a LISTEN connection: Django's for
    ``listen_database`` when it names an alias (default: ``alias``), else those
    of the DSN it is (``"host=... dbname=..."`` or ``"postgresql://..."``).
    Raises ``ValueError`` for a string that is neither."""
    from django.db import connections

    target = alias if listen_database is None else listen_database
    if target in settings.DATABASES:
        if connections[target].vendor != "postgresql":
            raise ValueError(
                f"LISTEN_DATABASE is {target!r}, a {connections[target].vendor} database: "
                "LISTEN needs PostgreSQL"
            )
        params = dict(connections[target].get_connection_params())
        for django_only in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(django_only, None)
        return params
    if not isinstance(target, str) or ("=" not in target and "://" not in target):
        raise ValueError(
            f"LISTEN_DATABASE is {target!r}: not an alias in DATABASES "
            f"({', '.join(settings.DATABASES)}) nor a DSN like 'postgresql://host/db'"
        )
    try:
        return psycopg.conninfo.conninfo_to_dict(target)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"LISTEN_DATABASE is not a valid DSN: {one_line(exc)}") from None


def through_pooler(conn, query):
    """Whether ``conn`` reaches PostgreSQL through a pooler: a pooler such as
    PgBouncer gives its clients cancel keys of its own, so the process id the
    connection was told at start is not the server process that answers
    (``query``: ``backend_pid``)."""
    ((pid,),) = conn.execute(query).fetchall()
    return conn.info.backend_pid != pid


# COPY's binary format (PostgreSQL's "COPY" page, "Binary Format"): the server
# reads ids, times and numbers as they are stored rather than parsing their
# text, a fifth of its work per row. A row is its field count, then each field
# as its length and bytes (-1: NULL).
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # no flags, no extension
_COPY_TRAILER = struct.pack(">h", -1)
_COPY_FIELDS = 13  # the columns of copy_jobs
_ROW_START = struct.Struct(">hiq")  # the field count, then the id: 8 bytes, an int8
_NULL = struct.pack(">i", -1)
_PG_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


class _CopyRows:
    """The rows of ``copy_jobs`` in COPY's binary format, built here rather than by
    psycopg's per-row writer: what the jobs of one call share (function, queue,
    options) is formatted once, a spec repeated in a row (``[(f, [], {})] * n``)
    once, and arguments whose JSON the backend made (``JobSpec.args_json``) are
    not encoded again. ``zone`` reads naive datetimes (``USE_TZ = False``)."""

    def __init__(self, now, zone):
        self.now = now
        self.zone = zone
        self.created = _timestamptz(now, zone)
        self.heads = {}  # function path -> the fields from created_at to func
        self.middles = {}  # the shared options -> the fields from queue to unique_key
        self.last = (None, None)  # the previous spec and its row after the id
        self.started = False

    def data(self, ids, specs):
        """The rows of these jobs; the first call's begin with the file header."""
        parts = []
        if not self.started:
            parts.append(_COPY_HEADER)
            self.started = True
        start = _ROW_START.pack
        last_spec, last_tail = self.last
        for job_id, spec in zip(ids, specs, strict=True):
            if spec is not last_spec:
                last_spec, last_tail = spec, self._tail(spec)
            parts.append(start(_COPY_FIELDS, 8, job_id))
            parts.append(last_tail)
        self.last = (last_spec, last_tail)
        return b"".join(parts)

    def end(self):
        return _COPY_TRAILER if self.started else _COPY_HEADER + _COPY_TRAILER

    def _tail(self, spec):
        head = self.heads.get(spec.func)
        if head is None:
            head = self.heads[spec.func] = self.created + _text(spec.func)
        shared = (spec.queue, spec.priority, spec.run_at, spec.max_attempts, spec.timeout,
                  spec.unique_key)  # fmt: skip
        middle = self.middles.get(shared)
        if middle is None:
            run_at = self.created if spec.run_at is None else _timestamptz(spec.run_at, self.zone)
            middle = self.middles[shared] = b"".join([
                _text(spec.queue),
                struct.pack(">ih", 2, spec.priority),
                run_at,
                struct.pack(">ii", 4, spec.max_attempts),
                _NULL if spec.timeout is None else struct.pack(">id", 8, spec.timeout),
                _NULL if spec.unique_key is None else _text(spec.unique_key),
            ])  # fmt: skip
        args = args_json(spec)
        kwargs = _EMPTY_JSONB if not spec.kwargs else _jsonb(dumps(spec.kwargs))
        trace = _NULL if spec.traceparent is None else _text(spec.traceparent)
        return b"".join([head, _jsonb(args), kwargs, middle, _text(spec.signature), trace])


def _columns(specs):
    """The jobs' values as the arrays ``enqueue_many`` unnests, one per column."""
    return [
        [s.func for s in specs],
        [args_json(s) for s in specs],
        [dumps(s.kwargs) for s in specs],
        [s.queue for s in specs],
        [s.priority for s in specs],
        [s.run_at for s in specs],
        [s.max_attempts for s in specs],
        [s.timeout for s in specs],
        [s.unique_key for s in specs],
        [s.signature for s in specs],
        [s.traceparent for s in specs],
    ]


def _text(value):
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def _jsonb(text):
    """jsonb's binary form: a version byte (1), then the JSON text."""
    data = text.encode()
    return struct.pack(">ib", len(data) + 1, 1) + data


_EMPTY_JSONB = _jsonb("{}")


def _timestamptz(value, zone):
    """timestamptz's binary form: microseconds since 2000-01-01 UTC."""
    if value.tzinfo is None:
        value = _as_postgres_reads(value, zone)
    return struct.pack(">iq", 8, (value - _PG_EPOCH) // _MICROSECOND)


def _as_postgres_reads(naive, zone):
    """``naive`` in ``zone`` as PostgreSQL reads a local time. A time the clocks
    pass twice takes the offset after the change, one they skip the offset
    before it: either way the smaller of the two offsets (PEP 495's ``fold``
    picks between them)."""
    return min(naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1),
               key=lambda local: local.utcoffset())  # fmt: skip


def _copied_infos(ids, specs, now, due):
    """The ``JobInfo``s of jobs just copied; counts the ones due now into ``due``."""
    infos = []
    for job_id, spec in zip(ids, specs, strict=True):
        run_at = spec.run_at
        if run_at is None or run_at <= now:
            queue_due = due.get(spec.queue)
            if queue_due is None:
                due[spec.queue] = [job_id, 1]
            else:
                queue_due[1] += 1
        infos.append(
            JobInfo(
                job_id,
                spec.func,
                spec.queue,
                records.READY,
                spec.priority,
                run_at or now,
                0,
                spec.max_attempts,
                now,
            )  # fmt: skip
        )
    return infos


def _wakeup(payload):
    """A ``Wakeup`` from a NOTIFY payload: JSON from enqueues, or a bare queue name
    (``notify_ready``, or a producer running an older pgjobs)."""
    if payload.startswith("{"):
        try:
            data = json.loads(payload)
            return records.Wakeup(str(data["q"]), int(data["id"]), int(data["n"]))
        except (ValueError, KeyError, TypeError):
            pass
    return records.Wakeup(payload)


def _claimed(rows):
    """``ClaimedJob``s from claimed rows; a row whose arguments cannot be decoded
    comes back with its ``problem`` set, the others as usual."""
    claimed = []
    for id, func, args, kwargs, *rest in rows:
        args, kwargs, problem = read_arguments(args, kwargs)
        # problem, the last field, passed by position: a keyword beside the
        # unpacked row makes the call build a dict too (0.9 against 1.1 µs a row).
        claimed.append(ClaimedJob(id, func, args, kwargs, *rest, problem))
    return claimed


def _cursor(connection):
    """A psycopg cursor on Django's ``connection`` that reads ``timestamptz`` as
    Django's own cursors do, and faster under ``USE_TZ``.

    Under ``USE_TZ`` Django's loader, a subclass of psycopg's Python one, gives
    aware datetimes in the session's time zone, which Django sets to its
    ``connection.timezone``: as psycopg's own loader, in C, does, 11 µs sooner for
    an enqueue's ``created_at`` and ``run_at``. Without ``USE_TZ``, naive times in
    that zone: Django's loader for them, put on the cursor when the connection's
    was made under ``USE_TZ`` (a test's ``override_settings``), as Django does."""
    raw = connection.connection
    cursor = psycopg.Cursor(raw)
    if connection.timezone is not None:
        cursor.adapters.register_loader(_TIMESTAMPTZ, TimestamptzLoader)
    elif raw.adapters.get_loader(_TIMESTAMPTZ, psycopg.pq.Format.TEXT).timezone is not None:
        register_tzloader(None, cursor)
    return cursor


def _info(row):
    values = dict(zip(INFO_FIELDS, row, strict=False))
    values["result"] = load_json(values["result"])
    values["error"] = load_json(values["error"])
    values.setdefault("status", records.READY)
    return JobInfo(**values)
