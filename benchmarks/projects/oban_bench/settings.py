"""Django settings for measuring Oban for Python (``oban``).

Oban is not a Django app: its schema is installed with its own CLI (``oban
install``, run by the harness after ``migrate``) in the same database. Django is
here for what the other systems get from it: the database settings and driver.py.
"""

from bench_common import *  # noqa: F403

INSTALLED_APPS = BASE_APPS + ["oban_bench"]  # noqa: F405


def dsn():
    db = DATABASES["default"]  # noqa: F405
    return f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
