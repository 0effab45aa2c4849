#!/usr/bin/env python3
"""The machine's floor for no-op throughput on PostgreSQL: no queue at all.

    benchmarks/.work/venv/bin/python benchmarks/throughput_floor.py
    benchmarks/.work/venv/bin/python benchmarks/throughput_floor.py --jobs 100000 --rounds 5
    benchmarks/.work/venv/bin/python benchmarks/throughput_floor.py --statements bare,pgjobs,worker

``--processes`` bare psycopg loops (default 2) each claim ``--batch`` rows with one
``FOR UPDATE SKIP LOCKED`` statement (committed), call a no-op per row and mark
the rows done (committed), until nothing is left: what any batching queue must do
for a no-op job, and nothing else. Its rate is the ceiling for ``run.py``'s
"no-op, 2 processes" on this machine, this hour.

The same loops then run pgjobs' own statements (``pgjobs``): its ``claim`` and
``finish_and_claim`` from ``pgjobs/stores/sql/postgres.sql`` on its migrated
tables, with the parameters its store sends, its rows read as Django reads them,
but no Django and no worker. ``worker`` runs pgjobs' worker itself
(``manage.py pgjobs_worker``, ``--worker-args``, default run.py's best setting)
on the same jobs. Three figures then split the gap between the floor and pgjobs
into what its SQL costs and what its Python costs. ``pgjobs-delete`` and
``worker-delete`` are the same with ``KEEP_SUCCEEDED = False``: succeeded jobs
deleted as they finish (``delete_and_claim``) rather than kept.

Each round runs every set once, in turn, on ``--jobs`` fresh rows (vacuumed and
analysed first). Per run: jobs/s from first claim to last finish (the loops'
clocks; for the worker, from its first stored success to its last, watched every
5 ms in the per-minute figures its statements write, which a deleted job leaves
behind too: the jobs' own timestamps are printed beside where they are kept), the
CPU the client processes used per job (the loops' from their first claim, ``getrusage``;
the workers' from their first stored success to their last, read from ``/proc``, so that
start-up and exit are left out), and the rest of the machine's busy time per job in the
same span: PostgreSQL's, on a quiet machine. Medians per set, every run's
figure beside. Its own database, ``pgjobs_bench_floor``, dropped and recreated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import psycopg
from harness import (
    PROJECTS_DIR,
    PYTHON,
    _cpu_times,
    manage_py,
    wait_until_quiet,
)
from latency_floor import DATABASE, dsn, fresh_database, pgjobs_queries, project_env
from psycopg.types.string import TextLoader

BARE_CLAIM = """
UPDATE floor_job SET status = 'running', started_at = now()
WHERE id IN (SELECT id FROM floor_job WHERE status = 'ready' ORDER BY id LIMIT %s
             FOR UPDATE SKIP LOCKED)
RETURNING id, args
"""
BARE_FINISH = "UPDATE floor_job SET status = 'done', finished_at = now() WHERE id = ANY(%s)"
# The rows of the pgjobs sets: copies of one no-op job enqueued by pgjobs itself
# (signed, as a worker checks), made once by ``recreate``.
TEMPLATE = (
    "import django; django.setup()\n"
    "from pgjobs import background\n"
    "from pgjobs_bench.tasks import noop\n"
    "background.enqueue_many([(noop, [], {})])\n"
)


SETS = ("bare", "pgjobs", "pgjobs-delete", "worker", "worker-delete")


def noop(*args, **kwargs):
    return None


def recreate(schema_sql: str | None = None) -> str:
    """Make the database; return the statement that fills pgjobs' table.
    ``schema_sql``: a file of statements run on pgjobs' tables once migrated."""
    fresh_database(
        "CREATE TABLE floor_job (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT "
        "'ready', args jsonb NOT NULL, started_at timestamptz, finished_at timestamptz)",
        "CREATE INDEX floor_job_ready ON floor_job (id) WHERE status = 'ready'",
    )
    env = project_env()
    subprocess.run([PYTHON, "-c", TEMPLATE], env=env, check=True, cwd=PROJECTS_DIR)
    with psycopg.connect(dsn(DATABASE), autocommit=True) as conn:
        if schema_sql:  # first: a column it adds is in the template, and filled
            with open(schema_sql) as f:
                conn.execute(f.read())
        conn.execute("CREATE TABLE floor_template AS SELECT * FROM pgjobs_job")
        columns = conn.execute(
            "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position) "
            "FROM information_schema.columns WHERE table_name = 'pgjobs_job' "
            "AND column_name <> 'id' AND is_generated = 'NEVER'"
        ).fetchone()[0]
    return (
        f"INSERT INTO pgjobs_job ({columns}) SELECT {columns} "
        "FROM floor_template, generate_series(1, %s)"
    )


