"""Proof that a load is complete: the records against the API's own figures (SPEC §12).

Without dates, the lifetime totals are compared, split into the account's own records (``user``)
and its customers' (``customer``); with dates, the daily figures of those days, both endpoints
together. The sums are exact integers per impact type, so one record missing, doubled or
changed shows as a difference where it belongs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .._constants import IMPACT_TYPES
from .._params import normalize_query, reject
from .._prepare import DateLike, connect
from ..client import Client
from ..loaders import load_customer_records, load_records
from ._impact import load_daily_impact, load_impact

__all__ = ["DIFFERENCE_COLUMNS", "Reconciliation", "reconcile"]

#: The columns of `Reconciliation.differences`.
DIFFERENCE_COLUMNS = ("where", "impact_type", "loaded", "reported", "difference")
#: Loads tried while the API's figures keep changing (an account in use) before giving up.
ATTEMPTS = 3
_NEEDED = ("time_utc", "impact_type", "amount")
_CUSTOMER = ("customer_id", "customer_email")


@dataclasses.dataclass(frozen=True, eq=False)
class Reconciliation:
    """The outcome of :func:`reconcile`: which sums of the records differ from the API's.

    Attributes
    ----------
    differences : pandas.DataFrame
        One row per place where the records' sum differs from the API's figure: ``where``
        (``"user"`` or ``"customer"`` for lifetime totals, the day ``"YYYY-MM-DD"`` for daily
        figures), ``impact_type``, ``loaded`` (the records' sum), ``reported`` (the API's) and
        ``difference`` (loaded minus reported); strings and ``Int64``. Empty when complete.
    basis : {"totals", "daily"}
        What was compared: lifetime totals, or the daily figures of ``start_date``..``end_date``.
    start_date, end_date : datetime.date or None
        The days compared (``None``: open).
    n_records, n_customer_records : int
        Rows of the records and customer records compared (within the days, for ``"daily"``).
    stable : bool
        The API's figures stayed the same while the records loaded (always true for records
        given as frames). False means the account changed during every try: the comparison
        may show differences that are only impacts made meanwhile.

    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> with SandboxServer(n_records=50, n_customer_records=50) as server:
    ...     result = reconcile(api_key=server.api_key, base_url=server.url)
    >>> result.ok, len(result.differences), result.basis
    (True, 0, 'totals')
    """

    differences: pd.DataFrame
    basis: str
    start_date: dt.date | None
    end_date: dt.date | None
    n_records: int
    n_customer_records: int
    stable: bool = True

    @property
    def ok(self) -> bool:
        """Whether the records match every figure the API reports (and the figures held still)."""
        return self.differences.empty and self.stable

    def _scope(self) -> str:
        if self.basis == "totals":
            return "the API's lifetime totals"
        if self.start_date and self.end_date:
            days = f"from {self.start_date} to {self.end_date}"
        elif self.start_date:
            days = f"from {self.start_date} on"
        else:
            days = f"up to {self.end_date}"
        return f"the API's daily figures {days}"

    def __str__(self) -> str:
        counted = f"{self.n_records:,} records and {self.n_customer_records:,} customer records"
        if self.differences.empty:
            lines = [f"Complete: {counted} match {self._scope()}, for every impact type."]
        else:
            n = len(self.differences)
            lines = [
                f"Incomplete: {counted} differ from {self._scope()} in {n} "
                f"place{'s' if n != 1 else ''} (difference = loaded - reported):"
            ]
            table = self.differences.to_string(index=False)
            lines += ["  " + line for line in table.splitlines()]
        if not self.stable:
            lines.append(
                f"The API's figures changed while the records loaded ({ATTEMPTS} tries): the "
                "account is in use; run it again when it is quiet."
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Reconciliation(ok={self.ok}, basis={self.basis!r}, "
            f"differences={len(self.differences)}, n_records={self.n_records}, "
            f"n_customer_records={self.n_customer_records}, stable={self.stable})"
        )


def _check_frame(value: object, name: str, *, customers: bool) -> None:
    if value is None:
        return
    loader = "load_customer_records()" if customers else "load_records()"
    accepted = f"None (load them) or a DataFrame of {loader}"
    if not isinstance(value, pd.DataFrame):
        reject(name, value, accepted, shown=f"a value of type {type(value).__name__}")
    missing = [c for c in _NEEDED if c not in value.columns]
    if customers:
        missing += [c for c in _CUSTOMER if c not in value.columns]
    if missing:
        shown = f"a DataFrame without {', '.join(missing)}"
        reject(name, value, accepted, shown=shown)
    if not customers and any(c in value.columns for c in _CUSTOMER):
        # The split of the totals is by endpoint: customer records here would count twice.
        reject(name, value, accepted, shown="a DataFrame of customer records")


def _days(frame: pd.DataFrame) -> np.ndarray:
    """Each row's UTC day as ``YYYY-MM-DD`` (any dtype backend)."""
    times = frame["time_utc"]
    moments = pd.to_datetime(times, utc=True).to_numpy(dtype="datetime64[ms]")
    return np.datetime_as_string(moments.astype("datetime64[D]"))


