# Every job the publish left behind has run, in the worker, not in the request, and the
# scheduled page went live without a cron entry.
from wagtail.models import Page

from pgjobs.models import Job

assert Page.objects.get(slug="coming-soon").live, "the scheduled page is not live"
print("The scheduled page is live.")

done = Job.objects.filter(status="succeeded").count()
left = Job.objects.exclude(status="succeeded").count()
print(f"{done} jobs succeeded, {left} did not")
assert done > 0 and left == 0, "some jobs did not run"