def fill(name: str, jobs: int, pgjobs_fill: str) -> None:
    with psycopg.connect(dsn(DATABASE), autocommit=True) as conn:
        conn.execute("TRUNCATE floor_job, pgjobs_job, pgjobs_stat")
        if name == "bare":
            conn.execute(
                "INSERT INTO floor_job (args) SELECT '[]' FROM generate_series(1, %s)", [jobs]
            )
        else:
            conn.execute(pgjobs_fill, [jobs])
        conn.execute("VACUUM ANALYZE floor_job")
        conn.execute("VACUUM ANALYZE pgjobs_job")


class PgjobsStatements:
    """pgjobs' claim and finish_and_claim, with the parameters its store sends
    (``delete``: delete_and_claim and finish_delete, as with KEEP_SUCCEEDED False)."""

    def __init__(self, worker_id: str, batch: int, finish_and_claim: str | None, delete=False):
        from pgjobs import records, stats
        from pgjobs.stores import postgres

        self.queries = pgjobs_queries()
        queries = self.queries
        self.finish_and_claim = queries.delete_and_claim if delete else queries.finish_and_claim
        self.finish_sql = self.queries.finish_delete if delete else self.queries.finish
        if finish_and_claim:  # --finish-and-claim: a variant, to see what a part costs
            with open(finish_and_claim) as f:
                self.finish_and_claim = f.read()
        self.claim_params = {"limit": batch, "worker_id": worker_id, "lease": 20.0, "queues": None}
        self.finish_params = {
            "worker_id": worker_id,
            "results": None,
            "channel": "pgjobs",
            "dependency_type": records.DEPENDENCY_TYPE,
            "batch_failed": records.BATCH_FAILED_MESSAGE,
            "shard": stats.shard_of(worker_id),
            "edges": postgres._EDGES,
        }

    def claim(self, conn, done: list[int]) -> list:
        if not done:
            return conn.execute(self.queries.claim, self.claim_params, prepare=True).fetchall()
        params = {**self.claim_params, **self.finish_params}
        params["ids"] = "{" + ",".join([str(i) for i in done]) + "}"
        return conn.execute(self.finish_and_claim, params, prepare=True).fetchall()

    def finish(self, conn, done: list[int]) -> None:
        params = {**self.finish_params, "ids": "{" + ",".join([str(i) for i in done]) + "}"}
        conn.execute(self.finish_sql, params, prepare=True).fetchall()


def loop(name: str, batch: int, finish_and_claim: str | None) -> None:
    """One client process: claim, run, finish until nothing is left; print its span."""
    conn = psycopg.connect(dsn(DATABASE), autocommit=True, prepare_threshold=0)
    conn.adapters.register_loader("jsonb", TextLoader)  # as Django reads jsonb
    statements = (
        PgjobsStatements(
            f"floor-{os.getpid()}", batch, finish_and_claim, delete=name == "pgjobs-delete"
        )
        if name != "bare"
        else None
    )
    if statements is not None:  # as pgjobs' store sets its worker's connection (_replan)
        conn.execute("SET plan_cache_mode = force_generic_plan")
    print("ready", flush=True)
    sys.stdin.readline()  # go
    cpu0 = _own_cpu()
    first = last = None
    done: list[int] = []
    while True:
        if statements is None:
            if done:
                conn.execute(BARE_FINISH, [done], prepare=True)
                last = time.time()
            rows = conn.execute(BARE_CLAIM, [batch], prepare=True).fetchall()
        else:
            rows = statements.claim(conn, done)
            if done:
                last = time.time()
        if not rows:
            break
        first = first or time.time()
        done = []
        for row in rows:
            noop(*json.loads(row[-1] if statements is None else row[2]))
            done.append(row[0])
    if statements is not None and done:
        statements.finish(conn, done)
        last = time.time()
    print(json.dumps({"first": first, "last": last, "cpu": _own_cpu() - cpu0}), flush=True)


def run_loops(name: str, processes: int, batch: int, finish_and_claim: str | None) -> dict:
    argv = [sys.executable, __file__, "--loop", name, "--batch", str(batch)]
    if finish_and_claim:
        argv += ["--finish-and-claim", finish_and_claim]
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{name}: a loop did not start")
    before = _cpu_times()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    spans = [json.loads(proc.stdout.readline()) for proc in procs]
    busy = (before, _cpu_times())
    for proc in procs:
        proc.wait(timeout=60)
    return {"spans": spans, "busy": busy, "cpu": sum(span["cpu"] for span in spans)}


