"""Every page checked against the query it answers (SPEC §4): the API is never trusted to have
honoured a parameter.

`check_page` reads only each record's `Facts` (``time_utc``, the impact fields, the customer),
decoded with the envelope, and raises `ValidationError` naming the record and the rule:
records in the requested ``sort_order`` (within the page and after the previous page), inside
the requested UTC days, of the requested impact types, of the requested ``customer_email``.
A record whose fields are malformed is left to the frame builder, which names its problem.
Date windows (concurrency, Dask, refresh) rely on these checks: a server that ignores
``sort_order`` or counts days in another time zone gives an error, never rows missing.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec

from .._constants import IMPACT_TYPES
from .._params import Query
from .._time import canonical_time
from ..errors import ValidationError

__all__ = ["check_page"]

# A page's times all in the API's own form, checked in C for the whole page at once: joined by
# newlines and every digit mapped to "0", the text must be the template repeated (a regex with
# a repeated group over 24 KB took four times as long). The newlines keep a time from lending
# characters to its neighbour.
_TEMPLATE = "0000-00-00T00:00:00.000Z\n"
_ZEROS = str.maketrans("123456789", "000000000")
_TIME = attrgetter("time_utc")
_CUSTOMER = attrgetter("customer")


def _where(i: int, fact: Any) -> str:
    shown = ", ".join(
        f"{name}={value!r:.60}"
        for name in ("user_id", "time_utc")
        if isinstance(value := getattr(fact, name), str)
    )
    return f"record {i} of the page ({shown})" if shown else f"record {i} of the page"


def _fail(i: int, fact: Any, field: str, rule: str) -> ValidationError:
    record = {name: getattr(fact, name) for name in ("user_id", "time_utc")}
    return ValidationError(f"{_where(i, fact)}: {rule}", field=field, record=record)


def _times(facts: list[Any]) -> list[tuple[int, str]]:
    """(index, canonical time) of the records whose ``time_utc`` has an accepted shape."""
    times = list(map(_TIME, facts))
    try:
        if ("\n".join(times) + "\n").translate(_ZEROS) == _TEMPLATE * len(times):
            return list(enumerate(times))
    except TypeError:  # a time that is not a string: the builder names it
        pass
    out = []
    for i, text in enumerate(times):
        key = canonical_time(text) if isinstance(text, str) else None
        if key is not None:
            out.append((i, key))
    return out


def _check_order(
    facts: list[Any], times: list[tuple[int, str]], query: Query, previous: str | None
) -> None:
    keys = [key for _, key in times]
    descending = query.sort_order == "desc"
    ordered = [previous, *keys] if previous is not None else keys
    if sorted(ordered, reverse=descending) == ordered:
        return
    last, before = previous, "the last record of the previous page"
    for i, key in times:
        if last is not None and (key > last if descending else key < last):
            rule = (
                f"sort_order={query.sort_order!r} was asked for, but its time_utc comes "
                f"{'after' if descending else 'before'} that of {before} ({last})"
            )
            raise _fail(i, facts[i], "time_utc", rule)
        last, before = key, "the record before it"


def _check_days(facts: list[Any], times: list[tuple[int, str]], query: Query) -> None:
    start = query.start_date.isoformat() if query.start_date is not None else None
    end = query.end_date.isoformat() if query.end_date is not None else None
    # The order is checked first: the page's earliest and latest days are at its two ends.
    first, last = times[0][1][:10], times[-1][1][:10]
    earliest, latest = (last, first) if query.sort_order == "desc" else (first, last)
    if start is not None and earliest < start:
        i = next(i for i, key in times if key[:10] < start)
        rule = f"its UTC day is before the requested start_date={start}"
        raise _fail(i, facts[i], "time_utc", rule)
    if end is not None and latest > end:
        i = next(i for i, key in times if key[:10] > end)
        rule = f"its UTC day is after the requested end_date={end}"
        raise _fail(i, facts[i], "time_utc", rule)


def _check_kinds(facts: list[Any], wanted: tuple[str, ...]) -> None:
    for kind in IMPACT_TYPES:
        if kind in wanted:
            continue
        values = list(map(attrgetter(kind), facts))
        if values.count(msgspec.UNSET) != len(values):
            i = next(i for i, value in enumerate(values) if value is not msgspec.UNSET)
            rule = f"it is a {kind} record, not of the requested filter_by={list(wanted)!r}"
            raise _fail(i, facts[i], kind, rule)
    for i, held in enumerate(map(attrgetter(*wanted, "user_id"), facts)):
        if all(value is msgspec.UNSET for value in held[:-1]):
            rule = f"it holds none of the requested impact types filter_by={list(wanted)!r}"
            raise _fail(i, facts[i], "impact type", rule)


def _check_customer(facts: list[Any], email: str) -> None:
    for i, customer in enumerate(map(_CUSTOMER, facts)):
        got = customer.get("customer_email") if isinstance(customer, dict) else None
        if got != email:
            rule = f"its customer_email is {got!r}, not the requested {email!r}"
            raise _fail(i, facts[i], "customer_email", rule)


def check_page(facts: list[Any], query: Query, previous: str | None) -> str | None:
    """Check one page's records against ``query``; the last record's time, for the next page.

    Parameters
    ----------
    facts : list of Facts
        The page's `Page.facts`, in the order the API sent them.
    query : Query
        The query this page answers (a date window's own query, with concurrency).
    previous : str or None
        What `check_page` returned for the page before in the same cursor chain.

    Returns
    -------
    str or None
        The time (canonical form) of the page's last record, else ``previous``.

    Raises
    ------
    ValidationError
        Naming the first record that breaks a rule, and the rule.

    Examples
    --------
    >>> from impactframe._params import normalize_query
    >>> from impactframe._paging._pages import parse_page
    >>> page = parse_page(b'{"user_records": [{"user_id": "U1", "tree_planted": 1, '
    ...                   b'"time_utc": "2024-01-02T00:00:00.000Z"}]}', "user_records")
    >>> check_page(page.facts, normalize_query("records"), None)
    '2024-01-02T00:00:00.000Z'
    >>> check_page(page.facts, normalize_query("records", end_date="2024-01-01"), None)
    Traceback (most recent call last):
    ...
    impactframe.errors.ValidationError: record 0 of the page (user_id='U1', \
time_utc='2024-01-02T00:00:00.000Z'): its UTC day is after the requested end_date=2024-01-01
    """
    if not facts:
        return previous
    times = _times(facts)
    if times:
        _check_order(facts, times, query, previous)
        _check_days(facts, times, query)
    if query.filter_by:
        _check_kinds(facts, query.filter_by)
    if query.customer_email is not None:
        _check_customer(facts, query.customer_email)
    return times[-1][1] if times else previous
