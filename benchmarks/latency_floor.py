#!/usr/bin/env python3
"""The machine's floor for enqueue-to-start latency on PostgreSQL: no queue at all.

    python benchmarks/latency_floor.py                 # 300 probes, 20 ms apart, as run.py's
    python benchmarks/latency_floor.py --probes 1000 --rounds 3
    python benchmarks/latency_floor.py --statements bare
    python benchmarks/latency_floor.py --load 1000    # as run.py's "while 1,000 jobs/s"

A bare psycopg loop does what every LISTEN/NOTIFY queue must do for one job, and
nothing else: a producer INSERTs a row and NOTIFYs in one committed statement;
another process, blocked on LISTEN, claims the row (``UPDATE ... WHERE id IN
(SELECT ... FOR UPDATE SKIP LOCKED)``, committed) as soon as the notification
arrives. Both commits wait for the WAL to reach the disk, as a queue's must. The
figure is the time from just before the INSERT to the claim's return: what
``run.py``'s idle latency would be for a queue that cost nothing in Python. Run it
beside ``run.py`` (the same hour), since this machine's idle round trips vary a lot
from day to day (CPUs woken from idle, other tenants).

The same loop then runs pgjobs' own two statements instead (``--statements``
picks; each round runs both, one after the other): its ENQUEUE and CLAIM from
``pgjobs/stores/sql/postgres.sql`` on its migrated ``pgjobs_job`` table. That is
pgjobs' latency with its worker's Python taken away, so the three figures
(bare loop, pgjobs' statements, ``run.py``'s pgjobs) split the gap between
the floor and pgjobs into what its SQL costs and what its Python costs.

``--statements worker`` adds the third figure in the same minutes: pgjobs'
worker itself (``manage.py pgjobs_worker -v 0 --concurrency 4``, as run.py's
idle latency; ``--worker-args`` changes the options, ``--checkout DIR``
measures that checkout's pgjobs) with probes enqueued through
``background.enqueue`` by ``projects/driver.py latency``, as run.py's are.
Idle only (not with ``--load``).

With ``--load RATE``, two more processes enqueue that many jobs/s between them
with the same statement, each in its own transaction, and the claimer claims
those too: the floor for run.py's latency under load. Their loops are bare
psycopg, cheaper than any queue's producer (run.py's enqueue through Django),
so the machine has more time left for the claimer than it has under run.py.

It uses its own database, ``pgjobs_bench_floor``, dropped and recreated, at
BENCH_PGHOST/BENCH_PGPORT/BENCH_PGUSER (as run.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

import psycopg
from harness import PROJECTS_DIR, PYTHON, manage_py, percentile, projects_pythonpath
from psycopg import sql
from psycopg.types.string import TextLoader

DATABASE = "pgjobs_bench_floor"
CHANNEL = "floor"
# A row's ``sent`` is the time its probe was sent (0 for the jobs of --load).
# Up to four rows, as pgjobs' claim for an idle worker at concurrency 4: one
# row a wake-up falls behind under --load, once a claim takes longer than the
# gap between two jobs.
BARE_CLAIM = """
UPDATE floor_job SET status = 'running'
WHERE id IN (SELECT id FROM floor_job WHERE status = 'ready' ORDER BY id LIMIT 4
             FOR UPDATE SKIP LOCKED)
