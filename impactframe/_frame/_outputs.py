"""The loaders' other outputs: a ``pyarrow.Table`` or a ``polars.DataFrame`` (SPEC §13).

The builder assembles its Arrow arrays into a table directly (``FrameBuilder(output="arrow")``);
`check_table` holds it to the rules pandera holds the pandas frame to (SPEC §3), and
`as_output` hands it on, as it is or as polars. The Arrow types of the columns:

=====================================  ==========================================
``user_id``, ``customer_*``, text      ``string`` (``category``, metadata, drift text)
``time_utc``                           ``timestamp[ms, tz=UTC]``
``impact_type``                        ``dictionary<values=string, indices=int32>``
``amount``, impact columns             ``int64`` (nullable), drift numbers ``int64``/``float64``
=====================================  ==========================================
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .._constants import IMPACT_TYPES
from .._dtypes import CUSTOMER_COLUMNS, METADATA_COLUMN, fixed_columns
from ..errors import ValidationError

__all__ = ["ARROW_TYPES", "IMPACT_TYPE", "OUTPUTS", "as_output", "check_table", "table_from_frame"]

#: The values of the loaders' ``output=``.
OUTPUTS: Final = ("pandas", "arrow", "polars")
#: The Arrow type of ``impact_type``: the categories in SPEC §1 order, then the new types.
IMPACT_TYPE: Final = pa.dictionary(pa.int32(), pa.string())
#: The Arrow type of every fixed column.
ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "user_id": pa.string(),
    **dict.fromkeys(CUSTOMER_COLUMNS, pa.string()),
    "time_utc": pa.timestamp("ms", tz="UTC"),
    "impact_type": IMPACT_TYPE,
    "amount": pa.int64(),
    **dict.fromkeys(IMPACT_TYPES, pa.int64()),
    "category": pa.string(),
}
_NOT_NULL: Final = frozenset(
    {"user_id", "customer_id", "customer_email", "time_utc", "impact_type", "amount"}
)
_NON_NEGATIVE: Final = frozenset({"amount", *IMPACT_TYPES})
_NAMES: Final = {"records": "RecordsSchema", "customer_records": "CustomerRecordsSchema"}
_FAILURE_COLUMNS: Final = [
    "schema_context", "column", "check", "check_number", "failure_case", "index"
]  # fmt: skip


def _rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def _impact_rows(table: pa.Table, categories: list[str]) -> list[int]:
    """Rows that break "exactly one impact column is set, the one ``impact_type`` names, and it
    equals ``amount``" (as ``RecordsSchema.one_impact_per_row``)."""
    column = table.column("impact_type").unify_dictionaries()
    codes = np.concatenate(
        [np.empty(0, np.int32)]
        + [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in column.chunks]
    )
    amounts = pc.fill_null(table.column("amount"), -1).to_numpy()
    ok = codes >= 0
    for code, name in enumerate(categories):
        is_type = codes == code
        if name not in table.column_names or not pa.types.is_integer(table.schema.field(name).type):
            ok &= ~is_type
            continue
        values = table.column(name)
        ok &= values.is_valid().to_numpy() == is_type
        ok &= ~is_type | (pc.fill_null(values, -1).to_numpy() == amounts)
    return _rows(~ok)


