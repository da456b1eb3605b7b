"""How often a token endpoint may be asked: back-off after failures, and a budget.

Both exist to protect the identity provider. Back-off spaces attempts after a failure
(exponential, with jitter so that many proxies do not retry in step, and never
sooner than the provider's Retry-After). The budget caps requests in any sliding
hour, whatever the reason for them.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_MAX_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with equal jitter, never shorter than a Retry-After."""

    initial_s: float
    max_s: float

    def delay_s(self, failures: int, retry_after_s: float | None = None) -> float:
        ceiling: float = min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, _MAX_RETRY_AFTER_S))
        return delay


class TokenBudget:
    """At most ``per_hour`` token requests in any sliding hour.

    A guard against a misconfiguration or a storm of 401s pushing the provider past
    its quota (IBM's is 1,000 per hour per tenant, shared by every client).
    """

    WINDOW_S = 3600.0

    def __init__(self, per_hour: int | None, clock: Callable[[], float]) -> None:
        self.per_hour = per_hour
        self._clock = clock
        self._sent: deque[float] = deque()

    def used(self) -> int:
        horizon = self._clock() - self.WINDOW_S
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()
        return len(self._sent)

    def wait_s(self) -> float:
        """Seconds until a request may be sent; 0 when one may be sent now."""
        if self.per_hour is None or self.used() < self.per_hour:
            return 0.0
        return self._sent[0] + self.WINDOW_S - self._clock()

    def remaining(self) -> int | None:
        """Requests left in the sliding hour, or None without a budget."""
        return None if self.per_hour is None else self.per_hour - self.used()

    def spend(self) -> None:
        self._sent.append(self._clock())
