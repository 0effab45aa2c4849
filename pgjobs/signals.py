"""Django signals pgjobs sends.

Workers send three for each attempt they run, ``sender`` the ``Worker`` class,
with ``job`` (the ``ClaimedJob``: ``id``, ``func``, ``queue``, ``attempts`` (this
attempt's number), ``max_attempts``, ``args``, ``kwargs``) and ``worker_id``:

``job_started``: in the thread (or, for an async job, the event-loop task) that
runs the job, just before its function is called; ``pgjobs.current_job()``
answers there.

``job_failed``: the attempt raised (or timed out, or could not start), after its
outcome is stored; with ``error`` (``{"type", "message", "traceback"}``, as
stored), ``outcome`` (``"retried"``, ``"failed"`` for good, or ``"cancelled"``)
and ``will_retry`` (True when the job runs again). Sent on the worker's main
thread, before ``job_finished``.

``job_finished``: once the attempt's outcome is stored, whatever it is; with
``outcome`` (``"succeeded"``, ``"retried"``, ``"failed"`` or ``"cancelled"``),
``result`` (the result as stored, None unless it succeeded), ``error`` (None when
it succeeded) and ``seconds`` (how long the function ran). Main thread; a
success is announced when it is stored, which is batched with the next claim
(within ``RECORD_WITHIN`` at the latest).

A receiver that raises is logged and changes nothing for the job. Nothing is
sent, nor prepared, while nothing listens.

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
job_started = Signal(use_caching=True)  # asked once per job: the cached answer is cheaper
job_finished = Signal(use_caching=True)
job_failed = Signal(use_caching=True)


def send_robust(signal, sender, **kwargs):
    """Send ``signal``; log the receivers that raise, once each, and go on."""
    for receiver, outcome in signal.send_robust(sender=sender, **kwargs):
        if isinstance(outcome, Exception):
            job = kwargs.get("job")
            logger.error(
                "pgjobs: a receiver of %s (%r) failed for job %s: %s: %s",
                _names.get(signal, "a signal"),
                receiver,
                getattr(job, "id", "?"),
                type(outcome).__name__,
                outcome,
                exc_info=outcome,
            )


_names = {job_started: "job_started", job_finished: "job_finished", job_failed: "job_failed"}


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
