"""``manage.py demo``: enqueue a mix of jobs, watch a real worker run them, show what ran."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from demoapp import jobs
from pgjobs import background
from pgjobs.models import Job


class Command(BaseCommand):
    help = "Run the pgjobs demo: enqueue jobs, start a worker, show what ran."

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=4)
        parser.add_argument("--timeout", type=float, default=60.0)

    def handle(self, *args, **options):
        database = settings.DATABASES["default"]
        self.stdout.write(f"Database: {database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}")
        call_command("migrate", verbosity=0)
        Job.objects.all().delete()

        refs = self.enqueue_jobs()
        self.stdout.write(f"Enqueued {len(refs)} jobs. Starting a worker:\n")
        worker = subprocess.Popen(
            [
                sys.executable,
                sys.argv[0],
                "pgjobs_worker",
                "--concurrency",
                str(options["concurrency"]),
                "--queue",
                "default",
                "--queue",
                "emails",
                "-v",
                "1",
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stderr=subprocess.DEVNULL,  # per-job log lines; the progress line says enough
        )
        try:
            self.watch(options["timeout"])
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        self.stdout.write("")
        self.show_table()

    def enqueue_jobs(self):
        refs = []
        refs += background.enqueue_many([(jobs.render_thumbnail, [n]) for n in range(1, 21)])
        refs += background.enqueue_many(
            [(jobs.send_newsletter, [n]) for n in range(1, 11)], queue="emails", priority=-10
        )
        refs.append(
            background.enqueue(jobs.render_thumbnail, args=[99], kwargs={"size": 1024}, priority=50)
        )
        refs.append(background.enqueue(jobs.flaky_import, args=["https://example.com/feed"]))
        refs += [background.enqueue(jobs.warm_cache, args=[f"/page/{n}/"]) for n in range(3)]
        refs.append(background.defer(jobs.nightly_report, when=timedelta(seconds=3)))
        return refs

    def watch(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            counts = dict(Job.objects.values_list("status").annotate(n=Count("id")))
            line = "  ".join(
                f"{s} {counts.get(s, 0):3d}" for s in ("ready", "running", "succeeded", "failed")
            )
            self.stdout.write(f"\r{line}", ending="")
            self.stdout.flush()
            if counts.get("ready", 0) + counts.get("running", 0) == 0:
                return
            if time.monotonic() > deadline:
                raise CommandError(f"\njobs still pending after {timeout:g} s")
            time.sleep(0.2)

    def show_table(self):
        # A worker claims several jobs in one statement, so they share a start time;
        # within a claim they ran in claim order.
        rows = Job.objects.order_by("started_at", "-priority", "run_at", "id")
        header = f"{'id':>4}  {'function':<28} {'queue':<7} {'prio':>4} {'tries':>5}  {'status':<9}  result"
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for job in rows:
            outcome = job.result if job.status == "succeeded" else (job.error or {}).get("message")
            self.stdout.write(
                f"{job.id:>4}  {job.func.rsplit('.', 1)[-1]:<28} {job.queue:<7} {job.priority:>4} "
                f"{job.attempts:>5}  {job.status:<9}  {outcome}"
            )
        self.stdout.write(
            "\nHigher priority ran first; the flaky import failed once and was retried; the "
            "deferred report waited for its time."
        )
