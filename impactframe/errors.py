"""Exceptions and warnings raised by impactframe.

Our exception hierarchy::

    ImpactFrameError                 anything impactframe raises on purpose
    ├── APIError                     the API answered with an error (.status, .error_type, .message)
    │   ├── AuthenticationError      401/403, or an error of type ``key_error``
    │   ├── RateLimitError           429, still refused after every retry
    │   └── TransportError           no usable response: network, TLS, timeout, size cap, deadline
                                     (.host, .reason, .attempts)
    ├── PaginationError              the cursor chain is broken (a cursor seen twice)
    └── ValidationError              the data is not what the contract promises
                                     (also a ValueError; .failure_cases, .field, .record)

    ImpactFrameWarning (UserWarning)
    ├── SchemaDriftWarning           the API sent a field or impact type we do not know
    ├── CacheWarning                 a cache entry was unusable (corrupt, old layout) or not stored
    └── DuplicateRecordWarning       two records share (user_id, time_utc) but differ

Argument errors are plain ``ValueError`` raised before any request is sent.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "CacheWarning",
    "DuplicateRecordWarning",
    "ImpactFrameError",
    "ImpactFrameWarning",
    "PaginationError",
    "RateLimitError",
    "SchemaDriftWarning",
    "TransportError",
    "ValidationError",
]


class ImpactFrameError(Exception):
    """Base class of every error impactframe raises on purpose."""


class APIError(ImpactFrameError):
    """The API answered with an error, or with a body that is not the JSON it promises.

    Parameters
    ----------
    message : str
        What went wrong, as the API said it (or the start of an unreadable body).
    status : int or None
        The HTTP status, or ``None`` when no response was received.
    error_type : str or None
        The API's ``type`` field, e.g. ``"key_error"``.
    """

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None):
        self.status = status
        self.error_type = error_type
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        parts = [f"HTTP {self.status}" if self.status is not None else "no response"]
        if self.error_type:
            parts.append(self.error_type)
        return f"{': '.join(parts)}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, "
            f"error_type={self.error_type!r}, message={self.message!r})"
        )


class AuthenticationError(APIError):
    """The API key was refused (HTTP 401/403 or an error of type ``key_error``)."""


class RateLimitError(APIError):
    """The API still answered 429 (too many requests) after every retry."""


class TransportError(APIError):
    """No usable response: the network, TLS, a timeout, the size cap or the deadline failed.

    Raised after the retries worth making (a refused connection or an unknown host gets at most
    one quick retry; a body over the size cap or past the deadline gets none). The message says
    in plain words which host, what failed, how many tries, and what to check.

    Parameters
    ----------
    message : str
        What failed and what to check.
    status : int or None
        The HTTP status when the status line arrived before the failure (a body cut short, too
        large or too slow), else ``None``.
    host : str or None
        ``host:port`` of the base URL.
    reason : str or None
        One of ``"refused"``, ``"dns"``, ``"timeout"``, ``"tls"``, ``"proxy"``, ``"dropped"``,
        ``"too_large"``, ``"deadline"``, ``"network"``.
    attempts : int or None
        How many requests were sent (the first one included).

    Examples
    --------
    >>> err = TransportError("connection refused", host="127.0.0.1:1", reason="refused",
    ...                      attempts=2)
    >>> isinstance(err, APIError), str(err), err.reason
    (True, 'no response: connection refused', 'refused')
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        host: str | None = None,
        reason: str | None = None,
        attempts: int | None = None,
    ):
        self.host = host
        self.reason = reason
        self.attempts = attempts
        super().__init__(message, status=status)


class PaginationError(ImpactFrameError):
    """The cursor chain cannot be followed safely, e.g. a cursor came back twice."""


class ValidationError(ImpactFrameError, ValueError):
    """The data breaks the contract of SPEC §3 (a field of the wrong type, a failed schema check).

    Parameters
    ----------
    message : str
        A readable description naming the field and the record.
    field : str or None
        The offending field or column.
    record : Any
        The offending record (or a short description of it), when there is one.
    failure_cases : pandas.DataFrame or None
        pandera's failure cases, when the error comes from a schema check.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        record: Any = None,
        failure_cases: Any = None,
    ):
        self.field = field
        self.record = record
        self.failure_cases = failure_cases
        super().__init__(message)


class ImpactFrameWarning(UserWarning):
    """Base class of impactframe's warnings."""


class SchemaDriftWarning(ImpactFrameWarning):
    """The API sent a field or an impact type this version does not know; it was kept."""


class DuplicateRecordWarning(ImpactFrameWarning):
    """Two records share ``(user_id, time_utc)`` but differ in content; both were kept."""


class CacheWarning(ImpactFrameWarning):
    """A cache entry was unusable (corrupt, old layout) and is refetched, or was not stored."""
