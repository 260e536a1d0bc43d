"""The fast frame builder: response bodies (bytes) to the frame of SPEC §3, through Arrow.

`FastFrameBuilder` returns exactly what the reference `_frame.FrameBuilder` returns for the same
records (frame, dtypes, warnings, errors), several times faster and in less memory::

    add_raw(page)   buffer response bodies; every ~8 MB they are parsed at once by
                    ``pyarrow.json.read_json`` (both cores, GIL released, one body per line)
                    into a *chunk*: Arrow/numpy columns checked with vectorised kernels
                    (`impactframe._frame_arrow`), duplicates dropped
    add(records)    decoded records: checked by the reference code, then kept as a chunk
    finish()        concatenate the chunks into the typed frame and validate it

A body goes through the reference checks instead (``json.loads`` + `PageChecker.check`)
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

import dataclasses
import functools
import json
import time
from array import array
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from .._constants import IMPACT_TYPES
from .._dtypes import CUSTOMER_COLUMNS, DTYPES, STRING, fixed_columns
from .._paging._pages import Page, decode_page
from ._arrow_reader import NO_ROWS, Chunk, PageReader, readable
from ._options import FrameOptions
from ._python_reader import PageChecker
from ._reference import FrameBuilder
from ._repeats import _strict_equal, warn_conflicts

__all__ = ["FastFrameBuilder"]

#: Bodies are parsed together once this many bytes are waiting (about 35 pages of 1000),
BATCH_BYTES: Final = 8 << 20
#: or once the first of them has waited this many seconds.
BATCH_SECONDS: Final = 0.5
_SMALL_CHUNK: Final = 8_192  # rows: chunks below (pages checked one by one) are merged,
_SMALL_RUN: Final = 16  # this many at a time (a batch's chunk is far larger)


@functools.cache
def _parser() -> ThreadPoolExecutor:
    """The thread that parses batches while the caller checks the previous one."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="impactframe-parse")


def _repeated(times: np.ndarray) -> np.ndarray:
    """The values that occur more than once in ``times`` (sorted; fast for sorted input)."""
    if len(times) < 2:
        return NO_ROWS
    step = np.diff(times)
    if (step > 0).all() or (step < 0).all():
        return NO_ROWS
    if not ((step >= 0).all() or (step <= 0).all()):
        times = np.sort(times)
        step = np.diff(times)
    return np.unique(times[1:][step == 0])


