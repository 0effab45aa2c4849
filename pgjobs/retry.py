"""When a failed attempt runs again: exponential backoff with jitter."""

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) that fails waits ``base * 2**(n-1)`` seconds, capped at
    ``cap``, scaled by a random factor in [1 - jitter, 1 + jitter] so that jobs
    that failed together do not all come back at the same instant."""

    base: float = 1.0
    cap: float = 3600.0
    jitter: float = 0.25

    def delay(self, attempts):
        # The exponent is bounded: 2 ** 1100 overflows a float, and far fewer
        # doublings than 1000 reach any cap.
        raw = min(self.cap, self.base * 2.0 ** min(max(0, attempts - 1), 1000))
        return raw * random.uniform(1 - self.jitter, 1 + self.jitter)
