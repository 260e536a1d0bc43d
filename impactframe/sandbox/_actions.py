"""The POST endpoints: make an impact (``/v1/plant_tree`` ...) and cancel one.

Bodies are checked as strictly as the records endpoints' parameters: a JSON object of the
fields the official SDK sends, each of its documented type and range; anything else is a 400
``validation_error`` naming the field. A new impact is answered with the record exactly as the
records endpoints then serve it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._ledger import Cancellation
from ._protocol import Call, Reply, bad, check_params, json_reply, not_found

__all__ = ["IMPACT_ACTIONS", "cancel_impact", "make_impact"]

#: path -> (impact type, largest amount, whether it takes a category); the SDK's documented
#: ranges (money in US cents).
IMPACT_ACTIONS: dict[str, tuple[str, int, bool]] = {
    "/v1/plant_tree": ("tree_planted", 10_000_000, True),
    "/v1/clean_ocean": ("waste_removed", 10_000_000, False),
    "/v1/capture_carbon": ("carbon_captured", 10_000_000, False),
    "/v1/restore_coral": ("coral_restored", 10_000_000, False),
    "/v1/donate_money": ("money_donated", 1_000_000_000, True),
}
_IMPACT_FIELDS = ("amount", "customer_email", "customer_name", "notify", "metadata")
_CANCEL_FIELDS = ("user_id", "time_utc", "reason")
_MAX_TEXT = 200  # category, customer name, cancellation reason
_MAX_EMAIL = 254
_METADATA_PAIRS = 20
_METADATA_KEY = 40
_METADATA_VALUE = 500
_RESERVED_KEYS = frozenset({"gift", "widgetID"})


def _body(call: Call, accepted: tuple[str, ...]) -> dict[str, Any]:
    check_params(call.params, ())  # the POST endpoints take their arguments in the body only
    try:
        body = json.loads(call.body or b"null")
    except ValueError:  # also UnicodeDecodeError
        msg = "The request body must be a JSON object"
        raise bad(msg) from None
    if not isinstance(body, dict):
        msg = "The request body must be a JSON object"
        raise bad(msg)
    for name in body:
        if name not in accepted:
            msg = f"Unknown field {name!r}; accepted: {', '.join(accepted)}"
            raise bad(msg)
    return body


def _text(body: Mapping[str, Any], name: str, limit: int = _MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        msg = f"{name} must be a non-empty string of at most {limit} characters"
        raise bad(msg)
    return value


def _email(body: Mapping[str, Any]) -> str | None:
    email = _text(body, "customer_email", _MAX_EMAIL)
    if email is None:
        if "customer_name" in body and body["customer_name"] is not None:
            msg = "customer_name needs customer_email: a name alone names no customer"
            raise bad(msg)
        return None
    local, _, domain = email.partition("@")
    if not local or "." not in domain or "@" in domain or any(c.isspace() for c in email):
        msg = f"customer_email must be an e-mail address, got {email!r}"
        raise bad(msg)
    return email


def _metadata(body: Mapping[str, Any]) -> dict[str, str] | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > _METADATA_PAIRS:
        msg = f"metadata must be an object of at most {_METADATA_PAIRS} string pairs"
        raise bad(msg)
    for key, value in metadata.items():
        if not 1 <= len(key) <= _METADATA_KEY or key in _RESERVED_KEYS:
            msg = (
                f"metadata key {key!r} is not accepted: keys have 1 to {_METADATA_KEY} "
                f"characters and {', '.join(sorted(_RESERVED_KEYS))} are reserved"
            )
            raise bad(msg)
        if not isinstance(value, str) or len(value) > _METADATA_VALUE:
            msg = f"metadata[{key!r}] must be a string of at most {_METADATA_VALUE} characters"
            raise bad(msg)
    return metadata


def make_impact(call: Call, path: str) -> Reply:
    """``POST /v1/plant_tree`` and its siblings: one new impact, now."""
    kind, largest, takes_category = IMPACT_ACTIONS[path]
    body = _body(call, _IMPACT_FIELDS[:1] + ("category",) * takes_category + _IMPACT_FIELDS[1:])
    amount = body.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= largest:
        msg = f"amount must be an integer between 1 and {largest}, got {amount!r}"
        raise bad(msg)
    category = _text(body, "category")
    email = _email(body)
    name = _text(body, "customer_name")
    notify = body.get("notify")
    if notify is not None and not isinstance(notify, bool):  # accepted; the sandbox never mails
        msg = f"notify must be true or false, got {notify!r}"
        raise bad(msg)
    metadata = _metadata(body)
    record = call.ledger.create(
        kind, amount, category=category, email=email, name=name, metadata=metadata
    )
    return json_reply(record)


def _cancelled(entry: Cancellation, message: str) -> dict[str, Any]:
    record = entry.record
    out: dict[str, Any] = {"user_id": record["user_id"], "time_utc": record["time_utc"]}
    out["cancelled_on"] = entry.cancelled_on
    out["message"] = message
    if entry.reason is not None:
        out["reason"] = entry.reason
    for name, value in record.items():
        if name not in ("user_id", "time_utc", "customer", "metadata"):
            out[name] = value  # the amount reversed, under its type, and the category
    return out


def cancel_impact(call: Call) -> Reply:
    """``POST /v1/cancel_impact``: reverse one impact; idempotent."""
    body = _body(call, _CANCEL_FIELDS)
    key = []
    for name in ("user_id", "time_utc"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            msg = f"{name} is required: the {name} of the impact to cancel, as its record has it"
            raise bad(msg)
        key.append(value)
    user_id, time_utc = key
    reason = _text(body, "reason")
    result = call.ledger.cancel(user_id, time_utc, reason)
    if result is None:
        msg = f"No impact with user_id {user_id!r} and time_utc {time_utc!r}"
        raise not_found(msg)
    entry, before = result
    message = "Impact was already cancelled" if before else "Impact cancelled"
    return json_reply(_cancelled(entry, message))
