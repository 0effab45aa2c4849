-- PostgreSQL statements of pgjobs.stores.postgres.PostgresStore, one per
-- "-- name:" header (see pgjobs/stores/queries.py). {job} is the Job model's
-- table, filled in at load time; every value is a parameter. Rows come back in
-- the column order of INFO_FIELDS (pgjobs/stores/orm.py) or of ClaimedJob.

-- name: enqueue
-- One round trip: the INSERT, and a NOTIFY (sent at commit, so a rolled-back
-- transaction wakes nobody) only when the job is due now. The payload names the
-- queue, the first new job's id and how many jobs there are: workers use the id
-- to share out who answers, so that N new jobs wake about N workers rather than
-- all of them.
WITH job AS (
    INSERT INTO {job} (func, args, kwargs, queue, priority, run_at, max_attempts, timeout,
                       unique_key, signature, traceparent)
    VALUES (%s, %s::jsonb, %s::jsonb, %s, %s, COALESCE(%s, statement_timestamp()), %s, %s, %s, %s,
            %s)
    RETURNING id, func, queue, status, priority, run_at, attempts, max_attempts, created_at,
              started_at, finished_at, result, error, worker_id
)
SELECT job.*, CASE WHEN job.run_at <= statement_timestamp()
                   THEN pg_notify(%s, json_build_object('q', job.queue, 'id', job.id, 'n', 1)::text)
              END
FROM job;

-- name: enqueue_unique
-- enqueue for a job with a unique_key: no row (and no error, which would abort
-- the caller's transaction) when an active job holds the key.
WITH job AS (
    INSERT INTO {job} (func, args, kwargs, queue, priority, run_at, max_attempts, timeout,
                       unique_key, signature, traceparent)
    VALUES (%s, %s::jsonb, %s::jsonb, %s, %s, COALESCE(%s, statement_timestamp()), %s, %s, %s, %s,
            %s)
    ON CONFLICT (active_unique_key) WHERE active_unique_key IS NOT NULL DO NOTHING
    RETURNING id, func, queue, status, priority, run_at, attempts, max_attempts, created_at,
              started_at, finished_at, result, error, worker_id
)
SELECT job.*, CASE WHEN job.run_at <= statement_timestamp()
                   THEN pg_notify(%s, json_build_object('q', job.queue, 'id', job.id, 'n', 1)::text)
              END
FROM job;

-- name: enqueue_many
-- Many jobs in one statement: arrays unnested into rows; one NOTIFY per queue
-- that received a job due now.
WITH job AS (
    INSERT INTO {job} (func, args, kwargs, queue, priority, run_at, max_attempts, timeout,
                       unique_key, signature, traceparent)
    SELECT f, a::jsonb, k::jsonb, q, p, COALESCE(r, statement_timestamp()), m, t, u, s, tp
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::smallint[],
                %s::timestamptz[], %s::int[], %s::float8[], %s::text[], %s::text[], %s::text[])
         WITH ORDINALITY AS v(f, a, k, q, p, r, m, t, u, s, tp, n)
    ORDER BY n
    RETURNING id, func, queue, status, priority, run_at, attempts, max_attempts, created_at,
              started_at, finished_at, result, error, worker_id
), woken AS (
    SELECT pg_notify(%s, json_build_object('q', queue, 'id', min(id), 'n', count(*))::text)
    FROM job WHERE run_at <= statement_timestamp() GROUP BY queue
)
SELECT job.*, (SELECT count(*) FROM woken) FROM job ORDER BY job.id;

-- name: enqueue_members
-- A batch's jobs in one statement, as enqueue_many, each carrying the batch's id.
WITH job AS (
    INSERT INTO {job} (func, args, kwargs, queue, priority, run_at, max_attempts, timeout,
                       unique_key, signature, traceparent, batch_id)
    SELECT f, a::jsonb, k::jsonb, q, p, COALESCE(r, statement_timestamp()), m, t, u, s, tp, %s
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::smallint[],
                %s::timestamptz[], %s::int[], %s::float8[], %s::text[], %s::text[], %s::text[])
         WITH ORDINALITY AS v(f, a, k, q, p, r, m, t, u, s, tp, n)
    ORDER BY n
    RETURNING id, func, queue, status, priority, run_at, attempts, max_attempts, created_at,
              started_at, finished_at, result, error, worker_id
), woken AS (
    SELECT pg_notify(%s, json_build_object('q', queue, 'id', min(id), 'n', count(*))::text)
    FROM job WHERE run_at <= statement_timestamp() GROUP BY queue
)
SELECT job.*, (SELECT count(*) FROM woken) FROM job ORDER BY job.id;

