"""The pruner every worker built by ``build_worker`` runs beside its jobs: it
deletes finished jobs once they are older than the backend's retention
(``KEEP_SUCCEEDED``, ``KEEP_FAILED``), so the job table holds minutes or days of
history, not all of it, without a cron job; and finished batches' records once
they are older than the longest of those.

It is a duty of the ``Worker`` (``duties.py``, as the scheduler is), so it runs
on the worker's main thread between claims: each call deletes a few small
batches and stops after ``max_batches`` or ``time_budget``, whichever comes
first, so that claims are never held up for long and no statement holds many
row locks. With rows left over, it asks to run again in about a second;
otherwise at about half the shortest retention (at most a minute), jittered so
that the pruners of workers started together do not run in step. Every worker
runs one: the stores' ``prune_batch`` lets concurrent pruners skip each other's
rows, so several of them share a backlog instead of repeating work.

Once every ``FIGURES_INTERVAL``, whatever the jobs' retention, it also tends
the per-minute figures (``pgjobs/stats.py``): the shards of minutes past
``stats.FOLD_AFTER`` are folded into one row per key, and minutes older than
``stats.KEEP`` deleted.
"""

import logging
import random
import time

from .. import stats

logger = logging.getLogger("pgjobs")

#: Rows per DELETE statement.
BATCH_SIZE = 2000
#: Statements per call at most.
MAX_BATCHES = 10
#: Seconds a call may go on starting statements (the worker's main loop waits).
TIME_BUDGET = 0.25
#: Seconds until the next call when a call stopped with expired rows left.
BACKLOG_DELAY = 1.0
#: Bounds of the seconds between calls when there is nothing left to delete.
MIN_INTERVAL = 1.0
MAX_INTERVAL = 60.0
#: Each delay is multiplied by a random factor in this range.
JITTER = (0.8, 1.2)
#: Seconds between deletions of old figures (they are kept by the minute).
FIGURES_INTERVAL = 60.0


class Pruner:
    """Deletes the finished jobs of ``store`` that ``rules`` (``[(statuses,
    timedelta)]``, from the backend's ``retention_rules()``) say have expired,
    and with ``keep_figures`` (a timedelta) the figures older than that."""

    def __init__(
        self,
        store,
        rules,
        *,
        batch_size=BATCH_SIZE,
        max_batches=MAX_BATCHES,
        time_budget=TIME_BUDGET,
        clock=time.monotonic,
        keep_figures=None,
    ):
        if not rules and keep_figures is None:
            raise ValueError("a Pruner needs at least one (statuses, age) rule")
        self.store = store
        self.rules = [(tuple(statuses), age) for statuses, age in rules]
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.time_budget = time_budget
        self.clock = clock
        shortest = min((age.total_seconds() for _, age in self.rules), default=2 * MAX_INTERVAL)
        # Batch records go after the longest retention: a batch outlives its jobs
        # (none when no job expires, only figures).
        self.batch_age = max((age for _, age in self.rules), default=None)
        self.interval = min(max(shortest / 2, MIN_INTERVAL), MAX_INTERVAL)
        self.deleted = 0  # jobs this pruner deleted
        self.keep_figures = keep_figures
        self._figures_pruned_at = None  # self.clock() at the last deletion of figures

    def describe(self):
        """One line for the worker's banner: what expires when."""
        parts = [
            f"{'/'.join(statuses)} after {_duration(age.total_seconds())}"
            for statuses, age in self.rules
        ]
        if self.keep_figures is not None:
            parts.append(f"figures after {_duration(self.keep_figures.total_seconds())}")
        return f"deletes {', '.join(parts)} (looks every {_duration(self.interval)})"

    def periodic(self):
        """The ``(interval, callable)`` pair a ``Worker`` runs (its ``periodic``
        argument); ``prune`` returns each next delay, jitter included."""
        return (self.interval * JITTER[1], self.prune)

    def prune(self):
        """Delete expired jobs, a bounded number of batches, taking the rules in
        turn so that a backlog of one does not starve the other; return the
        seconds until the next call."""
        started = self.clock()
        self._prune_figures(started)
        pending = list(self.rules)
        batches = deleted = 0
        while pending and batches < self.max_batches:
            for rule in list(pending):
                statuses, age = rule
                n = self.store.prune_batch(age, statuses, self.batch_size)
                deleted += n
                batches += 1
                if n < self.batch_size:
                    pending.remove(rule)  # its expired rows are gone (or held by another pruner)
                if batches >= self.max_batches or self.clock() - started >= self.time_budget:
                    break
            else:
                continue
            break
        if self.batch_age is not None and batches < self.max_batches:
            self.store.prune_batches(self.batch_age, self.batch_size)
        self.deleted += deleted
        if deleted:
            logger.debug(
                "pgjobs: deleted %d finished job(s) past their retention in %.3f s%s",
                deleted,
                self.clock() - started,
                ", more to come" if pending else "",
            )
        delay = BACKLOG_DELAY if pending else self.interval
        return delay * random.uniform(*JITTER)

    def _prune_figures(self, now):
        if self.keep_figures is None:
            return
        if self._figures_pruned_at is not None and now - self._figures_pruned_at < FIGURES_INTERVAL:
            return
        self._figures_pruned_at = now
        folded = self.store.fold_figures(stats.FOLD_AFTER)
        deleted = self.store.prune_figures(self.keep_figures)
        if deleted or folded:
            logger.debug(
                "pgjobs: folded %d figure row(s) into one per key, deleted %d past their retention",
                folded,
                deleted,
            )


def _duration(seconds):
    """``300`` -> ``5 min``, ``604800`` -> ``7 d``, ``90`` -> ``90 s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
