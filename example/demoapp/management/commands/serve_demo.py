"""``manage.py serve_demo``: the example site and a worker together, for browsing the
admin at http://localhost:8000/admin/ (login ``admin`` / ``admin``)."""

import os
import signal
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand

from demoapp.site import ADMIN_PASSWORD, ADMIN_USERNAME, ensure_admin, home_page


class Command(BaseCommand):
    help = "Migrate, create the admin login, then run the site and a pgjobs worker."

    def add_arguments(self, parser):
        parser.add_argument(
            "addrport", nargs="?", default="127.0.0.1:8000", help="Where to serve the site."
        )
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Serve only (docker compose runs the workers as services of their own).",
        )
        parser.add_argument("--concurrency", type=int, default=2, help="Worker slots.")

    def handle(self, *args, **options):
        call_command("migrate", verbosity=0)
        ensure_admin()
        home_page()
        worker = None
        if not options["no_worker"]:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    sys.argv[0],
                    "pgjobs_worker",
                    "--concurrency",
                    str(options["concurrency"]),
                ],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        host, _, port = options["addrport"].rpartition(":")
        self.stdout.write(
            f"Wagtail admin: http://{'localhost' if host in ('', '0.0.0.0', '127.0.0.1') else host}"
            f':{port}/admin/  (login {ADMIN_USERNAME} / {ADMIN_PASSWORD}; jobs under "Jobs")\n'
            "Publish a page and watch its jobs run"
            + (" in the worker below." if worker else " in the worker service.")
        )
        try:
            call_command("runserver", options["addrport"], use_reloader=False)
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=40)
