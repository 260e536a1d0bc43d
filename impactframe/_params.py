"""Pure normalisation and validation of query arguments (SPEC §2); no I/O.

Every check runs before a request is sent and raises ``ValueError`` whose message names the
argument and the values it accepts, so a typo costs no round trip. `reject` words that message
for the whole library: ``"<argument>: <value!r> is not accepted; expected <what is accepted>"``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from ._constants import DEFAULTS, ENDPOINTS, IMPACT_TYPES, MAX_PAGE_SIZE, MIN_PAGE_SIZE, SORT_ORDERS

__all__ = [
    "Query",
    "check_choice",
    "normalize_date",
    "normalize_max_records",
    "normalize_query",
    "reject",
]

# Strict: ``date.fromisoformat`` alone would also take "20240101" and "2024-W01-1".
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_ACCEPTED = "a 'YYYY-MM-DD' string, datetime.date, datetime.datetime or pandas.Timestamp"


def _choices(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)


def reject(argument: str, value: object, accepted: str, *, shown: str | None = None) -> NoReturn:
    """Raise the library's ``ValueError`` for a bad argument, in its one wording.

    Parameters
    ----------
    argument : str
        The argument's name; it comes first, so the message reads well after a traceback.
    value : object
        The argument as the user gave it; the message shows its ``repr``.
    accepted : str
        What the argument accepts, read after "expected".
    shown : str, optional
        Shown instead of the ``repr``: for a value that must not be echoed (a key) or whose
        ``repr`` would bury the message (a whole DataFrame).

    Raises
    ------
    ValueError
        Always.

    Examples
    --------
    >>> reject("concurrency", 0, "an int >= 1")
    Traceback (most recent call last):
    ...
    ValueError: concurrency: 0 is not accepted; expected an int >= 1
    """
    shown = repr(value) if shown is None else shown
    msg = f"{argument}: {shown} is not accepted; expected {accepted}"
    raise ValueError(msg)


def check_choice(value: object, argument: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise a ``ValueError`` listing them.

    Parameters
    ----------
    value : object
        The argument as the user gave it.
    argument : str
        The argument's name, used in the message.
    choices : iterable of str
        The accepted values.

    Returns
    -------
    str
        `value`, unchanged.

    Raises
    ------
    ValueError
        If `value` is not one of `choices`.

    Examples
    --------
    >>> check_choice("desc", "sort_order", ("asc", "desc"))
    'desc'
    >>> check_choice("down", "sort_order", ("asc", "desc"))
    Traceback (most recent call last):
    ...
    ValueError: sort_order: 'down' is not accepted; expected one of 'asc', 'desc'
    """
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        reject(argument, value, f"one of {_choices(choices)}")
    return value


def normalize_date(value: object, argument_name: str) -> dt.date | None:
    """Turn a user's date into the UTC calendar day the API filters on.

    Parameters
    ----------
    value : str, datetime.date, datetime.datetime, pandas.Timestamp or None
        A ``YYYY-MM-DD`` string (strict: no time, no other layout), a date, or a datetime. An
        aware datetime (or Timestamp) is converted to UTC first and gives its UTC day; a naive
        one gives its own day.
    argument_name : str
        ``"start_date"`` or ``"end_date"``, used in error messages.

    Returns
    -------
    datetime.date or None
        ``None`` when `value` is ``None``.

    Raises
    ------
    ValueError
        If `value` is malformed, impossible (``2024-02-30``), ``NaT`` or of another type.

    Examples
    --------
    >>> normalize_date("2024-02-29", "start_date")
    datetime.date(2024, 2, 29)
    >>> aware = dt.datetime.fromisoformat("2024-01-01T23:30:00-05:00")
    >>> normalize_date(aware, "end_date")
    datetime.date(2024, 1, 2)
    """
    if value is None:
        return None
    if isinstance(value, str):
        if _DATE_RE.fullmatch(value) is None:
            msg = f"{argument_name}: {value!r} is not a date; expected {_DATE_ACCEPTED}"
            raise ValueError(msg)
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            msg = f"{argument_name}: {value!r} is not a real calendar date ({exc}); expected "
            msg += _DATE_ACCEPTED
            raise ValueError(msg) from None
    if isinstance(value, dt.datetime):  # before date: datetime is a subclass of date
        # pandas.NaT is a datetime subclass too, and unequal to itself.
        if value != value:
            msg = f"{argument_name}: NaT is not a date; expected {_DATE_ACCEPTED}"
            raise ValueError(msg)
        if value.tzinfo is not None and value.utcoffset() is not None:
            value = value.astimezone(dt.UTC)
        return dt.date(value.year, value.month, value.day)
    if isinstance(value, dt.date):
        return dt.date(value.year, value.month, value.day)
    msg = f"{argument_name}: {type(value).__name__} {value!r} is not a date; expected "
    msg += _DATE_ACCEPTED
    raise ValueError(msg)


