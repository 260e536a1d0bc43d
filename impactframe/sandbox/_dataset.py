"""The records of one endpoint, sorted, encoded and indexed, and DynamoDB-style paging over them.

Speed matters (benchmarks serve a million records): every record is encoded to JSON bytes once,
pages are joined from those bytes, and date ranges and cursors are found by bisection on the
sorted timestamps. ``filter_by`` uses per-type position arrays built once (and one cached merge
per set of types), so no request scans the whole history.

A `Dataset` never changes once built: the ledger replaces it (`Dataset.with_record`,
`Dataset.without`), so a request that holds one reads one consistent state.
"""

from __future__ import annotations

import gc
import json
import operator
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from heapq import merge
from itertools import islice
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from .._constants import API_DEFAULT_LIMIT, IMPACT_TYPES
from .._params import reject
from ._protocol import encode_key_cursor

__all__ = ["CursorKey", "Dataset", "Query"]

_NO_KIND = 255  # code of a record without a known impact field (it never matches filter_by)
_EMPTY = array("q")


@dataclass(frozen=True)
class CursorKey:
    """A decoded cursor: the last evaluated key (plus a tiebreak for duplicate keys)."""

    created_on: str
    user_id: str
    seq: int = 0


@dataclass(frozen=True)
class Query:
    """A validated request to a records endpoint."""

    kinds: frozenset[str] | None = None
    email: str | None = None
    start: str | None = None  # YYYY-MM-DD, inclusive
    end: str | None = None  # YYYY-MM-DD, inclusive
    limit: int = API_DEFAULT_LIMIT
    descending: bool = False
    cursor: CursorKey | None = None


def _text(value: object) -> str:
    # Sort keys of records as given: strings as they are, anything else as its JSON text, so
    # that even malformed records (served on purpose to test validation) have a place.
    return value if isinstance(value, str) else json.dumps(value, default=repr)


def _texts(values: list[Any]) -> list[str]:
    if all(type(value) is str for value in values):  # the usual case, checked fast
        return values
    return [_text(value) for value in values]


