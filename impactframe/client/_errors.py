"""From a failed exchange to the exception SPEC §4 names: error statuses, bodies, network failures.

Which transport failures are worth another try is decided here too (`_TRANSIENT`); any other
``requests`` failure is reported at once (`_FATAL`). A message quotes at most the first
``_SNIPPET_CHARS`` characters of a body, with the key masked. A transport error takes the type
and message of the ``requests`` exception, not the exception itself: that carries the prepared
request, whose headers hold the key (SPEC §6).
"""

from __future__ import annotations

import json

import requests

from ..errors import APIError, AuthenticationError, RateLimitError
from ._secrets import _Secret

#: Transport failures worth another try. ``ChunkedEncodingError`` is what requests raises when
#: the body ends before its Content-Length (urllib3 ``IncompleteRead``); it is *not* a
#: ``ConnectionError``. ``ConnectTimeout`` is both a ConnectionError and a Timeout.
_RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_SNIPPET_CHARS = 200


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


def _snippet(body: bytes, secret: _Secret) -> str:
    text = body[: _SNIPPET_CHARS * 4].decode("utf-8", errors="replace")
    return secret.redact(text)[:_SNIPPET_CHARS]


def _status_error(status: int, body: bytes, secret: _Secret) -> APIError:
    """Map an error response to the exception SPEC §4 names."""
    error_type: str | None = None
    message = _snippet(body, secret) or "(empty body)"
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        if isinstance(decoded.get("type"), str):
            error_type = decoded["type"]
        if isinstance(decoded.get("message"), str):
            message = secret.redact(decoded["message"])
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


def _network_error(exc: Exception, retries: int, secret: _Secret) -> APIError:
    if isinstance(exc, _BrokenBody):
        msg = secret.redact(
            f"the response body was cut short, {retries} retries "
            f"({type(exc.cause).__name__}: {exc.cause}); it began: "
        )
        msg += repr(_snippet(exc.partial, secret))
        return APIError(msg, status=exc.status)
    msg = secret.redact(f"network error after {retries} retries: {type(exc).__name__}: {exc}")
    return APIError(msg, status=None)


def _request_error(exc: Exception, secret: _Secret) -> APIError:
    """Map a `_FATAL` failure; as `_network_error`, its type and message only, key masked."""
    if isinstance(exc, _UnreadableBody):
        status: int | None = exc.status
        msg = f"the response body could not be read ({type(exc.cause).__name__}: {exc.cause})"
    else:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        msg = f"the request failed ({type(exc).__name__}: {exc})"
    return APIError(secret.redact(msg), status=status)
