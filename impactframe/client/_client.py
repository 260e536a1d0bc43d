"""The HTTP client: one pooled ``requests`` session, the key header, retries and error mapping.

`Client.get_json` and `Client.get_body` are the only places that touch the network. Their
decisions (retry or not, how long to wait) come from the pure module `_retry`. Beside it:
`_secrets` (the key and the base URL, checked; the key masked; loopback kept off environment
proxies), `_errors` (a failed exchange to the exception SPEC §4 names), `_pooled` (the GET
through the session's urllib3 pool, and the capped body read both routes share) and
`_deadline` (the total deadline per request). Pages and cursor walks live above, in
`impactframe._paging`, which calls `get_body`; a walk abandons a request's retry wait through
its ``cancel`` event.
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
from urllib.parse import urlsplit

import requests

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
                retry_after, retried = None, None
            except FINAL as exc:  # too large or too slow: a retry would only repeat it
                failure = self._transport_error(exc, path, attempt + 1, started)
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
