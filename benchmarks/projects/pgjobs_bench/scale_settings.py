"""pgjobs_bench settings for benchmarks/scale.py: the same, plus PGJOBS OPTIONS from
the environment.

``BENCH_PGJOBS_OPTIONS`` (a JSON object, e.g. ``{"KEEP_SUCCEEDED": 3600}``) is
merged into ``PGJOBS["OPTIONS"]``, so the scale runs can try a worker setting
without a settings file per variant. Unset, these are exactly the pgjobs_bench
settings: the scale runs measure what pgjobs does by default.
"""

import json
import os

from pgjobs_bench.settings import *  # noqa: F403
from pgjobs_bench.settings import PGJOBS as _BASE_PGJOBS

_EXTRA = json.loads(os.environ.get("BENCH_PGJOBS_OPTIONS") or "{}")
if not isinstance(_EXTRA, dict):
    raise ValueError(f"BENCH_PGJOBS_OPTIONS must be a JSON object, not {_EXTRA!r}")

PGJOBS = {**_BASE_PGJOBS, "OPTIONS": {**_BASE_PGJOBS.get("OPTIONS", {}), **_EXTRA}}
