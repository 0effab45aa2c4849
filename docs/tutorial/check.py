# Every job the publish left behind has run, in the worker, not in the request.
from pgjobs.models import Job

done = Job.objects.filter(status="succeeded").count()
left = Job.objects.exclude(status="succeeded").count()
print(f"{done} jobs succeeded, {left} did not")
assert done > 0 and left == 0, "some jobs did not run"
