"""Django settings for measuring PGQueuer.

PGQueuer is not a Django app: its schema is installed with its own CLI
(``pgq install``, run by the harness after ``migrate``) in the same database.
Django is here for what the other systems get from it too: the database
settings, the ``bench_row`` table of the "orm" job kind, and driver.py.
"""

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["pgqueuer_bench"]  # noqa: F405
