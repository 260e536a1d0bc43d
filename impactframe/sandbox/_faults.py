"""Faults the sandbox can inject: what each one is, and which request gets which (SPEC §5).

A :class:`Fault` is a plain value. :class:`FaultPlan` hands faults to requests: first the queue
filled by ``SandboxServer.inject`` (in the order injected), then, when nothing queued matches,
the seeded rate mode (``fault_rate``/``fault_kinds``/``fault_seed``). Both are deterministic for a
given order of requests.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import random
import threading
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass
from http import HTTPStatus

from .._params import check_choice, reject

__all__ = ["FAULT_KINDS", "RATE_FAULT_KINDS", "Fault", "FaultPlan"]

#: Kinds of :class:`Fault`.
FAULT_KINDS = ("status", "drop", "truncate", "latency", "repeat")
#: Kinds accepted by the rate mode (``SandboxServer(fault_kinds=...)``).
RATE_FAULT_KINDS = ("429", "500", "502", "503", "504", "drop", "truncate", "repeat")
#: The Retry-After of a rate-mode 429: zero, so soak tests retrying at full speed stay fast.
RATE_RETRY_AFTER = "0"
_RETRY_AFTER_ACCEPTED = "seconds >= 0, an HTTP date string or a timezone-aware datetime"


@dataclass(frozen=True)
class Fault:
    """A fault to inject into the sandbox's answers.

    Parameters
    ----------
    kind : {"status", "drop", "truncate", "latency", "repeat"}
        ``"status"``: answer ``status`` with a JSON error body ``{"type", "message"}`` (type
        ``rate_limit_error`` for 429, ``server_error`` for 5xx, ``key_error`` for 401/403,
        ``validation_error`` for 400, ``not_found`` for 404, else ``api_error``), before
        authentication or parameter checks, like a gateway in front of the API.
        ``"drop"``: close the connection without sending anything (also before any check).
        ``"truncate"``: process the request normally, send the full ``Content-Length`` header but
        only the first half of the body, then close the connection.
        ``"latency"``: sleep ``delay`` seconds, then answer normally; it combines with one other
        fault.
        ``"repeat"``: the page starts again with the record the cursor points at (the previous
        page's last record), so that record appears twice across the page boundary. It only
        matches requests that carry a ``cursor``.
    status : int, default 500
        HTTP status of a ``"status"`` fault, 200–599; below 400 a ``body`` is required.
    retry_after : str, int, float or datetime.datetime, optional
        ``Retry-After`` header of a ``"status"`` fault: seconds, or an HTTP date (a string as
        sent, or an aware datetime, formatted as an HTTP date).
    delay : float, default 0.0
        Seconds to sleep, for ``"latency"``.
    body : str or bytes, optional
        Replace the JSON error body of a ``"status"`` fault, e.g. an HTML gateway page or a
        malformed page (sent as ``application/json`` if it parses as JSON, else ``text/html``).

    Raises
    ------
    ValueError
        An unknown kind or an out-of-range argument.

    Examples
    --------
    >>> Fault("status", status=429, retry_after=2).retry_after
    '2'
    >>> Fault("latency", delay=0.05).kind
    'latency'
    """

    kind: str
    _: KW_ONLY
    status: int = 500
    #: Normalised to the header's text (or None).
    retry_after: str | int | float | dt.datetime | None = None
    delay: float = 0.0
    #: Normalised to bytes (or None).
    body: str | bytes | None = None

    def __post_init__(self) -> None:
        check_choice(self.kind, "kind", FAULT_KINDS)
        status = self.status
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            reject("status", status, "an int HTTP status between 200 and 599")
        if self.kind == "status" and status < 400 and self.body is None:
            reject(
                "body", None, f"a str or bytes: a status fault below 400 ({status}) needs a body"
            )
        delay = self.delay
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not (math.isfinite(delay) and delay >= 0)
        ):
            reject("delay", delay, "a finite number of seconds >= 0")
        object.__setattr__(self, "retry_after", _retry_after_text(self.retry_after))
        body = self.body
        if isinstance(body, str):
            object.__setattr__(self, "body", body.encode())
        elif body is not None and not isinstance(body, bytes):
            reject(
                "body", body, "a str, bytes or None", shown=f"a value of type {type(body).__name__}"
            )

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The status, extra headers and body a ``"status"`` fault answers with.

        Examples
        --------
        >>> status, headers, body = Fault("status", status=429, retry_after="2").response()
        >>> status, headers["Retry-After"], body[:28]
        (429, '2', b'{"type": "rate_limit_error",')
        """
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if isinstance(self.body, bytes):
            headers["Content-Type"] = _content_type(self.body)
            return self.status, headers, self.body
        headers["Content-Type"] = "application/json"
        error_type = _ERROR_TYPES.get(
            self.status, "server_error" if self.status >= 500 else "api_error"
        )
        phrase = HTTPStatus(self.status).phrase if self.status in _KNOWN_STATUSES else "Error"
        return self.status, headers, _error_body(error_type, f"{phrase} (injected by the sandbox)")


_KNOWN_STATUSES = frozenset(s.value for s in HTTPStatus)
_ERROR_TYPES = {
    400: "validation_error",
    401: "key_error",
    403: "key_error",
    404: "not_found",
    429: "rate_limit_error",
}


def _content_type(body: bytes) -> str:
    try:
        json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        return "text/html; charset=utf-8"
    except RecursionError:  # nested deeper than Python's parser goes: still JSON
        return "application/json"
    return "application/json"


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"type": error_type, "message": message}).encode()


