"""pandera schemas of the frames impactframe returns (SPEC §3), and :func:`validate`.

``RecordsSchema`` and ``CustomerRecordsSchema`` state the contract as classes; their class
attributes are column names (``RecordsSchema.time_utc == "time_utc"``). Column dtypes come from
``impactframe._dtypes.DTYPES`` and are checked exactly: pandera on its own accepts ``int64`` for
``Int64`` and ``object`` or ``str`` for ``string``, but a frame with another dtype is a bug that
must fail loudly (``coerce=False``, STYLE §8.10).

:func:`validate` adds what a static class cannot know: the ``pyarrow`` dtypes, a custom metadata
prefix, the ``"dict"``/``"json"`` metadata column, the columns of new impact types, and the column
order; it turns pandera's errors into :class:`impactframe.ValidationError`.

The first call costs what the next ones do (SPEC §14). :func:`validate` does not go through the
classes: ``DataFrameModel.to_schema`` resolves its ``Series[...]`` annotations against every
frame library pandera supports, which imports ``dask.dataframe`` (about 0.9 s) or modin when
they are installed. It builds plain ``DataFrameSchema`` objects with the same columns and
checks (a test pins the equality), once per (endpoint, options). And importing pandera tries
``import pyspark.pandas`` (0.2 s, a ``FutureWarning`` on pandas 3, and environment variables
set for Spark) when pyspark is installed; impactframe never validates pandas-on-Spark frames,
so that attempt is turned away while pandera is first imported
(`impactframe._validation.pandera_without_pyspark`).
"""

import functools
import re
from typing import Annotated, Any, NoReturn

import pandas as pd

from ._constants import DEFAULT_METADATA_PREFIX, IMPACT_TYPES
from ._dtypes import (
    CUSTOMER_COLUMNS,
    DTYPES,
    METADATA_COLUMN,
    METADATA_DTYPES,
    backend_dtype,
    check_options,
    fixed_columns,
    fixed_dtypes,
)
from ._params import reject
from ._validation import ExactDtype, ImpactCategory, pandera_without_pyspark
from .errors import ValidationError

with pandera_without_pyspark():
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors
    from pandera.typing import Series

__all__ = ["CustomerRecordsSchema", "RecordsSchema", "validate"]

_FAILURE_COLUMNS = ["schema_context", "column", "check", "check_number", "failure_case", "index"]


def _impact_consistency(df: pd.DataFrame) -> pd.Series:
    """Per row: exactly one impact column is non-null, it is the one ``impact_type`` names and
    it equals ``amount``. Vectorized: a few numpy passes per impact column."""
    impact_type, amount = df.get("impact_type"), df.get("amount")
    if (
        impact_type is None
        or amount is None
        or not isinstance(impact_type.dtype, pd.CategoricalDtype)
        or not pd.api.types.is_integer_dtype(amount.dtype)
    ):
        # the column checks already report a missing column or a wrong dtype
        return pd.Series(True, index=df.index)
    codes = impact_type.cat.codes.to_numpy()
    amounts = amount.to_numpy(dtype="int64", na_value=-1)
    ok = codes >= 0
    for code, name in enumerate(impact_type.cat.categories):
        is_type = codes == code
        column = df.get(name)
        if column is None or not pd.api.types.is_integer_dtype(column.dtype):
            ok &= ~is_type
            continue
        present = column.notna().to_numpy(dtype=bool)
        ok &= present == is_type
        ok &= ~is_type | (column.to_numpy(dtype="int64", na_value=-1) == amounts)
    return pd.Series(ok, index=df.index)


