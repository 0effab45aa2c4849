"""Django signals pgjobs sends.

``job_lost``: a rescue ended a job for good because the worker running it was
lost (killed, its host gone) and its lease ran out: failed, its attempts used up,
or cancelled, as asked while it ran. No worker is left to say the job finished,
so the worker that rescued it does, once per job, with ``job`` (the job's
``JobInfo`` as stored after the rescue, its error a ``WorkerLost``). The tasks
framework's backend (``pgjobs.django_tasks``) listens, and sends ``task_finished``
for a task.

Sent only when something listens: otherwise the job is not read back.
"""

import logging

from django.dispatch import Signal

logger = logging.getLogger("pgjobs")

job_lost = Signal()


def send_job_lost(store, job_ids):
    """Send ``job_lost`` for the jobs ``store``'s rescue ended (``Rescued.ended``).

    A receiver that raises is logged and does not stop the others, nor the
    worker: the rescue is done and will not be repeated."""
    if not job_ids or not job_lost.has_listeners():
        return
    for job_id in job_ids:
        info = store.get(job_id)
        if info is None:  # pruned already
            continue
        for receiver, outcome in job_lost.send_robust(sender=type(store), job=info):
            if isinstance(outcome, Exception):
                logger.error(
                    "pgjobs: a job_lost receiver (%r) failed for job %s: %s: %s",
                    receiver,
                    job_id,
                    type(outcome).__name__,
                    outcome,
                    exc_info=outcome,
                )
