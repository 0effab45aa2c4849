#!/usr/bin/env python3
"""Measure pgjobs against PGQueuer, Procrastinate, django-tasks-db, Oban for
Python and chancy (and, on Redis, RQ and Celery) on the local PostgreSQL.

    python benchmarks/run.py                  # full run (about 40 minutes)
    python benchmarks/run.py --quick          # smaller counts, few settings (< 2 min)
    python benchmarks/run.py --systems pgjobs,pgqueuer
    python benchmarks/run.py --database sqlite --producer-rate 10   # pgjobs on SQLite
    BENCH_BASELINE=../baseline python benchmarks/run.py --systems pgjobs,pgjobs-baseline \
        --alternate --repeat 3       # this checkout's pgjobs against another's

For each system, in its own freshly created database: enqueue jobs/s (one
transaction per job, many in one transaction, bulk API); processing jobs/s of
N pre-enqueued no-op jobs with 1 and 2 worker processes (best worker setting
of those tried), and of two other job kinds (one ORM insert; a 50 ms sleep);
enqueue-to-start latency p50/p95 with an idle worker, and with a worker busy
with the 1,000 no-op jobs/s that other processes enqueue. Prints a Markdown
table with pgjobs/peer ratios and writes it, with every individual run and
two plots, to benchmarks/results/latest.md (raw data in latest.json). Then
runs benchmarks/scale.py, when it exists, and appends its section.

``--alternate`` measures the systems turn about, one measurement of each in
turn, instead of one system after the other; ``--repeat N`` makes each
processing and idle-latency measurement N times (the median run is reported, with
every run's figure); ``--only`` picks settings. With pgjobs-baseline (pgjobs
imported from the checkout BENCH_BASELINE names) they compare two commits.

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
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENV_PYTHON = BENCH_DIR / ".work" / "venv" / "bin" / "python"
READY_MARKER = BENCH_DIR / ".work" / "venv" / ".bench-ready"
ALL_SYSTEMS = (
    "pgjobs",
    "pgqueuer",
    "procrastinate",
    "django-tasks-db",
    "oban",
    "chancy",
    "pgjobs-redis",
    "rq",
    "celery",
    "pgjobs-celery",
)
# --quick measures the database queues only unless --systems says otherwise:
# the Redis queues would take it past two minutes.
QUICK_SYSTEMS = ("pgjobs", "pgqueuer", "procrastinate", "django-tasks-db")
# Measured only when --systems names them: pgjobs from the checkout BENCH_BASELINE names.
EXTRA_SYSTEMS = ("pgjobs-baseline",)
KINDS = ("orm", "sleep50")


def ensure_venv() -> None:
    """Re-exec inside the benchmark venv, creating or updating it first if needed.

    setup.sh leaves the hash of requirements.txt in READY_MARKER; a venv made
    from other requirements (a peer added or re-pinned since) is updated.
    """
    wanted = hashlib.sha256((BENCH_DIR / "requirements.txt").read_bytes()).hexdigest()
    have = READY_MARKER.read_text().strip() if READY_MARKER.exists() else None
    if have != wanted:
        print(
            f"{'Updating' if have is not None else 'Creating'} benchmarks/.work/venv "
            "(peers + pgjobs) ...",
            flush=True,
        )
        subprocess.run(["bash", str(BENCH_DIR / "setup.sh")], check=True)
    if Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts, few settings (< 2 min)")
    p.add_argument(
        "--systems",
        help=f"comma-separated, from {', '.join(ALL_SYSTEMS + EXTRA_SYSTEMS)} (default: "
        f"{', '.join(ALL_SYSTEMS)}; with --quick: {', '.join(QUICK_SYSTEMS)})",
    )
    p.add_argument(
        "--alternate",
        action="store_true",
        help="measure the systems turn about, one measurement of each in turn (A, B, A, "
        "B, ...), so that the machine's drift touches them alike; default: one system "
        "after the other",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="make each processing and idle-latency measurement N times and report the "
        "median run, with every run's figure (default 1)",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="REGEX",
        help="measure only the processing and latency settings whose description "
        "matches (re.search), e.g. 'noop 2 proc × concurrency 2, prefetch 200$', "
        "'orm 1 proc', 'sleep50 .* async', 'latency'; repeat for several",
    )
    p.add_argument("--jobs", type=int, help="no-op jobs per processing run (default 10000)")
    p.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"job kinds measured beside the no-op, from {', '.join(KINDS)} "
        "(default: both; '' for none)",
    )
    p.add_argument(
        "--load-rate",
        type=float,
        default=1000.0,
        metavar="R",
        help="latency under load: no-op jobs/s other processes enqueue meanwhile "
        "(default 1000; 0 skips the measurement)",
    )
    p.add_argument(
        "--no-scale", action="store_true", help="do not run benchmarks/scale.py at the end"
    )
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
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
    if args.systems is None:
        args.systems = ",".join(QUICK_SYSTEMS if args.quick else ALL_SYSTEMS)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(ALL_SYSTEMS + EXTRA_SYSTEMS)
    if unknown:
        p.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    try:
        args.only = [re.compile(pattern) for pattern in args.only or ()]
    except re.error as e:
        p.error(f"--only: {e}")
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if set(args.kinds) - set(KINDS):
        p.error(f"unknown job kind(s): {', '.join(sorted(set(args.kinds) - set(KINDS)))}")
    return args


def plan(quick: bool, jobs: int | None, load_rate: float) -> dict:
    """Counts per mode; quick trades precision for a run under two minutes."""
    if quick:
        counts = dict(enqueue_n=300, enqueue_repeats=1, jobs=jobs or 2000, latency_n=50)
        counts.update(big_n=20000)
        counts.update(orm_jobs=500, sleep50_jobs=300)
    else:
        counts = dict(enqueue_n=2000, enqueue_repeats=3, jobs=jobs or 10000, latency_n=200)
        counts.update(big_n=100000)
        counts.update(orm_jobs=5000, sleep50_jobs=2000)
    counts.update(noop_jobs=counts["jobs"], load_rate=load_rate)
    return counts


def measure_system(system, counts: dict, args: argparse.Namespace, log_dir: Path):
    """Measure one system: a generator that yields after each measurement, so
    that --alternate can take turns, and returns the system's results."""
    from harness import Bench

    bench = Bench(
        system,
        log_dir,
        # --quick must stay short: it does not wait for a quiet machine and
        # does not repeat disturbed runs (each figure says how busy it was).
        quiet_timeout=0.0 if args.quick else 60.0,
        retries=0 if args.quick else 2,
        vendor=args.database,
        producer_rate=args.producer_rate,
        checkpoint=not args.quick,
    )
    try:
        return (yield from _measure(bench, system, counts, args))
    finally:
        bench.close_driver()


