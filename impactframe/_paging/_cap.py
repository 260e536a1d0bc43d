"""The cursor walk of one query, capped at ``max_records`` distinct records.

Each request asks for at most the records still missing, and the page that completes the count
is cut where it does. `Client.iter_pages` and `Client.iter_raw_pages` share this walk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

from .._constants import ENDPOINTS
from .._params import Query, check_choice, normalize_max_records, reject
from ._pages import Page, RawPage, parse_page, walk

_PageT = TypeVar("_PageT", Page, RawPage)


def _check_walk(endpoint: str, query: Query, max_records: int | None) -> int | None:
    """The walk's arguments, checked when it is asked for (before any request); the cap."""
    check_choice(endpoint, "endpoint", ENDPOINTS)
    if not isinstance(query, Query):
        reject(
            "query", query, "an impactframe Query", shown=f"a value of type {type(query).__name__}"
        )
    if query.customer_email is not None and endpoint != "customer_records":
        msg = "customer_email: only the 'customer_records' endpoint accepts it, "
        msg += f"not {endpoint!r}"
        raise ValueError(msg)
    return normalize_max_records(max_records)


def _take(
    page: Page | RawPage, wanted: int, seen: set[str], records_key: str
) -> tuple[Page | RawPage, int]:
    """The page cut where it holds ``wanted`` records not seen before, and how many it holds.

    ``max_records`` counts distinct records: a record repeated across a page boundary (which
    the frame builder drops) must not use up the cap, or the frame would come out short.
    """
    records = page.records
    if records is None:  # a raw page: capped walks are short, decoding them is cheap
        assert isinstance(page, RawPage)
        records = parse_page(json.loads(page.body or b""), records_key).records
    new = 0
    end = len(records)
    for i, record in enumerate(records):
        if new == wanted:
            end = i
            break
        text = json.dumps(record, sort_keys=True, separators=(",", ":"))
        if text not in seen:
            seen.add(text)
            new += 1
    if end == len(records):
        return page, new
    # The unknown fields stay: the fetch loop warns about them (SPEC §3), trimmed or not.
    if isinstance(page, Page):
        return Page(records[:end], page.cursor, page.extra), new
    return RawPage(None, end, page.cursor, records[:end], page.extra), new


def _walk_query(
    endpoint: str,
    query: Query,
    cap: int | None,
    get: Callable[[str, Mapping[str, Any]], _PageT],
) -> Iterator[_PageT]:
    """The pages of `query`, each fetched by `get`; with a `cap`, only that many records."""
    remaining = cap

    def fetch(cursor: str | None) -> _PageT:
        limit = query.page_size
        if remaining is not None:
            # After a cursor, one more: a page that repeats the boundary record (seen across
            # page boundaries) must still reach a new record, or it would return the cursor
            # it was asked with and end the walk as a loop.
            limit = min(query.page_size, remaining + (cursor is not None))
        return get(endpoint, query.to_params(cursor=cursor, limit=limit))

    seen: set[str] = set()
    for page in walk(fetch):
        if remaining is None:
            yield page
            continue
        taken, new = _take(page, remaining, seen, ENDPOINTS[endpoint][1])
        remaining -= new
        yield cast(_PageT, taken)
        if remaining == 0:
            return
