"""What the queues that keep their jobs in Redis share: where Redis is, and
a Redis database of each one's own, emptied between measurements.

Redis is reached at BENCH_REDIS_URL (default redis://127.0.0.1:6379); the
queues use databases 10 (pgjobs), 11 (RQ), 12 and 13 (Celery's broker and
results). The Django projects point at the same numbers (projects/*_bench).
"""

import datetime
import json
import os

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")


def client(db: int):
    import redis

    return redis.Redis.from_url(f"{REDIS_URL}/{db}", decode_responses=True)


def redis_version() -> str:
    try:
        return client(0).info("server")["redis_version"]
    except Exception as e:  # the report is still useful without it
        return f"? ({e})"


def in_batches(items, size=1000):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def celery_results_span(results_db: int, what: str) -> float:
    """Seconds from the first to the last ``date_done`` of the Celery results in
    ``results_db`` (Celery records only when a task finished); ``BenchError`` if
    any of ``what`` did not succeed, or none finished."""
    from harness import BenchError

    r = client(results_db)
    keys = list(r.scan_iter(match="celery-task-meta-*", count=1000))
    done, failed = [], 0
    for batch in in_batches(keys):
        for value in r.mget(batch):
            meta = json.loads(value)
            if meta["status"] != "SUCCESS":
                failed += 1
            done.append(datetime.datetime.fromisoformat(meta["date_done"]))
    if failed:
        raise BenchError(f"{failed} {what} did not succeed")
    if not done:
        raise BenchError("no finished jobs to time")
    return (max(done) - min(done)).total_seconds()
