#!/usr/bin/env python3
"""The machine's floor for enqueue-to-start latency on PostgreSQL: no queue at all.

    python benchmarks/latency_floor.py                 # 300 probes, 20 ms apart, as run.py's
    python benchmarks/latency_floor.py --probes 1000 --rounds 3

A bare psycopg loop does what every LISTEN/NOTIFY queue must do for one job, and
nothing else: a producer INSERTs a row and NOTIFYs in one committed statement;
another process, blocked on LISTEN, claims the row (``UPDATE ... WHERE id =
(SELECT ... FOR UPDATE SKIP LOCKED)``, committed) as soon as the notification
arrives. Both commits wait for the WAL to reach the disk, as a queue's must. The
figure is the time from just before the INSERT to the claim's return: what
``run.py``'s idle latency would be for a queue that cost nothing in Python. Run it
beside ``run.py`` (the same hour), since this machine's idle round trips vary a lot
from day to day (CPUs woken from idle, other tenants).

It uses its own database, ``pgjobs_bench_floor``, dropped and recreated, at
BENCH_PGHOST/BENCH_PGPORT/BENCH_PGUSER (as run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import psycopg
from harness import percentile
from psycopg import sql

DATABASE = "pgjobs_bench_floor"
CHANNEL = "floor"
CLAIM = """
UPDATE floor_job SET status = 'running'
WHERE id = (SELECT id FROM floor_job WHERE status = 'ready' ORDER BY id LIMIT 1
            FOR UPDATE SKIP LOCKED)
RETURNING id
"""
ENQUEUE = """
WITH job AS (INSERT INTO floor_job DEFAULT VALUES RETURNING id)
SELECT pg_notify(%s, %s) FROM job
"""


def dsn(dbname: str) -> str:
    host = os.environ.get("BENCH_PGHOST", "127.0.0.1")
    port = os.environ.get("BENCH_PGPORT", "5432")
    user = os.environ.get("BENCH_PGUSER", "root")
    return f"host={host} port={port} user={user} dbname={dbname}"


def recreate() -> None:
    with psycopg.connect(dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with psycopg.connect(dsn(DATABASE), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE floor_job (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'ready')"
        )


def claimer(seconds: float, out_path: str) -> None:
    """The worker's side: wait on LISTEN, claim at once, note when (time.time())."""
    listener = psycopg.connect(dsn(DATABASE), autocommit=True)
    listener.execute(f"LISTEN {CHANNEL}")
    conn = psycopg.connect(dsn(DATABASE), autocommit=True, prepare_threshold=0)
    seen = []
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # Leave the generator before using a connection: the claim has its own.
        for notify in list(listener.notifies(timeout=0.5, stop_after=1)):
            received = time.time()
            conn.execute(CLAIM, prepare=True).fetchall()
            seen.append((float(notify.payload), received, time.time()))
    with open(out_path, "w") as out:
        json.dump(seen, out)


def one_round(probes: int, spacing: float, out_path: str) -> dict:
    seconds = probes * spacing + 5
    proc = subprocess.Popen(
        [sys.executable, __file__, "--claimer", str(seconds), out_path],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("the claimer did not start")
    with psycopg.connect(dsn(DATABASE), autocommit=True, prepare_threshold=0) as conn:
        conn.execute(ENQUEUE, [CHANNEL, "0"], prepare=True).fetchall()  # warm-up
        time.sleep(0.5)
        t0 = time.monotonic()
        for n in range(probes):
            delay = t0 + n * spacing - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn.execute(ENQUEUE, [CHANNEL, repr(time.time())], prepare=True).fetchall()
    proc.wait(timeout=seconds + 30)
    with open(out_path) as f:
        rows = [r for r in json.load(f) if r[0] > 0]
    return {
        "notified_ms": [(r[1] - r[0]) * 1e3 for r in rows],
        "claim_ms": [(r[2] - r[1]) * 1e3 for r in rows],
        "total_ms": [(r[2] - r[0]) * 1e3 for r in rows],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--probes", type=int, default=300, help="probes per round (default 300)")
    p.add_argument("--spacing", type=float, default=0.02, help="seconds apart (default 0.02)")
    p.add_argument("--rounds", type=int, default=2, help="rounds, each a new claimer (default 2)")
    p.add_argument("--claimer", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.claimer:
        claimer(float(args.claimer[0]), args.claimer[1])
        return
    recreate()
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".work", "floor.json")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    print(f"bare LISTEN/NOTIFY loop, {args.probes} probes {args.spacing * 1e3:g} ms apart")
    totals = []
    for number in range(1, args.rounds + 1):
        result = one_round(args.probes, args.spacing, out_path)
        totals.extend(result["total_ms"])
        parts = ", ".join(
            f"{name.removesuffix('_ms')} p50 {statistics.median(values):.2f}"
            for name, values in result.items()
        )
        print(f"  round {number}: {parts} ms (n={len(result['total_ms'])})", flush=True)
    print(
        f"floor: enqueue-to-claim p50 {statistics.median(totals):.2f} ms, "
        f"p95 {percentile(totals, 95):.2f} ms"
    )


if __name__ == "__main__":
    main()
