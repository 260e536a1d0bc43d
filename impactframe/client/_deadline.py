"""A total deadline per HTTP exchange, enforced by cutting the socket when it passes.

``timeout`` bounds the connection and *each read*: a server that sends one byte every half second
never trips it, while a status line, a header or a body drips on for hours. No socket option
bounds a whole exchange, and a read blocked in ``recv`` cannot be interrupted from its own
thread, so one daemon thread (`Watchdog`) keeps the armed deadlines in a heap and, when one
passes, shuts down the socket of that exchange: the blocked read returns at once and the client
reports the deadline (`Deadline.expired`), never a truncated body.

Which socket? The connection classes of `DeadlineAdapter` (mounted on the client's own session)
attach theirs just before the status line is read, so the status line and headers are covered
too; on a caller's own session the socket is attached once the headers are in, so the deadline
covers the body there.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = [
    "WATCHDOG",
    "Deadline",
    "DeadlineAdapter",
    "attach_socket",
    "leave_signals_to_main",
    "watching",
]

#: Signals that Python handles in the main thread (Ctrl-C, a polite kill).
_MAIN_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)
)


def leave_signals_to_main() -> None:
    """Block Ctrl-C and SIGTERM in the calling thread (the first thing each thread impactframe
    starts does), so that the kernel delivers them to the main thread.

    Linux hands a process-directed signal to any thread that does not block it. Delivered to
    a worker, Python's handler only sets a flag, and a main thread blocked in a socket read
    (the first page of a walk) sleeps on until the read times out: Ctrl-C then seemed to hang
    for the whole ``timeout``. Delivered to the main thread, the read returns at once (EINTR)
    and `KeyboardInterrupt` is raised there. No-op where threads have no signal mask.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _MAIN_SIGNALS)


class Deadline:
    """One exchange's time limit: `expired` once it passed, and the socket it cut, if any."""

    __slots__ = ("_lock", "_sock", "at", "done", "expired", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self.done = False
        self._sock: Any = None
        self._lock = threading.Lock()

    def attach(self, sock: Any) -> None:
        """The socket to cut when the deadline passes (at once if it passed already)."""
        with self._lock:
            if self.done:
                return
            self._sock = sock
            if self.expired:
                _cut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            if self._sock is not None:
                _cut(self._sock)

    def _finish(self) -> bool:
        with self._lock:
            self.done = True
            self._sock = None
            return self.expired


def _cut(sock: Any) -> None:
    # The plain socket's shutdown, also for an SSLSocket: its own drops the SSL object under a
    # read that another thread is in. A blocked recv then returns end-of-file.
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """One daemon thread that expires `Deadline` objects on time (started on first use)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child has no thread

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._finished = 0  # heap entries whose exchange ended (dropped lazily)
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> Deadline:
        """Start a deadline of `seconds` for the exchange about to begin."""
        deadline = Deadline(seconds)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="impactframe-deadline", daemon=True
                )
                self._thread.start()
            wake = not self._heap or deadline.at < self._heap[0][0]
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if wake:
                self._cond.notify()
        return deadline

    def disarm(self, deadline: Deadline) -> bool:
        """End the exchange's deadline; True if it had passed (its outcome is not to be used).

        Idempotent: a second call only repeats the answer.
        """
        if deadline.done:
            return deadline.expired
        expired = deadline._finish()
        with self._cond:
            self._finished += 1
            if self._finished > 1024 and self._finished * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._finished = 0
        return expired

    def _run(self) -> None:
        leave_signals_to_main()
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if deadline.done:
                    self._finished = max(self._finished - 1, 0)
                    continue
            deadline._expire()


WATCHDOG = Watchdog()

_current = threading.local()  # .deadline: the exchange this thread is in, if any


@contextlib.contextmanager
def watching(deadline: Deadline) -> Iterator[None]:
    """While inside, connections opened by `DeadlineAdapter` in this thread attach to it."""
    _current.deadline = deadline
    try:
        yield
    finally:
        _current.deadline = None


def attach_socket(sock: Any) -> None:
    """Attach ``sock`` to this thread's current deadline, if there is one."""
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.attach(sock)


class _Connection(HTTPConnection):
    def getresponse(self) -> Any:  # type: ignore[override]
        attach_socket(self.sock)  # before the status line: a dripped header is cut too
        return super().getresponse()


class _TLSConnection(HTTPSConnection):
    def getresponse(self) -> Any:  # type: ignore[override]
        attach_socket(self.sock)
        return super().getresponse()


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class DeadlineAdapter(HTTPAdapter):
    """`HTTPAdapter` whose connections attach their socket to the current `Deadline`.

    Everything else (pooling, TLS, proxies, retries) is ``HTTPAdapter``'s.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme"):  # not SOCKS: its pools are its own
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager
