-- SQLite statements of pgjobs.stores.sqlite.SQLiteStore, one per "-- name:"
-- header (see pgjobs/stores/queries.py). {job} is the Job model's table, filled
-- in at load time; every value is a parameter, lists as JSON arrays read with
-- json_each. Times are this process's clock in the text form Django stores.
--
-- status = 'ready' is written out, not bound: SQLite uses a partial index only
-- when the query's own text implies the index's condition.

-- name: insert
INSERT INTO {job} (func, args, kwargs, queue, priority, run_at, max_attempts, timeout,
                   unique_key, signature, traceparent, created_at, batch_id);

-- name: insert_row
-- One job's values, repeated for each job of a multi-row insert; run_at is the
-- job's, else now; batch_id NULL but for a batch's jobs.
(%s, %s, %s, %s, %s, COALESCE(%s, %s), %s, %s, %s, %s, %s, %s, %s);

-- name: returning_info
-- SQLite >= 3.35: the inserted rows back, as INFO_FIELDS (pgjobs/stores/orm.py).
RETURNING id, func, queue, status, priority, run_at, attempts, max_attempts, created_at,
          started_at, finished_at, result, error, worker_id;

-- name: get_info
SELECT id, func, queue, status, priority, run_at, attempts, max_attempts, created_at,
       started_at, finished_at, result, error, worker_id
FROM {job} WHERE id = %s;

-- name: begin_immediate
-- Take the write lock before reading, waiting the busy timeout for it.
BEGIN IMMEDIATE;

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;

-- name: claim
-- SQLite >= 3.35: the claim is one statement. queues NULL: every queue. run_at
-- comes back as text (no declared type), so that the store reads each row's
-- time itself and a row it cannot read fails alone, not the whole claim.
UPDATE {job}
SET status = 'running', attempts = attempts + 1, started_at = %(now)s,
    worker_id = %(worker_id)s, lease_expires_at = %(lease_expires_at)s
WHERE id IN (
    SELECT id FROM {job}
    WHERE status = 'ready' AND run_at <= %(now)s
      AND (%(queues)s IS NULL OR queue IN (SELECT value FROM json_each(%(queues)s)))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
)
RETURNING id, func, args, kwargs, queue, priority, CAST(run_at AS TEXT), attempts,
          max_attempts, timeout, signature, atomic, traceparent;

-- name: due
-- The claim without RETURNING (SQLite < 3.35): the due ids, then mark and claimed.
SELECT id FROM {job}
WHERE status = 'ready' AND run_at <= %(now)s
  AND (%(queues)s IS NULL OR queue IN (SELECT value FROM json_each(%(queues)s)))
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s;

-- name: mark
UPDATE {job}
SET status = 'running', attempts = attempts + 1, started_at = %(now)s,
    worker_id = %(worker_id)s, lease_expires_at = %(lease_expires_at)s
WHERE id IN (SELECT value FROM json_each(%(ids)s));

-- name: claimed
SELECT id, func, args, kwargs, queue, priority, CAST(run_at AS TEXT), attempts, max_attempts,
       timeout, signature, atomic, traceparent
FROM {job} WHERE id IN (SELECT value FROM json_each(%(ids)s));

-- name: finishing
-- The jobs a finish is about to record that a batch counts or jobs are chained
-- after, read under the write lock: exactly those the finish then updates.
SELECT id, batch_id, has_dependents FROM {job}
WHERE id IN (SELECT CAST(key AS INTEGER) FROM json_each(%(results)s))
  AND status = 'running' AND worker_id = %(worker_id)s
  AND (batch_id IS NOT NULL OR has_dependents);

-- name: finish
-- plain_only: only jobs that neither a batch counts nor jobs are chained after
-- (a finish outside a transaction records those alone, then the rest with
-- finishing and the settling that follows, in a transaction).
-- One statement for every success of a batch: results is one JSON object, job
-- id -> the result's JSON text. The guard keeps a job whose lease was lost from
-- completing twice.
UPDATE {job}
SET status = 'succeeded', result = json_extract(%(results)s, '$."' || id || '"'),
    finished_at = %(now)s, lease_expires_at = NULL
WHERE id IN (SELECT CAST(key AS INTEGER) FROM json_each(%(results)s))
  AND status = 'running' AND worker_id = %(worker_id)s
  AND (NOT %(plain_only)s OR (batch_id IS NULL AND NOT has_dependents));

-- name: finish_delete
-- finish with KEEP_SUCCEEDED False: succeeded jobs are deleted instead.
DELETE FROM {job}
WHERE id IN (SELECT CAST(key AS INTEGER) FROM json_each(%(results)s))
  AND status = 'running' AND worker_id = %(worker_id)s
  AND (NOT %(plain_only)s OR (batch_id IS NULL AND NOT has_dependents));

