"""``build_worker``: a ``Worker`` for a storing backend, with everything it runs.

Code and the management commands get the same worker: the backend's store,
queues, retry policy, poll interval and lease, and as duties its pruner
(``backend.retention_rules()``) and its scheduler (the ``SCHEDULE`` setting).
"""

from django.core.exceptions import ImproperlyConfigured

from .. import stats
from ..handler import get_backend
from ..schedule import configured_scheduler
from .duties import Duty
from .pruning import Pruner
from .worker import Worker

#: Enough to batch claims of short jobs hundreds at a time; the worker sizes its
#: prefetch to the jobs it sees (``ClaimPolicy.prefetch_target``: about two claim
#: round trips' worth), so long jobs are not held back from other workers. With
#: 200, a worker of no-op jobs claimed 200 in about 5 ms and ran them in 2: its
#: slots waited for most of every claim. With 1,000 it ran them about 1.5× as
#: fast at --concurrency 1 and 8 (medians of runs turn about; issue 21).
DEFAULT_PREFETCH = 1000


def build_worker(
    backend=None,
    *,
    queues=None,
    concurrency=1,
    poll_interval=None,
    grace_period=30.0,
    prefetch=DEFAULT_PREFETCH,
    burst=False,
    max_jobs=None,
    max_seconds=None,
    worker_id=None,
    hostname=None,
    schedules=True,
    prune=True,
):
    """A ``Worker`` for ``backend`` (default: the configured one).

    Raises ``ImproperlyConfigured`` for a backend that does not store jobs or a
    bad ``SCHEDULE``, ``ValueError`` for an unknown queue or a number the worker
    cannot honour."""
    backend = backend or get_backend()
    if not backend.stores_jobs:
        raise ImproperlyConfigured(
            f"{type(backend).__name__} runs jobs without a worker. Set PGJOBS['BACKEND'] to "
            "'pgjobs.backends.DatabaseBackend' (or RedisBackend) to work a queue."
        )
    store = backend.store
    duties = []
    scheduler = configured_scheduler(backend) if schedules else None
    if scheduler is not None:
        interval, run = scheduler.periodic()
        duties.append(Duty("schedules", interval, run, source=scheduler))
    pruner = pruner_for(backend) if prune else None
    if pruner is not None:
        interval, run = pruner.periodic()
        duties.append(Duty("pruning", interval, run, source=pruner))
    worker = Worker(
        store,
        queues=queues_to_work(backend, queues),
        concurrency=concurrency,
        poll_interval=backend.poll_interval if poll_interval is None else poll_interval,
        grace_period=grace_period,
        retry_policy=backend.retry_policy,
        prefetch=prefetch,
        burst=burst,
        max_jobs=max_jobs,
        max_seconds=max_seconds,
        worker_id=worker_id,
        hostname=hostname,
        duties=duties,
    )
    worker.backend = backend
    return worker


def pruner_for(backend):
    """The ``Pruner`` that deletes finished jobs past ``KEEP_SUCCEEDED`` and
    ``KEEP_FAILED``, and figures past ``stats.KEEP``."""
    return Pruner(backend.store, backend.retention_rules(), keep_figures=stats.KEEP)


def queues_to_work(backend, requested):
    """The queues to claim from: ``requested`` (each one configured), else the
    backend's (None: every queue)."""
    if not requested:
        return list(backend.queues) or None
    if backend.queues:
        unknown = [q for q in requested if q not in backend.queues]
        if unknown:
            raise ValueError(
                f"unknown queue {', '.join(unknown)}; configured queues are "
                f"{', '.join(backend.queues)}"
            )
    return list(requested)
