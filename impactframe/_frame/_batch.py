"""The one batch representation of the frame builder: checked rows as Arrow and numpy columns.

Both readers fill a `Chunk`: the Arrow reader (`_arrow_reader`) from a batch of page bodies,
the Python reader (`_python_reader`) from one page of decoded records. The builder keeps
chunks, drops repeats between them (`_repeats`) and assembles the frame from them at
``finish``. Values the builder only types at ``finish`` are kept as the API sent them:

- ``meta``: one string column per flattened metadata key (``"columns"`` mode); a non-string
  value is its JSON text as sent. ``meta_kind`` marks, per key that has any, the rows whose
  value was not a string (1) or ``null`` (2): a ``null`` is not a missing key.
- ``meta_json``: the metadata object as compact JSON text (``"dict"``/``"json"`` modes).
- ``extra``, ``customer_extra``: unknown fields (top level, inside ``customer``) as JSON text.
- ``impact`` is -1 for a record none of whose fields is a known impact type (``finish``
  decides whether one of its unknown fields is a new type).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pyarrow as pa

from ._values import canonical

__all__ = ["NO_ROWS", "Chunk", "nulls"]

NO_ROWS: Final = np.empty(0, dtype=np.int64)

Columns = dict[str, pa.ChunkedArray]


def nulls(n: int, string_type: pa.DataType) -> pa.ChunkedArray:
    return pa.chunked_array([pa.nulls(n, string_type)])


def _strings(columns: list[pa.ChunkedArray], string_type: pa.DataType) -> pa.ChunkedArray:
    chunks = [c for column in columns for c in column.chunks]
    return pa.chunked_array([pa.chunked_array(chunks, string_type).combine_chunks()])


def _sparse_concat(parts: list[Chunk], attr: str, string_type: pa.DataType) -> Columns | None:
    stores: list[Columns | None] = [getattr(part, attr) for part in parts]
    if stores[0] is None:
        return None
    keys = dict.fromkeys(key for store in stores for key in store or {})
    return {
        key: _strings(
            [
                (s or {}).get(key) or nulls(len(p), string_type)
                for s, p in zip(stores, parts, strict=True)
            ],
            string_type,
        )
        for key in keys
    }


class Chunk:
    """Checked rows of one or more pages (see the module docstring for the columns).

    ``position`` is each row's index among all records added (for messages and the repeat
    rule); ``starts`` the positions at which the pages of a fresh chunk begin.
    """

    __slots__ = (
        *("amount", "category", "customer", "customer_extra", "extra", "high", "impact"),
        *("low", "meta", "meta_json", "meta_kind", "position", "starts", "time", "user_id"),
    )

    def __init__(
        self,
        user_id: pa.ChunkedArray,
        customer: tuple[pa.ChunkedArray, ...] | None,
        time: np.ndarray,
        impact: np.ndarray,
        amount: np.ndarray,
        category: pa.ChunkedArray,
        meta: Columns | None = None,
        *,
        meta_kind: dict[str, np.ndarray] | None = None,
        meta_json: pa.ChunkedArray | None = None,
        extra: Columns | None = None,
        customer_extra: Columns | None = None,
        starts: np.ndarray = NO_ROWS,
    ) -> None:
        self.user_id = user_id
        self.customer = customer
        self.time = time
        self.impact = impact
        self.amount = amount
        self.category = category
        self.meta = meta
        self.meta_kind = meta_kind or {}
        self.meta_json = meta_json
        self.extra = extra or {}
        self.customer_extra = customer_extra or {}
        self.starts = starts
        self.position = NO_ROWS
        self.low = int(time.min()) if len(time) else 0
        self.high = int(time.max()) if len(time) else -1

    def __len__(self) -> int:
        return len(self.time)

    @staticmethod
    def concat(parts: list[Chunk]) -> Chunk:
        """One chunk of ``parts`` in order (each column one Arrow array)."""
        string_type = parts[0].user_id.type
        customer = None
        if parts[0].customer is not None:
            customer = tuple(
                _strings([p.customer[k] for p in parts], string_type)  # type: ignore[index]
                for k in range(3)
            )
        kinds = dict.fromkeys(key for p in parts for key in p.meta_kind)
        meta_kind = {
            key: np.concatenate([p.meta_kind.get(key, np.zeros(len(p), np.int8)) for p in parts])
            for key in kinds
        }
        meta_json = None
        if parts[0].meta_json is not None:
            meta_json = _strings([p.meta_json for p in parts], string_type)  # type: ignore[misc]
        chunk = Chunk(
            _strings([p.user_id for p in parts], string_type),
            customer,
            np.concatenate([p.time for p in parts]),
            np.concatenate([p.impact for p in parts]),
            np.concatenate([p.amount for p in parts]),
            _strings([p.category for p in parts], string_type),
            _sparse_concat(parts, "meta", string_type),
            meta_kind=meta_kind,
            meta_json=meta_json,
            extra=_sparse_concat(parts, "extra", string_type),
            customer_extra=_sparse_concat(parts, "customer_extra", string_type),
        )
        chunk.position = np.concatenate([p.position for p in parts])
        return chunk

    def filter(self, keep: np.ndarray) -> Chunk:
        mask = pa.array(keep)

        def columns(store: Columns | None) -> Columns | None:
            return None if store is None else {k: v.filter(mask) for k, v in store.items()}

        part = Chunk(
            self.user_id.filter(mask),
            None if self.customer is None else tuple(c.filter(mask) for c in self.customer),
            self.time[keep],
            self.impact[keep],
            self.amount[keep],
            self.category.filter(mask),
            columns(self.meta),
            meta_kind={k: v[keep] for k, v in self.meta_kind.items()},
            meta_json=None if self.meta_json is None else self.meta_json.filter(mask),
            extra=columns(self.extra),
            customer_extra=columns(self.customer_extra),
        )
        part.position = self.position[keep]
        return part

    def key(self, i: int) -> tuple[str, int]:
        return self.user_id[i].as_py(), int(self.time[i])

    def content(self, i: int) -> tuple[Any, ...]:
        """Row ``i``'s values besides its key, as sent: equal for identical records only
        (a metadata ``1`` is not ``"1"``, a ``null`` is not a missing key)."""
        meta: Any = None
        if self.meta is not None:
            kinds = {k: int(v[i]) for k, v in self.meta_kind.items()}
            meta = tuple(
                (k, canonical(v) if kinds.get(k) == 1 else v, kinds.get(k, 0))
                for k, column in sorted(self.meta.items())
                if (v := column[i].as_py()) is not None or kinds.get(k) == 2
            )
        elif self.meta_json is not None:
            meta = canonical(self.meta_json[i].as_py())
        customer = None if self.customer is None else tuple(c[i].as_py() for c in self.customer)

        def sparse(store: Columns) -> tuple[tuple[str, Any], ...]:
            return tuple(
                (k, canonical(v))
                for k, column in sorted(store.items())
                if (v := column[i].as_py()) is not None
            )

        return (
            int(self.impact[i]),
            int(self.amount[i]),
            self.category[i].as_py(),
            customer,
            meta,
            sparse(self.extra),
            sparse(self.customer_extra),
        )