def take_turns(runs: dict, alternate: bool) -> dict:
    """Drive each system's measure_system() to its end: one system after the
    other, or (--alternate) one measurement of each in turn. {name: results}."""
    results: dict = {}
    turns = alternate and len(runs) > 1
    if turns:
        print(f"== {', '.join(runs)}: one measurement of each in turn", flush=True)
    pending = dict(runs)
    try:
        while pending:
            for name, run in list(pending.items()):
                if not turns:
                    print(f"== {name}", flush=True)
                try:
                    while True:
                        next(run)
                        if turns:
                            break
                except StopIteration as done:
                    results[name] = done.value
                    del pending[name]
    finally:
        for run in pending.values():
            run.close()  # stops its driver.py process
    return {name: results[name] for name in runs}


def chosen(configs: list, args: argparse.Namespace, what=lambda c: f"{c.kind} {c.describe()}"):
    """The settings --only picks (all without it), matched against e.g.
    "noop 2 proc × concurrency 2, prefetch 200" or "latency 1 proc × concurrency 4"."""
    if not args.only:
        return configs
    return [c for c in configs if any(pattern.search(what(c)) for pattern in args.only)]


def _measure(bench, system, counts: dict, args: argparse.Namespace):
    from harness import BenchError, best, median_run

    quick = args.quick
    result: dict = {
        "versions": system.versions(),
        "enqueue": {},
        "throughput": [],
        "kinds": [],
        "latency": [],
        "latency_load": [],
    }

    def attempt(what: str, fn):
        try:
            return fn()
        except BenchError as e:
            bench.say(f"{what}: FAILED: {e}")
            return {"error": str(e)}

    def repeated(what: str, fn, key: str, figures: tuple[str, ...] = ()):
        """attempt() --repeat times, letting the other systems take a turn after
        each run (--alternate); the median run, with every run's figures."""
        runs = []
        for _ in range(args.repeat):
            runs.append(attempt(what, fn))
            yield
        return median_run(runs, key, figures)

    def repeats(res: dict, key: str, fmt: str) -> str:
        values = (res.get("repeats") or {}).get(key)
        return f" (median of {', '.join(format(v, fmt) for v in values)})" if values else ""

    t0 = time.monotonic()
    bench.say(f"creating database {bench.db_name} and migrating")
    prepared = attempt("migrate", bench.prepare)
    if prepared and "error" in prepared:
        result["error"] = prepared["error"]
        return result
    yield

    modes = ("single", "atomic", "bulk")
    if counts["enqueue_repeats"] == 1:
        # One driver run for the three modes saves two Django start-ups.
        both = attempt("enqueue", partial(bench.enqueue, ",".join(modes), counts["enqueue_n"], 1))
        result["enqueue"] = {m: both.get(m, both) for m in modes}
    else:
        for mode in modes:
            result["enqueue"][mode] = attempt(
                f"enqueue {mode}",
                partial(bench.enqueue, mode, counts["enqueue_n"], counts["enqueue_repeats"]),
            )
    for mode in modes:
        res = result["enqueue"][mode]
        if "rate" in res:
            bench.say(f"enqueue {mode:6}: {res['rate']:8.0f} jobs/s")
        elif "unsupported" in res:
            bench.say(f"enqueue {mode:6}: n/a ({res['unsupported']})")
    yield

    # The bulk API with one big call: the same job many times, and jobs that each
    # carry their own argument (encoding and signing then cost per job).
    for mode in ("bulk", "distinct"):
        res = attempt(
            f"enqueue {mode}, one call",
            partial(bench.enqueue, mode, counts["big_n"], counts["enqueue_repeats"]),
        )
        result["enqueue"][f"{mode}_big"] = res
        if "rate" in res:
            bench.say(f"enqueue {mode}, {counts['big_n']:,} in one call: {res['rate']:8.0f} jobs/s")
        yield

    configs = system.throughput_configs(quick)
    configs += [c for c in system.kind_configs(quick) if c.kind in args.kinds]
    for config in chosen(configs, args):
        n = counts[f"{config.kind}_jobs"]
        if quick:
            n = max(100, int(n * system.quick_share))
        res = yield from repeated(
            config.describe(), partial(bench.throughput, config, n), "rate", ("wall_rate",)
        )
        res.setdefault("config", config.describe())
        res.setdefault("processes", config.processes)
        res.setdefault("kind", config.kind)
        res.setdefault("x", config.x or 1)
        result["throughput" if config.kind == "noop" else "kinds"].append(res)
        if "rate" in res:
            bench.say(
                f"{config.kind:7} {config.describe():40}: {res['rate']:7.0f} jobs/s "
                f"(wall from spawn {res['wall_rate']:.0f} jobs/s)" + repeats(res, "rate", ",.0f")
            )

    latency_configs = chosen(
        system.latency_configs_for(args.database, quick), args, lambda c: f"latency {c.describe()}"
    )
    for config in latency_configs:
        res = yield from repeated(
            f"latency {config.describe()}",
            partial(bench.latency, config, counts["latency_n"], spacing=0.02),
            "p50_ms",
            ("p95_ms", "p99_ms"),
        )
        res.setdefault("config", config.describe())
        result["latency"].append(res)
        if "p50_ms" in res:
            bench.say(
                f"latency {config.describe():40}: p50 {res['p50_ms']:.1f} ms, "
                f"p95 {res['p95_ms']:.1f} ms" + repeats(res, "p50_ms", ".1f")
            )

    result["best"] = {
        procs: best([r for r in result["throughput"] if r.get("processes") == procs], "rate")
        for procs in (1, 2)
    }
    result["best_kind"] = {kind: best(_of_kind(result, kind), "rate") for kind in KINDS}
    result["best_latency"] = best(result["latency"], "p50_ms", lower_is_better=True)

    load = counts["load_rate"]
    configs = latency_configs[:1] if load else []
    for config in configs:
        # A queue that cannot run the offered jobs as fast as they come has no
        # steady latency to measure: its backlog, and each probe's wait, grow
        # for as long as the run lasts.
        capacity = result["best"].get(config.processes) or {}
        if capacity.get("rate", 0) < load:
            why = (
                f"processes {capacity.get('rate', 0):,.0f} no-op jobs/s with "
                f"{config.processes} process(es), fewer than the {load:,.0f}/s offered"
            )
            bench.say(f"latency under load: not measured: {why}")
            result["latency_load"].append({"config": config.describe(), "skipped": why})
            continue
        res = attempt(
            f"latency under load {config.describe()}",
            partial(bench.latency, config, counts["latency_n"], spacing=0.02, load_rate=load),
        )
        yield
        res.setdefault("config", config.describe())
        result["latency_load"].append(res)
        if "p50_ms" in res:
            bench.say(
                f"latency {config.describe():40}: p50 {res['p50_ms']:.1f} ms, "
                f"p95 {res['p95_ms']:.1f} ms while {res['producer']['rate']:,.0f} jobs/s "
                "were enqueued"
            )
    result["best_latency_load"] = best(result["latency_load"], "p95_ms", lower_is_better=True)
    result["seconds"] = time.monotonic() - t0
    return result


