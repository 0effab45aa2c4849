"""``manage.py pgjobs_enqueue``: enqueue a job from the shell, cron or another language.

Jobs are signed with the site's ``SECRET_KEY`` when enqueued, so a row written
by hand is refused by workers; this command is the way in from outside Python.
"""

import argparse
import json
import math
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from ...backends.base import EARLIEST_WHEN, LATEST_WHEN, validate_when
from ...exceptions import InvalidJob
from ...handler import background
from ...serialization import MAX_INT_DIGITS


class Command(BaseCommand):
    help = (
        "Enqueue one job: a dotted function path with JSON arguments. Prints the job id. "
        'Example: pgjobs_enqueue myapp.jobs.send_report --args "[42]" --kwargs \'{"fmt": "csv"}\''
    )

    def add_arguments(self, parser):
        parser.add_argument("func", help="Dotted path of a module-level function.")
        # dest names other than "args": Django keeps "args" for positional arguments.
        parser.add_argument(
            "--args", dest="job_args", default="[]", help="JSON list of positional arguments."
        )
        parser.add_argument(
            "--kwargs", dest="job_kwargs", default="{}", help="JSON object of keyword arguments."
        )
        parser.add_argument("--queue", default=None)
        parser.add_argument("--priority", type=int, default=None, help="-100..100")
        parser.add_argument("--max-attempts", type=int, default=None)
        parser.add_argument("--timeout", type=float, default=None, help="Seconds per attempt.")
        parser.add_argument("--unique-key", default=None)
        parser.add_argument(
            "--atomic",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Run the job in a transaction that also records its success (its database "
            "writes happen once); --no-atomic for a function marked @atomic_job. Default: "
            "as the function is marked.",
        )
        parser.add_argument(
            "--delay", type=float, default=None, metavar="S", help="Run no sooner than S seconds."
        )

    def handle(self, *args, **options):
        job_args = _json(options["job_args"], "--args", list)
        job_kwargs = _json(options["job_kwargs"], "--kwargs", dict)
        job_options = {
            "queue": options["queue"],
            "priority": options["priority"],
            "max_attempts": options["max_attempts"],
            "timeout": options["timeout"],
            "unique_key": options["unique_key"],
            "atomic": options["atomic"],
        }
        try:
            if options["delay"] is not None:
                when = _delay(options["delay"])
                ref = background.defer(options["func"], when, job_args, job_kwargs, **job_options)
            else:
                ref = background.enqueue(options["func"], job_args, job_kwargs, **job_options)
        except InvalidJob as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(ref.id if ref is not None else ""))


def _delay(seconds):
    """The time ``--delay`` seconds from now."""
    try:
        if not math.isfinite(seconds):
            raise ValueError
        return validate_when(timedelta(seconds=seconds))
    except (ValueError, OverflowError, InvalidJob):
        raise CommandError(
            f"--delay must be a finite number of seconds that lands from {EARLIEST_WHEN:%Y} "
            f"to {LATEST_WHEN:%Y-%m-%d}, not {seconds!r}"
        ) from None


def _json(text, flag, expected):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{flag} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CommandError(
            f"{flag} is nested too deep for Python to read; pass flatter data"
        ) from None
    except ValueError:  # Python reads no integer of more than 4,300 digits
        raise CommandError(
            f"{flag} holds an integer of more than {MAX_INT_DIGITS:,} digits, which Python "
            "does not read; pass it as a JSON string"
        ) from None
    if not isinstance(value, expected):
        raise CommandError(f"{flag} must be a JSON {'list' if expected is list else 'object'}")
    return value
