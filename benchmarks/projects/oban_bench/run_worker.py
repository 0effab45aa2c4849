"""``oban start --queues default:N --log-level WARNING``, on the benchmark's database.

This is Oban's own CLI command (``oban.cli.main``), called with the DSN of the
database the harness made for this run (``OBAN_DSN``, which the command reads).
Its banner and start-up lines go to the worker log; ``--log-level WARNING``
keeps the per-job telemetry lines out, as every system here runs at WARNING.

    python run_worker.py --queues default:100 [other oban start options]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oban_bench.settings")
    from django.conf import settings

    db = settings.DATABASES["default"]
    os.environ["OBAN_DSN"] = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    from oban.cli import main as oban

    oban(["start", "--log-level", "WARNING", *sys.argv[1:]], prog_name="oban")


if __name__ == "__main__":
    main()
