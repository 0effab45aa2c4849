"""Settings for benchmarks/dashboard.py: the test suite's, with every finished job kept,
so the rows the benchmark writes stay while its workers run (their pruner would
otherwise delete succeeded jobs older than five minutes)."""

from tests.settings import *  # noqa: F403
from tests.settings import PGJOBS

PGJOBS = {**PGJOBS, "OPTIONS": {**PGJOBS["OPTIONS"], "KEEP_SUCCEEDED": True}}
