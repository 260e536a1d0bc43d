"""The HTTP client: one pooled ``requests`` session, the key header, retries and error mapping.

`Client.get_json` and `Client.get_body` are the only places that touch the network. Their
decisions (retry or not, how long to wait) come from the pure module `_retry`. Beside it:
`_secrets` (the key and the base URL, checked; the key masked) and `_errors` (a failed exchange
to the exception SPEC §4 names). Pages and cursor walks live above, in `impactframe._paging`,
which calls `get_body`; a walk abandons a request's retry wait through its ``cancel`` event.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import requests
from requests.adapters import HTTPAdapter

from .._constants import (
    API_KEY_HEADER,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENVIRONMENTS,
)
from .._params import check_choice, reject
from .._version import package_version
from ..errors import APIError, ValidationError
from . import _pooled as _transport
from ._errors import (
    _FATAL,
    _RETRYABLE_EXCEPTIONS,
    _TRANSIENT,
    _BrokenBody,
    _network_error,
    _not_json,
    _request_error,
    _status_error,
    _UnreadableBody,
)
from ._retry import backoff_delay, is_retryable_status, parse_retry_after
from ._secrets import _fingerprint, _resolve_api_key, _resolve_base_url, _Secret

__all__ = ["Client"]

logger = logging.getLogger("impactframe")

_HEAD_SIZE = 512
_CHUNK_SIZE = 64 * 1024
_POOL_MAXSIZE = 32
_UNKNOWN = object()


def _user_agent() -> str:
    return f"impactframe/{package_version()}"


class WalkAbandoned(Exception):
    """Raised when a request's ``cancel`` event is set while it waits to retry: the walk that
    sent it is being abandoned (the caller stopped or failed)."""


def _sleep(seconds: float) -> None:
    # Looked up at call time, so patching ``time.sleep`` also reaches existing clients.
    time.sleep(seconds)


_T = TypeVar("_T")


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
        if session is not None and not isinstance(session, requests.Session):
            shown = f"a value of type {type(session).__name__}"
            reject("session", session, "a requests.Session or None", shown=shown)
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
        return _fingerprint(self.base_url, self._api_key.get())

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, fingerprint={self.fingerprint!r})"

    # -- plumbing -------------------------------------------------------------------------------

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
        except requests.RequestException as exc:  # ContentDecodingError: not worth a retry
            raise _UnreadableBody(response.status_code, exc) from exc
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
        except requests.RequestException as exc:  # as in `_send`
            raise _UnreadableBody(response.status, exc) from exc
        finally:
            if not done:  # as Response.close: a half-read connection is not reused
                response.close()
            response.release_conn()
        return response.status, b"".join(chunks), response.headers

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
        APIError
            Any other error status (with the API's ``type`` and ``message``), a body that is not
            JSON or cut short (with the status and the start of the body), a network failure
            after every retry (``status=None``), or at once any other ``requests`` failure, such
            as a body that cannot be decoded. A transport failure is named with its type and
            message, not chained: the ``requests`` exception holds the key header.
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

    def _request(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        cancel: threading.Event | None = None,
        on_retry: Callable[[int | None, float], None] | None = None,
    ) -> tuple[int, bytes]:
        """One GET with retries: the status and body of the answer that is not retried.

        ``on_retry(status, delay)`` hears of each retry before its wait (``status`` is
        ``None`` after a network failure); ``cancel`` ends a wait early (`_wait`).
        """
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
                    failure = _network_error(exc, attempt, self._api_key)
                reason = type(exc.cause if isinstance(exc, _BrokenBody) else exc).__name__
                if isinstance(exc, _BrokenBody):
                    reason = f"HTTP {exc.status}, body cut short: {reason}"
                retry_after, retried = None, None
            except _FATAL as exc:  # not worth another try: a body that cannot be decoded, ...
                failure = _request_error(exc, self._api_key)
            else:
                if not (is_retryable_status(status) and attempt < self.max_retries):
                    logger.debug("GET %s -> HTTP %s (attempt %d)", path, status, attempt + 1)
                    return status, body
                reason, retried = f"HTTP {status}", status
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
            if on_retry is not None:
                on_retry(retried, delay)
            self._wait(delay, cancel)
            if self._closed:  # by another thread during the wait: send nothing more
                msg = f"this Client was closed while GET {path} waited for retry {attempt}"
                msg += "; the retry was not sent"
                raise RuntimeError(msg)

    def _wait(self, seconds: float, cancel: threading.Event | None) -> None:
        """The wait before a retry; with ``cancel``, it ends (`WalkAbandoned`) once that is set.

        A sleeper injected by a test (``_sleep``) is used as it is, the event checked after it.
        """
        if cancel is not None and self._sleep is _sleep:
            if cancel.wait(seconds):  # a Retry-After of minutes must not hold up Ctrl-C
                raise WalkAbandoned
            return
        self._sleep(seconds)
        if cancel is not None and cancel.is_set():
            raise WalkAbandoned

    def get_body(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        parse: Callable[[bytes], _T],
        cancel: threading.Event | None = None,
        on_retry: Callable[[int | None, float], None] | None = None,
    ) -> _T:
        """Send one GET (with retries) and return ``parse`` of its successful body (bytes).

        The statuses map to errors as in `get_json`; a body ``parse`` finds not to be JSON
        (any ``ValueError`` but `ValidationError`, or ``RecursionError``) is the same
        `APIError` with the status and the start of the body that `get_json` raises.

        Parameters
        ----------
        path, params
            As for `get_json`.
        parse : callable
            Reads the body, e.g. `impactframe._paging` 's page parser.
        cancel : threading.Event, optional
            Set by another thread to abandon this request: a retry wait then ends at once with
            `WalkAbandoned` (nothing more is sent).
        on_retry : callable, optional
            ``on_retry(status, delay)`` before each retry wait (``status`` ``None`` after a
            network failure), e.g. to slow other requests down after a 429.

        Examples
        --------
        >>> from impactframe.sandbox import SandboxServer
        >>> with SandboxServer(n_records=3) as server, Client(
        ...     server.api_key, base_url=server.url
        ... ) as client:
        ...     body = client.get_body("/v1/records", {"limit": "2"}, parse=bytes)
        >>> body[:16]
        b'{"user_records":'
        """
        status, body = self._request(path, params, cancel, on_retry)
        if not 200 <= status < 300:
            self._decode(status, body)  # raises the error get_json raises
        try:
            return parse(body)
        except ValidationError:
            raise
        except (ValueError, RecursionError) as exc:  # not JSON, as json.loads in get_json
            raise _not_json(status, body, exc, self._api_key) from None

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
