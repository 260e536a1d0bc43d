"""The fixed layout of a partitioned read (Dask, Spark): its columns are known before any fetch.

Metadata comes as one JSON column ``metadata`` unless ``metadata_keys`` names the
``metadata_<key>`` columns wanted; a partition is conformed to that layout, and what it has
beyond it is left out (the reader says so).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pandas as pd

from .._frame._builder import empty_frame
from .._params import reject

__all__ = [
    "PREFIX",
    "check_metadata_keys",
    "check_npartitions",
    "conform",
    "meta_frame",
    "months",
]

PREFIX = "metadata_"


def meta_frame(
    endpoint: str, metadata_keys: tuple[str, ...] | None, dtype_backend: str
) -> pd.DataFrame:
    """The empty frame every partition matches: fixed columns, then the metadata column(s)."""
    if metadata_keys is None:
        return empty_frame(endpoint, metadata="json", dtype_backend=dtype_backend)
    meta = empty_frame(endpoint, metadata="drop", dtype_backend=dtype_backend)
    string = meta["user_id"].dtype
    for key in metadata_keys:
        meta[f"{PREFIX}{key}"] = pd.Series([], dtype=string, index=meta.index)
    return meta


def conform(frame: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Exactly meta's columns and dtypes; a new impact type keeps its value (see `read_records`)."""
    columns: dict[str, Any] = {}
    for name in meta.columns:
        dtype = meta[name].dtype
        if name not in frame.columns:
            columns[name] = pd.Series(pd.NA, index=frame.index, dtype=dtype)
            continue
        column = frame[name]
        if isinstance(dtype, pd.CategoricalDtype) and isinstance(column.dtype, pd.CategoricalDtype):
            known = list(dtype.categories)
            new = [c for c in column.cat.categories if c not in dtype.categories]
            columns[name] = column.cat.set_categories([*known, *new])
        elif column.dtype != dtype:
            columns[name] = column.astype(dtype)
        else:
            columns[name] = column
    return pd.DataFrame(columns, index=frame.index)


def check_metadata_keys(metadata_keys: object) -> tuple[str, ...] | None:
    if metadata_keys is None:
        return None
    items = [metadata_keys] if isinstance(metadata_keys, str) else metadata_keys
    if not isinstance(items, Iterable) or isinstance(items, bytes | dict):
        items = None
    else:
        items = list(items)
    if items is None or not all(isinstance(k, str) and k for k in items):
        accepted = (
            "None (one JSON column 'metadata') or a list of metadata keys (non-empty strings)"
        )
        reject("metadata_keys", metadata_keys, accepted)
    return tuple(sorted(set(items)))


def check_npartitions(npartitions: object) -> int | None:
    if npartitions is None:
        return None
    if isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
        reject("npartitions", npartitions, "None (one per month) or an int >= 1")
    return npartitions


def months(start: dt.date, end: dt.date) -> int:
    return (end.year - start.year) * 12 + end.month - start.month + 1