-- name: serial_sequence
-- The sequence of the table's id, found once per store: looking it up per row
-- would cost ten times the nextval itself. Parameter: the quoted table name.
SELECT pg_get_serial_sequence(%s, 'id');

-- name: reserve_ids
-- Bulk enqueue by COPY: ids are taken from the table's sequence first, with the
-- database's clock for jobs due now, so that the rows need no RETURNING. Ids
-- come back as a range when they are consecutive, as they are unless another
-- session took some meanwhile: then the reservation is given up (a sequence has
-- gaps anyway) and ids are taken again as a list (reserve_id_list). The sequence
-- arrives as a parameter of type regclass, read once per statement.
SELECT statement_timestamp(), min(id), max(id)
FROM (SELECT nextval(%s::regclass) AS id FROM generate_series(1, %s)) AS reserved;

-- name: reserve_id_list
SELECT array(SELECT nextval(%s::regclass) FROM generate_series(1, %s));

-- name: copy_jobs
COPY {job} (id, created_at, func, args, kwargs, queue, priority, run_at, max_attempts, timeout,
            unique_key, signature, traceparent) FROM STDIN (FORMAT BINARY);

-- name: notify_queues
SELECT pg_notify(%s, json_build_object('q', q, 'id', i, 'n', n)::text)
FROM unnest(%s::text[], %s::bigint[], %s::int[]) AS v(q, i, n);

-- name: notify_ready
-- Jobs became ready outside an enqueue: wake the workers of these queues.
SELECT pg_notify(%s, q) FROM unnest(%s::text[]) AS q;

-- name: _figure_finished
-- A part, not a statement: the per-minute figures (pgjobs/stats.py) of the jobs
-- the CTE "finished" (queue, run_at, started_at) just recorded as succeeded, in
-- finish, finish_delete, finish_and_claim and delete_and_claim.
figured AS (
    -- The per-minute figures of these successes (pgjobs/stats.py), added to the
    -- rows of this worker's shard, locked in key order.
    -- One pass over the jobs, grouped by queue and both buckets (a few groups),
    -- then each group spread over the three metrics.
    INSERT INTO {stat} AS s (minute, queue, shard, metric, bucket, count, total)
    SELECT date_trunc('minute', now()), g.queue, %(shard)s, k.metric,
           CASE k.metric WHEN 'wait' THEN g.wb WHEN 'run' THEN g.rb ELSE 0 END,
           sum(g.n), sum(CASE k.metric WHEN 'wait' THEN g.ws WHEN 'run' THEN g.rs ELSE 0 END)
    FROM (
        SELECT queue, COALESCE(width_bucket(w, %(edges)s::float8[]), 0) AS wb,
               COALESCE(width_bucket(r, %(edges)s::float8[]), 0) AS rb,
               count(*) AS n, COALESCE(sum(w), 0) AS ws, COALESCE(sum(r), 0) AS rs
        FROM (SELECT queue, EXTRACT(EPOCH FROM started_at - run_at)::float8 AS w,
                     EXTRACT(EPOCH FROM now() - started_at)::float8 AS r
              FROM finished) AS t
        GROUP BY 1, 2, 3
    ) AS g CROSS JOIN (VALUES ('succeeded'), ('wait'), ('run')) AS k(metric)
    GROUP BY 2, 4, 5
    ORDER BY 2, 4, 5
    ON CONFLICT (minute, queue, shard, metric, bucket)
    DO UPDATE SET count = s.count + EXCLUDED.count, total = s.total + EXCLUDED.total
);

