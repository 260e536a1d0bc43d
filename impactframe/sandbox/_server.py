"""The sandbox's HTTP side: record index, query validation, DynamoDB-style paging, handler.

Speed matters (benchmarks serve a million records): every record is encoded to JSON bytes once,
pages are joined from those bytes, and date ranges and cursors are found by bisection on the
sorted timestamps. ``filter_by`` uses per-type position arrays built once (and one cached merge
per set of types), so no request scans the whole history.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gc
import hmac
import json
import logging
import operator
import re
import socket
import socketserver
import sys
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from heapq import merge
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._constants import (
    API_DEFAULT_LIMIT,
    API_KEY_HEADER,
    ENDPOINTS,
    IMPACT_TYPES,
    MAX_PAGE_SIZE,
    SORT_ORDERS,
)
from .._params import reject
from ._faults import FaultPlan
from ._rate import TokenBucket

__all__ = ["LoggedRequest"]

logger = logging.getLogger("impactframe.sandbox")

_NO_KIND = 255  # code of a record without a known impact field (it never matches filter_by)
_EMPTY = array("q")
# Its own copy, not _params._DATE_RE: the sandbox fakes the server, which checks dates on its
# own terms, so the client's checks must not shape what it accepts.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LIMIT = re.compile(r"[0-9]{1,4}")
_CURSOR_KEYS = frozenset({"createdOn", "userID"})
_PARAMS = ("filter_by", "start_date", "end_date", "limit", "cursor", "sort_order")
_CUSTOMER_PARAMS = ("customer_email", *_PARAMS)
_ROUTES = {route: endpoint for endpoint, (route, _) in ENDPOINTS.items()}


@dataclass(frozen=True)
class LoggedRequest:
    """One request the sandbox received.

    Attributes
    ----------
    method : str
        The HTTP method.
    path : str
        The URL path, without the query string.
    params : dict of str to list of str
        The decoded query parameters (``urllib.parse.parse_qs``, blank values kept).
    status : int or None
        The status sent, ``None`` when the connection was dropped.
    fault : str or None
        The injected fault kinds applied, joined by ``+`` (``"latency+status"``), or ``None``.
    records : int or None
        Number of records in the page sent, ``None`` for errors and status faults.

    Examples
    --------
    >>> import requests
    >>> from impactframe.sandbox import SandboxServer
    >>> with SandboxServer(n_records=5) as server:
    ...     _ = requests.get(f"{server.url}/v1/records?limit=2",
    ...                      headers={"x-api-key": server.api_key})
    ...     logged = server.requests[0]
    >>> logged.path, logged.params, logged.status, logged.records
    ('/v1/records', {'limit': ['2']}, 200, 2)
    """

    method: str
    path: str
    params: dict[str, list[str]]
    status: int | None
    fault: str | None
    records: int | None = None


@dataclass(frozen=True)
class CursorKey:
    """A decoded cursor: the last evaluated key (plus a tiebreak for duplicate keys)."""

    created_on: str
    user_id: str
    seq: int = 0


@dataclass(frozen=True)
class Query:
    """A validated request to a records endpoint."""

    kinds: frozenset[str] | None = None
    email: str | None = None
    start: str | None = None  # YYYY-MM-DD, inclusive
    end: str | None = None  # YYYY-MM-DD, inclusive
    limit: int = API_DEFAULT_LIMIT
    descending: bool = False
    cursor: CursorKey | None = None


class BadRequest(Exception):
    """A request the API would refuse; becomes a JSON error response."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _bad(message: str) -> BadRequest:
    return BadRequest(400, "validation_error", message)


def error_body(error_type: str, message: str) -> bytes:
    """The API's error shape, ``{"type": ..., "message": ...}``, as bytes."""
    return json.dumps({"type": error_type, "message": message}).encode()


def _text(value: object) -> str:
    # Sort keys of records as given: strings as they are, anything else as its JSON text, so
    # that even malformed records (served on purpose to test validation) have a place.
    return value if isinstance(value, str) else json.dumps(value, default=repr)


def _texts(values: list[Any]) -> list[str]:
    if all(type(value) is str for value in values):  # the usual case, checked fast
        return values
    return [_text(value) for value in values]


