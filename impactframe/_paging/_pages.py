"""One page of an endpoint: its body, record count, cursor, and the few fields the walk checks.

`parse_page` reads a response body with ``msgspec``: the envelope (records counted, cursor) and,
of each record, only ``user_id``, ``time_utc``, ``customer`` and the impact fields (`Facts`),
which the walk checks against the query (`impactframe._paging._verify`). The records stay the
bytes that came, for the frame builder's Arrow path, and are decoded only when asked for
(`Page.records`). Whatever that reader declines (a body that is not UTF-8 JSON, a field of the
wrong shape, ``NaN``, a record that is not an object) is decoded by ``json.loads`` and checked
by `decode_page`, so the outcome, error or page, is the same.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import msgspec

from .._constants import IMPACT_TYPES
from ..errors import ValidationError

__all__ = [
    "CustomerFacts",
    "Facts",
    "JsonFloat",
    "Page",
    "decode_page",
    "loads",
    "page_of",
    "parse_page",
]

_TWO_DIGITS = re.compile(rb"(?=[0-9]{2})")

#: What the walk reads of each record; every field optional and of any type (the frame builder
#: checks the records themselves), unknown fields skipped without being built.
Facts = msgspec.defstruct(
    "Facts",
    [
        ("user_id", object, None),
        ("time_utc", object, None),
        *((kind, object, msgspec.UNSET) for kind in IMPACT_TYPES),
    ],
)
#: `Facts` and the ``customer`` object, read only for a query by ``customer_email`` (building
#: it doubles the cost of the read).
CustomerFacts = msgspec.defstruct("CustomerFacts", [("customer", object, None)], bases=(Facts,))


class Page:
    """One page: the response body, its record count and cursor (``None`` on the last page).

    ``body`` is ``None`` when the records were decoded anyway (a body only the standard library
    reads, a page trimmed to ``max_records``, a page built by hand); `records` then holds them.
    Otherwise `records` decodes the body when first asked for.

    Examples
    --------
    >>> page = parse_page(b'{"user_records": [{"user_id": "U1"}], "cursor": "eyJ9"}',
    ...                   "user_records")
    >>> page.count, page.cursor, page.records
    (1, 'eyJ9', [{'user_id': 'U1'}])
    """

    __slots__ = ("_records", "body", "count", "cursor", "extra", "facts", "records_key")

    def __init__(
        self,
        body: bytes | None,
        count: int,
        cursor: str | None,
        extra: tuple[str, ...] = (),
        *,
        records: list[Any] | None = None,
        records_key: str = "user_records",
        facts: list[Any] | None = None,
    ) -> None:
        self.body = body
        self.count = count
        self.cursor = cursor or None
        #: Fields of the body besides the records and the cursor (SPEC §3: nothing the API
        #: sent is dropped silently; the walk warns about them).
        self.extra = extra
        self.records_key = records_key
        self._records = records
        #: `Facts` of each record, in order (records that are not objects are left out).
        self.facts = facts if facts is not None else facts_of(records or [])

    @property
    def records(self) -> list[Any]:
        """The decoded records (decoded from `body` on first use)."""
        if self._records is None:
            self._records = decode_page(loads(self.body or b""), self.records_key).records
        return self._records

    def __repr__(self) -> str:
        return f"Page(count={self.count}, cursor={self.cursor!r}, extra={self.extra!r})"


class JsonFloat(float):
    """A JSON number with a fraction or an exponent (or ``NaN``/``Infinity``) that keeps the
    text it was sent as: ``1E2`` stays ``"1E2"``, ``1e400`` does not become ``Infinity``.

    Examples
    --------
    >>> loads(b'[1E2, 1e400]')[1].text
    '1e400'
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonFloat:
        number = float.__new__(cls, text)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text


def _type(value: object) -> str:
    return "float" if isinstance(value, float) else type(value).__name__


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        name = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        names = ", ".join(repr(k) for k in list(obj)[:4])
        msg = (
            f"{name}: the name appears twice in one JSON object (of the names {names}); "
            "which value was meant is ambiguous"
        )
        raise ValidationError(msg, field=name)
    return obj


def loads(body: bytes | str) -> Any:
    """``json.loads`` that refuses a name given twice in an object (``ValidationError``, never
    "the last one wins") and reads non-integer numbers as `JsonFloat` (their text kept).

    Examples
    --------
    >>> loads(b'{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    impactframe.errors.ValidationError: a: the name appears twice in one JSON object (of the \
names 'a'); which value was meant is ambiguous
    """
    return json.loads(
        body, object_pairs_hook=_unique_names, parse_float=JsonFloat, parse_constant=JsonFloat
    )



def page_of(records: list[Any], cursor: str | None, records_key: str = "user_records") -> Page:
    """A page of decoded records (tests, trimmed pages).

    Examples
    --------
    >>> page_of([{"user_id": "U1"}], None).count
    1
    """
    return Page(None, len(records), cursor, records=records, records_key=records_key)


def facts_of(records: list[Any]) -> list[Any]:
    """The `Facts` of decoded records (those that are not objects left out)."""
    out = []
    for record in records:
        if isinstance(record, dict):
            try:
                out.append(msgspec.convert(record, CustomerFacts, str_keys=True))
            except msgspec.ValidationError:  # pragma: no cover - every field accepts anything
                continue
    return out


