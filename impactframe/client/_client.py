"""The HTTP client: one pooled ``requests`` session, the key header, retries and error mapping.

`Client.get_json` is the only place that touches the network. Its decisions (retry or not, how
long to wait, where the next page is) come from the pure modules `_retry` and `_paging`. Beside
it: `_secrets` (the key and the base URL, checked; the key masked; loopback kept off
environment proxies), `_errors` (a failed exchange to the exception SPEC §4 names),
`_pooled` (the GET through the session's urllib3 pool, and the capped body read both routes
share) and `_deadline` (the total deadline per request).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests

from .._constants import (
    API_KEY_HEADER,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENDPOINTS,
    ENVIRONMENTS,
)
from .._paging._cap import _check_walk, _walk_query
from .._paging._pages import Page, RawPage, parse_page, parse_raw_page
from .._params import Query, check_choice, reject
from .._version import package_version
from ..errors import APIError, ValidationError
from . import _pooled as _transport
from ._deadline import WATCHDOG, Deadline, DeadlineAdapter, watching
from ._errors import (
    _FATAL,
    _RETRYABLE_EXCEPTIONS,
    _TRANSIENT,
    FINAL,
    QUICK_FAIL,
    DeadlinePassed,
    _BrokenBody,
    _not_json,
    _request_error,
    _status_error,
    _UnreadableBody,
    classify,
    transport_error,
)
from ._pooled import read_body
from ._retry import backoff_delay, is_retryable_status, parse_retry_after
from ._secrets import (
    _fingerprint,
    _resolve_api_key,
    _resolve_base_url,
    _Secret,
    direct_proxies,
)

__all__ = ["DEADLINE_PER_TIMEOUT", "DEFAULT_MAX_BODY_BYTES", "Client"]

logger = logging.getLogger("impactframe")

_HEAD_SIZE = 512
#: The default cap on a decoded body: a page of 1000 records is about 0.5 MB.
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
#: The default total deadline per request, as a multiple of ``timeout``.
DEADLINE_PER_TIMEOUT = 3
_POOL_MAXSIZE = 32
_UNKNOWN = object()


def _user_agent() -> str:
    return f"impactframe/{package_version()}"


class WalkAbandoned(Exception):
    """Raised in a thread whose walk nobody will read any more (see `abandon_on`)."""


_waits = threading.local()  # .stop: the Event that abandons this thread's walk, if any


@contextlib.contextmanager
def abandon_on(stop: threading.Event) -> Iterator[None]:
    """While inside, this thread's retry waits end, raising `WalkAbandoned`, once ``stop`` is
    set: a worker waiting out a ``Retry-After`` of minutes must not hold up Ctrl-C or an error.
    """
    _waits.stop = stop
    try:
        yield
    finally:
        _waits.stop = None


def _sleep(seconds: float) -> None:
    stop: threading.Event | None = getattr(_waits, "stop", None)
    if stop is None:
        # Looked up at call time, so patching ``time.sleep`` also reaches existing clients.
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise WalkAbandoned


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
        Retries after the first attempt (429, 5xx, dropped connections, timeouts). A refused
        connection, an unknown host or a TLS failure gets at most one quick retry.
    session : requests.Session, optional
        Your own session (proxies, certificates). It is used as is and never closed here; the key
        travels per request and is never added to its headers. Proxies you set on it are
        honoured, also for a loopback base URL (your choice); the environment's
        (``HTTP_PROXY``, ``ALL_PROXY``...) never apply to a loopback host.
    allow_insecure : bool
        Accept plain ``http`` to a non-loopback host (the key would cross the network unencrypted).
    max_body_bytes : int
        The cap on one decoded response body (compressed bodies are counted decoded, as they
        inflate): past it, `TransportError` at once, with about this much memory used at most
        (twice, at the moment the pieces are joined). Default 256 MiB; a page is about 0.5 MB.
    deadline : float, optional
        Seconds one request may take in all, from connecting to the last byte of the body
        (``timeout`` bounds each read only: a server dripping a byte a second never trips it).
        Past it, `TransportError` at once, not retried. Default ``3 * timeout`` (90 s). On
        your own `session`, it covers the body (the status line and headers: each read's
        ``timeout`` only).

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
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        deadline: float | None = None,
    ) -> None:
        self._api_key = _Secret(_resolve_api_key(api_key))
        check_choice(environment, "environment", ENVIRONMENTS)
        self.base_url: str = _resolve_base_url(base_url, environment, allow_insecure)
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
        if (
            isinstance(max_body_bytes, bool)
            or not isinstance(max_body_bytes, int)
            or max_body_bytes < 1
        ):
            reject("max_body_bytes", max_body_bytes, "an int of bytes >= 1")
        self.max_body_bytes = max_body_bytes
        if deadline is None:
            deadline = DEADLINE_PER_TIMEOUT * self.timeout
        if (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not math.isfinite(deadline)
            or deadline <= 0
        ):
            reject("deadline", deadline, "a number of seconds > 0, or None (3 x timeout)")
        self.deadline = float(deadline)
        if session is not None and not isinstance(session, requests.Session):
            shown = f"a value of type {type(session).__name__}"
            reject("session", session, "a requests.Session or None", shown=shown)
        self._owns_session = session is None
        self._session = session if session is not None else self._new_session()
        # Per-request proxies: a loopback base URL never goes through an environment proxy
        # (the key would reach whatever listens there, in clear text); None elsewhere.
        self._proxies = direct_proxies(self._session.proxies, self.base_url)
        # The key joins these per request (see `_exchange`), so no dict of ours ever holds it.
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
        # DeadlineAdapter: HTTPAdapter whose sockets the deadline can cut (see `_deadline`).
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=_POOL_MAXSIZE, max_retries=0)
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
        return _fingerprint(self.base_url, self._api_key.get())

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, fingerprint={self.fingerprint!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _send(self, url: str, params: Mapping[str, Any]) -> tuple[int, bytes, Mapping[str, str]]:
        """One HTTP exchange within `deadline` seconds, whole (see `_deadline`)."""
        deadline = WATCHDOG.arm(self.deadline)
        status: int | None = None
        try:
            with watching(deadline):
                answer = self._exchange(url, params, deadline)
        except Exception as exc:
            if not WATCHDOG.disarm(deadline):
                raise
            status = getattr(exc, "status", None)  # passed: the cut caused this failure
        else:
            if not WATCHDOG.disarm(deadline):
                return answer
            status = answer[0]  # passed: a body "ending" at the cut may be short
        finally:
            WATCHDOG.disarm(deadline)  # also on KeyboardInterrupt; idempotent
        raise DeadlinePassed(status, self.deadline)

    def _exchange(
        self, url: str, params: Mapping[str, Any], deadline: Deadline
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """Send the GET and read the body; the body is read here so that a cut-short body keeps
        its status. The key header is built here, from a `MaskedKey`, so that no frame holds it
        in a form whose ``repr`` shows it."""
        headers = {**self._headers, API_KEY_HEADER: self._api_key.get()}
        if self._route is _UNKNOWN:
            self._route = _transport.route(self._session, url, self._proxies)
        way = self._route
        if way is not None and _transport.usable(way, url):  # type: ignore[arg-type]
            raw = _transport.open_pooled(way, url, params, headers, self.timeout)  # type: ignore[arg-type]
        else:
            raw = self._session.get(
                url,
                params=params,
                headers=headers,
                timeout=self.timeout,
                stream=True,
                # requests strips only Authorization on a cross-host redirect, not x-api-key.
                allow_redirects=False,
                # Loopback: never an environment proxy (SPEC §10). A None value is requests' way
                # to drop a key (merge_setting), which its stubs do not say.
                proxies=self._proxies,  # type: ignore[arg-type]
            ).raw
        del headers
        # On a caller's session (not `DeadlineAdapter`), the deadline covers the body from here.
        deadline.attach(getattr(getattr(raw, "connection", None), "sock", None))
        status: int = raw.status
        chunks: list[bytes] = []
        done = False
        try:
            read_body(raw, self.max_body_bytes, chunks, _HEAD_SIZE)
            done = True
        except _RETRYABLE_EXCEPTIONS as exc:
            raise _BrokenBody(status, b"".join(chunks), exc) from exc
        except requests.RequestException as exc:  # ContentDecodingError: not worth a retry
            raise _UnreadableBody(status, exc) from exc
        finally:
            if not done:  # as Response.close: a half-read connection is not reused
                raw.close()
            raw.release_conn()
        return status, b"".join(chunks), raw.headers

    def _transport_error(
        self, exc: Exception, path: str, attempts: int, started: float
    ) -> Exception:
        return transport_error(
            exc,
            host=urlsplit(self.base_url).netloc,
            path=path,
            attempts=attempts,
            seconds=time.monotonic() - started,
            timeout=self.timeout,
            secret=self._api_key,
        )

    def _decode(self, status: int, body: bytes) -> object:
        if 300 <= status < 400:
            msg = "unexpected redirect (not followed, so the key is not sent elsewhere)"
            raise APIError(msg, status=status)
        if not 200 <= status < 300:
            raise _status_error(status, body, self._api_key)
        try:
            return json.loads(body)
        # JSONDecodeError, UnicodeDecodeError, and nesting deeper than Python can recurse
        except (ValueError, RecursionError) as exc:
            raise _not_json(status, body, exc, self._api_key) from None

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
        TransportError
            No usable response after the retries worth making: a refused connection, an unknown
            host, TLS, a proxy, a timeout, a connection dropped (``status=None``) or a body cut
            short (with the status and the start of the body); at once, a body over
            `max_body_bytes` or a request past `deadline`. The message names the host, the
            cause, the tries and what to check; not chained (the ``requests`` exception holds
            the request and its headers).
        APIError
            Any other error status (with the API's ``type`` and ``message``), a body that is not
            JSON, or at once any other ``requests`` failure, such as a body that cannot be
            decoded.
        RuntimeError
            The client is closed, or was closed while a retry waited (nothing more is sent).

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
        started = time.monotonic()
        while True:
            failure: Exception | None = None
            try:
                status, body, headers = self._send(url, params)
            except _TRANSIENT as exc:
                quick = classify(exc) in QUICK_FAIL  # a wrong port or host: one quick retry
                if attempt >= (min(self.max_retries, 1) if quick else self.max_retries):
                    failure = self._transport_error(exc, path, attempt + 1, started)
                reason = type(exc.cause if isinstance(exc, _BrokenBody) else exc).__name__
                if isinstance(exc, _BrokenBody):
                    reason = f"HTTP {exc.status}, body cut short: {reason}"
                retry_after = None
            except FINAL as exc:  # too large or too slow: a retry would only repeat it
                failure = self._transport_error(exc, path, attempt + 1, started)
            except _FATAL as exc:  # not worth another try: a body that cannot be decoded, ...
                failure = _request_error(exc, self._api_key)
            else:
                if not (is_retryable_status(status) and attempt < self.max_retries):
                    logger.debug("GET %s -> HTTP %s (attempt %d)", path, status, attempt + 1)
                    return status, body
                reason = f"HTTP {status}"
                retry_after = parse_retry_after(headers.get("Retry-After"), now=self._now())
            if failure is not None:
                # Raised outside the except block, so not chained: the requests exception
                # carries the prepared request and its headers (SPEC §6). Ours says what failed.
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
            if self._closed:  # by another thread during the wait: send nothing more
                msg = f"this Client was closed while GET {path} waited for retry {attempt}"
                msg += "; the retry was not sent"
                raise RuntimeError(msg)

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

        Parameters
        ----------
        endpoint : {"records", "customer_records"}
            Which endpoint.
        params : mapping
            Query parameters, e.g. from `Query.to_params`.

        Returns
        -------
        RawPage

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
            raise _not_json(status, body, exc, self._api_key) from None

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
        cap = _check_walk(endpoint, query, max_records)
        # Checks above run at call time; the walk itself starts on the first next().
        return _walk_query(endpoint, query, cap, self.get_page)

    def iter_raw_pages(
        self, endpoint: str, query: Query, *, max_records: int | None = None
    ) -> Iterator[RawPage]:
        """`iter_pages` for the fast path: the same walk, yielding `RawPage` objects.

        Same requests, checks, errors and ``max_records`` trimming as `iter_pages`; the records
        of each page stay in its body (bytes) for `FastFrameBuilder.add_raw`.

        Parameters
        ----------
        endpoint : {"records", "customer_records"}
            Which endpoint.
        query : Query
            From `normalize_query`.
        max_records : int, optional
            Stop once this many records were yielded, as in `iter_pages`.

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
        cap = _check_walk(endpoint, query, max_records)
        return _walk_query(endpoint, query, cap, self.get_raw_page)

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
