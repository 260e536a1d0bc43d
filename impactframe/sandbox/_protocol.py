"""What every sandbox endpoint shares: the error shape, a call and its reply, parameter checks.

An endpoint is a function ``Call -> Reply``; it raises :class:`BadRequest` for anything the API
would refuse, and the server turns that into the API's error body ``{"type", "message"}``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._constants import MAX_PAGE_SIZE

if TYPE_CHECKING:
    from ._ledger import Ledger

__all__ = [
    "BadRequest",
    "Call",
    "Reply",
    "bad",
    "check_params",
    "decode_key_cursor",
    "encode_key_cursor",
    "error_body",
    "json_reply",
    "not_found",
    "param_day",
    "param_limit",
    "param_range",
]

# Its own pattern, not _params._DATE_RE: the sandbox fakes the server, which checks dates on its
# own terms, so the client's checks must not shape what it accepts.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LIMIT = re.compile(r"[0-9]{1,4}")


class BadRequest(Exception):
    """A request the API would refuse; becomes a JSON error response."""

    def __init__(
        self, status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = dict(headers or {})


def bad(message: str) -> BadRequest:
    """A 400 ``validation_error``."""
    return BadRequest(400, "validation_error", message)


def not_found(message: str) -> BadRequest:
    """A 404 ``not_found``."""
    return BadRequest(404, "not_found", message)


def error_body(error_type: str, message: str) -> bytes:
    """The API's error shape, ``{"type": ..., "message": ...}``, as bytes."""
    return json.dumps({"type": error_type, "message": message}).encode()


@dataclass(frozen=True)
class Call:
    """One authenticated request to an endpoint, as its function sees it."""

    ledger: Ledger
    params: dict[str, list[str]]
    body: bytes = b""
    path_args: tuple[str, ...] = ()
    #: The "repeat" fault: a page starts again at the cursor's item.
    repeat: bool = False
    filter_after_limit: bool = False


@dataclass(frozen=True)
class Reply:
    """Status and JSON body of an answer; ``count`` is the number of records in a page."""

    body: bytes
    status: int = 200
    count: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(obj: object, *, status: int = 200) -> Reply:
    """``obj`` as compact JSON (non-ASCII kept as UTF-8, like the records)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return Reply(text.encode(), status)


def check_params(params: Mapping[str, list[str]], accepted: tuple[str, ...]) -> None:
    """Unknown or repeated query parameters are refused (``filter_by`` may repeat)."""
    for name, values in params.items():
        if name not in accepted:
            listed = ", ".join(accepted) if accepted else "none"
            msg = f"Unknown query parameter {name!r}; accepted: {listed}"
            raise bad(msg)
        if name != "filter_by" and len(values) > 1:
            msg = f"{name} may be given only once"
            raise bad(msg)


def param_day(params: Mapping[str, list[str]], name: str) -> str | None:
    """A ``YYYY-MM-DD`` parameter that is a real date, or ``None`` when absent."""
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
    raise bad(msg)


def param_range(params: Mapping[str, list[str]]) -> tuple[str | None, str | None]:
    """``start_date`` and ``end_date``; start after end is refused."""
    start = param_day(params, "start_date")
    end = param_day(params, "end_date")
    if start and end and start > end:
        msg = f"start_date ({start}) must not be after end_date ({end})"
        raise bad(msg)
    return start, end


def param_limit(params: Mapping[str, list[str]], default: int) -> int:
    """``limit``: an integer from 0 to 1000."""
    if "limit" not in params:
        return default
    text = params["limit"][0]
    if not _LIMIT.fullmatch(text) or int(text) > MAX_PAGE_SIZE:
        msg = f"limit must be an integer between 0 and {MAX_PAGE_SIZE}, got {text!r}"
        raise bad(msg)
    return int(text)


def encode_key_cursor(key: Mapping[str, Any]) -> str:
    """A DynamoDB-style cursor: standard base64 of the compact JSON of the last key."""
    raw = json.dumps(key, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.b64encode(raw).decode("ascii")


def decode_key_cursor(
    value: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The key a cursor encodes; ``BadRequest`` unless it is base64 JSON of exactly these keys."""
    # A client that forgets to percent-encode sends base64's "+" raw, which decodes to a space.
    msg = "Invalid cursor: not a cursor this API returned"
    try:
        raw = base64.b64decode(value.replace(" ", "+"), validate=True)
        key = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise bad(msg) from exc
    if not isinstance(key, dict) or not required <= key.keys() <= required | optional:
        raise bad(msg)
    return key
