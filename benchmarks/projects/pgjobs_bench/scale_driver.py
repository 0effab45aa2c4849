"""The Django side of benchmarks/scale.py's claim-cost measurement.

Run inside the pgjobs_bench project (DJANGO_SETTINGS_MODULE=pgjobs_bench.scale_settings)::

    python scale_driver.py claim --finished N[,N...] --ready R --limits 1,100 --calls C [--explain]

For each N in turn, it empties ``pgjobs_job``, writes N succeeded jobs and R
ready no-op jobs with one ``INSERT ... SELECT FROM generate_series`` each (the
columns a real enqueue and finish write, including a valid signature), then ``VACUUM ANALYZE`` and
``CHECKPOINT``, as a table that autovacuum keeps up with would be. Then, per
limit, it times C calls of the store's own ``finish_and_claim(worker_id,
results, queues, limit)`` (results: the previous batch's ids, as a worker
passes them), each in autocommit like the worker's. After each call (untimed)
it enqueues as many ready jobs as were claimed, so the backlog stays at R.
With ``--explain`` it first runs EXPLAIN (ANALYZE, BUFFERS) of the finish and
claim statement for each limit, inside a transaction that is rolled back.

Prints one JSON object: per N and limit the milliseconds of each timed call, and
the plans with their buffer counts.
"""

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Rows as the store leaves them: a succeeded job has run once, has a result and
# a finish time; a ready one is due now. Times are spread over the past so that
# ids and run_at grow together, as in a real history.
FILL = """
INSERT INTO pgjobs_job (func, args, kwargs, queue, priority, run_at, status, attempts,
                        max_attempts, created_at, started_at, finished_at, worker_id,
                        result, signature)
SELECT %(func)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(queue)s, 0, t, %(status)s,
       CASE WHEN %(status)s = 'ready' THEN 0 ELSE 1 END, 3, t,
       CASE WHEN %(status)s = 'ready' THEN NULL ELSE t + interval '1 ms' END,
       CASE WHEN %(status)s = 'ready' THEN NULL ELSE t + interval '2 ms' END,
       CASE WHEN %(status)s = 'ready' THEN NULL ELSE 'scale-fill' END,
       CASE WHEN %(status)s = 'ready' THEN NULL ELSE 'null'::jsonb END,
       %(signature)s
FROM (SELECT now() - (%(n)s - g) * %(spacing)s * interval '1 ms' AS t
      FROM generate_series(1, %(n)s) AS g) AS times
"""

BUFFERS = re.compile(r"Buffers: shared((?: \w+=\d+)+)")


def _setup():
    import django

    django.setup()
    from pgjobs.handler import get_backend
    from pgjobs_bench.tasks import noop

    backend = get_backend()
    store = backend.get_store()
    spec = backend.prepare(noop, [], {})
    queues = list(backend.queues) or None  # what pgjobs_worker claims from
    return store, spec, queues


def _fill(cursor, spec, status, n, spacing_ms=1.0):
    if n <= 0:
        return
    cursor.execute(
        FILL,
        {
            "func": spec.func,
            "args": json.dumps(spec.args),
            "kwargs": json.dumps(spec.kwargs),
            "queue": spec.queue,
            "signature": spec.signature,
            "status": status,
            "n": n,
            "spacing": spacing_ms,
        },
    )


def _buffers(line):
    """{"hit": ..., "read": ..., "dirtied": ..., "written": ...} of a plan's Buffers line."""
    match = BUFFERS.search(line)
    if not match:
        return None
    counts = {"hit": 0, "read": 0}
    for pair in match.group(1).split():
        key, value = pair.split("=")
        counts[key] = int(value)
    return counts


