"""A per-provider cap on token requests, as IBM sets one per tenant.

IBM Sterling Intelligent Promising allows 1,000 token requests per hour per tenant
and answers 429 beyond that. `RequestWindow` counts admitted requests over a sliding
window; a refused request does not take a slot, so a client that honours
`Retry-After` (RFC 9110 section 10.2.3) gets in as soon as the oldest admitted
request leaves the window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

__all__ = ["RequestWindow"]


class RequestWindow:
    """At most `limit` admitted requests in any `window_s` seconds of `clock`."""

    def __init__(
        self, limit: int, *, window_s: float = 3600.0, clock: Callable[[], float]
    ) -> None:
        if limit < 1:
            raise ValueError(f"a request limit must be at least 1, not {limit!r}")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._admitted: deque[float] = deque()

    def admit(self) -> int | None:
        """Admit one request and return None, or return the seconds to wait.

        The wait is rounded up to whole seconds and is at least 1, as Retry-After
        takes a whole number of seconds.
        """
        now = self._clock()
        while self._admitted and self._admitted[0] <= now - self.window_s:
            self._admitted.popleft()

        if len(self._admitted) < self.limit:
            self._admitted.append(now)
            return None
        return max(1, math.ceil(self._admitted[0] + self.window_s - now))
