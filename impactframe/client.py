"""The HTTP client: one pooled ``requests`` session, the key header, retries and error mapping.

`Client.get_json` is the only place that touches the network. Its decisions (retry or not, how
long to wait, where the next page is) come from the pure modules `_retry` and `_paging`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from . import _transport
from ._constants import (
    API_KEY_HEADER,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENDPOINTS,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENVIRONMENTS,
)
from ._paging import Page, RawPage, parse_page, parse_raw_page, walk
from ._params import Query, check_choice, normalize_max_records
from ._retry import backoff_delay, is_retryable_status, parse_retry_after
from .errors import APIError, AuthenticationError, RateLimitError, ValidationError

__all__ = ["Client"]

logger = logging.getLogger("impactframe")

#: Transport failures worth another try. ``ChunkedEncodingError`` is what requests raises when
#: the body ends before its Content-Length (urllib3 ``IncompleteRead``); it is *not* a
#: ``ConnectionError``. ``ConnectTimeout`` is both a ConnectionError and a Timeout.
_RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_SNIPPET_CHARS = 200
_HEAD_SIZE = 512
_CHUNK_SIZE = 64 * 1024
_POOL_MAXSIZE = 32
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
_UNKNOWN = object()


def _user_agent() -> str:
    # Not ``from . import __version__``: the package's __init__ imports this module.
    try:
        return f"impactframe/{version('impactframe')}"
    except PackageNotFoundError:  # a source tree that was never installed
        return "impactframe/0.0.0"


def _sleep(seconds: float) -> None:
    # Looked up at call time, so patching ``time.sleep`` also reaches existing clients.
    time.sleep(seconds)


class _Secret:
    """Holds the API key so that ``repr``, ``vars`` and debuggers show ``***`` instead."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('***')"


class _BrokenBody(Exception):
    """The status line arrived but the body did not arrive whole (dropped or cut short)."""

    def __init__(self, status: int, partial: bytes, cause: Exception) -> None:
        self.status = status
        self.partial = partial
        self.cause = cause
        super().__init__(f"HTTP {status}: body cut short ({type(cause).__name__})")


#: Everything `get_json` retries on.
_TRANSIENT: tuple[type[Exception], ...] = (_BrokenBody, *_RETRYABLE_EXCEPTIONS)


def _resolve_api_key(api_key: object) -> str:
    if api_key is None:
        api_key = os.environ.get(ENV_API_KEY) or None
    if api_key is None:
        msg = f"No API key: pass api_key= or set the {ENV_API_KEY} environment variable"
        raise ValueError(msg)
    if not isinstance(api_key, str):
        msg = f"api_key: expected a str or None (then {ENV_API_KEY} is read), "
        msg += f"got {type(api_key).__name__}"
        raise ValueError(msg)
    key = api_key.strip()
    # The key goes into a header; requests would echo a malformed value in its own error.
    if not key or any(not (0x21 <= ord(ch) <= 0x7E) for ch in key):
        msg = (
            f"api_key (or {ENV_API_KEY}) is empty or holds spaces, control or non-ASCII "
            "characters; expected the key exactly as issued (its value is not shown)"
        )
        raise ValueError(msg)
    return key


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# A host name, an IPv4 address or an IPv6 literal: no spaces, controls or URL delimiters.
_HOST_RE = re.compile(r"[A-Za-z0-9._~%:-]+")


def _normalize_base_url(url: object, *, allow_insecure: bool) -> str:
    accepted = "expected an http(s) URL with a host, e.g. 'https://api.1clickimpact.com'"
    if not isinstance(url, str):
        msg = f"base_url: {url!r} is not accepted; {accepted}"
        raise ValueError(msg)
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError as exc:  # e.g. a port that is not a number, a broken IPv6 literal
        msg = f"base_url: {url!r} is not accepted ({exc}); {accepted}"
        raise ValueError(msg) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host or not _HOST_RE.fullmatch(host):
        msg = f"base_url: {url!r} is not accepted; {accepted}"
        raise ValueError(msg)
    if parts.username is not None or parts.password is not None:
        msg = "base_url: credentials in the URL are not accepted; pass the key as api_key="
        raise ValueError(msg)
    if parts.query or parts.fragment:
        msg = f"base_url: {url!r} has a query or fragment; {accepted}"
        raise ValueError(msg)
    if scheme == "http" and not allow_insecure and not _is_loopback(host):
        msg = (
            f"base_url: {url!r} is plain http to a non-loopback host, which would send the API "
            "key in clear text; expected https (http only for localhost/127.0.0.0/8/::1), or "
            "pass allow_insecure=True"
        )
        raise ValueError(msg)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


