"""The fast frame builder: response bodies (bytes) to the frame of SPEC §3, through Arrow.

`FastFrameBuilder` returns exactly what the reference `_frame.FrameBuilder` returns for the same
records (frame, dtypes, warnings, errors), several times faster and in less memory::

    add_raw(page)   buffer response bodies; every ~8 MB they are parsed at once by
                    ``pyarrow.json.read_json`` (both cores, GIL released, one body per line)
                    into a *chunk*: Arrow/numpy columns checked with vectorised kernels,
                    duplicates dropped
    add(records)    decoded records: checked by the reference code, then kept as a chunk
    finish()        concatenate the chunks into the typed frame and validate it

A body goes through the reference checks instead (``json.loads`` + `FrameBuilder._check_page`)
when Arrow cannot stand for it exactly: a raw line break or a JSON ``null`` in it (Arrow cannot
tell ``"k": null`` from a missing key), a field of another type or an unknown field, nested or
non-string metadata, a timestamp not in the API's ``YYYY-MM-DDTHH:MM:SS.sssZ`` form, a missing or
doubled impact field... A batch that fails is split in halves until the pages at fault are
found, so one odd page does not slow the others. Pages the reference checks accept and that a
chunk can hold (no unknown field, no ``null`` metadata value) still become chunks.

What a chunk cannot hold (an unknown field, a new impact type, a ``null`` metadata value, a
metadata key that would replace a fixed column) and the ``"dict"``/``"json"`` metadata modes
(which keep Python objects and key order) hand everything to a reference `FrameBuilder`: the
chunks taken so far are replayed into it as records, and it builds the frame. Never faster
than the reference there, never different.
"""

from __future__ import annotations

import functools
import json
import warnings
from array import array
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ._constants import DEFAULT_METADATA_PREFIX, ENDPOINTS, IMPACT_TYPES
from ._frame import (
    _CUSTOMER_COLUMNS,
    _MIN_MS,
    _STRING,
    DTYPES,
    FrameBuilder,
    _Columns,
    _spread,
    _strict_equal,
    fixed_columns,
)
from ._paging import RawPage, parse_page
from .errors import DuplicateRecordWarning

__all__ = ["FastFrameBuilder"]

#: Bodies are parsed together once this many bytes are waiting (about 35 pages of 1000).
BATCH_BYTES: Final = 8 << 20
_BLOCK_SIZE: Final = 4 << 20  # Arrow's unit of parallel parsing (grown for a longer body)
_SMALL_CHUNK: Final = 50_000  # rows: chunks below this size are merged, _SMALL_RUN at a time
_SMALL_RUN: Final = 16
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NO_ROWS: Final = np.empty(0, dtype=np.int64)

# The one timestamp form the fast path reads: "2024-09-16T20:30:13.391Z" (24 bytes).
_TIME_SIZE: Final = 24
_TIME_SEPARATORS: Final = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: ".", 23: "Z"}
_SEP_COLUMNS: Final = np.array(list(_TIME_SEPARATORS))
_SEP_BYTES: Final = np.frombuffer("".join(_TIME_SEPARATORS.values()).encode(), dtype=np.uint8)
_DIGIT_COLUMNS: Final = np.array([i for i in range(_TIME_SIZE) if i not in _TIME_SEPARATORS])
_NULL: Final = int.from_bytes(b"null", "little")


@functools.cache
def _parser() -> ThreadPoolExecutor:
    """The thread that parses batches while the caller checks the previous one."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="impactframe-parse")


def _has_null(body: bytes) -> bool:
    """Whether ``body`` holds the bytes ``null`` (a JSON null, or text that happens to)."""
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
    return b"\n" not in body and b"\r" not in body and not _has_null(body)


def _milliseconds(times: pa.Array) -> np.ndarray | None:
    """Milliseconds since the epoch of canonical timestamps, or None if any is not canonical.

    Canonical is exactly ``YYYY-MM-DDTHH:MM:SS.sssZ`` (checked here on the bytes). The
    reference reads such a text with Arrow's ISO 8601 cast, after its own pattern check
    (which it passes) and before its year-0 check: so does this function, to the same result.
    Anything else (or a failing cast) goes to the reference, which decides.
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


