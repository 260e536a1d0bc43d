"""The Arrow side of `FastFrameBuilder`: page bodies to checked column chunks.

`PageReader.parse` reads a batch of bodies (one per line) with ``pyarrow.json.read_json``:
the known fields typed, everything else inferred, so that an unknown field or a metadata value
that is not a string shows up in the schema. `PageReader.chunk` checks what the reference
`_frame.FrameBuilder` checks (with vectorised kernels) and returns a `Chunk` of columns, or
None as soon as anything is not what the reference would read the same way; `from_page` turns
a page the reference checked into a chunk. A `Chunk` can also give its rows back as records
(`Chunk.records`), for the hand-over to the reference builder.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from .._constants import ENDPOINTS, IMPACT_TYPES
from .._dtypes import CUSTOMER_COLUMNS
from ._columns import _Columns, _spread
from ._python_reader import _EPOCH, _MIN_MS

__all__ = ["NO_ROWS", "Chunk", "PageReader", "has_null", "milliseconds", "readable"]

NO_ROWS: Final = np.empty(0, dtype=np.int64)
_BLOCK_SIZE: Final = 4 << 20  # Arrow's unit of parallel parsing (grown for a longer body)

# The one timestamp form the fast path reads: "2024-09-16T20:30:13.391Z" (24 bytes).
_TIME_SIZE: Final = 24
_TIME_SEPARATORS: Final = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: ".", 23: "Z"}
_SEP_COLUMNS: Final = np.array(list(_TIME_SEPARATORS))
_SEP_BYTES: Final = np.frombuffer("".join(_TIME_SEPARATORS.values()).encode(), dtype=np.uint8)
_DIGIT_COLUMNS: Final = np.array([i for i in range(_TIME_SIZE) if i not in _TIME_SEPARATORS])
_NULL: Final = int.from_bytes(b"null", "little")


def has_null(body: bytes) -> bool:
    """Whether ``body`` holds the bytes ``null`` (a JSON null, or text that happens to).

    Examples
    --------
    >>> has_null(b'{"a": null}'), has_null(b'{"a": "nul"}')
    (True, False)
    """
    if len(body) < 4096:
        return b"null" in body
    # four aligned 32-bit comparisons: several times faster than bytes.find for a long body
    size = len(body)
    return any(
        (np.frombuffer(body, dtype="<u4", count=(size - k) // 4, offset=k) == _NULL).any()
        for k in range(4)
    )


def _simple(body: bytes) -> bool:
    """Whether Arrow may stand for ``body``: one line, and no JSON ``null`` (Arrow reads
    ``"k": null`` as a missing key; the reference does not)."""
    return b"\n" not in body and b"\r" not in body and not has_null(body)


def readable(body: bytes, checked: bool) -> bool:
    """`_simple`, and UTF-8 (Arrow does not check it; ``checked``: the client did).

    Examples
    --------
    >>> readable(b'{"a": 1}', False), readable(b'{"a": null}', True)
    (True, False)
    """
    if not _simple(body):
        return False
    if checked:
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:  # json.loads may still read it (UTF-16, surrogates): the reference
        return False
    return True


def milliseconds(times: pa.Array) -> np.ndarray | None:
    """Milliseconds since the epoch of canonical timestamps, or None if any is not canonical.

    Canonical is exactly ``YYYY-MM-DDTHH:MM:SS.sssZ`` (checked here on the bytes). The
    reference reads such a text with Arrow's ISO 8601 cast, after its own pattern check
    (which it passes) and before its year-0 check: so does this function, to the same result.
    Anything else (or a failing cast) goes to the reference, which decides.

    Examples
    --------
    >>> milliseconds(pa.array(["1970-01-01T00:00:01.500Z"])).tolist()
    [1500]
    >>> milliseconds(pa.array(["1970-01-01T00:00:01Z"])) is None
    True
    """
    n = len(times)
    if times.null_count or not pa.types.is_string(times.type):
        return None
    if n == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.frombuffer(
        times.buffers()[1], dtype=np.int32, count=n + 1, offset=times.offset * 4
    )
    if offsets[n] - offsets[0] != _TIME_SIZE * n or (np.diff(offsets) != _TIME_SIZE).any():
        return None
    chars = np.frombuffer(
        times.buffers()[2], dtype=np.uint8, count=_TIME_SIZE * n, offset=int(offsets[0])
    ).reshape(n, _TIME_SIZE)
    # uint8: a byte below "0" wraps past 9 as well
    if (chars[:, _SEP_COLUMNS] != _SEP_BYTES).any() or (chars[:, _DIGIT_COLUMNS] - 48 > 9).any():
        return None
    try:
        stamps = times.cast(pa.timestamp("ms", tz="UTC"))
    except pa.ArrowInvalid:  # a well-formed but impossible date or time
        return None
    ms: np.ndarray = stamps.view(pa.int64()).to_numpy()
    if ms.min() < _MIN_MS:  # year 0000 parses in Arrow; the reference refuses it
        return None
    return ms


def _iso(ms: int) -> str:
    """A timestamp text the reference reads back as exactly ``ms`` (any year 1-9999)."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def _children(column: pa.ChunkedArray) -> dict[str, pa.ChunkedArray]:
    """The fields of a struct column (the parent's nulls carried into each)."""
    return dict(zip(column.type.names, column.flatten(), strict=True))