def normalize_max_records(value: object) -> int | None:
    """Check `max_records`: ``None`` (no cap) or an int of at least 1.

    ``0`` is refused rather than read as "no cap" or "nothing": both readings are plausible,
    so the caller must say ``None`` or a positive number.

    Parameters
    ----------
    value : int or None
        The cap on the total number of records returned.

    Returns
    -------
    int or None

    Raises
    ------
    ValueError
        If `value` is not ``None`` or an int ≥ 1 (bools are refused).

    Examples
    --------
    >>> normalize_max_records(250)
    250
    >>> normalize_max_records(None) is None
    True
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        reject("max_records", value, "None (no cap) or an int >= 1")
    return value


def _normalize_filter_by(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    items: list[object]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | bytearray | dict):
        items = list(value)
    else:
        reject("filter_by", value, f"an impact type or a list of them ({_choices(IMPACT_TYPES)})")
    if not items:
        msg = (
            "filter_by: an empty list selects nothing; pass None for every impact type or "
            f"some of {_choices(IMPACT_TYPES)}"
        )
        raise ValueError(msg)
    for item in items:
        if not isinstance(item, str) or item not in IMPACT_TYPES:
            msg = f"filter_by: {item!r} is not an impact type; expected one of "
            msg += _choices(IMPACT_TYPES)
            raise ValueError(msg)
    # Canonical order (SPEC §1's), duplicates dropped: equal selections give equal queries.
    return tuple(t for t in IMPACT_TYPES if t in items)


def _normalize_page_size(value: object, argument: str = "page_size") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_PAGE_SIZE <= value <= MAX_PAGE_SIZE
    ):
        reject(argument, value, f"an int from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}")
    return value


def _normalize_customer_email(value: object, endpoint: str) -> str | None:
    if value is None:
        return None
    if endpoint != "customer_records":
        msg = (
            f"customer_email: only the 'customer_records' endpoint accepts it, not {endpoint!r}; "
            "expected None here"
        )
        raise ValueError(msg)
    if not isinstance(value, str) or not value.strip():
        reject("customer_email", value, "a non-empty str or None")
    return value


@dataclass(frozen=True)
class Query:
    """One validated query, independent of pagination (build it with `normalize_query`).

    Attributes
    ----------
    filter_by : tuple of str or None
        Impact types, in SPEC §1 order, without duplicates; ``None`` for all.
    start_date, end_date : datetime.date or None
        Inclusive UTC days.
    sort_order : str
        ``"asc"`` or ``"desc"``.
    page_size : int
        The API's ``limit`` per page, 1..1000.
    customer_email : str or None
        One customer's records (customer endpoint only).
    """

    filter_by: tuple[str, ...] | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    sort_order: str = "asc"
    page_size: int = MAX_PAGE_SIZE
    customer_email: str | None = None

    def to_params(
        self, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, str | list[str]]:
        """Return the API's query parameters for one page request.

        Parameters
        ----------
        cursor : str or None
            The cursor of the previous page; ``None`` for the first page.
        limit : int or None
            Records to ask for; defaults to `page_size` (a smaller value serves `max_records`).

        Returns
        -------
        dict
            ``filter_by`` is a list (sent as repeated keys); everything else is a str. Unset
            parameters are left out. Percent-encoding is left to ``requests``.

        Examples
        --------
        >>> q = normalize_query("records", filter_by=["waste_removed", "tree_planted"],
        ...                     start_date="2024-01-01", page_size=100)
        >>> q.to_params(cursor="abc=")
        {'filter_by': ['tree_planted', 'waste_removed'], 'start_date': '2024-01-01', \
'limit': '100', 'sort_order': 'asc', 'cursor': 'abc='}
        """
        limit = self.page_size if limit is None else _normalize_page_size(limit, "limit")
        params: dict[str, str | list[str]] = {}
        if self.filter_by is not None:
            params["filter_by"] = list(self.filter_by)
        if self.start_date is not None:
            params["start_date"] = self.start_date.isoformat()
        if self.end_date is not None:
            params["end_date"] = self.end_date.isoformat()
        params["limit"] = str(limit)
        params["sort_order"] = self.sort_order
        if cursor is not None:
            params["cursor"] = cursor
        if self.customer_email is not None:
            params["customer_email"] = self.customer_email
        return params

    def to_json(self) -> dict[str, Any]:
        """The query's one canonical form, as JSON-ready data: what selects the records.

        The cache key hashes it (so its bytes must not change without a cache
        ``SCHEMA_VERSION`` bump) and an export's marker records it. It covers every field
        that changes which records come back or their order; ``page_size`` is left out
        because it only changes how they are cut into pages. Dates are ISO days and
        ``filter_by`` is sorted. It holds the customer e-mail verbatim: hash it before it goes
        into a path.

        Returns
        -------
        dict
            ``filter_by``, ``start_date``, ``end_date``, ``sort_order``, ``customer_email``.

        Examples
        --------
        >>> normalize_query("records", start_date="2024-01-31").to_json()["start_date"]
        '2024-01-31'
        """
        return {
            "filter_by": sorted(self.filter_by) if self.filter_by is not None else None,
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "end_date": self.end_date.isoformat() if self.end_date else None,
            "sort_order": self.sort_order,
            "customer_email": self.customer_email,
        }

    def key(self) -> str:
        """`to_json` as one compact string with sorted keys: a stable name for the query.

        Examples
        --------
        >>> normalize_query("records", filter_by="tree_planted", end_date="2024-12-31").key()
        '{"customer_email":null,"end_date":"2024-12-31","filter_by":["tree_planted"],\
"sort_order":"asc","start_date":null}'
        """
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalize_query(
    endpoint: str,
    *,
    filter_by: object = None,
    start_date: object = None,
    end_date: object = None,
    sort_order: object = DEFAULTS["sort_order"],
    page_size: object = DEFAULTS["page_size"],
    customer_email: object = None,
) -> Query:
    """Validate a query's arguments and return them as a `Query`.

    Parameters
    ----------
    endpoint : {"records", "customer_records"}
        The endpoint the query is for.
    filter_by : str or iterable of str, optional
        One impact type or several (SPEC §1's known types); duplicates are dropped.
    start_date, end_date : str, datetime.date, datetime.datetime or pandas.Timestamp, optional
        Inclusive bounds (see `normalize_date`); start must not be after end.
    sort_order : {"asc", "desc"}
        Order by ``time_utc``.
    page_size : int
        Records per request, 1..1000 (the API's ``limit``).
    customer_email : str, optional
        Only on ``"customer_records"``: one customer's records.

    Returns
    -------
    Query

    Raises
    ------
    ValueError
        Naming the argument and the accepted values, for any bad argument.

    Examples
    --------
    >>> q = normalize_query("customer_records", filter_by="coral_restored",
    ...                     customer_email="ada@example.com")
    >>> q.filter_by, q.page_size
    (('coral_restored',), 1000)
    >>> normalize_query("records", start_date="2024-03-01", end_date="2024-02-01")
    Traceback (most recent call last):
    ...
    ValueError: start_date 2024-03-01 is after end_date 2024-02-01; expected start_date <= end_date
    """
    check_choice(endpoint, "endpoint", ENDPOINTS)
    start = normalize_date(start_date, "start_date")
    end = normalize_date(end_date, "end_date")
    if start is not None and end is not None and start > end:
        msg = f"start_date {start} is after end_date {end}; expected start_date <= end_date"
        raise ValueError(msg)
    return Query(
        filter_by=_normalize_filter_by(filter_by),
        start_date=start,
        end_date=end,
        sort_order=check_choice(sort_order, "sort_order", SORT_ORDERS),
        page_size=_normalize_page_size(page_size),
        customer_email=_normalize_customer_email(customer_email, endpoint),
    )
