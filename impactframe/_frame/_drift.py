"""Unknown fields of the reference frame builder: new impact types and drift columns (SPEC §3).

Decided at ``finish`` over all records, so the frame does not depend on how they were split
into pages. A record whose only impact field is unknown (its one unknown field, a
non-negative integer) makes that field a new impact type; every other unknown field becomes a
drift column. What is wrong raises `_BadRow`, which the builder turns into a
``ValidationError`` naming the record.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from .._constants import IMPACT_TYPES
from .._dtypes import FLOAT, INT, STRING
from ..errors import SchemaDriftWarning
from ._columns import _Columns, _Sparse
from ._python_reader import _INT64_MAX, _amount_problem, _is_int, _json

__all__ = ["check_names", "classify", "warn_drift"]


class _BadRow(Exception):
    """Buffered row ``row`` cannot be taken; ``text`` follows the record's description."""

    def __init__(self, row: int, field: str, text: str):
        super().__init__(text)
        self.row = row
        self.field = field
        self.text = text


def _drift_array(values: list[Any]) -> tuple[pa.Array, Any]:
    """Arrow values and dtype of an unknown field: string, Int64, Float64, else text (strings
    as they came, other values as their JSON text, as for metadata values).

    Examples
    --------
    >>> _drift_array([1, None, 2.5])[1], _drift_array([1, "a", [2]])[0].to_pylist()
    (Float64Dtype(), ['1', 'a', '[2]'])
    """
    present = [v for v in values if v is not None]
    if all(isinstance(v, str) for v in present):
        return pa.array(values, pa.string()), STRING
    if all(_is_int(v) and -_INT64_MAX - 1 <= v <= _INT64_MAX for v in present):
        return pa.array(values, pa.int64()), INT
    if all(_is_int(v) or isinstance(v, float) for v in present):
        try:
            floats = [None if v is None else float(v) for v in values]
        except OverflowError:  # an int too large for a float: keep its exact text instead
            pass
        else:
            return pa.array(floats, pa.float64()), FLOAT
    texts = [v if v is None or isinstance(v, str) else _json(v) for v in values]
    return pa.array(texts, pa.string()), STRING


def classify(cols: _Columns) -> tuple[list[str], list[int], list[int], list[int]]:
    """The new impact types, and the row, category code and amount of each record with no
    known impact field. Raises `_BadRow` for the first record with two impact fields or none."""
    candidates = set()
    for _, extra in cols.orphans:
        # The record's one unknown field that can be an amount (a non-negative integer) is
        # its impact; the others are drift. Decided per record, so a record reads the same
        # whatever else a query (a date window, a refresh) happens to hold.
        amounts = [name for name, value in extra.items() if _amount_problem(value) is None]
        if len(amounts) == 1:
            candidates.add(amounts[0])
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
        raise _BadRow(row, field, f"{field} {reason}")
    return new_types, rows_out, codes_out, amounts_out


def check_names(
    new_types: list[tuple[str, _Sparse]],
    drift: list[tuple[str, _Sparse]],
    meta_columns: dict[str, _Sparse],
    taken: set[str],
    prefix: str | None,
) -> None:
    """Column names must be unique: an unknown field may not replace another column.

    ``taken`` names the fixed columns; ``prefix`` is the metadata prefix in ``"columns"`` mode
    (a drift field may not start with it), else None. Raises `_BadRow`.
    """
    taken = set(taken)
    for name, store in new_types + drift:
        reason = None
        if name in taken:
            reason = "would take the name of another column"
        elif prefix is not None and name.startswith(prefix):
            reason = f"starts with the metadata prefix {prefix!r}; pass another metadata_prefix"
        if reason:
            raise _BadRow(store.rows[0], name, f"unknown field {name!r} {reason}")
        taken.add(name)
    for name, store in meta_columns.items():
        if name in taken:
            key = name[len(prefix or "") :]
            text = (
                f"metadata key {key!r} would make the column {name!r}, which exists already; "
                "pass another metadata_prefix"
            )
            raise _BadRow(store.rows[0], "metadata", text)


def warn_drift(
    records_key: str,
    new_types: list[tuple[str, _Sparse]],
    drift: list[tuple[str, Any]],
    stacklevel: int,
) -> None:
    """One ``SchemaDriftWarning`` per new impact type, then one per drift column (its dtype).

    ``stacklevel`` is the one the caller would give `warnings.warn` itself.
    """
    for name, store in new_types:
        msg = (
            f"{records_key}: unknown impact type {name!r} in {len(store.rows)} record(s), kept "
            f"as a category of impact_type and an Int64 column {name!r}"
        )
        warnings.warn(msg, SchemaDriftWarning, stacklevel=stacklevel + 1)
    for name, dtype in drift:
        msg = f"{records_key}: unknown field {name!r} kept as a column of dtype {dtype}"
        warnings.warn(msg, SchemaDriftWarning, stacklevel=stacklevel + 1)
