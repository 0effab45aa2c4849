"""``manage.py pgjobs_drain``: run every due job, then exit. Made for cron."""

from django.core.management.base import CommandError

from ._options import (
    WorkerCommand,
    add_worker_arguments,
    configure_logging,
    run_worker,
    worker_from_options,
)


class Command(WorkerCommand):
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
            if options[name] is not None and not options[name] > 0:
                raise CommandError(f"--{name.replace('_', '-')} must be greater than 0")
        worker = worker_from_options(
            options,
            burst=True,
            max_jobs=options["max_jobs"],
            max_seconds=options["max_seconds"],
        )
        worker.install_signal_handlers()
        stats = run_worker(worker, own_process=self._called_from_command_line)
        try:
            left = worker.store.count_due(worker.queues)
        except Exception as exc:  # stopped while the store was unreachable
            left = f"unknown (store unreachable: {' '.join(str(exc).split())})"
        self.stdout.write(
            f"pgjobs_drain: ran {stats.ran}, succeeded {stats.succeeded}, failed {stats.failed}"
            f" ({stats.retried} to retry), left {left}"
        )
        scheduler, pruner = worker.duty("schedules"), worker.duty("pruning")
        if scheduler:
            self.stdout.write(
                f"pgjobs_drain: enqueued {scheduler.source.enqueued} scheduled job(s)"
            )
        if pruner and pruner.source.deleted:
            self.stdout.write(
                f"pgjobs_drain: deleted {pruner.source.deleted} finished job(s) past their "
                "retention"
            )
