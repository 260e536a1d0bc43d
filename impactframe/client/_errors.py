"""From a failed exchange to the exception SPEC §4 names: error statuses, bodies, network failures.

Which transport failures are worth another try is decided here too (`_TRANSIENT`); any other
``requests`` failure is reported at once (`_FATAL`). A message quotes at most the first
``_SNIPPET_CHARS`` characters of a body, with the key masked. A transport error takes the type
and message of the ``requests`` exception, not the exception itself: that carries the prepared
request, whose headers hold the key (SPEC §6).
"""

from __future__ import annotations

import json
import socket
import ssl

import requests
from urllib3.exceptions import NameResolutionError

from ..errors import APIError, AuthenticationError, RateLimitError, TransportError
from ._pooled import BodyTooLarge
from ._secrets import _Secret

__all__ = ["FINAL", "QUICK_FAIL", "DeadlinePassed", "classify", "transport_error"]

#: Transport failures worth another try. ``ChunkedEncodingError`` is what requests raises when
#: the body ends before its Content-Length (urllib3 ``IncompleteRead``); it is *not* a
#: ``ConnectionError``. ``ConnectTimeout`` is both a ConnectionError and a Timeout.
_RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_SNIPPET_CHARS = 200
_MESSAGE_CHARS = 1000  # an API's own error message, or ours with the failure's text


class _BrokenBody(Exception):
    """The status line arrived but the body did not arrive whole (dropped or cut short)."""

    def __init__(self, status: int, partial: bytes, cause: Exception) -> None:
        self.status = status
        self.partial = partial
        self.cause = cause
        super().__init__(f"HTTP {status}: body cut short ({type(cause).__name__})")


class _UnreadableBody(Exception):
    """The status line arrived but the body cannot be read, e.g. a ``Content-Encoding: gzip``
    body that is not gzip (``requests``' ``ContentDecodingError``): no retry mends it."""

    def __init__(self, status: int, cause: requests.RequestException) -> None:
        self.status = status
        self.cause = cause
        super().__init__(f"HTTP {status}: body unreadable ({type(cause).__name__})")


#: Everything `Client.get_json` retries on.
_TRANSIENT: tuple[type[Exception], ...] = (_BrokenBody, *_RETRYABLE_EXCEPTIONS)
#: What `Client.get_json` reports at once: every other ``requests`` failure (a body that cannot
#: be decoded, a malformed header). Caught after `_TRANSIENT`, whose members are also here.
_FATAL: tuple[type[Exception], ...] = (_UnreadableBody, requests.RequestException)


class DeadlinePassed(Exception):
    """The exchange passed the client's total deadline; its socket was cut (see `_deadline`)."""

    def __init__(self, status: int | None, seconds: float) -> None:
        self.status = status
        self.seconds = seconds
        super().__init__(f"deadline of {seconds:g} s passed")


#: Failures no retry mends and that leave no usable response: `TransportError` at once.
FINAL: tuple[type[Exception], ...] = (BodyTooLarge, DeadlinePassed)


def _snippet(body: bytes, secret: _Secret) -> str:
    """The start of `body` for a message: masked first, then shortened.

    Enough bytes are decoded that an occurrence of the key overlapping the first
    ``_SNIPPET_CHARS`` characters (and the characters around it, for the whole-token rule) is
    whole in the decoded text: a character is at most 4 bytes.
    """
    room = (_SNIPPET_CHARS + 2 * len(secret.get()) + 8) * 4
    return secret.shorten(body[:room].decode("utf-8", errors="replace"), _SNIPPET_CHARS)


def _status_error(status: int, body: bytes, secret: _Secret) -> APIError:
    """Map an error response to the exception SPEC §4 names."""
    error_type: str | None = None
    message = _snippet(body, secret) or "(empty body)"
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        decoded = None
    if isinstance(decoded, dict):
        if isinstance(decoded.get("type"), str):
            error_type = secret.shorten(decoded["type"], _SNIPPET_CHARS)
        if isinstance(decoded.get("message"), str):
            message = secret.shorten(decoded["message"], _MESSAGE_CHARS)
    if status in (401, 403) or error_type == "key_error":
        cls: type[APIError] = AuthenticationError
    elif status == 429:
        cls = RateLimitError
    else:
        cls = APIError
    return cls(message, status=status, error_type=error_type)


def _not_json(status: int, body: bytes, exc: Exception, secret: _Secret) -> APIError:
    start = repr(_snippet(body, secret)) if body else "(empty body)"
    msg = f"response body is not JSON ({exc.__class__.__name__}): {start}"
    return APIError(msg, status=status)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps: requests' first argument, urllib3's ``reason``, causes."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 16:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend(
            [
                *item.args[:1],
                getattr(item, "reason", None),
                item.__cause__,
                item.__context__,
                getattr(item, "cause", None),
            ]
        )
    return seen