-- name: _settle_finished
-- A part, not a statement (its name begins with _): what follows the CTE
-- "finished" (id, batch_id, has_dependents, result of the jobs that just
-- succeeded) in finish, finish_delete, finish_and_claim and delete_and_claim,
-- written in where they say {+_settle_finished} (pgjobs/stores/queries.py):
-- each batch counts its jobs, the statement that brings one to zero releases
-- its callbacks, the jobs chained after them follow, their queues are woken.
locked AS (
    -- The batches' rows, locked in id order, as every store locks them: two
    -- workers finishing jobs of the same batches never wait on each other in turn.
    SELECT b.id FROM {batch} AS b
    WHERE b.id IN (SELECT batch_id FROM finished WHERE batch_id IS NOT NULL)
    ORDER BY b.id
    FOR UPDATE
), counted AS (
    -- Each batch counts its jobs that just succeeded, under its row's lock (a
    -- concurrent finisher waits, then counts on from the row it committed).
    UPDATE {batch} AS b
    SET pending = b.pending - f.n, succeeded = b.succeeded + f.n,
        finished_at = CASE WHEN b.pending = f.n THEN now() ELSE b.finished_at END
    FROM (SELECT batch_id, count(*)::int AS n FROM finished
          WHERE batch_id IS NOT NULL GROUP BY batch_id) AS f
    WHERE b.id = f.batch_id AND b.id IN (SELECT id FROM locked)
    RETURNING b.id, b.pending, b.failed, b.cancelled, b.on_finish_id, b.on_success_id
), released AS (
    -- The statement that brings a batch to zero releases its callbacks: each
    -- leaves 'waiting' once. on_success when every job succeeded, else cancelled.
    UPDATE {job} AS j
    SET status = CASE WHEN j.id = c.on_finish_id OR (c.failed = 0 AND c.cancelled = 0)
                      THEN 'ready' ELSE 'cancelled' END,
        run_at = GREATEST(j.run_at, now()),
        finished_at = CASE WHEN j.id = c.on_finish_id OR (c.failed = 0 AND c.cancelled = 0)
                           THEN NULL ELSE now() END,
        error = CASE WHEN j.id = c.on_finish_id OR (c.failed = 0 AND c.cancelled = 0)
                     THEN NULL
                     ELSE jsonb_build_object(
                         'type', %(dependency_type)s::text,
                         'message', format(%(batch_failed)s::text, c.id, c.failed, c.cancelled),
                         'traceback', format(%(batch_failed)s::text, c.id, c.failed, c.cancelled))
                END
    FROM counted AS c
    WHERE c.pending = 0 AND j.status = 'waiting' AND j.id IN (c.on_finish_id, c.on_success_id)
    RETURNING j.id, j.queue, j.status
), followed AS (
    -- Jobs chained after the ones that just succeeded: ready, with the result.
    UPDATE {job} AS j
    SET status = 'ready', run_at = GREATEST(j.run_at, now()), previous_result = f.result
    FROM finished AS f
    WHERE f.has_dependents AND j.after_id = f.id AND j.status = 'waiting'
    RETURNING j.id, j.queue, j.status
), woken AS (
    SELECT pg_notify(%(channel)s, json_build_object('q', queue, 'id', min(id), 'n', count(*))::text)
    FROM (SELECT * FROM released UNION ALL SELECT * FROM followed) AS r
    WHERE status = 'ready' GROUP BY queue;

-- name: finish
-- The successes of a batch in one statement, with their figures, their batches
-- counted and the jobs chained after them released. ids arrive as one array literal
-- and results as NULL when every result is None (unnest pads it with NULLs): a
-- no-op job then costs no per-element dumping in Python. The guard keeps a job
-- whose lease was lost from completing twice.
WITH finished AS (
    UPDATE {job} AS j
    SET status = 'succeeded', result = v.result::jsonb, finished_at = now(), lease_expires_at = NULL
    FROM unnest(%(ids)s::bigint[], %(results)s::text[]) AS v(id, result)
    WHERE j.id = v.id AND j.status = 'running' AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.batch_id, j.has_dependents, j.result, j.queue, j.run_at, j.started_at
), {+_figure_finished}, {+_settle_finished}
)
SELECT count(*) FROM woken;

