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

``add``/``finish`` are the seam: a faster Arrow-native path can replace the buffers behind them.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from array import array
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from itertools import compress
from typing import Any, Final, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._constants import (
    DEFAULT_METADATA_PREFIX,
    DTYPE_BACKENDS,
    ENDPOINTS,
    IMPACT_TYPES,
    METADATA_MODES,
)
from .errors import DuplicateRecordWarning, SchemaDriftWarning, ValidationError

__all__ = [
    "DTYPES",
    "METADATA_COLUMN",
    "METADATA_DTYPES",
    "FrameBuilder",
    "backend_dtype",
    "check_options",
    "empty_frame",
    "fixed_columns",
    "fixed_dtypes",
    "records_to_frame",
]

logger = logging.getLogger("impactframe.frame")

_STRING: Final = pd.StringDtype()
_INT: Final = pd.Int64Dtype()
_FLOAT: Final = pd.Float64Dtype()

#: The dtype of every fixed column (``dtype_backend="numpy_nullable"``), in SPEC §3 order.
#: If you update this mapping, also update the table in README.md.
DTYPES: Final[dict[str, Any]] = {
    "user_id": _STRING,
    "customer_id": _STRING,
    "customer_email": _STRING,
    "customer_name": _STRING,
    "time_utc": pd.DatetimeTZDtype(unit="ms", tz="UTC"),
    # a frame's categories also hold the new impact types it met, after these
    "impact_type": pd.CategoricalDtype(categories=list(IMPACT_TYPES), ordered=False),
    "amount": _INT,
    **dict.fromkeys(IMPACT_TYPES, _INT),
    "category": _STRING,
}
#: Name of the single metadata column of the ``"dict"`` and ``"json"`` modes.
METADATA_COLUMN: Final = "metadata"
#: dtype of the metadata column(s) in each mode that has them.
METADATA_DTYPES: Final[dict[str, Any]] = {
    "columns": _STRING,
    "dict": np.dtype(object),
    "json": _STRING,
}

_CUSTOMER_COLUMNS: Final = ("customer_id", "customer_email", "customer_name")
_INT64_MAX: Final = 2**63 - 1
# Arrow's ISO 8601 cast is lenient (offsets, dates without a time): this is the shape we accept.
# Sub-millisecond digits are allowed only when they are zeros (never truncate a real value).
_TIME_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,3}0{0,6})?(Z|\+00:00)$"
)
# The same shape with any fraction, to explain a rejected timestamp.
_TIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:Z|\+00:00)"
)
_TIME_EXAMPLE: Final = "2024-09-16T20:30:13.391Z"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS: Final = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_IMPACT_CODES: Final = tuple(enumerate(IMPACT_TYPES))


# ---------------------------------------------------------------------------------------------
# Columns, dtypes and options


def check_options(
    *,
    endpoint: object = "records",
    metadata: object = "columns",
    metadata_prefix: object = DEFAULT_METADATA_PREFIX,
    dtype_backend: object = "numpy_nullable",
) -> None:
    """Raise ``ValueError`` naming the argument and the accepted values when one is wrong.

    Examples
    --------
    >>> check_options(endpoint="records", metadata="json")
    >>> check_options(metadata="flat")
    Traceback (most recent call last):
    ...
    ValueError: metadata must be one of 'columns', 'dict', 'json', 'drop'; got 'flat'
    """
    for name, value, accepted in (
        ("endpoint", endpoint, tuple(ENDPOINTS)),
        ("metadata", metadata, METADATA_MODES),
        ("dtype_backend", dtype_backend, DTYPE_BACKENDS),
    ):
        if not isinstance(value, str) or value not in accepted:
            msg = f"{name} must be one of {', '.join(map(repr, accepted))}; got {value!r}"
            raise ValueError(msg)
    if not isinstance(metadata_prefix, str) or not metadata_prefix:
        msg = (
            f"metadata_prefix must be a non-empty string like 'metadata_'; got {metadata_prefix!r}"
        )
        raise ValueError(msg)


