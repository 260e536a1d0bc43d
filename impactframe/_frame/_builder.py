"""The frame builder: pages to the typed, validated frame of SPEC §3, through one batch type.

How a frame is built::

    add_raw(page)   buffer response bodies; every ~8 MB they are parsed at once by the Arrow
                    reader (``pyarrow.json``, both cores, GIL released, one body per line) into
                    a `Chunk`; a batch it declines is halved until the pages at fault are found,
                    and those go to the Python reader, which reads them into chunks too (or
                    raises the ``ValidationError`` naming the field and the record)
    add(page)       decoded records (a `Page` or a list): the Python reader
    finish()        new impact types, drift columns and name clashes decided over all chunks;
                    the chunks assembled into the frame, validated; the `Findings` warned

Repeats are dropped as chunks come, by the one rule of `_repeats`.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from .._constants import DEFAULT_METADATA_PREFIX, ENDPOINTS
from .._dtypes import check_options
from .._paging._pages import Page, decode_page, loads
from .._params import check_choice
from .._warn import warn_all
from ..client._deadline import leave_signals_to_main
from ..schemas import validate
from ._arrow_reader import PageReader
from ._assemble import Assembly
from ._batch import Chunk
from ._drift import Findings
from ._outputs import check_table
from ._python_reader import PageChecker
from ._repeats import Repeats, logger

__all__ = ["FrameBuilder", "empty_frame", "records_to_frame"]

#: Bodies are parsed together once this many bytes are waiting (about 35 pages of 1000),
BATCH_BYTES: Final = 8 << 20
#: or once the first of them has waited this many seconds.
BATCH_SECONDS: Final = 0.5
_SMALL_CHUNK: Final = 8_192  # rows: chunks below (pages read one by one) are merged,
_SMALL_RUN: Final = 16  # this many at a time (a batch's chunk is far larger)


@functools.cache
def _parser() -> ThreadPoolExecutor:
    """The thread that parses batches while the caller checks the previous one."""
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="impactframe-parse", initializer=leave_signals_to_main
    )


class FrameBuilder:
    """Validate pages of records and build one typed, validated DataFrame from them.

    Parameters
    ----------
    endpoint : {"records", "customer_records"}
        Which endpoint the records come from (customer records carry a ``customer`` object).
    metadata : {"columns", "dict", "json", "drop"}, default "columns"
        ``"columns"``: one string column per flattened metadata key (``<prefix><key>``, sorted by
        code point); ``"dict"``: one object column ``metadata`` of dicts or None; ``"json"``: one
        string column ``metadata`` of compact JSON text; ``"drop"``: no metadata.
    metadata_prefix : str, default "metadata_"
        Prefix of the metadata columns in ``"columns"`` mode.
    dtype_backend : {"numpy_nullable", "pyarrow"}, default "numpy_nullable"
        Nullable pandas dtypes, or ``pd.ArrowDtype`` (``impact_type`` stays a pandas category).
    batch_bytes, batch_seconds
        Bodies are parsed together once this many bytes are waiting, or once the first of
        them has waited this long (pages from a slow API are checked without waiting).
    repeats : Repeats, optional
        The repeat state to continue (the export's next batch: `Repeats.handoff`).
    output : {"pandas", "arrow"}, default "pandas"
        `finish` returns a pandas frame, or a ``pyarrow.Table`` of the same columns (see
        `impactframe._frame._outputs`; ``dtype_backend`` must then be the default and
        ``metadata`` not ``"dict"``).

    Raises
    ------
    ValueError
        An unknown endpoint, metadata mode or dtype backend, or an empty prefix.

    Notes
    -----
    ``len(builder)`` (also ``builder.count``) counts the rows taken so far, repeats dropped;
    bodies still waiting for their batch are taken by `flush` (and `finish`).

    Examples
    --------
    >>> builder = FrameBuilder("records")
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
        batch_seconds: float = BATCH_SECONDS,
        repeats: Repeats | None = None,
        output: str = "pandas",
    ) -> None:
        check_options(
            endpoint=endpoint,
            metadata=metadata,
            metadata_prefix=metadata_prefix,
            dtype_backend=dtype_backend,
        )
        check_choice(output, "output", ("pandas", "arrow"))
        if output == "arrow" and (dtype_backend != "numpy_nullable" or metadata == "dict"):
            msg = "output='arrow' takes the default dtype_backend and no metadata='dict'"
            raise ValueError(msg)
        self.output = output
        self.endpoint, self.metadata, self.metadata_prefix = endpoint, metadata, metadata_prefix
        self.dtype_backend = dtype_backend
        self.batch_bytes, self.batch_seconds = batch_bytes, batch_seconds
        self._records_key = ENDPOINTS[endpoint][1]
        arrow_text = dtype_backend == "pyarrow" or output == "arrow"
        text = pa.string() if arrow_text else pa.large_string()
        self._checker = PageChecker(endpoint, metadata, text)
        self._reader = PageReader(endpoint, metadata, text)
        self.repeats = repeats or Repeats()
        #: What the last `finish` found (drift, new types, repeats), for callers that warn
        #: once for several frames (``finish(warn=False)``).
        self.findings = Findings(self._records_key)
        self._pending: list[bytes] = []
        self._pending_checked: list[bool] = []  # per body: known to be UTF-8
        self._pending_bytes = 0
        self._pending_since = 0.0  # time.monotonic() when the first waiting body came
        self._parsing: deque[tuple[list[bytes], list[bool], Future[Any]]] = deque()
        self._chunks: list[Chunk] = []
        self._n_added = 0
        self._slow_pages = 0  # pages the Python reader read (tests and benchmarks watch this)

    def __len__(self) -> int:
        return sum(map(len, self._chunks))

    @property
    def count(self) -> int:
        """Rows taken so far: the records added minus repeats (``len(builder)``)."""
        return len(self)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.endpoint!r}, metadata={self.metadata!r}, "
            f"dtype_backend={self.dtype_backend!r}, rows={len(self)})"
        )

    # -- adding -----------------------------------------------------------------------------

    def add(self, page: Page | list[Any]) -> int:
        """Validate one page of decoded records and take it; returns the rows it added.

        Raises
        ------
        ValidationError
            ``records`` is not a list, or a record has a known field of the wrong type or value
            (the message names the field and the record). A rejected page changes nothing.

        Examples
        --------
        >>> from impactframe._paging._pages import page_of
        >>> builder = FrameBuilder("records")
        >>> record = {"user_id": "U1", "time_utc": "2024-09-16T20:30:13.391Z", "tree_planted": 2}
        >>> builder.add([record]), builder.add(page_of([record], None))  # a repeat: dropped
        (1, 0)
        """
        self.flush()
        return self._add_records(page.records if isinstance(page, Page) else page)

    def add_raw(self, page: Page | bytes) -> None:
        """Take one page as the walk fetched it (see `_paging._concurrent.iter_pages`).

        Bodies wait until about ``batch_bytes`` of them are there; each batch is then parsed
        on a worker thread while the previous one is checked. A ``ValidationError`` (as for
        `add`) is raised for this page or one still waiting.

        Examples
        --------
        >>> builder = FrameBuilder("records")
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
        """Parse and take every body still waiting (raising any error they hold)."""
        self._submit()
        while self._parsing:
            self._take_batch(*self._parsing.popleft())

    def _submit(self) -> None:
        """Start parsing the waiting bodies; take the batch parsed before (one in flight)."""
        bodies, checked = self._pending, self._pending_checked
        self._pending, self._pending_checked, self._pending_bytes = [], [], 0
        if not bodies:
            return
        reader = self._reader
        parsed = _parser().submit(reader.parse, bodies, checked, reader.parse_options)
        self._parsing.append((bodies, checked, parsed))
        while len(self._parsing) > 1:
            self._take_batch(*self._parsing.popleft())

    def _take_batch(self, bodies: list[bytes], checked: list[bool], parsed: Future[Any]) -> None:
        simple, table = parsed.result()
        chunk = self._reader.chunk(table, len(bodies))
        if chunk is not None:
            self._commit(chunk)
            return
        if simple:
            self._take_simple(bodies, tried=True)
            return
        run: list[bytes] = []
        for body, ok in zip(bodies, checked, strict=True):
            if self._reader.accepts(body, ok):
                run.append(body)
                continue
            self._take_simple(run)
            run = []
            self._add_body(body)
        self._take_simple(run)

    def _add_body(self, body: bytes) -> None:
        self._slow_pages += 1
        self._add_records(decode_page(loads(body), self._records_key).records)

    def _take_simple(self, bodies: list[bytes], *, tried: bool = False) -> None:
        """Take simple bodies in order: with Arrow where it can, halving a batch that fails
        (``tried``: the whole batch failed already)."""
        if not bodies:
            return
        if not tried:
            reader = self._reader
            chunk = reader.chunk(reader.parse_now(bodies, reader.parse_options), len(bodies))
            if chunk is not None:
                self._commit(chunk)
                return
        if len(bodies) == 1:
            self._add_body(bodies[0])
            return
        half = len(bodies) // 2
        self._take_simple(bodies[:half])
        self._take_simple(bodies[half:])

    def _add_records(self, records: list[Any]) -> int:
        return self._commit(self._checker.read(records, self._n_added))

    def _commit(self, chunk: Chunk) -> int:
        """Take a checked chunk, dropping the repeats `Repeats.keep` finds."""
        n, start = len(chunk), self._n_added
        chunk.position = np.arange(start, start + n, dtype=np.int64)
        for offset in chunk.starts.tolist():
            self.repeats.page(start + offset)
        self._n_added += n
        if not n:
            return 0
        keep = self.repeats.keep(chunk, self._chunks)
        if keep is not None:
            chunk = chunk.filter(keep)
        self._reader.learn(chunk)
        self._chunks.append(chunk)
        self._coalesce()
        return len(chunk)

    def _coalesce(self) -> None:
        """Merge a run of small chunks (pages read one by one) into one, so that a long load
        of such pages does not end in thousands of chunks."""
        small = 0
        for chunk in reversed(self._chunks):
            if len(chunk) >= _SMALL_CHUNK:
                break
            small += 1
        if small >= _SMALL_RUN:
            self._chunks[-small:] = [Chunk.concat(self._chunks[-small:])]

    def handoff(self) -> Repeats:
        """The repeat state for the builder of the next batch (see `Repeats.handoff`)."""
        return self.repeats.handoff(self._chunks)

    # -- the frame ----------------------------------------------------------------------------

    def finish(self, *, warn: bool = True) -> Any:
        """Build and validate the frame of every record taken so far.

        Unknown top-level fields become extra columns at the end; a record whose only impact
        field is unknown (its one unknown field, a non-negative integer) makes that field a new
        impact type: a category of ``impact_type`` and an Int64 column after the known impact
        columns. Decided over all records, so the frame does not depend on the pages. What the
        frame holds that the caller must hear of is in ``builder.findings``, and warned (one
        warning each, at the caller's line) unless ``warn=False``. More pages may follow.

        Raises
        ------
        ValidationError
            A record carries two impact fields (or none) once new types are known, an unknown
            field would take the name of another column, or the frame fails its schema.

        Examples
        --------
        >>> FrameBuilder("customer_records").finish().columns[:3].tolist()
        ['user_id', 'customer_id', 'customer_email']
        """
        self.flush()
        assembly = Assembly(
            self._chunks,
            self.endpoint,
            self.metadata,
            self.metadata_prefix,
            self.dtype_backend,
            self.output,
        )
        frame, found = assembly.frame()
        rule = self.repeats
        found.conflicts, found.dropped = dict(rule.conflicts), rule.dropped
        found.examples = list(rule.examples)
        if rule.quiet:
            logger.debug("dropped %d records repeated right after a cursor", rule.quiet)
        self.findings = found
        if warn:
            warn_all(found.messages())
        if self.output == "arrow":
            return check_table(frame, self.endpoint, self.metadata, self.metadata_prefix)
        return validate(
            frame,
            self.endpoint,
            dtype_backend=self.dtype_backend,
            metadata=self.metadata,
            metadata_prefix=self.metadata_prefix,
        )


def records_to_frame(
    records: list[Any],
    endpoint: str = "records",
    *,
    metadata: str = "columns",
    metadata_prefix: str = DEFAULT_METADATA_PREFIX,
    dtype_backend: str = "numpy_nullable",
) -> pd.DataFrame:
    """Turn a list of records (in the API's JSON shape) into the typed frame of SPEC §3.

    Examples
    --------
    >>> df = records_to_frame([{"user_id": "U123", "time_utc": "2024-09-17T14:32:01.638Z",
    ...                         "tree_planted": 10, "metadata": {"source": "shopify"}}])
    >>> df[["impact_type", "amount", "tree_planted", "metadata_source"]]
        impact_type  amount  tree_planted metadata_source
    0  tree_planted      10            10         shopify
    """
    builder = FrameBuilder(
        endpoint, metadata=metadata, metadata_prefix=metadata_prefix, dtype_backend=dtype_backend
    )
    builder.add(records)
    return builder.finish()


def empty_frame(
    endpoint: str,
    *,
    metadata: str = "columns",
    metadata_prefix: str = DEFAULT_METADATA_PREFIX,
    dtype_backend: str = "numpy_nullable",
) -> pd.DataFrame:
    """The frame of an empty result: every fixed column with its dtype, no rows.

    Examples
    --------
    >>> df = empty_frame("records")
    >>> len(df), df["amount"].dtype, df["time_utc"].dtype
    (0, Int64Dtype(), datetime64[ms, UTC])
    """
    return FrameBuilder(
        endpoint, metadata=metadata, metadata_prefix=metadata_prefix, dtype_backend=dtype_backend
    ).finish()
