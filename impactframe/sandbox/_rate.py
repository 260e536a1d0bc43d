"""A token bucket in front of the sandbox, as an API gateway rate-limits a key (SPEC §14).

``rate`` requests per second are let through on average, with bursts of up to one second's
worth; a request beyond that is answered 429 with ``Retry-After`` (whole seconds, as gateways
send it) before it reaches the API.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from .._params import reject

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens a second, at most ``max(1, rate)`` saved up; thread-safe.

    Examples
    --------
    >>> clock = iter([0.0, 0.0, 0.0, 0.5]).__next__
    >>> bucket = TokenBucket(2, clock=clock)
    >>> bucket.take(), bucket.take(), bucket.take(), bucket.take()
    (None, None, 1, None)
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            reject("rate_limit", rate, "a number of requests per second > 0, or None")
        if not math.isfinite(rate):
            reject("rate_limit", rate, "a number of requests per second > 0, or None")
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate)
        self._clock = clock
        self._tokens = self.capacity
        self._last: float | None = None
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """Take a token: ``None`` when there was one, else the ``Retry-After`` in seconds."""
        with self._lock:
            now = self._clock()
            if self._last is not None:
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return None
            return max(1, math.ceil((1 - self._tokens) / self.rate))