-- name: next_run_at
SELECT MIN(run_at) FROM {job}
WHERE status = 'ready'
  AND (%(queues)s IS NULL OR queue IN (SELECT value FROM json_each(%(queues)s)));

-- name: count_due
SELECT COUNT(*) FROM {job}
WHERE status = 'ready' AND run_at <= %(now)s
  AND (%(queues)s IS NULL OR queue IN (SELECT value FROM json_each(%(queues)s)));

-- name: prune_batch
-- Retention: up to N jobs in the given statuses that finished before a cutoff,
-- oldest first, read from pgjobs_job_finished_idx (finished_at < implies its
-- finished_at IS NOT NULL). SQLite has one writer: pruners take turns.
DELETE FROM {job} WHERE id IN (
    SELECT id FROM {job}
    WHERE status IN (SELECT value FROM json_each(%(statuses)s)) AND finished_at < %(cutoff)s
    ORDER BY status, finished_at
    LIMIT %(limit)s
);

-- name: claim_steered
-- claim when some queues are paused or limited (pgjobs/queue_control.py), run
-- inside the write transaction: never from the queues in excluded.
UPDATE {job}
SET status = 'running', attempts = attempts + 1, started_at = %(now)s,
    worker_id = %(worker_id)s, lease_expires_at = %(lease_expires_at)s
WHERE id IN (
    SELECT id FROM {job}
    WHERE status = 'ready' AND run_at <= %(now)s
      AND (%(queues)s IS NULL OR queue IN (SELECT value FROM json_each(%(queues)s)))
      AND queue NOT IN (SELECT value FROM json_each(%(excluded)s))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
)
RETURNING id, func, args, kwargs, queue, priority, CAST(run_at AS TEXT), attempts,
          max_attempts, timeout, signature, atomic, traceparent;

-- name: due_steered
-- claim_steered without RETURNING (SQLite < 3.35): the due ids, then mark and claimed.
SELECT id FROM {job}
WHERE status = 'ready' AND run_at <= %(now)s
  AND (%(queues)s IS NULL OR queue IN (SELECT value FROM json_each(%(queues)s)))
  AND queue NOT IN (SELECT value FROM json_each(%(excluded)s))
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s;

-- name: count_finished
-- The per-minute figures (pgjobs/stats.py) of the successes finish is about to
-- record (the same guard), in the same transaction. A bucket is how many of
-- stats.EDGES the seconds reach. WHERE true: SQLite's upsert after a SELECT.
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
                   WHEN 'wait' THEN (julianday(j.started_at) - julianday(j.run_at)) * 86400.0
                   WHEN 'run' THEN (julianday(%(now)s) - julianday(j.started_at)) * 86400.0
               END AS x
        FROM {job} AS j
        CROSS JOIN (SELECT 'succeeded' AS metric UNION ALL SELECT 'wait' UNION ALL SELECT 'run') AS k
        WHERE j.id IN (SELECT CAST(key AS INTEGER) FROM json_each(%(results)s))
          AND j.status = 'running' AND j.worker_id = %(worker_id)s
          AND (NOT %(plain_only)s OR (j.batch_id IS NULL AND NOT j.has_dependents))
    )
    GROUP BY queue, metric, bucket
    ORDER BY queue, metric, bucket
)
WHERE true
ON CONFLICT (minute, queue, shard, metric, bucket)
DO UPDATE SET count = count + excluded.count, total = total + excluded.total;

-- name: prune_attempts
-- The attempts kept of the jobs prune_batch is about to delete (the same
-- choice of jobs), in the same transaction.
DELETE FROM {attempt} WHERE job_id IN (
    SELECT id FROM {job}
    WHERE status IN (SELECT value FROM json_each(%(statuses)s)) AND finished_at < %(cutoff)s
    ORDER BY status, finished_at
    LIMIT %(limit)s
);

-- name: delete_attempts
-- The attempts kept of the jobs finish_delete is about to delete (the same guard).
DELETE FROM {attempt}
WHERE job_id IN (
    SELECT id FROM {job}
    WHERE id IN (SELECT CAST(key AS INTEGER) FROM json_each(%(results)s))
      AND status = 'running' AND worker_id = %(worker_id)s
      AND (NOT %(plain_only)s OR (batch_id IS NULL AND NOT has_dependents))
);

-- name: add_figures
-- Per-minute figures added up, a row per key (figures_row, repeated), in key order.
INSERT INTO {stat} (minute, queue, shard, metric, bucket, count, total);

-- name: figures_row
(%s, %s, %s, %s, %s, %s, %s);

-- name: add_figures_conflict
ON CONFLICT (minute, queue, shard, metric, bucket)
DO UPDATE SET count = count + excluded.count, total = total + excluded.total;