def check_table(table: pa.Table, endpoint: str, metadata: str, metadata_prefix: str) -> pa.Table:
    """Check a table against SPEC §3 as `impactframe.schemas.validate` checks a frame.

    The column set and order, the Arrow types of `ARROW_TYPES` (metadata columns ``string``),
    non-null keys, ``amount >= 0`` and one impact column per row equal to ``amount``.

    Raises
    ------
    ValidationError
        Naming the failing checks, columns and rows; ``.failure_cases`` is a pandas frame shaped
        like pandera's.

    Examples
    --------
    >>> from impactframe._frame._builder import FrameBuilder
    >>> table = FrameBuilder("records", metadata="drop", output="arrow").finish()
    >>> check_table(table, "records", "drop", "metadata_").num_columns
    10
    >>> check_table(table.drop_columns(["amount"]), "records", "drop", "metadata_")
    Traceback (most recent call last):
    ...
    impactframe.errors.ValidationError: the frame does not match RecordsSchema: column_in_dataframe failed in amount (got not in table)
    """  # noqa: E501
    failures: list[tuple[str, str, Any, list[int]]] = []  # column, check, case, rows
    names, schema = table.column_names, table.schema
    if len(set(names)) != len(names):
        failures.append(
            ("", "unique_column_names", sorted({n for n in names if names.count(n) > 1}), [])
        )
    impact = schema.field("impact_type").type if "impact_type" in names else None
    categories: list[str] = []
    if impact == IMPACT_TYPE:
        column = table.column("impact_type").unify_dictionaries()
        categories = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
        categories = categories or list(IMPACT_TYPES)
        if categories[: len(IMPACT_TYPES)] != list(IMPACT_TYPES):
            failures.append(("impact_type", "impact_categories", categories, []))
    new_types = categories[len(IMPACT_TYPES) :]
    fixed = fixed_columns(endpoint)
    head = fixed[:-1] + new_types + fixed[-1:]
    expected = {name: ARROW_TYPES.get(name, pa.int64()) for name in head}
    rest = names[len(head) :]
    if metadata == "columns":
        meta = [c for c in rest if c.startswith(metadata_prefix) and c not in expected]
        expected |= dict.fromkeys(meta, pa.string())
        if rest[: len(meta)] != meta or meta != sorted(meta):
            failures.append(
                (metadata_prefix + "*", "metadata_columns_sorted_after_category", str(meta), [])
            )
    elif metadata == "json":
        expected[METADATA_COLUMN] = pa.string()
        if rest[:1] != [METADATA_COLUMN]:
            failures.append((METADATA_COLUMN, "column_order", f"{rest[:1]} after category", []))
    missing = [name for name in head if name not in names]
    failures += [(name, "column_in_dataframe", "not in table", []) for name in missing]
    for position, name in enumerate(head if not missing else []):
        if names[position] != name:
            failures.append(
                (name, "column_order", f"{names[position]!r} at position {position}", [])
            )
            break
    for name, arrow_type in expected.items():
        if name not in names:
            continue
        column = table.column(name)
        if column.type != arrow_type:
            failures.append((name, f"dtype('{arrow_type}')", str(column.type), []))
            continue
        if name in _NOT_NULL and column.null_count:
            failures.append((name, "not_nullable", None, _rows(column.is_null().to_numpy())))
        if name in _NON_NEGATIVE or name in new_types:
            negative = pc.fill_null(pc.less(column, 0), False).to_numpy()
            if negative.any():
                failures.append((name, "greater_than_or_equal_to(0)", None, _rows(negative)))
    if impact == IMPACT_TYPE and "amount" in names and schema.field("amount").type == pa.int64():
        bad = _impact_rows(table, categories)
        if bad:
            failures.append(("impact_type", "one_impact_per_row", None, bad))
    if failures:
        _raise(_NAMES[endpoint], failures)
    return table


def _raise(name: str, failures: list[tuple[str, str, Any, list[int]]]) -> NoReturn:
    rows: list[tuple[Any, ...]] = []
    parts: list[str] = []
    for column, check, case, where in failures:
        if check == "one_impact_per_row":
            column = ", ".join(["impact_type", "amount"])
        if where:
            more = f" and {len(where) - 5} more" if len(where) > 5 else ""
            parts.append(f"{check} failed in {column} (at rows {where[:5]}{more})")
            rows += [("Column", column, check, None, case, row) for row in where]
        else:
            parts.append(f"{check} failed in {column} (got {case})")
            rows.append(("DataFrameSchema", column, check, None, case, None))
    columns = list(dict.fromkeys(c for f in failures for c in f[0].split(", ") if c))
    if any(f[1] == "one_impact_per_row" for f in failures):
        columns += [c for c in ("amount",) if c not in columns]
    cases = pd.DataFrame(rows, columns=_FAILURE_COLUMNS)
    msg = f"the frame does not match {name}: {'; '.join(parts)}"
    raise ValidationError(msg, field=", ".join(columns) or None, failure_cases=cases)


def table_from_frame(frame: pd.DataFrame) -> pa.Table:
    """The table of a validated frame (the cache's), with the types the builder gives.

    Examples
    --------
    >>> from impactframe._frame._builder import empty_frame
    >>> table_from_frame(empty_frame("records")).schema.field("impact_type").type
    DictionaryType(dictionary<values=string, indices=int32, ordered=0>)
    """
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    for i, field in enumerate(table.schema):
        arrow_type = field.type
        if pa.types.is_dictionary(arrow_type):
            arrow_type = IMPACT_TYPE
        elif pa.types.is_large_string(arrow_type):
            arrow_type = pa.string()
        if arrow_type != field.type:
            table = table.set_column(i, field.name, table.column(i).cast(arrow_type))
    return table


def as_output(table: pa.Table, output: str) -> Any:
    """``table`` as the loaders' ``output=`` asks: itself, or a ``polars.DataFrame``.

    ``impact_type`` becomes a polars ``Categorical``; the rest keep their types.

    Examples
    --------
    >>> as_output(pa.table({"a": [1]}), "arrow").num_rows
    1
    """
    if output == "arrow":
        return table
    import polars as pl  # the optional extra impactframe[polars]; checked by the loaders

    return pl.from_arrow(table, rechunk=False)