def _encoder() -> Callable[[object], str]:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``, without per-call setup."""
    if c_make_encoder is None:  # pragma: no cover - CPython always has the C accelerator
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def default(obj: object) -> object:
        msg = f"Object of type {type(obj).__name__} is not JSON serializable"
        raise TypeError(msg)

    encode = c_make_encoder(None, default, encode_basestring, None, ":", ",", False, False, True)
    return lambda obj: "".join(encode(obj, 0))


class Dataset:
    """The records of one endpoint: sorted by ``(time_utc, user_id)``, encoded, indexed.

    Records are kept only as their JSON bytes; :meth:`records` decodes them again.
    """

    def __init__(self, records: Iterable[Mapping[str, Any]], *, name: str) -> None:
        items = list(records)
        for i, record in enumerate(items):
            if not isinstance(record, Mapping):
                shown = f"item {i} (of type {type(record).__name__})"
                accepted = "a list of dicts (records in the API's JSON shape)"
                reject(name, record, accepted, shown=shown)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # building millions of small objects; collections would find nothing
        try:
            self._build(items, name)
        finally:
            if gc_was_enabled:
                gc.enable()
        self._lock = threading.Lock()
        self._merged: dict[frozenset[str], array[int]] = {}

    def _build(self, items: list[Mapping[str, Any]], name: str) -> None:
        times = _texts([r.get("time_utc") for r in items])
        users = _texts([r.get("user_id") for r in items])
        if not all(map(operator.lt, times, islice(times, 1, None))):
            order = sorted(range(len(items)), key=lambda i: (times[i], users[i]))  # stable
            items = [items[i] for i in order]
            times = [times[i] for i in order]
            users = [users[i] for i in order]
        self.times = times
        self.users = users
        encode = _encoder()
        try:
            self.encoded = [encode(r).encode() for r in items]
        except (TypeError, ValueError) as exc:
            msg = f"{name} must hold only JSON values: {exc}"
            raise ValueError(msg) from exc
        codes = bytearray(len(items))
        by_kind: dict[str, list[int]] = {kind: [] for kind in IMPACT_TYPES}
        by_email: dict[str, list[int]] = {}
        kinds = tuple(enumerate(IMPACT_TYPES))
        for i, record in enumerate(items):
            for code, kind in kinds:
                if kind in record:
                    codes[i] = code
                    by_kind[kind].append(i)
                    break
            else:
                codes[i] = _NO_KIND
            customer = record.get("customer")
            if type(customer) is dict or isinstance(customer, Mapping):  # the fast check first
                email = customer.get("customer_email")
                if isinstance(email, str):
                    by_email.setdefault(email, []).append(i)
        self.codes = codes
        self._by_kind = {kind: array("q", positions) for kind, positions in by_kind.items()}
        self._by_email = {email: array("q", positions) for email, positions in by_email.items()}

    def __len__(self) -> int:
        return len(self.encoded)

    def records(self) -> list[dict[str, Any]]:
        """The records, decoded from the bytes served, in ascending order."""
        return json.loads(b"[" + b",".join(self.encoded) + b"]")  # type: ignore[no-any-return]

    # -- paging ---------------------------------------------------------------------------------

    def page(
        self, query: Query, *, filter_after_limit: bool, repeat: bool
    ) -> tuple[list[bytes], str | None]:
        """The encoded records of one page and the cursor to the next (``None``: last page).

        Without ``filter_after_limit``, ``filter_by`` selects before ``limit`` counts and the
        cursor is present exactly when more matching records follow. With it, the page scans
        ``limit`` records of the range (date range, ``customer_email``, cursor) first and drops
        the ones ``filter_by`` excludes afterwards, DynamoDB style: a full scan always carries a
        cursor, even when nothing follows. ``repeat`` starts the page at the cursor's record.
        """
        times = self.times
        lo = bisect_left(times, query.start) if query.start else 0
        hi = bisect_left(times, query.end + "\uffff") if query.end else len(times)
        if query.cursor is not None:
            pos, found = self._locate(query.cursor)
            again = found and repeat and lo <= pos < hi  # the "repeat" fault: include it again
            if query.descending:
                hi = min(hi, pos + 1 if again else pos)
            else:
                lo = max(lo, pos + 1 if found and not again else pos)
        limit = query.limit
        scan_kinds = None if filter_after_limit else query.kinds
        candidates = self._candidates(query.email, scan_kinds)
        scanned: Iterable[int]
        if candidates is None:
            size = max(0, hi - lo)
            take = min(limit, size)
            scanned = range(hi - 1, hi - 1 - take, -1) if query.descending else range(lo, lo + take)
        else:
            first = bisect_left(candidates, lo)
            stop = max(first, bisect_left(candidates, hi))
            size = stop - first
            take = min(limit, size)
            if query.descending:
                scanned = candidates[stop - take : stop][::-1]
            else:
                scanned = candidates[first : first + take]
        # DynamoDB returns a LastEvaluatedKey whenever it stopped at Limit, even at the very end.
        more = take > 0 and (take == limit if filter_after_limit else size > take)
        cursor = self._cursor(scanned[-1]) if more else None  # type: ignore[index]
        encoded = self.encoded
        if filter_after_limit and query.kinds:
            wanted = {IMPACT_TYPES.index(kind) for kind in query.kinds}
            codes = self.codes
            return [encoded[p] for p in scanned if codes[p] in wanted], cursor
        if isinstance(scanned, range) and scanned.step == 1:
            return encoded[scanned.start : scanned.stop], cursor
        return [encoded[p] for p in scanned], cursor

    def _candidates(self, email: str | None, kinds: frozenset[str] | None) -> array[int] | None:
        """Sorted positions of the records to scan, or ``None`` for all of them."""
        if email is not None:
            positions = self._by_email.get(email, _EMPTY)
            if not kinds:
                return positions
            wanted = {IMPACT_TYPES.index(kind) for kind in kinds}
            codes = self.codes
            return array("q", [p for p in positions if codes[p] in wanted])
        if not kinds:
            return None
        if len(kinds) == 1:
            return self._by_kind[next(iter(kinds))]
        with self._lock:  # at most 26 combinations of several types: merge each once
            merged = self._merged.get(kinds)
            if merged is None:
                merged = array("q", merge(*(self._by_kind[kind] for kind in kinds)))
                self._merged[kinds] = merged
        return merged

    def _locate(self, key: CursorKey) -> tuple[int, bool]:
        """Position of the cursor's record and whether it exists (else: where it would be)."""
        lo = bisect_left(self.times, key.created_on)
        hi = bisect_right(self.times, key.created_on, lo)
        first = bisect_left(self.users, key.user_id, lo, hi)  # users are sorted within a time
        stop = bisect_right(self.users, key.user_id, first, hi)
        if first == stop:
            return first, False
        return min(first + key.seq, stop - 1), True

    def _cursor(self, pos: int) -> str:
        created_on, user_id = self.times[pos], self.users[pos]
        key: dict[str, object] = {"createdOn": created_on, "userID": user_id}
        lo = bisect_left(self.times, created_on)
        hi = bisect_right(self.times, created_on, lo)
        first = bisect_left(self.users, user_id, lo, hi)
        if bisect_right(self.users, user_id, first, hi) - first > 1:
            key["seq"] = pos - first  # only duplicate keys need a tiebreak
        raw = json.dumps(key, separators=(",", ":"), ensure_ascii=False).encode()
        return base64.b64encode(raw).decode("ascii")


