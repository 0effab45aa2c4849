#!/usr/bin/env python3
"""How pgjobs on PostgreSQL behaves as the table, the load and the worker count grow.

    benchmarks/.work/venv/bin/python benchmarks/scale.py            # full (about 13 minutes)
    benchmarks/.work/venv/bin/python benchmarks/scale.py --quick    # about 30 s, a smoke test
    benchmarks/.work/venv/bin/python benchmarks/scale.py --only claim,memory
    benchmarks/.work/venv/bin/python benchmarks/scale.py --pgjobs-options '{"KEEP_SUCCEEDED": 60}'
    benchmarks/.work/venv/bin/python benchmarks/scale.py --only size --size-rate 1000 --size-seconds 60

Four measurements, in a database of their own (``pgjobs_bench_scale``, dropped,
recreated and migrated per run), with the pgjobs_bench project:

1. claim: the cost of the store's claim (``finish_and_claim`` with limit 1 and
   100, timed inside Django by projects/pgjobs_bench/scale_driver.py) with 0 to
   1M succeeded jobs in the table beside a backlog of 2,000 ready ones; plus
   EXPLAIN (ANALYZE, BUFFERS) at each size, to show the claim reads no finished
   rows. Plot: results/claim-vs-table-size.png.
2. size: a producer enqueues at a steady rate while 2 workers process; the
   table's size, live/dead tuples and jobs by status are sampled. Whatever the
   worker does with finished jobs by default is what is measured. Plot:
   results/table-size.png, samples in results/table-size.csv.
3. fanout: processing rate of pre-enqueued no-op jobs with 2 and 8 worker
   processes (concurrency 8 each), then enqueue-to-start latency of probes
   enqueued one at a time with the 8 processes idle; the database's commit
   count per job (``pg_stat_database.xact_commit``) shows how many round trips
   each job costs, and the looks at ready jobs per probe (claim-index and table
   scans, ``Scale.looks``) whether one NOTIFY makes every worker claim.
4. memory: one worker at concurrency 8 runs 100,000 no-op jobs; its resident
   memory after (VmRSS) and at peak (VmHWM).

``--pgjobs-options`` (or BENCH_PGJOBS_OPTIONS), a JSON object, is merged into
``PGJOBS["OPTIONS"]`` for the workers and the claim driver
(projects/pgjobs_bench/scale_settings.py). run.py calls ``run_all()``; run
alone, this prints the Markdown and writes it to results/scale.md, with the raw
figures in results/scale.json. Worker logs are in .work/logs/scale-*.log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import (  # noqa: E402  (after the path is set)
    PROJECTS_DIR,
    PYTHON,
    WORK_DIR,
    BenchError,
    CpuMeter,
    Database,
    WorkerGroup,
    manage_py,
    percentile,
    postgres_autovacuum,
    projects_pythonpath,
    wait_until_quiet,
)

PARTS = ("claim", "size", "fanout", "memory")
DB_NAME = "pgjobs_bench_scale"
SETTINGS = "pgjobs_bench.scale_settings"
MEMORY_TARGET_MB = 80.0


@dataclass(frozen=True)
class Plan:
    """The sizes of one run: ``QUICK`` must stay within about 30 s in total."""

    claim_sizes: tuple[int, ...]
    claim_ready: int
    claim_calls: int
    claim_warmup: int
    size_rate: float  # jobs/s the producers enqueue, together
    size_producers: int  # processes sharing size_rate
    size_batch: int  # jobs per producer transaction
    size_seconds: float
    size_sample: float  # seconds between samples
    size_processes: int
    size_concurrency: int
    fanout_jobs: int
    fanout_processes: tuple[int, ...]
    fanout_concurrency: int
    latency_probes: int
    latency_spacing: float
    memory_jobs: int
    memory_concurrency: int
    quiet_timeout: float  # how long each part waits for other work to stop


FULL = Plan(
    claim_sizes=(0, 100_000, 300_000, 1_000_000),
    claim_ready=2000,
    claim_calls=300,
    claim_warmup=20,
    size_rate=2000.0,
    size_producers=2,
    # One job per transaction reached about 1,550 of the 2,000 jobs/s asked on
    # this 2-core machine (the producers' Django and commits compete with the
    # workers for the CPU); four per transaction reach it.
    size_batch=4,
    size_seconds=600.0,
    size_sample=10.0,
    size_processes=2,
    size_concurrency=4,
    fanout_jobs=50_000,
    fanout_processes=(2, 8),
    fanout_concurrency=8,
    latency_probes=200,
    latency_spacing=0.02,
    memory_jobs=100_000,
    memory_concurrency=8,
    quiet_timeout=60.0,
)
QUICK = Plan(
    claim_sizes=(0, 50_000, 200_000),
    claim_ready=2000,
    claim_calls=60,
    claim_warmup=10,
    size_rate=500.0,
    size_producers=1,
    size_batch=1,
    size_seconds=4.0,
    size_sample=1.0,
    size_processes=2,
    size_concurrency=4,
    fanout_jobs=5000,
    fanout_processes=(2, 8),
    fanout_concurrency=8,
    latency_probes=60,
    latency_spacing=0.02,
    memory_jobs=5000,
    memory_concurrency=8,
    quiet_timeout=0.0,
)


def _mb(n_bytes: float) -> float:
    return n_bytes / (1024 * 1024)


def _fmt_int(n: float) -> str:
    return f"{n:,.0f}"


class Scale:
    """One scale run: its database, its processes, its log files."""

    def __init__(self, plan: Plan, results_dir: Path, options: dict):
        self.plan = plan
        self.results_dir = results_dir
        self.options = options
        self.db = Database("postgres", DB_NAME)
        self.log_dir = WORK_DIR / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.worker_log = self.log_dir / "scale-workers.log"
        self.command_log = self.log_dir / "scale-commands.log"
        self.latency_file = WORK_DIR / "latency-scale.txt"
        self.raw: dict = {"options": options}
        # Idle workers poll every POLL_INTERVAL; a backend's commit count reaches
        # pg_stat_database at its next statement a second or more after its last
        # report (see fanout_run).
        self.stats_settle = float(options.get("POLL_INTERVAL") or 2.0) + 0.5
        # Transactions a driver.py process commits besides its enqueues (Django's
        # connection set-up), measured once; counted out of the commits per job.
        self.driver_commits = 2

    # -- plumbing -----------------------------------------------------------------

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE=SETTINGS,
            BENCH_DATABASE="postgres",
            BENCH_DB=self.db.name,
            BENCH_LATENCY_FILE=str(self.latency_file),
            BENCH_PGJOBS_OPTIONS=json.dumps(self.options),
            PYTHONPATH=projects_pythonpath(env),
            PYTHONUNBUFFERED="1",
        )
        return env

    def say(self, msg: str) -> None:
        print(f"  [scale] {msg}", flush=True)

    def quiet(self) -> float:
        if not self.plan.quiet_timeout:
            return float("nan")
        return wait_until_quiet(timeout=self.plan.quiet_timeout)

    def run(self, argv: list[str], timeout: float) -> str:
        try:
            proc = subprocess.run(
                argv,
                env=self.env,
                cwd=PROJECTS_DIR,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(argv[1:4])}") from e
        with open(self.command_log, "a") as log:
            log.write(f"$ {' '.join(argv)}\n{proc.stdout[-2000:]}{proc.stderr}\n")
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise BenchError(f"{' '.join(argv[1:4])} exited {proc.returncode}:\n{tail}")
        return proc.stdout

    def json_command(self, argv: list[str], timeout: float) -> dict:
        out = self.run([PYTHON, *argv], timeout)
        lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
        if not lines:
            raise BenchError(f"{argv[0]} {argv[1]} printed no result")
        return json.loads(lines[-1])

    def driver(self, *args: str, timeout: float = 300) -> dict:
        return self.json_command([str(PROJECTS_DIR / "driver.py"), *args], timeout)

    def worker_argv(self, concurrency: int) -> list[str]:
        return [PYTHON, manage_py(), "pgjobs_worker", "-v", "0", "--concurrency", str(concurrency)]

    def workers(self, processes: int, concurrency: int) -> WorkerGroup:
        return WorkerGroup(self.worker_argv(concurrency), processes, self.env, self.worker_log)

    def connect(self):
        return self.db.connect()

    def prepare(self) -> None:
        self.db.recreate()
        self.run([PYTHON, manage_py(), "migrate", "--noinput", "-v", "0"], timeout=300)

    def empty(self) -> None:
        with self.connect() as conn:
            conn.execute("TRUNCATE pgjobs_job, pgjobs_worker RESTART IDENTITY")
            conn.execute("VACUUM ANALYZE pgjobs_job")
            conn.execute("CHECKPOINT")

    def commits(self) -> int:
        """Transactions committed in the run's database so far (from another database,
        so reading it adds none)."""
        with self.db.connect(server=True) as conn:
            row = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.db.name,)
            ).fetchone()
        return int(row[0])

    def looks(self) -> int:
        """Statements that looked for ready jobs so far: scans of the claim index and
        whole-table scans of pgjobs_job, whatever plan each worker got. These are
        claims and due-time queries (``seconds_until_due``); finishes, heartbeats and
        rescues find their rows by other indexes. Unlike commits, they leave out the
        transaction in which each listening backend reads a NOTIFY (PostgreSQL's
        async.c), one per listener and notification, so 8 idle processes add 8
        commits per job whoever answers it."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT (SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes"
                "        WHERE indexrelname = 'pgjobs_job_claim_idx')"
                "     + (SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables"
                "        WHERE relname = 'pgjobs_job')"
            ).fetchone()
        return int(row[0])

    def wait_backends_gone(self, pids: set[int] | None = None, timeout: float = 10.0) -> None:
        """Wait until the given backends (all of the run's database: None) have exited,
        which is when their last statistics reach pg_stat_database."""
        deadline = time.monotonic() + timeout
        with self.db.connect(server=True) as conn:
            while time.monotonic() < deadline:
                pids_now = {
                    row[0]
                    for row in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db.name,)
                    ).fetchall()
                }
                if not (pids_now if pids is None else pids_now & pids):
                    return
                time.sleep(0.05)

    def wait_registered(self, workers: WorkerGroup, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` workers have registered (they then listen at once)."""
        deadline = time.monotonic() + timeout
        conn = self.connect()
        pid = conn.info.backend_pid
        try:
            while True:
                (registered,) = conn.execute("SELECT count(*) FROM pgjobs_worker").fetchone()
                if registered >= count:
                    return
                if workers.dead():
                    raise BenchError(f"worker exited {workers.dead()}; see {self.worker_log}")
                if time.monotonic() > deadline:
                    raise BenchError(f"only {registered}/{count} workers up after {timeout:.0f}s")
                time.sleep(0.1)
        finally:
            conn.close()
            self.wait_backends_gone({pid}, timeout=5.0)  # its commits reported before ours

    def wait_done(self, workers: WorkerGroup, n: int, timeout: float, on_poll=None) -> float:
        """Wait until the n jobs just enqueued into the empty table have run; return
        when (time.time()). Raises on a failed job, a dead worker or the timeout.
        Jobs not ready or running have finished, whether the worker kept or
        deleted them (retention)."""
        deadline = time.monotonic() + timeout
        conn = self.connect()
        pid = conn.info.backend_pid
        try:
            while True:
                pending, failed = conn.execute(
                    "SELECT count(*) FILTER (WHERE status IN ('ready', 'running')), "
                    "count(*) FILTER (WHERE status IN ('failed', 'cancelled')) FROM pgjobs_job"
                ).fetchone()
                done = n - pending - failed
                if on_poll:
                    on_poll()
                if failed:
                    raise BenchError(f"{failed} no-op jobs failed; see {self.worker_log}")
                if done >= n:
                    return time.time()
                if workers.dead():
                    raise BenchError(f"worker exited {workers.dead()} with {done}/{n} done")
                if time.monotonic() > deadline:
                    raise BenchError(f"timed out after {timeout:.0f}s with {done}/{n} done")
                time.sleep(0.1)
        finally:
            conn.close()
            self.wait_backends_gone({pid}, timeout=5.0)

    def rate(self) -> tuple[float | None, float | None]:
        """(jobs/s, seconds): the succeeded jobs over the time from the first one's start
        to the last one's finish, as the worker recorded them. If the worker has
        deleted some (retention), those it kept give the rate; (None, None) if too
        few are left to tell."""
        with self.connect() as conn:
            count, span = conn.execute(
                "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at)) "
                "FROM pgjobs_job WHERE status = 'succeeded'"
            ).fetchone()
        if not span or count < 2:
            return None, None
        return count / float(span), float(span)

    # -- 1. claim cost vs table size ------------------------------------------------

    def part_claim(self) -> list[str]:
        plan = self.plan
        self.quiet()
        meter = CpuMeter(self.db.name)
        meter.start()
        res = self.json_command(
            [
                str(PROJECTS_DIR / "pgjobs_bench" / "scale_driver.py"),
                "claim",
                "--finished",
                ",".join(str(n) for n in plan.claim_sizes),
                "--ready",
                str(plan.claim_ready),
                "--calls",
                str(plan.claim_calls),
                "--warmup",
                str(plan.claim_warmup),
                "--explain",
            ],
            timeout=1800,
        )
        others = meter.stop(set())
        rows = []
        for at_size in res["sizes"]:
            if "error" in at_size:
                raise BenchError(f"claim driver: {at_size['error']}")
            row = {
                "finished": at_size["finished"],
                "fill_s": at_size["fill_s"],
                "sizes": at_size["sizes"],
                "explain": at_size["explain"],
            }
            for limit, data in at_size["limits"].items():
                times = data["times_ms"]
                row[f"p50_{limit}"] = statistics.median(times)
                row[f"p95_{limit}"] = percentile(times, 95)
                row[f"calls_{limit}"] = len(times)
            rows.append(row)
            self.say(
                f"claim with {_fmt_int(row['finished'])} finished rows: "
                + ", ".join(
                    f"limit {lim} p50 {row[f'p50_{lim}']:.2f} ms p95 {row[f'p95_{lim}']:.2f} ms"
                    for lim in at_size["limits"]
                )
                + f"; buffers {self._buffers_text(row['explain'])}"
            )
        self.raw["claim"] = {"rows": rows, "others_during": others}
        self.plot_claim(rows)
        return self.report_claim(rows, others)

    @staticmethod
    def _buffers_text(explains: list[dict]) -> str:
        parts = []
        for e in explains:
            total = e.get("total_buffers")
            if total:
                parts.append(f"limit {e['limit']}: {total['hit'] + total['read']}")
            else:
                parts.append(f"limit {e['limit']}: {e.get('error', '?')}")
        return ", ".join(parts)

    def report_claim(self, rows: list[dict], others: float) -> list[str]:
        plan = self.plan
        lines = [
            "### 1. Claim cost vs table size",
            "",
            f"`finish_and_claim(worker_id, results, queues, limit)` through Django "
            f"(`projects/pgjobs_bench/scale_driver.py`), {plan.claim_calls} timed calls per "
            f"limit after {plan.claim_warmup} warm-up calls, each finishing the previous "
            f"call's jobs, with {_fmt_int(plan.claim_ready)} ready jobs kept waiting and the "
            f"given number of succeeded jobs in the table (filled by one INSERT ... SELECT, "
            f"then VACUUM ANALYZE). Buffers: shared blocks hit + read by the whole statement "
            f"(EXPLAIN ANALYZE, BUFFERS), and by the claim's scan of `pgjobs_job_claim_idx`.",
            "",
            "| finished rows | table MB | limit 1 p50 ms | limit 1 p95 ms | limit 100 p50 ms "
            "| limit 100 p95 ms | ms per job at 100 | buffers, limit 1 | buffers, limit 100 "
            "| claim index scan, limit 100 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            buf = {e["limit"]: e for e in r["explain"]}

            def blocks(limit, key, buf=buf):
                b = buf.get(limit, {}).get(key)
                return str(b["hit"] + b["read"]) if b else "?"

            lines.append(
                f"| {_fmt_int(r['finished'])} | {_mb(r['sizes']['total']):.0f} "
                f"| {r.get('p50_1', float('nan')):.2f} | {r.get('p95_1', float('nan')):.2f} "
                f"| {r.get('p50_100', float('nan')):.2f} | {r.get('p95_100', float('nan')):.2f} "
                f"| {r.get('p50_100', float('nan')) / 100:.3f} "
                f"| {blocks(1, 'total_buffers')} | {blocks(100, 'total_buffers')} "
                f"| {blocks(100, 'claim_scan_buffers')} |"
            )
        if others > 0.10:
            lines += ["", f"Disturbed: other work used {others:.0%} of the CPU meanwhile."]
        seq_scans = [
            _fmt_int(r["finished"])
            for r in rows
            if any("Seq Scan on pgjobs_job" in ln for e in r["explain"] for ln in e.get("plan", ()))
        ]
        if seq_scans:
            lines += [
                "",
                f"The plan scans the whole table (Seq Scan on pgjobs_job) with "
                f"{', '.join(seq_scans)} finished rows: the planner's choice for a table it "
                f"last analyzed as small, which gets dearer as the table grows until the next "
                f"ANALYZE (the calls above add finished rows as they go).",
            ]
        lines += ["", "![claim cost vs table size](claim-vs-table-size.png)", ""]
        largest = rows[-1]
        plans = [e for e in largest["explain"] if e.get("plan")]
        explain = max(plans, key=lambda e: e["limit"]) if plans else None
        if explain:
            heap_pages = largest["sizes"]["heap"] // 8192
            total = explain["total_buffers"]
            lines += [
                f"EXPLAIN (ANALYZE, BUFFERS) of the finish-and-claim statement, limit "
                f"{explain['limit']}, with {_fmt_int(largest['finished'])} finished rows "
                f"({_fmt_int(heap_pages)} heap pages): {total['hit']} blocks hit, "
                f"{total['read']} read, for the whole statement (rolled back):",
                "",
                "```",
                *explain["plan"],
                "```",
                "",
            ]
        return lines

    def plot_claim(self, rows: list[dict]) -> None:
        plt = _pyplot()
        if plt is None:
            return
        fig, ax = plt.subplots(figsize=(7, 4.2))
        xs = [r["finished"] for r in rows]
        for limit, colour in (("1", "tab:blue"), ("100", "tab:orange")):
            if f"p50_{limit}" not in rows[0]:
                continue
            ax.plot(
                xs,
                [r[f"p50_{limit}"] for r in rows],
                "o-",
                color=colour,
                label=f"limit {limit}, p50",
            )
            ax.plot(
                xs,
                [r[f"p95_{limit}"] for r in rows],
                "s--",
                color=colour,
                alpha=0.6,
                label=f"limit {limit}, p95",
            )
        ax.set_xlabel("succeeded jobs in pgjobs_job")
        ax.set_ylabel("ms per finish_and_claim call")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter(_thousands())
        ax.set_title(f"pgjobs claim cost vs table size ({self.plan.claim_ready:,} ready jobs)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.results_dir / "claim-vs-table-size.png", dpi=110)
        plt.close(fig)

    # -- 2. table size under sustained load ----------------------------------------

    SIZE_SQL = """
        SELECT pg_total_relation_size('pgjobs_job'), pg_relation_size('pgjobs_job'),
               s.n_live_tup, s.n_dead_tup, s.autovacuum_count
        FROM pg_stat_user_tables s WHERE s.relname = 'pgjobs_job'
    """
    # One statement, so one snapshot: the highest id (jobs enqueued so far, the
    # ids starting at 1) and the jobs by status see the same rows.
    COUNTS_SQL = """
        SELECT (SELECT coalesce(max(id), 0) FROM pgjobs_job), status, count(*)
        FROM pgjobs_job GROUP BY status
    """

    def part_size(self) -> list[str]:
        plan = self.plan
        self.empty()
        self.quiet()
        samples: list[dict] = []
        meter = CpuMeter(self.db.name)
        with self.workers(plan.size_processes, plan.size_concurrency) as workers:
            self.wait_registered(workers, plan.size_processes)
            meter.start()
            producers = [
                self.start_producer(plan.size_rate / plan.size_producers, plan.size_batch)
                for _ in range(plan.size_producers)
            ]
            try:
                with self.connect() as conn:
                    autovacuums = conn.execute(self.SIZE_SQL).fetchone()[4]
                    # The clock starts at the first job, not at the producers' Django start-up.
                    self.wait_first_job(conn, producers)
                    t0 = time.monotonic()
                    while True:
                        samples.append(self.sample(conn, time.monotonic() - t0, autovacuums))
                        if workers.dead():
                            raise BenchError(f"worker exited {workers.dead()}")
                        if any(p.poll() is not None for p in producers):
                            raise BenchError("a producer exited; see the commands log")
                        elapsed = time.monotonic() - t0
                        if elapsed >= plan.size_seconds:
                            break
                        next_at = len(samples) * plan.size_sample
                        time.sleep(max(0.0, min(next_at, plan.size_seconds) - elapsed))
            finally:
                reports = [self.stop_producer(p) for p in producers]
            others = meter.stop({p.pid for p in workers.procs})
        produced = {
            "n": sum(r.get("n", 0) for r in reports),
            "errors": sum(r.get("errors", 0) for r in reports),
            "slowest_ms": max(r.get("slowest_ms", float("nan")) for r in reports),
            "reports": reports,
        }
        if produced["errors"]:
            raise BenchError(f"the producers' enqueues failed: {reports}")
        first, last = samples[0], samples[-1]
        seconds = max(1e-9, last["t"] - first["t"])
        result = {
            "rate_asked": plan.size_rate,
            "rate_enqueued": (last["enqueued"] - first["enqueued"]) / seconds,
            # Finished: still there as succeeded, or already deleted.
            "rate_succeeded": (
                last["succeeded"] + last["deleted"] - first["succeeded"] - first["deleted"]
            )
            / seconds,
            "seconds": seconds,
            "produced": produced,
            "samples": samples,
            "others": others,
        }
        self.raw["size"] = result
        self.write_size_csv(samples)
        self.plot_size(samples)
        self.say(
            f"table size: enqueued {result['rate_enqueued']:,.0f}/s "
            f"(of {plan.size_rate:,.0f}/s asked), finished {result['rate_succeeded']:,.0f}/s "
            f"for {seconds:.0f} s; {last['total_mb']:.1f} MB ({last['heap_mb']:.1f} MB heap), "
            f"{last['succeeded']:,} succeeded, {last['ready']:,} ready at the end"
        )
        return self.report_size(result)

    def wait_first_job(self, conn, producers: list, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT coalesce(max(id), 0) FROM pgjobs_job").fetchone()[0] == 0:
            if any(p.poll() is not None for p in producers):
                raise BenchError("a producer exited before enqueueing")
            if time.monotonic() > deadline:
                raise BenchError(f"the producer enqueued nothing in {timeout:.0f}s")
            time.sleep(0.02)

    def sample(self, conn, t: float, autovacuums: int) -> dict:
        total, heap, live, dead, autovac = conn.execute(self.SIZE_SQL).fetchone()
        rows = conn.execute(self.COUNTS_SQL).fetchall()
        max_id = rows[0][0] if rows else 0
        counts = {status: count for _, status, count in rows}
        return {
            "t": round(t, 2),
            "total_mb": round(_mb(total), 2),
            "heap_mb": round(_mb(heap), 2),
            "n_live_tup": live,
            "n_dead_tup": dead,
            "autovacuums": autovac - autovacuums,
            "enqueued": max_id,
            **{s: counts.get(s, 0) for s in ("ready", "running", "succeeded", "failed")},
            # Enqueued and no longer in the table: deleted by the worker (retention).
            # An enqueue not yet committed below the highest id counts here meanwhile.
            "deleted": max(0, max_id - sum(counts.values())),
        }

    def start_producer(self, rate: float, batch: int = 1) -> subprocess.Popen:
        argv = ["produce", "--rate", str(rate), "--batch", str(batch)]
        return subprocess.Popen(
            [PYTHON, str(PROJECTS_DIR / "driver.py"), *argv],
            env=self.env,
            cwd=PROJECTS_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop_producer(self, producer: subprocess.Popen) -> dict:
        if producer.poll() is None:
            producer.send_signal(signal.SIGTERM)
        try:
            out, _ = producer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(producer.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, _ = producer.communicate(timeout=10)
        lines = [ln for ln in (out or "").strip().splitlines() if ln.startswith("{")]
        return (
            json.loads(lines[-1])
            if lines
            else {"n": 0, "errors": 1, "error_samples": ["no report"]}
        )

    SIZE_COLUMNS = (
        "t",
        "total_mb",
        "heap_mb",
        "n_live_tup",
        "n_dead_tup",
        "autovacuums",
        "enqueued",
        "ready",
        "running",
        "succeeded",
        "failed",
        "deleted",
    )

    def write_size_csv(self, samples: list[dict]) -> None:
        with open(self.results_dir / "table-size.csv", "w") as f:
            f.write(",".join(self.SIZE_COLUMNS) + "\n")
            for s in samples:
                f.write(",".join(str(s[c]) for c in self.SIZE_COLUMNS) + "\n")

    def report_size(self, result: dict) -> list[str]:
        plan = self.plan
        samples = result["samples"]
        produced = result["produced"]
        first, last = samples[0], samples[-1]
        # n_live_tup, n_dead_tup: pg_stat_user_tables, which trails by about a second.
        minutes = max(1e-9, (last["t"] - first["t"]) / 60.0)
        lines = [
            "### 2. Table size under sustained load",
            "",
            f"{plan.size_producers} producer process(es) (`driver.py produce`) enqueue "
            f"{plan.size_rate:,.0f} no-op jobs/s in total, "
            + (
                "each in its own transaction"
                if plan.size_batch == 1
                else f"{plan.size_batch} per transaction (`enqueue_many`)"
            )
            + f", for {plan.size_seconds:.0f} s while {plan.size_processes} worker "
            f"processes (`pgjobs_worker -v 0 --concurrency {plan.size_concurrency}`, PGJOBS "
            f"OPTIONS {json.dumps(self.options) if self.options else 'default'}) work the queue. "
            f"Jobs were enqueued at {result['rate_enqueued']:,.0f}/s and finished at "
            f"{result['rate_succeeded']:,.0f}/s (slowest enqueue "
            f"{produced.get('slowest_ms', float('nan')):.1f} ms). The table grew "
            f"{(last['total_mb'] - first['total_mb']) / minutes:.1f} MB/min to "
            f"{last['total_mb']:.1f} MB ({last['heap_mb']:.1f} MB heap), holding "
            f"{last['succeeded']:,} succeeded and {last['ready']:,} ready jobs at the end; "
            f"{last['deleted']:,} finished jobs had been deleted."
            + (
                " The producers fell short of the rate asked (on this machine's CPU)."
                if result["rate_enqueued"] < 0.9 * plan.size_rate
                else ""
            ),
            "",
            "| s | total MB | heap MB | n_live_tup | n_dead_tup | autovacuums | enqueued "
            "| ready | running | succeeded | deleted |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        step = max(1, len(samples) // 20)  # at most about 20 rows here; all in the CSV
        shown = samples[::step]
        if shown[-1] is not last:
            shown.append(last)
        for s in shown:
            lines.append(
                f"| {s['t']:.0f} | {s['total_mb']:.1f} | {s['heap_mb']:.1f} | {s['n_live_tup']:,} "
                f"| {s['n_dead_tup']:,} | {s['autovacuums']} | {s['enqueued']:,} | {s['ready']:,} "
                f"| {s['running']:,} | {s['succeeded']:,} | {s['deleted']:,} |"
            )
        if result["others"] > 0.10:
            lines += ["", f"Disturbed: other work used {result['others']:.0%} of the CPU."]
        lines += [
            "",
            "Every sample is in `table-size.csv`.",
            "",
            "![table size over time](table-size.png)",
            "",
        ]
        return lines

    def plot_size(self, samples: list[dict]) -> None:
        plt = _pyplot()
        if plt is None:
            return
        ts = [s["t"] for s in samples]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        top.plot(ts, [s["total_mb"] for s in samples], "-", label="pg_total_relation_size")
        top.plot(ts, [s["heap_mb"] for s in samples], "--", label="pg_relation_size (heap)")
        top.set_ylabel("MB")
        top.set_ylim(bottom=0)
        top.set_title(
            f"pgjobs_job under {self.plan.size_rate:,.0f} jobs/s, "
            f"{self.plan.size_processes} workers × {self.plan.size_concurrency}"
        )
        top.legend()
        top.grid(alpha=0.3)
        for key, style in (
            ("n_live_tup", "-"),
            ("n_dead_tup", ":"),
            ("succeeded", "--"),
            ("ready", "-."),
            ("deleted", "-"),
        ):
            bottom.plot(ts, [s[key] for s in samples], style, label=key)
        bottom.set_xlabel("seconds")
        bottom.set_ylabel("rows")
        bottom.set_ylim(bottom=0)
        bottom.yaxis.set_major_formatter(_thousands())
        bottom.legend()
        bottom.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.results_dir / "table-size.png", dpi=110)
        plt.close(fig)

    # -- 3. fan-out ------------------------------------------------------------------

    def part_fanout(self) -> list[str]:
        plan = self.plan
        runs = []
        for processes in plan.fanout_processes:
            runs.append(
                self.fanout_run(processes, with_latency=processes == max(plan.fanout_processes))
            )
        self.raw["fanout"] = runs
        return self.report_fanout(runs)

    def fanout_run(self, processes: int, with_latency: bool) -> dict:
        """K workers, all registered and idle; n jobs enqueued in one bulk call; then
        (with_latency) probes one at a time, with the workers idle again.

        Commits per stage are pg_stat_database's ``xact_commit`` of the run's
        database at the stage's end less at its start, less the commits of our
        own connections. A backend reports its counts when it exits, or when it
        finishes a statement a second or more after its last report, so a stage
        ends either with the workers' exit (which counts their few shut-down
        commits in) or, before the probes, after ``stats_settle``: by then every
        idle worker has run a poll and reported. The start of the first stage
        is read as soon as the workers have registered, so some of their start-up
        commits (a few each) may fall into it.
        """
        plan = self.plan
        n = plan.fanout_jobs
        self.empty()
        self.wait_backends_gone()
        self.quiet()
        run: dict = {"processes": processes, "concurrency": plan.fanout_concurrency, "n": n}
        meter = CpuMeter(self.db.name)
        with self.workers(processes, plan.fanout_concurrency) as workers:
            self.wait_registered(workers, processes)
            commits0 = self.commits()
            meter.start()
            t_enqueue = time.time()
            res = self.driver("enqueue", "--mode", "bulk", "--n", str(n), timeout=300)
            if "unsupported" in res:
                raise BenchError(f"bulk enqueue: {res['unsupported']}")
            polls = []
            done_at = self.wait_done(
                workers, n, timeout=max(120.0, n / 100.0), on_poll=lambda: polls.append(1)
            )
            run["others_during"] = meter.stop({p.pid for p in workers.procs})
            rate, run["span_s"] = self.rate()
            run["wall_rate"] = n / (done_at - t_enqueue)
            run["rate"] = rate or run["wall_rate"]
            # Ours: the bulk enqueue (one transaction), each progress poll, the span query.
            ours = self.driver_commits + 1 + len(polls) + 1
            if with_latency:
                time.sleep(self.stats_settle)
                commits1, looks1 = self.commits(), self.looks()
                run["commits_per_job"] = (commits1 - commits0 - ours) / n
                run["latency"] = self.latency(workers)
        self.wait_backends_gone()
        commits_end = self.commits()
        if with_latency:
            probes = plan.latency_probes + 3  # driver.py enqueues 3 warm-up probes first
            ours = self.driver_commits + probes
            run["latency"]["commits_per_probe"] = (commits_end - commits1 - ours) / probes
            run["latency"]["looks_per_probe"] = (self.looks() - looks1) / probes
        else:
            run["commits_per_job"] = (commits_end - commits0 - ours) / n
        line = (
            f"fan-out {processes} × {plan.fanout_concurrency}: {run['rate']:,.0f} jobs/s "
            f"({run['commits_per_job']:.3f} commits/job)"
        )
        if with_latency:
            lat = run["latency"]
            line += (
                f"; idle latency p50 {lat['p50_ms']:.1f} ms p95 {lat['p95_ms']:.1f} ms, "
                f"{lat['looks_per_probe']:.1f} looks and {lat['commits_per_probe']:.1f} "
                "commits/probe"
            )
        self.say(line)
        return run

    def latency(self, workers: WorkerGroup) -> dict:
        plan = self.plan
        self.latency_file.unlink(missing_ok=True)
        timeout = 60.0
        res = self.driver(
            "latency",
            "--n",
            str(plan.latency_probes),
            "--spacing",
            str(plan.latency_spacing),
            "--timeout",
            str(timeout),
            timeout=timeout * 2 + plan.latency_probes * plan.latency_spacing + 60,
        )
        if "error" in res:
            raise BenchError(res["error"])
        lat = res["latencies_ms"]
        if len(lat) < plan.latency_probes:
            raise BenchError(f"only {len(lat)}/{plan.latency_probes} latency probes ran")
        if workers.dead():
            raise BenchError(f"worker exited {workers.dead()} during the latency probes")
        return {
            "n": len(lat),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "max_ms": max(lat),
        }

    def report_fanout(self, runs: list[dict]) -> list[str]:
        plan = self.plan
        lines = [
            "### 3. Fan-out: many worker processes",
            "",
            f"{plan.fanout_jobs:,} no-op jobs enqueued in one `enqueue_many` once every worker "
            f"is up and idle; jobs/s = jobs ÷ (last finish − first start), and from the "
            f"enqueue call to the last finish. Commits per job: `pg_stat_database.xact_commit` "
            f"of the run's database over the processing, less the enqueue's and the "
            f"harness's own, as a count of round trips (each claim, finish, heartbeat or "
            f"poll of a worker is one transaction); a few start-up and idle-poll commits of "
            f"each worker are included.",
            "",
            "| workers | jobs/s | jobs/s from enqueue | commits per job | others' CPU |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in runs:
            lines.append(
                f"| {r['processes']} × concurrency {r['concurrency']} | {r['rate']:,.0f} "
                f"| {r['wall_rate']:,.0f} | {r['commits_per_job']:.3f} "
                f"| {r['others_during']:.0%} |"
            )
        with_latency = [r for r in runs if "latency" in r]
        if with_latency:
            r = with_latency[0]
            lat = r["latency"]
            lines += [
                "",
                f"Latency with {r['processes']} idle workers × concurrency {r['concurrency']}: "
                f"{lat['n']} probes enqueued one at a time {plan.latency_spacing * 1000:.0f} ms "
                f"apart: p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms, max "
                f"{lat['max_ms']:.1f} ms. Looks at ready jobs per probe, by every worker "
                f"(claims and due-time queries, counted as scans of the claim index or of "
                f"the table; idle polls included): {lat['looks_per_probe']:.1f}. Claiming "
                f"and finishing a probe takes two or three; a worker a NOTIFY wakes for "
                f"nothing looks once more 50-150 ms later, in case the one meant to answer "
                f"cannot; at {plan.latency_spacing * 1000:.0f} ms between probes one such "
                f"look covers several. A herd, every process claiming each probe at once, "
                f"would make {r['processes']} or more: "
                + (
                    "**it did** (a thundering herd)."
                    if lat["looks_per_probe"] >= r["processes"]
                    else "it did not."
                ),
                f"Commits per probe besides its enqueue: {lat['commits_per_probe']:.1f}. "
                f"Most are not the workers': each listening backend reads a NOTIFY in a "
                f"transaction of its own, {r['processes']} per probe here.",
            ]
        return lines + [""]

    # -- 4. memory -------------------------------------------------------------------

    def part_memory(self) -> list[str]:
        plan = self.plan
        n = plan.memory_jobs
        self.empty()
        self.quiet()
        result: dict = {"n": n, "concurrency": plan.memory_concurrency}
        with self.workers(1, plan.memory_concurrency) as workers:
            self.wait_registered(workers, 1)
            pid = workers.procs[0].pid
            result["idle_rss_mb"] = _proc_status(pid)["VmRSS"]
            rss = []
            self.driver("enqueue", "--mode", "bulk", "--n", str(n), timeout=600)
            self.wait_done(
                workers,
                n,
                timeout=max(120.0, n / 100.0),
                on_poll=lambda: rss.append(_proc_status(pid)["VmRSS"]),
            )
            time.sleep(1.0)
            status = _proc_status(pid)
            result["rss_after_mb"] = status["VmRSS"]
            result["hwm_mb"] = status["VmHWM"]
            result["max_sampled_rss_mb"] = max(rss, default=status["VmRSS"])
            rate, _ = self.rate()
            result["rate"] = rate or float("nan")
        result["target_mb"] = MEMORY_TARGET_MB
        result["ok"] = result["hwm_mb"] < MEMORY_TARGET_MB
        self.raw["memory"] = result
        self.say(
            f"memory: {n:,} jobs at {result['rate']:,.0f}/s; RSS idle {result['idle_rss_mb']:.1f} "
            f"MB, after {result['rss_after_mb']:.1f} MB, peak {result['hwm_mb']:.1f} MB "
            f"({'under' if result['ok'] else 'OVER'} the {MEMORY_TARGET_MB:.0f} MB target)"
        )
        return [
            "### 4. Worker memory",
            "",
            f"One `pgjobs_worker --concurrency {plan.memory_concurrency}` ran {n:,} no-op jobs "
            f"({result['rate']:,.0f}/s). Resident memory (`/proc/<pid>/status`): "
            f"{result['idle_rss_mb']:.1f} MB idle before the jobs, "
            f"{result['rss_after_mb']:.1f} MB after them (VmRSS), {result['hwm_mb']:.1f} MB at "
            f"peak (VmHWM). Target: under {MEMORY_TARGET_MB:.0f} MB — "
            f"{'met' if result['ok'] else '**not met**'}.",
            "",
        ]


def _proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024.0  # kB
    return values


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  [scale] matplotlib is not installed: no plots", flush=True)
        return None
    return plt


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _: f"{x:,.0f}")


def _options_from_env() -> dict:
    raw = os.environ.get("BENCH_PGJOBS_OPTIONS") or "{}"
    options = json.loads(raw)
    if not isinstance(options, dict):
        raise SystemExit(f"BENCH_PGJOBS_OPTIONS must be a JSON object, not {raw}")
    return options


def run(
    quick: bool,
    results_dir: Path,
    database: str = "postgres",
    only: tuple[str, ...] = PARTS,
    options: dict | None = None,
    overrides: dict | None = None,
) -> list[str]:
    """Run the chosen parts; return the Markdown lines. A part that fails is
    reported as such and the others still run. ``overrides``: Plan fields."""
    lines = ["## Scale: pgjobs on PostgreSQL", ""]
    if database != "postgres":
        return lines + [f"Not measured: the scale runs use PostgreSQL only (not {database}).", ""]
    results_dir.mkdir(parents=True, exist_ok=True)
    options = _options_from_env() if options is None else options
    plan = dataclasses.replace(QUICK if quick else FULL, **(overrides or {}))
    scale = Scale(plan, results_dir, options)
    started = time.monotonic()
    scale.say(f"preparing database {DB_NAME} ({'quick' if quick else 'full'} run)")
    scale.prepare()
    if options:
        lines += [f"PGJOBS OPTIONS added for these runs: `{json.dumps(options)}`", ""]
    # Every part measures what a PostgreSQL as shipped does: autovacuum on.
    with postgres_autovacuum(scale.say) as turned_on:
        for part in only:
            part_started = time.monotonic()
            try:
                lines += getattr(scale, f"part_{part}")()
            except Exception as exc:  # reported; the other parts still run
                if not isinstance(exc, BenchError):
                    traceback.print_exc()
                scale.say(f"{part}: FAILED: {exc}")
                lines += [f"### {part}: not measured", "", f"Failed: {exc}", ""]
                scale.raw[part] = {"error": str(exc)}
            scale.raw.setdefault("seconds", {})[part] = round(time.monotonic() - part_started, 1)
    if turned_on:
        lines.append(
            "The server had autovacuum off (PostgreSQL's default is on); it was turned on "
            "for these measurements and restored afterwards.\n"
        )
    scale.raw["quick"] = quick
    scale.raw["total_s"] = round(time.monotonic() - started, 1)
    with open(results_dir / "scale.json", "w") as f:
        json.dump(scale.raw, f, indent=1, default=str)
    scale.say(f"done in {scale.raw['total_s']:.0f} s")
    return lines


def run_all(quick: bool, results_dir: Path, database: str = "postgres") -> list[str]:
    """Every part; the Markdown lines for run.py's report."""
    return run(quick, results_dir, database)


def main() -> int:
    venv = Path(PYTHON)
    if Path(sys.prefix).resolve() != venv.parent.parent.resolve() and venv.exists():
        os.execv(PYTHON, [PYTHON, __file__, *sys.argv[1:]])  # the benchmark venv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about 30 s")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}"
    )
    parser.add_argument(
        "--pgjobs-options",
        metavar="JSON",
        help='merged into PGJOBS["OPTIONS"], e.g. \'{"KEEP_SUCCEEDED": 60}\' '
        "(default: BENCH_PGJOBS_OPTIONS, else none)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=BENCH_DIR / "results", help="default: results/"
    )
    parser.add_argument("--size-rate", type=float, metavar="R", help="size: jobs/s enqueued")
    parser.add_argument("--size-seconds", type=float, metavar="S", help="size: how long")
    args = parser.parse_args()
    only = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = [p for p in only if p not in PARTS]
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}; parts are {', '.join(PARTS)}")
    options = json.loads(args.pgjobs_options) if args.pgjobs_options else None
    if options is not None and not isinstance(options, dict):
        parser.error("--pgjobs-options must be a JSON object")
    overrides = {
        field: value
        for field, value in (("size_rate", args.size_rate), ("size_seconds", args.size_seconds))
        if value is not None
    }
    lines = run(args.quick, args.results_dir, only=only, options=options, overrides=overrides)
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    (args.results_dir / "scale.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