# The options (endpoint, metadata, ...) and their checks are FrameOptions's, as FrameBuilder's.
@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class FastFrameBuilder(FrameOptions):
    """`FrameBuilder` with an Arrow fast path for response bodies (same frames, faster).

    Parameters
    ----------
    endpoint, metadata, metadata_prefix, dtype_backend
        As for :class:`impactframe._frame.FrameBuilder`.
    batch_bytes : int
        Bodies are parsed together once this many bytes are waiting,
    batch_seconds : float
        or once the first of them has waited this long (pages from a slow API are checked,
        and their errors raised, without waiting for a full batch).

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

    batch_bytes: int = BATCH_BYTES
    batch_seconds: float = BATCH_SECONDS

    def __post_init__(self) -> None:
        super().__post_init__()
        # the reference's page checks, for the pages Arrow does not take
        self._checker = PageChecker(self.endpoint, self.metadata)
        string_type = pa.large_string() if self.dtype_backend == "numpy_nullable" else pa.string()
        self._reader = PageReader(self.endpoint, self.metadata, string_type)
        self._reference: FrameBuilder | None = None
        if self.metadata in ("dict", "json"):  # Python objects and key order: the reference's job
            self._reference = FrameBuilder(self.endpoint, **self.options())
        self._pending: list[bytes] = []
        self._pending_checked: list[bool] = []  # per body: known to be UTF-8
        self._pending_bytes = 0
        self._pending_since = 0.0  # time.monotonic() when the first waiting body came
        self._parsing: deque[tuple[list[bytes], list[bool], Future[Any] | None]] = deque()
        self._chunks: list[Chunk] = []
        self._n_added = 0
        self._n_dropped = 0
        self._conflicts: dict[tuple[str, int], int] = {}  # key -> rows kept with that key
        self._slow_pages = 0

    def __len__(self) -> int:
        if self._reference is not None:
            return len(self._reference)
        return sum(map(len, self._chunks))

    @property
    def uses_reference(self) -> bool:
        """Whether the reference builder has taken over (see the module docstring)."""
        return self._reference is not None

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

    def add_raw(self, page: Page | bytes) -> None:
        """Take one page as the walk fetched it (see `impactframe._paging._concurrent.iter_pages`).

        Parameters
        ----------
        page : Page or bytes
            A page, or a response body that `impactframe._paging._pages.parse_page` accepts.
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
        checked = isinstance(page, Page)  # parse_page checked that it is UTF-8
        if isinstance(page, Page):
            if page.body is None:
                self.flush()
                self._add_records(page.records or [])
                return
            page = page.body
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(page)
        self._pending_checked.append(checked)
        self._pending_bytes += len(page)
        if (
            self._pending_bytes >= self.batch_bytes
            or time.monotonic() - self._pending_since >= self.batch_seconds
        ):
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
        bodies, checked = self._pending, self._pending_checked
        self._pending, self._pending_checked, self._pending_bytes = [], [], 0
        if not bodies:
            return
        parsed = None
        if self._reference is None:
            reader = self._reader
            parsed = _parser().submit(reader.parse, bodies, checked, reader.parse_options)
        self._parsing.append((bodies, checked, parsed))
        while len(self._parsing) > 1:
            self._take_batch(*self._parsing.popleft())

    def _take_batch(
        self, bodies: list[bytes], checked: list[bool], parsed: Future[Any] | None
    ) -> None:
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
        for body, ok in zip(bodies, checked, strict=True):
            if self._reference is None and readable(body, ok):
                run.append(body)
                continue
            self._take_simple(run)
            run = []
            self._add_records(self._records_of(body))
        self._take_simple(run)

    def _records_of(self, body: bytes) -> list[Any]:
        self._slow_pages += 1  # a body the reference checks (tests and benchmarks watch this)
        return decode_page(json.loads(body), self._records_key).records

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
        page, times = self._checker.check(records, self._n_added)  # messages count from there
        chunk = self._reader.from_page(page, times)
        if chunk is None:
            self._fall_back()
            assert self._reference is not None
            return self._reference._commit(page, times)
        return self._commit(chunk)

    def _fall_back(self) -> None:
        """Hand everything to a reference builder: replay the rows taken so far into it."""
        reference = FrameBuilder(self.endpoint, **self.options())
        for chunk in self._chunks:
            reference.add(chunk.records())  # rows already unique: nothing is dropped again
        positions = [c.position for c in self._chunks]
        reference._position = array("q", np.concatenate([NO_ROWS, *positions]).tobytes())
        reference._n_added = self._n_added
        reference._n_dropped = self._n_dropped
        self._chunks = []
        self._reference = reference

    # -- duplicates -------------------------------------------------------------------------

    def _commit(self, chunk: Chunk) -> int:
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
            self._chunks[-small:] = [Chunk.concat(self._chunks[-small:])]

    def _unique_rows(self, chunk: Chunk, repeated: np.ndarray, earlier: list[Chunk]) -> np.ndarray:
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
        """The frame of the chunks, validated; ``stacklevel`` as `warnings.warn` here takes it."""
        chunks, column = self._chunks, self._column
        string_type = self._reader.string_type

        def strings(columns: list[pa.ChunkedArray]) -> pa.ChunkedArray:
            return pa.chunked_array([c for part in columns for c in part.chunks], string_type)

        columns: dict[str, Any] = {"user_id": column(strings([c.user_id for c in chunks]), STRING)}
        if self._reader.customers:
            for k, name in enumerate(CUSTOMER_COLUMNS):
                parts = [c.customer[k] for c in chunks]  # type: ignore[index]
                columns[name] = column(strings(parts), STRING)
        ms = np.concatenate([NO_ROWS, *(c.time for c in chunks)])
        stamps = pa.array(ms, pa.timestamp("ms", tz="UTC"))
        columns["time_utc"] = column(stamps, DTYPES["time_utc"])
        codes = np.concatenate([np.empty(0, np.int8), *(c.impact for c in chunks)])
        columns["impact_type"] = pd.Categorical.from_codes(codes, dtype=DTYPES["impact_type"])
        amounts = np.concatenate([NO_ROWS, *(c.amount for c in chunks)])
        columns.update(self._amount_columns(codes, amounts))
        columns["category"] = column(strings([c.category for c in chunks]), STRING)
        if self.metadata == "columns":
            keys = sorted({key for chunk in chunks for key in chunk.meta or {}})
            for key in keys:
                parts = []
                for chunk in chunks:
                    part = (chunk.meta or {}).get(key)
                    if part is None:
                        part = pa.chunked_array([pa.nulls(len(chunk), string_type)])
                    parts.append(part)
                columns[self.metadata_prefix + key] = column(strings(parts), STRING)
        frame = pd.DataFrame(columns, copy=False)
        # `stacklevel` already counts this frame (`finish` added it): passed on as it is.
        warn_conflicts(self._records_key, self._conflicts, stacklevel)
        return self._validate(frame)

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