class RecordsSchema(pa.DataFrameModel):
    """The frame of ``/v1/records`` (SPEC §3).

    Metadata columns (``metadata_<key>``) are optional nullable strings; columns of new impact
    types and drift columns are allowed (``strict=False``). The column order and the dtypes of
    the ``pyarrow`` backend are checked by :func:`validate`.

    Examples
    --------
    >>> RecordsSchema.time_utc
    'time_utc'
    """

    user_id: Series[Annotated[ExactDtype, DTYPES["user_id"]]] = pa.Field()
    time_utc: Series[Annotated[ExactDtype, DTYPES["time_utc"]]] = pa.Field()
    impact_type: Series[ImpactCategory] = pa.Field()
    amount: Series[Annotated[ExactDtype, DTYPES["amount"]]] = pa.Field(ge=0)
    tree_planted: Series[Annotated[ExactDtype, DTYPES["tree_planted"]]] = pa.Field(
        ge=0, nullable=True
    )
    waste_removed: Series[Annotated[ExactDtype, DTYPES["waste_removed"]]] = pa.Field(
        ge=0, nullable=True
    )
    carbon_captured: Series[Annotated[ExactDtype, DTYPES["carbon_captured"]]] = pa.Field(
        ge=0, nullable=True
    )
    coral_restored: Series[Annotated[ExactDtype, DTYPES["coral_restored"]]] = pa.Field(
        ge=0, nullable=True
    )
    money_donated: Series[Annotated[ExactDtype, DTYPES["money_donated"]]] = pa.Field(
        ge=0, nullable=True
    )
    category: Series[Annotated[ExactDtype, DTYPES["category"]]] = pa.Field(nullable=True)
    metadata_columns: Series[Annotated[ExactDtype, METADATA_DTYPES["columns"]]] | None = pa.Field(
        nullable=True, regex=True, alias=r"^metadata_.+"
    )

    class Config:
        name = "RecordsSchema"
        strict = False  # drift columns, new impact types and the metadata modes add columns
        coerce = False  # a dtype bug must fail, not be repaired
        unique_column_names = True

    @pa.dataframe_check
    @classmethod
    def one_impact_per_row(cls, df: pd.DataFrame) -> Series[bool]:
        """Exactly one impact column per row is set; it matches impact_type and equals amount."""
        return _impact_consistency(df)  # type: ignore[return-value]

    @classmethod
    def build_schema_(cls, **kwargs: Any) -> pa.DataFrameSchema:
        """The ``DataFrameSchema`` of this class (pandera calls this once, for ``to_schema``).

        pandera's own build resolves the ``Series[...]`` annotations against every frame library
        it supports, importing dask, modin and pyspark.pandas when installed (about a second,
        and warnings). impactframe's two classes build the same schema from the dtype map
        instead (a test pins the equality); a subclass of yours gets pandera's build.
        """
        endpoint = {model: name for name, model in _MODELS.items()}.get(cls)
        if endpoint is None:
            return super().build_schema_(**kwargs)
        fixed = _fixed_columns(endpoint, "numpy_nullable")
        metadata = pa.Column(
            ExactDtype(METADATA_DTYPES["columns"]),
            nullable=True,
            regex=True,
            required=False,
            name=_METADATA_REGEX,
        )
        # in the order of the class bodies: the subclass's customer columns come last
        columns = {n: c for n, c in fixed.items() if n not in CUSTOMER_COLUMNS}
        columns[_METADATA_REGEX] = metadata
        columns.update((n, c) for n, c in fixed.items() if n in CUSTOMER_COLUMNS)
        return pa.DataFrameSchema(columns, checks=cls.__root_checks__, **kwargs)


class CustomerRecordsSchema(RecordsSchema):
    """The frame of ``/v1/customer_records``: :class:`RecordsSchema` plus the customer.

    Examples
    --------
    >>> CustomerRecordsSchema.customer_email
    'customer_email'
    """

    customer_id: Series[Annotated[ExactDtype, DTYPES["customer_id"]]] = pa.Field()
    customer_email: Series[Annotated[ExactDtype, DTYPES["customer_email"]]] = pa.Field()
    customer_name: Series[Annotated[ExactDtype, DTYPES["customer_name"]]] = pa.Field(nullable=True)

    class Config:
        name = "CustomerRecordsSchema"


_MODELS: dict[str, type[RecordsSchema]] = {
    "records": RecordsSchema,
    "customer_records": CustomerRecordsSchema,
}
_METADATA_REGEX = r"^metadata_.+"
_NULLABLE = frozenset({*IMPACT_TYPES, "category", "customer_name"})
_NON_NEGATIVE = frozenset({"amount", *IMPACT_TYPES})
_ONE_IMPACT_PER_ROW = pa.Check(
    _impact_consistency,
    name="one_impact_per_row",
    description=RecordsSchema.one_impact_per_row.__doc__,
)