def _sums(frame: pd.DataFrame, by_day: bool) -> dict[tuple[str, str], int]:
    """The amount per (day or "", impact type) of a records frame, as exact integers."""
    if frame.empty:
        return {}
    keys: dict[str, Any] = {"impact_type": frame["impact_type"].astype(str).to_numpy()}
    if by_day:
        keys["day"] = _days(frame)
    grouped = pd.DataFrame({**keys, "amount": frame["amount"].astype("Int64")})
    sums = grouped.groupby(list(keys), sort=False)["amount"].sum()
    out: dict[tuple[str, str], int] = {}
    for key, value in sums.items():
        kind, day = key if by_day else (key, "")  # one key: the index holds scalars
        out[(str(day), str(kind))] = int(value)
    return out


def _in_range(frame: pd.DataFrame, start: dt.date | None, end: dt.date | None) -> pd.DataFrame:
    if frame.empty or (start is None and end is None):
        return frame
    days = _days(frame)
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= days >= start.isoformat()
    if end is not None:
        keep &= days <= end.isoformat()
    return frame.loc[keep]


def _type_order(kinds: set[str], reported: list[str]) -> list[str]:
    known = [t for t in IMPACT_TYPES if t in kinds]
    return (
        known
        + [t for t in reported if t in kinds and t not in known]
        + sorted(kinds - set(IMPACT_TYPES) - set(reported))
    )


