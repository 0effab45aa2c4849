#!/usr/bin/env bash
# The tutorial's steps, in order. docs/tutorial/index.md shows each part; tests/test_docs.py
# runs the whole script in an empty directory, so the tutorial cannot rot.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

if [ -z "${TUTORIAL_SKIP_INSTALL:-}" ]; then
    # step: install
    python -m pip install "pgjobs[wagtail]"
    # end: install
fi

# step: start
wagtail start mysite
cd mysite
# end: start

# step: configure
cat "$HERE/settings.py" >> mysite/settings/base.py
# end: configure

# step: migrate
python manage.py migrate --verbosity 0
# end: migrate

# step: publish
python manage.py shell < "$HERE/publish.py"
# end: publish

# step: status
python manage.py pgjobs_status
# end: status

# step: drain
sleep 3  # until the scheduled page's time
python manage.py pgjobs_drain
# end: drain

# step: check
python manage.py shell < "$HERE/check.py"
# end: check