def _fixed_columns(endpoint: str, dtype_backend: str) -> dict[str, pa.Column]:
    """The fixed columns as the classes above declare them, with this backend's dtypes.

    In the classes' order: the customer columns after ``category``, as the subclass adds them.
    """
    dtypes = fixed_dtypes(endpoint, dtype_backend)
    order = [n for n in dtypes if n not in CUSTOMER_COLUMNS]
    order += [n for n in dtypes if n in CUSTOMER_COLUMNS]
    return {
        name: pa.Column(
            ImpactCategory() if name == "impact_type" else ExactDtype(dtypes[name]),
            checks=[pa.Check.ge(0)] if name in _NON_NEGATIVE else None,
            nullable=name in _NULLABLE,
            name=name,
        )
        for name in order
    }


@functools.lru_cache(maxsize=64)
def _schema(endpoint: str, dtype_backend: str, metadata: str, prefix: str) -> pa.DataFrameSchema:
    """The model's schema with this backend's dtypes and this metadata layout (cached).

    Built from the dtype map, as ``build_schema_`` is, so that no call ever goes through
    pandera's annotation resolution (see the module docstring).
    """
    columns = _fixed_columns(endpoint, dtype_backend)
    dtype = (
        ExactDtype(backend_dtype(METADATA_DTYPES[metadata], dtype_backend))
        if (metadata != "drop")
        else None
    )
    if metadata == "columns":
        # a custom prefix may start a fixed column's name ("m" and "money_donated"): leave those
        fixed = "|".join(map(re.escape, fixed_columns(endpoint)))
        regex = f"^(?!(?:{fixed})$){re.escape(prefix)}.+"
        columns[regex] = pa.Column(dtype, nullable=True, regex=True, required=False, name=regex)
    elif metadata in ("dict", "json"):
        columns[METADATA_COLUMN] = pa.Column(dtype, nullable=True, name=METADATA_COLUMN)
    return pa.DataFrameSchema(
        columns,
        checks=[_ONE_IMPACT_PER_ROW],
        name=_MODELS[endpoint].__name__,
        strict=False,  # drift columns, new impact types and the metadata modes add columns
        coerce=False,  # a dtype bug must fail, not be repaired
        unique_column_names=True,
    )


def _layout_failures(
    df: pd.DataFrame, endpoint: str, metadata: str, prefix: str, new_types: list[str]
) -> pd.DataFrame:
    """Column-order failures, shaped like pandera's failure cases (empty when in order)."""
    fixed = fixed_columns(endpoint)
    head = fixed[:-1] + new_types + fixed[-1:]  # new impact types go before `category`
    columns = list(df.columns)
    failures = []
    for position, name in enumerate(head):
        actual = columns[position] if position < len(columns) else None
        if actual != name:
            failures.append((name, "column_order", f"{actual!r} at position {position}"))
            break
    rest = columns[len(head) :]
    if metadata == "columns":
        meta = [c for c in rest if isinstance(c, str) and c.startswith(prefix)]
        if rest[: len(meta)] != meta or meta != sorted(meta):
            failures.append((prefix + "*", "metadata_columns_sorted_after_category", str(meta)))
    elif metadata in ("dict", "json") and rest[:1] != [METADATA_COLUMN]:
        actual = repr(rest[0]) if rest else "nothing"
        failures.append((METADATA_COLUMN, "column_order", f"{actual} after category"))
    rows = [("DataFrameSchema", name, check, None, case, None) for name, check, case in failures]
    return pd.DataFrame(rows, columns=_FAILURE_COLUMNS)


def _describe(cases: pd.DataFrame, impact_columns: set[str]) -> tuple[str, str]:
    """A short account of failure cases (check, columns, rows), and the failing columns."""
    parts, failing = [], []
    for check, group in cases.groupby("check", sort=False, dropna=False):
        columns = list(dict.fromkeys(group["column"].astype(str)))
        if check == "one_impact_per_row":  # pandera lists every column of the failing rows
            columns = ["impact_type", "amount", *(c for c in columns if c in impact_columns)]
        failing += [c for c in columns if c not in failing]
        rows = [i for i in dict.fromkeys(group["index"].tolist()) if i is not None and i == i]
        if rows:
            more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
            where = f"at rows {rows[:5]}{more}"
        else:
            where = f"got {', '.join(map(str, dict.fromkeys(group['failure_case'].tolist())))}"
        parts.append(f"{check} failed in {', '.join(columns)} ({where})")
    return "; ".join(parts), ", ".join(failing)