def decode_page(body: object, records_key: str) -> Page:
    """Check a decoded response body and split it into records and cursor.

    Parameters
    ----------
    body : object
        The decoded JSON body.
    records_key : str
        The field holding the records: ``"user_records"`` or ``"customer_records"``.

    Returns
    -------
    Page
        The cursor is ``None`` when it is absent, ``null`` or ``""`` (SPEC §4: the end).

    Raises
    ------
    ValidationError
        If the body is not an object, the records field is missing or not a list, or the cursor
        is not a string. The records themselves are checked later, by the frame builder.

    Examples
    --------
    >>> decode_page({"user_records": [{"user_id": "U1"}], "cursor": "eyJ9"}, "user_records")
    Page(count=1, cursor='eyJ9', extra=())
    >>> decode_page({"user_records": [], "cursor": ""}, "user_records").cursor is None
    True
    """
    if not isinstance(body, dict):
        msg = f"response body: expected a JSON object, got {_type(body)}"
        raise ValidationError(msg, field="response body")
    if records_key not in body:
        msg = f"{records_key}: missing from the response body (fields: {sorted(body)!r})"
        raise ValidationError(msg, field=records_key)
    records = body[records_key]
    if not isinstance(records, list):
        msg = f"{records_key}: expected a list of records, got {_type(records)}"
        raise ValidationError(msg, field=records_key)
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        msg = f"cursor: expected a string or null, got {_type(cursor)} {cursor!r:.60}"
        raise ValidationError(msg, field="cursor")
    extra = _extra_fields(body, records_key)
    return Page(None, len(records), cursor, extra, records=records, records_key=records_key)


def _extra_fields(fields: dict[str, Any], records_key: str) -> tuple[str, ...]:
    return tuple(sorted(name for name in fields if name not in (records_key, "cursor")))


def _envelope_decoders() -> dict[tuple[str, bool], tuple[Any, Any]]:
    # msgspec reads the envelope and each record's facts without building the rest; by records
    # key and whether the customer is read: (envelope decoder, records-only decoder).
    decoders = {}
    for key in ("user_records", "customer_records"):
        for customers, facts in ((False, Facts), (True, CustomerFacts)):
            # Unknown envelope fields are refused here and read by `_loose_envelope` (a body
            # with one is rare, and must not lose it).
            envelope = msgspec.defstruct(
                "Envelope",
                [("records", list[facts]), ("cursor", object, None)],  # type: ignore[valid-type]
                rename={"records": key},
                forbid_unknown_fields=True,
            )
            decoders[key, customers] = (
                msgspec.json.Decoder(envelope),
                msgspec.json.Decoder(list[facts]),  # type: ignore[valid-type]
            )
    return decoders


_DECODERS = _envelope_decoders()
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _loose_envelope(body: bytes, records_key: str, facts_decoder: Any) -> Page | None:
    """The page of a body with fields besides the records and the cursor, or ``None`` when its
    shape is not one `decode_page` accepts (then ``json.loads`` and `decode_page` decide)."""
    fields = _FIELDS.decode(body)
    if records_key not in fields or not _once(body, records_key):
        return None
    facts = facts_decoder.decode(fields[records_key])
    cursor = msgspec.json.decode(fields.get("cursor", b"null"))
    if cursor is not None and not isinstance(cursor, str):
        return None
    extra = _extra_fields(fields, records_key)
    return Page(body, len(facts), cursor, extra, records_key=records_key, facts=facts)


def _once(body: bytes, records_key: str) -> bool:
    """Whether the envelope names the records and the cursor at most once each (msgspec
    keeps the last of two; `loads` refuses them). A record may hold such a name too: then
    `loads` decides, slower but the same."""
    return body.count(b'"%s"' % records_key.encode()) == 1 and body.count(b'"cursor"') <= 1


def _may_hold_a_long_int(body: bytes) -> bool:
    """Whether ``body`` may hold an integer longer than ``json.loads`` accepts (4300 digits
    by default), which msgspec, skipping the records, would let through.

    A run of ``limit + 1`` digits covers two consecutive bytes of every ``(limit + 1) // 2``-th
    byte, and all the bytes between: a sample of a few hundred bytes rules it out.
    """
    limit = sys.get_int_max_str_digits()
    if not limit or len(body) <= limit:
        return False
    step = (limit + 1) // 2
    for match in _TWO_DIGITS.finditer(body[::step]):
        start = match.start() * step
        if body[start : start + step + 1].isdigit():
            return True
    return False


def parse_page(body: bytes, records_key: str, *, customers: bool = False) -> Page:
    """Read a 2xx response body: same checks and errors as `decode_page` of ``json.loads``.

    Parameters
    ----------
    body : bytes
        A 2xx response body.
    records_key : str
        ``"user_records"`` or ``"customer_records"``.
    customers : bool
        Read each record's ``customer`` too (`CustomerFacts`), to check ``customer_email``.

    Returns
    -------
    Page

    Raises
    ------
    ValueError
        The body is not JSON (``json.JSONDecodeError`` or ``UnicodeDecodeError``).
    ValidationError
        As `decode_page`.

    Examples
    --------
    >>> parse_page(b'{"user_records": [], "cursor": ""}', "user_records").cursor is None
    True
    """
    # None for a key no endpoint has: json.loads reads it.
    decoders = _DECODERS.get((records_key, customers))
    if decoders is not None and not _may_hold_a_long_int(body):
        try:
            body.decode("utf-8")  # msgspec does not check the text of skipped values
            try:
                envelope = decoders[0].decode(body)
            except msgspec.ValidationError:
                loose = _loose_envelope(body, records_key, decoders[1])
                if loose is not None:
                    return loose
            else:
                cursor = envelope.cursor
                if _once(body, records_key) and (cursor is None or isinstance(cursor, str)):
                    facts = envelope.records
                    return Page(body, len(facts), cursor, records_key=records_key, facts=facts)
        except (ValueError, RecursionError, msgspec.MsgspecError):
            pass  # the strict decode below gives the error (or the page) the reference path gives
    return decode_page(loads(body), records_key)
