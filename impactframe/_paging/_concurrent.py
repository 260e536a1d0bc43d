"""Every page of a query in the requested order, on one cursor chain or on several (SPEC §14).

`iter_pages` is the one walk the loaders, the cache refresh and the export read. With one
chain, a background thread fetches pages ahead of the caller. With ``concurrency="auto"`` (or
an int above 1), a query whose first page has a cursor is split into day windows
(`_windows.split_windows`), each walked on its own chain by a pool of threads whose requests a
`Gate` paces (fewer after a 429, more again after successes), and the pages come back in
window order: the same rows, in the same order, as one chain gives. The outer windows stay
open where the query is, so the edge days read from the API only balance the windows and never
decide which records are fetched. Every page is checked against its own (window's) query.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

from .._params import Query, reject
from .._time import canonical_time
from .._warn import warn_at_caller
from ..client._client import WalkAbandoned
from ..client._deadline import leave_signals_to_main
from ..errors import SchemaDriftWarning
from ._cap import check_walk, walk_query
from ._gate import Gate
from ._handoff import Handoff, WindowPages
from ._pages import Page
from ._prefetch import prefetch_pages
from ._windows import split_windows

if TYPE_CHECKING:
    from ..client._client import Client

__all__ = [
    "AUTO_CHAINS",
    "PREFETCH_PAGES",
    "WINDOWS_PER_WORKER",
    "Concurrency",
    "OnPage",
    "check_concurrency",
    "date_bounds",
    "iter_pages",
    "open_windows",
]

logger = logging.getLogger("impactframe")

#: The most chains ``concurrency="auto"`` walks at once.
AUTO_CHAINS = 8
#: Windows per chain: more, smaller windows even out days that hold more records.
WINDOWS_PER_WORKER = 4
#: Pages the fetch thread of one chain may read ahead (~250 kB each at 1000 records).
PREFETCH_PAGES = 32

Concurrency = int | Literal["auto"]
#: ``on_page(records, days)``: the page's record count; ``(done, total)`` days of the query's
#: range covered so far, or ``None`` where the range is not known.
OnPage = Callable[[int, "tuple[int, int] | None"], None]


def check_concurrency(concurrency: object) -> int:
    """The most chains ``concurrency`` allows: ``"auto"`` is `AUTO_CHAINS`.

    Examples
    --------
    >>> check_concurrency("auto"), check_concurrency(1)
    (8, 1)
    """
    if concurrency == "auto" and isinstance(concurrency, str):
        return AUTO_CHAINS
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        reject("concurrency", concurrency, "'auto' or an int >= 1")
    return concurrency


def _day(page: Page, last: bool) -> dt.date | None:
    """The UTC day of the page's first (or last) record with a readable ``time_utc``."""
    for fact in reversed(page.facts) if last else page.facts:
        text = fact.time_utc
        key = canonical_time(text) if isinstance(text, str) else None
        if key is not None:
            try:
                return dt.date.fromisoformat(key[:10])
            except ValueError:  # an impossible date: the builder names it
                return None
    return None


def _edge_day(client: Client, endpoint: str, query: Query, sort_order: str) -> dt.date | None:
    """The UTC day of the first record in ``sort_order``, or ``None`` when there is none."""
    # Without filter_by: a filter applied after the limit (DynamoDB style) could leave a
    # one-record page empty, and the unfiltered range is a superset anyway.
    probe = dataclasses.replace(query, filter_by=None, sort_order=sort_order, page_size=1)
    for page in walk_query(client, endpoint, probe, max_records=1):
        day = _day(page, last=False)
        if day is not None:
            return day
    return None


def date_bounds(
    client: Client, endpoint: str, query: Query, first: Page | None = None
) -> tuple[dt.date, dt.date] | None:
    """The first and last UTC day the query's records seem to cover, to balance date windows.

    Asks the API (one ``limit=1`` request) for each open end that ``first``, the query's own
    first page, does not give. ``None`` when no record matches. Only for planning: the outer
    windows stay open (`open_windows`), so a wrong answer costs balance, never records.
    """
    start, end = query.start_date, query.end_date
    if first is not None and query.sort_order == "asc" and start is None:
        start = _day(first, last=False)
    if first is not None and query.sort_order == "desc" and end is None:
        end = _day(first, last=False)
    start = start or _edge_day(client, endpoint, query, "asc")
    end = end or _edge_day(client, endpoint, query, "desc")
    if start is None or end is None or start > end:
        return None
    return start, end


