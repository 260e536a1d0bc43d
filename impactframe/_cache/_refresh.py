"""Refreshing a cached frame: the day to refetch from, and the merge of cached and fresh rows.

`refresh_start` is the UTC day of the newest cached record; the loader fetches from that day on
and `merge` replaces the cached rows of those days with the fresh ones, so that the result is
what a full load would give (order, duplicates, columns, dtypes; see `merge`'s notes).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from .._constants import IMPACT_TYPES
from .._dtypes import DTYPES, FLOAT, METADATA_COLUMN, backend_dtype, fixed_columns
from .._frame._repeats import duplicated as repeated_rows
from ..schemas import validate

__all__ = ["merge", "refresh_start"]


def refresh_start(frame: pd.DataFrame, *, today: dt.date | None = None) -> dt.date | None:
    """Return the UTC day of the newest ``time_utc`` in `frame` (whatever its row order), but
    never a day after today.

    A refresh asks the API from this day on (inclusive), so records later on that day are
    picked up too. A record dated in the future (a skewed clock at the source) would otherwise
    move every later refresh past the records that arrive meanwhile (SPEC §6).

    Parameters
    ----------
    frame : pandas.DataFrame
        With a ``time_utc`` column (``datetime64[ms, UTC]`` or an Arrow timestamp).
    today : datetime.date, optional
        The current UTC day (for tests); default the clock's.

    Returns
    -------
    datetime.date or None
        ``None`` when the frame has no timestamps.

    Examples
    --------
    >>> times = pd.to_datetime(["2024-03-01T23:59:59.999Z", "2024-01-01T00:00:00.000Z"])
    >>> refresh_start(pd.DataFrame({"time_utc": times}))
    datetime.date(2024, 3, 1)
    >>> refresh_start(pd.DataFrame({"time_utc": times[:0]})) is None
    True
    >>> future = pd.to_datetime(["2099-01-01T00:00:00Z"])
    >>> refresh_start(pd.DataFrame({"time_utc": future}), today=dt.date(2025, 6, 1))
    datetime.date(2025, 6, 1)
    """
    newest = frame["time_utc"].max()
    if newest is None or pd.isna(newest):
        return None
    stamp = pd.Timestamp(newest)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return min(stamp.date(), today or dt.datetime.now(dt.UTC).date())


def merge(
    cached: pd.DataFrame,
    fresh: pd.DataFrame,
    *,
    since: dt.date,
    endpoint: str,
    metadata: str,
    metadata_prefix: str,
    dtype_backend: str,
    sort_order: str | None = None,
) -> pd.DataFrame:
    """Combine a cached frame with the records fetched from day `since` on (a refresh).

    Cached rows of day `since` or later are replaced by `fresh` (which covers those days);
    the result is what a full load would give: ordered by `sort_order`, free of exact
    duplicates, in the column order of SPEC §3, with the impact types and columns of both
    frames (those only the replaced rows had are dropped with them).

    Parameters
    ----------
    cached, fresh : pandas.DataFrame
        Frames of the same endpoint and frame options, each in `sort_order`.
    since : datetime.date
        The first UTC day `fresh` covers.
    endpoint, metadata, metadata_prefix, dtype_backend : str
        The frame options (for the column order and the final schema check).
    sort_order : {"asc", "desc"}, optional
        The query's order; ``None`` infers it from the frames (ascending when they cannot
        tell, which only happens when neither frame has two different timestamps).

    Returns
    -------
    pandas.DataFrame
        With a RangeIndex, validated by `impactframe.schemas.validate`.

    Raises
    ------
    ValueError
        An unknown `sort_order`.
    impactframe.ValidationError
        The merged frame breaks the schema (the inputs did not come from one query).

    Notes
    -----
    A drift column whose type differs between the two frames gets the builder's common
    type: Float64 for integers and floats, else text (a number's JSON text, a string as it
    came), as a full load gives it.

    Examples
    --------
    >>> from impactframe._frame._builder import records_to_frame
    >>> def record(user, time, trees):
    ...     return {"user_id": user, "time_utc": time, "tree_planted": trees}
    >>> cached = records_to_frame([record("U1", "2024-01-01T10:00:00.000Z", 1),
    ...                            record("U1", "2024-01-02T10:00:00.000Z", 2)])
    >>> fresh = records_to_frame([record("U1", "2024-01-02T10:00:00.000Z", 2),
    ...                           record("U1", "2024-01-03T08:00:00.000Z", 3)])
    >>> merged = merge(cached, fresh, since=refresh_start(cached), endpoint="records",
    ...                metadata="columns", metadata_prefix="metadata_",
    ...                dtype_backend="numpy_nullable", sort_order="asc")
    >>> merged["amount"].tolist()
    [1, 2, 3]
    """
    if sort_order is None:
        sort_order = _infer_order(cached, fresh)
    if sort_order not in ("asc", "desc"):
        msg = f"sort_order: {sort_order!r} is not accepted; expected 'asc' or 'desc'"
        raise ValueError(msg)
    kept = cached.loc[~_day_at_or_after(cached["time_utc"], since)]
    fixed = fixed_columns(endpoint)
    # A column only the replaced rows had (a drift field, a metadata key) goes with them,
    # as it would be absent from a full load.
    kept = kept[
        [c for c in kept.columns if c in fresh.columns or c in fixed or kept[c].notna().any()]
    ]
    parts = [kept, fresh] if sort_order == "asc" else [fresh, kept]
    new_types = _new_impact_types(parts)
    columns = _column_order(parts, fixed, metadata, metadata_prefix, new_types)
    dtypes = {name: _common_dtype(name, parts, dtype_backend) for name in columns}
    categories = pd.CategoricalDtype([*IMPACT_TYPES, *new_types], ordered=False)
    aligned = [_align(part, dtypes, categories) for part in parts]
    frame = pd.concat(aligned, ignore_index=True)
    duplicated = repeated_rows(frame)  # the one repeat rule, on frames
    if duplicated.any():
        frame = frame.loc[~duplicated].reset_index(drop=True)
    return validate(
        frame,
        endpoint,
        dtype_backend=dtype_backend,
        metadata=metadata,
        metadata_prefix=metadata_prefix,
    )


def _infer_order(cached: pd.DataFrame, fresh: pd.DataFrame) -> str:
    for part in (cached, fresh):
        times = part["time_utc"]
        if times.is_monotonic_decreasing and not times.is_monotonic_increasing:
            return "desc"
        if times.is_monotonic_increasing and not times.is_monotonic_decreasing:
            return "asc"
    return "asc"


def _day_at_or_after(times: pd.Series, since: dt.date) -> np.ndarray:
    bound = pd.Timestamp(since, tz="UTC")
    values = times
    if isinstance(values.dtype, pd.ArrowDtype):
        values = values.astype(f"datetime64[{values.dtype.pyarrow_dtype.unit}, UTC]")
    return (values >= bound).fillna(False).to_numpy(dtype=bool)


def _new_impact_types(parts: list[pd.DataFrame]) -> list[str]:
    """Impact types beyond the known ones, in order of first appearance (as a full load has)."""
    seen: list[str] = []
    for part in parts:
        for value in part["impact_type"].dropna().unique():
            if value not in IMPACT_TYPES and value not in seen:
                seen.append(str(value))
    return seen


def _column_order(
    parts: list[pd.DataFrame],
    fixed: list[str],
    metadata: str,
    metadata_prefix: str,
    new_types: list[str],
) -> list[str]:
    """SPEC §3's order: fixed columns (new impact types before ``category``), metadata, drift."""
    head = [*fixed[:-1], *new_types, fixed[-1]]
    if metadata in ("dict", "json"):
        head.append(METADATA_COLUMN)
    present = list(dict.fromkeys(c for part in parts for c in part.columns))
    # The columns of impact types no kept row has any more go with them.
    stale = set(_impact_categories(parts)) - set(IMPACT_TYPES) - set(new_types)
    rest = [c for c in present if c not in head and c not in stale]
    meta = []
    if metadata == "columns":  # the builder refuses drift fields that start with the prefix
        meta = sorted(c for c in rest if c.startswith(metadata_prefix))
    drift = [c for c in rest if c not in meta]  # first seen first, as the builder orders them
    return [*head, *meta, *drift]