def classify(exc: BaseException) -> str:
    """The plain cause of a transport failure: one of `TransportError.reason`'s values."""
    chain = _chain(exc)
    kinds = tuple(type(e) for e in chain)

    def has(*types: type[BaseException]) -> bool:
        return any(issubclass(kind, types) for kind in kinds)

    if isinstance(exc, BodyTooLarge):
        return "too_large"
    if isinstance(exc, DeadlinePassed):
        return "deadline"
    if has(requests.exceptions.ProxyError):  # first: a refused proxy is not a refused host
        return "proxy"
    if has(NameResolutionError, socket.gaierror):
        return "dns"
    if has(ConnectionRefusedError):
        return "refused"
    if has(requests.exceptions.SSLError, ssl.SSLError):
        return "tls"
    if has(requests.Timeout, TimeoutError, socket.timeout):
        return "timeout"
    if isinstance(exc, _BrokenBody) or has(requests.ConnectionError, ConnectionError):
        return "dropped"
    return "network"


#: Causes a retry is unlikely to mend soon: at most one quick retry, so that a wrong port, a
#: typo in the host or a certificate problem fails in about a second, not after minutes.
QUICK_FAIL = frozenset({"refused", "dns", "tls"})

_ADVICE = {
    "refused": "check that the server is running and base_url's host and port",
    "dns": "check base_url's host name and your network or DNS",
    "tls": "check the system clock, the CA bundle (REQUESTS_CA_BUNDLE, session.verify) and any "
    "proxy or antivirus that intercepts HTTPS",
    "proxy": "check HTTPS_PROXY/HTTP_PROXY/ALL_PROXY (or session.proxies) and NO_PROXY",
    "timeout": "check your network, or raise timeout= if the server is just slow",
    "dropped": "check your network, a proxy in between, or the server's health",
    "too_large": "raise max_body_bytes= if such a page is expected, or ask for smaller pages",
    "deadline": "the server sends too slowly; check your network, or raise deadline=",
    "network": "check your network and base_url",
}


def _what_failed(reason: str, exc: BaseException, host: str, timeout: float) -> str:
    if reason == "refused":
        return f"connection refused by {host}"
    if reason == "dns":
        return f"unknown host {host.rsplit(':', 1)[0].strip('[]')} (the name does not resolve)"
    if reason == "tls":
        ssl_error = next((e for e in _chain(exc) if isinstance(e, ssl.SSLError)), None)
        detail = getattr(ssl_error, "reason", None) or getattr(ssl_error, "verify_message", None)
        return f"TLS with {host} failed" + (f" ({detail})" if detail else "")
    if reason == "proxy":
        return f"the proxy on the way to {host} failed"
    if reason == "timeout":
        return f"{host} timed out (no data for {timeout:g} s)"
    if reason == "too_large":
        assert isinstance(exc, BodyTooLarge)
        return f"the response from {host} is larger than max_body_bytes={exc.limit}"
    if reason == "deadline":
        assert isinstance(exc, DeadlinePassed)
        return f"the response from {host} did not finish within deadline={exc.seconds:g} s"
    if isinstance(exc, _BrokenBody):
        return f"the connection to {host} dropped mid-body"
    if reason == "dropped":
        return f"the connection to {host} was closed or reset before a whole response"
    return f"the request to {host} failed"


def transport_error(
    exc: Exception,
    *,
    host: str,
    path: str,
    attempts: int,
    seconds: float,
    timeout: float,
    secret: _Secret,
) -> TransportError:
    """The `TransportError` for a failure after ``attempts`` tries: plain words, key masked."""
    reason = classify(exc)
    tries = "1 try" if attempts == 1 else f"{attempts} tries"
    low = exc.cause if isinstance(exc, _BrokenBody) else exc
    # The transport's exception type, for a search; none for our own limits.
    kind = "" if isinstance(exc, FINAL) else f"; {type(low).__name__}"
    msg = (
        f"GET {path}: {_what_failed(reason, exc, host, timeout)} ({tries} in {seconds:.1f} s"
        f"{kind}); {_ADVICE[reason]}"
    )
    msg = secret.shorten(msg, _MESSAGE_CHARS)
    if isinstance(exc, _BrokenBody) and exc.partial:
        msg += f"; it began: {_snippet(exc.partial, secret)!r}"
    status = getattr(exc, "status", None)
    return TransportError(msg, status=status, host=host, reason=reason, attempts=attempts)


def _request_error(exc: Exception, secret: _Secret) -> APIError:
    """Map a `_FATAL` failure; as `transport_error`, its type and message only, key masked."""
    if isinstance(exc, _UnreadableBody):
        status: int | None = exc.status
        msg = f"the response body could not be read ({type(exc.cause).__name__}: {exc.cause})"
    else:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        msg = f"the request failed ({type(exc).__name__}: {exc})"
    return APIError(secret.shorten(msg, _MESSAGE_CHARS), status=status)