RETURNING sent
"""
BARE_ENQUEUE = """
WITH job AS (INSERT INTO floor_job (sent) VALUES (%s) RETURNING id)
SELECT pg_notify(%s, '') FROM job
"""
LOAD_PRODUCERS = 2
# pgjobs' statements, with the parameters its store sends for a job that takes
# one argument (here the time the probe was sent) and the claim of an idle
# worker at concurrency 4.
PGJOBS_CHANNEL = "pgjobs"
PGJOBS_CLAIM_PARAMS = {"limit": 4, "worker_id": "floor", "lease": 20.0, "queues": None}


def pgjobs_enqueue_params(sent: float) -> list:
    args = json.dumps([sent])
    return ["floor.probe", args, "{}", "default", 0, None, 1, None, None, "-", None, PGJOBS_CHANNEL]


def pgjobs_queries():
    """pgjobs' PostgreSQL statements on the tables its migrations make (``pgjobs_job``,
    ``pgjobs_stat``, ...), as its store loads them."""
    from pgjobs.stores.queries import Queries

    names = ("job", "batch", "attempt", "stat", "worker", "schedule", "queue")
    return Queries("postgres", {name: f'"pgjobs_{name}"' for name in names})


def dsn(dbname: str) -> str:
    host = os.environ.get("BENCH_PGHOST", "127.0.0.1")
    port = os.environ.get("BENCH_PGPORT", "5432")
    user = os.environ.get("BENCH_PGUSER", "root")
    return f"host={host} port={port} user={user} dbname={dbname}"


def recreate() -> None:
    fresh_database(
        "CREATE TABLE floor_job (id bigserial PRIMARY KEY, "
        "status text NOT NULL DEFAULT 'ready', sent float8 NOT NULL)"
    )


def fresh_database(*statements: str) -> None:
    """``DATABASE`` dropped and made again: the bare loop's table (``statements``),
    and pgjobs' tables as its migrations make them, indexes and storage settings
    included. Also used by ``throughput_floor.py``."""
    with psycopg.connect(dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with psycopg.connect(dsn(DATABASE), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    subprocess.run(
        [PYTHON, manage_py(), "migrate", "-v", "0"],
        env=project_env(),
        check=True,
        cwd=PROJECTS_DIR,
    )


def project_env(checkout: str | None = None) -> dict:
    """The benchmark project's environment on ``DATABASE`` (``checkout``: that pgjobs)."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="pgjobs_bench.settings", BENCH_DB=DATABASE)
    env["PYTHONPATH"] = projects_pythonpath(env, checkout)
    return env


class Statements:
    """One enqueue and one claim, and how to read the probe's send time back."""

    def __init__(self, name: str):
        self.name = name
        if name == "bare":
            self.channel = CHANNEL
        else:
            statements = pgjobs_queries()
            self.channel, self.enqueue_sql = PGJOBS_CHANNEL, statements.enqueue
            self.claim_sql = statements.claim

    def connect(self, **kwargs):
        conn = psycopg.connect(dsn(DATABASE), **kwargs)
        # As Django's connection does: jsonb arrives as text, decoded by pgjobs.
        conn.adapters.register_loader("jsonb", TextLoader)
        return conn

    def enqueue(self, conn, sent: float) -> None:
        if self.name == "bare":
            conn.execute(BARE_ENQUEUE, [sent, CHANNEL], prepare=True).fetchall()
        else:
            conn.execute(self.enqueue_sql, pgjobs_enqueue_params(sent), prepare=True).fetchall()

    def claim(self, conn) -> list[float]:
        """Claim; return the send times of the rows claimed (0 for load jobs)."""
        if self.name == "bare":
            return [sent for (sent,) in conn.execute(BARE_CLAIM, prepare=True).fetchall()]
        rows = conn.execute(self.claim_sql, PGJOBS_CLAIM_PARAMS, prepare=True).fetchall()
        return [json.loads(row[2])[0] for row in rows]

    def empty(self) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute("TRUNCATE floor_job" if self.name == "bare" else "TRUNCATE pgjobs_job")


def claimer(statements: Statements, seconds: float, out_path: str) -> None:
    """The worker's side: wait on LISTEN, claim at once, note when (time.time())."""
    listener = psycopg.connect(dsn(DATABASE), autocommit=True)
    listener.execute(f"LISTEN {statements.channel}")
    conn = statements.connect(autocommit=True, prepare_threshold=0)
    seen = []
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # Leave the generator before using a connection: the claim has its own.
        for _ in list(listener.notifies(timeout=0.5, stop_after=1)):
            received = time.time()
            for sent in statements.claim(conn):
                seen.append((sent, received, time.time()))
    with open(out_path, "w") as out:
        json.dump(seen, out)


def producer(statements: Statements, rate: float, seconds: float) -> None:
    """--load: enqueue ``rate`` jobs/s, each in its own transaction, for ``seconds``."""
    with statements.connect(autocommit=True, prepare_threshold=0) as conn:
        print("ready", flush=True)
        t0 = time.monotonic()
        for n in itertools.count():
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() - t0 > seconds:
                return
            statements.enqueue(conn, 0.0)