def _retry_after_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        if value is not None and (not value or value != value.strip()):
            reject("retry_after", value, _RETRY_AFTER_ACCEPTED)
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            reject("retry_after", value, _RETRY_AFTER_ACCEPTED)
        return email.utils.format_datetime(value.astimezone(dt.UTC), usegmt=True)
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return str(int(value)) if float(value).is_integer() else str(value)
    reject("retry_after", value, _RETRY_AFTER_ACCEPTED)


def rate_fault(kind: str) -> Fault:
    """The fault a rate-mode kind stands for (a 429 carries ``Retry-After: 0``)."""
    if kind == "429":
        return Fault("status", status=429, retry_after=RATE_RETRY_AFTER)
    if kind.isdigit():
        return Fault("status", status=int(kind))
    return Fault(kind)


def check_rate_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """Validate ``fault_kinds`` (a non-string iterable of :data:`RATE_FAULT_KINDS`)."""
    if isinstance(kinds, str | bytes):
        accepted = f"a sequence (not a string) of some of {', '.join(RATE_FAULT_KINDS)}"
        reject("fault_kinds", kinds, accepted)
    out = tuple(kinds)
    for kind in out:
        if kind not in RATE_FAULT_KINDS:
            reject("fault_kinds", kind, f"only kinds from {', '.join(RATE_FAULT_KINDS)}")
    return out


@dataclass
class _Queued:
    fault: Fault
    remaining: int | None
    path: str | None


class FaultPlan:
    """Which fault, if any, each request gets; thread-safe.

    Parameters
    ----------
    rate : float
        Probability that a request without a queued fault gets a rate-mode fault.
    kinds : tuple of str
        Rate-mode kinds (:data:`RATE_FAULT_KINDS`), picked uniformly.
    seed : int
        Seed of the rate mode's generator.

    Examples
    --------
    >>> plan = FaultPlan(0.0, (), 0)
    >>> plan.add(Fault("drop"), times=1, path=None)
    >>> [f.kind for f in plan.take("/v1/records", has_cursor=False)], plan.take("/", False)
    (['drop'], [])
    """

    def __init__(self, rate: float, kinds: tuple[str, ...], seed: int) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Queued] = []
        self._rate = rate
        self._kinds = kinds
        self._rng = random.Random(seed)

    def add(self, fault: Fault, *, times: int | None, path: str | None) -> None:
        """Queue ``fault`` for the next ``times`` matching requests (``None``: forever)."""
        with self._lock:
            self._queue.append(_Queued(fault, times, path))

    def clear(self) -> None:
        """Forget every queued fault (the rate mode stays)."""
        with self._lock:
            self._queue.clear()

    def take(self, path: str, has_cursor: bool) -> list[Fault]:
        """The faults for one request: at most one latency fault, then at most one other."""
        with self._lock:
            chosen = [
                entry
                for entry in (
                    self._first(path, has_cursor, latency=True),
                    self._first(path, has_cursor, latency=False),
                )
                if entry is not None
            ]
            for entry in chosen:
                if entry.remaining is not None:
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._queue.remove(entry)
            faults = [entry.fault for entry in chosen]
            intercepted = any(f.kind != "latency" for f in faults)
            if self._rate and not intercepted and self._rng.random() < self._rate:
                kind = self._kinds[int(self._rng.random() * len(self._kinds))]
                if kind != "repeat" or has_cursor:
                    faults.append(rate_fault(kind))
            return faults

    def _first(self, path: str, has_cursor: bool, *, latency: bool) -> _Queued | None:
        for entry in self._queue:
            kind = entry.fault.kind
            if (kind == "latency") != latency or (entry.path is not None and entry.path != path):
                continue
            if kind == "repeat" and not has_cursor:
                continue
            return entry
        return None
