"""The cursor walk as a small pure state machine that always ends (SPEC §4); fetching injected.

`walk` follows cursors until the API stops giving one. It ends with `PaginationError` when the
chain makes no progress: a cursor it already followed, `STALE_PAGES` pages in a row holding
only records it has just seen, or `EMPTY_PAGES` empty pages in a row (the DynamoDB paging of
SPEC §1 can legitimately give many, so the bound is generous). Its memory stays bounded: an
8-byte digest per cursor, and the record keys of the last `RECENT_PAGES` pages.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from operator import attrgetter

from ..errors import PaginationError
from ._pages import Page

__all__ = ["EMPTY_PAGES", "RECENT_PAGES", "STALE_PAGES", "walk"]

#: Pages in a row holding only recently seen records before the walk is refused.
STALE_PAGES = 3
#: Pages whose record keys a page is compared with.
RECENT_PAGES = 4
#: Empty pages in a row (each with a new cursor) before the walk is refused.
EMPTY_PAGES = 1000

_CURSOR_PREVIEW = 24  # cursors are not secret but long: enough of one to compare
_KEY = attrgetter("user_id", "time_utc")


def _digest(cursor: str) -> int:
    return int.from_bytes(hashlib.blake2b(cursor.encode(), digest_size=8).digest(), "big")


def _keys(page: Page) -> set[int]:
    """Hashes of the page's ``(user_id, time_utc)`` keys (SPEC §1: they identify a record)."""
    keys = set()
    for key in map(_KEY, page.facts):
        try:
            keys.add(hash(key))
        except TypeError:  # a malformed field: the builder names it
            keys.add(hash(repr(key)))
    return keys


def _preview(cursor: str) -> str:
    return repr(cursor[:_CURSOR_PREVIEW] + ("..." if len(cursor) > _CURSOR_PREVIEW else ""))


class _Progress:
    """Whether the pages of a walk still bring records (see the module docstring)."""

    def __init__(self) -> None:
        self.recent: deque[set[int]] = deque(maxlen=RECENT_PAGES)
        self.stale = 0
        self.empty = 0

    def check(self, page: Page, number: int) -> None:
        if page.count == 0:
            self.empty += 1
            if self.empty >= EMPTY_PAGES:
                msg = (
                    f"{self.empty} empty pages in a row, each with a new cursor (up to page "
                    f"{number}); stopping instead of walking without end"
                )
                raise PaginationError(msg)
            return
        self.empty = 0
        keys = _keys(page)
        seen = set().union(*self.recent) if self.recent else set()
        if keys and keys <= seen:
            self.stale += 1
            if self.stale >= STALE_PAGES:
                msg = (
                    f"{self.stale} pages in a row (up to page {number}) held only records the "
                    "walk had just seen, each with a new cursor; stopping instead of looping"
                )
                raise PaginationError(msg)
        else:
            self.stale = 0
        self.recent.append(keys)

    def is_stale(self) -> bool:
        """Whether the last page checked held only records seen just before."""
        return self.stale > 0


def walk(
    fetch: Callable[[str | None], Page], on_page: Callable[[Page, bool], None] | None = None
) -> Iterator[Page]:
    """Yield pages from ``fetch(None)`` on, following each page's cursor until there is none.

    Short and empty pages that carry a cursor are not the end (the API pages like DynamoDB).
    Nothing is fetched before the caller asks for the next page, so stopping early is free.

    Parameters
    ----------
    fetch : callable
        ``fetch(cursor) -> Page``; ``cursor`` is ``None`` for the first page.
    on_page : callable, optional
        ``on_page(page, stale)`` before the page is yielded (``stale``: it held only records
        seen just before), e.g. to check it against the query.

    Yields
    ------
    Page

    Raises
    ------
    PaginationError
        A cursor this walk already followed, or a walk without progress (module docstring).

    Examples
    --------
    >>> from impactframe._paging._pages import page_of
    >>> pages = {None: page_of([1, 2], "a"), "a": page_of([], "b"), "b": page_of([3], None)}
    >>> [page.count for page in walk(pages.__getitem__)]
    [2, 0, 1]
    """
    followed: set[int] = set()
    progress = _Progress()
    cursor: str | None = None
    number = 0
    while True:
        page = fetch(cursor)
        number += 1
        progress.check(page, number)
        if on_page is not None:
            on_page(page, progress.is_stale())
        yield page
        cursor = page.cursor
        if not cursor:
            return
        digest = _digest(cursor)
        if digest in followed:
            msg = (
                f"page {number} returned a cursor already followed in this walk "
                f"({_preview(cursor)}); stopping instead of looping forever"
            )
            raise PaginationError(msg)
        followed.add(digest)
