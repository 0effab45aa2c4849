"""The measuring machinery shared by every system.

A system adapter (``systems/<name>.py``) describes one queue: its Django
project, its tables, how to start its worker and which worker settings to try.
``Bench`` runs the same procedures against each adapter:

* ``prepare()``: drop and recreate the system's own database, run ``migrate``
  and whatever else the system needs (PGQueuer: ``pgq install``).
* ``enqueue()``: jobs/s for one transaction per job, many jobs in one
  transaction, and the bulk API where there is one (driver.py does the work
  inside the system's Django project).
* ``throughput()``: pre-enqueue N jobs of one kind (no-op, one ORM insert,
  a 50 ms sleep), start K worker processes, wait until all N are finished. The
  figure is N / (last finish − first start) as the queue itself recorded them
  in the database, so worker boot time and the harness's polling do not count;
  wall time from spawning the workers is kept beside it.
* ``latency()``: one worker, probes enqueued one at a time; each records when
  it started (see projects/bench_record.py). The worker is idle, or (``load``)
  busy with the no-op jobs another process enqueues at a steady rate.

Workers are real subprocesses in their own session, stopped with SIGTERM and,
after a grace period, SIGKILL of their process group; every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import statistics
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PROJECTS_DIR = BENCH_DIR / "projects"
WORK_DIR = BENCH_DIR / ".work"
VENV_DIR = WORK_DIR / "venv"
PYTHON = str(VENV_DIR / "bin" / "python")

PG = {
    "host": os.environ.get("BENCH_PGHOST", "127.0.0.1"),
    "port": os.environ.get("BENCH_PGPORT", "5432"),
    "user": os.environ.get("BENCH_PGUSER", "root"),
}
MYSQL = {
    "host": os.environ.get("BENCH_MYSQLHOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_MYSQLPORT", "3306")),
    "user": os.environ.get("BENCH_MYSQLUSER", "root"),
}
DATABASES = ("postgres", "mysql", "sqlite")


class Database:
    """The database a run uses (``--database``): how the harness reaches it,
    recreates it, empties its tables and settles it between measurements."""

    def __init__(self, vendor: str, name: str, checkpoint: bool = True):
        self.vendor = vendor
        self.checkpoint = checkpoint
        # For SQLite, the file (projects/bench_common.py reads BENCH_DB).
        self.name = str(WORK_DIR / f"{name}.sqlite3") if vendor == "sqlite" else name

    def connect(self, server: bool = False):
        """An autocommit connection with ``execute(sql)``; ``server``: no database."""
        if self.vendor == "postgres":
            return psycopg.connect(
                dbname="postgres" if server else self.name, autocommit=True, **PG
            )
        if self.vendor == "mysql":
            import MySQLdb  # benchmarks/setup.sh installs mysqlclient

            return _Executing(
                MySQLdb.connect(
                    **MYSQL, **({} if server else {"database": self.name}), autocommit=True
                )
            )
        return _Executing(sqlite3.connect(self.name, isolation_level=None, timeout=20))

    def version(self) -> str:
        if self.vendor == "sqlite":
            return f"SQLite {sqlite3.sqlite_version}"
        query = "SHOW server_version" if self.vendor == "postgres" else "SELECT VERSION()"
        with self.connect(server=True) as conn:
            version = conn.execute(query).fetchone()[0]
        return f"{'PostgreSQL' if self.vendor == 'postgres' else 'MySQL/MariaDB'} {version}"

    def recreate(self) -> None:
        if self.vendor == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(self.name + suffix).unlink(missing_ok=True)
            return
        with self.connect(server=True) as conn:
            if self.vendor == "postgres":
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{self.name}"')
            else:
                conn.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
                conn.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")

    def empty(self, tables) -> None:
        """Empty the queue tables (fresh heap and indexes) between measurements."""
        with self.connect() as conn:
            if self.vendor == "postgres":
                conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
            elif self.vendor == "mysql":
                for table in tables:
                    conn.execute(f"TRUNCATE TABLE {table}")
            else:
                for table in tables:
                    conn.execute(f"DELETE FROM {table}")
                    conn.execute(f"DELETE FROM sqlite_sequence WHERE name = '{table}'")

    def settle(self, tables) -> None:
        """Same starting state for every system, after the enqueue and before
        each processing run: fresh planner statistics, clean buffers (the
        checkpoint is left out when ``checkpoint`` is false, for --quick).

        On PostgreSQL the queue's tables are vacuumed and analyzed, and then
        the whole database is analyzed, so that every table a queue's claim
        reads has statistics of the backlog it is about to drain, whether or
        not its adapter lists that table. (A queue whose claim is planned on
        the empty table's statistics can pick a poor plan; autovacuum would
        refresh them only after up to a minute, and some servers run without it.)
        """
        with self.connect() as conn:
            if self.vendor == "postgres":
                for table in tables:
                    conn.execute(f"VACUUM ANALYZE {table}")
                conn.execute("ANALYZE")
                if self.checkpoint:
                    conn.execute("CHECKPOINT")
            elif self.vendor == "mysql":
                for table in tables:
                    conn.execute(f"ANALYZE TABLE {table}").fetchall()
            else:
                conn.execute("ANALYZE")
                if self.checkpoint:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@contextmanager
def postgres_autovacuum(say=print):
    """Autovacuum on for as long as the block runs, as PostgreSQL ships.

    pgjobs relies on it (its migration 0005 tunes it for the job table), and
    so does every peer whose table sees updates and deletes. A server that has
    it off (this machine's CI configuration does) would measure a
    misconfigured server: it is turned on, said, and restored afterwards.
    Yields whether it had to be turned on.
    """
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        was_on = conn.execute("SHOW autovacuum").fetchone()[0] == "on"
        if not was_on:
            say("autovacuum is off on this server: turned on for this run")
            conn.execute("ALTER SYSTEM SET autovacuum = on")
            conn.execute("SELECT pg_reload_conf()")
    try:
        yield not was_on
    finally:
        if not was_on:
            with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
                conn.execute("ALTER SYSTEM RESET autovacuum")
                conn.execute("SELECT pg_reload_conf()")


class _Executing:
    """A DB-API connection with psycopg's ``execute()`` shortcut, closed on exit."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, query: str):
        cursor = self.conn.cursor()
        cursor.execute(query)
        return cursor

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()


class BenchError(RuntimeError):
    """A measurement could not be made; the message says why."""


JOB_KINDS = ("noop", "orm", "sleep50")
#: A processing run in which no job finishes for this long has stalled.
STALL_SECONDS = 60.0


@dataclass(frozen=True)
class WorkerConfig:
    """One worker setting to try: K processes, each started with ``args``."""

    processes: int
    args: tuple[str, ...] = ()
    label: str = ""
    # Which job to run: its kind (JOB_KINDS) and the way the system runs it
    # ("" for the system's default; e.g. Procrastinate's "async" runs an
    # ``async def`` job on its loop instead of a sync one in a thread).
    variant: str = ""
    kind: str = "noop"
    # Where the setting sits on the plots' x axis: the concurrency, or the
    # batch size for PGQueuer (None: 1).
    x: float | None = None

    def describe(self) -> str:
        what = self.label or " ".join(self.args) or "defaults"
        if self.variant not in ("", "sync"):
            what += f", {self.variant} job"
        return f"{self.processes} proc × {what}"


class System:
    """What an adapter defines. See systems/*.py for the three queues."""

    name: str = ""
    project: str = ""  # the Django project package under projects/
    tables: tuple[str, ...] = ()  # truncated between measurements
    # SQL returning (finished ok, failed); polled while workers run, so keep it cheap.
    done_sql: str = ""
    # SQL returning seconds from the first job start to the last job finish;
    # run once, after all jobs are done. Either may be a {database: sql} dict.
    span_sql: str | dict = ""
    # Which --database choices the queue runs on.
    databases: tuple[str, ...] = ("postgres",)
    # Other processes (by name) whose CPU counts as the run's own, e.g. a broker.
    own_processes: tuple[str, ...] = ()
    # --quick: the share of the quick job counts a processing run uses. A slow
    # queue gets fewer jobs, so that the quick run stays within two minutes.
    quick_share: float = 1.0

    def sql(self, name: str, database: str) -> str:
        query = getattr(self, name)
        return query[database] if isinstance(query, dict) else query

    # Where the jobs are. These defaults read the system's tables with the SQL
    # above; a queue that keeps its jobs elsewhere (Redis) overrides all four.

    def progress(self, conn, database: str) -> tuple[int, int]:
        """(finished ok, failed) so far; polled while workers run."""
        return conn.execute(self.sql("done_sql", database)).fetchone()

    def span(self, conn, database: str) -> float:
        """Seconds from the first job start to the last job finish."""
        return float(conn.execute(self.sql("span_sql", database)).fetchone()[0])

    def empty(self, db: Database) -> None:
        db.empty(self.tables)

    def settle(self, db: Database) -> None:
        db.settle(self.tables)

    def unavailable(self) -> str | None:
        """Why this system cannot be measured here, or None."""
        return None

    def checkout(self) -> str | None:
        """A checkout whose packages the commands and workers import before the venv's
        (pgjobs-baseline: $BENCH_BASELINE), or None."""
        return None

    def versions(self) -> str:
        return ""

    def worker_argv(self, config: WorkerConfig) -> list[str]:
        raise NotImplementedError

    def throughput_configs(self, quick: bool) -> list[WorkerConfig]:
        raise NotImplementedError

    def latency_configs(self, quick: bool) -> list[WorkerConfig]:
        raise NotImplementedError

    def latency_configs_for(self, database: str, quick: bool) -> list[WorkerConfig]:
        """The latency settings on ``database`` (a queue may add some where it polls)."""
        return self.latency_configs(quick)

    def kind_configs(self, quick: bool) -> list[WorkerConfig]:
        """Settings for the job kinds other than the no-op (``WorkerConfig.kind``)."""
        return []

    def setup_commands(self, db: Database) -> list[list[str]]:
        """Commands to run after ``migrate`` in a fresh database (with the run's env)."""
        return []


def vendor_span_sql(table: str) -> dict:
    """``System.span_sql`` for a table with ``started_at`` and ``finished_at``
    columns, in each database's own dialect."""
    return {
        "postgres": f"SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM {table}",
        "mysql": "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(started_at), MAX(finished_at)) / 1e6 "
        f"FROM {table}",
        "sqlite": "SELECT (julianday(MAX(finished_at)) - julianday(MIN(started_at))) * 86400 "
        f"FROM {table}",
    }


def projects_pythonpath(env: dict, checkout: str | None = None) -> str:
    """PYTHONPATH for benchmark commands and workers: the projects, the system's
    ``checkout`` if it has one, then the caller's own, e.g. to measure another
    checkout of pgjobs than the editable install."""
    return os.pathsep.join(filter(None, [str(PROJECTS_DIR), checkout, env.get("PYTHONPATH")]))


def manage_py() -> str:
    return str(PROJECTS_DIR / "manage.py")


def venv_import_check(module: str, checkout: str | None = None) -> str | None:
    """None if ``module`` imports in the benchmark venv (``checkout`` first on
    its path, as ``System.checkout``), else the error line."""
    # cwd away from the repo root, where "import pgjobs" would find the source
    # tree whether or not the venv has it installed.
    proc = subprocess.run(
        [PYTHON, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=WORK_DIR,
        env={**os.environ, "PYTHONPATH": projects_pythonpath(os.environ, checkout)},
    )
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"import {module} failed"


def venv_version(dist: str) -> str:
    proc = subprocess.run(
        [PYTHON, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.strip() or "?"


def source_commit(package: str, checkout: str | None = None) -> str:
    """Where the commands import ``package`` from and the git commit there
    ("+changes" when its files differ from that commit), for the report."""
    proc = subprocess.run(
        [PYTHON, "-c", f"import os, {package}; print(os.path.dirname({package}.__file__))"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=WORK_DIR,
        env={**os.environ, "PYTHONPATH": projects_pythonpath(os.environ, checkout)},
    )
    where = proc.stdout.strip()
    if not where:
        return "?"
    git = ["git", "-C", where]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
    ).stdout.strip()
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no", "--", "."],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return f"{commit or '?'}{'+changes' if changed else ''} ({Path(where).parent})"


def median_run(runs: list[dict], key: str, figures: tuple[str, ...] = ()) -> dict:
    """One result for a measurement repeated (run.py --repeat): the run with the
    median ``key`` (the lower middle one of an even count), kept whole, with
    every run's ``key`` and ``figures`` in ``repeats`` ({figure: [values]}, in
    the order measured) and the failed runs' errors in ``repeat_errors``."""
    if len(runs) == 1:
        return runs[0]
    ok = [r for r in runs if key in r]
    if not ok:
        return runs[-1]
    kept = sorted(ok, key=lambda r: r[key])[(len(ok) - 1) // 2]
    result = {**kept, "repeats": {f: [r[f] for r in ok] for f in (key, *figures)}}
    errors = [r.get("error", "?") for r in runs if key not in r]
    if errors:
        result["repeat_errors"] = errors
    return result


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank-interpolated percentile (same as numpy's default 'linear')."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat.

    Busy is user + nice + system time: the time processes use. Interrupt and
    steal time belong to no process, so they are left out of busy (a disk
    flush for our own commits must not look like someone else's work).
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    total = sum(fields[:8])  # guest time is already counted in user
    return fields[0] + fields[1] + fields[2], total


def cpu_busy(sample: float = 1.0) -> float:
    """Fraction of the machine's CPU in use over the next ``sample`` seconds."""
    b0, t0 = _cpu_times()
    time.sleep(sample)
    b1, t1 = _cpu_times()
    return (b1 - b0) / max(1, t1 - t0)


def wait_until_quiet(max_busy: float = 0.15, timeout: float = 60.0) -> float:
    """Wait (bounded) until nothing else is using the CPU; return the last reading.

    Other work on this 2-core machine (test suites, builds) halves the figures,
    so each measurement starts on a quiet machine when it can, and the reading
    is reported beside the figures when it cannot.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = cpu_busy(0.5)
        if busy <= max_busy or time.monotonic() > deadline:
            return busy


def _proc_cpu(pid: int) -> tuple[int, int, str, str] | None:
    """(utime+stime jiffies, process group, comm, cmdline) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is the state (field 3)
    return int(fields[11]) + int(fields[12]), int(fields[2]), comm, cmdline


class CpuMeter:
    """How much CPU *other* work used while one measurement ran.

    Everything the machine did (/proc/stat) minus what this measurement did:
    this harness and its reaped children, the worker process groups, the
    PostgreSQL processes serving the system's database or the whole server
    (checkpointer, WAL writer, ...), and kernel threads. What is left is
    someone else's test suite or build, which on 2 cores skews the figure;
    the harness repeats a run when it is large. Call ``stop`` while the workers are still alive, so their
    CPU and that of their database backends can still be read.
    """

    def __init__(self, db_name: str, vendor: str = "postgres", own: tuple[str, ...] = ()):
        self.db_name = db_name
        self.vendor = vendor
        self.own = own
        self.top_others: list[tuple[str, float]] = []

    def _scan(self, worker_pgids: set[int]) -> dict[int, tuple[int, bool, str]]:
        """{pid: (cpu jiffies, is ours, name)} for every process now alive."""
        procs = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            info = _proc_cpu(int(entry))
            if not info:
                continue
            cpu, pgrp, comm, cmdline = info
            # Kernel threads (no cmdline) do our disk flushes as much as anyone's.
            ours = pgrp in worker_pgids or not cmdline
            if not ours and comm.startswith("postgres"):
                client_backend = "127.0.0.1(" in cmdline or "[local]" in cmdline
                ours = not client_backend or f" {self.db_name} " in cmdline
            if not ours and self.vendor == "mysql" and comm in ("mariadbd", "mysqld"):
                ours = True  # one process for every client: count it all
            if not ours and comm in self.own:
                ours = True  # the system's broker (redis-server): all of it
            procs[int(entry)] = (cpu, ours, cmdline[:60] or comm)
        return procs

    @staticmethod
    def _harness() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        self.busy0, self.total0 = _cpu_times()
        self.harness0 = self._harness()
        self.procs0 = self._scan(set())

    def stop(self, worker_pgids: set[int]) -> float:
        """Fraction of the machine's CPU used by others since ``start``.

        Also sets ``top_others``: the busiest other processes still alive, so
        a disturbed figure can say what disturbed it.
        """
        busy1, total1 = _cpu_times()
        procs1 = self._scan(worker_pgids)
        elapsed = max(1, total1 - self.total0)
        ours = (self._harness() - self.harness0) * os.sysconf("SC_CLK_TCK")
        others = []
        for pid, (cpu, is_ours, name) in procs1.items():
            used = max(0, cpu - self.procs0.get(pid, (0,))[0])
            if is_ours:
                ours += used
            elif used:
                others.append((name, used / elapsed))
        self.top_others = sorted(others, key=lambda o: -o[1])[:3]
        foreign = (busy1 - self.busy0) - ours
        return max(0.0, foreign / elapsed)


class WorkerGroup:
    """K worker processes, started together and always stopped on exit."""

    def __init__(self, argv: list[str], count: int, env: dict, log_path: Path):
        self.argv, self.count, self.env, self.log_path = argv, count, env, log_path
        self.procs: list[subprocess.Popen] = []
        self.started_at = 0.0

    def __enter__(self) -> WorkerGroup:
        self.log = open(self.log_path, "ab")
        self.started_at = time.time()
        for _ in range(self.count):
            self.procs.append(
                subprocess.Popen(
                    self.argv,
                    env=self.env,
                    cwd=PROJECTS_DIR,
                    stdin=subprocess.DEVNULL,
                    stdout=self.log,
                    stderr=subprocess.STDOUT,
                    # Own session: the group can be signalled without touching us.
                    start_new_session=True,
                )
            )
        return self

    def dead(self) -> list[int]:
        return [p.returncode for p in self.procs if p.poll() is not None]

    def stop(self, grace: float = 15.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            # Also reaps any children left in the group after a clean exit.
            _signal_group(p.pid, signal.SIGKILL)
            if p.poll() is None:
                p.wait(timeout=10)

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Bench:
    """Runs the procedures above for one system, logging to .work/logs/."""

    system: System
    log_dir: Path
    # How long each measurement may wait for other work on the machine to stop.
    quiet_timeout: float = 60.0
    # Repeat a processing run when other work took more than this CPU share.
    max_foreign: float = 0.10
    retries: int = 2
    # --database: which database the system's project uses.
    vendor: str = "postgres"
    # --producer-rate: jobs/s another process enqueues while workers process.
    producer_rate: float = 0.0
    # Checkpoint the database before each processing run (--quick: no).
    checkpoint: bool = True
    # One driver.py process for the system's enqueues and probes (see driver()).
    serve_driver: bool = True
    db_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.database = Database(
            self.vendor, f"pgjobs_bench_{self.system.name.replace('-', '_')}", self.checkpoint
        )
        self.db_name = self.database.name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.latency_file = WORK_DIR / f"latency-{self.system.name}.txt"
        self._unsupported: set[str] = set()
        self._served: subprocess.Popen | None = None
        self.worker_log = self.log_dir / f"{self.system.name}-workers.log"

    # -- plumbing ---------------------------------------------------------

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE=f"{self.system.project}.settings",
            BENCH_DATABASE=self.vendor,
            BENCH_DB=self.db_name,
            BENCH_LATENCY_FILE=str(self.latency_file),
            PYTHONPATH=projects_pythonpath(env, self.system.checkout()),
            PYTHONUNBUFFERED="1",
        )
        return env

    def quiet(self) -> float:
        return wait_until_quiet(timeout=self.quiet_timeout) if self.quiet_timeout else float("nan")

    def say(self, msg: str) -> None:
        print(f"  [{self.system.name}] {msg}", flush=True)

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
            raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(argv[1:3])}") from e
        with open(self.log_dir / f"{self.system.name}-commands.log", "a") as log:
            log.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n")
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise BenchError(f"{' '.join(argv[1:3])} exited {proc.returncode}:\n{tail}")
        return proc.stdout

    def driver(self, *args: str, timeout: float = 300) -> dict:
        """Run one driver.py command in the system's project; its JSON result.

        The commands go to one ``driver.py serve`` process per system, started
        on first use, so that each does not pay for a Python and Django
        start-up (``serve_driver=False``: a new process per command).
        """
        if not self.serve_driver:
            out = self.run([PYTHON, str(PROJECTS_DIR / "driver.py"), *args], timeout)
            lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
            if not lines:
                raise BenchError(f"driver {args[0]} printed no result")
            return json.loads(lines[-1])
        if self._served is None or self._served.poll() is not None:
            self._served = subprocess.Popen(
                [PYTHON, str(PROJECTS_DIR / "driver.py"), "serve"],
                env=self.env,
                cwd=PROJECTS_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=open(self.log_dir / f"{self.system.name}-driver.log", "ab"),
                text=True,
                start_new_session=True,
            )
        proc = self._served
        with open(self.log_dir / f"{self.system.name}-commands.log", "a") as log:
            log.write(f"> driver.py {' '.join(args)}\n")
        try:
            proc.stdin.write(json.dumps(list(args)) + "\n")
            proc.stdin.flush()
        except OSError as e:
            raise BenchError(f"driver {args[0]}: the driver has exited ({e})") from e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close_driver()
                raise BenchError(f"driver {args[0]} timed out after {timeout:.0f}s")
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                raise BenchError(
                    f"driver {args[0]}: the driver exited ({proc.wait()}); see "
                    f"{self.log_dir / (self.system.name + '-driver.log')}"
                )
            if line.startswith("{"):
                break
        with open(self.log_dir / f"{self.system.name}-commands.log", "a") as log:
            log.write(line)
        res = json.loads(line)
        if "failed" in res:
            raise BenchError(f"driver {args[0]}: {res['failed']}")
        return res

    def close_driver(self) -> None:
        """Stop the ``driver.py serve`` process, if one runs."""
        proc, self._served = self._served, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()

    def connect(self):
        return self.database.connect()

    # -- procedures -------------------------------------------------------

    def prepare(self) -> None:
        """A fresh database per run, so runs and systems do not interfere."""
        self.close_driver()  # its connection goes with the database
        self.database.recreate()
        self.run([PYTHON, manage_py(), "migrate", "--noinput", "-v", "0"], timeout=300)
        for argv in self.system.setup_commands(self.database):
            self.run(argv, timeout=120)

    def reset(self) -> None:
        self.system.empty(self.database)

    def settle(self) -> None:
        self.system.settle(self.database)

    def enqueue(self, mode: str, n: int, repeats: int) -> dict:
        """Median jobs/s over ``repeats`` runs of ``n`` enqueues in ``mode``
        (``mode`` may name several, comma-separated: one driver run does them
        in turn, and the result is {mode: result})."""
        modes = mode.split(",")
        rates: dict = {m: [] for m in modes}
        unsupported, busy = {}, []
        for _ in range(repeats):
            self.reset()
            busy.append(self.quiet())
            res = self.driver("enqueue", "--mode", mode, "--n", str(n), "--warmup", "20")
            for m in modes:
                one = res["modes"][m] if len(modes) > 1 else res
                if "unsupported" in one:
                    unsupported[m] = {"unsupported": one["unsupported"]}
                else:
                    rates[m].append(one["rate"])
        results = {
            m: unsupported.get(m)
            or {
                "rate": statistics.median(rates[m]),
                "runs": rates[m],
                "n": n,
                "busy_before": max(busy),
            }
            for m in modes
        }
        return results if len(modes) > 1 else results[mode]

    def preload(self, n: int, kind: str = "noop", variant: str = "") -> None:
        """Put n jobs of one kind in the queue the fastest way the system offers."""
        self.reset()
        for mode in ("bulk", "atomic"):
            if mode in self._unsupported:
                continue
            res = self.driver(
                "enqueue", "--mode", mode, "--n", str(n), "--kind", kind, "--variant", variant
            )
            if "unsupported" not in res:
                return
            if res["unsupported"] == "no bulk enqueue API":
                self._unsupported.add(mode)  # no need to ask again
        raise BenchError(
            f"cannot enqueue {kind} jobs ({variant or 'default'}): {res['unsupported']}"
        )

    def throughput(self, config: WorkerConfig, n: int) -> dict:
        """Processing rate of n pre-enqueued jobs (``config.kind``) with this worker setting.

        A run during which other work took more than ``max_foreign`` of the
        CPU is repeated (up to ``retries`` times) and the least disturbed run
        is kept; every attempt is reported.
        """
        attempts = []
        for _ in range(1 + self.retries):
            attempts.append(self._throughput_once(config, n))
            if attempts[-1]["others_during"] <= self.max_foreign:
                break
        kept = min(attempts, key=lambda r: r["others_during"])
        return {**kept, "attempts": [(r["rate"], r["others_during"]) for r in attempts]}

    def _throughput_once(self, config: WorkerConfig, n: int) -> dict:
        self.preload(n, config.kind, config.variant)
        self.settle()
        busy = self.quiet()
        timeout = max(120.0, n / 10.0)  # far beyond any system's expected time
        argv = self.system.worker_argv(config)
        meter = CpuMeter(self.db_name, self.vendor, self.system.own_processes)
        producer = self._start_producer()
        # One polling connection for the whole run: a new connection per poll
        # would fork a backend several times a second on a 2-core machine.
        with self.connect() as conn:
            if self.vendor == "postgres":
                # The progress query counts a table that grows with the run (PGQueuer's
                # log: three rows a job); a parallel plan would start a PostgreSQL
                # worker process for each poll, five times a second, beside the workers.
                conn.execute("SET max_parallel_workers_per_gather = 0")
            meter.start()
            with WorkerGroup(argv, config.processes, self.env, self.worker_log) as workers:
                most, progressed_at = 0, time.time()
                while True:
                    time.sleep(0.2)
                    done, failed = self.system.progress(conn, self.vendor)
                    if done + failed >= n:
                        wall = time.time() - workers.started_at
                        others = meter.stop({p.pid for p in workers.procs})
                        break
                    # Fail a stalled run now rather than at the timeout, and one whose
                    # finished jobs retention deleted (pgjobs keeps them 5 minutes):
                    # its count would never reach n.
                    if done + failed > most:
                        most, progressed_at = done + failed, time.time()
                    elif done + failed < most:
                        raise BenchError(
                            f"finished jobs were deleted during the run ({most} -> "
                            f"{done + failed} of {n}): it outlasted the queue's retention"
                        )
                    elif time.time() - progressed_at > STALL_SECONDS:
                        raise BenchError(
                            f"no job finished for {STALL_SECONDS:.0f} s ({most}/{n} done); "
                            f"see {self.worker_log}"
                        )
                    if workers.dead():
                        raise BenchError(
                            f"worker exited {workers.dead()} with {done}/{n} done; "
                            f"see {self.worker_log}"
                        )
                    if time.time() - workers.started_at > timeout:
                        raise BenchError(f"timed out after {timeout:.0f}s with {done}/{n} done")
            produced = self._stop_producer(producer)
            # With a producer, more than n jobs may have finished within the span.
            finished = n if producer is None else int(sum(self.system.progress(conn, self.vendor)))
            span = self.system.span(conn, self.vendor)
        if failed:
            raise BenchError(f"{failed} of {n} {config.kind} jobs failed; see {self.worker_log}")
        result = {
            "config": config.describe(),
            "processes": config.processes,
            "kind": config.kind,
            "x": config.x or 1,
            "n": n,
            "span_s": float(span),
            "rate": finished / float(span),
            "wall_s": wall,
            "wall_rate": n / wall,
            "busy_before": busy,
            "others_during": others,
            "top_others": [(name, round(share, 3)) for name, share in meter.top_others],
        }
        if produced is not None:
            result["producer"] = produced
            if produced.get("errors"):
                raise BenchError(f"the producer's enqueues failed: {produced}")
        return result

    def _start_producer(self, rate: float | None = None) -> subprocess.Popen | None:
        """Another process enqueueing ``rate`` no-op jobs/s (default: ``producer_rate``),
        each in its own transaction, as a web app would."""
        rate = self.producer_rate if rate is None else rate
        if not rate:
            return None
        argv = [PYTHON, str(PROJECTS_DIR / "driver.py"), "produce", "--rate", str(rate)]
        return subprocess.Popen(
            argv,
            env=self.env,
            cwd=PROJECTS_DIR,
            stdout=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @staticmethod
    def _await_ready(producer: subprocess.Popen, timeout: float = 30.0) -> None:
        """Wait until the producer has set Django up and started enqueueing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([producer.stdout], [], [], 0.1)
            if ready:
                line = producer.stdout.readline()
                if line.strip() == "ready":
                    return
                if not line:
                    break
            if producer.poll() is not None:
                break
        raise BenchError(f"the producer did not start (exit code {producer.poll()})")

    def _stop_producer(self, producer: subprocess.Popen | None) -> dict | None:
        if producer is None:
            return None
        producer.send_signal(signal.SIGTERM)
        try:
            out, _ = producer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(producer.pid, signal.SIGKILL)
            out, _ = producer.communicate()
        lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {"errors": 1, "error_samples": ["no report"]}

    def latency(
        self,
        config: WorkerConfig,
        n: int,
        spacing: float,
        load_rate: float = 0.0,
        producers: int = 2,
    ) -> dict:
        """Enqueue→start latency of n probes, ``spacing`` seconds apart.

        With ``load_rate``, ``producers`` other processes together enqueue that
        many no-op jobs/s (one transaction each; one process alone cannot
        enqueue 1,000 jobs/s into every queue on 2 cores) for the whole run, and
        the worker runs them beside the probes. The probes start once the worker
        has caught up with the backlog built while it booted: driver.py's
        warm-up probes wait behind it.
        """
        self.reset()
        self.latency_file.unlink(missing_ok=True)
        timeout = 30.0 if load_rate else 60.0
        busy = self.quiet()
        argv = self.system.worker_argv(config)
        running = []
        try:
            if load_rate:
                for _ in range(producers):
                    running.append(self._start_producer(load_rate / producers))
                for producer in running:
                    self._await_ready(producer)
            with WorkerGroup(argv, config.processes, self.env, self.worker_log) as workers:
                res = self.driver(
                    "latency",
                    "--n",
                    str(n),
                    "--spacing",
                    str(spacing),
                    "--timeout",
                    str(timeout),
                    timeout=timeout * 2 + n * spacing + 60,
                )
                dead = workers.dead()
        finally:
            produced = [self._stop_producer(p) for p in running]
        if "error" in res:
            raise BenchError(res["error"])
        if dead:
            raise BenchError(f"worker exited {dead}; see {self.worker_log}")
        lat = res["latencies_ms"]
        if len(lat) < n:
            raise BenchError(f"only {len(lat)}/{n} latency probes ran within {timeout:.0f}s")
        result = {
            "config": config.describe(),
            "n": n,
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat),
            "mean_ms": statistics.fmean(lat),
            "busy_before": busy,
            "latencies_ms": [round(v, 3) for v in lat],
        }
        if produced:
            errors = sum(p.get("errors", 1) for p in produced)
            result["load_rate"] = load_rate
            result["producer"] = {
                "processes": len(produced),
                "n": sum(p.get("n", 0) for p in produced),
                "rate": sum(p.get("rate", 0.0) for p in produced),
                "errors": errors,
                "slowest_ms": max(p.get("slowest_ms", 0.0) for p in produced),
            }
            if errors:
                samples = [e for p in produced for e in p.get("error_samples", [])]
                raise BenchError(f"the producers' enqueues failed: {samples[:3]}")
        return result


def best(results: list[dict], key: str, lower_is_better: bool = False) -> dict | None:
    ok = [r for r in results if key in r]
    if not ok:
        return None
    return (min if lower_is_better else max)(ok, key=lambda r: r[key])
