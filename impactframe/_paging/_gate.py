"""How many window walks may have a request in flight: adapted to the API, AIMD style (SPEC §14).

A 429 halves the parallelism (at most once per wait it asks for) and holds every new request
until its ``Retry-After`` has passed; each run of successes as long as the current limit
grows it back by one, up to the ceiling. So a rate-limited API sees about as many requests
as it accepts, and an unlimited one all the chains asked for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from ..client._client import WalkAbandoned

__all__ = ["Gate"]


class Gate:
    """Requests in flight across the window walks of one call.

    Parameters
    ----------
    ceiling : int
        The most requests in flight (the ``concurrency`` asked for).
    clock : callable
        Seconds, monotonic (tests may swap it).

    Examples
    --------
    >>> gate = Gate(8)
    >>> gate.throttled(429, 0.0); gate.limit
    4
    >>> for _ in range(4): gate.succeeded()
    >>> gate.limit
    5
    """

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self._clock = clock
        self._changed = threading.Condition()
        self._active = 0
        self._successes = 0
        self._hold_until = 0.0
        #: Counts for logs and benchmarks: requests let through, 429s heard.
        self.requests = 0
        self.throttles = 0

    @contextlib.contextmanager
    def slot(self, cancel: threading.Event) -> Iterator[None]:
        """Hold one of the `limit` places for a request; `WalkAbandoned` once ``cancel`` is set."""
        with self._changed:
            while True:
                if cancel.is_set():
                    raise WalkAbandoned
                wait = self._hold_until - self._clock()
                if wait <= 0 and self._active < self.limit:
                    break
                self._changed.wait(timeout=min(max(wait, 0.01), 0.5))
            self._active += 1
            self.requests += 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                self._changed.notify_all()

    def succeeded(self) -> None:
        """One request answered without a 429: additive increase."""
        with self._changed:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.ceiling:
                self.limit += 1
                self._successes = 0
                self._changed.notify_all()

    def throttled(self, status: int | None, delay: float) -> None:
        """A retry is about to wait ``delay`` seconds (``status``: 429, 5xx or ``None``)."""
        if status != 429:
            return
        with self._changed:
            self.throttles += 1
            now = self._clock()
            if now >= self._hold_until:  # once per wait: 429s of one burst halve it once
                self.limit = max(1, self.limit // 2)
                self._successes = 0
            self._hold_until = max(self._hold_until, now + delay)
