"""Test settings with a ``SCHEDULE``, for the real drain processes of
``tests/test_schedule.py`` (``--settings tests.schedule_settings``)."""

import datetime

from tests.settings import *  # noqa: F403
from tests.settings import PGJOBS

PGJOBS = {
    **PGJOBS,
    "SCHEDULE": {
        # Weekly (Thursdays 00:00 UTC, counted from the epoch): a test never sees
        # two of its ticks, so racing drains can only race on one.
        "race": {
            "func": "tests.testapp.jobs.record_event",
            "every": datetime.timedelta(days=7),
            "args": ["scheduled"],
        },
    },
}
