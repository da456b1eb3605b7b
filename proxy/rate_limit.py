"""Per-caller rate limits: one token bucket per partner.

A bucket holds up to ``burst`` requests and refills at ``rate_per_s``; a call takes
one. An empty bucket answers how long until the next request would fit, which
becomes the 429's ``Retry-After``. Buckets are created on first use and, for JWT
callers whose names come from tokens, capped in number so that a stream of invented
names cannot grow memory without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from proxy.access_config import RateLimitConfig

MAX_BUCKETS = 10_000


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> float:
        """Take one request; returns 0 when allowed, else seconds until allowed."""
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate_per_s)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate_per_s


class RateLimiter:
    """Buckets by caller name, each with the limits its config gives."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait_s(self, caller: str, limits: RateLimitConfig) -> float:
        """Charge ``caller`` one request: 0 when allowed, else seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = TokenBucket(limits.rate_per_s, limits.burst, now)
            self._buckets[caller] = bucket
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
        return bucket.take(now)