def open_windows(
    windows: list[tuple[dt.date, dt.date]], query: Query
) -> list[tuple[dt.date | None, dt.date | None]]:
    """``windows`` (ascending) with the outer ends as open as the query's.

    Examples
    --------
    >>> from impactframe._params import normalize_query
    >>> day = dt.date(2024, 1, 1)
    >>> open_windows([(day, day), (day, day)], normalize_query("records", end_date=day))
    [(None, datetime.date(2024, 1, 1)), (datetime.date(2024, 1, 1), datetime.date(2024, 1, 1))]
    """
    out: list[tuple[dt.date | None, dt.date | None]] = list(windows)
    if out:
        out[0] = (query.start_date, out[0][1])
        out[-1] = (out[-1][0], query.end_date)
    return out


def _walk_window(
    client: Client,
    endpoint: str,
    query: Query,
    handoff: Handoff,
    window: WindowPages,
    gate: Gate,
) -> None:
    """Hand one window's pages over as they come; the first error stops every window."""
    try:
        for page in walk_query(client, endpoint, query, cancel=handoff.stop, gate=gate):
            handoff.put(window, page)
    except WalkAbandoned as exc:
        handoff.finish(window, exc)
    except BaseException as exc:  # raised by the caller at once, whichever window it reads
        handoff.fail(window, exc)
    else:
        handoff.finish(window)


def _windowed(
    client: Client,
    endpoint: str,
    queries: list[Query],
    chains: int,
    budget: int | None,
) -> Iterator[Page]:
    """The pages of the window ``queries`` (in row order), walked on ``chains`` threads."""
    logger.debug("walking %d date windows on up to %d chains", len(queries), chains)
    handoff = Handoff(threading.Event(), budget)
    gate = Gate(chains, cancel=handoff.stop)
    pool = ThreadPoolExecutor(
        max_workers=chains, thread_name_prefix="impactframe", initializer=leave_signals_to_main
    )
    pending: deque[tuple[WindowPages, Future[None]]] = deque()

    def start(window_query: Query) -> None:
        window = WindowPages()
        job = pool.submit(_walk_window, client, endpoint, window_query, handoff, window, gate)
        pending.append((window, job))

    todo = iter(queries)
    try:
        # A bounded number of windows in flight, handed back in window order.
        for window_query in todo:
            start(window_query)
            if len(pending) >= 2 * chains:
                break
        while pending:
            window, _ = pending.popleft()
            next_query = next(todo, None)
            if next_query is not None:
                start(next_query)
            yield from handoff.take(window)
    finally:
        # An error, Ctrl-C or a caller that stops early: the running walks end after
        # their request in flight, or at once from a retry wait. Not waited for here: this
        # runs also when the garbage collector finalizes an abandoned walk, in whatever
        # thread it is in, even one starting up inside threading's own locks, where joining
        # threads deadlocks (seen in the suite). The workers end on their own; Python joins
        # them at exit.
        handoff.stop.set()
        handoff.wake()
        pool.shutdown(wait=False, cancel_futures=True)
        logger.debug("%d requests, %d answered 429", gate.requests, gate.throttles)


class _Span:
    """The days of the query's range covered by the pages yielded so far (for progress)."""

    def __init__(self, query: Query) -> None:
        self.descending = query.sort_order == "desc"
        self.bounds: tuple[dt.date, dt.date] | None = None
        if query.start_date is not None and query.end_date is not None:
            self.bounds = (query.start_date, query.end_date)
        self.done = 0

    def after(self, page: Page) -> tuple[int, int] | None:
        if self.bounds is None:
            return None
        start, end = self.bounds
        total = (end - start).days + 1
        day = _day(page, last=True)
        if day is not None:
            covered = (end - day).days + 1 if self.descending else (day - start).days + 1
            self.done = max(self.done, min(total, covered))
        return self.done, total


