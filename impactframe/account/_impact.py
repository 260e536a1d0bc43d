"""The account's own figures as frames: lifetime totals (`load_impact`) and daily totals
(`load_daily_impact`), from ``/v1/impact`` and ``/v1/impact/daily``.

The bodies are checked as strictly as record pages (SPEC §3, §4): an amount that is not a
non-negative integer, a missing split, a day outside the requested range or reported twice is a
``ValidationError`` naming the field; an unknown field that holds an amount is a new impact type
(kept, with a ``SchemaDriftWarning``), any other unknown field is named in a warning.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._constants import IMPACT_TYPES
from .._frame._python_reader import _amount_problem
from .._params import normalize_query
from .._prepare import DateLike, connect
from .._warn import warn_at_caller
from ..client import Client
from ..errors import SchemaDriftWarning, ValidationError
from ._schema import AMOUNT_DTYPE, DATE_DTYPE, validate_daily

__all__ = ["SCOPES", "daily_frame", "impact_frame", "load_daily_impact", "load_impact"]

IMPACT_PATH = "/v1/impact"
DAILY_PATH = "/v1/impact/daily"
#: The rows of `load_impact`: the account's own impact, its customers', and both.
SCOPES = ("user", "customer", "total")
_SPLITS = {"user": "user_impact", "customer": "customer_impact"}
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _amounts(fields: Mapping[str, Any], where: str, skip: tuple[str, ...]) -> dict[str, int]:
    """The amount of each impact type in one object of a body; other fields are warned about."""
    amounts: dict[str, int] = {}
    for name, value in fields.items():
        if name in skip:
            continue
        problem = _amount_problem(value)
        field = f"{where}.{name}" if where else name
        if name in IMPACT_TYPES and problem is not None:
            msg = f"{field}: the amount {problem}"
            raise ValidationError(msg, field=field, record=_short(dict(fields)))
        if problem is None:
            amounts[name] = value  # a known type, or a new one (warned once, by the caller)
        else:
            msg = (
                f"unknown field {field!r} = {_short(value)} in the response: neither an impact "
                "type (not an integer amount) nor part of the frame"
            )
            warn_at_caller(msg, SchemaDriftWarning)
    return amounts


def _types(found: list[dict[str, int]], endpoint: str) -> list[str]:
    """The known impact types, then the new ones in the order first seen (each warned once)."""
    new = [
        t for t in dict.fromkeys(k for amounts in found for k in amounts) if t not in IMPACT_TYPES
    ]
    for name in new:
        msg = (
            f"{endpoint}: unknown impact type {name!r}, kept as an Int64 column {name!r} "
            "after the known types"
        )
        warn_at_caller(msg, SchemaDriftWarning)
    return [*IMPACT_TYPES, *new]


def _object(body: object, field: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        msg = f"{field}: expected a JSON object, got {type(body).__name__} {_short(body)}"
        raise ValidationError(msg, field=field)
    return body


def _user_id(body: dict[str, Any]) -> str | None:
    user_id = body.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        msg = f"user_id: expected a string, got {type(user_id).__name__} {_short(user_id)}"
        raise ValidationError(msg, field="user_id")
    return user_id


def impact_frame(body: object) -> pd.DataFrame:
    """The frame of `load_impact` from a decoded ``/v1/impact`` body (pure; checks it).

    A type missing from a split is 0 there (as the official SDK reads it); a type missing from
    the top level is the sum of its splits.

    Examples
    --------
    >>> frame = impact_frame({"user_id": "U1", "tree_planted": 5,
    ...                       "user_impact": {"tree_planted": 2},
    ...                       "customer_impact": {"tree_planted": 3}})
    >>> frame["tree_planted"].tolist(), frame.index.tolist()
    ([2, 3, 5], ['user', 'customer', 'total'])
    """
    fields = _object(body, "response body")
    user_id = _user_id(fields)
    rows: dict[str, dict[str, int]] = {}
    for scope, name in _SPLITS.items():
        if name not in fields:
            msg = f"{name}: missing from the response body (fields: {sorted(fields)!r})"
            raise ValidationError(msg, field=name)
        rows[scope] = _amounts(_object(fields[name], name), name, ())
    top = _amounts(fields, "", ("user_id", *_SPLITS.values()))
    types = _types([top, rows["user"], rows["customer"]], "impact")
    rows["total"] = {
        t: top.get(t, rows["user"].get(t, 0) + rows["customer"].get(t, 0)) for t in types
    }
    frame = pd.DataFrame(
        {t: pd.array([rows[s].get(t, 0) for s in SCOPES], dtype=AMOUNT_DTYPE) for t in types},
        index=pd.Index(SCOPES, name="scope"),
    )
    frame.columns.name = "impact_type"
    frame.attrs["user_id"] = user_id
    return frame


def daily_frame(
    body: object, start: dt.date | None = None, end: dt.date | None = None
) -> pd.DataFrame:
    """The frame of `load_daily_impact` from a decoded ``/v1/impact/daily`` body (pure).

    Every day must be a real ``YYYY-MM-DD`` within ``start``..``end`` (the API is not trusted
    to have applied the range) and reported once; rows come sorted by day. A type missing from a
    day is 0 there.

    Examples
    --------
    >>> frame = daily_frame({"user_id": "U1", "daily_impact": [
    ...     {"date": "2024-05-02", "tree_planted": 4}, {"date": "2024-05-01", "waste_removed": 1}]})
    >>> frame["date"].dt.strftime("%m-%d").tolist(), frame["tree_planted"].tolist()
    (['05-01', '05-02'], [0, 4])
    """
    fields = _object(body, "response body")
    user_id = _user_id(fields)
    if "daily_impact" not in fields:
        msg = f"daily_impact: missing from the response body (fields: {sorted(fields)!r})"
        raise ValidationError(msg, field="daily_impact")
    entries = fields["daily_impact"]
    if not isinstance(entries, list):
        msg = f"daily_impact: expected a list of days, got {type(entries).__name__}"
        raise ValidationError(msg, field="daily_impact")
    for name in sorted(fields.keys() - {"user_id", "daily_impact"}):
        msg = (
            f"the impact/daily response carries a field impactframe does not know: {name!r} "
            "(beside the days); it is not part of the frame"
        )
        warn_at_caller(msg, SchemaDriftWarning)
    days: dict[str, dict[str, int]] = {}
    for entry in entries:
        entry = _object(entry, "daily_impact[]")
        day = entry.get("date")
        if not isinstance(day, str) or not _DAY.fullmatch(day) or not _real(day):
            msg = f"daily_impact.date: {_short(day)} is not a day as 'YYYY-MM-DD'"
            raise ValidationError(msg, field="daily_impact.date", record=_short(entry))
        if (start and day < start.isoformat()) or (end and day > end.isoformat()):
            msg = (
                f"daily_impact.date: {day} is outside the days asked for "
                f"({start or 'any'} to {end or 'any'}): the API did not apply the range"
            )
            raise ValidationError(msg, field="daily_impact.date", record=_short(entry))
        if day in days:
            msg = f"daily_impact.date: {day} is reported twice"
            raise ValidationError(msg, field="daily_impact.date", record=_short(entry))
        days[day] = _amounts(entry, "daily_impact", ("date",))
    ordered = sorted(days)
    types = _types([days[d] for d in ordered], "impact/daily")
    dates = pd.DatetimeIndex(np.array(ordered, dtype="datetime64[ms]")).tz_localize("UTC")
    frame = pd.DataFrame(
        {
            "date": pd.Series(dates, dtype=DATE_DTYPE),
            **{
                t: pd.array([days[d].get(t, 0) for d in ordered], dtype=AMOUNT_DTYPE) for t in types
            },
        }
    )
    frame.attrs["user_id"] = user_id
    return validate_daily(frame)


def _real(day: str) -> bool:
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return False
    return True


def load_impact(
    *, client: Client | None = None, api_key: str | None = None, base_url: str | None = None
) -> pd.DataFrame:
    """Load the account's lifetime totals, split into its own impact and its customers'.

    Parameters
    ----------
    client : Client, optional
        A configured client; or give `api_key` and `base_url` (not both), as for the loaders.
    api_key : str, optional
        Defaults to ``IMPACTFRAME_API_KEY``.
    base_url : str, optional
        Defaults to ``IMPACTFRAME_BASE_URL``, then production.

    Returns
    -------
    pandas.DataFrame
        Indexed ``["user", "customer", "total"]`` (index name ``scope``): the impact of the
        account's own records (``/v1/records``), of its customer records
        (``/v1/customer_records``) and the API's total. One ``Int64`` column per impact type:
        the known ones in SPEC §1 order (0 where none), then any new type the API reports.
        ``attrs["user_id"]`` is the account's id.

    Raises
    ------
    ValueError
        Bad connection arguments, before any request.
    APIError
        As for the loaders (``AuthenticationError`` for a refused key, after retries where
        they apply).
    ValidationError
        The body is not the documented shape (e.g. an amount that is not an integer ≥ 0).

    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> with SandboxServer(n_records=100) as server:
    ...     impact = load_impact(api_key=server.api_key, base_url=server.url)
    >>> impact.index.tolist(), str(impact["tree_planted"].dtype)
    (['user', 'customer', 'total'], 'Int64')
    >>> bool(impact.loc["total"].eq(impact.loc["user"] + impact.loc["customer"]).all())
    True
    """
    with connect(client, api_key, base_url) as active:
        body = active.get_json(IMPACT_PATH)
    return impact_frame(body)


def load_daily_impact(
    *,
    start_date: DateLike | None = None,
    end_date: DateLike | None = None,
    client: Client | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> pd.DataFrame:
    """Load the account's impact per UTC day, as the API counts it.

    Parameters
    ----------
    start_date, end_date : str, datetime.date, datetime.datetime or pandas.Timestamp, optional
        First and last UTC day, inclusive, as for the loaders (aware datetimes count by their
        UTC day); none: every day the API reports.
    client, api_key, base_url
        The connection, as for :func:`load_impact`.

    Returns
    -------
    pandas.DataFrame
        ``date`` (``datetime64[ms, UTC]``, midnight) and one ``Int64`` column per impact type,
        one row per day the API reports (days without impact may be left out), ascending;
        validated by :class:`DailyImpactSchema`. ``attrs["user_id"]`` is the account's id.

    Raises
    ------
    ValueError
        A bad date or start after end (naming the argument), or bad connection arguments,
        before any request.
    APIError
        As for the loaders.
    ValidationError
        The body is not the documented shape, or holds a day outside the range asked for.

    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> with SandboxServer(n_records=500) as server:
    ...     daily = load_daily_impact(start_date="2024-01-01", end_date="2024-12-31",
    ...                               api_key=server.api_key, base_url=server.url)
    >>> daily["date"].dt.year.unique().tolist(), str(daily["tree_planted"].dtype)
    ([2024], 'Int64')
    """
    query = normalize_query("records", start_date=start_date, end_date=end_date)
    params = {}
    if query.start_date is not None:
        params["start_date"] = query.start_date.isoformat()
    if query.end_date is not None:
        params["end_date"] = query.end_date.isoformat()
    with connect(client, api_key, base_url) as active:
        body = active.get_json(DAILY_PATH, params)
    return daily_frame(body, query.start_date, query.end_date)
