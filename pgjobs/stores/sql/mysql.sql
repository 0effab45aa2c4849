-- MySQL/MariaDB statements of pgjobs.stores.mysql.MySQLStore, one per
-- "-- name:" header (see pgjobs/stores/queries.py). {job} is the Job model's
-- table, filled in at load time; every value is a parameter. mysqlclient
-- expands a tuple parameter into a list (id IN %(ids)s), each value escaped.
--
-- Time: under USE_TZ Django stores naive UTC in DATETIME(6) columns but leaves
-- the session time zone alone, so the server's NOW() is in whatever zone it
-- runs in. These statements take %(now)s, and use UTC_TIMESTAMP(6) when it is
-- NULL: the store passes NULL where the server's UTC clock matches the stored
-- times, else its own clock's time in the stored form.

-- name: insert
INSERT INTO {job} (func, args, kwargs, queue, priority, run_at, max_attempts, timeout,
                   unique_key, signature, traceparent, created_at, batch_id);

-- name: insert_row
-- One job's values, repeated for each job of a multi-row insert; run_at is the
-- job's, else now; batch_id NULL but for a batch's jobs.
(%s, %s, %s, %s, %s, COALESCE(%s, %s, UTC_TIMESTAMP(6)), %s, %s, %s, %s, %s,
 COALESCE(%s, UTC_TIMESTAMP(6)), %s);

-- name: returning_info
-- MariaDB >= 10.5: the inserted rows back, as INFO_FIELDS (pgjobs/stores/orm.py).
RETURNING id, func, queue, status, priority, run_at, attempts, max_attempts, created_at,
          started_at, finished_at, result, error, worker_id;

-- name: get_info
SELECT id, func, queue, status, priority, run_at, attempts, max_attempts, created_at,
       started_at, finished_at, result, error, worker_id
FROM {job} WHERE id = %s;

-- name: begin_read_committed
-- Django's default for MySQL; without it the claim's locking read takes gap locks.
SET TRANSACTION ISOLATION LEVEL READ COMMITTED;

-- name: begin
START TRANSACTION;

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;

-- name: claim_lock
-- Lock up to N due rows in claim order, skipping rows other workers hold. The
-- rows are read here, locked, so the UPDATE that follows (claim_mark) need not
-- return them. every_queue true: any queue (queues is then a placeholder list).
SELECT id, func, args, kwargs, queue, priority, run_at, attempts, max_attempts, timeout, signature,
       atomic, traceparent
FROM {job}
WHERE status = 'ready' AND run_at <= COALESCE(%(now)s, UTC_TIMESTAMP(6))
  AND (%(every_queue)s OR queue IN %(queues)s)
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_mark
UPDATE {job}
SET status = 'running', attempts = attempts + 1, started_at = COALESCE(%(now)s, UTC_TIMESTAMP(6)),
    worker_id = %(worker_id)s,
    lease_expires_at = COALESCE(%(now)s, UTC_TIMESTAMP(6)) + INTERVAL %(lease)s MICROSECOND
WHERE id IN %(ids)s;

-- name: finishing
-- The jobs a finish is about to record that a batch counts or jobs are chained
-- after, locked: exactly those the finish then updates.
SELECT id, batch_id, has_dependents FROM {job}
WHERE id IN %(ids)s AND status = 'running' AND worker_id = %(worker_id)s
  AND (batch_id IS NOT NULL OR has_dependents)
FOR UPDATE;

-- name: finish
-- plain_only: only jobs that neither a batch counts nor jobs are chained after
-- (a finish outside a transaction records those alone, then the rest with
-- finishing and the settling that follows, in a transaction).
-- One statement for every success of a batch: results is one JSON object, job
-- id -> the result's JSON text. The guard keeps a job whose lease was lost from
-- completing twice.
UPDATE {job}
SET status = 'succeeded', result = JSON_UNQUOTE(JSON_EXTRACT(%(results)s, CONCAT('$."', id, '"'))),
    finished_at = COALESCE(%(now)s, UTC_TIMESTAMP(6)), lease_expires_at = NULL
WHERE id IN %(ids)s AND status = 'running' AND worker_id = %(worker_id)s
  AND (NOT %(plain_only)s OR (batch_id IS NULL AND NOT has_dependents));

-- name: finish_delete
-- finish with KEEP_SUCCEEDED False: succeeded jobs are deleted instead.
DELETE FROM {job} WHERE id IN %(ids)s AND status = 'running' AND worker_id = %(worker_id)s
  AND (NOT %(plain_only)s OR (batch_id IS NULL AND NOT has_dependents));