def _encoder() -> Callable[[object], str]:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``, without per-call setup."""
    if c_make_encoder is None:  # pragma: no cover - CPython always has the C accelerator
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def default(obj: object) -> object:
        msg = f"Object of type {type(obj).__name__} is not JSON serializable"
        raise TypeError(msg)

    encode = c_make_encoder(None, default, encode_basestring, None, ":", ",", False, False, True)
    return lambda obj: "".join(encode(obj, 0))


class Dataset:
    """The records of one endpoint: sorted by ``(time_utc, user_id)``, encoded, indexed.

    Records are kept only as their JSON bytes; :meth:`records` decodes them again.
    """

    def __init__(self, records: Iterable[Mapping[str, Any]], *, name: str) -> None:
        items = list(records)
        for i, record in enumerate(items):
            if not isinstance(record, Mapping):
                shown = f"item {i} (of type {type(record).__name__})"
                accepted = "a list of dicts (records in the API's JSON shape)"
                reject(name, record, accepted, shown=shown)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # building millions of small objects; collections would find nothing
        try:
            self._build(items, name)
        finally:
            if gc_was_enabled:
                gc.enable()
        self.name = name
        self._lock = threading.Lock()
        self._merged: dict[frozenset[str], array[int]] = {}

    def _build(self, items: list[Mapping[str, Any]], name: str) -> None:
        times = _texts([r.get("time_utc") for r in items])
        users = _texts([r.get("user_id") for r in items])
        if not all(map(operator.lt, times, islice(times, 1, None))):
            order = sorted(range(len(items)), key=lambda i: (times[i], users[i]))  # stable
            items = [items[i] for i in order]
            times = [times[i] for i in order]
            users = [users[i] for i in order]
        self.times = times
        self.users = users
        encode = _encoder()
        try:
            self.encoded = [encode(r).encode() for r in items]
        except (TypeError, ValueError) as exc:
            msg = f"{name} must hold only JSON values: {exc}"
            raise ValueError(msg) from exc
        codes = bytearray(len(items))
        by_kind: dict[str, list[int]] = {kind: [] for kind in IMPACT_TYPES}
        by_email: dict[str, list[int]] = {}
        kinds = tuple(enumerate(IMPACT_TYPES))
        for i, record in enumerate(items):
            for code, kind in kinds:
                if kind in record:
                    codes[i] = code
                    by_kind[kind].append(i)
                    break
            else:
                codes[i] = _NO_KIND
            customer = record.get("customer")
            if type(customer) is dict or isinstance(customer, Mapping):  # the fast check first
                email = customer.get("customer_email")
                if isinstance(email, str):
                    by_email.setdefault(email, []).append(i)
        self.codes = codes
        self._by_kind = {kind: array("q", positions) for kind, positions in by_kind.items()}
        self._by_email = {email: array("q", positions) for email, positions in by_email.items()}

    def __len__(self) -> int:
        return len(self.encoded)

    # -- changes: a new Dataset each time ---------------------------------------------------------

    def with_record(self, record: Mapping[str, Any]) -> Dataset:
        """A new dataset of these records plus ``record``; this one is left as it is.

        A record that sorts last (a new impact, stamped now) is appended in time proportional
        to copying the index lists; anything else rebuilds the dataset.
        """
        time_utc, user_id = _text(record.get("time_utc")), _text(record.get("user_id"))
        if self.times and (time_utc, user_id) < (self.times[-1], self.users[-1]):
            return Dataset([*self.records(), record], name=self.name)  # sorted into place
        pos = len(self.encoded)
        new = object.__new__(Dataset)
        new.name = self.name
        new.times = [*self.times, time_utc]
        new.users = [*self.users, user_id]
        new.encoded = [*self.encoded, _encoder()(record).encode()]
        kind = next((kind for kind in IMPACT_TYPES if kind in record), None)
        new.codes = self.codes + bytes([_NO_KIND if kind is None else IMPACT_TYPES.index(kind)])
        new._by_kind = dict(self._by_kind)
        if kind is not None:
            new._by_kind[kind] = self._by_kind[kind] + array("q", [pos])
        new._by_email = dict(self._by_email)
        customer = record.get("customer")
        email = customer.get("customer_email") if isinstance(customer, Mapping) else None
        if isinstance(email, str):
            new._by_email[email] = self._by_email.get(email, _EMPTY) + array("q", [pos])
        new._lock = threading.Lock()
        new._merged = {}
        return new

    def without(self, pos: int) -> Dataset:
        """A new dataset without the record at ``pos``; this one is left as it is."""
        records = self.records()
        del records[pos]
        return Dataset(records, name=self.name)

    def find(self, time_utc: str, user_id: str) -> int | None:
        """Position of the first record with this ``(time_utc, user_id)``, or ``None``."""
        pos, found = self._locate(CursorKey(time_utc, user_id))
        return pos if found else None

    def record_at(self, pos: int) -> dict[str, Any]:
        """The record at ``pos``, decoded from the bytes served."""
        return json.loads(self.encoded[pos])  # type: ignore[no-any-return]

    def records(self) -> list[dict[str, Any]]:
        """The records, decoded from the bytes served, in ascending order."""
        return json.loads(b"[" + b",".join(self.encoded) + b"]")  # type: ignore[no-any-return]

    # -- paging ---------------------------------------------------------------------------------

    def page(
        self, query: Query, *, filter_after_limit: bool, repeat: bool
    ) -> tuple[list[bytes], str | None]:
        """The encoded records of one page and the cursor to the next (``None``: last page).

        Without ``filter_after_limit``, ``filter_by`` selects before ``limit`` counts and the
        cursor is present exactly when more matching records follow. With it, the page scans
        ``limit`` records of the range (date range, ``customer_email``, cursor) first and drops
        the ones ``filter_by`` excludes afterwards, DynamoDB style: a full scan always carries a
        cursor, even when nothing follows. ``repeat`` starts the page at the cursor's record.
        """
        times = self.times
        lo = bisect_left(times, query.start) if query.start else 0
        hi = bisect_left(times, query.end + "\uffff") if query.end else len(times)
        if query.cursor is not None:
            pos, found = self._locate(query.cursor)
            again = found and repeat and lo <= pos < hi  # the "repeat" fault: include it again
            if query.descending:
                hi = min(hi, pos + 1 if again else pos)
            else:
                lo = max(lo, pos + 1 if found and not again else pos)
        limit = query.limit
        scan_kinds = None if filter_after_limit else query.kinds
        candidates = self._candidates(query.email, scan_kinds)
        scanned: Iterable[int]
        if candidates is None:
            size = max(0, hi - lo)
            take = min(limit, size)
            scanned = range(hi - 1, hi - 1 - take, -1) if query.descending else range(lo, lo + take)
        else:
            first = bisect_left(candidates, lo)
            stop = max(first, bisect_left(candidates, hi))
            size = stop - first
            take = min(limit, size)
            if query.descending:
                scanned = candidates[stop - take : stop][::-1]
            else:
                scanned = candidates[first : first + take]
        # DynamoDB returns a LastEvaluatedKey whenever it stopped at Limit, even at the very end.
        more = take > 0 and (take == limit if filter_after_limit else size > take)
        cursor = self._cursor(scanned[-1]) if more else None  # type: ignore[index]
        encoded = self.encoded
        if filter_after_limit and query.kinds:
            wanted = {IMPACT_TYPES.index(kind) for kind in query.kinds}
            codes = self.codes
            return [encoded[p] for p in scanned if codes[p] in wanted], cursor
        if isinstance(scanned, range) and scanned.step == 1:
            return encoded[scanned.start : scanned.stop], cursor
        return [encoded[p] for p in scanned], cursor

    def _candidates(self, email: str | None, kinds: frozenset[str] | None) -> array[int] | None:
        """Sorted positions of the records to scan, or ``None`` for all of them."""
        if email is not None:
            positions = self._by_email.get(email, _EMPTY)
            if not kinds:
                return positions
            wanted = {IMPACT_TYPES.index(kind) for kind in kinds}
            codes = self.codes
            return array("q", [p for p in positions if codes[p] in wanted])
        if not kinds:
            return None
        if len(kinds) == 1:
            return self._by_kind[next(iter(kinds))]
        with self._lock:  # at most 26 combinations of several types: merge each once
            merged = self._merged.get(kinds)
            if merged is None:
                merged = array("q", merge(*(self._by_kind[kind] for kind in kinds)))
                self._merged[kinds] = merged
        return merged

    def _locate(self, key: CursorKey) -> tuple[int, bool]:
        """Position of the cursor's record and whether it exists (else: where it would be)."""
        lo = bisect_left(self.times, key.created_on)
        hi = bisect_right(self.times, key.created_on, lo)
        first = bisect_left(self.users, key.user_id, lo, hi)  # users are sorted within a time
        stop = bisect_right(self.users, key.user_id, first, hi)
        if first == stop:
            return first, False
        return min(first + key.seq, stop - 1), True

    def _cursor(self, pos: int) -> str:
        created_on, user_id = self.times[pos], self.users[pos]
        key: dict[str, object] = {"createdOn": created_on, "userID": user_id}
        lo = bisect_left(self.times, created_on)
        hi = bisect_right(self.times, created_on, lo)
        first = bisect_left(self.users, user_id, lo, hi)
        if bisect_right(self.users, user_id, first, hi) - first > 1:
            key["seq"] = pos - first  # only duplicate keys need a tiebreak
        return encode_key_cursor(key)
