# Publish a page the way the admin does, schedule another to go live in a few seconds,
# then look at the jobs they left for a worker.
from datetime import timedelta

from django.utils import timezone
from home.models import HomePage
from wagtail.models import Page

from pgjobs.models import Job

home = HomePage.objects.first()
page = home.add_child(instance=Page(title="Hello, workers", slug="hello-workers"))
page.save_revision().publish()

soon = home.add_child(instance=Page(title="Coming soon", slug="coming-soon", live=False))
soon.go_live_at = timezone.now() + timedelta(seconds=3)
soon.save_revision().publish()  # scheduled: a worker publishes it at go_live_at

print(f"{Job.objects.filter(status='ready').count()} jobs are waiting for a worker:")
for func in sorted(set(Job.objects.values_list("func", flat=True))):
    print("  ", func)
