#!/usr/bin/env python3
"""Measure pgjobs against django-tasks-db and Procrastinate on the local PostgreSQL.

    python benchmarks/run.py                  # full run (several minutes)
    python benchmarks/run.py --quick          # smaller counts, one setting each (< 2 min)
    python benchmarks/run.py --systems pgjobs,procrastinate
    python benchmarks/run.py --database sqlite --producer-rate 10   # pgjobs on SQLite

For each system, in its own freshly created database: enqueue jobs/s (one
transaction per job, many in one transaction, bulk API), processing jobs/s of
N pre-enqueued no-op jobs with 1 and 2 worker processes (best worker setting
of those tried), and enqueue-to-start latency p50/p95 with an idle worker.
Prints a Markdown table with pgjobs/peer ratios and writes it, with every
individual run, to benchmarks/results/latest.md (raw data in latest.json).

Runs with any python3: on first use it creates benchmarks/.work/venv (via
setup.sh) with the peers and pgjobs, then re-runs itself inside that venv.
PostgreSQL is reached at BENCH_PGHOST/BENCH_PGPORT/BENCH_PGUSER
(default 127.0.0.1:5432, root, trust auth). ``--database mysql`` uses MySQL or
MariaDB at BENCH_MYSQLHOST/BENCH_MYSQLPORT/BENCH_MYSQLUSER (127.0.0.1:3306,
root, no password); ``--database sqlite`` a file in benchmarks/.work. Only
queues that run on that database are measured there.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENV_PYTHON = BENCH_DIR / ".work" / "venv" / "bin" / "python"
READY_MARKER = BENCH_DIR / ".work" / "venv" / ".bench-ready"
ALL_SYSTEMS = ("pgjobs", "django-tasks-db", "procrastinate", "pgjobs-redis", "rq", "celery")


def ensure_venv() -> None:
    """Re-exec inside the benchmark venv, creating it first if needed."""
    if Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve():
        return
    if not READY_MARKER.exists():
        print("Creating benchmarks/.work/venv (peers + pgjobs) ...", flush=True)
        subprocess.run(["bash", str(BENCH_DIR / "setup.sh")], check=True)
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts, one setting each")
    p.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help=f"comma-separated, from {', '.join(ALL_SYSTEMS)} (default: all)",
    )
    p.add_argument("--jobs", type=int, help="no-op jobs per processing run (default 10000)")
    p.add_argument(
        "--database",
        choices=("postgres", "mysql", "sqlite"),
        default="postgres",
        help="the database the queues store jobs in (default: postgres)",
    )
    p.add_argument(
        "--producer-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="during processing runs, another process enqueues R jobs/s; its errors fail the run",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="where to write the Markdown results (a .json with raw data goes beside it); "
        "default results/latest.md, results/latest-<database>.md for other databases",
    )
    args = p.parse_args()
    if args.output is None:
        suffix = "" if args.database == "postgres" else f"-{args.database}"
        args.output = BENCH_DIR / "results" / f"latest{suffix}.md"
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(ALL_SYSTEMS)
    if unknown:
        p.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    return args


def plan(quick: bool, jobs: int | None) -> dict:
    """Counts per mode; quick trades precision for a run under two minutes."""
    if quick:
        return dict(enqueue_n=500, enqueue_repeats=1, jobs=jobs or 2000, latency_n=50)
    return dict(enqueue_n=2000, enqueue_repeats=3, jobs=jobs or 10000, latency_n=200)


def measure_system(system, counts: dict, args: argparse.Namespace, log_dir: Path) -> dict:
    from harness import Bench, BenchError, best

    quick = args.quick
    # --quick must stay short, so it waits only briefly for a quiet machine.
    bench = Bench(
        system,
        log_dir,
        quiet_timeout=5.0 if quick else 60.0,
        retries=0 if quick else 2,
        vendor=args.database,
        producer_rate=args.producer_rate,
    )
    result: dict = {"versions": system.versions(), "enqueue": {}, "throughput": [], "latency": []}

    def attempt(what: str, fn):
        try:
            return fn()
        except BenchError as e:
            bench.say(f"{what}: FAILED: {e}")
            return {"error": str(e)}

    t0 = time.monotonic()
    bench.say(f"creating database {bench.db_name} and migrating")
    prepared = attempt("migrate", bench.prepare)
    if prepared and "error" in prepared:
        result["error"] = prepared["error"]
        return result

    for mode in ("single", "atomic", "bulk"):
        res = attempt(
            f"enqueue {mode}",
            partial(bench.enqueue, mode, counts["enqueue_n"], counts["enqueue_repeats"]),
        )
        result["enqueue"][mode] = res
        if "rate" in res:
            bench.say(f"enqueue {mode:6}: {res['rate']:8.0f} jobs/s")
        elif "unsupported" in res:
            bench.say(f"enqueue {mode:6}: n/a ({res['unsupported']})")

    for config in system.throughput_configs(quick):
        res = attempt(config.describe(), partial(bench.throughput, config, counts["jobs"]))
        res.setdefault("config", config.describe())
        res.setdefault("processes", config.processes)
        result["throughput"].append(res)
        if "rate" in res:
            bench.say(
                f"process {config.describe():40}: {res['rate']:7.0f} jobs/s "
                f"(wall from spawn {res['wall_rate']:.0f} jobs/s)"
            )

    for config in system.latency_configs(quick):
        res = attempt(
            f"latency {config.describe()}",
            partial(bench.latency, config, counts["latency_n"], spacing=0.02),
        )
        res.setdefault("config", config.describe())
        result["latency"].append(res)
        if "p50_ms" in res:
            bench.say(
                f"latency {config.describe():40}: p50 {res['p50_ms']:.1f} ms, "
                f"p95 {res['p95_ms']:.1f} ms"
            )

    result["best"] = {
        procs: best([r for r in result["throughput"] if r.get("processes") == procs], "rate")
        for procs in (1, 2)
    }
    result["best_latency"] = best(result["latency"], "p50_ms", lower_is_better=True)
    result["seconds"] = time.monotonic() - t0
    return result


def main() -> int:
    args = parse_args()
    ensure_venv()
    # Turn SIGTERM into SystemExit so the worker groups' context managers
    # still stop the workers (they run in their own sessions).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import report
    from harness import REPO_DIR, WORK_DIR, Database
    from systems import SYSTEMS

    counts = plan(args.quick, args.jobs)
    started = time.monotonic()
    log_dir = WORK_DIR / "logs"
    results: dict = {}
    skipped: dict = {}
    for name in args.systems:
        system = SYSTEMS[name]
        if args.database not in system.databases:
            print(f"  [{name}] skipped: runs on {', '.join(system.databases)} only", flush=True)
            skipped[name] = f"runs on {', '.join(system.databases)} only"
            continue
        reason = system.unavailable()
        if reason and name == "pgjobs":
            # pgjobs is installed editable; (re)install in case the package
            # appeared or changed its dependencies since the venv was made.
            subprocess.run(
                [str(VENV_PYTHON), "-m", "pip", "install", "-q", "-e", str(REPO_DIR)],
                capture_output=True,
            )
            reason = system.unavailable()
        if reason:
            print(f"  [{name}] skipped: {reason}", flush=True)
            skipped[name] = reason
            continue
        print(f"== {name}", flush=True)
        res = measure_system(system, counts, args, log_dir)
        if "error" in res:
            skipped[name] = res["error"]
        else:
            results[name] = res

    total = time.monotonic() - started
    meta = report.environment(args.quick, counts, total, Database(args.database, ""))
    text = report.markdown(results, skipped, meta)
    print()
    print(text)
    report.write(args.output, text, {"meta": meta, "results": results, "skipped": skipped})
    print(f"Written to {args.output} ({total:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
