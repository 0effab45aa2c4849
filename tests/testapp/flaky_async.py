"""A module whose import fails while ``IMPORT_FAILURES[0]`` > 0, counting it down:
a deploy whose code is not quite in place yet when a worker first looks."""

import threading

from tests.testapp.jobs import IMPORT_FAILURES

if IMPORT_FAILURES[0] > 0:
    IMPORT_FAILURES[0] -= 1
    raise ImportError("flaky_async is not importable yet")


async def where_am_i(a, b):
    """Its result names the thread it ran in, and adds."""
    return [threading.current_thread().name, a + b]