def _impact_categories(parts: list[pd.DataFrame]) -> list[str]:
    found: list[str] = []
    for part in parts:
        dtype = part["impact_type"].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            found += [str(c) for c in dtype.categories]
    return found


def _common_dtype(name: str, parts: list[pd.DataFrame], dtype_backend: str) -> Any:
    """One dtype for a column both frames may have with different dtypes (a drift field).

    Mirrors the builder: integers and floats make Float64, any other mix is text.
    """
    dtypes = [part[name].dtype for part in parts if name in part]
    first = dtypes[0]
    if all(d == first for d in dtypes[1:]):
        return first

    def kind(dtype: Any) -> str:
        if isinstance(dtype, pd.ArrowDtype):
            return dtype.kind
        return np.dtype(dtype.numpy_dtype).kind if hasattr(dtype, "numpy_dtype") else "O"

    if all(kind(d) in "iuf" for d in dtypes):
        return backend_dtype(FLOAT, dtype_backend)
    return backend_dtype(DTYPES["category"], dtype_backend)  # the backend's string dtype


def _align(
    part: pd.DataFrame, dtypes: dict[str, Any], categories: pd.CategoricalDtype
) -> pd.DataFrame:
    """`part` with exactly the columns of `dtypes` (missing ones all-NA), cast where needed."""
    out = {}
    for name, dtype in dtypes.items():
        if name == "impact_type":
            out[name] = part[name].cat.set_categories(
                pd.Index(categories.categories, dtype=part[name].cat.categories.dtype)
            )
        elif name not in part:
            filler = pd.Series(index=part.index, dtype=dtype)
            if pd.api.types.is_object_dtype(dtype):
                filler[:] = None  # the builder's "no metadata" in "dict" mode
            out[name] = filler
        elif part[name].dtype != dtype:
            out[name] = part[name].astype(dtype)
        else:
            out[name] = part[name]
    return pd.DataFrame(out, index=part.index)