-- name: finish_delete
-- finish with KEEP_SUCCEEDED False: succeeded jobs are deleted instead, with
-- the attempts kept of them.
WITH finished AS (
    DELETE FROM {job} AS j
    USING unnest(%(ids)s::bigint[], %(results)s::text[]) AS v(id, result)
    WHERE j.id = v.id AND j.status = 'running' AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.batch_id, j.has_dependents, v.result::jsonb AS result, j.queue,
              j.run_at, j.started_at, j.attempts
), gone AS (
    -- The attempts kept of jobs that failed before they succeeded.
    DELETE FROM {attempt}
    WHERE job_id = ANY(ARRAY(SELECT id FROM finished WHERE attempts > 1))
), {+_figure_finished}, {+_settle_finished}
)
SELECT count(*) FROM woken;

-- name: claim
-- Lock up to N due rows in claim order, skipping rows other workers hold, and
-- mark them running, in one statement. MATERIALIZED keeps the planner from
-- re-evaluating the subquery per updated row. The locked ids reach the UPDATE
-- as one array, so that it finds them by primary key whatever a generic plan
-- guesses of N (a tenth of the due rows: joined, that was a scan of the backlog
-- for every claim). Rows come back in claim order (RETURNING has none), so the
-- worker needs no run_at to sort them by. queues NULL: every queue.
WITH next AS MATERIALIZED (
    SELECT id FROM {job}
    WHERE status = 'ready' AND run_at <= statement_timestamp()
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {job} AS j
    SET status = 'running', attempts = j.attempts + 1, started_at = now(),
        worker_id = %(worker_id)s, lease_expires_at = now() + %(lease)s * interval '1 second'
    WHERE j.id = ANY(ARRAY(SELECT id FROM next))
    RETURNING j.id, j.func, j.args, j.kwargs, j.queue, j.priority, j.run_at,
              j.attempts, j.max_attempts, j.timeout, j.signature, j.atomic, j.traceparent
)
SELECT id, func, args, kwargs, queue, priority, NULL, attempts, max_attempts, timeout, signature,
       atomic, traceparent
FROM claimed ORDER BY priority DESC, run_at, id;

-- name: finish_and_claim
-- finish, then claim, in one statement, so that a busy worker pays one round
-- trip and one commit per batch. Written out whole, as delete_and_claim is:
-- one statement for both, its unused branch cut off by a parameter, measured
-- a tenth slower.
WITH finished AS (
    UPDATE {job} AS j
    SET status = 'succeeded', result = v.result::jsonb, finished_at = now(),
        lease_expires_at = NULL
    FROM unnest(%(ids)s::bigint[], %(results)s::text[]) AS v(id, result)
    WHERE j.id = v.id AND j.status = 'running' AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.batch_id, j.has_dependents, j.result, j.queue, j.run_at, j.started_at
), {+_figure_finished}, {+_settle_finished}
), next AS MATERIALIZED (
    SELECT id FROM {job}
    WHERE status = 'ready' AND run_at <= statement_timestamp()
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {job} AS j
    SET status = 'running', attempts = j.attempts + 1, started_at = now(),
        worker_id = %(worker_id)s, lease_expires_at = now() + %(lease)s * interval '1 second'
    WHERE j.id = ANY(ARRAY(SELECT id FROM next))
    RETURNING j.id, j.func, j.args, j.kwargs, j.queue, j.priority, j.run_at,
              j.attempts, j.max_attempts, j.timeout, j.signature, j.atomic, j.traceparent
)
SELECT id, func, args, kwargs, queue, priority, NULL, attempts, max_attempts, timeout, signature,
       atomic, traceparent
FROM claimed WHERE (SELECT count(*) FROM woken) >= 0 ORDER BY priority DESC, run_at, id;

-- name: delete_and_claim
-- finish_delete, then claim, in one statement (KEEP_SUCCEEDED False).
WITH finished AS (
    DELETE FROM {job} AS j
    USING unnest(%(ids)s::bigint[], %(results)s::text[]) AS v(id, result)
    WHERE j.id = v.id AND j.status = 'running' AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.batch_id, j.has_dependents, v.result::jsonb AS result, j.queue,
              j.run_at, j.started_at, j.attempts
), gone AS (
    -- The attempts kept of jobs that failed before they succeeded.
    DELETE FROM {attempt}
    WHERE job_id = ANY(ARRAY(SELECT id FROM finished WHERE attempts > 1))
), {+_figure_finished}, {+_settle_finished}
), next AS MATERIALIZED (
    SELECT id FROM {job}
    WHERE status = 'ready' AND run_at <= statement_timestamp()
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {job} AS j
    SET status = 'running', attempts = j.attempts + 1, started_at = now(),
        worker_id = %(worker_id)s, lease_expires_at = now() + %(lease)s * interval '1 second'
    WHERE j.id = ANY(ARRAY(SELECT id FROM next))
    RETURNING j.id, j.func, j.args, j.kwargs, j.queue, j.priority, j.run_at,
              j.attempts, j.max_attempts, j.timeout, j.signature, j.atomic, j.traceparent
)
SELECT id, func, args, kwargs, queue, priority, NULL, attempts, max_attempts, timeout, signature,
       atomic, traceparent
