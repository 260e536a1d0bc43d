"""The column codec of the Parquet cache: a frame to an Arrow table and back, dtypes exact.

Parquet does not keep every pandas dtype (``string`` storage and missing-value kind, unused
categories and their order, dict-valued ``metadata``), so `_encode_frame` also returns a layout
(each column's exact dtype, the frame's ``attrs``) that the manifest stores, and
`_decode_frame` restores the frame from the table and that layout. A frame the codec cannot
restore exactly raises `_Uncacheable` (the loader then returns it uncached).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa


class _Uncacheable(Exception):
    """The frame holds something the cache cannot store exactly (it is returned uncached)."""


def _missing_kind(value: Any) -> str:
    if value is None:
        return "None"
    if value is pd.NA:
        return "NA"
    return "nan"


_MISSING = {"None": None, "NA": pd.NA, "nan": np.nan}


def _refuse(value: Any) -> Any:
    msg = f"a {type(value).__name__} is not JSON"
    raise TypeError(msg)


def _encode_column(name: str, series: pd.Series) -> tuple[pa.ChunkedArray | pa.Array, dict]:
    """One column as Arrow data plus the manifest entry that restores its exact dtype."""
    dtype = series.dtype
    spec: dict[str, Any] = {"name": name, "dtype": str(dtype)}
    if isinstance(dtype, pd.ArrowDtype):
        # Parquet renames some nested fields (a map's entries): keep the exact Arrow type.
        arrow_type = dtype.pyarrow_dtype
        schema = pa.schema([pa.field("t", arrow_type)]).serialize().to_pybytes()
        spec |= {"kind": "arrow", "arrow_schema": base64.b64encode(schema).decode()}
        return pa.array(series.array, type=arrow_type), spec
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories
        spec |= {
            "kind": "category",
            "categories": categories.tolist(),
            "categories_dtype": str(categories.dtype),
            "ordered": bool(dtype.ordered),
        }
        try:
            json.dumps(spec["categories"], default=_refuse, allow_nan=False)
        except (TypeError, ValueError) as exc:
            msg = f"column {name!r}: categories must be JSON values ({exc})"
            raise _Uncacheable(msg) from None
        return pa.array(series, from_pandas=True), spec
    if isinstance(dtype, pd.StringDtype):
        spec |= {
            "kind": "string",
            "storage": dtype.storage,
            "na_value": "NA" if dtype.na_value is pd.NA else "nan",
        }
        return pa.array(series, from_pandas=True, type=pa.large_string()), spec
    if pd.api.types.is_object_dtype(dtype):
        values = series.to_numpy()
        missing = pd.isna(values)
        spec["kind"] = "json"
        spec["missing"] = _missing_kind(values[missing.argmax()]) if missing.any() else "None"
        # One encoder for the column: json.dumps with options would build one per value.
        encode = json.JSONEncoder(ensure_ascii=False, default=_refuse).encode
        try:
            texts = [None if miss else encode(v) for v, miss in zip(values, missing, strict=True)]
        except (TypeError, ValueError) as exc:
            msg = f"column {name!r} holds a value the cache cannot store ({exc})"
            raise _Uncacheable(msg) from None
        return pa.array(texts, type=pa.large_string()), spec
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):
        if not hasattr(dtype, "__from_arrow__"):
            msg = f"column {name!r}: dtype {dtype} cannot be stored"
            raise _Uncacheable(msg)
        spec["kind"] = "extension"
    else:
        spec["kind"] = "numpy"
    return pa.array(series, from_pandas=True), spec


def _decode_column(column: pa.ChunkedArray, spec: dict[str, Any]) -> Any:
    """Turn one Arrow column back into pandas values of exactly the recorded dtype."""
    kind = spec["kind"]
    if kind == "arrow":
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(spec["arrow_schema"])))
        arrow_type = schema.field(0).type
        if str(column.type) != str(arrow_type):  # ``==`` ignores the nested field names
            column = column.cast(arrow_type)
        return pd.arrays.ArrowExtensionArray(column)
    if kind == "string":
        na_value = pd.NA if spec["na_value"] == "NA" else np.nan
        dtype = pd.StringDtype(spec["storage"], na_value=na_value)
        return dtype.__from_arrow__(column.cast(pa.large_string()))
    if kind == "category":
        categories = pd.Index(spec["categories"], dtype=spec["categories_dtype"])
        raw = column.to_pandas()
        if not isinstance(raw.dtype, pd.CategoricalDtype):
            raw = raw.astype("category")
        values = pd.Categorical(raw).set_categories(categories, ordered=spec["ordered"])
        if int(values.isna().sum()) != column.null_count:
            msg = "a category value is not among the recorded categories"
            raise ValueError(msg)
        return values
    if kind == "json":
        # One parse of the whole column as a JSON array is twice as fast as one per value.
        text = ",".join(column.fill_null("null").to_pylist())
        values = np.fromiter(json.loads(f"[{text}]"), dtype=object, count=len(column))
        missing = _MISSING[spec["missing"]]
        if missing is not None and column.null_count:
            values[column.is_null().to_numpy(zero_copy_only=False)] = missing
        return values
    dtype = pd.api.types.pandas_dtype(spec["dtype"])
    if kind == "extension":
        return dtype.__from_arrow__(column)  # type: ignore[union-attr]
    return column.to_numpy().astype(dtype, copy=False)


def _encode_frame(frame: pd.DataFrame) -> tuple[pa.Table, dict[str, Any]]:
    names = list(frame.columns)
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        msg = "column names must be distinct strings"
        raise _Uncacheable(msg)
    if (
        not isinstance(frame.index, pd.RangeIndex)
        or frame.index.start != 0
        or (frame.index.step != 1)
    ):
        msg = "the index must be a RangeIndex from 0"
        raise _Uncacheable(msg)
    arrays, specs = [], []
    for position, name in enumerate(names):
        try:
            array, spec = _encode_column(name, frame.iloc[:, position])
        except (TypeError, ValueError, pa.ArrowException) as exc:  # no Arrow form for it
            msg = f"column {name!r} of dtype {frame.dtypes.iloc[position]} ({exc})"
            raise _Uncacheable(msg) from None
        arrays.append(array)
        specs.append(spec)
    table = pa.Table.from_arrays(arrays, names=names)
    layout = {"columns": specs, "columns_dtype": str(frame.columns.dtype), "rows": len(frame)}
    try:
        json.dumps(frame.attrs, default=_refuse, allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = f"frame.attrs must be JSON values ({exc})"
        raise _Uncacheable(msg) from None
    layout["attrs"] = frame.attrs
    return table, layout


def _decode_frame(table: pa.Table, layout: dict[str, Any]) -> pd.DataFrame:
    specs = layout["columns"]
    if table.column_names != [s["name"] for s in specs] or table.num_rows != layout["rows"]:
        msg = "the data file does not hold the columns and rows of its manifest"
        raise ValueError(msg)
    columns = {}
    for position, spec in enumerate(specs):
        columns[position] = _decode_column(table.column(position), spec)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows), copy=False)
    frame.columns = pd.Index([s["name"] for s in specs], dtype=layout["columns_dtype"])
    frame.attrs = layout.get("attrs", {})
    for position, spec in enumerate(specs):
        if str(frame.dtypes.iloc[position]) != spec["dtype"]:
            msg = f"column {spec['name']!r} came back as {frame.dtypes.iloc[position]}"
            raise ValueError(msg)
    return frame
