"""Fetch the pages of a query in the requested order, on one cursor chain or on several.

``concurrency=1`` walks one cursor chain. ``concurrency=N`` splits the query's date range
into day windows (:mod:`impactframe._windows`), walks each window's own chain on a pool of
``N`` threads, and hands the pages back in window order, so the rows come out exactly as
one chain would give them.

`iter_record_pages` yields decoded records; `iter_raw_pages` yields `RawPage` objects whose
records are still bytes (for `FastFrameBuilder`), and walks one chain on a background thread.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._frame._python_reader import _time_problem
from .._warn import warn_at_caller
from ..client._client import WalkAbandoned, abandon_on
from ..errors import SchemaDriftWarning, ValidationError
from ._handoff import SIGNAL_POLL, Handoff, WindowPages
from ._pages import RawPage
from ._windows import split_windows

if TYPE_CHECKING:
    from .._params import Query
    from ..client._client import Client

__all__ = ["date_bounds", "iter_raw_pages", "iter_record_pages", "plan_windows"]

logger = logging.getLogger("impactframe")

#: Windows per worker: more, smaller windows even out days that hold more records.
WINDOWS_PER_WORKER = 4
#: Pages the fetch thread of `iter_raw_pages` may read ahead (~250 kB each at 1000 records).
PREFETCH_PAGES = 32

_T = TypeVar("_T")


def _utc_day(time_utc: str) -> dt.date:
    # time_utc is "YYYY-MM-DDTHH:MM:SS.sssZ": its first ten characters are the UTC day.
    return dt.date.fromisoformat(time_utc[:10])


def _edge_day(client: Client, endpoint: str, query: Query, sort_order: str) -> dt.date | None:
    """The UTC day of the first record in ``sort_order``, or ``None`` when there is none."""
    # Without filter_by: a filter applied after the limit (DynamoDB style) could leave a
    # one-record page empty, and the unfiltered range is a superset anyway.
    probe = dataclasses.replace(query, filter_by=None, sort_order=sort_order, page_size=1)
    for page in client.iter_pages(endpoint, probe, max_records=1):
        for record in page.records:
            # The probe decides which days are fetched at all: a record it cannot read is an
            # error, never a reason to plan an empty range (that would drop every record).
            time_utc = record.get("time_utc") if isinstance(record, dict) else None
            problem = (
                "time_utc is missing or not a string"
                if not isinstance(time_utc, str)
                else _time_problem(time_utc)
            )
            if problem is not None:
                user_id = record.get("user_id") if isinstance(record, dict) else None
                msg = (
                    f"time_utc of the first record in {sort_order} order (user_id={user_id!r}, "
                    f"read to plan the date windows): {problem}"
                )
                raise ValidationError(msg, field="time_utc", record=record)
            return _utc_day(cast(str, time_utc))
    return None


def date_bounds(client: Client, endpoint: str, query: Query) -> tuple[dt.date, dt.date] | None:
    """The first and last UTC day the query can cover, asking the API where it is open-ended.

    Costs one ``limit=1`` request per open end (SPEC §7); ``None`` when no record matches.
    """
    start = query.start_date or _edge_day(client, endpoint, query, "asc")
    end = query.end_date or _edge_day(client, endpoint, query, "desc")
    if start is None or end is None or start > end:
        return None
    return start, end


def plan_windows(client: Client, endpoint: str, query: Query, n_windows: int) -> list[Query] | None:
    """Split ``query`` into at most ``n_windows`` queries over disjoint day windows, in row order.

    ``None`` when the query matches nothing at all.
    """
    bounds = date_bounds(client, endpoint, query)
    if bounds is None:
        return None
    windows = split_windows(bounds[0], bounds[1], n_windows)
    if query.sort_order == "desc":
        windows.reverse()
    return [dataclasses.replace(query, start_date=a, end_date=b) for a, b in windows]


def _walk(
    client: Client,
    endpoint: str,
    query: Query,
    raw: bool,
    handoff: Handoff,
    window: WindowPages,
    stop: threading.Event,
) -> None:
    """Hand one window's pages over as they come; abandoned (`WalkAbandoned`) after the request
    in flight, or during a retry wait, once ``stop`` is set (the caller stopped or failed)."""
    pages = client.iter_raw_pages if raw else client.iter_pages
    try:
        with abandon_on(stop):
            for page in pages(endpoint, query):
                handoff.put(window, page)
    except BaseException as exc:  # raised by the caller when it reaches this window
        handoff.finish(window, exc)
    else:
        handoff.finish(window)


def _prefetch(pages: Iterator[_T], depth: int) -> Iterator[_T]:
    """Yield from ``pages``, which a background thread reads up to ``depth`` items ahead.

    The thread does the waiting on the network while the caller converts; its exceptions are
    raised here, after the items it got before them. Stopping early stops the thread after
    the request it is in.
    """
    items: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand(ok: bool, item: object) -> None:
        while not stop.is_set():
            try:
                items.put((ok, item), timeout=0.05)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            # A retry wait (up to the Retry-After cap) ends once the caller is gone.
            with abandon_on(stop):
                for page in pages:
                    hand(True, page)
                    if stop.is_set():
                        return
        except WalkAbandoned:
            return
        except BaseException as exc:  # handed to the caller, which raises it
            hand(False, exc)
        else:
            hand(False, None)

    thread = threading.Thread(target=work, name="impactframe-fetch", daemon=True)
    thread.start()
    try:
        while True:
            try:
                # Timed, so that a Ctrl-C is seen: a signal whose handler ran just before an
                # untimed get (or in another thread) would leave the caller blocked for good.
                ok, item = items.get(timeout=SIGNAL_POLL)
            except queue.Empty:
                continue
            if ok:
                yield item
            elif item is None:
                return
            else:
                raise item
    finally:
        stop.set()


def _windowed_pages(
    client: Client,
    endpoint: str,
    query: Query,
    concurrency: int,
    raw: bool,
    budget: int | None = None,
) -> Iterator[Any]:
    """The pages of ``query``'s date windows, walked on ``concurrency`` threads, in row order.

    ``budget``: pages that may wait for the caller (see `Handoff`); ``None``: no limit.
    """
    windows = plan_windows(client, endpoint, query, concurrency * WINDOWS_PER_WORKER)
    if not windows:
        return
    logger.debug("walking %d date windows on %d threads", len(windows), concurrency)
    stop = threading.Event()
    handoff = Handoff(stop, budget)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="impactframe") as pool:
        pending: deque[tuple[WindowPages, Future[None]]] = deque()

        def start(window_query: Query) -> None:
            window = WindowPages()
            job = pool.submit(_walk, client, endpoint, window_query, raw, handoff, window, stop)
            pending.append((window, job))

        todo = iter(windows)
        try:
            # A bounded number of windows in flight, handed back in window order.
            for window_query in todo:
                start(window_query)
                if len(pending) >= 2 * concurrency:
                    break
            while pending:
                window, _ = pending.popleft()
                next_query = next(todo, None)
                if next_query is not None:
                    start(next_query)
                yield from handoff.take(window)
        finally:
            # An error, Ctrl-C or a caller that stops early: the running walks end after
            # their request in flight instead of finishing their windows (the pool waits).
            stop.set()
            handoff.wake()
            for _, job in pending:
                job.cancel()


def _pages(
    client: Client,
    endpoint: str,
    query: Query,
    max_records: int | None,
    concurrency: int,
    on_page: Callable[[int], None] | None,
    *,
    raw: bool,
    prefetch: int = 0,
    page_budget: int | None = None,
) -> Generator[Any, None, None]:
    """Every page of ``query`` in the requested order (`Page`, or `RawPage` when ``raw``).

    ``on_page`` is told how many records each page holds; ``page_budget`` bounds the pages
    that window walks may fetch ahead of the caller (see `Handoff`).
    """
    pages: Iterator[Any]
    page: Any  # a RawPage when raw, else a Page
    if concurrency <= 1 or max_records is not None:
        walk = client.iter_raw_pages if raw else client.iter_pages
        pages = walk(endpoint, query, max_records=max_records)
        if prefetch:
            pages = _prefetch(pages, prefetch)
    else:
        pages = _windowed_pages(client, endpoint, query, concurrency, raw, page_budget)
    warned: set[str] = set()
    for page in pages:
        if on_page is not None:
            on_page(page.count if raw else len(page.records))
        if page.extra:
            _warn_extra_fields(page.extra, warned, endpoint)
        yield page


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


def iter_record_pages(
    client: Client,
    endpoint: str,
    query: Query,
    *,
    max_records: int | None = None,
    concurrency: int = 1,
    on_page: Callable[[int], None] | None = None,
    page_budget: int | None = None,
) -> Iterator[list[object]]:
    """Yield the record lists of every page of ``query``, in the requested order.

    Parameters
    ----------
    client : Client
        Sends the requests (retries included).
    endpoint : {"records", "customer_records"}
    query : Query
        The normalised query.
    max_records : int, optional
        Stop once this many records were yielded; forces one cursor chain so that no
        page beyond the last one needed is fetched.
    concurrency : int
        Number of cursor chains walked at once over disjoint date windows.
    on_page : callable, optional
        Called with the number of records of each page, e.g. to move a progress bar.
    page_budget : int, optional
        With ``concurrency > 1``: at most about twice this many pages are fetched ahead of
        the caller, so memory does not grow with the history (`export_parquet`); ``None``: the
        windows in flight are fetched whole.
    """
    pages = _pages(
        client,
        endpoint,
        query,
        max_records,
        concurrency,
        on_page,
        raw=False,
        page_budget=page_budget,
    )
    for page in pages:
        yield page.records


def iter_raw_pages(
    client: Client,
    endpoint: str,
    query: Query,
    *,
    max_records: int | None = None,
    concurrency: int = 1,
    on_page: Callable[[int], None] | None = None,
    prefetch: int = PREFETCH_PAGES,
) -> Generator[RawPage, None, None]:
    """`iter_record_pages` for the fast path: `RawPage` objects, records still in bytes.

    With one cursor chain, a background thread fetches up to ``prefetch`` pages ahead of the
    caller (0: none), so the network and the conversion overlap. Same requests, order and
    errors as `iter_record_pages`; at most ``prefetch`` pages more are requested when the
    caller stops early.
    """
    return _pages(
        client, endpoint, query, max_records, concurrency, on_page, raw=True, prefetch=prefetch
    )