def _of_kind(result: dict, kind: str) -> list[dict]:
    return [r for r in result["kinds"] if r.get("kind") == kind]


def run_scale(args: argparse.Namespace) -> list[str]:
    """benchmarks/scale.py's section of the report, when that module is there."""
    if args.no_scale:
        return []
    try:
        import scale
    except ImportError as e:
        print(f"scale: skipped (benchmarks/scale.py not importable: {e})", flush=True)
        return []
    print("== scale (benchmarks/scale.py)", flush=True)
    started = time.monotonic()
    try:
        lines = scale.run_all(
            quick=args.quick, results_dir=args.output.parent, database=args.database
        )
    except ImportError as e:
        print(f"scale: skipped ({e})", flush=True)
        return []
    except Exception as e:  # the rest of the report is still worth writing
        print(f"scale: FAILED: {type(e).__name__}: {e}", flush=True)
        return ["", "## Scale", "", f"scale.py failed: {type(e).__name__}: {e}"]
    print(f"scale: done in {time.monotonic() - started:.0f}s", flush=True)
    return list(lines)


def main() -> int:
    args = parse_args()
    ensure_venv()
    # Turn SIGTERM into SystemExit so the worker groups' context managers
    # still stop the workers (they run in their own sessions).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from harness import postgres_autovacuum

    counts = plan(args.quick, args.jobs, args.load_rate)
    with ExitStack() as stack:
        # The queues are measured on a PostgreSQL as shipped: autovacuum on.
        turned_on = args.database == "postgres" and stack.enter_context(postgres_autovacuum())
        return _run(args, counts, turned_on)


