"""Records to a typed DataFrame (SPEC §3).

How a frame is built::

    FrameBuilder.add(page)   check every record of one page (a bad known field raises
                             ValidationError naming the field and the record; nothing is coerced or
                             skipped) into page-local column buffers, parse the page's timestamps at
                             once with Arrow, drop records identical to one already taken, and
                             append the page to the builder's buffers (no record dict is kept)
    FrameBuilder.finish()    decide what unknown fields are (a new impact type or a drift column),
                             build one Arrow array per column, convert it to the requested pandas
                             dtype, and validate the frame with impactframe.schemas

This is the reference builder. The loaders use `_frame_fast.FastFrameBuilder`, which keeps the
``add``/``finish`` seam and gives the same frame, warnings and errors from Arrow-parsed response
bodies. It runs the reference checks (`_frame_checks`) on a page Arrow cannot read exactly, and
hands everything to a `FrameBuilder` when its chunks cannot hold what came (an unknown field,
the ``"dict"``/``"json"`` metadata modes). The export builds each batch with a `FrameBuilder`.
The parts live in their own modules: the options (`_frame_options`, shared with the fast
builder), the per-record checks (`_frame_checks`), the column buffers (`_frame_columns`), the
repeated records (`_frame_dedup`) and the unknown fields (`_frame_drift`).
"""

from __future__ import annotations

import logging
from array import array
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .._constants import DEFAULT_METADATA_PREFIX, IMPACT_TYPES
from .._dtypes import (
    CUSTOMER_COLUMNS,
    DTYPES,
    INT,
    METADATA_COLUMN,
    STRING,
    fixed_columns,
)
from ..errors import ValidationError
from ._columns import _Columns, _Sparse, _sparse_row, _spread
from ._drift import _BadRow, _drift_array, check_names, classify, warn_drift
from ._options import FrameOptions
from ._python_reader import PageChecker, _format_ms, _json, _short
from ._repeats import Repeats, warn_conflicts

__all__ = ["FrameBuilder", "empty_frame", "records_to_frame"]

logger = logging.getLogger("impactframe.frame")

_Named = list[tuple[str, _Sparse]]  # (column name, its values) in column order