-- name: seconds_until_due
SELECT TIMESTAMPDIFF(MICROSECOND, COALESCE(%(now)s, UTC_TIMESTAMP(6)), MIN(run_at))
FROM {job}
WHERE status = 'ready' AND (%(every_queue)s OR queue IN %(queues)s);

-- name: prune_lock
-- Retention: lock up to N jobs in the given statuses that finished before now -
-- age, oldest first (in the order of pgjobs_job_finished_idx, so that it is read
-- and no more), skipping rows another pruner holds; prune_delete deletes them in
-- the same short transaction. Concurrent pruners take different rows and never
-- wait for each other; each row is deleted once.
SELECT id FROM {job}
WHERE status IN %(statuses)s
  AND finished_at < COALESCE(%(now)s, UTC_TIMESTAMP(6)) - INTERVAL %(age)s MICROSECOND
ORDER BY status, finished_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: prune_delete
DELETE FROM {job} WHERE id IN %(ids)s;

-- name: claim_lock_steered
-- claim_lock when some queues are paused or limited (pgjobs/queue_control.py),
-- run inside the transaction that holds the limited queues' rows: never from
-- the queues in excluded (("",) for none: no queue has an empty name).
SELECT id, func, args, kwargs, queue, priority, run_at, attempts, max_attempts, timeout, signature,
       atomic, traceparent
FROM {job}
WHERE status = 'ready' AND run_at <= COALESCE(%(now)s, UTC_TIMESTAMP(6))
  AND (%(every_queue)s OR queue IN %(queues)s)
  AND queue NOT IN %(excluded)s
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: count_finished
-- The per-minute figures (pgjobs/stats.py) of the successes finish is about to
-- record (the same guard), added to this worker's shard, in the same
-- transaction. A bucket is how many of stats.EDGES the seconds reach.
INSERT INTO {stat} (minute, queue, shard, metric, bucket, count, total)
SELECT %(minute)s, queue, %(shard)s, metric, bucket, n, seconds FROM (
    SELECT queue, metric,
            COALESCE((x >= 0.005) + (x >= 0.01) + (x >= 0.025) + (x >= 0.05) + (x >= 0.1) +
                     (x >= 0.25) + (x >= 0.5) + (x >= 1) + (x >= 2.5) + (x >= 5) + (x >= 10) +
                     (x >= 30) + (x >= 60) + (x >= 300) + (x >= 3600), 0) AS bucket,
           COUNT(*) AS n, COALESCE(SUM(x), 0) AS seconds
    FROM (
        SELECT j.queue, k.metric,
               CASE k.metric
                   WHEN 'wait' THEN TIMESTAMPDIFF(MICROSECOND, j.run_at, j.started_at) / 1e6
                   WHEN 'run' THEN TIMESTAMPDIFF(MICROSECOND, j.started_at,
                                                 COALESCE(%(now)s, UTC_TIMESTAMP(6))) / 1e6
               END AS x
        FROM {job} AS j
        CROSS JOIN (SELECT 'succeeded' AS metric UNION ALL SELECT 'wait' UNION ALL SELECT 'run') AS k
        WHERE j.id IN %(ids)s AND j.status = 'running' AND j.worker_id = %(worker_id)s
          AND (NOT %(plain_only)s OR (j.batch_id IS NULL AND NOT j.has_dependents))
    ) AS e
    GROUP BY queue, metric, bucket
    ORDER BY queue, metric, bucket
) AS f
ON DUPLICATE KEY UPDATE count = {stat}.count + f.n, total = {stat}.total + f.seconds;

-- name: finish_attempts
-- The attempts kept of the jobs finish_delete is about to delete (the same
-- guard), in the same transaction.
DELETE FROM {attempt} WHERE job_id IN (
    SELECT id FROM {job}
    WHERE id IN %(ids)s AND status = 'running' AND worker_id = %(worker_id)s
      AND (NOT %(plain_only)s OR (batch_id IS NULL AND NOT has_dependents))
);

-- name: row_count
-- How many rows the statement before changed (finish's plain pass).
SELECT ROW_COUNT();

-- name: prune_attempts
-- The attempts kept of the jobs prune_delete deletes, in the same transaction.
DELETE FROM {attempt} WHERE job_id IN %(ids)s;

-- name: add_figures
-- Per-minute figures added up, a row per key (figures_row, repeated), in key order.
INSERT INTO {stat} (minute, queue, shard, metric, bucket, count, total);

-- name: figures_row
(%s, %s, %s, %s, %s, %s, %s);

-- name: add_figures_conflict
ON DUPLICATE KEY UPDATE count = count + VALUES(count), total = total + VALUES(total);