def fixed_columns(endpoint: str) -> list[str]:
    """The fixed columns of an endpoint's frame, in order (SPEC §3, no metadata or drift columns).

    Examples
    --------
    >>> fixed_columns("records")[:4]
    ['user_id', 'time_utc', 'impact_type', 'amount']
    >>> fixed_columns("customer_records")[:4]
    ['user_id', 'customer_id', 'customer_email', 'customer_name']
    """
    check_options(endpoint=endpoint)
    customer = list(_CUSTOMER_COLUMNS) if endpoint == "customer_records" else []
    return ["user_id", *customer, "time_utc", "impact_type", "amount", *IMPACT_TYPES, "category"]


def backend_dtype(dtype: Any, dtype_backend: str = "numpy_nullable") -> Any:
    """The dtype a column of (numpy_nullable) ``dtype`` has under ``dtype_backend``.

    The pyarrow backend maps strings, integers, floats and timestamps to ``pd.ArrowDtype``;
    ``impact_type`` stays a pandas ``category`` (so ``.cat`` and groupby work) and the
    ``"dict"`` metadata column stays ``object``.

    Examples
    --------
    >>> backend_dtype(DTYPES["amount"], "pyarrow")
    int64[pyarrow]
    >>> backend_dtype(DTYPES["amount"])
    Int64Dtype()
    """
    check_options(dtype_backend=dtype_backend)
    if dtype_backend == "numpy_nullable":
        return dtype
    if isinstance(dtype, pd.StringDtype):
        return pd.ArrowDtype(pa.string())
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pd.ArrowDtype(pa.timestamp(dtype.unit, tz=str(dtype.tz)))
    if isinstance(dtype, pd.Int64Dtype):
        return pd.ArrowDtype(pa.int64())
    if isinstance(dtype, pd.Float64Dtype):
        return pd.ArrowDtype(pa.float64())
    return dtype


def fixed_dtypes(endpoint: str, dtype_backend: str = "numpy_nullable") -> dict[str, Any]:
    """Fixed column name to dtype for an endpoint and backend (derived from ``DTYPES``).

    Examples
    --------
    >>> fixed_dtypes("records")["time_utc"]
    datetime64[ms, UTC]
    >>> fixed_dtypes("records", "pyarrow")["time_utc"]
    timestamp[ms, tz=UTC][pyarrow]
    """
    return {name: backend_dtype(DTYPES[name], dtype_backend) for name in fixed_columns(endpoint)}


# ---------------------------------------------------------------------------------------------
# Small pure helpers


class _Bad(Exception):
    """A field of one record is wrong (becomes a ValidationError naming the record)."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {_short(value)}"


def _missing_or(reason: str, record: dict[str, Any], name: str) -> str:
    return f"{reason}, {_got(record[name])}" if name in record else "is missing"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _amount_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid impact amount (a non-negative int64), or None."""
    if not _is_int(value):
        return f"must be a non-negative integer, {_got(value)}"
    if value < 0:
        return f"must be a non-negative integer, got {value}"
    if value > _INT64_MAX:
        return f"does not fit in a 64-bit integer: {value}"
    return None


def _time_problem(text: str) -> str | None:
    """Why ``text`` is not an accepted ``time_utc``, or None (the slow path, for messages)."""
    match = _TIME_RE.fullmatch(text)
    if match is None:
        return f"{_short(text)} is not an ISO 8601 UTC timestamp like {_TIME_EXAMPLE!r}"
    if (match[7] or "")[3:].strip("0"):
        return f"{_short(text)} has sub-millisecond digits; the API's precision is milliseconds"
    try:
        year, month, day, hour, minute, second = (int(match[k]) for k in range(1, 7))
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return f"{_short(text)} is not a real date and time"
    return None


