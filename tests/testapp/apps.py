import os

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"

    def ready(self):
        seconds = os.environ.get("PGJOBS_TEST_JOB_SECONDS")
        if seconds:
            workers_believe_jobs_take(float(seconds))


def workers_believe_jobs_take(seconds):
    """Worker subprocesses of tests about prefetching (``PGJOBS_TEST_JOB_SECONDS``):
    each worker's claim policy starts as if it had timed one job at ``seconds``.

    A worker prefetches once it has timed jobs far quicker than a claim. Those tests
    trained it on 200 real ones, and failed now and then on a loaded machine: one
    job descheduled for a few milliseconds weighs on the moving average for dozens
    of jobs after it, and the worker, rightly, prefetched nothing."""
    from pgjobs.worker.policy import ClaimPolicy

    made = ClaimPolicy.__init__

    def seeded(self, **options):
        made(self, **options)
        self.jobs_timed([seconds])

    ClaimPolicy.__init__ = seeded
