"""Django settings for measuring pgjobs on Redis (RedisBackend, database 10)."""

import os

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["pgjobs", "pgjobs_bench"]  # noqa: F405

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# benchmarks/redis_cluster.py points workers at a private server or cluster of its own.
PGJOBS = {
    "BACKEND": "pgjobs.backends.RedisBackend",
    "OPTIONS": {
        "URL": os.environ.get("BENCH_PGJOBS_REDIS_URL", f"{REDIS_URL}/10"),
        "PREFIX": os.environ.get("BENCH_PGJOBS_REDIS_PREFIX", "pgjobs-bench"),
        "QUEUES": ["default", "q1", "q2"],
    },
}