def run_worker(jobs: int, processes: int, worker_args: str, checkout: str | None,
               delete: bool = False) -> dict:  # fmt: skip
    env = project_env(checkout)
    if delete:
        env["DJANGO_SETTINGS_MODULE"] = "pgjobs_bench.scale_settings"
        env["BENCH_PGJOBS_OPTIONS"] = json.dumps({"KEEP_SUCCEEDED": False})
    argv = [PYTHON, manage_py(), "pgjobs_worker", *worker_args.split()]
    procs = [
        subprocess.Popen(
            argv, env=env, cwd=PROJECTS_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(processes)
    ]
    pids = [proc.pid for proc in procs]
    first = None
    with psycopg.connect(dsn(DATABASE), autocommit=True) as conn:
        while True:
            time.sleep(0.005)
            (done,) = conn.execute(
                "SELECT COALESCE(sum(count), 0) FROM pgjobs_stat WHERE metric = 'succeeded'",
                prepare=True,
            ).fetchone()
            if done and first is None:
                first, start = time.time(), (_cpu_times(), _process_cpu(pids), done)
            if done >= jobs:
                last, end = time.time(), (_cpu_times(), _process_cpu(pids), done)
                break
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        stamped = conn.execute(
            "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)) "
            "FROM pgjobs_job"
        ).fetchone()
    # The CPU figures cover the jobs finished between the two looks.
    run = {"spans": [{"first": first, "last": last}], "busy": (start[0], end[0]),
           "cpu": end[1] - start[1], "counted": int(end[2] - start[2])}  # fmt: skip
    if stamped[0] is not None:  # kept: the jobs' own first start and last finish
        run["stamped"] = jobs / (float(stamped[1]) - float(stamped[0]))
    return run


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pids: list[int]) -> float:
    """The CPU seconds (user and system) the processes have used so far."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()  # from the state, field 3
        ticks += int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15
    return ticks / os.sysconf("SC_CLK_TCK")


def figures(run: dict, jobs: int) -> dict:
    first = min(span["first"] for span in run["spans"])
    last = max(span["last"] for span in run["spans"])
    (busy0, _), (busy1, _) = run["busy"]
    machine = (busy1 - busy0) / os.sysconf("SC_CLK_TCK")
    counted = run.get("counted", jobs)
    return {
        "jobs_per_s": jobs / (last - first),
        "client_us": run["cpu"] / counted * 1e6,
        "rest_us": max(0.0, machine - run["cpu"]) / counted * 1e6,
        "stamped": run.get("stamped"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=50_000, help="no-op jobs per run (default 50,000)")
    p.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--batch", type=int, default=200, help="rows per claim (default 200)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each set (default 3)")
    p.add_argument(
        "--statements",
        default="bare,pgjobs,worker",
        help=f"sets, in turn per round, from {', '.join(SETS)}",
    )
    p.add_argument("--worker-args", default="-v 0 --concurrency 8", help="for the worker set")
    p.add_argument("--checkout", help="measure this checkout's pgjobs in the worker set")
    p.add_argument(
        "--finish-and-claim",
        metavar="FILE",
        help="the pgjobs sets run this statement instead of pgjobs' finish_and_claim "
        "(pgjobs-delete: delete_and_claim): a variant with a part cut out, say, to see "
        "what that part costs",
    )
    p.add_argument(
        "--schema-sql",
        metavar="FILE",
        help="statements run on pgjobs' migrated tables before the rounds (an index "
        "dropped, a storage setting changed, say, to see what it costs every set)",
    )
    p.add_argument("--loop", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loop:
        loop(args.loop, args.batch, args.finish_and_claim)
        return
    names = args.statements.split(",")
    if set(names) - set(SETS):
        p.error(f"--statements takes {', '.join(SETS)}, not {args.statements!r}")
    pgjobs_fill = recreate(args.schema_sql)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for n in range(args.rounds):
        for name in names:
            fill(name, args.jobs, pgjobs_fill)
            wait_until_quiet()
            if name.startswith("worker"):
                run = run_worker(
                    args.jobs,
                    args.processes,
                    args.worker_args,
                    args.checkout,
                    delete=name == "worker-delete",
                )
            else:
                run = run_loops(name, args.processes, args.batch, args.finish_and_claim)
            results[name].append(figures(run, args.jobs))
            got = results[name][-1]
            stamped = f"  (timestamps {got['stamped']:,.0f} jobs/s)" if got["stamped"] else ""
            print(
                f"round {n + 1} {name:13} {got['jobs_per_s']:9,.0f} jobs/s  client "
                f"{got['client_us']:5.1f} µs/job  rest {got['rest_us']:5.1f} µs/job{stamped}",
                flush=True,
            )
    print(f"\n{args.jobs:,} no-op jobs, {args.processes} processes, batch {args.batch}, medians:")
    for name in names:
        runs = results[name]
        rates = ", ".join(f"{r['jobs_per_s']:,.0f}" for r in runs)
        print(
            f"  {name:13} {statistics.median(r['jobs_per_s'] for r in runs):9,.0f} jobs/s "
            f"(client {statistics.median(r['client_us'] for r in runs):.1f} µs/job, "
            f"rest {statistics.median(r['rest_us'] for r in runs):.1f} µs/job)  [{rates}]"
        )


if __name__ == "__main__":
    main()
