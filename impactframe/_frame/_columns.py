"""The column buffers of the reference frame builder: one page's records, or all of them.

Fixed fields take one entry per row (lists and typed ``array``s, no record dict is kept);
metadata keys and unknown fields are sparse (`_Sparse`: the rows that have the key and their
values), since most records lack most of them.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from itertools import compress
from typing import Any

import numpy as np
import pyarrow as pa


class _Sparse:
    """The values one optional key takes, with the rows that have it (ascending)."""

    __slots__ = ("rows", "values")

    def __init__(self) -> None:
        self.rows = array("q")
        self.values: list[Any] = []


def _add_sparse(stores: dict[str, _Sparse], values: dict[str, Any], row: int) -> None:
    for key, value in values.items():
        store = stores.get(key)
        if store is None:
            store = stores[key] = _Sparse()
        store.rows.append(row)
        store.values.append(value)


def _sparse_row(stores: dict[str, _Sparse], row: int) -> dict[str, Any]:
    out = {}
    for key, store in stores.items():
        i = bisect_left(store.rows, row)
        if i < len(store.rows) and store.rows[i] == row:
            out[key] = store.values[i]
    return out


def _spread(rows: array[int], values: pa.Array, n: int) -> pa.Array:
    """Place ``values[i]`` at row ``rows[i]`` of an ``n``-row array, null elsewhere.

    Examples
    --------
    >>> _spread(array("q", [1]), pa.array(["a"]), 3).to_pylist()
    [None, 'a', None]
    """
    if len(rows) == n:  # rows are unique and ascending, so this is every row in order
        return values
    index = np.full(n, -1, dtype=np.int64)
    index[np.frombuffer(rows, dtype=np.int64)] = np.arange(len(rows))
    return values.take(pa.array(index, mask=index < 0))


class _Columns:
    """Per-column buffers of records: the builder's rows, or one page's before it is committed.

    Fixed fields take one entry per row; metadata keys (``"columns"`` mode) and unknown fields
    are sparse. ``time`` holds the text in a page and milliseconds in the builder.
    """

    def __init__(self, customers: bool, metadata: str) -> None:
        self.customers = customers
        self.metadata = metadata
        self.user_id: list[str] = []
        self.time: Any = []
        self.impact = array("b")  # index in IMPACT_TYPES; -1 until finish() classifies it
        self.amount = array("q")
        self.category: list[str | None] = []
        self.customer: list[list[Any]] = [[], [], []]  # id, email, name
        self.meta_values: list[Any] = []  # "dict" and "json" modes
        self.meta: dict[str, _Sparse] = {}  # "columns" mode
        self.extra: dict[str, _Sparse] = {}  # unknown top-level fields
        self.customer_extra: dict[str, _Sparse] = {}  # unknown keys of `customer`
        self.orphans: list[tuple[int, dict[str, Any]]] = []  # rows with no known impact field

    def __len__(self) -> int:
        return len(self.user_id)

    def content(self, i: int) -> tuple[Any, ...]:
        """Row ``i``'s values other than its key, as plain comparable objects."""
        meta = None
        if self.metadata == "columns":
            meta = _sparse_row(self.meta, i)
        elif self.metadata != "drop":
            meta = self.meta_values[i]
        customer = tuple(column[i] for column in self.customer) if self.customers else None
        return (
            self.impact[i],
            self.amount[i],
            self.category[i],
            customer,
            meta,
            _sparse_row(self.extra, i),
            _sparse_row(self.customer_extra, i),
        )

    def extend(self, page: _Columns, times: list[int], keep: list[int] | None) -> None:
        """Append a page's rows (only those in ``keep`` when given), with their timestamps."""
        base, n = len(self), len(page)
        if keep is None:
            mapping = np.arange(base, base + n, dtype=np.int64)

            def pick(values: Any) -> Any:
                return values
        else:
            mapping = np.full(n, -1, dtype=np.int64)
            mapping[keep] = np.arange(base, base + len(keep))

            def pick(values: Any) -> Any:
                return [values[j] for j in keep]

        self.user_id += pick(page.user_id)
        self.time.extend(pick(times))
        self.impact.extend(pick(page.impact))
        self.amount.extend(pick(page.amount))
        self.category += pick(page.category)
        for mine, theirs in zip(self.customer, page.customer, strict=True):
            mine += pick(theirs) if theirs else ()
        self.meta_values += pick(page.meta_values) if page.meta_values else ()
        for stores, page_stores in (
            (self.meta, page.meta),
            (self.extra, page.extra),
            (self.customer_extra, page.customer_extra),
        ):
            for key, store in page_stores.items():
                rows = mapping[np.frombuffer(store.rows, dtype=np.int64)]
                kept = rows >= 0
                target = stores.get(key)
                if target is None:
                    target = stores[key] = _Sparse()
                target.rows.frombytes(rows[kept].tobytes())
                values = store.values if keep is None else list(compress(store.values, kept))
                target.values += values
        self.orphans += [(int(mapping[j]), extra) for j, extra in page.orphans if mapping[j] >= 0]