def _format_ms(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _flatten(meta: dict[Any, Any], out: dict[str, str | None], parent: str) -> None:
    """Flatten metadata into ``out``: nested keys joined by ".", non-strings as JSON text."""
    for key, value in meta.items():
        if not isinstance(key, str):
            raise _Bad(field="metadata", reason=f"has a key that is not a string: {_short(key)}")
        path = parent + key
        if isinstance(value, dict) and value:
            _flatten(value, out, path + ".")
            continue
        if path in out:
            raise _Bad(field="metadata", reason=f"has two keys that both flatten to {path!r}")
        out[path] = _leaf(value)


def _leaf(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _json(value)  # numbers, booleans, lists; an empty object stays "{}": nothing is lost


def _add_metadata(stores: dict[str, _Sparse], meta: dict[Any, Any], row: int) -> None:
    """Add one record's metadata to the column stores, flattened as :func:`_flatten` does.

    The common flat, all-string case goes straight to the stores (no intermediate dict)."""
    nested = False
    for key, value in meta.items():
        if type(key) is not str and not isinstance(key, str):
            raise _Bad(field="metadata", reason=f"has a key that is not a string: {_short(key)}")
        if type(value) is not str:
            if isinstance(value, dict) and value:
                nested = True  # flattened below, where its paths can meet the direct keys
                continue
            value = _leaf(value)
        store = stores.get(key)
        if store is None:
            store = stores[key] = _Sparse()
        store.rows.append(row)
        store.values.append(value)
    if nested:
        flat: dict[str, str | None] = {}
        _flatten({k: v for k, v in meta.items() if isinstance(v, dict) and v}, flat, "")
        for path in flat:
            if path in meta and not (isinstance(meta[path], dict) and meta[path]):
                raise _Bad(field="metadata", reason=f"has two keys that both flatten to {path!r}")
        _add_sparse(stores, flat, row)


def _json_metadata(meta: dict[Any, Any]) -> str:
    if not all(isinstance(key, str) for key in meta):  # json.dumps would turn 1 into "1"
        raise _Bad(field="metadata", reason="has a key that is not a string")
    try:
        return _json(meta)
    except (TypeError, ValueError) as exc:
        raise _Bad(field="metadata", reason=f"holds a value JSON cannot represent: {exc}") from None


def _check_unknown(field: Any, value: Any, where: str) -> None:
    """An unknown field needs a string name (it names a column) and a value JSON can hold."""
    if not isinstance(field, str):
        raise _Bad(field=where, reason=f"has a field name that is not a string: {_short(field)}")
    if value is None or isinstance(value, (str, int, float)):
        return
    if isinstance(value, (dict, list)):
        try:
            _json(value)
        except (TypeError, ValueError) as exc:
            raise _Bad(field=field, reason=f"holds a value JSON cannot represent: {exc}") from None
        return
    raise _Bad(field=field, reason=f"holds a value JSON cannot represent: {_got(value)}")


def _customer_fields(rec: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """The checked ``(customer_id, customer_email, customer_name)`` and any unknown keys."""
    customer = rec.get("customer")
    if not isinstance(customer, dict):
        raise _Bad(field="customer", reason=_missing_or("must be an object", rec, "customer"))
    values = []
    for name in _CUSTOMER_COLUMNS:
        value = customer.get(name)
        if not isinstance(value, str) and (name != "customer_name" or value is not None):
            raise _Bad(field=name, reason=_missing_or("must be a string", customer, name))
        values.append(value)
    extra = None
    if len(customer) > 2 + ("customer_name" in customer):
        extra = {k: v for k, v in customer.items() if k not in _CUSTOMER_COLUMNS}
        for key, value in extra.items():
            _check_unknown(key, value, "customer")
    return tuple(values), extra


def _strict_equal(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart (for 'identical content')."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_strict_equal, a, b))
    return bool(a == b)


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
    """Place ``values[i]`` at row ``rows[i]`` of an ``n``-row array, null elsewhere."""
    if len(rows) == n:  # rows are unique and ascending, so this is every row in order
        return values
    index = np.full(n, -1, dtype=np.int64)
    index[np.frombuffer(rows, dtype=np.int64)] = np.arange(len(rows))
    return values.take(pa.array(index, mask=index < 0))


def _drift_array(values: list[Any]) -> tuple[pa.Array, Any]:
    """Arrow values and dtype of an unknown field: string, Int64, Float64, else JSON text."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, str) for v in present):
        return pa.array(values, pa.string()), _STRING
    if all(_is_int(v) and -_INT64_MAX - 1 <= v <= _INT64_MAX for v in present):
        return pa.array(values, pa.int64()), _INT
    if all(_is_int(v) or isinstance(v, float) for v in present):
        try:
            floats = [None if v is None else float(v) for v in values]
        except OverflowError:  # an int too large for a float: keep its exact text instead
            pass
        else:
            return pa.array(floats, pa.float64()), _FLOAT
    return pa.array([None if v is None else _json(v) for v in values], pa.string()), _STRING


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


# ---------------------------------------------------------------------------------------------
# The builder


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

    def __init__(
        self,
        endpoint: str,
        *,
        metadata: str = "columns",
        metadata_prefix: str = DEFAULT_METADATA_PREFIX,
        dtype_backend: str = "numpy_nullable",
    ) -> None:
        check_options(
            endpoint=endpoint,
            metadata=metadata,
            metadata_prefix=metadata_prefix,
            dtype_backend=dtype_backend,
        )
        self.endpoint = endpoint
        self.metadata = metadata
        self.metadata_prefix = metadata_prefix
        self.dtype_backend = dtype_backend
        self._records_key = ENDPOINTS[endpoint][1]
        self._customers = endpoint == "customer_records"
        self._known = frozenset(
            {"user_id", "time_utc", *IMPACT_TYPES, "category", "metadata"}
            | ({"customer"} if self._customers else set())
        )
        self._meta_mode = None if metadata == "drop" else metadata
        self._cols = _Columns(self._customers, metadata)
        self._position = array("q")  # index of each row's record among all records added
        # de-duplication: hash of (user_id, ms) -> first row; later rows with that hash
        self._seen: dict[int, int] = {}
        self._more: dict[int, list[int]] = {}
        self._conflicts: dict[tuple[str, int], int] = {}  # key -> records kept with that key
        self._n_added = 0
        self._n_dropped = 0

    def __len__(self) -> int:
        return len(self._cols)

    @property
    def count(self) -> int:
        """Rows buffered so far: the records added minus identical repeats (exact)."""
        return len(self._cols)

    def __repr__(self) -> str:
        return (
            f"FrameBuilder({self.endpoint!r}, metadata={self.metadata!r}, "
            f"dtype_backend={self.dtype_backend!r}, rows={len(self)})"
        )

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
        return self._commit(*self._check_page(records))

    def _check_page(self, records: list[Any]) -> tuple[_Columns, list[int]]:
        """Check a page (see `add`) into page-local buffers and its timestamps, changing nothing.

        Error messages count records from ``self._n_added`` on (the records added before)."""
        if not isinstance(records, list):
            msg = f"{self._records_key} must be a list of records, got {type(records).__name__}"
            raise ValidationError(msg, field=self._records_key, record=_short(records))
        page = _Columns(self._customers, self.metadata)
        take = self._take
        for i, record in enumerate(records):
            try:
                take(page, record)
            except _Bad as bad:
                self._parse_times(page.time, records)  # an earlier bad timestamp is reported first
                raise self._record_error(bad, i, record) from None
        return page, self._parse_times(page.time, records)

    def _take(self, page: _Columns, rec: Any) -> None:
        """Check one record's known fields, then append its values to ``page``."""
        if not isinstance(rec, dict):
            raise _Bad(field=self._records_key, reason=f"must hold JSON objects, {_got(rec)}")
        user_id = rec.get("user_id")
        if not isinstance(user_id, str):
            raise _Bad(field="user_id", reason=_missing_or("must be a string", rec, "user_id"))
        time_utc = rec.get("time_utc")
        if not isinstance(time_utc, str):
            raise _Bad(
                field="time_utc", reason=_missing_or("must be a timestamp string", rec, "time_utc")
            )
        n_known = 2
        impact, amount = -1, 0
        for code, name in _IMPACT_CODES:
            if name in rec:
                if impact >= 0:
                    raise _Bad(
                        field=name,
                        reason=f"is a second impact field besides {IMPACT_TYPES[impact]}; "
                        "a record has exactly one",
                    )
                amount = rec[name]
                if type(amount) is not int or not 0 <= amount <= _INT64_MAX:
                    problem = _amount_problem(amount)  # the slow path, also for int subclasses
                    if problem:
                        raise _Bad(field=name, reason=problem)
                impact = code
                n_known += 1
        category = rec.get("category")
        if "category" in rec:
            n_known += 1
            if category is not None and not isinstance(category, str):
                raise _Bad(field="category", reason=f"must be a string or null, {_got(category)}")
        meta = rec.get("metadata")
        if "metadata" in rec:
            n_known += 1
            if meta is not None and not isinstance(meta, dict):
                raise _Bad(field="metadata", reason=f"must be an object or null, {_got(meta)}")
        customer = customer_extra = None
        if self._customers:
            customer, customer_extra = _customer_fields(rec)
            n_known += 1
        extra = None
        if len(rec) > n_known:
            extra = {key: value for key, value in rec.items() if key not in self._known}
            for key, value in extra.items():
                _check_unknown(key, value, self._records_key)
        if impact < 0 and not extra:
            raise _Bad(
                field="impact_type",
                reason="is missing: the record has none of the impact fields "
                + ", ".join(IMPACT_TYPES),
            )

        row = len(page.user_id)
        if meta is not None and self._meta_mode is not None:  # may raise: the page is dropped
            try:
                if self._meta_mode == "columns":
                    _add_metadata(page.meta, meta, row)
                else:
                    page.meta_values.append(
                        _json_metadata(meta) if self._meta_mode == "json" else meta
                    )
            except RecursionError:
                raise _Bad(field="metadata", reason="is nested too deeply to flatten") from None
        elif self._meta_mode in ("dict", "json"):
            page.meta_values.append(None)
        page.user_id.append(user_id)
        page.time.append(time_utc)
        page.impact.append(impact)
        page.amount.append(amount)
        page.category.append(category)
        if customer is not None:
            for column, value in zip(page.customer, customer, strict=True):
                column.append(value)
        if extra:
            _add_sparse(page.extra, extra, row)
            if impact < 0:
                page.orphans.append((row, extra))
        if customer_extra:
            _add_sparse(page.customer_extra, customer_extra, row)

    def _parse_times(self, times: list[str], records: list[Any]) -> list[int]:
        """Milliseconds since the epoch of a page's timestamps (vectorized, checked)."""
        if not times:
            return []
        try:
            text = pa.array(times, type=pa.string())
        except UnicodeEncodeError:  # a lone surrogate: not a timestamp either
            self._raise_time_error(times, records)
        if not pc.all(pc.match_substring_regex(text, _TIME_PATTERN)).as_py():
            self._raise_time_error(times, records)
        text = pc.replace_substring_regex(text, r"(\.[0-9]{3})0+", r"\1")
        try:
            stamps = text.cast(pa.timestamp("ms", tz="UTC"))
        except pa.ArrowInvalid:  # a well-formed but impossible date (2023-02-29, 24:00:00)
            self._raise_time_error(times, records)
        ms = stamps.view(pa.int64()).to_numpy()
        if ms.min() < _MIN_MS:  # year 0000 parses in Arrow but is no date Python knows
            self._raise_time_error(times, records)
        return ms.tolist()  # type: ignore[no-any-return]

    def _raise_time_error(self, times: list[str], records: list[Any]) -> NoReturn:
        for i, text in enumerate(times):
            problem = _time_problem(text)
            if problem:
                raise self._record_error(_Bad(field="time_utc", reason=problem), i, records[i])
        msg = f"time_utc of a record in this page of {self._records_key} could not be parsed"
        raise ValidationError(msg, field="time_utc")  # pragma: no cover - Arrow and re disagree

    def _record_error(self, bad: _Bad, i: int, record: Any) -> ValidationError:
        where = f"record {i} of the page (record {self._n_added + i} overall"
        if isinstance(record, dict):
            for name in ("user_id", "time_utc"):
                value = record.get(name)
                if isinstance(value, str):
                    where += f", {name}={_short(value)}"
        msg = f"{where}): {bad.field} {bad.reason}"
        return ValidationError(msg, field=bad.field, record=record)

    def _commit(self, page: _Columns, times: list[int]) -> int:
        """Append a checked page, dropping records identical to one already taken."""
        base, n, start = len(self._cols), len(page), self._n_added
        seen = self._seen
        digests = list(map(hash, zip(page.user_id, times, strict=True)))
        if seen.keys().isdisjoint(digests) and len(set(digests)) == n:  # the usual page
            seen.update(zip(digests, range(base, base + n), strict=True))
            self._cols.extend(page, times, None)
            self._position.extend(range(start, start + n))
            self._n_added += n
            return n
        keep: list[int] = []
        for j, digest in enumerate(digests):
            row = base + len(keep)
            first = seen.setdefault(digest, row)
            key = (page.user_id[j], times[j])
            if first == row or not self._is_repeat(digest, first, key, j, page, times, keep):
                keep.append(j)
        self._cols.extend(page, times, keep)
        self._position.extend([start + j for j in keep])
        if len(keep) < n:
            self._n_dropped += n - len(keep)
            logger.debug("dropped %d repeated records", n - len(keep))
        self._n_added += n
        return len(keep)

    def _is_repeat(
        self,
        digest: int,
        first: int,
        key: tuple[str, int],
        j: int,
        page: _Columns,
        times: list[int],
        keep: list[int],
    ) -> bool:
        """Whether page record ``j`` is identical to a row taken before (it is then dropped).

        Rows below ``len(self._cols)`` are the builder's; the others are this page's kept ones.
        """
        base = len(self._cols)
        content = page.content(j)
        others = self._more.setdefault(digest, [])
        same_key = 0
        for r in (first, *others):
            if r < base:
                source, i, ms = self._cols, r, self._cols.time[r]
            else:
                source, i = page, keep[r - base]
                ms = times[i]
            if (source.user_id[i], ms) == key:
                if _strict_equal(source.content(i), content):
                    return True
                same_key += 1
        others.append(base + len(keep))
        if same_key:
            self._conflicts[key] = same_key + 1
        return False

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
        # imported here: impactframe.schemas imports DTYPES from this module
        from .schemas import validate

        cols, n = self._cols, len(self._cols)
        new_types, impact_rows, impact_codes, impact_amounts = self._classify()
        codes = np.array(cols.impact, dtype=np.int16)
        amounts = np.array(cols.amount, dtype=np.int64)
        codes[impact_rows] = impact_codes
        amounts[impact_rows] = impact_amounts
        drift = [(name, cols.extra[name]) for name in cols.extra if name not in new_types]
        drift += list(cols.customer_extra.items())
        meta_columns = {}
        if self.metadata == "columns":
            meta_columns = {self.metadata_prefix + key: cols.meta[key] for key in sorted(cols.meta)}
        self._check_names(new_types, drift, meta_columns)

        column, strings = self._column, self._strings
        columns: dict[str, Any] = {"user_id": column(strings(cols.user_id, "user_id"), _STRING)}
        if self._customers:
            for name, values in zip(_CUSTOMER_COLUMNS, cols.customer, strict=True):
                columns[name] = column(strings(values, name), _STRING)
        stamps = pa.array(np.asarray(cols.time, np.int64), pa.timestamp("ms", tz="UTC"))
        columns["time_utc"] = column(stamps, DTYPES["time_utc"])
        categories = pd.CategoricalDtype([*IMPACT_TYPES, *new_types], ordered=False)
        columns["impact_type"] = pd.Categorical.from_codes(codes, dtype=categories)
        columns["amount"] = column(pa.array(amounts), _INT)
        for code, name in enumerate(categories.categories):
            absent = codes != code
            columns[name] = column(pa.array(np.where(absent, 0, amounts), mask=absent), _INT)
        columns["category"] = column(strings(cols.category, "category"), _STRING)
        for name, store in meta_columns.items():
            values = strings(store.values, "metadata", store.rows)
            columns[name] = column(_spread(store.rows, values, n), _STRING)
        if self.metadata == "json":
            columns[METADATA_COLUMN] = column(strings(cols.meta_values, "metadata"), _STRING)
        elif self.metadata == "dict":
            objects = np.empty(n, dtype=object)
            objects[:] = cols.meta_values
            columns[METADATA_COLUMN] = objects
        for name, store in drift:
            try:
                values, dtype = _drift_array(store.values)
            except UnicodeEncodeError:
                self._strings([_json(v) for v in store.values], name, store.rows)
                raise  # pragma: no cover - _strings has raised
            columns[name] = column(_spread(store.rows, values, n), dtype)
        frame = pd.DataFrame(columns, copy=False)

        self._warn(new_types, [(name, frame[name].dtype) for name, _ in drift], stacklevel + 1)
        if self._n_dropped:
            logger.debug("dropped %d records identical to an earlier one", self._n_dropped)
        return validate(
            frame,
            self.endpoint,
            dtype_backend=self.dtype_backend,
            metadata=self.metadata,
            metadata_prefix=self.metadata_prefix,
        )

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
                    msg = (
                        f"{self._describe_row(row)}: {field} {_short(value)} is not valid "
                        "Unicode text (it holds a lone surrogate)"
                    )
                    raise ValidationError(msg, field=field, record=self._summary(row)) from None
            raise

    def _column(self, values: pa.Array, dtype: Any) -> Any:
        """A pandas array of ``values``: ``dtype`` (numpy_nullable), or Arrow-backed (pyarrow)."""
        if self.dtype_backend == "pyarrow":
            return pd.arrays.ArrowExtensionArray(values)
        return dtype.__from_arrow__(values)

    def _classify(self) -> tuple[list[str], list[int], list[int], list[int]]:
        """The new impact types, and the row, category code and amount of each record with no
        known impact field. Raises for the first record with two impact fields or none."""
        cols = self._cols
        candidates = set()
        for _, extra in cols.orphans:
            if len(extra) == 1:
                ((name, value),) = extra.items()
                if _amount_problem(value) is None:
                    candidates.add(name)
        new_types = [name for name in cols.extra if name in candidates]  # in order first seen
        code_of = {name: len(IMPACT_TYPES) + k for k, name in enumerate(new_types)}
        problems: list[tuple[int, str, str]] = []  # (row, field, reason)
        known = np.asarray(cols.impact, dtype=np.int16)
        for name in new_types:
            rows = np.frombuffer(cols.extra[name].rows, dtype=np.int64)
            clash = rows[known[rows] >= 0]
            if clash.size:
                row = int(clash[0])
                reason = f"is a second impact field besides {IMPACT_TYPES[known[row]]}"
                problems.append((row, name, reason + "; a record has exactly one"))
        rows_out, codes_out, amounts_out = [], [], []
        for row, extra in cols.orphans:
            hits = [name for name in extra if name in code_of]
            problem = _amount_problem(extra[hits[0]]) if len(hits) == 1 else None
            if len(hits) == 1 and problem is None:
                rows_out.append(row)
                codes_out.append(code_of[hits[0]])
                amounts_out.append(extra[hits[0]])
            elif problem is not None:
                problems.append((row, hits[0], problem))
            elif hits:
                reason = f"is a second impact field besides {hits[0]}; a record has exactly one"
                problems.append((row, hits[1], reason))
            else:
                reason = (
                    f"is missing: the record has none of the impact fields "
                    f"{', '.join(IMPACT_TYPES)} nor a new one (unknown: {', '.join(extra)})"
                )
                problems.append((row, "impact_type", reason))
        if problems:
            row, field, reason = min(problems)
            msg = f"{self._describe_row(row)}: {field} {reason}"
            raise ValidationError(msg, field=field, record=self._summary(row))
        return new_types, rows_out, codes_out, amounts_out

    def _check_names(
        self,
        new_types: list[str],
        drift: list[tuple[str, _Sparse]],
        meta_columns: dict[str, _Sparse],
    ) -> None:
        """Column names must be unique: an unknown field may not replace another column."""
        taken = set(fixed_columns(self.endpoint))
        if self.metadata in ("dict", "json"):
            taken.add(METADATA_COLUMN)
        prefix = self.metadata_prefix
        for name, store in [(name, self._cols.extra[name]) for name in new_types] + drift:
            reason = None
            if name in taken:
                reason = "would take the name of another column"
            elif self.metadata == "columns" and name.startswith(prefix):
                reason = f"starts with the metadata prefix {prefix!r}; pass another metadata_prefix"
            if reason:
                row = store.rows[0]
                msg = f"{self._describe_row(row)}: unknown field {name!r} {reason}"
                raise ValidationError(msg, field=name, record=self._summary(row))
            taken.add(name)
        for name, store in meta_columns.items():
            if name in taken:
                row = store.rows[0]
                msg = (
                    f"{self._describe_row(row)}: metadata key {name[len(prefix) :]!r} would make "
                    f"the column {name!r}, which exists already; pass another metadata_prefix"
                )
                raise ValidationError(msg, field="metadata", record=self._summary(row))

    def _describe_row(self, row: int) -> str:
        return (
            f"record {self._position[row]} overall (user_id={_short(self._cols.user_id[row])}, "
            f"time_utc={_format_ms(self._cols.time[row])!r})"
        )

    def _summary(self, row: int) -> dict[str, Any]:
        return {
            "user_id": self._cols.user_id[row],
            "time_utc": _format_ms(self._cols.time[row]),
            **_sparse_row(self._cols.extra, row),
        }

    def _warn(self, new_types: list[str], drift: list[tuple[str, Any]], stacklevel: int) -> None:
        # stacklevel counts from here: _warn -> finish -> finish's caller is 3
        where, level = self._records_key, stacklevel
        for name in new_types:
            count = len(self._cols.extra[name].rows)
            msg = (
                f"{where}: unknown impact type {name!r} in {count} record(s), kept as a "
                f"category of impact_type and an Int64 column {name!r}"
            )
            warnings.warn(msg, SchemaDriftWarning, stacklevel=level)
        for name, dtype in drift:
            msg = f"{where}: unknown field {name!r} kept as a column of dtype {dtype}"
            warnings.warn(msg, SchemaDriftWarning, stacklevel=level)
        if self._conflicts:
            msg = (
                f"{where}: {len(self._conflicts)} (user_id, time_utc) key(s) occur in records "
                f"with different content; all {sum(self._conflicts.values())} of those "
                "records were kept"
            )
            warnings.warn(msg, DuplicateRecordWarning, stacklevel=level)


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
