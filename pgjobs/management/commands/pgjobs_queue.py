"""``manage.py pgjobs_queue pause|resume|limit|show NAME``: steer a queue on every
worker at once (``pgjobs/queue_control.py``); workers obey within about a second."""

from django.core.management.base import BaseCommand, CommandError

from ... import queue_control
from ._options import workable_backend

ACTIONS = ("pause", "resume", "limit", "show")


def _limit_value(text, argument, parse):
    """``none`` clears a limit; anything else goes through ``parse``."""
    if text is None:
        return queue_control.UNSET
    if text.strip().lower() == "none":
        return None
    return parse(text, argument)


def _concurrency(text, argument):
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{argument} must be a whole number >= 1, or 'none' for no limit; not {text!r}"
        ) from None
    return queue_control.check_concurrency(value, argument)


def _rate(text, argument):
    queue_control.parse_rate(text, argument)  # checked here, to name the option
    return text


class Command(BaseCommand):
    help = (
        "Steer a queue on every worker: pause it (running jobs finish, nothing new starts), "
        "resume it, limit it (--concurrency N: at most N of its jobs running at once on all "
        "workers; --rate 5/s: at most 5 starts a second; 'none' clears a limit), or show "
        "the controls in force (every queue when NAME is left out)."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument("queue", nargs="?", help="The queue's name.")
        parser.add_argument(
            "--concurrency", help="limit: jobs of the queue running at once, or 'none'."
        )
        parser.add_argument(
            "--rate", help="limit: starts per period, like 5/s, 100/m, 10/30s, or 'none'."
        )

    def handle(self, *args, action, queue, concurrency, rate, **options):
        if action != "show" and queue is None:
            raise CommandError(
                f"pgjobs_queue {action}: name the queue, e.g. pgjobs_queue {action} emails"
            )
        if action != "limit" and (concurrency is not None or rate is not None):
            raise CommandError("--concurrency and --rate go with the limit action")
        try:
            if queue is not None:
                queue_control.check_queue_name(queue, "NAME")
            if action == "limit":
                limits = {
                    "concurrency": _limit_value(concurrency, "--concurrency", _concurrency),
                    "rate": _limit_value(rate, "--rate", _rate),
                }
                if all(value is queue_control.UNSET for value in limits.values()):
                    raise ValueError("limit needs --concurrency and/or --rate ('none' clears one)")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        backend = workable_backend()
        if action == "pause":
            control = backend.pause_queue(queue)
        elif action == "resume":
            control = backend.resume_queue(queue)
        elif action == "limit":
            control = backend.limit_queue(queue, **limits)
        else:
            self.show(backend, queue)
            return
        self.stdout.write(f"pgjobs_queue: {describe(control)}; workers obey within about a second")

    def show(self, backend, queue):
        controls = backend.queue_controls(None if queue is None else [queue])
        counts = {row["queue"]: row["counts"] for row in backend.get_store().status()["queues"]}
        names = sorted({*controls, *counts}) if queue is None else [queue]
        if not names:
            self.stdout.write("pgjobs_queue: no queue has jobs or controls")
            return
        header = f"{'queue':<24} {'state':<8} {'concurrency':>11} {'rate':>10} {'ready':>7} {'running':>7}"
        self.stdout.write(header)
        for name in names:
            control = controls.get(name) or queue_control.QueueControl(name)
            count = counts.get(name, {})
            self.stdout.write(
                f"{name:<24} {'paused' if control.paused else 'running':<8} "
                f"{control.concurrency if control.concurrency is not None else '-':>11} "
                f"{queue_control.format_rate(control):>10} "
                f"{count.get('ready', 0):>7} {count.get('running', 0):>7}"
            )


def describe(control):
    """One line: a queue's control in force."""
    limits = []
    if control.concurrency is not None:
        limits.append(f"at most {control.concurrency} running")
    if control.rate is not None:
        limits.append(f"at most {control.rate} starts per {control.period:g} s")
    state = "paused" if control.paused else "running"
    return f"queue {control.queue!r} {state}, " + (", ".join(limits) if limits else "no limits")
