"""Cursor pagination as a small pure state machine (SPEC §4); the fetching is injected.

`parse_page` checks one response body; `walk` follows cursors until the API stops giving one,
and refuses a cursor it has already followed, so a walk always ends. `parse_raw_page` is the
fast path's `parse_page`: it reads only the envelope (count and cursor, with ``msgspec``) and
keeps the records as the bytes that came, for the frame builder's Arrow path.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from ..errors import PaginationError, ValidationError

__all__ = ["JsonFloat", "Page", "RawPage", "loads", "parse_page", "parse_raw_page", "walk"]

_P = TypeVar("_P", "Page", "RawPage")
_TWO_DIGITS = re.compile(rb"(?=[0-9]{2})")

# Cursors are not secret (base64 of a record's key), but they are long; show enough to compare.
_CURSOR_PREVIEW = 24


@dataclass(frozen=True)
class Page:
    """One page of records and the cursor to the next one (``None`` on the last page).

    Examples
    --------
    >>> Page([{"user_id": "U1"}], None).cursor is None
    True
    """

    records: list[Any]
    cursor: str | None
    #: Fields of the response body other than the records and the cursor, by name (SPEC §3:
    #: nothing the API sent is dropped silently; the fetch loop warns about them).
    extra: tuple[str, ...] = ()


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


def parse_page(body: object, records_key: str) -> Page:
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
    >>> parse_page({"user_records": [{"user_id": "U1"}], "cursor": "eyJ9"}, "user_records")
    Page(records=[{'user_id': 'U1'}], cursor='eyJ9', extra=())
    >>> parse_page({"user_records": [], "cursor": ""}, "user_records")
    Page(records=[], cursor=None, extra=())
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
    return Page(records, cursor or None, _extra_fields(body, records_key))


def _extra_fields(fields: dict[str, Any], records_key: str) -> tuple[str, ...]:
    return tuple(sorted(name for name in fields if name not in (records_key, "cursor")))


@dataclass(frozen=True)
class RawPage:
    """One page as the fast path carries it: the response body, its record count and cursor.

    ``records`` holds the decoded records when the page had to be decoded in full anyway (a body
    only the standard library reads, or a page trimmed to ``max_records``); ``body`` is then
    ``None``. Otherwise the records stay in ``body`` for the frame builder to parse.

    Examples
    --------
    >>> page = parse_raw_page(b'{"user_records": [{"user_id": "U1"}], "cursor": "eyJ9"}',
    ...                       "user_records")
    >>> page.count, page.cursor, page.records
    (1, 'eyJ9', None)
    """

    body: bytes | None
    count: int
    cursor: str | None
    records: list[Any] | None = None
    extra: tuple[str, ...] = ()  # as `Page.extra`


def _envelope_decoders() -> dict[str, Any]:
    # msgspec reads a page's envelope without building the records (~10x json.loads).
    decoders = {}
    for key in ("user_records", "customer_records"):
        # The records stay raw (a slice of the body each): counted and skipped, never built.
        # Unknown fields are refused here and read by `_loose_envelope` (a body with one is
        # rare, and must not lose it).
        envelope = msgspec.defstruct(
            "Envelope",
            [("records", list[msgspec.Raw]), ("cursor", object, None)],
            rename={"records": key},
            forbid_unknown_fields=True,
        )
        decoders[key] = msgspec.json.Decoder(envelope)
    return decoders


_DECODERS = _envelope_decoders()
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def _loose_envelope(body: bytes, records_key: str) -> RawPage | None:
    """The envelope of a body with fields besides the records and the cursor, or ``None`` when
    its shape is not one `parse_page` accepts (then ``json.loads`` and `parse_page` decide)."""
    fields = _FIELDS.decode(body)
    if records_key not in fields or not _once(body, records_key):
        return None
    records = _RAW_LIST.decode(fields[records_key])
    cursor = msgspec.json.decode(fields.get("cursor", b"null"))
    if cursor is not None and not isinstance(cursor, str):
        return None
    return RawPage(body, len(records), cursor or None, extra=_extra_fields(fields, records_key))


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


def parse_raw_page(body: bytes, records_key: str) -> RawPage:
    """`parse_page` for a response body still in bytes: same checks, same errors.

    Only the envelope is decoded, by ``msgspec`` (the records are counted and skipped), and the
    body is kept for the frame builder. Whatever that reader declines (a body that is not UTF-8
    JSON, a field of the wrong shape, ``NaN``) is decoded again by ``json.loads`` and checked by
    `parse_page`, so the outcome, error or page, is the same.

    Parameters
    ----------
    body : bytes
        A 2xx response body.
    records_key : str
        ``"user_records"`` or ``"customer_records"``.

    Returns
    -------
    RawPage

    Raises
    ------
    ValueError
        The body is not JSON (``json.JSONDecodeError`` or ``UnicodeDecodeError``).
    ValidationError
        As `parse_page`.

    Examples
    --------
    >>> parse_raw_page(b'{"user_records": [], "cursor": ""}', "user_records").cursor is None
    True
    """
    decoder = _DECODERS.get(records_key)  # None for a key no endpoint has: json.loads reads it
    if decoder is not None and not _may_hold_a_long_int(body):
        try:
            body.decode("utf-8")  # msgspec does not check the text inside raw values
            try:
                envelope = decoder.decode(body)
            except msgspec.ValidationError:
                loose = _loose_envelope(body, records_key)
                if loose is not None:
                    return loose
            else:
                cursor = envelope.cursor
                if _once(body, records_key) and (cursor is None or isinstance(cursor, str)):
                    return RawPage(body, len(envelope.records), cursor or None)
        except (ValueError, RecursionError, msgspec.MsgspecError):
            pass  # json.loads below gives the error (or the page) the reference path gives
    page = parse_page(loads(body), records_key)
    return RawPage(None, len(page.records), page.cursor, page.records, page.extra)


def walk(fetch: Callable[[str | None], _P]) -> Iterator[_P]:
    """Yield pages from ``fetch(None)`` on, following each page's cursor until there is none.

    Short and empty pages that carry a cursor are not the end (the API pages like DynamoDB).
    Nothing is fetched before the caller asks for the next page, so stopping early is free.

    Parameters
    ----------
    fetch : callable
        ``fetch(cursor) -> Page`` (or `RawPage`); ``cursor`` is ``None`` for the first page.

    Yields
    ------
    Page or RawPage

    Raises
    ------
    PaginationError
        If a cursor comes back that this walk already followed (the chain would loop forever).

    Examples
    --------
    >>> pages = {None: Page([1, 2], "a"), "a": Page([], "b"), "b": Page([3], None)}
    >>> [page.records for page in walk(pages.__getitem__)]
    [[1, 2], [], [3]]
    """
    seen: set[str] = set()
    cursor: str | None = None
    page_number = 0
    while True:
        page = fetch(cursor)
        page_number += 1
        yield page
        cursor = page.cursor
        if not cursor:  # None, or "" from a Page built by hand
            return
        if cursor in seen:
            preview = cursor[:_CURSOR_PREVIEW] + ("..." if len(cursor) > _CURSOR_PREVIEW else "")
            msg = (
                f"page {page_number} returned a cursor already followed in this walk "
                f"({preview!r}); stopping instead of looping forever"
            )
            raise PaginationError(msg)
        seen.add(cursor)
