"""Cursor pagination as a small pure state machine (SPEC §4); the fetching is injected.

`parse_page` checks one response body; `walk` follows cursors until the API stops giving one,
and refuses a cursor it has already followed, so a walk always ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import PaginationError, ValidationError

__all__ = ["Page", "parse_page", "walk"]

# Cursors are not secret (base64 of a record's key), but they are long; show enough to compare.
_CURSOR_PREVIEW = 24


@dataclass(frozen=True)
class Page:
    """One page of records and the cursor to the next one (``None`` on the last page).

    Examples
    --------
    >>> Page([{"user_id": "U1"}], None).cursor is None
    True
    """

    records: list[Any]
    cursor: str | None


def parse_page(body: object, records_key: str) -> Page:
    """Check a decoded response body and split it into records and cursor.

    Parameters
    ----------
    body : object
        The decoded JSON body.
    records_key : str
        The field holding the records: ``"user_records"`` or ``"customer_records"``.

    Returns
    -------
    Page
        The cursor is ``None`` when it is absent, ``null`` or ``""`` (SPEC §4: the end).

    Raises
    ------
    ValidationError
        If the body is not an object, the records field is missing or not a list, or the cursor
        is not a string. The records themselves are checked later, by the frame builder.

    Examples
    --------
    >>> parse_page({"user_records": [{"user_id": "U1"}], "cursor": "eyJ9"}, "user_records")
    Page(records=[{'user_id': 'U1'}], cursor='eyJ9')
    >>> parse_page({"user_records": [], "cursor": ""}, "user_records")
    Page(records=[], cursor=None)
    """
    if not isinstance(body, dict):
        msg = f"response body: expected a JSON object, got {type(body).__name__}"
        raise ValidationError(msg, field="response body")
    if records_key not in body:
        msg = f"{records_key}: missing from the response body (fields: {sorted(body)!r})"
        raise ValidationError(msg, field=records_key)
    records = body[records_key]
    if not isinstance(records, list):
        msg = f"{records_key}: expected a list of records, got {type(records).__name__}"
        raise ValidationError(msg, field=records_key)
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        msg = f"cursor: expected a string or null, got {type(cursor).__name__} {cursor!r:.60}"
        raise ValidationError(msg, field="cursor")
    return Page(records, cursor or None)


def walk(fetch: Callable[[str | None], Page]) -> Iterator[Page]:
    """Yield pages from ``fetch(None)`` on, following each page's cursor until there is none.

    Short and empty pages that carry a cursor are not the end (the API pages like DynamoDB).
    Nothing is fetched before the caller asks for the next page, so stopping early is free.

    Parameters
    ----------
    fetch : callable
        ``fetch(cursor) -> Page``; ``cursor`` is ``None`` for the first page.

    Yields
    ------
    Page

    Raises
    ------
    PaginationError
        If a cursor comes back that this walk already followed (the chain would loop forever).

    Examples
    --------
    >>> pages = {None: Page([1, 2], "a"), "a": Page([], "b"), "b": Page([3], None)}
    >>> [page.records for page in walk(pages.__getitem__)]
    [[1, 2], [], [3]]
    """
    seen: set[str] = set()
    cursor: str | None = None
    page_number = 0
    while True:
        page = fetch(cursor)
        page_number += 1
        yield page
        cursor = page.cursor
        if not cursor:  # None, or "" from a Page built by hand
            return
        if cursor in seen:
            preview = cursor[:_CURSOR_PREVIEW] + ("..." if len(cursor) > _CURSOR_PREVIEW else "")
            msg = (
                f"page {page_number} returned a cursor already followed in this walk "
                f"({preview!r}); stopping instead of looping forever"
            )
            raise PaginationError(msg)
        seen.add(cursor)
