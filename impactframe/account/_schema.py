"""The pandera schema of the daily figures' frame (`load_daily_impact`), and its validation."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import pandas as pd

from .._constants import IMPACT_TYPES
from .._validation import ExactDtype, pandera_without_pyspark
from ..errors import ValidationError

with pandera_without_pyspark():
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors
    from pandera.typing import Series

__all__ = ["AMOUNT_DTYPE", "DATE_DTYPE", "DailyImpactSchema", "validate_daily"]

#: The UTC day, as midnight: the dtype of ``time_utc``, so days and records compare directly.
DATE_DTYPE = pd.DatetimeTZDtype(unit="ms", tz="UTC")
AMOUNT_DTYPE = pd.Int64Dtype()

_Amount = Series[Annotated[ExactDtype, AMOUNT_DTYPE]]


class DailyImpactSchema(pa.DataFrameModel):
    """The frame of :func:`impactframe.load_daily_impact`: one row per UTC day the API reports.

    ``date`` (``datetime64[ms, UTC]``, midnight, unique, ascending), then one ``Int64`` column
    per impact type, never null, ≥ 0: the known types in SPEC §1 order, then any new types the
    API reported (checked by the same rule). Dtypes are checked exactly (``int64`` is not
    ``Int64``); nothing is coerced.

    Examples
    --------
    >>> import pandas as pd
    >>> types = ["tree_planted", "waste_removed", "carbon_captured", "coral_restored",
    ...          "money_donated"]
    >>> frame = pd.DataFrame({
    ...     "date": pd.to_datetime(["2024-05-01"], utc=True).as_unit("ms"),
    ...     **{t: pd.array([1], dtype="Int64") for t in types},
    ... })
    >>> DailyImpactSchema.validate(frame).shape
    (1, 6)
    >>> DailyImpactSchema.date
    'date'
    """

    date: Series[Annotated[ExactDtype, DATE_DTYPE]] = pa.Field(unique=True)
    tree_planted: _Amount = pa.Field(ge=0)
    waste_removed: _Amount = pa.Field(ge=0)
    carbon_captured: _Amount = pa.Field(ge=0)
    coral_restored: _Amount = pa.Field(ge=0)
    money_donated: _Amount = pa.Field(ge=0)

    class Config:
        name = "DailyImpactSchema"
        strict = False  # new impact types add columns (checked below)
        coerce = False
        unique_column_names = True

    @pa.dataframe_check
    @classmethod
    def days_ascending_at_midnight(cls, df: pd.DataFrame) -> bool:
        """Each ``date`` is a UTC midnight, and the rows go up by day."""
        date = df.get("date")
        if date is None or date.dtype != DATE_DTYPE:
            return True  # the column checks report it
        return bool(date.is_monotonic_increasing and (date == date.dt.floor("D")).all())

    @pa.dataframe_check
    @classmethod
    def columns_in_order_new_types_counted(cls, df: pd.DataFrame) -> bool:
        """``date``, the known types, then new types: each ``Int64``, never null, ≥ 0."""
        head = ["date", *IMPACT_TYPES]
        if list(df.columns[: len(head)]) != head:
            return False
        for name in df.columns[len(head) :]:
            column = df[name]
            if not ExactDtype(AMOUNT_DTYPE).check(column.dtype, column):
                return False
            if column.isna().any() or (column < 0).any():
                return False
        return True


@functools.cache
def _schema() -> pa.DataFrameSchema:
    # Built once, on first use; pandera's annotation build would import pyspark.pandas
    with pandera_without_pyspark():
        return DailyImpactSchema.to_schema()


def validate_daily(df: pd.DataFrame) -> pd.DataFrame:
    """Check a daily frame against `DailyImpactSchema`; ``ValidationError`` naming the checks.

    Examples
    --------
    >>> validate_daily(pd.DataFrame({"date": []}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    impactframe.errors.ValidationError: the frame does not match DailyImpactSchema: ...
    """
    try:
        _schema().validate(df, lazy=True, inplace=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        found: dict[str, list[Any]] = {}
        for check, column in zip(cases["check"], cases["column"], strict=True):
            found.setdefault(str(check), [])
            if column not in found[str(check)]:
                found[str(check)].append(column)
        summary = "; ".join(
            f"{check} failed in {', '.join(map(str, columns))}" for check, columns in found.items()
        )
        msg = f"the frame does not match DailyImpactSchema: {summary}"
        columns = sorted({str(c) for c in cases["column"] if c is not None})
        raise ValidationError(msg, field=", ".join(columns) or None, failure_cases=cases) from exc
    return df
