"""The backoff between attempts (``pgjobs/retry.py``)."""

from hypothesis import given
from hypothesis import strategies as st

from pgjobs.retry import RetryPolicy


def test_delays_double_per_attempt_without_jitter():
    policy = RetryPolicy(base=1.0, cap=3600.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_delays_are_capped():
    policy = RetryPolicy(base=1.0, cap=10.0, jitter=0.0)
    assert policy.delay(50) == 10.0
    assert policy.delay(10_000) == 10.0  # no overflow for absurd attempt counts


@given(
    base=st.floats(0.01, 100),
    cap=st.floats(0.01, 10_000),
    jitter=st.floats(0, 0.9),
    attempts=st.integers(1, 100),
)
def test_jitter_stays_within_its_bounds(base, cap, jitter, attempts):
    raw = min(cap, base * 2 ** (attempts - 1))
    delay = RetryPolicy(base=base, cap=cap, jitter=jitter).delay(attempts)
    assert raw * (1 - jitter) - 1e-9 <= delay <= raw * (1 + jitter) + 1e-9


def test_jitter_spreads_jobs_that_failed_together():
    policy = RetryPolicy(base=1.0, jitter=0.25)
    assert len({policy.delay(3) for _ in range(20)}) > 1