def _n_windows(first: Page, bounds: tuple[dt.date, dt.date], chains: int) -> int:
    """Windows for ``chains``: `WINDOWS_PER_WORKER` each, but no more than the pages the range
    seems to hold (from the days the first page covers), as each window costs a request."""
    most = chains * WINDOWS_PER_WORKER
    head, tail = _day(first, last=False), _day(first, last=True)
    if head is None or tail is None or first.count < 2:
        return most
    per_page = abs((tail - head).days) + 1
    pages = -(-((bounds[1] - bounds[0]).days + 1) // per_page)
    return max(2, min(most, pages))


def _adaptive(
    client: Client,
    endpoint: str,
    query: Query,
    chains: int,
    budget: int | None,
    span: _Span,
) -> Iterator[Page]:
    """One chain for a query of one page; else its date windows on up to ``chains`` chains."""
    pages = walk_query(client, endpoint, query)
    first = next(pages)
    if first.cursor is None:  # the whole answer: one request
        yield first
        return
    bounds = date_bounds(client, endpoint, query, first)
    windows = split_windows(*bounds, _n_windows(first, bounds, chains)) if bounds else []
    if len(windows) < 2:  # one day, or nothing to split: the chain goes on as it began
        yield first
        yield from pages
        return
    pages.close()  # the first window asks for these records again, on its own chain
    span.bounds = bounds
    spans = open_windows(windows, query)
    if query.sort_order == "desc":
        spans.reverse()
    queries = [dataclasses.replace(query, start_date=a, end_date=b) for a, b in spans]
    yield from _windowed(client, endpoint, queries, chains, budget)


def iter_pages(
    client: Client,
    endpoint: str,
    query: Query,
    *,
    max_records: int | None = None,
    concurrency: Concurrency = 1,
    on_page: OnPage | None = None,
    page_budget: int | None = None,
    prefetch: int = PREFETCH_PAGES,
) -> Generator[Page, None, None]:
    """Yield every page of ``query`` in the requested order, each checked against the query.

    Parameters
    ----------
    client : Client
        Sends the requests (retries included).
    endpoint : {"records", "customer_records"}
    query : Query
        The normalised query.
    max_records : int, optional
        Stop once this many distinct records were yielded; one chain, and no page beyond the
        last one needed. The last page is trimmed if the API sent more.
    concurrency : "auto" or int
        The most cursor chains walked at once over disjoint date windows (``"auto"``: up to
        `AUTO_CHAINS`, fewer while the API answers 429); 1: one chain.
    on_page : callable, optional
        ``on_page(records, days)`` after each page, e.g. to move a progress bar (`OnPage`).
    page_budget : int, optional
        With several chains: at most about twice this many pages are fetched ahead of the
        caller, so memory does not grow with the history (`export_parquet`).
    prefetch : int
        With one chain: pages a background thread fetches ahead of the caller (0: none).

    Raises
    ------
    ValueError
        A bad argument, at once (before any request).
    PaginationError
        The chain repeated a cursor or made no progress.
    ValidationError
        A page that breaks its query or the endpoint's shape.
    APIError
        See `Client.get_json`.

    Examples
    --------
    >>> from impactframe._params import normalize_query
    >>> from impactframe.client import Client
    >>> from impactframe.sandbox import SandboxServer
    >>> query = normalize_query("records", page_size=4)
    >>> with SandboxServer(n_records=10) as server, Client(
    ...     server.api_key, base_url=server.url
    ... ) as client:
    ...     sizes = [page.count for page in iter_pages(client, "records", query)]
    ...     capped = [page.count
    ...               for page in iter_pages(client, "records", query, max_records=5)]
    >>> sizes, capped
    ([4, 4, 2], [4, 1])
    """
    cap = check_walk(endpoint, query, max_records)
    chains = check_concurrency(concurrency)
    return _pages(client, endpoint, query, cap, chains, on_page, page_budget, prefetch)


def _pages(
    client: Client,
    endpoint: str,
    query: Query,
    cap: int | None,
    chains: int,
    on_page: OnPage | None,
    budget: int | None,
    prefetch: int,
) -> Generator[Page, None, None]:
    span = _Span(query)
    pages: Iterator[Page]
    if chains > 1 and cap is None:
        pages = _adaptive(client, endpoint, query, chains, budget, span)
    elif prefetch:
        pages = prefetch_pages(
            lambda cancel: walk_query(client, endpoint, query, max_records=cap, cancel=cancel),
            prefetch,
        )
    else:
        pages = walk_query(client, endpoint, query, max_records=cap)
    warned: set[str] = set()
    try:
        for page in pages:
            if on_page is not None:
                on_page(page.count, span.after(page))
            if page.extra:
                _warn_extra_fields(page.extra, warned, endpoint)
            yield page
    finally:
        close = getattr(pages, "close", None)  # a generator: end its threads now
        if close is not None:
            close()


def _warn_extra_fields(names: tuple[str, ...], warned: set[str], endpoint: str) -> None:
    """One `SchemaDriftWarning` per response field besides the records and the cursor (SPEC §3:
    nothing the API sends is dropped silently, and such a field has no place in the rows)."""
    for name in names:
        if name not in warned:
            warned.add(name)
            msg = (
                f"the {endpoint} response carries a field impactframe does not know: {name!r} "
                "(beside the records and the cursor); it is not part of the frame"
            )
            warn_at_caller(msg, SchemaDriftWarning)