class Chunk:
    """Checked rows of one or more pages as Arrow strings and numpy numbers.

    ``meta`` maps each (flattened) metadata key to a dense string column, null where the record
    does not have the key (a chunk never holds a ``null`` metadata value); it is None in
    ``"drop"`` mode. ``position`` is each row's index among all records added (for messages).
    """

    __slots__ = (
        *("amount", "category", "customer", "high", "impact", "low", "meta", "position"),
        *("time", "user_id"),
    )

    def __init__(
        self,
        user_id: pa.ChunkedArray,
        customer: tuple[pa.ChunkedArray, ...] | None,
        time: np.ndarray,
        impact: np.ndarray,
        amount: np.ndarray,
        category: pa.ChunkedArray,
        meta: dict[str, pa.ChunkedArray] | None,
    ) -> None:
        self.user_id = user_id
        self.customer = customer
        self.time = time
        self.impact = impact
        self.amount = amount
        self.category = category
        self.meta = meta
        self.position = NO_ROWS
        self.low = int(time.min()) if len(time) else 0
        self.high = int(time.max()) if len(time) else -1

    def __len__(self) -> int:
        return len(self.time)

    @staticmethod
    def concat(parts: list[Chunk]) -> Chunk:
        """One chunk of ``parts`` in order (each column one Arrow array)."""
        string_type = parts[0].user_id.type

        def strings(columns: list[pa.ChunkedArray]) -> pa.ChunkedArray:
            chunks = [c for column in columns for c in column.chunks]
            return pa.chunked_array([pa.chunked_array(chunks, string_type).combine_chunks()])

        meta = None
        if parts[0].meta is not None:
            keys = dict.fromkeys(key for part in parts for key in part.meta or {})
            meta = {
                key: strings(
                    [
                        (part.meta or {}).get(key)
                        or pa.chunked_array([pa.nulls(len(part), string_type)])
                        for part in parts
                    ]
                )
                for key in keys
            }
        customer = None
        if parts[0].customer is not None:
            customer = tuple(strings([p.customer[k] for p in parts]) for k in range(3))  # type: ignore[index]
        chunk = Chunk(
            strings([p.user_id for p in parts]),
            customer,
            np.concatenate([p.time for p in parts]),
            np.concatenate([p.impact for p in parts]),
            np.concatenate([p.amount for p in parts]),
            strings([p.category for p in parts]),
            meta,
        )
        chunk.position = np.concatenate([p.position for p in parts])
        return chunk

    def filter(self, keep: np.ndarray) -> Chunk:
        mask = pa.array(keep)
        part = Chunk(
            self.user_id.filter(mask),
            None if self.customer is None else tuple(c.filter(mask) for c in self.customer),
            self.time[keep],
            self.impact[keep],
            self.amount[keep],
            self.category.filter(mask),
            None if self.meta is None else {k: v.filter(mask) for k, v in self.meta.items()},
        )
        part.position = self.position[keep]
        return part

    def key(self, i: int) -> tuple[str, int]:
        return self.user_id[i].as_py(), int(self.time[i])

    def content(self, i: int) -> tuple[Any, ...]:
        """What `_frame_columns._Columns.content` gives for the same record."""
        meta = None
        if self.meta is not None:
            meta = {k: v for k, column in self.meta.items() if (v := column[i].as_py()) is not None}
        customer = None if self.customer is None else tuple(c[i].as_py() for c in self.customer)
        impact, amount = int(self.impact[i]), int(self.amount[i])
        return impact, amount, self.category[i].as_py(), customer, meta, {}, {}

    def records(self) -> list[dict[str, Any]]:
        """The rows as records the reference builder turns into the same rows again."""
        users = self.user_id.to_pylist()
        times = [_iso(ms) for ms in self.time.tolist()]
        names = [IMPACT_TYPES[code] for code in self.impact.tolist()]
        amounts = self.amount.tolist()
        categories = self.category.to_pylist()
        customers = [c.to_pylist() for c in self.customer] if self.customer is not None else None
        meta = {k: v.to_pylist() for k, v in self.meta.items()} if self.meta is not None else None
        out = []
        for i, user_id in enumerate(users):
            record: dict[str, Any] = {
                "user_id": user_id,
                "time_utc": times[i],
                names[i]: amounts[i],
            }
            if categories[i] is not None:
                record["category"] = categories[i]
            if customers is not None:
                customer = {"customer_id": customers[0][i], "customer_email": customers[1][i]}
                if customers[2][i] is not None:
                    customer["customer_name"] = customers[2][i]
                record["customer"] = customer
            if meta:
                values = {k: column[i] for k, column in meta.items() if column[i] is not None}
                if values:
                    record["metadata"] = values
            out.append(record)
        return out


