#!/usr/bin/env python3
"""How soon a worker takes its first job after its process starts, against what
``django.setup()`` itself takes.

    benchmarks/.work/venv/bin/python benchmarks/startup.py [--rounds 7]
        [--command "pgjobs_worker"] [--checkout DIR]

Each round, turn about: (a) a bare process of the benchmark project
(``pgjobs_bench``, PostgreSQL) that runs ``django.setup()`` and prints the
time; (b) ``manage.py pgjobs_worker`` (or ``--command``) spawned with one job
waiting, until the job's ``started_at`` is set. Both are timed from just before
the spawn (``time.time()``), so each includes the interpreter's own start. The
difference of the medians is what the worker adds before its first claim:
issue 21 asks for at most 0.5 s. ``--checkout DIR`` measures that checkout's
pgjobs (first on ``PYTHONPATH``) instead of this one's.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

from harness import PROJECTS_DIR, PYTHON, REPO_DIR, Database, manage_py

SETUP_ONLY = "import time, django; django.setup(); print(time.time(), flush=True)"


def env_for(db: Database, checkout: str) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pgjobs_bench.settings",
        "BENCH_DATABASE": "postgres",
        "BENCH_DB": db.name,
        "PYTHONPATH": os.pathsep.join([str(PROJECTS_DIR), checkout]),
    }


def bare_setup(env: dict) -> float:
    spawned = time.time()
    out = subprocess.run(
        [PYTHON, "-c", SETUP_ONLY], env=env, cwd=PROJECTS_DIR, capture_output=True, text=True
    )
    return float(out.stdout.split()[-1]) - spawned


def first_job(db: Database, env: dict, command: list[str]) -> float:
    with db.connect() as conn:
        conn.execute("TRUNCATE pgjobs_job RESTART IDENTITY")
        names = ", ".join(
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                "'pgjobs_job' AND column_name <> 'id' AND is_generated = 'NEVER'"
            )
        )
        conn.execute(f"INSERT INTO pgjobs_job ({names}) SELECT {names} FROM startup_template")
        spawned = time.time()
        proc = subprocess.Popen(
            [PYTHON, manage_py(), *command],
            env=env,
            cwd=PROJECTS_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                started = conn.execute(
                    "SELECT extract(epoch FROM started_at) FROM pgjobs_job"
                ).fetchone()[0]
                if started is not None:
                    return float(started) - spawned
                time.sleep(0.005)
            raise SystemExit(f"{command}: no job started in 60 s")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--command", default="pgjobs_worker")
    parser.add_argument("--checkout", default=str(REPO_DIR))
    args = parser.parse_args()
    db = Database("postgres", "pgjobs_bench_startup", checkpoint=False)
    db.recreate()
    env = env_for(db, args.checkout)
    subprocess.run(
        [PYTHON, manage_py(), "migrate", "-v", "0"], env=env, cwd=PROJECTS_DIR, check=True
    )
    enqueue = (
        "import django; django.setup()\n"
        "from pgjobs import background\n"
        "from pgjobs_bench.tasks import noop\n"
        "background.enqueue(noop)\n"
    )
    subprocess.run([PYTHON, "-c", enqueue], env=env, cwd=PROJECTS_DIR, check=True)
    with db.connect() as conn:
        conn.execute("CREATE TABLE startup_template AS SELECT * FROM pgjobs_job")
    command = args.command.split()
    setups, firsts = [], []
    for number in range(1, args.rounds + 1):
        setups.append(bare_setup(env))
        firsts.append(first_job(db, env, command))
        print(
            f"round {number}: django.setup() done {setups[-1]:.3f} s after spawn; "
            f"{args.command}'s first job started {firsts[-1]:.3f} s after spawn",
            flush=True,
        )
    setup, first = statistics.median(setups), statistics.median(firsts)
    print(
        f"\nmedians of {args.rounds}: django.setup() {setup:.3f} s, first job {first:.3f} s "
        f"after spawn: the worker adds {first - setup:.3f} s "
        f"(per round: {', '.join(f'{f - s:.3f}' for s, f in zip(setups, firsts, strict=True))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
