"""The one ``time_utc`` format (SPEC §1): its pattern, its value in milliseconds, its problems.

A leaf: the page checks of `_paging` and the frame readers share it, so both accept exactly
the same timestamps. The API sends ``YYYY-MM-DDTHH:MM:SS.sssZ``; ``+00:00`` for ``Z`` and
trailing zeros past the milliseconds are accepted too (they lose nothing).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["TIME_EXAMPLE", "TIME_PATTERN", "canonical_time", "time_problem", "time_to_ms"]

#: The accepted shape, for Arrow's and re's matchers alike.
TIME_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,3}0{0,6})?(Z|\+00:00)$"
)
TIME_EXAMPLE: Final = "2024-09-16T20:30:13.391Z"

_ACCEPTED: Final = re.compile(TIME_PATTERN)
# The same shape with any fraction, to explain a rejected timestamp.
_PARTS: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:Z|\+00:00)"
)
_CANONICAL: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _moment(text: str) -> datetime | None:
    if not isinstance(text, str) or _ACCEPTED.match(text) is None:
        return None
    match = _PARTS.fullmatch(text)
    if match is None:  # pragma: no cover - _ACCEPTED is narrower than _PARTS
        return None
    try:
        year, month, day, hour, minute, second = (int(match[k]) for k in range(1, 7))
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    return moment + timedelta(milliseconds=int((match[7] or "0")[:3].ljust(3, "0")))


def time_to_ms(text: str) -> int | None:
    """Milliseconds since 1970 of an accepted ``time_utc``, or ``None`` if it is not accepted.

    Examples
    --------
    >>> time_to_ms("1970-01-01T00:00:01.500Z"), time_to_ms("1970-01-01T00:00:01.5+00:00")
    (1500, 1500)
    >>> time_to_ms("2024-02-30T00:00:00Z") is None
    True
    """
    moment = _moment(text)
    return None if moment is None else (moment - _EPOCH) // _MS


def canonical_time(text: str) -> str | None:
    """``text`` as ``YYYY-MM-DDTHH:MM:SS.sssZ``, which sorts as time does; ``None`` if its
    shape is not accepted.

    The API's own form comes back as it is, checked by shape only (the fast path of the page
    checks; an impossible date such as February 30 is the frame readers' to refuse).

    Examples
    --------
    >>> canonical_time("2024-09-16T20:30:13Z"), canonical_time("2024-09-16")
    ('2024-09-16T20:30:13.000Z', None)
    """
    if _CANONICAL.fullmatch(text) is not None:
        return text
    moment = _moment(text)
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def time_problem(text: str) -> str | None:
    """Why ``text`` is not an accepted ``time_utc``, or ``None`` (for messages).

    Examples
    --------
    >>> time_problem("2024-02-30T00:00:00Z")
    "'2024-02-30T00:00:00Z' is not a real date and time"
    >>> time_problem("2024-09-16T20:30:13.391Z") is None
    True
    """
    match = _PARTS.fullmatch(text)
    if match is None:
        return f"{_short(text)} is not an ISO 8601 UTC timestamp like {TIME_EXAMPLE!r}"
    if (match[7] or "")[3:].strip("0"):
        return f"{_short(text)} has sub-millisecond digits; the API's precision is milliseconds"
    if _moment(text) is None:
        return f"{_short(text)} is not a real date and time"
    return None
