"""One cursor chain of one query: each page fetched, checked against the query, and capped.

`get_page` fetches and reads one page. `walk_query` follows a query's cursors (`walk`), checks
every page against the query (`check_page`) and, with ``max_records``, asks each request for
at most the records still missing and cuts the page that completes the count where it does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any

from .._constants import ENDPOINTS
from .._params import Query, check_choice, normalize_max_records, reject
from ._pages import Page, parse_page
from ._verify import check_page
from ._walk import walk

if TYPE_CHECKING:
    from ..client._client import Client
    from ._gate import Gate

__all__ = ["check_walk", "get_page", "walk_query"]


def check_walk(endpoint: str, query: Query, max_records: int | None) -> int | None:
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


def get_page(
    client: Client,
    endpoint: str,
    params: Mapping[str, Any],
    *,
    cancel: threading.Event | None = None,
    on_retry: Callable[[int | None, float], None] | None = None,
    customers: bool = False,
) -> Page:
    """Fetch one page of an endpoint (with the client's retries) and check its shape.

    Parameters
    ----------
    client : Client
        Sends the request.
    endpoint : {"records", "customer_records"}
    params : mapping
        Query parameters, e.g. from `Query.to_params`.
    cancel, on_retry
        As for `Client.get_body`.
    customers : bool
        Read each record's ``customer`` for the page checks (see `parse_page`).

    Returns
    -------
    Page

    Raises
    ------
    ValueError
        If `endpoint` is unknown.
    APIError
        See `Client.get_json`.
    ValidationError
        If the body does not have the endpoint's shape (see `decode_page`).

    Examples
    --------
    >>> from impactframe.client import Client
    >>> from impactframe.sandbox import SandboxServer
    >>> with SandboxServer(n_records=3) as server, Client(
    ...     server.api_key, base_url=server.url
    ... ) as client:
    ...     page = get_page(client, "records", {"limit": "5"})
    >>> page.count, page.cursor, page.body[:16], len(page.records)
    (3, None, b'{"user_records":', 3)
    """
    check_choice(endpoint, "endpoint", ENDPOINTS)
    path, records_key = ENDPOINTS[endpoint]
    return client.get_body(
        path,
        params,
        parse=lambda body: parse_page(body, records_key, customers=customers),
        cancel=cancel,
        on_retry=on_retry,
    )


def _take(page: Page, wanted: int, seen: set[str]) -> tuple[Page, int]:
    """The page cut where it holds ``wanted`` records not seen before, and how many it holds.

    ``max_records`` counts distinct records: a record repeated across a page boundary (which
    the frame builder drops) must not use up the cap, or the frame would come out short.
    """
    records = page.records  # capped walks are short: decoding them is cheap
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
    # The unknown fields stay: the walk warns about them (SPEC §3), trimmed or not.
    kept = records[:end]
    trimmed = Page(None, end, page.cursor, page.extra, records=kept, records_key=page.records_key)
    return trimmed, new


def walk_query(
    client: Client,
    endpoint: str,
    query: Query,
    *,
    max_records: int | None = None,
    cancel: threading.Event | None = None,
    gate: Gate | None = None,
) -> Generator[Page, None, None]:
    """The pages of ``query`` on one cursor chain, each checked against it; lazily.

    Arguments are checked at once; the first request is sent on the first ``next()``.
    ``cancel`` abandons a retry wait (`WalkAbandoned`); ``gate`` paces the requests of
    concurrent chains (`Gate`).
    """
    cap = check_walk(endpoint, query, max_records)
    return _chain(client, endpoint, query, cap, cancel, gate)


def _chain(
    client: Client,
    endpoint: str,
    query: Query,
    cap: int | None,
    cancel: threading.Event | None,
    gate: Gate | None,
) -> Generator[Page, None, None]:
    remaining = cap
    on_retry = gate.throttled if gate is not None else None
    customers = query.customer_email is not None  # only then is the customer read

    def fetch(cursor: str | None) -> Page:
        limit = query.page_size
        if remaining is not None:
            # After a cursor, one more: a page that repeats the boundary record (seen across
            # page boundaries) must still reach a new record.
            limit = min(query.page_size, remaining + (cursor is not None))
        params = query.to_params(cursor=cursor, limit=limit)
        if gate is None or cancel is None:
            return get_page(client, endpoint, params, cancel=cancel, customers=customers)
        with gate.slot(cancel):
            page = get_page(
                client, endpoint, params, cancel=cancel, on_retry=on_retry, customers=customers
            )
        gate.succeeded()
        return page

    last: list[str | None] = [None]

    def check(page: Page, stale: bool) -> None:
        if not stale:  # a page of records just seen is the progress check's to refuse
            last[0] = check_page(page.facts, query, last[0])

    seen: set[str] = set()
    for page in walk(fetch, check):
        if remaining is None:
            yield page
            continue
        taken, new = _take(page, remaining, seen)
        remaining -= new
        yield taken
        if remaining == 0:
            return
