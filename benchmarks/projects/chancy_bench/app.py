"""The chancy application, for its CLI (``chancy --app chancy_bench.app.app``)
and the worker: the benchmark's database, chancy's default plugins, its logger
at WARNING as every system here runs."""

import logging
import os

from chancy import Chancy


def _dsn():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chancy_bench.settings")
    from django.conf import settings

    db = settings.DATABASES["default"]
    return f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def make_app():
    log = logging.getLogger("chancy")
    log.setLevel(logging.WARNING)
    log.addHandler(logging.StreamHandler())
    return Chancy(_dsn(), log=log)


app = make_app()
