"""The figures of the sandbox's account: which records count, and their lifetime and daily
totals, counted once per state of the account and then adjusted change by change.

Which records count: those the loaders accept as one impact, i.e. with a ``time_utc`` that
starts with a real ``YYYY-MM-DD`` day followed by ``T``, and exactly one impact field whose
amount is an integer >= 0 (a known type, or else the record's one unknown field with such a
value, as the frame builder reads a new type). Malformed records, served on purpose to test
validation, do not count.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from typing import Any

from .._constants import IMPACT_TYPES
from ._checks import ENDPOINT_NAMES
from ._dataset import Dataset

__all__ = ["Figures", "Once", "counted"]

_FIXED_FIELDS = frozenset({"user_id", "time_utc", "category", "metadata", "customer"})
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _is_amount(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def counted(record: Mapping[str, Any]) -> tuple[str, str, int] | None:
    """``(day, impact type, amount)`` of a record that counts towards the figures, else None.

    Examples
    --------
    >>> counted({"user_id": "U1", "time_utc": "2024-05-01T10:00:00.000Z", "tree_planted": 3})
    ('2024-05-01', 'tree_planted', 3)
    >>> counted({"time_utc": "2024-05-01T10:00:00.000Z", "kelp_grown": 2}), counted({})
    (('2024-05-01', 'kelp_grown', 2), None)
    """
    time_utc = record.get("time_utc")
    if not isinstance(time_utc, str) or time_utc[10:11] != "T" or not _DAY.fullmatch(time_utc[:10]):
        return None
    try:
        dt.date.fromisoformat(time_utc[:10])
    except ValueError:
        return None
    known = [kind for kind in IMPACT_TYPES if kind in record]
    if not known:  # a new type: the one unknown field that can be an amount
        known = [k for k, v in record.items() if k not in _FIXED_FIELDS and _is_amount(v)]
    if len(known) != 1 or not _is_amount(record[known[0]]):
        return None
    return time_utc[:10], known[0], record[known[0]]


class Once:
    """A value computed on first use, once, whichever thread asks first (or given ready)."""

    def __init__(self, compute: Callable[[], Any] | None = None, value: Any = None) -> None:
        self._compute = compute
        self._value = value
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether the value exists already."""
        return self._compute is None

    def get(self) -> Any:
        if self._compute is not None:
            with self._lock:
                if self._compute is not None:
                    self._value, self._compute = self._compute(), None
        return self._value


class Figures:
    """Lifetime totals per endpoint and daily totals of the records that count (`counted`)."""

    def __init__(
        self,
        totals: dict[str, dict[str, int]],
        daily: dict[str, dict[str, int]],
        day_counts: dict[str, int],
        type_counts: dict[str, int],
    ) -> None:
        self.totals = totals  # endpoint -> impact type -> amount
        self.daily = daily  # day -> impact type -> amount (records of both endpoints)
        self._day_counts = day_counts  # day -> records counted
        self._type_counts = type_counts  # impact type -> records counted
        self._days = Once(lambda: sorted(self.daily))

    @classmethod
    def of(cls, datasets: Mapping[str, Dataset]) -> Figures:
        figures = cls({name: {} for name in ENDPOINT_NAMES}, {}, {}, {})
        for name in ENDPOINT_NAMES:
            for record in datasets[name].records():
                figures._add(record, name, 1)
        return figures

    def _add(self, record: Mapping[str, Any], endpoint: str, sign: int) -> bool:
        found = counted(record)
        if found is None:
            return False
        day, kind, amount = found
        totals = self.totals[endpoint]
        totals[kind] = totals.get(kind, 0) + sign * amount
        per_day = self.daily.setdefault(day, {})
        per_day[kind] = per_day.get(kind, 0) + sign * amount
        self._type_counts[kind] = self._type_counts.get(kind, 0) + sign
        self._day_counts[day] = self._day_counts.get(day, 0) + sign
        if not self._day_counts[day]:  # its last record was cancelled: the day is gone
            del self._day_counts[day], self.daily[day]
        return True

    def adjusted(self, record: Mapping[str, Any], endpoint: str, sign: int) -> Figures:
        """These figures with ``record`` added (``sign=1``) or taken away (``sign=-1``)."""
        found = counted(record)
        if found is None:
            return self
        day = found[0]
        daily = dict(self.daily)  # only the changed day's totals are copied, not every day's
        if day in daily:
            daily[day] = dict(daily[day])
        totals = {name: dict(values) for name, values in self.totals.items()}
        new = Figures(totals, daily, dict(self._day_counts), dict(self._type_counts))
        new._add(record, endpoint, sign)
        return new

    def types(self) -> list[str]:
        """The known types in SPEC §1 order, then the new types that some record has, sorted."""
        new = sorted(k for k, n in self._type_counts.items() if n and k not in IMPACT_TYPES)
        return [*IMPACT_TYPES, *new]

    def days(self, start: str | None, end: str | None) -> list[str]:
        """The days with a counted record, ascending, within ``start``..``end`` (inclusive)."""
        days: list[str] = self._days.get()
        lo = bisect_left(days, start) if start else 0
        hi = bisect_right(days, end) if end else len(days)
        return days[lo:hi]
