"""``manage.py pgjobs_drain``: run every due job, then exit. Made for cron."""

from django.core.management.base import BaseCommand, CommandError

from ...worker import Worker
from ._options import (
    add_worker_arguments,
    check_concurrency,
    configure_logging,
    pruner_for,
    queues_to_work,
    scheduler_for,
    workable_backend,
)


class Command(BaseCommand):
    help = (
        "Run the jobs that are due (enqueuing due scheduled jobs first), then exit with a "
        "summary. Safe to run from cron alongside workers and other drains."
    )

    def add_arguments(self, parser):
        add_worker_arguments(parser)
        parser.add_argument(
            "--max-jobs", type=int, default=None, metavar="N", help="Stop after N jobs."
        )
        parser.add_argument(
            "--max-seconds",
            type=float,
            default=None,
            metavar="S",
            help="Stop claiming after S seconds (running jobs still finish).",
        )

    def handle(self, *args, **options):
        configure_logging(options["verbosity"] - 1)  # quieter by default: cron mails output
        for name in ("max_jobs", "max_seconds"):
            if options[name] is not None and options[name] <= 0:
                raise CommandError(f"--{name.replace('_', '-')} must be greater than 0")
        backend = workable_backend()
        store = backend.get_store()
        queues = queues_to_work(backend, options["queues"])
        scheduler = scheduler_for(backend)
        pruner = pruner_for(backend)
        worker = Worker(
            store,
            queues=queues,
            concurrency=check_concurrency(options["concurrency"]),
            retry_policy=backend.retry_policy,
            prefetch=max(0, options["prefetch"]),
            burst=True,
            max_jobs=options["max_jobs"],
            max_seconds=options["max_seconds"],
            periodic=[part.periodic() for part in (scheduler, pruner) if part] or None,
        )
        worker.install_signal_handlers()
        stats = worker.run()
        left = store.count_due(queues)
        self.stdout.write(
            f"pgjobs_drain: ran {stats.ran}, succeeded {stats.succeeded}, failed {stats.failed}"
            f" ({stats.retried} to retry), left {left}"
        )
        if scheduler:
            self.stdout.write(f"pgjobs_drain: enqueued {scheduler.enqueued} scheduled job(s)")
        if pruner and pruner.deleted:
            self.stdout.write(
                f"pgjobs_drain: deleted {pruner.deleted} finished job(s) past their retention"
            )
