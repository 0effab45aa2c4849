"""The claim policy (``pgjobs/worker/policy.py``): pure decisions over a clock,
tested without a database."""

import math

import pytest

from pgjobs.worker.policy import (
    BUSY_POLL,
    DUE_NOW_RECHECK,
    MAX_CONCURRENCY,
    RECORD_WITHIN,
    ClaimPolicy,
    check_options,
)


class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def policy(clock=None, **options):
    options = {
        "concurrency": 4,
        "prefetch": 0,
        "poll_interval": 1.0,
        "heartbeat_interval": 5.0,
        **options,
    }
    return ClaimPolicy(clock=clock or Clock(), **options)


def claim_size(p, held=0, running=0, queued=0, successes=0, claimed_total=0, look_again_at=0.0):
    return p.claim_size(
        held=held,
        running=running,
        queued=queued,
        successes=successes,
        claimed_total=claimed_total,
        look_again_at=look_again_at,
    )


def test_a_polled_store_backs_off_doubling_from_busy_poll_to_the_poll_interval():
    clock = Clock()
    p = policy(clock, poll_interval=1.0)
    assert p.claimed(asked=4, found=2, seconds=0.001) == clock.now + BUSY_POLL
    waits = [p.claimed(asked=4, found=0, seconds=0.001) - clock.now for _ in range(7)]
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    # Jobs again: back to a quick look.
    assert p.claimed(asked=4, found=1, seconds=0.001) == clock.now + BUSY_POLL


def test_a_listening_store_is_looked_at_again_only_at_the_poll_interval():
    clock = Clock()
    p = policy(clock, poll_interval=2.0, listens=True)
    assert p.claimed(asked=4, found=1, seconds=0.001) == clock.now + 2.0
    assert p.claimed(asked=4, found=0, seconds=0.001) == clock.now + 2.0


def test_a_full_claim_is_not_drained_and_sets_no_look_again_time():
    p = policy()
    assert p.claimed(asked=4, found=4, seconds=0.001) is None
    assert not p.drained


def test_prefetch_is_zero_until_jobs_and_claims_are_timed_and_bounded_by_prefetch():
    p = policy(concurrency=4, prefetch=50)
    assert p.prefetch_target() == 0
    p.jobs_timed([0.001])
    assert p.prefetch_target() == 0  # no claim timed yet
    p.claimed(asked=4, found=4, seconds=0.002)
    # 4 slots * 2 round trips * 2 ms / 1 ms a job = 16
    assert p.prefetch_target() == 16
    p.jobs_timed([0.00001] * 100)  # very short jobs: many wanted, at most ``prefetch``
    assert p.prefetch_target() == 50
    assert policy(prefetch=0).prefetch_target() == 0


def test_moving_averages_weigh_recent_values():
    p = policy()
    p.jobs_timed([1.0])
    p.jobs_timed([0.0])
    assert p.job_seconds == pytest.approx(0.9)
    p.jobs_timed([1.0, 0.0])  # in one batch, in the order they ended
    assert p.job_seconds == pytest.approx(0.819)  # 0.9 → 0.91 → 0.819


def test_the_claim_fills_free_capacity_and_counts_successes_stored_with_it():
    p = policy(concurrency=4)
    assert claim_size(p) == 4
    assert claim_size(p, held=4, running=4) == 0
    # Four finished, not yet stored: their slots are free for this claim.
    assert claim_size(p, held=4, running=0, successes=4) == 4


@pytest.mark.parametrize("queued", [0, 1, 3])
def test_jobs_queued_for_idle_slots_do_not_stop_a_claim_for_the_rest(queued):
    p = policy(concurrency=4)
    assert claim_size(p, held=queued + 4, queued=queued, successes=4) == 4 - queued


def test_no_claim_while_more_than_low_water_jobs_wait_for_a_slot():
    p = policy(concurrency=2, prefetch=100)
    p.jobs_timed([0.001])
    p.claimed(asked=2, found=2, seconds=0.01)  # prefetch target: 2 * 2 * 10 = 40, low water 20
    assert claim_size(p, held=2 + 30, running=2, queued=30) == 0
    assert p.low_water == 20
    assert claim_size(p, held=2 + 10, running=2, queued=10) == 2 + 40 - 12


def test_max_jobs_caps_the_claim():
    p = policy(concurrency=4, max_jobs=5)
    assert claim_size(p, claimed_total=3) == 2
    assert claim_size(p, claimed_total=5) == 0