_PageT = TypeVar("_PageT", Page, RawPage)


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
    if isinstance(page, Page):
        return Page(records[:end], page.cursor), new
    return RawPage(None, end, page.cursor, records[:end]), new


class Client:
    """A connection to the Records API: pooled, authenticated, retrying.

    Parameters
    ----------
    api_key : str, optional
        The API key; defaults to the ``IMPACTFRAME_API_KEY`` environment variable.
    environment : {"production", "sandbox"}
        Which 1ClickImpact host to use when no base URL is given.
    base_url : str, optional
        Overrides the host: this argument, else ``IMPACTFRAME_BASE_URL``, else `environment`'s.
        Plain ``http`` is accepted for loopback hosts only (SPEC §10).
    timeout : float
        Seconds to wait for a connection and for each read.
    max_retries : int
        Retries after the first attempt (429, 5xx, dropped connections, timeouts).
    session : requests.Session, optional
        Your own session (proxies, certificates). It is used as is and never closed here; the key
        travels per request and is never added to its headers.
    allow_insecure : bool
        Accept plain ``http`` to a non-loopback host (the key would cross the network unencrypted).

    Raises
    ------
    ValueError
        No key anywhere (the message names ``IMPACTFRAME_API_KEY``), or a bad argument. Nothing
        is sent before these checks pass.

    Examples
    --------
    >>> client = Client("my-key", base_url="http://127.0.0.1:8000/")
    >>> client.base_url
    'http://127.0.0.1:8000'
    >>> "my-key" in repr(client)
    False
    >>> client.close()
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        environment: str = "production",
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        session: requests.Session | None = None,
        allow_insecure: bool = False,
    ) -> None:
        self._api_key = _Secret(_resolve_api_key(api_key))
        check_choice(environment, "environment", ENVIRONMENTS)
        if base_url is None:
            base_url = os.environ.get(ENV_BASE_URL) or ENVIRONMENTS[environment]
        if not isinstance(allow_insecure, bool):
            msg = f"allow_insecure must be True or False; got {allow_insecure!r}"
            raise ValueError(msg)
        self.base_url: str = _normalize_base_url(base_url, allow_insecure=allow_insecure)
        self.environment = environment
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            msg = f"timeout: {timeout!r} is not accepted; expected a number of seconds > 0"
            raise ValueError(msg)
        self.timeout = float(timeout)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            msg = f"max_retries: {max_retries!r} is not accepted; expected an int >= 0"
            raise ValueError(msg)
        self.max_retries = max_retries
        if session is not None and not isinstance(session, requests.Session):
            msg = f"session: expected a requests.Session or None, got {type(session).__name__}"
            raise ValueError(msg)
        self._owns_session = session is None
        self._session = session if session is not None else self._new_session()
        # The key joins these per request (see `_send`), so no dict of ours ever holds it.
        self._headers = {"Accept": "application/json"}
        # A user's session keeps its own User-Agent unless it still has requests' default.
        user_agent = str(self._session.headers.get("User-Agent", ""))
        if not self._owns_session and user_agent.startswith("python-requests"):
            self._headers["User-Agent"] = _user_agent()
        # Effects, swappable by tests: never sleep for real, draw jitter from a seeded rng.
        self._sleep: Callable[[float], None] = _sleep
        self._rng = random.Random()
        self._now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
        self._closed = False
        # The pooled route of `_send` (found on the first request; see `_transport`).
        self._route: _transport.Route | object | None = _UNKNOWN

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        # Room for concurrent page fetches (concurrency=N) over kept-alive connections; retries
        # are ours, so urllib3's own are off.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_MAXSIZE, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = _user_agent()
        return session

    @property
    def fingerprint(self) -> str:
        """A short, stable id of (base URL, key) for cache folders; reveals neither.

        The first 16 hex digits of ``sha256(base_url + "\\n" + key)``.

        Examples
        --------
        >>> a = Client("k1", base_url="http://localhost:1")
        >>> b = Client("k2", base_url="http://localhost:1")
        >>> len(a.fingerprint), a.fingerprint == b.fingerprint
        (16, False)
        """
        data = f"{self.base_url}\n{self._api_key.get()}".encode()
        return hashlib.sha256(data).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, fingerprint={self.fingerprint!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key.get(), "***")

    def _snippet(self, body: bytes) -> str:
        text = body[: _SNIPPET_CHARS * 4].decode("utf-8", errors="replace")
        return self._redact(text)[:_SNIPPET_CHARS]

    def _send(self, url: str, params: Mapping[str, Any]) -> tuple[int, bytes, Mapping[str, str]]:
        """One HTTP exchange; the body is read here so that a cut-short body keeps its status."""
        headers = {**self._headers, API_KEY_HEADER: self._api_key.get()}
        if self._route is _UNKNOWN:
            self._route = _transport.route(self._session, url)
        way = self._route
        if way is not None and _transport.usable(way, url):  # type: ignore[arg-type]
            return self._send_pooled(way, url, params, headers)  # type: ignore[arg-type]
        response = self._session.get(
            url,
            params=params,
            headers=headers,
            timeout=self.timeout,
            stream=True,
            # requests strips only Authorization on a cross-host redirect, not x-api-key.
            allow_redirects=False,
        )
        chunks: list[bytes] = []
        try:
            # A small first read keeps the start of a body that is later cut short (urllib3
            # drops a whole read on IncompleteRead); then large reads for speed.
            chunks.append(next(response.iter_content(_HEAD_SIZE), b""))
            if chunks[0]:  # else the body was empty, and the stream is consumed already
                chunks.extend(response.iter_content(_CHUNK_SIZE))
        except _RETRYABLE_EXCEPTIONS as exc:
            raise _BrokenBody(response.status_code, b"".join(chunks), exc) from exc
        finally:
            response.close()
        return response.status_code, b"".join(chunks), response.headers

    def _send_pooled(
        self,
        way: _transport.Route,
        url: str,
        params: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """`_send` through the session's urllib3 pool (see `impactframe._transport`)."""
        response = _transport.open_pooled(way, url, params, headers, self.timeout)
        chunks: list[bytes] = []
        done = False
        try:
            chunks.append(_transport.read_pooled(response, _HEAD_SIZE))
            chunks.append(_transport.read_pooled(response, None))
            done = True
        except _RETRYABLE_EXCEPTIONS as exc:
            raise _BrokenBody(response.status, b"".join(chunks), exc) from exc
        finally:
            if not done:  # as Response.close: a half-read connection is not reused
                response.close()
            response.release_conn()
        return response.status, b"".join(chunks), response.headers

    def _error(self, status: int, body: bytes) -> APIError:
        """Map an error response to the exception SPEC §4 names."""
        error_type: str | None = None
        message = self._snippet(body) or "(empty body)"
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            if isinstance(decoded.get("type"), str):
                error_type = decoded["type"]
            if isinstance(decoded.get("message"), str):
                message = self._redact(decoded["message"])
        if status in (401, 403) or error_type == "key_error":
            cls: type[APIError] = AuthenticationError
        elif status == 429:
            cls = RateLimitError
        else:
            cls = APIError
        return cls(message, status=status, error_type=error_type)

    def _decode(self, status: int, body: bytes) -> object:
        if 300 <= status < 400:
            msg = "unexpected redirect (not followed, so the key is not sent elsewhere)"
            raise APIError(msg, status=status)
        if not 200 <= status < 300:
            raise self._error(status, body)
        try:
            return json.loads(body)
        # JSONDecodeError, UnicodeDecodeError, and nesting deeper than Python can recurse
        except (ValueError, RecursionError) as exc:
            raise self._not_json(status, body, exc) from None

    def _not_json(self, status: int, body: bytes, exc: Exception) -> APIError:
        start = repr(self._snippet(body)) if body else "(empty body)"
        msg = f"response body is not JSON ({exc.__class__.__name__}): {start}"
        return APIError(msg, status=status)

    # -- public ---------------------------------------------------------------------------------

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> object:
        """Send one GET (with retries) and return the decoded JSON body.

        Parameters
        ----------
        path : str
            The path under `base_url`, e.g. ``"/v1/records"``.
        params : mapping, optional
            Query parameters; list values become repeated keys. ``requests`` percent-encodes
            them (cursors carry ``+``, ``/`` and ``=``).

        Returns
        -------
        object
            The decoded body.

        Raises
        ------
        AuthenticationError
            401/403, or an error of type ``key_error``.
        RateLimitError
            429 after every retry.
        APIError
            Any other error status (with the API's ``type`` and ``message``), a body that is not
            JSON or cut short (with the status and the start of the body), or a network failure
            after every retry (``status=None``, chained to the last exception).

        Examples
        --------
        >>> from impactframe.sandbox import SandboxServer
        >>> with SandboxServer(n_records=3) as server, Client(
        ...     server.api_key, base_url=server.url
        ... ) as client:
        ...     body = client.get_json("/v1/records", {"limit": "2"})
        >>> len(body["user_records"]), "cursor" in body
        (2, True)
        """
        return self._decode(*self._request(path, params))

    def _request(self, path: str, params: Mapping[str, Any] | None) -> tuple[int, bytes]:
        """One GET with retries: the status and body of the answer that is not retried."""
        if self._closed:
            msg = "this Client is closed"
            raise RuntimeError(msg)
        if not path.startswith("/"):
            msg = f"path: {path!r} is not accepted; expected a path starting with '/'"
            raise ValueError(msg)
        url = f"{self.base_url}{path}"
        params = dict(params or {})
        attempt = 0
        while True:
            failure = None
            try:
                status, body, headers = self._send(url, params)
            except _TRANSIENT as exc:
                if attempt >= self.max_retries:
                    failure = self._network_error(exc, attempt)
                reason = type(exc.cause if isinstance(exc, _BrokenBody) else exc).__name__
                if isinstance(exc, _BrokenBody):
                    reason = f"HTTP {exc.status}, body cut short: {reason}"
                retry_after = None
            else:
                if not (is_retryable_status(status) and attempt < self.max_retries):
                    logger.debug("GET %s -> HTTP %s (attempt %d)", path, status, attempt + 1)
                    return status, body
                reason = f"HTTP {status}"
                retry_after = parse_retry_after(headers.get("Retry-After"), now=self._now())
            if failure is not None:
                # Raised outside the except block, so not chained: the requests exception
                # carries the prepared request, whose headers hold the key (SPEC §6). Its type
                # and message are in ours.
                raise failure
            delay = backoff_delay(attempt, retry_after=retry_after, rng=self._rng)
            attempt += 1
            logger.warning(
                "GET %s failed (%s); retry %d of %d in %.2f s",
                path,
                reason,
                attempt,
                self.max_retries,
                delay,
            )
            self._sleep(delay)

    def _network_error(self, exc: Exception, retries: int) -> APIError:
        if isinstance(exc, _BrokenBody):
            msg = self._redact(
                f"the response body was cut short, {retries} retries "
                f"({type(exc.cause).__name__}: {exc.cause}); it began: "
            )
            msg += repr(self._snippet(exc.partial))
            return APIError(msg, status=exc.status)
        msg = self._redact(f"network error after {retries} retries: {type(exc).__name__}: {exc}")
        return APIError(msg, status=None)

    def get_page(self, endpoint: str, params: Mapping[str, Any]) -> Page:
        """Fetch one page of an endpoint (with retries) and check its shape.

        Parameters
        ----------
        endpoint : {"records", "customer_records"}
            Which endpoint.
        params : mapping
            Query parameters, e.g. from `Query.to_params`.

        Returns
        -------
        Page

        Raises
        ------
        ValueError
            If `endpoint` is unknown.
        APIError
            See `get_json`.
        ValidationError
            If the body does not have the endpoint's shape (see `parse_page`).

        Examples
        --------
        >>> from impactframe.sandbox import SandboxServer
        >>> with SandboxServer(n_records=3) as server, Client(
        ...     server.api_key, base_url=server.url
        ... ) as client:
        ...     page = client.get_page("records", {"limit": "5"})
        ...     raw = client.get_raw_page("records", {"limit": "5"})
        >>> len(page.records), page.cursor, raw.count, raw.body[:16]
        (3, None, 3, b'{"user_records":')
        """
        check_choice(endpoint, "endpoint", ENDPOINTS)
        path, records_key = ENDPOINTS[endpoint]
        return parse_page(self.get_json(path, params), records_key)

    def get_raw_page(self, endpoint: str, params: Mapping[str, Any]) -> RawPage:
        """`get_page` for the fast path: the body stays bytes, only its envelope is read.

        Same request, retries, checks and errors as `get_page` (see `parse_raw_page`).

        Examples
        --------
        See `get_page`, whose example reads the same page both ways.
        """
        check_choice(endpoint, "endpoint", ENDPOINTS)
        path, records_key = ENDPOINTS[endpoint]
        status, body = self._request(path, params)
        if not 200 <= status < 300:
            self._decode(status, body)  # raises the error get_page raises
        try:
            return parse_raw_page(body, records_key)
        except ValidationError:
            raise
        except (ValueError, RecursionError) as exc:  # not JSON, as json.loads in get_json
            raise self._not_json(status, body, exc) from None

    def iter_pages(
        self, endpoint: str, query: Query, *, max_records: int | None = None
    ) -> Iterator[Page]:
        """Walk every page of a query, following cursors; lazily, one request per page.

        Parameters
        ----------
        endpoint : {"records", "customer_records"}
            Which endpoint.
        query : Query
            From `normalize_query`.
        max_records : int, optional
            Stop once this many records were yielded. Each request asks for at most the records
            still missing, and no page is fetched beyond the one that completes the count.

        Yields
        ------
        Page
            In API order; with `max_records`, the last page is trimmed if the API sent extra.

        Raises
        ------
        ValueError
            Bad `endpoint` or `max_records`, or a customer e-mail on ``"records"``.
        PaginationError
            If a cursor repeats.
        APIError, ValidationError
            See `get_page`.

        Examples
        --------
        >>> from impactframe._params import normalize_query
        >>> from impactframe.sandbox import SandboxServer
        >>> query = normalize_query("records", page_size=4)
        >>> with SandboxServer(n_records=10) as server, Client(
        ...     server.api_key, base_url=server.url
        ... ) as client:
        ...     sizes = [len(p.records) for p in client.iter_pages("records", query)]
        ...     capped = [len(p.records)
        ...               for p in client.iter_pages("records", query, max_records=5)]
        >>> sizes, capped
        ([4, 4, 2], [4, 1])
        """
        cap = self._check_walk(endpoint, query, max_records)
        # Checks above run at call time; the walk itself starts on the first next().
        return self._walk(endpoint, query, cap, self.get_page)

    def iter_raw_pages(
        self, endpoint: str, query: Query, *, max_records: int | None = None
    ) -> Iterator[RawPage]:
        """`iter_pages` for the fast path: the same walk, yielding `RawPage` objects.

        Same requests, checks, errors and ``max_records`` trimming as `iter_pages`; the records
        of each page stay in its body (bytes) for `FastFrameBuilder.add_raw`.

        Examples
        --------
        >>> from impactframe._params import normalize_query
        >>> from impactframe.sandbox import SandboxServer
        >>> with SandboxServer(n_records=10) as server, Client(
        ...     server.api_key, base_url=server.url
        ... ) as client:
        ...     pages = [*client.iter_raw_pages("records", normalize_query("records", page_size=4))]
        >>> [page.count for page in pages], pages[0].body[:16]
        ([4, 4, 2], b'{"user_records":')
        """
        cap = self._check_walk(endpoint, query, max_records)
        return self._walk(endpoint, query, cap, self.get_raw_page)

    @staticmethod
    def _check_walk(endpoint: str, query: Query, max_records: int | None) -> int | None:
        check_choice(endpoint, "endpoint", ENDPOINTS)
        if not isinstance(query, Query):
            msg = f"query: expected an impactframe Query, got {type(query).__name__}"
            raise ValueError(msg)
        if query.customer_email is not None and endpoint != "customer_records":
            msg = "customer_email: only the 'customer_records' endpoint accepts it, "
            msg += f"not {endpoint!r}"
            raise ValueError(msg)
        return normalize_max_records(max_records)

    def _walk(
        self,
        endpoint: str,
        query: Query,
        cap: int | None,
        get: Callable[[str, Mapping[str, Any]], _PageT],
    ) -> Iterator[_PageT]:
        remaining = cap

        def fetch(cursor: str | None) -> _PageT:
            limit = query.page_size if remaining is None else min(query.page_size, remaining)
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

    def close(self) -> None:
        """Close the session if this client created it (a user's session is left open).

        Examples
        --------
        >>> client = Client("k", base_url="http://localhost:1")
        >>> client.close(); client.close()  # idempotent
        """
        if not self._closed and self._owns_session:
            self._session.close()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