def _run(args: argparse.Namespace, counts: dict, autovacuum_turned_on: bool) -> int:
    import report
    from harness import REPO_DIR, WORK_DIR, Database
    from systems import SYSTEMS

    started = time.monotonic()
    log_dir = WORK_DIR / "logs"
    runs: dict = {}
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
        runs[name] = measure_system(system, counts, args, log_dir)
    results: dict = {}
    for name, res in take_turns(runs, args.alternate).items():
        if "error" in res:
            skipped[name] = res["error"]
        else:
            results[name] = res

    total = time.monotonic() - started
    meta = report.environment(args.quick, counts, total, Database(args.database, ""))
    meta["autovacuum_turned_on"] = autovacuum_turned_on
    meta.update(
        alternate=args.alternate and len(runs) > 1,
        repeat=args.repeat,
        only=[pattern.pattern for pattern in args.only],
    )
    plots = {} if args.no_plots else report.plots(results, args.output)
    text = report.markdown(results, skipped, meta, plots)
    raw = {"meta": meta, "results": results, "skipped": skipped}
    print()
    print(text)
    report.write(args.output, text, raw)
    print(f"Written to {args.output} ({total:.0f}s in all)", flush=True)

    scale_lines = run_scale(args)
    if scale_lines:
        text = text + "\n".join(scale_lines) + "\n"
        raw["scale"] = scale_lines
        report.write(args.output, text, raw)
        print("\n".join(scale_lines))
        print(
            f"Scale section appended to {args.output} ({time.monotonic() - started:.0f}s in all)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