class _Chunk:
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
        self.position = _NO_ROWS
        self.low = int(time.min()) if len(time) else 0
        self.high = int(time.max()) if len(time) else -1

    def __len__(self) -> int:
        return len(self.time)

    @staticmethod
    def concat(parts: list[_Chunk]) -> _Chunk:
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
        chunk = _Chunk(
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

    def filter(self, keep: np.ndarray) -> _Chunk:
        mask = pa.array(keep)
        part = _Chunk(
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
        """What `_frame._Columns.content` gives for the same record."""
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


class _Reader:
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
            fields.append(pa.field("customer", pa.struct([(n, text) for n in _CUSTOMER_COLUMNS])))
        fields += [pa.field(name, pa.int64()) for name in IMPACT_TYPES]
        fields.append(pa.field("category", text))
        if self.metadata == "columns" and self.meta_keys:
            fields.append(pa.field("metadata", pa.struct([(k, text) for k in self.meta_keys])))
        schema = pa.schema(
            [(self.records_key, pa.list_(pa.struct(fields))), ("cursor", pa.string())]
        )
        return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")

    def learn(self, chunk: _Chunk) -> None:
        """Type the metadata keys of a chunk taken in the next batches' parse options."""
        new = [key for key in chunk.meta or {} if key not in self.meta_keys]
        if new:
            self.meta_keys.update(dict.fromkeys(new))
            self.parse_options = self._options()

    def parse(self, bodies: list[bytes], options: pj.ParseOptions) -> tuple[bool, pa.Table | None]:
        """Whether every body is simple, and Arrow's table of them (one row each) if it can.

        Runs on a worker thread (Arrow releases the GIL and parses blocks on every core)."""
        if not all(map(_simple, bodies)):
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

    def chunk(self, table: pa.Table | None, n_bodies: int) -> _Chunk | None:
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
        user_id, ms = fields["user_id"], _milliseconds(fields["time_utc"].combine_chunks())
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
        return _Chunk(
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
        if customer.null_count or not set(_CUSTOMER_COLUMNS).issuperset(customer.type.names):
            return None
        fields = _children(customer)
        columns = tuple(fields[name] for name in _CUSTOMER_COLUMNS)
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

    def from_page(self, page: _Columns, times: list[int]) -> _Chunk | None:
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
            return _Chunk(
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


def _repeated(times: np.ndarray) -> np.ndarray:
    """The values that occur more than once in ``times`` (sorted; fast for sorted input)."""
    if len(times) < 2:
        return _NO_ROWS
    step = np.diff(times)
    if (step > 0).all() or (step < 0).all():
        return _NO_ROWS
    if not ((step >= 0).all() or (step <= 0).all()):
        times = np.sort(times)
        step = np.diff(times)
    return np.unique(times[1:][step == 0])


class FastFrameBuilder:
    """`FrameBuilder` with an Arrow fast path for response bodies (same frames, faster).

    Parameters
    ----------
    endpoint, metadata, metadata_prefix, dtype_backend
        As for :class:`impactframe._frame.FrameBuilder`.
    batch_bytes : int
        Bodies are parsed together once this many bytes are waiting.

    Notes
    -----
    ``len(builder)`` counts the rows taken so far; bodies still waiting for their batch are
    taken by `flush` (and `finish`), which also raises any error they hold.

    Examples
    --------
    >>> builder = FastFrameBuilder("records")
    >>> builder.add_raw(b'{"user_records": [{"user_id": "U1", '
    ...                 b'"time_utc": "2024-09-17T13:24:04.429Z", "waste_removed": 15}]}')
    >>> builder.finish()[["user_id", "impact_type", "amount"]]
      user_id    impact_type  amount
    0      U1  waste_removed      15
    """

    def __init__(
        self,
        endpoint: str,
        *,
        metadata: str = "columns",
        metadata_prefix: str = DEFAULT_METADATA_PREFIX,
        dtype_backend: str = "numpy_nullable",
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self._options = {
            "metadata": metadata,
            "metadata_prefix": metadata_prefix,
            "dtype_backend": dtype_backend,
        }
        # checks the options; its page checks serve the pages Arrow does not take
        self._checker = FrameBuilder(endpoint, **self._options)
        self.endpoint = endpoint
        self.metadata = metadata
        self.metadata_prefix = metadata_prefix
        self.dtype_backend = dtype_backend
        self.batch_bytes = batch_bytes
        self._records_key = ENDPOINTS[endpoint][1]
        string_type = pa.large_string() if dtype_backend == "numpy_nullable" else pa.string()
        self._reader = _Reader(endpoint, metadata, string_type)
        self._reference: FrameBuilder | None = None
        if metadata in ("dict", "json"):  # Python objects and key order: the reference's job
            self._reference = FrameBuilder(endpoint, **self._options)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._parsing: deque[tuple[list[bytes], Future[Any] | None]] = deque()
        self._chunks: list[_Chunk] = []
        self._n_added = 0
        self._n_dropped = 0
        self._conflicts: dict[tuple[str, int], int] = {}  # key -> rows kept with that key
        self._slow_pages = 0

    def __len__(self) -> int:
        if self._reference is not None:
            return len(self._reference)
        return sum(map(len, self._chunks))

    @property
    def count(self) -> int:
        """Rows taken so far (bodies waiting for their batch are not counted)."""
        return len(self)

    @property
    def uses_reference(self) -> bool:
        """Whether the reference builder has taken over (see the module docstring)."""
        return self._reference is not None

    def __repr__(self) -> str:
        return (
            f"FastFrameBuilder({self.endpoint!r}, metadata={self.metadata!r}, "
            f"dtype_backend={self.dtype_backend!r}, rows={len(self)})"
        )

    # -- adding -----------------------------------------------------------------------------

    def add(self, records: list[Any]) -> int:
        """Validate one page of decoded records and take it (as `FrameBuilder.add`).

        Examples
        --------
        >>> builder = FastFrameBuilder("records")
        >>> record = {"user_id": "U1", "time_utc": "2024-09-16T20:30:13.391Z", "tree_planted": 2}
        >>> builder.add([record, dict(record)])  # the repeat is dropped
        1
        """
        self.flush()
        return self._add_records(records)

    def add_raw(self, page: RawPage | bytes) -> None:
        """Take one page as the client fetched it (see `Client.iter_raw_pages`).

        Parameters
        ----------
        page : RawPage or bytes
            A page, or a response body that `impactframe._paging.parse_raw_page` accepts.
            Bodies wait until about ``batch_bytes`` of them are there; each batch is then
            parsed on a worker thread while the previous one is checked.

        Raises
        ------
        ValidationError
            As `FrameBuilder.add`, for this page or one still waiting.

        Examples
        --------
        >>> builder = FastFrameBuilder("records")
        >>> builder.add_raw(b'{"user_records": []}')
        >>> builder.flush(); len(builder)
        0
        """
        if isinstance(page, RawPage):
            if page.body is None:
                self.flush()
                self._add_records(page.records or [])
                return
            page = page.body  # parse_raw_page checked that it is UTF-8
        else:
            try:
                page.decode("utf-8")  # Arrow does not check; json.loads is more lenient
            except UnicodeDecodeError:
                self.flush()
                self._add_records(self._records_of(page))
                return
        self._pending.append(page)
        self._pending_bytes += len(page)
        if self._pending_bytes >= self.batch_bytes:
            self._submit()

    def flush(self) -> None:
        """Parse and take every body still waiting.

        Examples
        --------
        >>> builder = FastFrameBuilder("records", batch_bytes=1 << 30)
        >>> builder.add_raw(b'{"user_records": [{"user_id": "U1", '
        ...                 b'"time_utc": "2024-09-17T13:24:04.429Z", "waste_removed": 15}]}')
        >>> len(builder), (builder.flush(), len(builder))[1]
        (0, 1)
        """
        self._submit()
        while self._parsing:
            self._take_batch(*self._parsing.popleft())

    def _submit(self) -> None:
        """Start parsing the waiting bodies; take the batch parsed before (one in flight)."""
        bodies, self._pending, self._pending_bytes = self._pending, [], 0
        if not bodies:
            return
        parsed = None
        if self._reference is None:
            reader = self._reader
            parsed = _parser().submit(reader.parse, bodies, reader.parse_options)
        self._parsing.append((bodies, parsed))
        while len(self._parsing) > 1:
            self._take_batch(*self._parsing.popleft())

    def _take_batch(self, bodies: list[bytes], parsed: Future[Any] | None) -> None:
        simple, table = parsed.result() if parsed is not None else (False, None)
        if self._reference is None:
            chunk = self._reader.chunk(table, len(bodies))
            if chunk is not None:
                self._commit(chunk)
                return
        if simple:
            self._take_simple(bodies, tried=True)
            return
        run: list[bytes] = []
        for body in bodies:
            if self._reference is None and _simple(body):
                run.append(body)
                continue
            self._take_simple(run)
            run = []
            self._add_records(self._records_of(body))
        self._take_simple(run)

    def _records_of(self, body: bytes) -> list[Any]:
        self._slow_pages += 1  # a body the reference checks (tests and benchmarks watch this)
        return parse_page(json.loads(body), self._records_key).records

    def _take_simple(self, bodies: list[bytes], *, tried: bool = False) -> None:
        """Take simple bodies in order: with Arrow where it can, halving a batch that fails
        (``tried``: the whole batch failed already)."""
        if not bodies:
            return
        if self._reference is None and not tried:
            reader = self._reader
            chunk = reader.chunk(reader.parse_now(bodies, reader.parse_options), len(bodies))
            if chunk is not None:
                self._commit(chunk)
                return
        if self._reference is not None or len(bodies) == 1:
            for body in bodies:
                self._add_records(self._records_of(body))
            return
        half = len(bodies) // 2
        self._take_simple(bodies[:half])
        self._take_simple(bodies[half:])

    def _add_records(self, records: list[Any]) -> int:
        if self._reference is not None:
            return self._reference.add(records)
        self._checker._n_added = self._n_added  # error messages count from here
        page, times = self._checker._check_page(records)
        chunk = self._reader.from_page(page, times)
        if chunk is None:
            self._fall_back()
            assert self._reference is not None
            return self._reference._commit(page, times)
        return self._commit(chunk)

    def _fall_back(self) -> None:
        """Hand everything to a reference builder: replay the rows taken so far into it."""
        reference = FrameBuilder(self.endpoint, **self._options)
        for chunk in self._chunks:
            reference.add(chunk.records())  # rows already unique: nothing is dropped again
        positions = [c.position for c in self._chunks]
        reference._position = array("q", np.concatenate([_NO_ROWS, *positions]).tobytes())
        reference._n_added = self._n_added
        reference._n_dropped = self._n_dropped
        self._chunks = []
        self._reference = reference

    # -- duplicates -------------------------------------------------------------------------

    def _commit(self, chunk: _Chunk) -> int:
        """Take a checked chunk, dropping records identical to one already taken."""
        n = len(chunk)
        self._reader.learn(chunk)
        chunk.position = np.arange(self._n_added, self._n_added + n, dtype=np.int64)
        self._n_added += n
        if not n:
            return 0
        repeated = _repeated(chunk.time)
        earlier = [c for c in self._chunks if c.low <= chunk.high and c.high >= chunk.low]
        if earlier:
            shared = np.intersect1d(np.concatenate([c.time for c in earlier]), chunk.time)
            repeated = np.union1d(repeated, shared)
        if repeated.size:
            keep = self._unique_rows(chunk, repeated, earlier)
            if not keep.all():
                self._n_dropped += n - int(keep.sum())
                chunk = chunk.filter(keep)
        self._chunks.append(chunk)
        self._coalesce()
        return len(chunk)

    def _coalesce(self) -> None:
        """Merge a run of small chunks (pages the reference checked one by one) into one, so
        that a long load of such pages does not end in thousands of chunks."""
        small = 0
        for chunk in reversed(self._chunks):
            if len(chunk) >= _SMALL_CHUNK:
                break
            small += 1
        if small >= _SMALL_RUN:
            self._chunks[-small:] = [_Chunk.concat(self._chunks[-small:])]

    def _unique_rows(
        self, chunk: _Chunk, repeated: np.ndarray, earlier: list[_Chunk]
    ) -> np.ndarray:
        """Which rows of ``chunk`` to keep: the reference's `_is_repeat`, on the few rows whose
        timestamp occurs more than once."""
        old = [(c, int(r)) for c in earlier for r in np.flatnonzero(np.isin(c.time, repeated))]
        rows = np.flatnonzero(np.isin(chunk.time, repeated)).tolist()
        old_keys = [c.key(r) for c, r in old]
        new_keys = [chunk.key(r) for r in rows]
        shared = {key for key, count in Counter(old_keys + new_keys).items() if count > 1}
        kept: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        for (c, r), key in zip(old, old_keys, strict=True):
            if key in shared:
                kept.setdefault(key, []).append(c.content(r))
        keep = np.ones(len(chunk), dtype=bool)
        for r, key in zip(rows, new_keys, strict=True):
            if key not in shared:
                continue
            content = chunk.content(r)
            same_key = kept.setdefault(key, [])
            if any(_strict_equal(other, content) for other in same_key):
                keep[r] = False
                continue
            same_key.append(content)
            if len(same_key) > 1:
                self._conflicts[key] = len(same_key)
        return keep

    # -- the frame ----------------------------------------------------------------------------

    def finish(self, *, stacklevel: int = 2) -> pd.DataFrame:
        """Build and validate the frame of every record taken (as `FrameBuilder.finish`).

        Parameters
        ----------
        stacklevel : int, default 2
            Where warnings point: 2 is the caller of ``finish``.

        Examples
        --------
        >>> FastFrameBuilder("customer_records").finish().columns[:3].tolist()
        ['user_id', 'customer_id', 'customer_email']
        """
        self.flush()
        if self._reference is None and self.metadata == "columns":
            keys = {key for chunk in self._chunks for key in chunk.meta or {}}
            if {self.metadata_prefix + key for key in keys} & set(fixed_columns(self.endpoint)):
                self._fall_back()  # the reference names the record in its error
        if self._reference is not None:
            return self._reference.finish(stacklevel=stacklevel + 1)
        return self._assemble(stacklevel + 1)

    def _assemble(self, stacklevel: int) -> pd.DataFrame:
        # imported here: impactframe.schemas imports this package's _frame module
        from .schemas import validate

        chunks, column = self._chunks, self._checker._column
        string_type = self._reader.string_type

        def strings(columns: list[pa.ChunkedArray]) -> pa.ChunkedArray:
            return pa.chunked_array([c for part in columns for c in part.chunks], string_type)

        columns: dict[str, Any] = {"user_id": column(strings([c.user_id for c in chunks]), _STRING)}
        if self._reader.customers:
            for k, name in enumerate(_CUSTOMER_COLUMNS):
                parts = [c.customer[k] for c in chunks]  # type: ignore[index]
                columns[name] = column(strings(parts), _STRING)
        ms = np.concatenate([_NO_ROWS, *(c.time for c in chunks)])
        stamps = pa.array(ms, pa.timestamp("ms", tz="UTC"))
        columns["time_utc"] = column(stamps, DTYPES["time_utc"])
        codes = np.concatenate([np.empty(0, np.int8), *(c.impact for c in chunks)])
        columns["impact_type"] = pd.Categorical.from_codes(codes, dtype=DTYPES["impact_type"])
        amounts = np.concatenate([_NO_ROWS, *(c.amount for c in chunks)])
        columns.update(self._amount_columns(codes, amounts))
        columns["category"] = column(strings([c.category for c in chunks]), _STRING)
        if self.metadata == "columns":
            keys = sorted({key for chunk in chunks for key in chunk.meta or {}})
            for key in keys:
                parts = []
                for chunk in chunks:
                    part = (chunk.meta or {}).get(key)
                    if part is None:
                        part = pa.chunked_array([pa.nulls(len(chunk), string_type)])
                    parts.append(part)
                columns[self.metadata_prefix + key] = column(strings(parts), _STRING)
        frame = pd.DataFrame(columns, copy=False)
        if self._conflicts:
            msg = (
                f"{self._records_key}: {len(self._conflicts)} (user_id, time_utc) key(s) occur in "
                f"records with different content; all {sum(self._conflicts.values())} of those "
                "records were kept"
            )
            warnings.warn(msg, DuplicateRecordWarning, stacklevel=stacklevel + 1)
        return validate(
            frame,
            self.endpoint,
            dtype_backend=self.dtype_backend,
            metadata=self.metadata,
            metadata_prefix=self.metadata_prefix,
        )

    def _amount_columns(self, codes: np.ndarray, amounts: np.ndarray) -> dict[str, Any]:
        """``amount`` and one column per impact type (null where the row is of another type)."""
        n = len(amounts)
        if self.dtype_backend == "numpy_nullable":
            columns = {"amount": pd.arrays.IntegerArray(amounts, np.zeros(n, dtype=bool))}
            for code, name in enumerate(IMPACT_TYPES):
                # the values under the mask are never read: a copy is cheaper than zeroing
                columns[name] = pd.arrays.IntegerArray(amounts.copy(), codes != code)
            return columns
        # Arrow arrays are immutable: every impact column shares the amounts buffer, each with
        # its own validity bitmap (8 bytes a row less per column).
        values = pa.array(amounts, pa.int64())
        data = values.buffers()[1]
        columns = {"amount": pd.arrays.ArrowExtensionArray(values)}
        for code, name in enumerate(IMPACT_TYPES):
            present = codes == code
            bitmap = pa.py_buffer(np.packbits(present, bitorder="little"))
            array_ = pa.Array.from_buffers(pa.int64(), n, [bitmap, data])
            columns[name] = pd.arrays.ArrowExtensionArray(array_)
        return columns
