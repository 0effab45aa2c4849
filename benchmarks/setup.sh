#!/usr/bin/env bash
# Create the benchmark virtualenv (benchmarks/.work/venv) with the peer queues
# and pgjobs itself (editable, from the repo root). run.py calls this when the
# venv is missing; run it by hand to refresh the installs.
#
# A separate venv keeps the peers' dependencies (django-tasks, procrastinate)
# out of the environment the project's tests run in.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="$here/.work/venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"

# pgjobs may not be installable yet while it is being written; the peers can
# still be measured without it, so a failure here is reported, not fatal.
if [ -f "$repo/pyproject.toml" ]; then
    "$venv/bin/python" -m pip install --quiet -e "$repo" \
        || echo "setup.sh: pgjobs could not be installed; only the peers can be measured" >&2
fi
# run.py --database mysql needs mysqlclient (built against libmariadb/libmysqlclient);
# PostgreSQL and SQLite runs do not, so a failure here is reported, not fatal.
"$venv/bin/python" -m pip install --quiet "mysqlclient>=2.2" \
    || echo "setup.sh: mysqlclient could not be installed; --database mysql will not work" >&2
# run.py re-runs this script when requirements.txt changes.
sha256sum "$here/requirements.txt" | cut -d' ' -f1 > "$venv/.bench-ready"
