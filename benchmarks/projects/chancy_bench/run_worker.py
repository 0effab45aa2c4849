"""A chancy worker, as ``chancy --app chancy_bench.app.app worker start`` runs
one, with the queue it serves declared first.

chancy keeps each queue's settings in the database (``Chancy.declare``) and
every worker whose tags match serves it. The options name the setting measured;
each worker process declares the same queue (``upsert``) before it starts.

    python run_worker.py [--concurrency N] [--executor async|threaded] [--polling-interval S] [--no-eager]
"""

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def run(args):
    from chancy import Chancy, Queue, Worker

    from chancy_bench.app import app

    executor = {"async": Chancy.Executor.Async, "threaded": Chancy.Executor.Threaded}
    async with app:
        await app.declare(
            Queue(
                "default",
                concurrency=args.concurrency,
                executor=executor[args.executor],
                polling_interval=args.polling_interval,
                eager_polling=not args.no_eager,
            ),
            upsert=True,
        )
        async with Worker(app) as worker:
            await worker.wait_for_shutdown()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--executor", choices=("async", "threaded"), default="async")
    p.add_argument("--polling-interval", type=int, default=1)
    p.add_argument("--no-eager", action="store_true")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
