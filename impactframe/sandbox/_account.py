"""The account's GET endpoints besides the records: ``/v1/impact``, ``/v1/impact/daily``,
``/v1/whoami``, ``/v1/customers`` and ``/v1/track``, all answered from one `Snapshot`."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from .._constants import API_DEFAULT_LIMIT
from ._ledger import Snapshot
from ._projects import project_for
from ._protocol import (
    Call,
    Reply,
    bad,
    check_params,
    decode_key_cursor,
    encode_key_cursor,
    json_reply,
    not_found,
    param_limit,
    param_range,
)

__all__ = ["customers", "daily_impact", "impact", "track", "who_am_i"]

_CUSTOMER_CURSOR = frozenset({"onboardedOn", "customerEmail"})


def impact(call: Call) -> Reply:
    """``GET /v1/impact``: lifetime totals, and their split into the account's own impact
    (``/v1/records``) and its customers' (``/v1/customer_records``)."""
    check_params(call.params, ())
    figures = call.ledger.snapshot.figures
    types = figures.types()
    user, customer = figures.totals["records"], figures.totals["customer_records"]
    body: dict[str, Any] = {"user_id": call.ledger.user_id}
    body.update({t: user.get(t, 0) + customer.get(t, 0) for t in types})
    body["user_impact"] = {t: user.get(t, 0) for t in types}
    body["customer_impact"] = {t: customer.get(t, 0) for t in types}
    return json_reply(body)


def daily_impact(call: Call) -> Reply:
    """``GET /v1/impact/daily``: per UTC day with impact, the totals of both endpoints."""
    check_params(call.params, ("start_date", "end_date"))
    start, end = param_range(call.params)
    figures = call.ledger.snapshot.figures
    types = figures.types()
    days = [
        {"date": day, **{t: figures.daily[day].get(t, 0) for t in types}}
        for day in figures.days(start, end)
    ]
    return json_reply({"user_id": call.ledger.user_id, "daily_impact": days})


def who_am_i(call: Call) -> Reply:
    """``GET /v1/whoami``: the account the key belongs to."""
    check_params(call.params, ())
    return json_reply({"user_id": call.ledger.user_id, "email": call.ledger.email})


def customers(call: Call) -> Reply:
    """``GET /v1/customers``: the customers by onboarding time, paged like the records."""
    check_params(call.params, ("customer_email", "limit", "cursor"))
    limit = param_limit(call.params, API_DEFAULT_LIMIT)
    cursor = None
    if "cursor" in call.params:
        key = decode_key_cursor(call.params["cursor"][0], _CUSTOMER_CURSOR)
        cursor = (key["onboardedOn"], key["customerEmail"])
        if not all(isinstance(part, str) for part in cursor):
            msg = "Invalid cursor: not a cursor this API returned"
            raise bad(msg)
    email = call.params.get("customer_email", [None])[0]
    if email == "":
        msg = "customer_email must not be empty"
        raise bad(msg)
    registry = call.ledger.snapshot.customers
    if email is not None:
        one = registry.get(email)
        page = [one] if one is not None and limit and cursor is None else []
        return json_reply({"customers": [_listed(c) for c in page]})
    ordered, keys = registry.listing()
    first = 0
    if cursor is not None:
        first = bisect_left(keys, cursor)
        at_cursor = first < len(keys) and keys[first] == cursor
        if at_cursor and not call.repeat:  # the "repeat" fault starts again at the cursor's
            first += 1
    page = ordered[first : first + limit]
    body: dict[str, Any] = {"customers": [_listed(c) for c in page]}
    if page and first + limit < len(ordered):
        last = page[-1]
        body["cursor"] = encode_key_cursor(
            {"onboardedOn": last.onboarded_on, "customerEmail": last.customer_email}
        )
    return json_reply(body)


def _listed(customer: Any) -> dict[str, Any]:
    return {**customer.as_field(), "onboarded_on": customer.onboarded_on}


def track(call: Call) -> Reply:
    """``GET /v1/track``: where one impact stands (live or cancelled)."""
    check_params(call.params, ("user_id", "time_utc"))
    user_id = call.params.get("user_id", [""])[0]
    time_utc = call.params.get("time_utc", [""])[0]
    if not user_id or not time_utc:
        msg = "user_id and time_utc are required: the key of the impact, as its record has it"
        raise bad(msg)
    snapshot = call.ledger.snapshot
    cancelled = snapshot.cancelled.get((user_id, time_utc))
    record = cancelled.record if cancelled is not None else _served(snapshot, user_id, time_utc)
    body: dict[str, Any] = {
        "tracking_id": f"{user_id}-{time_utc}",
        "impact_initiated": time_utc,
    }
    for name, value in record.items():
        if name not in ("user_id", "time_utc", "customer", "metadata"):
            body[name] = value  # the amount under its type, and the category
    project = project_for(record, body["tracking_id"])
    if project is not None:
        body["project_id"] = project["project_id"]
        body["project_location"] = project["location"]
    if "money_donated" in record and "category" in record:
        body["donation_category"] = record["category"]
    body["is_test_transaction"] = True
    body["is_bonus_impact"] = False
    if cancelled is not None:
        body["cancelled_on"] = cancelled.cancelled_on
        if cancelled.reason is not None:
            body["cancellation_reason"] = cancelled.reason
    return json_reply(body)


def _served(snapshot: Snapshot, user_id: str, time_utc: str) -> dict[str, Any]:
    found = snapshot.locate(user_id, time_utc)
    if found is None:
        msg = f"No impact with user_id {user_id!r} and time_utc {time_utc!r}"
        raise not_found(msg)
    endpoint, pos = found
    return snapshot.datasets[endpoint].record_at(pos)
