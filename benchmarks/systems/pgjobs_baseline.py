"""pgjobs-baseline: pgjobs as another checkout has it, to compare two commits.

The same adapter, settings lists and Django project as ``pgjobs``
(systems/pgjobs.py), with its own database (pgjobs_bench_pgjobs_baseline); its
commands and workers import ``pgjobs`` from the checkout that BENCH_BASELINE
names (e.g. ``git worktree add --detach ../baseline <commit>``), put on
PYTHONPATH before the venv's editable install. The benchmark projects, the
driver and the harness are this checkout's for both. See "Comparing two
commits" in benchmarks/README.md.
"""

import os
from pathlib import Path

from harness import source_commit

from systems.pgjobs import PgJobs


class PgJobsBaseline(PgJobs):
    name = "pgjobs-baseline"

    def checkout(self):
        # Absolute: the commands run in benchmarks/projects.
        path = os.environ.get("BENCH_BASELINE")
        return str(Path(path).resolve()) if path else None

    def unavailable(self):
        path = self.checkout()
        if not path:
            return "BENCH_BASELINE is not set: the path of a checkout of the commit to compare with"
        if not (Path(path) / "pgjobs" / "__init__.py").is_file():
            return f"BENCH_BASELINE={path} has no pgjobs/__init__.py"
        return super().unavailable()

    def versions(self):
        return f"pgjobs-baseline: pgjobs at {source_commit('pgjobs', self.checkout())}"