def _frame(rows: list[tuple[str, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "where": pd.array([r[0] for r in rows], dtype="string"),
            "impact_type": pd.array([r[1] for r in rows], dtype="string"),
            "loaded": pd.array([r[2] for r in rows], dtype="Int64"),
            "reported": pd.array([r[3] for r in rows], dtype="Int64"),
            "difference": pd.array([r[2] - r[3] for r in rows], dtype="Int64"),
        }
    )


def _compare_totals(
    figures: pd.DataFrame, records: pd.DataFrame, customer_records: pd.DataFrame
) -> pd.DataFrame:
    rows = []
    for where, frame in (("user", records), ("customer", customer_records)):
        loaded = {kind: n for (_, kind), n in _sums(frame, by_day=False).items()}
        reported = {t: int(figures.loc[where, t]) for t in figures.columns}
        for kind in _type_order(set(loaded) | set(reported), list(figures.columns)):
            if loaded.get(kind, 0) != reported.get(kind, 0):
                rows.append((where, kind, loaded.get(kind, 0), reported.get(kind, 0)))
    return _frame(rows)


def _compare_daily(
    figures: pd.DataFrame, records: pd.DataFrame, customer_records: pd.DataFrame
) -> pd.DataFrame:
    loaded: dict[tuple[str, str], int] = defaultdict(int)
    for frame in (records, customer_records):
        for key, n in _sums(frame, by_day=True).items():
            loaded[key] += n
    reported: dict[tuple[str, str], int] = {}
    kinds = [c for c in figures.columns if c != "date"]
    days = np.datetime_as_string(figures["date"].to_numpy(dtype="datetime64[ms]"), unit="D")
    for kind in kinds:
        for day, n in zip(days, figures[kind].tolist(), strict=True):
            reported[(str(day), kind)] = int(n)
    order = _type_order({k for _, k in loaded} | set(kinds), kinds)
    rows = [
        (day, kind, loaded.get((day, kind), 0), reported.get((day, kind), 0))
        for day in sorted({d for d, _ in loaded} | {d for d, _ in reported})
        for kind in order
        if loaded.get((day, kind), 0) != reported.get((day, kind), 0)
    ]
    return _frame(rows)


def reconcile(
    records: pd.DataFrame | None = None,
    customer_records: pd.DataFrame | None = None,
    *,
    start_date: DateLike | None = None,
    end_date: DateLike | None = None,
    client: Client | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> Reconciliation:
    """Prove a load complete: compare the records with the API's own figures.

    Without dates, the sums per impact type of the account's own records and of its customer
    records are compared with the lifetime totals ``/v1/impact`` reports (``user_impact`` and
    ``customer_impact``); with a date, the sums per UTC day (both endpoints together) with the
    daily figures ``/v1/impact/daily`` reports for those days. Records not given are loaded
    (with the same dates); the figures are then read before and after, and the load tried
    again (up to 3 times) while they change, so an account in use is not mistaken for an
    incomplete load.

    Parameters
    ----------
    records : pandas.DataFrame, optional
        A frame of :func:`load_records` (the whole account, or at least the days compared);
        ``None`` loads it.
    customer_records : pandas.DataFrame, optional
        A frame of :func:`load_customer_records`, likewise.
    start_date, end_date : str, datetime.date, datetime.datetime or pandas.Timestamp, optional
        Compare the daily figures of these UTC days (inclusive; one may stay open). Rows of
        the given frames outside them are left out.
    client, api_key, base_url
        The connection, as for the loaders.

    Returns
    -------
    Reconciliation
        ``.ok``, ``.differences`` (where, impact type, loaded, reported, difference) and a
        readable ``str()``.

    Raises
    ------
    ValueError
        A bad argument (a frame that is not of the loader named, a bad date, start after end,
        bad connection arguments), before any request.
    APIError, ValidationError
        As for the loaders, :func:`load_impact` and :func:`load_daily_impact`.

    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> import impactframe as ifr
    >>> with SandboxServer(n_records=200, n_customer_records=200) as server:
    ...     keys = {"api_key": server.api_key, "base_url": server.url}
    ...     df = ifr.load_records(**keys)
    ...     complete = reconcile(df, **keys)
    ...     partial = reconcile(df.iloc[1:], **keys)   # one record short
    >>> complete.ok, partial.ok, partial.differences["where"].tolist()
    (True, False, ['user'])
    """
    _check_frame(records, "records", customers=False)
    _check_frame(customer_records, "customer_records", customers=True)
    query = normalize_query("records", start_date=start_date, end_date=end_date)
    start, end = query.start_date, query.end_date
    daily = start is not None or end is not None
    with connect(client, api_key, base_url) as active:

        def figures() -> pd.DataFrame:
            if daily:
                return load_daily_impact(start_date=start, end_date=end, client=active)
            return load_impact(client=active)

        def given_or(frame: pd.DataFrame | None, load: Callable[..., pd.DataFrame]) -> Any:
            if frame is not None:
                return _in_range(frame, start, end)
            return load(start_date=start, end_date=end, client=active)

        stable = True
        for attempt in range(ATTEMPTS):
            before = figures()
            users = given_or(records, load_records)
            customers = given_or(customer_records, load_customer_records)
            if records is not None and customer_records is not None:
                break  # nothing loaded: nothing could change in between
            if figures().equals(before):
                break
            stable = attempt + 1 < ATTEMPTS
    compare = _compare_daily if daily else _compare_totals
    return Reconciliation(
        differences=compare(before, users, customers),
        basis="daily" if daily else "totals",
        start_date=start,
        end_date=end,
        n_records=len(users),
        n_customer_records=len(customers),
        stable=stable,
    )
