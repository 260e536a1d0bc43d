"""How many window walks may have a request in flight, and how fast they may send (SPEC §14).

Two controls, both adapted to the API. The chain count (AIMD): it starts at two and doubles
with each run of successes as long as itself (slow start), up to the ceiling; a 429 halves it
(at most once per wait it asks for), and after that each run of successes as long as the
limit grows it back by one. The pace (`Pace`): none until the first 429; from then on requests
are spaced at just under the rate the API was seen to accept, and the pace creeps up (10 % a
second while it is what holds the requests back) until the next 429 sets it again. Every new
request, and the retry of a refused one, waits until the ``Retry-After`` has passed; the
retries of one burst of 429s leave one after the other at the pace, not all at once. So a rate
limited API sees about as many requests as it accepts, and an unlimited one all the chains
asked for.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from ..client._client import WalkAbandoned

__all__ = ["Gate", "Pace"]

#: Chains in flight at first: slow start finds the API's limit without a burst of 429s.
FIRST_CHAINS = 2


class Pace:
    """The request rate after a 429: a pure object, the time given by the caller.

    On a 429, the API is taken to accept the smaller of the successes of the last `window`
    seconds and the success rate since the previous 429 (a gateway's saved-up burst inflates
    the first, not the second); the pace becomes `backoff` times that. Each success while the
    pace is what spaces the requests adds `growth` requests per second (so it grows by
    ``growth`` of itself per second), at most 2 % of the pace: it probes for more, slowly.

    Parameters
    ----------
    window : float
        Seconds of successes counted for the API's rate.
    backoff : float
        The share of the rate seen that the pace is set to after a 429.
    growth : float
        Requests per second added per success while paced.

    Examples
    --------
    >>> pace = Pace()
    >>> for t in (0.0, 0.1, 0.2, 0.3): pace.sent(t); pace.succeeded(t)
    >>> pace.refused(0.4); round(pace.rate, 2)  # 4 accepted within the last second
    3.4
    >>> [round(pace.due(0.4), 3), round(pace.retry_at(0.4, 1.0), 3), round(pace.due(1.4), 3)]
    [0.4, 1.4, 1.694]
    """

    def __init__(self, window: float = 1.0, backoff: float = 0.85, growth: float = 0.1) -> None:
        self.window = window
        self.backoff = backoff
        self.growth = growth
        #: Requests per second; ``None``: not paced (no 429 yet).
        self.rate: float | None = None
        self._next = 0.0  # the earliest time the next request may leave
        self._recent: deque[float] = deque()  # success times within `window`
        self._since: float | None = None  # the first request, then the last 429
        self._since_successes = 0
        self._binding = False  # whether the last request left when the pace let it

    def due(self, now: float) -> float:
        """When the next request may leave (``now`` or later)."""
        return now if self.rate is None else max(now, self._next)

    def sent(self, now: float) -> None:
        """A request leaves at ``now``."""
        if self._since is None:
            self._since = now
        if self.rate is None:
            return
        gap = 1.0 / self.rate
        self._binding = now - self._next < gap  # it left (about) as soon as it was let
        self._next = max(now, self._next) + gap

    def succeeded(self, now: float) -> None:
        """A request was answered without a 429."""
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()
        self._since_successes += 1
        if self.rate is not None and self._binding:
            # At most 2 % a success: at a low rate, probing must still take many requests.
            self.rate += min(self.growth, 0.02 * self.rate)

    def refused(self, now: float) -> None:
        """The first 429 of a burst came at ``now``: pace below the rate the API accepted."""
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()
        seen = max(1, len(self._recent)) / self.window
        since = self._since if self._since is not None else now
        if now - since > self.window:
            seen = min(seen, self._since_successes / (now - since))
        if self.rate is not None:
            seen = min(seen, self.rate)
        self.rate = max(self.backoff * seen, 1.0 / (4 * self.window))
        self._since, self._since_successes = now, 0

    def retry_at(self, now: float, delay: float) -> float:
        """The time the retry of a refused request may leave: after ``delay``, at the pace."""
        at = max(now + delay, self._next)
        if self.rate is not None:
            self._next = at + 1.0 / self.rate
        return at


class Gate:
    """Requests in flight across the window walks of one call, and their pace.

    Parameters
    ----------
    ceiling : int
        The most requests in flight (the ``concurrency`` asked for).
    clock : callable
        Seconds, monotonic (tests may swap it).
    cancel : threading.Event, optional
        Ends the wait of a retry for its place in the pace (the walks' stop event).
    sleep : callable
        That wait without ``cancel`` (tests may swap it).

    Examples
    --------
    >>> gate = Gate(8)
    >>> gate.limit
    2
    >>> gate.succeeded(); gate.succeeded(); gate.limit  # slow start: doubled
    4
    >>> gate.throttled(429, 0.0); gate.limit
    2
    >>> gate.succeeded(); gate.succeeded(); gate.limit  # after a 429: one more
    3
    """

    def __init__(
        self,
        ceiling: int,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.ceiling = ceiling
        self.limit = min(ceiling, FIRST_CHAINS)
        self.pace = Pace()
        self._clock = clock
        self._cancel = cancel
        self._sleep = sleep
        self._changed = threading.Condition()
        self._active = 0
        self._successes = 0
        self._slow_start = True
        self._hold_until = 0.0
        #: Counts for logs and benchmarks: requests let through, 429s heard.
        self.requests = 0
        self.throttles = 0

    def wait(self, now: float) -> float:
        """Seconds before a new request may leave (``math.inf`` while every place is taken).

        This and `enter`, `leave`, `answered` and `refused` are the gate's rules without its
        lock or waits (the caller holds the lock; tests drive them with a clock of their own).
        """
        if self._active >= self.limit:
            return math.inf
        return max(0.0, self._hold_until - now, self.pace.due(now) - now)

    def enter(self, now: float) -> None:
        """A request leaves at ``now`` (after `wait` said 0)."""
        self.pace.sent(now)
        self._active += 1
        self.requests += 1

    def leave(self) -> None:
        """A request (and its retries) is done."""
        self._active -= 1

    def answered(self, now: float) -> None:
        """One request answered without a 429: the limit doubles (slow start) or grows by one."""
        self.pace.succeeded(now)
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.ceiling:
            grown = 2 * self.limit if self._slow_start else self.limit + 1
            self.limit = min(self.ceiling, grown)
            self._successes = 0

    def refused(self, now: float, delay: float) -> float:
        """A 429 at ``now`` asked for ``delay`` s; returns how much longer its retry must wait
        (its place in the pace, behind the other retries of the burst)."""
        self.throttles += 1
        if now >= self._hold_until:  # once per wait: 429s of one burst halve it once
            self.limit = max(1, self.limit // 2)
            self._successes = 0
            self._slow_start = False
            self.pace.refused(now)
        self._hold_until = max(self._hold_until, now + delay)
        return self.pace.retry_at(now, delay) - (now + delay)

    @contextlib.contextmanager
    def slot(self, cancel: threading.Event) -> Iterator[None]:
        """Hold one of the `limit` places for a request; `WalkAbandoned` once ``cancel`` is set."""
        with self._changed:
            while True:
                if cancel.is_set():
                    raise WalkAbandoned
                now = self._clock()
                wait = self.wait(now)
                if wait <= 0:
                    break
                self._changed.wait(timeout=min(max(wait, 0.005), 0.5))
            self.enter(now)
        try:
            yield
        finally:
            with self._changed:
                self.leave()
                self._changed.notify_all()

    def succeeded(self) -> None:
        """One request answered without a 429 (`answered`)."""
        with self._changed:
            self.answered(self._clock())
            self._changed.notify_all()

    def throttled(self, status: int | None, delay: float) -> None:
        """A retry is about to wait ``delay`` seconds (``status``: 429, 5xx or ``None``).

        After a 429 this returns when the retry, once ``delay`` has passed, leaves at the pace.
        """
        if status != 429:
            return
        with self._changed:
            extra = self.refused(self._clock(), delay)
        if extra > 0:
            if self._cancel is not None:
                self._cancel.wait(extra)  # once set, the client's own wait ends the walk
            else:
                self._sleep(extra)
