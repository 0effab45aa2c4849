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

# Oban for Python needs Python 3.12 or newer; every queue is measured on the
# same interpreter, so the venv is made with a 3.12+ one when the machine has
# one: $PYTHON, else python3.12/3.13 on PATH or under pyenv, else python3 (and
# then requirements.txt leaves oban out, and run.py says it is unavailable).
is_312() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }
python="${PYTHON:-}"
if [ -z "$python" ]; then
    python=python3
    pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for candidate in python3.12 python3.13 "$pyenv_root"/versions/3.12*/bin/python3.12 \
        "$pyenv_root"/versions/3.13*/bin/python3.13 python3; do
        if is_312 "$candidate"; then
            python="$candidate"
            break
        fi
    done
fi
# A venv made before with an older Python than the one found is made again.
if [ -x "$venv/bin/python" ] && ! is_312 "$venv/bin/python" && is_312 "$python"; then
    echo "setup.sh: remaking $venv with $("$python" --version) (oban needs 3.12+)" >&2
    rm -rf "$venv"
fi
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
