"""Pure retry policy (SPEC §4): what to retry and how long to wait; no I/O, no sleeping.

The client owns the loop, the clock and the sleep; this module only decides. Waits use
exponential backoff with *equal jitter*: half of ``min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)``
is fixed and the other half is random. Full jitter (``uniform(0, d)``) spreads clients out a
little more but can draw a near-zero wait and hammer a struggling server right away; equal jitter
still de-synchronises clients while guaranteeing that every wait grows with the attempt.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random

from .._constants import BACKOFF_BASE, BACKOFF_CAP, RETRY_AFTER_CAP, RETRY_STATUSES

__all__ = ["backoff_delay", "is_retryable_status", "parse_retry_after"]

# 2**64 * BACKOFF_BASE is far beyond any cap; bounding the exponent keeps the float finite.
_MAX_EXPONENT = 64


def is_retryable_status(status: int) -> bool:
    """Tell whether an HTTP status is worth retrying (429, 500, 502, 503, 504).

    Parameters
    ----------
    status : int
        The HTTP status code.

    Returns
    -------
    bool

    Examples
    --------
    >>> is_retryable_status(503), is_retryable_status(404)
    (True, False)
    """
    return status in RETRY_STATUSES


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """Read a ``Retry-After`` header: delay seconds or an HTTP date.

    Parameters
    ----------
    value : str or None
        The header's value, or ``None`` when the response had none.
    now : datetime.datetime
        The current time, for an HTTP date (a naive `now` is taken as UTC).

    Returns
    -------
    float or None
        Seconds to wait, uncapped; ``0.0`` when it asks for no wait (0, a date in the past:
        the server says now, and the retries stay bounded by ``max_retries``); ``None`` when
        the header is missing or unreadable, so that the caller's backoff applies.

    Examples
    --------
    >>> now = dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    >>> parse_retry_after("2", now=now)
    2.0
    >>> parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now=now)
    30.0
    >>> parse_retry_after("soon", now=now) is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" in RFC 5322 means UTC, unknown origin
            when = when.replace(tzinfo=dt.UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def backoff_delay(
    attempt: int,
    *,
    retry_after: float | str | None = None,
    rng: random.Random,
    now: dt.datetime | None = None,
) -> float:
    """Return the seconds to wait before retry number ``attempt + 1``.

    Parameters
    ----------
    attempt : int
        How many retries came before this one (0 for the first retry).
    retry_after : float, str or None
        The server's wish: seconds (as `parse_retry_after` returns them) or the raw header
        (parsed with `now`). When given it wins, capped at ``RETRY_AFTER_CAP`` (120 s).
    rng : random.Random
        The source of jitter (seed it in tests).
    now : datetime.datetime, optional
        The current time, only used to parse a raw HTTP-date `retry_after`; defaults to now.

    Returns
    -------
    float
        ``d / 2 + rng.uniform(0, d / 2)`` with ``d = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)``
        (equal jitter, see the module docstring), unless the server said how long to wait.

    Raises
    ------
    ValueError
        If `attempt` is negative.

    Examples
    --------
    >>> rng = random.Random(0)
    >>> [round(backoff_delay(a, retry_after=None, rng=rng), 3) for a in range(4)]
    [0.461, 0.879, 1.421, 2.518]
    >>> backoff_delay(0, retry_after=3.0, rng=rng)
    3.0
    >>> backoff_delay(0, retry_after=3600.0, rng=rng)
    120.0
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        msg = f"attempt: {attempt!r} is not accepted; expected an int >= 0"
        raise ValueError(msg)
    if isinstance(retry_after, str):
        retry_after = parse_retry_after(retry_after, now=now or dt.datetime.now(dt.UTC))
    if retry_after is not None and math.isfinite(retry_after):
        return min(max(float(retry_after), 0.0), RETRY_AFTER_CAP)
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, _MAX_EXPONENT))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