FROM claimed WHERE (SELECT count(*) FROM woken) >= 0 ORDER BY priority DESC, run_at, id;

-- name: seconds_until_due
-- NULL when there is no ready job (GREATEST would turn that NULL into 0: "due now").
SELECT EXTRACT(EPOCH FROM min(run_at) - statement_timestamp())::float8
FROM {job}
WHERE status = 'ready' AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s));

-- name: upkeep_problems
-- What stops autovacuum from reclaiming the dead rows every job leaves (claimed,
-- finished, deleted): then the table and its indexes grow for as long as jobs
-- run, and claims step over ever more dead entries. track_counts feeds
-- autovacuum the counts of dead rows it acts on. The settings are read as the
-- server applies them to this session (ALTER DATABASE and ALTER ROLE count).
-- Parameters: the table's name, and quoted (regclass).
SELECT problem FROM (VALUES
    (NOT current_setting('autovacuum')::bool, 'the server has autovacuum = off'),
    (NOT current_setting('track_counts')::bool,
     'the server has track_counts = off, without which autovacuum never runs'),
    (EXISTS (SELECT FROM pg_class AS c, pg_options_to_table(c.reloptions) AS o
             WHERE c.oid = to_regclass(%(regclass)s) AND o.option_name = 'autovacuum_enabled'
               AND NOT o.option_value::bool),
     'the ' || %(table)s || ' table has autovacuum_enabled = false')
) AS checked(found, problem)
WHERE found;

-- name: prune_batch
-- Retention: delete up to N jobs in the given statuses that finished before
-- now - age, oldest first. The ORDER BY is the index's, so the planner reads
-- pgjobs_job_finished_idx and stops after N rows (without it, when many rows
-- have expired, it prefers a sequential scan that may read much of the table
-- before finding them); the ids come back as one array, so the DELETE finds
-- them by primary key whatever a generic plan guesses of N. SKIP LOCKED:
-- concurrent pruners (one per worker) take different rows and never wait for
-- each other, nor for a person retrying a failed job in the admin; each row is
-- deleted once.
WITH deleted AS (
    DELETE FROM {job} WHERE id = ANY(ARRAY(
        SELECT id FROM {job}
        WHERE status = ANY(%(statuses)s) AND finished_at < now() - %(age)s * interval '1 second'
        ORDER BY status, finished_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING id
), gone AS (
    -- The attempts kept of the jobs deleted go with them.
    DELETE FROM {attempt} WHERE job_id = ANY(ARRAY(SELECT id FROM deleted))
)
SELECT count(*) FROM deleted;

-- name: backend_pid
-- The server process answering: a pooler's clients were told another at start.
SELECT pg_backend_pid();

-- name: claim_steered
-- The claim when some queues are paused or limited (pgjobs/queue_control.py),
-- run inside the transaction that holds the limited queues' rows: as claim,
-- but never from the queues in excluded.
WITH next AS MATERIALIZED (
    SELECT id FROM {job}
    WHERE status = 'ready' AND run_at <= statement_timestamp()
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s))
      AND queue <> ALL(%(excluded)s::text[])
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {job} AS j
    SET status = 'running', attempts = j.attempts + 1, started_at = now(),
        worker_id = %(worker_id)s, lease_expires_at = now() + %(lease)s * interval '1 second'
    WHERE j.id = ANY(ARRAY(SELECT id FROM next))
    RETURNING j.id, j.func, j.args, j.kwargs, j.queue, j.priority, j.run_at,
              j.attempts, j.max_attempts, j.timeout, j.signature, j.atomic, j.traceparent
)
SELECT id, func, args, kwargs, queue, priority, NULL, attempts, max_attempts, timeout, signature,
       atomic, traceparent
