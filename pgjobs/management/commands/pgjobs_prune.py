"""``manage.py pgjobs_prune``: delete finished jobs older than a given age, in batches.

Workers enforce ``KEEP_SUCCEEDED`` and ``KEEP_FAILED`` by themselves
(``pgjobs/worker/pruning.py``); this command is for pruning by hand, and keeps its own
explicit ``--older-than`` (7 days by default) rather than following those options,
so that an existing cron line does not start deleting more than it did.
"""

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from ...records import FINISHED_STATUSES
from ._options import workable_backend

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text):
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` (or a bare number of days)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise CommandError(f"--older-than {text!r}: use a number and a unit, like 7d, 12h or 30m")
    number, unit = match.groups()
    return timedelta(**{UNITS[unit or "d"]: float(number)})


class Command(BaseCommand):
    help = (
        "Delete finished jobs (succeeded, failed, cancelled) that finished longer ago than "
        "--older-than. Deletes in small batches, so it never holds long locks. Workers and "
        "drains already delete jobs older than OPTIONS['KEEP_SUCCEEDED'] (5 minutes) and "
        "['KEEP_FAILED'] (7 days); this is for pruning by hand, e.g. when those are True."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", default="7d", help="Age, e.g. 7d, 12h, 30m (default 7d)."
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=sorted(FINISHED_STATUSES),
            help="Only jobs in this status (repeatable). Default: every finished status.",
        )
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args, **options):
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        age = parse_age(options["older_than"])
        statuses = options["status"] or sorted(FINISHED_STATUSES)
        store = workable_backend().get_store()
        deleted = store.prune(
            older_than=age,
            statuses=statuses,
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
        )
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"pgjobs_prune: {verb} {deleted} {'/'.join(statuses)} job(s) finished more than "
            f"{options['older_than']} ago"
        )
