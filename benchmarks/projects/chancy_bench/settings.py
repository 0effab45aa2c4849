"""Django settings for measuring chancy.

chancy ships a Django contrib app (admin views of its tables) but no worker
command: its schema is installed with its own CLI (``chancy misc migrate``, run
by the harness after ``migrate``) and its worker is its own ``Worker``
(``run_worker.py``). Django is here for what the other systems get from it: the
database settings, driver.py, and Django's connection, on which jobs are pushed.
"""

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["chancy_bench"]  # noqa: F405
