"""Date-window splitting (pure): the plan behind ``concurrency=N`` and the Dask reader.

Each window is a closed range of UTC days that the API can be asked for on its own
(``start_date``/``end_date`` are inclusive), so windows never overlap and together
cover the range exactly once.
"""

from __future__ import annotations

import datetime as dt

from .._params import reject

__all__ = ["split_windows"]


def split_windows(start: dt.date, end: dt.date, n: int) -> list[tuple[dt.date, dt.date]]:
    """Split the inclusive day range ``[start, end]`` into at most ``n`` contiguous windows.

    Windows are as equal in length as days allow, in ascending order, never empty,
    never overlapping, and their union is exactly ``[start, end]``.

    Parameters
    ----------
    start, end : datetime.date
        First and last day, both included; ``start <= end``.
    n : int
        The number of windows wanted (at least 1); fewer come back when the range
        has fewer days.

    Returns
    -------
    list of (datetime.date, datetime.date)
        Inclusive ``(first_day, last_day)`` pairs.

    Examples
    --------
    >>> import datetime as dt
    >>> windows = split_windows(dt.date(2024, 1, 1), dt.date(2024, 1, 10), 3)
    >>> [(str(a), str(b)) for a, b in windows]  # doctest: +NORMALIZE_WHITESPACE
    [('2024-01-01', '2024-01-04'), ('2024-01-05', '2024-01-07'),
     ('2024-01-08', '2024-01-10')]
    """
    if start > end:
        msg = f"start {start} is after end {end}; expected start <= end"
        raise ValueError(msg)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        reject("n", n, "an int >= 1")
    days = (end - start).days + 1
    n = min(n, days)
    base, extra = divmod(days, n)
    windows = []
    first = start
    for i in range(n):
        length = base + (1 if i < extra else 0)
        last = first + dt.timedelta(days=length - 1)
        windows.append((first, last))
        first = last + dt.timedelta(days=1)
    return windows