def validate(
    df: pd.DataFrame,
    endpoint: str,
    *,
    dtype_backend: str = "numpy_nullable",
    metadata: str = "columns",
    metadata_prefix: str = DEFAULT_METADATA_PREFIX,
) -> pd.DataFrame:
    """Check a frame against the contract of SPEC §3 and return it unchanged.

    Parameters
    ----------
    df : pandas.DataFrame
        A frame as :class:`impactframe._frame._builder.FrameBuilder` builds it.
    endpoint : {"records", "customer_records"}
        Selects :class:`RecordsSchema` or :class:`CustomerRecordsSchema`.
    dtype_backend : {"numpy_nullable", "pyarrow"}, default "numpy_nullable"
        The dtypes expected.
    metadata : {"columns", "dict", "json", "drop"}, default "columns"
        The metadata layout expected.
    metadata_prefix : str, default "metadata_"
        Prefix of the metadata columns in ``"columns"`` mode.

    Returns
    -------
    pandas.DataFrame
        ``df`` itself.

    Raises
    ------
    ValueError
        A bad argument.
    ValidationError
        The frame breaks the contract. The message names the failing checks, columns and rows;
        ``.failure_cases`` holds pandera's failure cases (plus column-order failures).

    Examples
    --------
    >>> from impactframe._frame._builder import empty_frame
    >>> validate(empty_frame("records"), "records").shape
    (0, 10)
    """
    check_options(
        endpoint=endpoint,
        metadata=metadata,
        metadata_prefix=metadata_prefix,
        dtype_backend=dtype_backend,
    )
    if not isinstance(df, pd.DataFrame):
        reject("df", df, "a pandas DataFrame", shown=f"a value of type {type(df).__name__}")
    schema = _schema(endpoint, dtype_backend, metadata, metadata_prefix)
    impact_type = df.get("impact_type")
    new_types: list[str] = []
    if impact_type is not None and isinstance(impact_type.dtype, pd.CategoricalDtype):
        new_types = [str(c) for c in impact_type.cat.categories[len(IMPACT_TYPES) :]]
    if new_types:
        int_dtype = ExactDtype(backend_dtype(DTYPES["amount"], dtype_backend))
        checks = [pa.Check.ge(0)]
        schema = schema.add_columns(
            {name: pa.Column(int_dtype, checks=checks, nullable=True) for name in new_types}
        )
    layout = _layout_failures(df, endpoint, metadata, metadata_prefix, new_types)
    try:
        # inplace: nothing is coerced (coerce=False), so pandera's defensive deep copy of the
        # whole frame would be pure cost (about half of validate's time on 1M rows).
        schema.validate(df, lazy=True, inplace=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        if len(layout):
            cases = pd.concat([layout, cases], ignore_index=True)
        _raise(schema.name, cases, {*IMPACT_TYPES, *new_types}, exc)
    if len(layout):
        _raise(schema.name, layout, set(), None)
    return df


def _raise(
    name: str | None, cases: pd.DataFrame, impact_columns: set[str], exc: Exception | None
) -> NoReturn:
    summary, columns = _describe(cases, impact_columns)
    msg = f"the frame does not match {name}: {summary}"
    raise ValidationError(msg, field=columns or None, failure_cases=cases) from exc


def _warm_up() -> None:
    """Validate an empty frame once, at import.

    pandera imports its pandas validation backends (and hypothesis, for its data synthesis,
    when installed) on the first validation: about 0.2 s that would land on the user's first
    load. Paid here instead, so the first call costs what the next ones do (SPEC §14).
    """
    empty = pd.DataFrame(
        {name: pd.Series(dtype=dtype) for name, dtype in fixed_dtypes("records").items()}
    )
    with pandera_without_pyspark():
        validate(empty, "records", metadata="drop")


_warm_up()