def encode_cursor(created_on: str, user_id: str) -> str:
    """The cursor the sandbox sends after the record ``(created_on, user_id)``.

    Parameters
    ----------
    created_on : str
        The record's ``time_utc``.
    user_id : str
        The record's ``user_id``.

    Returns
    -------
    str
        Base64 of the JSON key ``{"createdOn": ..., "userID": ...}``, as DynamoDB-style
        APIs page.

    Examples
    --------
    >>> encode_cursor("2024-07-01T00:00:00.000Z", "U1")[:12]
    'eyJjcmVhdGVk'
    """
    raw = json.dumps({"createdOn": created_on, "userID": user_id}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode("ascii")


def decode_cursor(value: str) -> CursorKey:
    """Decode a cursor parameter; ``BadRequest`` unless it is base64 JSON of the expected keys."""
    # A client that forgets to percent-encode sends base64's "+" raw, which decodes to a space.
    try:
        raw = base64.b64decode(value.replace(" ", "+"), validate=True)
        key = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        msg = "Invalid cursor: not a cursor this API returned"
        raise _bad(msg) from exc
    if not isinstance(key, dict) or not _CURSOR_KEYS <= key.keys() <= _CURSOR_KEYS | {"seq"}:
        msg = "Invalid cursor: not a cursor this API returned"
        raise _bad(msg)
    created_on, user_id, seq = key["createdOn"], key["userID"], key.get("seq", 0)
    if not (isinstance(created_on, str) and isinstance(user_id, str)):
        msg = "Invalid cursor: not a cursor this API returned"
        raise _bad(msg)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        msg = "Invalid cursor: not a cursor this API returned"
        raise _bad(msg)
    return CursorKey(created_on, user_id, seq)


def parse_query(params: Mapping[str, list[str]], *, customers: bool) -> Query:
    """Validate the query parameters of a records endpoint (``BadRequest`` on the first error)."""
    accepted = _CUSTOMER_PARAMS if customers else _PARAMS
    for name, values in params.items():
        if name not in accepted:
            msg = f"Unknown query parameter {name!r}; accepted: {', '.join(accepted)}"
            raise _bad(msg)
        if name != "filter_by" and len(values) > 1:
            msg = f"{name} may be given only once"
            raise _bad(msg)
    kinds = None
    if "filter_by" in params:
        for kind in params["filter_by"]:
            if kind not in IMPACT_TYPES:
                msg = f"Invalid filter_by {kind!r}; accepted: {', '.join(IMPACT_TYPES)}"
                raise _bad(msg)
        kinds = frozenset(params["filter_by"])
    start = _day(params, "start_date")
    end = _day(params, "end_date")
    if start and end and start > end:
        msg = f"start_date ({start}) must not be after end_date ({end})"
        raise _bad(msg)
    limit = API_DEFAULT_LIMIT
    if "limit" in params:
        text = params["limit"][0]
        if not _LIMIT.fullmatch(text) or int(text) > MAX_PAGE_SIZE:
            msg = f"limit must be an integer between 0 and {MAX_PAGE_SIZE}, got {text!r}"
            raise _bad(msg)
        limit = int(text)
    order = params.get("sort_order", ["asc"])[0]
    if order not in SORT_ORDERS:
        msg = f"Invalid sort_order {order!r}; accepted: {', '.join(SORT_ORDERS)}"
        raise _bad(msg)
    cursor = decode_cursor(params["cursor"][0]) if "cursor" in params else None
    email = params.get("customer_email", [None])[0]
    if email == "":
        msg = "customer_email must not be empty"
        raise _bad(msg)
    return Query(kinds, email, start, end, limit, order == "desc", cursor)


def _day(params: Mapping[str, list[str]], name: str) -> str | None:
    if name not in params:
        return None
    text = params[name][0]
    if _DATE.fullmatch(text):
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            pass
        else:
            return text
    msg = f"{name} must be a real date in the format YYYY-MM-DD, got {text!r}"
    raise _bad(msg)


@dataclass
class App:
    """What the sandbox answers: routing, auth, faults, paging, and the request log."""

    api_key: str
    datasets: dict[str, Dataset]
    plan: FaultPlan
    filter_after_limit: bool = False
    latency: float = 0.0
    rate: TokenBucket | None = None  # a gateway's rate limit: 429 + Retry-After past it
    log: deque[LoggedRequest] = field(default_factory=lambda: deque(maxlen=100_000))
    log_lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, handler: Handler) -> None:
        """Answer one request: faults first (a gateway in front of the API), then the API."""
        url = urlsplit(handler.path)
        path = url.path
        params = parse_qs(url.query, keep_blank_values=True)
        faults = self.plan.take(path, "cursor" in params)
        delay = self.latency + sum(f.delay for f in faults if f.kind == "latency")
        if delay:
            time.sleep(delay)
        if self.rate is not None and (wait := self.rate.take()) is not None:
            self._log(handler.command, path, params, 429, "rate_limit", None)
            headers = {"Content-Type": "application/json", "Retry-After": str(wait)}
            send(handler, 429, headers, error_body("rate_limit", "Too many requests"))
            return
        fault = next((f for f in faults if f.kind != "latency"), None)
        label = "+".join(f.kind for f in faults) or None
        kind = fault.kind if fault is not None else None
        if kind == "drop":
            self._log(handler.command, path, params, None, label, None)
            handler.close_connection = True  # nothing written: the client sees a dropped socket
            return
        count: int | None = None
        if fault is not None and kind == "status":
            status, headers, body = fault.response()
        else:
            try:
                key = handler.headers.get(API_KEY_HEADER)
                status, body, count = self.answer(path, params, key, repeat=kind == "repeat")
            except BadRequest as exc:
                status, body = exc.status, error_body(exc.error_type, exc.message)
            headers = {"Content-Type": "application/json"}
        # Log before sending: a client that got its answer must find the request in the log.
        self._log(handler.command, path, params, status, label, count)
        send(handler, status, headers, body, truncate=kind == "truncate")

    def answer(
        self, path: str, params: dict[str, list[str]], key: str | None, *, repeat: bool = False
    ) -> tuple[int, bytes, int]:
        """Status, body and record count of a request no status/drop fault intercepted."""
        endpoint = _ROUTES.get(path)
        if endpoint is None:
            routes = ", ".join(_ROUTES)
            raise BadRequest(404, "not_found", f"No such endpoint {path!r}; endpoints: {routes}")
        records_key = ENDPOINTS[endpoint][1]
        if key is None or not hmac.compare_digest(
            key.encode("utf-8", "surrogateescape"), self.api_key.encode("utf-8", "surrogateescape")
        ):
            raise BadRequest(401, "key_error", "API Key does not exist")
        query = parse_query(params, customers=endpoint == "customer_records")
        items, cursor = self.datasets[endpoint].page(
            query, filter_after_limit=self.filter_after_limit, repeat=repeat
        )
        parts = [b'{"', records_key.encode(), b'":[', b",".join(items), b"]"]
        if cursor is not None:
            parts += [b',"cursor":"', cursor.encode("ascii"), b'"']
        parts.append(b"}")
        return 200, b"".join(parts), len(items)

    def _log(
        self,
        method: str,
        path: str,
        params: dict[str, list[str]],
        status: int | None,
        fault: str | None,
        count: int | None,
    ) -> None:
        entry = LoggedRequest(method, path, params, status, fault, count)
        with self.log_lock:
            self.log.append(entry)
        logger.debug("%s %s %s -> %s (fault: %s)", method, path, params, status, fault)


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    truncate: bool = False,
) -> None:
    """Write one response; ``truncate`` announces the full length but sends half and closes."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body[: len(body) // 2] if truncate else body)
    if truncate:
        handler.close_connection = True


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; everything it does goes through :class:`App`."""

    protocol_version = "HTTP/1.1"
    server_version = "impactframe-sandbox"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body are two writes: do not wait for an ACK
    server: SandboxHTTPServer

    def version_string(self) -> str:
        """The ``Server`` header."""
        return self.server_version

    def do_GET(self) -> None:
        """Serve a GET request."""
        try:
            self.server.app.handle(self)
        except OSError as exc:  # the client went away mid-answer
            logger.debug("client %s disconnected: %r", self.client_address, exc)
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unsupported method) as API-style JSON."""
        self.close_connection = True
        if code == 501:
            error_type, text = "method_not_allowed", f"Method {self.command!r} is not supported"
        else:
            error_type, text = "validation_error", message or "Bad request"
        headers = {"Content-Type": "application/json", "Connection": "close"}
        try:
            send(self, code, headers, error_body(error_type, text))
        except OSError as exc:
            logger.debug("client %s disconnected: %r", self.client_address, exc)

    def log_message(self, format: str, *args: Any) -> None:
        """Log to ``impactframe.sandbox`` at DEBUG instead of printing to stderr."""
        logger.debug("%s - " + format, self.address_string(), *args)


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that can close its keep-alive connections when stopped."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: App, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup of the host (slow on some hosts)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection so that :meth:`close_connections` can end it."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget a connection its handler has finished with, then close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection, waking handler threads blocked in a read."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:  # already closed by its handler thread meanwhile
                logger.debug("closing a connection: %r", exc)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client disconnects are routine (DEBUG); anything else is a sandbox bug (ERROR)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            logger.debug("connection from %s ended: %r", client_address, exc)
        else:
            logger.error("error while serving %s", client_address, exc_info=True)