class PageReader:
    """Parses batches of bodies of one endpoint with Arrow into checked chunks."""

    def __init__(self, endpoint: str, metadata: str, string_type: pa.DataType) -> None:
        self.records_key = ENDPOINTS[endpoint][1]
        self.customers = endpoint == "customer_records"
        self.metadata = metadata
        self.string_type = string_type
        self.known = frozenset(
            {"user_id", "time_utc", *IMPACT_TYPES, "category", "metadata"}
            | ({"customer"} if self.customers else set())
        )
        self.meta_keys: dict[str, None] = {}  # metadata keys met so far, in order
        self.parse_options = self._options()

    def _options(self) -> pj.ParseOptions:
        """Arrow's parse options: the known fields typed (strings straight in the frame's
        string type), and, in ``"columns"`` mode, the metadata keys met so far. Anything else
        is inferred, which is how unknown fields and new metadata keys are found."""
        text = self.string_type
        fields = [pa.field("user_id", text), pa.field("time_utc", pa.string())]
        if self.customers:
            fields.append(pa.field("customer", pa.struct([(n, text) for n in CUSTOMER_COLUMNS])))
        fields += [pa.field(name, pa.int64()) for name in IMPACT_TYPES]
        fields.append(pa.field("category", text))
        if self.metadata == "columns" and self.meta_keys:
            fields.append(pa.field("metadata", pa.struct([(k, text) for k in self.meta_keys])))
        schema = pa.schema(
            [(self.records_key, pa.list_(pa.struct(fields))), ("cursor", pa.string())]
        )
        return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")

    def learn(self, chunk: Chunk) -> None:
        """Type the metadata keys of a chunk taken in the next batches' parse options."""
        new = [key for key in chunk.meta or {} if key not in self.meta_keys]
        if new:
            self.meta_keys.update(dict.fromkeys(new))
            self.parse_options = self._options()

    def parse(
        self, bodies: list[bytes], checked: list[bool], options: pj.ParseOptions
    ) -> tuple[bool, pa.Table | None]:
        """Whether every body is `readable`, and Arrow's table of them (one row each) if it
        can. Runs on a worker thread (Arrow releases the GIL and parses on every core)."""
        if not all(map(readable, bodies, checked)):
            return False, None
        return True, self.parse_now(bodies, options)

    def parse_now(self, bodies: list[bytes], options: pj.ParseOptions) -> pa.Table | None:
        block = max(_BLOCK_SIZE, max(map(len, bodies)) + 1)
        try:
            return pj.read_json(
                pa.BufferReader(b"\n".join(bodies)),
                read_options=pj.ReadOptions(use_threads=True, block_size=block),
                parse_options=options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    def chunk(self, table: pa.Table | None, n_bodies: int) -> Chunk | None:
        """The checked chunk of every record of a parsed batch, or None where a check fails."""
        if table is None or table.num_rows != n_bodies:
            return None
        pages = table.column(self.records_key)
        if pages.null_count:
            return None
        records = pa.chunked_array([lists.flatten() for lists in pages.chunks])
        n = len(records)
        if records.null_count or not self.known.issuperset(records.type.names):
            return None
        fields = _children(records)
        user_id, ms = fields["user_id"], milliseconds(fields["time_utc"].combine_chunks())
        if user_id.null_count or ms is None:
            return None
        impact = np.full(n, -1, dtype=np.int8)
        hits = np.zeros(n, dtype=np.int8)
        for code, name in enumerate(IMPACT_TYPES):
            values = fields[name]
            if values.null_count == n:
                continue
            present = values.is_valid().to_numpy() if values.null_count else np.ones(n, bool)
            hits += present
            impact[present] = code
        if n and (hits != 1).any():
            return None
        # one impact field per record: the first that is set is its amount
        amounts = pc.coalesce(*(fields[name] for name in IMPACT_TYPES))
        amount = np.asarray(amounts.to_numpy(), dtype=np.int64)
        if n and amount.min() < 0:
            return None
        customer = None
        if self.customers:
            customer = self._customer(fields["customer"])
            if customer is None:
                return None
        meta: dict[str, pa.ChunkedArray] | None = None
        if self.metadata == "columns":
            meta = self._metadata(fields.get("metadata"))
            if meta is None:
                return None
        elif "metadata" in fields and not pa.types.is_struct(fields["metadata"].type):
            return None  # "drop": any object will do, but it must be one
        strings = self._strings
        return Chunk(
            strings(user_id),
            None if customer is None else tuple(map(strings, customer)),
            ms,
            impact,
            amount,
            strings(fields["category"]),
            None if meta is None else {k: strings(v) for k, v in meta.items()},
        )

    @staticmethod
    def _customer(customer: pa.ChunkedArray) -> tuple[pa.ChunkedArray, ...] | None:
        if customer.null_count or not set(CUSTOMER_COLUMNS).issuperset(customer.type.names):
            return None
        fields = _children(customer)
        columns = tuple(fields[name] for name in CUSTOMER_COLUMNS)
        if columns[0].null_count or columns[1].null_count:
            return None
        return columns

    @staticmethod
    def _metadata(meta: pa.ChunkedArray | None) -> dict[str, pa.ChunkedArray] | None:
        """Flat string metadata as one column per key present; None for anything else."""
        if meta is None:
            return {}
        if not pa.types.is_struct(meta.type):
            return None
        text = (pa.types.is_string, pa.types.is_large_string)
        if not all(any(is_(field.type) for is_ in text) for field in meta.type.fields):
            return None  # numbers, booleans, lists and nested objects: the reference flattens
        n = len(meta)
        # a key typed from an earlier batch that no record here has is not this chunk's
        return {k: v for k, v in _children(meta).items() if v.null_count < n}

    def _strings(self, values: pa.ChunkedArray) -> pa.ChunkedArray:
        return values if values.type == self.string_type else values.cast(self.string_type)

    def from_page(self, page: _Columns, times: list[int]) -> Chunk | None:
        """A chunk of a page the reference checked, or None if a chunk cannot hold it."""
        if page.extra or page.customer_extra or page.orphans:
            return None  # unknown fields and new impact types: only the reference has them
        n = len(page)
        string_type = self.string_type

        def strings(values: list[Any]) -> pa.ChunkedArray:
            return pa.chunked_array([pa.array(values, string_type)])

        meta = None
        try:
            if self.metadata == "columns":
                meta = {}
                for key, store in page.meta.items():
                    if any(value is None for value in store.values):
                        return None  # a null value: "k": null is not a missing key
                    values = pa.array(store.values, string_type)
                    meta[key] = pa.chunked_array([_spread(store.rows, values, n)])
            customer = None
            if self.customers:
                customer = tuple(strings(values) for values in page.customer)
            return Chunk(
                strings(page.user_id),
                customer,
                np.array(times, dtype=np.int64),
                np.array(page.impact, dtype=np.int8),
                np.array(page.amount, dtype=np.int64),
                strings(page.category),
                meta,
            )
        except UnicodeEncodeError:  # a lone surrogate: the reference reports it at finish()
            return None
