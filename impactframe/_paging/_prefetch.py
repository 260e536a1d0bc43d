"""One cursor chain read ahead of the caller by a background thread (``concurrency=1``).

The thread waits on the network while the caller converts; stopping early sets the chain's
``cancel`` event, which ends the thread after its request in flight, or at once from a retry
wait.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..client._client import WalkAbandoned
from ..client._deadline import leave_signals_to_main
from ._handoff import SIGNAL_POLL
from ._pages import Page

__all__ = ["prefetch_pages"]


def prefetch_pages(make: Callable[[threading.Event], Iterator[Page]], depth: int) -> Iterator[Page]:
    """Yield from ``make(cancel)``, which a background thread reads up to ``depth`` pages ahead.

    The thread does the waiting on the network while the caller converts; its exceptions are
    raised here, after the pages it got before them. Stopping early sets ``cancel``: the thread
    stops after the request it is in, or at once from a retry wait.
    """
    items: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    pages = make(stop)

    def hand(ok: bool, item: object) -> None:
        while not stop.is_set():
            try:
                items.put((ok, item), timeout=0.05)
                return
            except queue.Full:
                continue

    def work() -> None:
        leave_signals_to_main()
        try:
            for page in pages:
                hand(True, page)
                if stop.is_set():
                    return
        except WalkAbandoned:
            return
        except BaseException as exc:  # handed to the caller, which raises it
            hand(False, exc)
        else:
            hand(False, None)

    thread = threading.Thread(target=work, name="impactframe-fetch", daemon=True)
    thread.start()
    try:
        while True:
            try:
                # Timed, so that a Ctrl-C is seen: a signal whose handler ran just before an
                # untimed get (or in another thread) would leave the caller blocked for good.
                ok, item = items.get(timeout=SIGNAL_POLL)
            except queue.Empty:
                continue
            if ok:
                yield item
            elif item is None:
                return
            else:
                raise item
    finally:
        stop.set()
