"""Start a PGQueuer worker the way ``pgq run pgqueuer_bench.worker:create`` does.

``pgq run`` itself cannot start with the typer release pip installs beside
PGQueuer 1.6.0 (typer 0.29): its ``--log-level`` option, even left at its
default, reaches PGQueuer as a str and fails with "'str' object has no
attribute 'name'". This calls what the command calls, ``pgqueuer.run(factory,
...)`` (documented as "Run a worker from factory, as pgq run does, without the
CLI"), on uvloop as the CLI does, with the options the benchmark varies and
``pgq run``'s defaults for the rest. Logging goes through Django's LOGGING
(WARNING), as for the other systems.

    python run_worker.py [--batch-size N] [--max-concurrent-tasks M] [--driver asyncpg|psycopg]
"""

import argparse
import asyncio
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=10)  # pgq run's default
    parser.add_argument("--max-concurrent-tasks", type=int, default=None)
    parser.add_argument("--driver", choices=("asyncpg", "psycopg"), default="asyncpg")
    args = parser.parse_args()

    import pgqueuer

    from pgqueuer_bench.worker import create

    run = pgqueuer.run(
        functools.partial(create, driver=args.driver),
        batch_size=args.batch_size,
        max_concurrent_tasks=args.max_concurrent_tasks,
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(run)
    else:
        uvloop.run(run)


if __name__ == "__main__":
    main()
