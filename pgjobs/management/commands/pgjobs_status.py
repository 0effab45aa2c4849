"""``manage.py pgjobs_status``: live workers and per-queue counts, for people and monitors."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ...records import STATUSES
from ._options import scheduler_for, workable_backend


class Command(BaseCommand):
    help = (
        "Show live workers, per-queue job counts and each schedule's last and next run. "
        "With --fail-if-stale S, exit 1 when a queue's oldest due job has waited more than "
        "S seconds (for monitoring)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fail-if-stale", type=float, default=None, metavar="S")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")

    def handle(self, *args, **options):
        backend = workable_backend()
        status = backend.get_store().status()
        scheduler = scheduler_for(backend)
        if scheduler:
            status["schedules"] = scheduler.status()
        if options["json"]:
            self.stdout.write(json.dumps(status, default=str, indent=2))
        else:
            self.print_tables(status)
        limit = options["fail_if_stale"]
        if limit is not None:
            stale = [q for q in status["queues"] if (q["oldest_due_seconds"] or 0) > limit]
            if stale:
                names = ", ".join(f"{q['queue']} ({q['oldest_due_seconds']:.0f} s)" for q in stale)
                raise CommandError(f"stale queue(s): {names} waited more than {limit:g} s")

    def print_tables(self, status):
        now = timezone.now()
        workers = status["workers"]
        self.stdout.write(f"Workers ({len(workers)} live)")
        if workers:
            self.stdout.write(
                f"  {'id':<40} {'host':<20} {'pid':>7} {'conc':>4} {'running':>7}  "
                f"{'started':<19}  heartbeat"
            )
        for w in workers:
            age = (now - w["heartbeat_at"]).total_seconds()
            self.stdout.write(
                f"  {w['id']:<40} {w['hostname'][:20]:<20} {w['pid']:>7} {w['concurrency']:>4} "
                f"{w['running']:>7}  {w['started_at']:%Y-%m-%d %H:%M:%S}  {age:.0f} s ago"
            )
        self.stdout.write("")
        self.stdout.write("Queues")
        header = "  " + f"{'queue':<20}" + "".join(f"{s:>11}" for s in STATUSES) + "  oldest due"
        self.stdout.write(header)
        for q in status["queues"]:
            oldest = q["oldest_due_seconds"]
            self.stdout.write(
                f"  {q['queue']:<20}"
                + "".join(f"{q['counts'].get(s, 0):>11}" for s in STATUSES)
                + ("  -" if oldest is None else f"  {oldest:.1f} s")
            )
        schedules = status.get("schedules")
        if schedules:
            self.stdout.write("")
            self.stdout.write(f"Schedules (times in {timezone.get_current_timezone_name()})")
            width = max(len(s["name"]) for s in schedules)
            for s in schedules:
                late = s["overdue_since"]
                self.stdout.write(
                    f"  {s['name']:<{width}}  last {_time(s['last_run'])}  next {_time(s['next_run'])}"
                    + (f"  (due since {_time(late)}: is a worker running?)" if late else "")
                    + f"  {s['when']}"
                )


def _time(when):
    return "-" if when is None else f"{timezone.localtime(when):%Y-%m-%d %H:%M:%S}"