FROM claimed ORDER BY priority DESC, run_at, id;

-- name: lock_queue
-- A limited queue's row, locked until the claim from it commits: claims from
-- the queue take turns, each seeing the jobs the one before it claimed. Sent in
-- one pipeline with BEGIN, claim_limited and COMMIT: one round trip.
SELECT 1 FROM {queue} WHERE queue = %(queue)s FOR UPDATE;

-- name: claim_limited
-- A claim from a limited queue whose row lock_queue holds (its own statement,
-- so that this one's snapshot, taken after the lock, sees every job claimed
-- before): queue_control.admit in SQL. The stored limits, else the setting's
-- (parameters); at most concurrency running, at most rate starts in the window
-- (a new one opens, by the database's clock, once period has passed since the
-- last one opened); the window moved on by what was claimed.
WITH ctl AS (
    SELECT paused,
           COALESCE(concurrency, %(concurrency)s::int) AS concurrency,
           COALESCE(rate, %(rate)s::int) AS rate,
           CASE WHEN rate IS NULL THEN %(period)s::float8 ELSE period END AS period,
           window_start, window_count
    FROM {queue} WHERE queue = %(queue)s
), win AS (
    SELECT paused, concurrency, rate,
           rate IS NOT NULL AND (window_start IS NULL
                                 OR EXTRACT(EPOCH FROM statement_timestamp()) >= window_start + period)
               AS fresh,
           window_start, window_count
    FROM ctl
), allowed AS (
    SELECT rate,
           CASE WHEN fresh THEN EXTRACT(EPOCH FROM statement_timestamp())::float8
                ELSE window_start END AS start,
           CASE WHEN fresh THEN 0 ELSE window_count END AS used,
           CASE WHEN paused THEN 0 ELSE GREATEST(0, LEAST(
               %(limit)s::int,
               COALESCE(concurrency - (SELECT count(*) FROM {job}
                                       WHERE queue = %(queue)s AND status = 'running'
                                         AND lease_expires_at IS NOT NULL)::int, %(limit)s::int),
               COALESCE(rate - CASE WHEN fresh THEN 0 ELSE window_count END, %(limit)s::int)
           )) END AS n
    FROM win
), next AS MATERIALIZED (
    SELECT id FROM {job}
    WHERE status = 'ready' AND run_at <= statement_timestamp() AND queue = %(queue)s
    ORDER BY priority DESC, run_at, id
    LIMIT COALESCE((SELECT n FROM allowed), 0)
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {job} AS j
    SET status = 'running', attempts = j.attempts + 1, started_at = now(),
        worker_id = %(worker_id)s, lease_expires_at = now() + %(lease)s * interval '1 second'
    WHERE j.id = ANY(ARRAY(SELECT id FROM next))
    RETURNING j.id, j.func, j.args, j.kwargs, j.queue, j.priority, j.run_at,
              j.attempts, j.max_attempts, j.timeout, j.signature, j.atomic, j.traceparent
), moved AS (
    UPDATE {queue} AS c
    SET window_start = a.start, window_count = a.used + (SELECT count(*) FROM claimed)
    FROM allowed AS a
    WHERE c.queue = %(queue)s AND a.rate IS NOT NULL
)
SELECT id, func, args, kwargs, queue, priority, NULL, attempts, max_attempts, timeout, signature,
       atomic, traceparent
FROM claimed ORDER BY priority DESC, run_at, id;

-- name: add_figures
-- Per-minute figures (pgjobs/stats.py) added up, a row per key, in key order.
INSERT INTO {stat} AS s (minute, queue, shard, metric, bucket, count, total)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::smallint[], %s::text[], %s::smallint[],
                     %s::bigint[], %s::float8[])
ON CONFLICT (minute, queue, shard, metric, bucket)
DO UPDATE SET count = s.count + EXCLUDED.count, total = s.total + EXCLUDED.total;

-- name: minute_figures
-- The figures from a minute on, the shards added up (pgjobs/stats.py); read
-- through the primary key, which starts with the minute.
SELECT minute, queue, metric, bucket, sum(count)::bigint, sum(total)::float8
FROM {stat}
WHERE minute >= %(since)s
GROUP BY 1, 2, 3, 4;