def start(argv: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{argv[0]} did not start")
    return proc


def worker_round(probes: int, spacing: float, worker_args: str, checkout: str | None) -> dict:
    """run.py's idle latency, in this database: pgjobs' worker and its enqueue."""
    with psycopg.connect(dsn(DATABASE), autocommit=True) as conn:
        conn.execute("TRUNCATE pgjobs_job")
    latency_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".work", "floor.txt")
    if os.path.exists(latency_file):
        os.unlink(latency_file)
    env = project_env(checkout)
    env["BENCH_LATENCY_FILE"] = latency_file
    worker = subprocess.Popen(
        [PYTHON, manage_py(), "pgjobs_worker", *worker_args.split()],
        env=env,
        cwd=PROJECTS_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        driver = subprocess.run(
            [PYTHON, os.path.join(PROJECTS_DIR, "driver.py"), "latency", "--n", str(probes)]
            + ["--spacing", str(spacing)],
            env=env,
            cwd=PROJECTS_DIR,
            capture_output=True,
            text=True,
            timeout=probes * spacing + 180,
        )
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    result = json.loads(driver.stdout.strip().splitlines()[-1])
    if "error" in result:
        raise SystemExit(f"worker round: {result['error']}")
    return {"total_ms": result["latencies_ms"]}


def one_round(
    statements: Statements, probes: int, spacing: float, out_path: str, load: float
) -> dict:
    statements.empty()  # as run.py empties the tables before each run
    seconds = probes * spacing + 5
    proc = start(["--claimer", statements.name, str(seconds), out_path])
    producers = [
        start(["--producer", statements.name, str(load / LOAD_PRODUCERS), str(seconds)])
        for _ in range(LOAD_PRODUCERS if load else 0)
    ]
    if producers:
        time.sleep(1.0)  # the load is steady before the first probe
    with statements.connect(autocommit=True, prepare_threshold=0) as conn:
        statements.enqueue(conn, 0.0)  # warm-up
        time.sleep(0.5)
        t0 = time.monotonic()
        for n in range(probes):
            delay = t0 + n * spacing - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            statements.enqueue(conn, time.time())
    proc.wait(timeout=seconds + 30)
    for load_producer in producers:
        load_producer.wait(timeout=30)
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
    p.add_argument(
        "--statements",
        default="bare,pgjobs",
        help="whose statements the loop runs, in turn: bare, pgjobs and worker (pgjobs' "
        "worker itself; default: bare,pgjobs)",
    )
    p.add_argument(
        "--load",
        type=float,
        default=0.0,
        metavar="RATE",
        help="jobs/s that two other processes enqueue meanwhile (default 0: idle)",
    )
    p.add_argument(
        "--worker-args",
        default="-v 0 --concurrency 4",
        help="pgjobs_worker's options for --statements worker (default: run.py's)",
    )
    p.add_argument(
        "--checkout", help="the checkout whose pgjobs the worker runs (default: the venv's)"
    )
    p.add_argument("--claimer", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--producer", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.claimer:
        name, seconds, out_path = args.claimer
        claimer(Statements(name), float(seconds), out_path)
        return
    if args.producer:
        name, rate, seconds = args.producer
        producer(Statements(name), float(rate), float(seconds))
        return
    names = args.statements.split(",")
    if not names or set(names) - {"bare", "pgjobs", "worker"}:
        p.error(f"--statements takes bare, pgjobs and worker, not {args.statements!r}")
    if "worker" in names and args.load:
        p.error("--statements worker measures the idle latency only (no --load)")
    recreate()
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".work", "floor.json")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    print(
        f"LISTEN/NOTIFY loop, no queue, {args.probes} probes {args.spacing * 1e3:g} ms apart"
        + (f", {args.load:g} other jobs/s enqueued meanwhile" if args.load else "")
    )
    totals = {name: [] for name in names}
    for number in range(1, args.rounds + 1):
        for name in names:  # in turn, so that both see the same hour
            if name == "worker":
                result = worker_round(args.probes, args.spacing, args.worker_args, args.checkout)
            else:
                result = one_round(Statements(name), args.probes, args.spacing, out_path, args.load)
            totals[name].extend(result["total_ms"])
            parts = ", ".join(
                f"{part.removesuffix('_ms')} p50 {statistics.median(values):.2f}"
                for part, values in result.items()
            )
            print(
                f"  round {number}, {name + ' statements:':19} {parts} ms "
                f"(n={len(result['total_ms'])})",
                flush=True,
            )
    floor = statistics.median(totals["bare"]) if "bare" in totals else None
    floor95 = percentile(totals["bare"], 95) if "bare" in totals else None
    for name, values in totals.items():
        ratios = (
            f" ({statistics.median(values) / floor:.2f}× and {percentile(values, 95) / floor95:.2f}× "
            "the bare loop's)"
            if floor and name != "bare"
            else ""
        )
        print(
            f"{name + ' statements:':19} enqueue-to-claim p50 {statistics.median(values):.2f} ms, "
            f"p95 {percentile(values, 95):.2f} ms{ratios}"
        )


if __name__ == "__main__":
    main()