def test_a_drained_store_is_not_claimed_from_again_before_its_look_again_time():
    clock = Clock()
    p = policy(clock)
    look = p.claimed(asked=4, found=1, seconds=0.001)
    assert p.drained
    assert claim_size(p, held=1, running=1, look_again_at=look) == 0
    clock.now = look
    assert claim_size(p, held=1, running=1, look_again_at=look) == 3


def test_a_wakeup_for_this_worker_claims_at_once_after_the_store_drained():
    clock = Clock()
    p = policy(clock, listens=True)
    look = p.claimed(asked=4, found=0, seconds=0.001)
    assert claim_size(p, look_again_at=look) == 0
    p.note_wakeups(notified=True, freed=False)
    assert claim_size(p, look_again_at=look) == 4
    assert not p.drained and not p.notified


def test_a_listening_store_is_not_reclaimed_when_a_slot_runs_dry_after_it_drained():
    clock = Clock()
    p = policy(clock, listens=True)
    look = p.claimed(asked=4, found=1, seconds=0.001)
    p.note_wakeups(notified=False, freed=True)
    assert claim_size(p, look_again_at=look) == 0  # it would wake this worker for new jobs


def test_a_polled_store_is_reclaimed_when_a_slot_runs_dry():
    clock = Clock()
    p = policy(clock)
    look = p.claimed(asked=4, found=1, seconds=0.001)
    p.note_wakeups(notified=False, freed=True)
    assert claim_size(p, held=1, running=1, look_again_at=look) == 3


def test_a_job_due_now_after_an_empty_claim_is_looked_for_a_little_later():
    clock = Clock()
    p = policy(clock)
    assert p.look_after_due(0) == clock.now + DUE_NOW_RECHECK
    assert p.look_after_due(2.5) == pytest.approx(clock.now + 2.501)


def test_idle_timeout_is_the_heartbeat_unless_the_store_drained_and_capacity_is_free():
    clock = Clock()
    p = policy(clock, heartbeat_interval=5.0)
    assert p.idle_timeout(held=0, look_again_at=clock.now + 1) == 5.0
    p.claimed(asked=4, found=0, seconds=0.001)
    assert p.idle_timeout(held=0, look_again_at=clock.now + 1) == 1.0
    assert p.idle_timeout(held=4, look_again_at=clock.now + 1) == 5.0  # no free slot
    assert p.idle_timeout(held=0, look_again_at=clock.now - 1) == 0.0
    assert policy(clock, burst=True).idle_timeout(held=0, look_again_at=0.0) == 5.0


def test_successes_are_stored_within_record_within_or_when_nothing_is_left_to_run():
    clock = Clock()
    p = policy(clock, heartbeat_interval=5.0)
    assert p.record_within(None) == 5.0
    first = clock.now
    assert p.record_within(first) == pytest.approx(RECORD_WITHIN)
    assert not p.must_record([], 0, first)
    assert p.must_record(["a success"], 0, first)  # nothing queued: store it now
    assert not p.must_record(["a success"], 3, first)
    clock.now += RECORD_WITHIN
    assert p.must_record(["a success"], 3, first)


def test_a_drain_keeps_looking_for_a_held_job_for_a_second_only():
    clock = Clock()
    p = policy(clock, burst=True)
    assert p.keep_draining()
    clock.now += 0.9
    assert p.keep_draining()
    clock.now += 0.2
    assert not p.keep_draining()
    p.claimed(asked=4, found=1, seconds=0.001)  # found jobs: patient again
    assert p.keep_draining()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"concurrency": 0}, "--concurrency"),
        ({"concurrency": MAX_CONCURRENCY + 1}, "--concurrency"),
        ({"concurrency": 1, "poll_interval": 0}, "--poll-interval"),
        ({"concurrency": 1, "poll_interval": -1.0}, "--poll-interval"),
        ({"concurrency": 1, "poll_interval": math.nan}, "--poll-interval"),
        ({"concurrency": 1, "poll_interval": math.inf}, "--poll-interval"),
        ({"concurrency": 1, "grace_period": -1.0}, "--grace-period"),
        ({"concurrency": 1, "grace_period": math.nan}, "--grace-period"),
        ({"concurrency": 1, "prefetch": -1}, "--prefetch"),
    ],
)
def test_numbers_a_worker_cannot_honour_are_refused_naming_the_option(options, named):
    with pytest.raises(ValueError, match=named):
        check_options(**options)


def test_numbers_a_worker_can_honour_pass():
    check_options(concurrency=MAX_CONCURRENCY, poll_interval=0.01, grace_period=0, prefetch=0)
