"""Values as the API sent them, for the Python reader: metadata flattened into sparse column
stores, unknown fields and non-string metadata kept as their JSON text as sent (`json_text`).
A value that cannot be taken raises `_Bad`, which the reader turns into the record's error.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .._paging._pages import JsonFloat, loads

__all__ = ["canonical", "json_text"]


class _Bad(Exception):
    """A field of one record is wrong (becomes a ValidationError naming the record)."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _got(value: Any) -> str:
    kind = "float" if isinstance(value, float) else type(value).__name__  # JsonFloat too
    return f"got {kind} {_short(value)}"


def json_text(value: Any, *, strict: bool = False) -> str:
    """Compact JSON text of a decoded value, numbers as they were sent (`JsonFloat`).

    ``strict``: ``NaN`` and ``Infinity`` (which the API should not send, and strict JSON
    readers refuse) are written as strings. Raises ``TypeError`` for a value JSON cannot hold.

    Examples
    --------
    >>> from impactframe._paging._pages import loads
    >>> json_text(loads('{"a": [1E2, NaN], "b": "é"}'))
    '{"a":[1E2,NaN],"b":"é"}'
    >>> json_text(float("nan"), strict=True)
    '"NaN"'
    """
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        text = value.text if isinstance(value, JsonFloat) else None
        if not math.isfinite(value) and text is None:
            text = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        text = text or float.__repr__(value)
        return json.dumps(text) if strict and text.lstrip("-")[:1] in ("N", "I") else text
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            msg = "a key that is not a string"
            raise TypeError(msg)
        items = (f"{json_text(k)}:{json_text(v, strict=strict)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_text(v, strict=strict) for v in value) + "]"
    msg = f"{type(value).__name__} {_short(value)}"
    raise TypeError(msg)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return [_sorted(v) for v in value] if isinstance(value, list) else value


def canonical(text: str | None) -> str | None:
    """JSON text with every object's names sorted: two records that differ only in the order
    of names are the same record (numbers stay as sent, ``1`` is not ``"1"``).

    Examples
    --------
    >>> canonical('{"b":[{"d":1E2,"c":2}],"a":"x"}')
    '{"a":"x","b":[{"c":2,"d":1E2}]}'
    """
    if text is None or text[:1] not in ("{", "["):
        return text
    return json_text(_sorted(loads(text)))


class _Sparse:
    """The values one optional key takes, with the rows that have it (ascending), and per row
    its kind when any is not a plain string (1: JSON text of another value, 2: ``null``)."""

    __slots__ = ("kinds", "rows", "values")

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.values: list[str | None] = []
        self.kinds: list[int] | None = None

    def add(self, row: int, value: str | None, kind: int = 0) -> None:
        if kind and self.kinds is None:
            self.kinds = [0] * len(self.rows)
        self.rows.append(row)
        self.values.append(value)
        if self.kinds is not None:
            self.kinds.append(kind)


def _store(stores: dict[str, _Sparse], key: str) -> _Sparse:
    store = stores.get(key)
    if store is None:
        store = stores[key] = _Sparse()
    return store


def _leaf(value: Any) -> tuple[str | None, int]:
    """A metadata value as its column holds it: a string as it is, ``null`` as a null, any
    other value as its JSON text as sent (an empty object stays ``"{}"``: nothing is lost)."""
    if isinstance(value, str):
        return value, 0
    if value is None:
        return None, 2
    try:
        return json_text(value), 1
    except TypeError as exc:
        raise _Bad(field="metadata", reason=f"holds a value JSON cannot represent: {exc}") from None


def _flatten(meta: dict[Any, Any], out: dict[str, tuple[str | None, int]], parent: str) -> None:
    """Flatten metadata into ``out``: nested keys joined by "."."""
    for key, value in meta.items():
        if not isinstance(key, str):
            raise _Bad(field="metadata", reason=f"has a key that is not a string: {_short(key)}")
        path = parent + key
        if isinstance(value, dict) and value:
            _flatten(value, out, path + ".")
            continue
        if path in out:
            raise _Bad(field="metadata", reason=f"has two keys that both flatten to {path!r}")
        out[path] = _leaf(value)


def _add_metadata(stores: dict[str, _Sparse], meta: dict[Any, Any], row: int) -> None:
    """Add one record's metadata to the column stores (the flat all-string case directly)."""
    nested = False
    for key, value in meta.items():
        if type(key) is not str and not isinstance(key, str):
            raise _Bad(field="metadata", reason=f"has a key that is not a string: {_short(key)}")
        if type(value) is str:
            _store(stores, key).add(row, value)
        elif isinstance(value, dict) and value:
            nested = True  # flattened below, where its paths can meet the direct keys
        else:
            _store(stores, key).add(row, *_leaf(value))
    if nested:
        flat: dict[str, tuple[str | None, int]] = {}
        _flatten({k: v for k, v in meta.items() if isinstance(v, dict) and v}, flat, "")
        for path, (value, kind) in flat.items():
            if path in meta and not (isinstance(meta[path], dict) and meta[path]):
                raise _Bad(field="metadata", reason=f"has two keys that both flatten to {path!r}")
            _store(stores, path).add(row, value, kind)


def _meta_json(meta: dict[Any, Any]) -> str:
    """The metadata object as compact JSON text, numbers as sent, never ``NaN``; its keys
    sorted by code point (as the Arrow reader's `meta_text` writes them, whatever the order
    sent: the same text on every path)."""
    if not all(isinstance(key, str) for key in meta):
        raise _Bad(field="metadata", reason="has a key that is not a string")
    meta = dict(sorted(meta.items()))
    if all(type(value) is str for value in meta.values()):
        return json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
    try:
        return json_text(meta, strict=True)
    except TypeError as exc:
        raise _Bad(field="metadata", reason=f"holds a value JSON cannot represent: {exc}") from None


def _unknown(stores: dict[str, _Sparse], fields: dict[Any, Any], where: str, row: int) -> None:
    """Unknown fields, as their JSON text: they need a string name (it names a column)."""
    for field, value in fields.items():
        if not isinstance(field, str):
            raise _Bad(
                field=where, reason=f"has a field name that is not a string: {_short(field)}"
            )
        try:
            text = json_text(value)
        except TypeError as exc:
            raise _Bad(field=field, reason=f"holds a value JSON cannot represent: {exc}") from None
        _store(stores, field).add(row, text)