class FrameBuilder(FrameOptions):
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

    Raises
    ------
    ValueError
        An unknown endpoint, metadata mode or dtype backend, or an empty prefix.

    Notes
    -----
    A record with the same ``(user_id, time_utc)`` and the same content as one already added is
    dropped as it arrives (the API can repeat a record across a page boundary), so ``len(builder)``
    (also ``builder.count``) is exactly the number of rows ``finish()`` returns. Rows keep the
    order they were added in.

    Examples
    --------
    >>> builder = FrameBuilder("records")
    >>> builder.add([{"user_id": "U1", "time_utc": "2024-09-17T13:24:04.429Z",
    ...               "waste_removed": 15}])
    1
    >>> builder.finish()[["user_id", "impact_type", "amount"]]
      user_id    impact_type  amount
    0      U1  waste_removed      15
    """

    # The constructor (and its option checks) is FrameOptions's.
    def __post_init__(self) -> None:
        super().__post_init__()
        self._checker = PageChecker(self.endpoint, self.metadata)
        self._cols = _Columns(self._customers, self.metadata)
        self._position = array("q")  # index of each row's record among all records added
        self._repeats = Repeats()
        self._n_added = 0
        self._n_dropped = 0

    def __len__(self) -> int:
        return len(self._cols)

    # -- add ------------------------------------------------------------------------------------

    def add(self, records: list[Any]) -> int:
        """Validate one page of records and buffer it.

        Parameters
        ----------
        records : list of dict
            The records exactly as the API sent them (one page, or any list of records).

        Returns
        -------
        int
            How many rows the page added (records identical to one already taken are dropped).

        Raises
        ------
        ValidationError
            ``records`` is not a list, or a record has a known field of the wrong type or value
            (the message names the field and the record). A rejected page changes nothing.

        Examples
        --------
        >>> builder = FrameBuilder("records")
        >>> record = {"user_id": "U1", "time_utc": "2024-09-16T20:30:13.391Z", "tree_planted": 2}
        >>> builder.add([record, dict(record)])  # the repeat is dropped
        1
        """
        return self._commit(*self._checker.check(records, self._n_added))

    def _commit(self, page: _Columns, times: list[int]) -> int:
        """Append a checked page, dropping records identical to one already taken."""
        n, start = len(page), self._n_added
        keep = self._repeats.keep(self._cols, page, times)
        self._cols.extend(page, times, keep)
        self._n_added += n
        if keep is None:  # the usual page: nothing repeated
            self._position.extend(range(start, start + n))
            return n
        self._position.extend([start + j for j in keep])
        if len(keep) < n:
            self._n_dropped += n - len(keep)
            logger.debug("dropped %d repeated records", n - len(keep))
        return len(keep)

    # -- finish ---------------------------------------------------------------------------------

    def finish(self, *, stacklevel: int = 2) -> pd.DataFrame:
        """Build the typed DataFrame of every record added so far and validate it.

        Unknown top-level fields become extra columns at the end (one ``SchemaDriftWarning`` per
        field). A record whose only impact field is unknown (its one unknown field, a
        non-negative integer) makes that field a new impact type: a category of ``impact_type``
        and an Int64 column after the known impact columns, in every record. This is decided
        over all records, so the frame does not depend on how they were split into pages.
        ``finish`` does not consume the builder: more pages may follow, and another ``finish``.

        Parameters
        ----------
        stacklevel : int, default 2
            Where warnings point: 2 is the caller of ``finish``; a wrapper adds its own depth.

        Returns
        -------
        pandas.DataFrame
            The frame of SPEC §3 with a RangeIndex, rows in the order they were added.

        Raises
        ------
        ValidationError
            A record carries two impact fields (or none) once new types are known, an unknown
            field would take the name of another column, or the frame fails its schema.

        Examples
        --------
        >>> builder = FrameBuilder("records", metadata="json")
        >>> _ = builder.add([{"user_id": "U1", "time_utc": "2024-09-16T20:30:13.391Z",
        ...                   "carbon_captured": 5, "metadata": {"batch": "B-2024-09"}}])
        >>> builder.finish()["metadata"].tolist()
        ['{"batch":"B-2024-09"}']
        """
        cols = self._cols
        try:
            new_types, impact_rows, impact_codes, impact_amounts = classify(cols)
            new, drift, meta_columns = self._unknown_columns(new_types)
        except _BadRow as bad:
            raise self._row_error(bad.row, bad.field, bad.text) from None
        columns = self._fixed_arrays(new_types, impact_rows, impact_codes, impact_amounts)
        for name, store in meta_columns.items():
            values = self._strings(store.values, "metadata", store.rows)
            columns[name] = self._column(_spread(store.rows, values, len(cols)), STRING)
        if self.metadata == "json":
            metadata = self._strings(cols.meta_values, "metadata")
            columns[METADATA_COLUMN] = self._column(metadata, STRING)
        elif self.metadata == "dict":
            objects = np.empty(len(cols), dtype=object)
            objects[:] = cols.meta_values
            columns[METADATA_COLUMN] = objects
        for name, store in drift:
            try:
                values, dtype = _drift_array(store.values)
            except UnicodeEncodeError:
                self._strings([_json(v) for v in store.values], name, store.rows)
                raise  # pragma: no cover - _strings has raised
            columns[name] = self._column(_spread(store.rows, values, len(cols)), dtype)
        frame = pd.DataFrame(columns, copy=False)

        drift_dtypes = [(name, frame[name].dtype) for name, _ in drift]
        warn_drift(self._records_key, new, drift_dtypes, stacklevel)
        warn_conflicts(self._records_key, self._repeats.conflicts, stacklevel)
        if self._n_dropped:
            logger.debug("dropped %d records identical to an earlier one", self._n_dropped)
        return self._validate(frame)

    def _unknown_columns(self, new_types: list[str]) -> tuple[_Named, _Named, dict[str, _Sparse]]:
        """The stores of the new impact types, the drift fields and the metadata columns (by
        column name), once `check_names` has found their names free."""
        cols = self._cols
        new = [(name, cols.extra[name]) for name in new_types]
        drift = [(name, cols.extra[name]) for name in cols.extra if name not in new_types]
        drift += list(cols.customer_extra.items())
        meta_columns = {}
        if self.metadata == "columns":
            meta_columns = {self.metadata_prefix + key: cols.meta[key] for key in sorted(cols.meta)}
        taken = set(fixed_columns(self.endpoint))
        if self.metadata in ("dict", "json"):
            taken.add(METADATA_COLUMN)
        prefix = self.metadata_prefix if self.metadata == "columns" else None
        check_names(new, drift, meta_columns, taken, prefix)
        return new, drift, meta_columns

    def _fixed_arrays(
        self,
        new_types: list[str],
        impact_rows: list[int],
        impact_codes: list[int],
        impact_amounts: list[int],
    ) -> dict[str, Any]:
        """The fixed columns, with the new impact types' columns before ``category``."""
        cols, column, strings = self._cols, self._column, self._strings
        codes = np.array(cols.impact, dtype=np.int16)
        amounts = np.array(cols.amount, dtype=np.int64)
        codes[impact_rows] = impact_codes
        amounts[impact_rows] = impact_amounts
        columns: dict[str, Any] = {"user_id": column(strings(cols.user_id, "user_id"), STRING)}
        if self._customers:
            for name, values in zip(CUSTOMER_COLUMNS, cols.customer, strict=True):
                columns[name] = column(strings(values, name), STRING)
        stamps = pa.array(np.asarray(cols.time, np.int64), pa.timestamp("ms", tz="UTC"))
        columns["time_utc"] = column(stamps, DTYPES["time_utc"])
        categories = pd.CategoricalDtype([*IMPACT_TYPES, *new_types], ordered=False)
        columns["impact_type"] = pd.Categorical.from_codes(codes, dtype=categories)
        columns["amount"] = column(pa.array(amounts), INT)
        for code, name in enumerate(categories.categories):
            absent = codes != code
            columns[name] = column(pa.array(np.where(absent, 0, amounts), mask=absent), INT)
        columns["category"] = column(strings(cols.category, "category"), STRING)
        return columns

    def _strings(self, values: list[Any], field: str, rows: array[int] | None = None) -> pa.Array:
        """An Arrow string array; a string Arrow cannot hold (a lone surrogate) is reported."""
        try:
            return pa.array(values, pa.string())
        except UnicodeEncodeError:
            for i, value in enumerate(values):
                try:
                    value is None or value.encode("utf-8")
                except UnicodeEncodeError:
                    row = i if rows is None else rows[i]
                    text = (
                        f"{field} {_short(value)} is not valid Unicode text (it holds a lone "
                        "surrogate)"
                    )
                    raise self._row_error(row, field, text) from None
            raise

    def _row_error(self, row: int, field: str, text: str) -> ValidationError:
        """The error about buffered row ``row``: where the record is, then ``text``."""
        cols = self._cols
        time_utc = _format_ms(cols.time[row])
        where = (
            f"record {self._position[row]} overall (user_id={_short(cols.user_id[row])}, "
            f"time_utc={time_utc!r})"
        )
        summary = {
            "user_id": cols.user_id[row],
            "time_utc": time_utc,
            **_sparse_row(cols.extra, row),
        }
        return ValidationError(f"{where}: {text}", field=field, record=summary)