def _explain(store, queues, limit):
    """EXPLAIN (ANALYZE, BUFFERS) of the finish-and-claim statement the worker runs,
    finishing ``limit`` jobs claimed just before; all rolled back."""
    import psycopg
    from django.db import connection, transaction

    class _Rollback(Exception):
        pass

    worker_id = "scale-explain"
    query = store.sql.finish_and_claim if store.keep_succeeded else store.sql.delete_and_claim
    plan = []
    try:
        with transaction.atomic():
            jobs = store.claim(queues, limit, worker_id)
            params = store._claim_params(queues, limit, worker_id)
            params.update(store._finish_params(worker_id, [(job.id, None) for job in jobs]))
            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params)
                plan = [row[0] for row in cursor.fetchall()]
            raise _Rollback
    except _Rollback:
        pass
    # The first Buffers line belongs to the top node: the whole statement. The
    # claim's index scan is the node on pgjobs_job_claim_idx.
    total = next((_buffers(line) for line in plan if "Buffers:" in line), None)
    claim_scan = None
    for i, line in enumerate(plan):
        if "pgjobs_job_claim_idx" in line:
            claim_scan = next((_buffers(x) for x in plan[i + 1 :] if "Buffers:" in x), None)
            break
    return {"limit": limit, "plan": plan, "total_buffers": total, "claim_scan_buffers": claim_scan}


def cmd_claim(args):
    store, spec, queues = _setup()
    limits = [int(x) for x in args.limits.split(",")]
    sizes = [int(x) for x in args.finished.split(",")]
    return {"sizes": [_claim_at(store, spec, queues, n, limits, args) for n in sizes]}


def _claim_at(store, spec, queues, finished, limits, args):
    """The claim timings (and plans) with ``finished`` succeeded jobs in the table."""
    from django.db import connection

    out = {"finished": finished, "ready": args.ready, "limits": {}, "explain": []}
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE pgjobs_job RESTART IDENTITY")
        _fill(cursor, spec, "succeeded", finished)
        _fill(cursor, spec, "ready", args.ready)
        cursor.execute("VACUUM ANALYZE pgjobs_job")
        cursor.execute("CHECKPOINT")
        cursor.execute(
            "SELECT pg_relation_size('pgjobs_job'), pg_total_relation_size('pgjobs_job'), "
            "pg_relation_size('pgjobs_job_claim_idx'), pg_relation_size('pgjobs_job_pkey')"
        )
        heap, total, claim_idx, pkey = cursor.fetchone()
    out["fill_s"] = time.perf_counter() - started
    out["sizes"] = {"heap": heap, "total": total, "claim_idx": claim_idx, "pkey": pkey}

    if args.explain:
        for limit in limits:
            try:
                out["explain"].append(_explain(store, queues, limit))
            except Exception as exc:  # private names may change; the timings still count
                out["explain"].append({"limit": limit, "error": f"{type(exc).__name__}: {exc}"})

    worker_id = f"scale-claim-{os.getpid()}"
    for limit in limits:
        times, results = [], []
        for call in range(args.warmup + args.calls):
            t0 = time.perf_counter()
            jobs = store.finish_and_claim(worker_id, results, queues, limit)
            elapsed = time.perf_counter() - t0
            if len(jobs) < limit:
                out["error"] = f"limit {limit}: call {call} claimed {len(jobs)}"
                break
            if call >= args.warmup:
                times.append(elapsed * 1000.0)
            results = [(job.id, None) for job in jobs]
            with connection.cursor() as cursor:  # untimed: keep the backlog at --ready
                _fill(cursor, spec, "ready", len(jobs))
        if results:
            store.finish(worker_id, results)
        out["limits"][str(limit)] = {"times_ms": times}
    with connection.cursor() as cursor:
        cursor.execute("SELECT status, count(*) FROM pgjobs_job GROUP BY status")
        out["counts_after"] = dict(cursor.fetchall())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    claim = sub.add_parser("claim")
    claim.add_argument("--finished", required=True, help="comma-separated sizes")
    claim.add_argument("--ready", type=int, default=2000)
    claim.add_argument("--limits", default="1,100")
    claim.add_argument("--calls", type=int, default=300)
    claim.add_argument("--warmup", type=int, default=20)
    claim.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    print(json.dumps({"claim": cmd_claim}[args.command](args)))


if __name__ == "__main__":
    main()