-- name: _figure_ended
-- A part, not a statement: the per-minute figures (pgjobs/stats.py) of the
-- attempts the CTE "ended" (queue, run_at, started_at, outcome) just ended
-- without success, in retry and fail: the outcome, and wait and run time.
counted AS (
    INSERT INTO {stat} AS s (minute, queue, shard, metric, bucket, count, total)
    SELECT date_trunc('minute', statement_timestamp()), queue, %(shard)s, metric,
           COALESCE(width_bucket(x, %(edges)s::float8[]), 0), count(*), COALESCE(sum(x), 0)
    FROM (
        SELECT e.queue, k.metric,
               CASE k.metric WHEN 'wait' THEN EXTRACT(EPOCH FROM e.started_at - e.run_at)::float8
                             WHEN 'run' THEN EXTRACT(EPOCH FROM statement_timestamp() - e.started_at)::float8
               END AS x
        FROM ended AS e CROSS JOIN LATERAL (VALUES (e.outcome), ('wait'), ('run')) AS k(metric)
    ) AS f
    GROUP BY 2, 4, 5
    ORDER BY 2, 4, 5
    ON CONFLICT (minute, queue, shard, metric, bucket)
    DO UPDATE SET count = s.count + EXCLUDED.count, total = s.total + EXCLUDED.total
);

-- name: retry
-- A failed attempt, in one statement: the job ready again in delay seconds (or
-- cancelled, when that was asked while it ran), the attempt kept and counted.
-- Only a job still running under this worker. statement_timestamp(), as the
-- ORM's Now() reads it: inside a caller's long transaction now() stands still.
-- A job of a batch or a chain is left be (count 0): PostgresStore.retry then
-- takes the ORM's transaction, which settles what waits on it.
WITH old AS (
    SELECT id, queue, run_at, started_at, attempts, cancel_requested FROM {job}
    WHERE id = %(id)s AND status = 'running' AND worker_id = %(worker_id)s
      AND batch_id IS NULL AND NOT has_dependents
    FOR UPDATE
), ended AS (
    UPDATE {job} AS j
    SET status = CASE WHEN old.cancel_requested THEN 'cancelled' ELSE 'ready' END,
        finished_at = CASE WHEN old.cancel_requested THEN statement_timestamp() END,
        error = %(error)s::jsonb, run_at = statement_timestamp() + %(delay)s * interval '1 second',
        worker_id = NULL, lease_expires_at = NULL
    FROM old WHERE j.id = old.id
    RETURNING old.id, old.queue, old.run_at, old.started_at, old.attempts,
              CASE WHEN old.cancel_requested THEN 'cancelled' ELSE 'retried' END AS outcome
), kept AS (
    INSERT INTO {attempt} (job_id, attempt, started_at, finished_at, worker_id, outcome, error)
    SELECT id, attempts, started_at, statement_timestamp(), %(worker_id)s, outcome, %(error)s::jsonb FROM ended
), {+_figure_ended}
SELECT count(*) FROM ended;

-- name: fail
-- A job failed for good (or, status 'cancelled', stopped itself when asked), in
-- one statement with its attempt kept and counted; as retry.
WITH old AS (
    SELECT id, queue, run_at, started_at, attempts FROM {job}
    WHERE id = %(id)s AND status = 'running' AND worker_id = %(worker_id)s
      AND batch_id IS NULL AND NOT has_dependents
    FOR UPDATE
), ended AS (
    UPDATE {job} AS j
    SET status = %(status)s, error = %(error)s::jsonb, finished_at = statement_timestamp(),
        lease_expires_at = NULL
    FROM old WHERE j.id = old.id
    RETURNING old.id, old.queue, old.run_at, old.started_at, old.attempts,
              %(status)s::text AS outcome
), kept AS (
    INSERT INTO {attempt} (job_id, attempt, started_at, finished_at, worker_id, outcome, error)
    SELECT id, attempts, started_at, statement_timestamp(), %(worker_id)s, outcome, %(error)s::jsonb
    FROM ended
), {+_figure_ended}
SELECT count(*) FROM ended;
