"""The Arrow reader: a batch of page bodies to one checked `Chunk`, or None to decline.

`PageReader.parse` reads a batch of bodies (one per line) with ``pyarrow.json.read_json``:
the known fields typed, everything else inferred, so that an unknown field or a metadata value
that is not a string shows up in the schema. `PageReader.chunk` checks what the Python reader
(`_python_reader`) checks, with vectorised kernels, and returns a chunk, or None as soon as
anything is not what the Python reader would read the same way: that reader then takes the
pages (and words any error). Declined: unknown fields, ``null`` (Arrow reads ``"k": null`` as
a missing key), metadata that is not flat strings (or any in the ``"dict"`` mode), a
timestamp not in the API's ``YYYY-MM-DDTHH:MM:SS.sssZ`` form, a name given twice in an object.
"""

from __future__ import annotations

import json
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from .._constants import ENDPOINTS, IMPACT_TYPES
from .._dtypes import CUSTOMER_COLUMNS
from ._batch import Chunk
from ._python_reader import _MIN_MS

__all__ = ["PageReader", "has_null", "meta_text", "milliseconds", "readable"]

_BLOCK_SIZE: Final = 4 << 20  # Arrow's unit of parallel parsing (grown for a longer body)

# The one timestamp form the Arrow reader reads: "2024-09-16T20:30:13.391Z" (24 bytes).
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
    ``"k": null`` as a missing key; the Python reader does not)."""
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
    except UnicodeDecodeError:  # json.loads may still read it (UTF-16): the Python reader's
        return False
    return True


def meta_text(
    struct: pa.ChunkedArray | None, meta: dict[str, pa.ChunkedArray], n: int
) -> pa.ChunkedArray | None:
    r"""The ``"json"`` column of flat string metadata, built with Arrow kernels: compact JSON
    text with the keys sorted by code point, as the Python reader's ``_meta_json`` writes it;
    None (the Python reader's) where a value or key holds a control character, which
    ``json.dumps`` writes as an escape this does not.

    Examples
    --------
    >>> struct = pa.chunked_array([pa.array([{"b": 'say "hi"', "a": "x"}, None, {}])])
    >>> meta = {k: pa.chunked_array([struct.chunk(0).field(k)]) for k in ("b", "a")}
    >>> meta_text(struct, meta, 3).to_pylist()
    ['{"a":"x","b":"say \\"hi\\""}', None, '{}']
    """
    if struct is None:
        return pa.chunked_array([pa.nulls(n, pa.string())])
    keys = sorted(meta)
    if any(ord(c) < 0x20 for key in keys for c in key):
        return None
    values = [meta[key] for key in keys]
    if values:  # one scan of every value for what JSON escapes (rare), not one per key
        probe = pc.binary_join_element_wise(*(pc.fill_null(v, "") for v in values), "")
        if pc.any(pc.match_substring_regex(probe, '["\\\\\\x00-\\x1f]')).as_py():
            if pc.any(pc.match_substring_regex(probe, "[\\x00-\\x1f]")).as_py():
                return None
            values = [
                pc.replace_substring(pc.replace_substring(v, "\\", "\\\\"), '"', '\\"')
                for v in values
            ]
    # '"key":"value",' per key present ("" where absent), between braces; the last comma
    # then dropped. (Not null_handling="skip": pyarrow 26 drops rows where all are null.)
    heads = [json.dumps(key, ensure_ascii=False) + ':"' for key in keys]
    pieces = [
        pc.fill_null(pc.binary_join_element_wise(head, v, '",', ""), "")
        for head, v in zip(heads, values, strict=True)
    ]
    text = pc.binary_join_element_wise("{", *pieces, "}", "")
    if pieces:
        text = pc.replace_substring_regex(text, ",}$", "}")
    return pc.if_else(struct.is_valid(), text, pa.scalar(None, text.type))


def milliseconds(times: pa.Array) -> np.ndarray | None:
    """Milliseconds since the epoch of canonical timestamps, or None if any is not canonical.

    Canonical is exactly ``YYYY-MM-DDTHH:MM:SS.sssZ`` (checked here on the bytes). The
    Python reader reads such a text with Arrow's ISO 8601 cast, after its own pattern check
    (which it passes) and before its year-0 check: so does this function, to the same result.
    Anything else (or a failing cast) goes to the Python reader, which decides.

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
    if ms.min() < _MIN_MS:  # year 0000 parses in Arrow; the Python reader refuses it
        return None
    return ms


def _children(column: pa.ChunkedArray) -> dict[str, pa.ChunkedArray]:
    """The fields of a struct column (the parent's nulls carried into each)."""
    return dict(zip(column.type.names, column.flatten(), strict=True))


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

    def accepts(self, body: bytes, checked: bool) -> bool:
        """`readable`, and in the ``"dict"`` mode without metadata (whose objects only the
        Python reader decodes): no batch is parsed to be declined."""
        if self.metadata == "dict" and b'"metadata"' in body:
            return False
        return readable(body, checked)

    def parse(
        self, bodies: list[bytes], checked: list[bool], options: pj.ParseOptions
    ) -> tuple[bool, pa.Table | None]:
        """Whether Arrow `accepts` every body, and `parse_now` of them. Runs on a worker thread
        (Arrow releases the GIL and parses on every core)."""
        if not all(map(self.accepts, bodies, checked)):
            return False, None
        return True, self.parse_now(bodies, options)

    def parse_now(self, bodies: list[bytes], options: pj.ParseOptions) -> pa.Table | None:
        """Arrow's table of the bodies (one row each), or None. Arrow refuses a name given
        twice in an object ("specified twice"): such a page is declined, never half read."""
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
        meta_json = None
        if self.metadata in ("columns", "json"):
            meta = self._metadata(fields.get("metadata"))
            if meta is None:
                return None
        elif "metadata" in fields:
            if not pa.types.is_struct(fields["metadata"].type):
                return None  # "drop": any object will do, but it must be one
            if self.metadata != "drop" and fields["metadata"].null_count < n:
                return None  # "dict": the objects are the Python reader's to decode
        if self.metadata == "json":
            meta_json = meta_text(fields.get("metadata"), meta or {}, n)
            if meta_json is None:
                return None
            meta = None
        elif self.metadata == "dict":
            meta_json = pa.chunked_array([pa.nulls(n, self.string_type)])
        strings = self._strings
        offsets = [lists.offsets.to_numpy()[:-1] + k for lists, k in _bases(pages)]
        return Chunk(
            strings(user_id),
            None if customer is None else tuple(map(strings, customer)),
            ms,
            impact,
            amount,
            strings(fields["category"]),
            None if meta is None else {k: strings(v) for k, v in meta.items()},
            meta_json=None if meta_json is None else strings(meta_json),
            starts=np.concatenate([np.zeros(0, np.int64), *offsets]).astype(np.int64),
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
            return None  # numbers, booleans, lists and nested objects: the Python reader flattens
        n = len(meta)
        # a key typed from an earlier batch that no record here has is not this chunk's
        return {k: v for k, v in _children(meta).items() if v.null_count < n}

    def _strings(self, values: pa.ChunkedArray) -> pa.ChunkedArray:
        return values if values.type == self.string_type else values.cast(self.string_type)


def _bases(pages: pa.ChunkedArray) -> list[tuple[pa.ListArray, int]]:
    """Each Arrow chunk of list arrays with the row its records start at (offset 0 based)."""
    out, base = [], 0
    for lists in pages.chunks:
        first = lists.offsets[0].as_py()
        out.append((lists, base - first))
        base += lists.offsets[len(lists)].as_py() - first
    return out