# ---------------------------------------------------------------------------------------------
# One-call helpers


def records_to_frame(
    records: list[Any],
    endpoint: str = "records",
    *,
    metadata: str = "columns",
    metadata_prefix: str = DEFAULT_METADATA_PREFIX,
    dtype_backend: str = "numpy_nullable",
) -> pd.DataFrame:
    """Turn a list of records (in the API's JSON shape) into the typed frame of SPEC §3.

    Parameters
    ----------
    records : list of dict
        The records, e.g. a response's ``user_records``.
    endpoint, metadata, metadata_prefix, dtype_backend
        As for :class:`FrameBuilder`.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        A bad argument.
    ValidationError
        A record breaks the contract (the message names the field and the record).

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
    return builder.finish(stacklevel=3)  # warnings point at our caller


def empty_frame(
    endpoint: str,
    *,
    metadata: str = "columns",
    metadata_prefix: str = DEFAULT_METADATA_PREFIX,
    dtype_backend: str = "numpy_nullable",
) -> pd.DataFrame:
    """The frame of an empty result: every fixed column with its dtype, no rows.

    In the ``"dict"`` and ``"json"`` modes it also has the ``metadata`` column.

    Examples
    --------
    >>> df = empty_frame("records")
    >>> len(df), df["amount"].dtype, df["time_utc"].dtype
    (0, Int64Dtype(), datetime64[ms, UTC])
    """
    builder = FrameBuilder(
        endpoint, metadata=metadata, metadata_prefix=metadata_prefix, dtype_backend=dtype_backend
    )
    return builder.finish()
