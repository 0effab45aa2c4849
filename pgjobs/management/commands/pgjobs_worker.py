"""``manage.py pgjobs_worker``: a persistent worker process."""

import logging

from ...checks import upkeep_checks
from ._options import (
    WorkerCommand,
    add_worker_arguments,
    configure_logging,
    run_worker,
    worker_from_options,
)


class Command(WorkerCommand):
    help = "Run background jobs until stopped (SIGTERM/SIGINT finish running jobs first)."

    def add_arguments(self, parser):
        add_worker_arguments(parser)
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            metavar="S",
            help="Seconds between polls for new jobs, greater than 0 (a safety net where "
            "LISTEN wakes the worker). Default: 2 on PostgreSQL, 1 elsewhere.",
        )
        parser.add_argument(
            "--grace-period",
            type=float,
            default=30.0,
            metavar="S",
            help="On SIGTERM, seconds running jobs get to finish before they are put back "
            "(0 or more; default 30).",
        )

    def handle(self, *args, **options):
        configure_logging(options["verbosity"])
        worker = worker_from_options(
            options, poll_interval=options["poll_interval"], grace_period=options["grace_period"]
        )
        worker.install_signal_handlers()
        backend, store = worker.backend, worker.store
        # pgjobs.W003 is a database check, which `manage.py check` leaves out: a
        # worker is where a table that will only grow is worth saying at start.
        for warning in upkeep_checks(backend):
            logging.getLogger("pgjobs").warning(
                "pgjobs: %s (%s) HINT: %s", warning.msg, warning.id, warning.hint
            )
        scheduler, pruner = _source(worker, "schedules"), _source(worker, "pruning")
        if options["verbosity"] > 0:
            self.stdout.write(
                f"pgjobs worker {worker.worker_id}\n"
                f"  backend:     {type(backend).__name__} ({store.describe()})\n"
                f"  queues:      {', '.join(worker.queues) if worker.queues else 'all'}\n"
                f"  concurrency: {worker.concurrency}\n"
                + (
                    f"  prefetch:    up to {worker.prefetch} short jobs beyond the slots\n"
                    if worker.prefetch
                    else ""
                )
                + f"  wake-up:     {_wakeup(store, worker)}\n"
                + (f"  schedules:   {_schedules(scheduler)}\n" if scheduler else "")
                + (f"  retention:   {pruner.describe()}\n" if pruner else "")
                + "Stop with Ctrl-C or SIGTERM."
            )
            self.stdout.flush()
        stats = run_worker(worker, own_process=self._called_from_command_line)
        if options["verbosity"] > 0:
            self.stdout.write(
                f"pgjobs worker stopped: ran {stats.ran} ({stats.succeeded} succeeded, "
                f"{stats.failed} failed), put back {stats.released}"
            )


def _source(worker, name):
    duty = worker.duty(name)
    return duty.source if duty else None


def _wakeup(store, worker):
    if store.supports_listen:
        return f"notified, polling every {worker.poll_interval:g} s as a safety net"
    return f"polling every {worker.poll_interval:g} s"


def _schedules(scheduler):
    names = [schedule.name for schedule in scheduler.schedules]
    return f"{len(names)} ({', '.join(names)})"
