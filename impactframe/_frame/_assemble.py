"""The frame of a builder's chunks: fixed columns, new impact types, metadata, drift (SPEC §3).

`Assembly.frame` decides over all chunks what only all of them tell (new impact types, the
drift columns and their dtypes, name clashes), then concatenates each column's chunks into
the requested pandas dtype, or (``output="arrow"``) straight into a ``pyarrow.Table`` of the
same columns. A record at fault raises the ``ValidationError`` naming it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .._constants import ENDPOINTS, IMPACT_TYPES
from .._dtypes import CUSTOMER_COLUMNS, DTYPES, METADATA_COLUMN, STRING, fixed_columns
from ..errors import ValidationError
from ._batch import NO_ROWS, Chunk, nulls
from ._drift import BadRow, Findings, check_names, classify, drift_array, first_row
from ._python_reader import _format_ms, _short

__all__ = ["Assembly"]


@dataclasses.dataclass
class Assembly:
    """The chunks of one frame and its options (already checked by the builder).

    Examples
    --------
    >>> from impactframe._frame._python_reader import PageChecker
    >>> chunk = PageChecker("records", "drop").read(
    ...     [{"user_id": "U1", "time_utc": "1970-01-01T00:00:01.500Z", "tree_planted": 2}], 0)
    >>> chunk.position = np.arange(1)
    >>> frame, found = Assembly([chunk], "records", "drop", "metadata_", "numpy_nullable").frame()
    >>> frame["amount"].tolist(), found.drift
    ([2], [])
    """

    chunks: list[Chunk]
    endpoint: str
    metadata: str
    metadata_prefix: str
    dtype_backend: str
    #: "pandas", or "arrow": a ``pyarrow.Table`` of the builder's arrays (no pandas in between)
    output: str = "pandas"

    def __post_init__(self) -> None:
        self.customers = self.endpoint == "customer_records"
        self.arrow = self.output == "arrow"
        numpy = self.dtype_backend == "numpy_nullable" and not self.arrow
        self.string_type = pa.large_string() if numpy else pa.string()

    def frame(self) -> tuple[Any, Findings]:
        """The frame (not yet validated; a ``pyarrow.Table`` for ``output="arrow"``), and its
        drift and new types as findings."""
        try:
            new_types, rows, codes, amounts = classify(self.chunks)
            unknown, meta_names = self.names(new_types)
        except BadRow as bad:
            raise self.row_error(bad) from None
        frame = self.assemble(new_types, rows, codes, amounts, unknown, meta_names)
        found = Findings(ENDPOINTS[self.endpoint][1])
        found.new_types = {
            name: codes.count(len(IMPACT_TYPES) + k) for k, name in enumerate(new_types)
        }
        drift = [name for name in unknown if name not in new_types]
        if self.arrow:
            found.drift = [(name, str(frame.schema.field(name).type)) for name in drift]
        else:
            found.drift = [(name, str(frame[name].dtype)) for name in drift]
        return frame, found

    def names(self, new_types: list[str]) -> tuple[dict[str, str], dict[str, int]]:
        """The unknown columns (new types, drift: name -> where its values are) and the
        metadata columns (name -> first row), once `check_names` has found them free."""
        chunks = self.chunks
        extra, customer = first_row(chunks, "extra"), first_row(chunks, "customer_extra")
        unknown = [(name, extra[name]) for name in new_types]
        unknown += [(name, row) for name, row in extra.items() if name not in new_types]
        unknown += list(customer.items())
        taken = set(fixed_columns(self.endpoint))
        if self.metadata in ("dict", "json"):
            taken.add(METADATA_COLUMN)
        meta: dict[str, int] = {}  # the row is only looked for where a name clashes
        if self.metadata == "columns":
            names = {self.metadata_prefix + key for c in chunks for key in self._meta_keys(c)}
            clash = names & (taken | {name for name, _ in unknown})
            meta = {name: self._first_meta_row(name) if name in clash else -1 for name in names}
            meta = dict(sorted(meta.items()))
        prefix = self.metadata_prefix if self.metadata == "columns" else None
        check_names(unknown, meta, taken, prefix)
        where = {name: "extra" for name in extra} | {name: "customer_extra" for name in customer}
        return {name: where[name] for name, _ in unknown}, meta

    @staticmethod
    def _meta_keys(chunk: Chunk) -> list[str]:
        """The metadata keys some row of ``chunk`` has (a ``null`` value counts)."""
        n = len(chunk)
        return [
            key
            for key, column in (chunk.meta or {}).items()
            if column.null_count < n or (key in chunk.meta_kind and chunk.meta_kind[key].any())
        ]

    def _first_meta_row(self, name: str) -> int:
        key, offset = name[len(self.metadata_prefix) :], 0
        for chunk in self.chunks:
            if key in self._meta_keys(chunk):
                present = chunk.meta[key].is_valid().to_numpy(False)  # type: ignore[index]
                if key in chunk.meta_kind:
                    present = present | (chunk.meta_kind[key] == 2)
                return offset + int(np.argmax(present))
            offset += len(chunk)
        raise AssertionError(name)  # pragma: no cover - only names some chunk has

    def _column(self, values: pa.Array | pa.ChunkedArray, dtype: Any) -> Any:
        if self.arrow:
            return values
        if self.dtype_backend == "pyarrow":
            return pd.arrays.ArrowExtensionArray(values)
        return dtype.__from_arrow__(values)

    def _strings(self, parts: list[pa.ChunkedArray]) -> Any:
        text = self.string_type
        return self._column(pa.chunked_array([c for p in parts for c in p.chunks], text), STRING)

    def _sparse(self, attr: str, key: str) -> list[pa.ChunkedArray]:
        text = self.string_type
        return [(getattr(c, attr) or {}).get(key) or nulls(len(c), text) for c in self.chunks]

    def assemble(
        self,
        new_types: list[str],
        rows: list[int],
        codes_: list[int],
        amounts_: list[int],
        unknown: dict[str, str],
        meta_names: dict[str, int],
    ) -> Any:
        chunks, column, strings = self.chunks, self._column, self._strings
        columns: dict[str, Any] = {"user_id": strings([c.user_id for c in chunks])}
        if self.customers:
            for k, name in enumerate(CUSTOMER_COLUMNS):
                columns[name] = strings([c.customer[k] for c in chunks])  # type: ignore[index]
        ms = np.concatenate([NO_ROWS, *(c.time for c in chunks)])
        columns["time_utc"] = column(pa.array(ms, pa.timestamp("ms", tz="UTC")), DTYPES["time_utc"])
        codes = np.concatenate([np.empty(0, np.int8), *(c.impact for c in chunks)])
        amounts = np.concatenate([NO_ROWS, *(c.amount for c in chunks)])
        if rows:
            codes = codes.astype(np.int16)
            codes[rows], amounts[rows] = codes_, amounts_
        categories = pd.CategoricalDtype([*IMPACT_TYPES, *new_types], ordered=False)
        if self.arrow:  # dictionary<int32, string>: the categories in order, as pandas has them
            columns["impact_type"] = pa.DictionaryArray.from_arrays(
                pa.array(codes, pa.int32()), pa.array(list(categories.categories), pa.string())
            )
        else:
            columns["impact_type"] = pd.Categorical.from_codes(codes, dtype=categories)
        columns.update(self._amount_columns(codes, amounts, list(categories.categories)))
        columns["category"] = strings([c.category for c in chunks])
        for name in meta_names:
            columns[name] = strings(self._sparse("meta", name[len(self.metadata_prefix) :]))
        if self.metadata in ("dict", "json"):
            texts = pa.chunked_array(
                [c for chunk in chunks for c in chunk.meta_json.chunks],  # type: ignore[union-attr]
                self.string_type,
            )
            if self.metadata == "json":
                columns[METADATA_COLUMN] = column(texts, STRING)
            elif self.arrow:  # refused by the loaders' checks: a dict has no one Arrow type
                msg = "metadata='dict' has no Arrow output; use 'json' or 'columns'"
                raise ValueError(msg)
            else:
                objects = np.empty(len(ms), dtype=object)
                objects[:] = [None if t is None else json.loads(t) for t in texts.to_pylist()]
                columns[METADATA_COLUMN] = objects
        for name, attr in unknown.items():
            if name in new_types:
                continue
            texts = [t for part in self._sparse(attr, name) for t in part.to_pylist()]
            values, dtype = drift_array(texts)
            columns[name] = column(values, dtype)
        if self.arrow:
            return pa.table(columns)
        return pd.DataFrame(columns, copy=False)

    def _amount_columns(
        self, codes: np.ndarray, amounts: np.ndarray, names: list[str]
    ) -> dict[str, Any]:
        """``amount`` and one column per impact type (null where the row is of another type)."""
        n = len(amounts)
        if self.dtype_backend == "numpy_nullable" and not self.arrow:
            columns = {"amount": pd.arrays.IntegerArray(amounts, np.zeros(n, dtype=bool))}
            for code, name in enumerate(names):
                # the values under the mask are never read: a copy is cheaper than zeroing
                columns[name] = pd.arrays.IntegerArray(amounts.copy(), codes != code)
            return columns
        # Arrow arrays are immutable: every impact column shares the amounts buffer, each with
        # its own validity bitmap (8 bytes a row less per column).
        wrap = (lambda a: a) if self.arrow else pd.arrays.ArrowExtensionArray
        values = pa.array(amounts, pa.int64())
        data = values.buffers()[1]
        columns = {"amount": wrap(values)}
        for code, name in enumerate(names):
            bitmap = pa.py_buffer(np.packbits(codes == code, bitorder="little"))
            columns[name] = wrap(pa.Array.from_buffers(pa.int64(), n, [bitmap, data]))
        return columns

    def row_error(self, bad: BadRow) -> ValidationError:
        """The error about row ``bad.row`` (over all chunks): where the record is, then why."""
        row = bad.row
        for chunk in self.chunks:
            if row < len(chunk):
                break
            row -= len(chunk)
        time_utc = _format_ms(int(chunk.time[row]))
        user_id = chunk.user_id[row].as_py()
        where = f"record {chunk.position[row]} overall (user_id={_short(user_id)}, "
        where += f"time_utc={time_utc!r})"
        extra = {k: json.loads(t) for k, c in chunk.extra.items() if (t := c[row].as_py())}
        summary = {"user_id": user_id, "time_utc": time_utc, **extra}
        return ValidationError(f"{where}: {bad.text}", field=bad.field, record=summary)
