"""``GET /v1/records`` and ``GET /v1/customer_records``: query validation and one page."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from .._constants import API_DEFAULT_LIMIT, ENDPOINTS, IMPACT_TYPES, SORT_ORDERS
from ._dataset import CursorKey, Query
from ._protocol import (
    Call,
    Reply,
    bad,
    check_params,
    decode_key_cursor,
    param_limit,
    param_range,
)

__all__ = ["customer_records", "decode_cursor", "encode_cursor", "parse_query", "records"]

_CURSOR_KEYS = frozenset({"createdOn", "userID"})
_PARAMS = ("filter_by", "start_date", "end_date", "limit", "cursor", "sort_order")
_CUSTOMER_PARAMS = ("customer_email", *_PARAMS)


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
    key = decode_key_cursor(value, _CURSOR_KEYS, frozenset({"seq"}))
    created_on, user_id, seq = key["createdOn"], key["userID"], key.get("seq", 0)
    msg = "Invalid cursor: not a cursor this API returned"
    if not (isinstance(created_on, str) and isinstance(user_id, str)):
        raise bad(msg)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise bad(msg)
    return CursorKey(created_on, user_id, seq)


def parse_query(params: Mapping[str, list[str]], *, customers: bool) -> Query:
    """Validate the query parameters of a records endpoint (``BadRequest`` on the first error)."""
    check_params(params, _CUSTOMER_PARAMS if customers else _PARAMS)
    kinds = None
    if "filter_by" in params:
        for kind in params["filter_by"]:
            if kind not in IMPACT_TYPES:
                msg = f"Invalid filter_by {kind!r}; accepted: {', '.join(IMPACT_TYPES)}"
                raise bad(msg)
        kinds = frozenset(params["filter_by"])
    start, end = param_range(params)
    limit = param_limit(params, API_DEFAULT_LIMIT)
    order = params.get("sort_order", ["asc"])[0]
    if order not in SORT_ORDERS:
        msg = f"Invalid sort_order {order!r}; accepted: {', '.join(SORT_ORDERS)}"
        raise bad(msg)
    cursor = decode_cursor(params["cursor"][0]) if "cursor" in params else None
    email = params.get("customer_email", [None])[0]
    if email == "":
        msg = "customer_email must not be empty"
        raise bad(msg)
    return Query(kinds, email, start, end, limit, order == "desc", cursor)


def _page(call: Call, endpoint: str) -> Reply:
    query = parse_query(call.params, customers=endpoint == "customer_records")
    dataset = call.ledger.snapshot.datasets[endpoint]
    items, cursor = dataset.page(
        query, filter_after_limit=call.filter_after_limit, repeat=call.repeat
    )
    records_key = ENDPOINTS[endpoint][1]
    parts = [b'{"', records_key.encode(), b'":[', b",".join(items), b"]"]
    if cursor is not None:
        parts += [b',"cursor":"', cursor.encode("ascii"), b'"']
    parts.append(b"}")
    return Reply(b"".join(parts), count=len(items))


def records(call: Call) -> Reply:
    """``GET /v1/records``: one page of the account's own records."""
    return _page(call, "records")


def customer_records(call: Call) -> Reply:
    """``GET /v1/customer_records``: one page of the records made for customers."""
    return _page(call, "customer_records")
