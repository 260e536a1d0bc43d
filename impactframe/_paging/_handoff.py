"""Pages handed from the date-window walks (worker threads) to the caller, in window order.

Each window's worker appends its pages as they come; the caller reads the windows one after
the other. With a ``budget``, a worker pauses while that many pages wait (all windows counted)
or, for the window the caller is reading (the head), while that many of its own pages wait; so
at most about twice the budget waits, however long the history is. The head's worker only
ever waits for the caller to read the head's own pages, so the caller never waits on a worker
that waits on the caller; and the pool runs windows in the order submitted, so the head is
always running or finished.

The first error of any window stops every walk (``stop``) and is raised to the caller as soon
as it waits, not once it reaches that window: a later window's error must not wait for an
earlier one's retries.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..client._client import WalkAbandoned

__all__ = ["SIGNAL_POLL", "Handoff", "WindowPages"]

#: Seconds between the caller's checks for a Ctrl-C while it waits for a page.
SIGNAL_POLL = 0.1


class WindowPages:
    """One window's pages, its end, and the error that ended it early, if any."""

    def __init__(self) -> None:
        self.pages: deque[Any] = deque()
        self.done = False
        self.error: BaseException | None = None


class Handoff:
    """The pages waiting between the window walks and the caller (see the module's docstring).

    Parameters
    ----------
    stop : threading.Event
        Set when the caller stops (an error, Ctrl-C, an early stop) or a window fails: paused
        workers then end with `WalkAbandoned` instead of waiting; it is also the walks'
        ``cancel`` token, which ends their retry waits.
    budget : int or None
        Pages that may wait outside the head window; ``None``: no limit.

    Examples
    --------
    >>> handoff, window = Handoff(threading.Event(), budget=None), WindowPages()
    >>> handoff.put(window, "page 1"); handoff.put(window, "page 2"); handoff.finish(window)
    >>> list(handoff.take(window))
    ['page 1', 'page 2']
    """

    def __init__(self, stop: threading.Event, budget: int | None) -> None:
        self.stop = stop
        #: The first error of any window (it set `stop`).
        self.failure: BaseException | None = None
        self._budget = budget
        self._changed = threading.Condition()
        self._waiting = 0
        self._head: WindowPages | None = None

    def put(self, window: WindowPages, page: Any) -> None:
        """Hand over ``window``'s next page; pauses while the budget is spent."""
        with self._changed:
            while self._over_budget(window) and not self.stop.is_set():
                self._changed.wait()
            if self.stop.is_set():
                raise WalkAbandoned
            window.pages.append(page)
            self._waiting += 1
            self._changed.notify_all()

    def _over_budget(self, window: WindowPages) -> bool:
        if self._budget is None:
            return False
        if window is self._head:
            return len(window.pages) >= self._budget
        return self._waiting >= self._budget

    def finish(self, window: WindowPages, error: BaseException | None = None) -> None:
        """Mark ``window`` as walked to its end, or ended by ``error``."""
        with self._changed:
            window.done, window.error = True, error
            self._changed.notify_all()

    def fail(self, window: WindowPages, error: BaseException) -> None:
        """End ``window`` with ``error`` and stop every walk: the caller raises it next."""
        with self._changed:
            window.done, window.error = True, error
            if self.failure is None:
                self.failure = error
            self.stop.set()
            self._changed.notify_all()

    def take(self, window: WindowPages) -> Iterator[Any]:
        """Yield ``window``'s pages as they come, then raise the error that ended it, if any."""
        with self._changed:
            self._head = window
            self._changed.notify_all()  # its worker may be paused on the budget
        while True:
            with self._changed:
                while not window.pages and not window.done:
                    if self.failure is not None:
                        raise self.failure
                    # Timed: a Ctrl-C whose handler ran just before this wait (or in another
                    # thread) wakes no untimed wait; the caller's thread must see it.
                    self._changed.wait(SIGNAL_POLL)
                if not window.pages:
                    if self.failure is not None:
                        raise self.failure
                    if window.error is not None:
                        raise window.error
                    return
                page = window.pages.popleft()
                self._waiting -= 1
                self._changed.notify_all()
            yield page

    def wake(self) -> None:
        """Wake paused workers (after ``stop`` was set) so they end."""
        with self._changed:
            self._changed.notify_all()
