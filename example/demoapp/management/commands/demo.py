"""``manage.py demo``: publish Wagtail pages and enqueue a mix of jobs, watch a real
worker run them all, show what ran."""

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core import mail
from django.core.files.images import ImageFile
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.test import Client
from django.utils import timezone
from PIL import Image as PILImage
from wagtail.images import get_image_model
from wagtail.models import ReferenceIndex

from demoapp import jobs, tasks
from demoapp.models import ArticlePage
from demoapp.site import ARTICLES, ensure_admin, home_page, reset_articles
from pgjobs import background
from pgjobs.models import Job


class Command(BaseCommand):
    help = "Run the pgjobs demo: publish pages, enqueue jobs, start a worker, show what ran."

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=4)
        parser.add_argument("--timeout", type=float, default=60.0)

    def handle(self, *args, **options):
        database = settings.DATABASES["default"]
        self.stdout.write(f"Database: {database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}")
        started = time.monotonic()
        call_command("migrate", verbosity=0)
        self.stdout.write(f"Migrated in {time.monotonic() - started:.1f} s.")
        admin = ensure_admin()
        home = home_page()
        reset_articles(home)
        Job.objects.all().delete()

        articles = self.publish_pages(home, admin)
        scheduled = self.schedule_page(home, admin)
        image = self.upload_image()
        self.send_mail(admin)
        self.describe_wagtail_jobs(articles)
        refs = self.enqueue_jobs(articles)
        self.stdout.write(f"Enqueued {len(refs)} more jobs. Starting a worker:\n")
        worker = subprocess.Popen(
            [
                sys.executable,
                sys.argv[0],
                "pgjobs_worker",
                "--concurrency",
                str(options["concurrency"]),
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # per-job log lines; the progress line says enough
        )
        try:
            self.watch(options["timeout"])
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        self.stdout.write("")
        self.show_table()
        self.show_references(articles)
        self.show_contrib(scheduled, image)

    def publish_pages(self, home, admin):
        """Two articles through the Wagtail admin, as an editor would; one from code."""
        client = Client()
        client.force_login(admin)
        articles = []
        for index, (title, _) in enumerate(ARTICLES[:2]):
            response = client.post(
                f"/admin/pages/add/demoapp/articlepage/{home.pk}/",
                {
                    "title": title,
                    "slug": f"article-{index + 1}",
                    "related_page": articles[0].pk if articles else "",
                    "action-publish": "publish",
                    "comments-TOTAL_FORMS": "0",
                    "comments-INITIAL_FORMS": "0",
                    "comments-MIN_NUM_FORMS": "0",
                    "comments-MAX_NUM_FORMS": "1000",
                },
            )
            if response.status_code != 302:
                raise CommandError(f"publishing {title!r} in the admin failed: {response}")
            articles.append(ArticlePage.objects.get(slug=f"article-{index + 1}"))
        title, text = ARTICLES[2]
        page = home.add_child(
            instance=ArticlePage(
                title=title, slug="article-3", body=f"<p>{text}</p>", related_page=articles[0]
            )
        )
        page.save_revision(user=admin).publish()
        articles.append(page)
        self.stdout.write(
            f"Published {len(articles)} pages: 2 in the Wagtail admin as {admin.username!r}, 1 "
            "from code."
        )
        return articles

    def schedule_page(self, home, admin):
        """A page scheduled to go live in 3 s: a worker publishes it, no cron."""
        page = home.add_child(
            instance=ArticlePage(
                title="Scheduled", slug="scheduled", live=False, body="<p>Later.</p>"
            )
        )
        page.go_live_at = timezone.now() + timedelta(seconds=3)
        page.save_revision(user=admin).publish()
        self.stdout.write(f"Scheduled {page.title!r} to go live at {page.go_live_at:%H:%M:%S}.")
        return page

    def upload_image(self):
        """An image, as the admin's upload saves it: its renditions are made by a worker."""
        buffer = io.BytesIO()
        PILImage.new("RGB", (800, 600), "teal").save(buffer, "PNG")
        Image = get_image_model()
        Image.objects.filter(title="Demo image").delete()
        image = Image(title="Demo image", file=ImageFile(buffer, name="demo.png"))
        image.save()
        return image

    def send_mail(self, admin):
        """An e-mail sent in the request's place: a worker hands it to the real backend."""
        for old in Path(settings.EMAIL_FILE_PATH).glob("*.log"):
            old.unlink()
        mail.send_mail(
            "Your pages are published",
            "Three articles went live.",
            "site@example.com",
            [admin.email],
            html_message="<p>Three articles went <b>live</b>.</p>",
        )

    def show_contrib(self, scheduled, image):
        scheduled.refresh_from_db()
        specs = sorted(image.renditions.values_list("filter_spec", flat=True))
        sent = sorted(Path(settings.EMAIL_FILE_PATH).glob("*.log"))
        self.stdout.write(
            f"Scheduled page live: {scheduled.live} (published by a worker at "
            f"{scheduled.last_published_at and f'{scheduled.last_published_at:%H:%M:%S}'}). "
            f"Renditions made ahead of time: {', '.join(specs) or 'none'}. "
            f"E-mail sent by a worker: {len(sent)} file(s) in {settings.EMAIL_FILE_PATH}."
        )

    def describe_wagtail_jobs(self, articles):
        made = Counter(Job.objects.values_list("func", flat=True))
        self.stdout.write("The requests did not do this work; they enqueued it as jobs:")
        for func, count in sorted(made.items()):
            self.stdout.write(f"  {count:2d} x {func}")
        refs = ReferenceIndex.get_references_for_object(articles[-1]).count()
        self.stdout.write(f"Reference index entries for {articles[-1].title!r} so far: {refs}")

    def enqueue_jobs(self, articles):
        refs = []
        refs += background.enqueue_many([(jobs.render_thumbnail, [n]) for n in range(1, 13)])
        refs += background.enqueue_many(
            [(jobs.send_newsletter, [n]) for n in range(1, 7)], queue="emails", priority=-10
        )
        refs.append(
            background.enqueue(jobs.render_thumbnail, args=[99], kwargs={"size": 1024}, priority=50)
        )
        refs.append(background.enqueue(jobs.flaky_import, args=["https://example.com/feed"]))
        refs += [background.enqueue(jobs.warm_cache, args=[page.url]) for page in articles]
        refs.append(background.defer(jobs.nightly_report, when=timedelta(seconds=3)))
        # Django's tasks framework: a @task of the site's own, on the same queue.
        refs += [tasks.count_words.enqueue(page.pk) for page in articles]
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
        header = (
            f"{'id':>4}  {'function':<30} {'queue':<7} {'prio':>4} {'tries':>5}  "
            f"{'status':<9}  result"
        )
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for job in rows:
            outcome = job.result if job.status == "succeeded" else (job.error or {}).get("message")
            self.stdout.write(
                f"{job.id:>4}  {job.func.rsplit('.', 1)[-1][:30]:<30} {job.queue:<7} "
                f"{job.priority:>4} {job.attempts:>5}  {job.status:<9}  {str(outcome)[:60]}"
            )

    def show_references(self, articles):
        refs = ReferenceIndex.get_references_for_object(articles[-1]).count()
        self.stdout.write(
            f"\nReference index entries for {articles[-1].title!r} now: {refs} (its link to "
            f"{articles[0].title!r}, recorded by a worker).\n"
            "Higher priority ran first; the flaky import failed once and was retried; the "
            "deferred report waited for its time; Wagtail's own tasks and the background "
            "hook ran in the worker, not in the requests."
        )
