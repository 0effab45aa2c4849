# Publish a page the way the admin does, then look at the jobs it left for a worker.
from home.models import HomePage
from wagtail.models import Page

from pgjobs.models import Job

home = HomePage.objects.first()
page = home.add_child(instance=Page(title="Hello, workers", slug="hello-workers"))
page.save_revision().publish()

print(f"{Job.objects.filter(status='ready').count()} jobs are waiting for a worker:")
for func in sorted(set(Job.objects.values_list("func", flat=True))):
    print("  ", func)
