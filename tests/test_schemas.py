"""The pandera schemas and validate() (impactframe.schemas, SPEC §3). Pure: no HTTP."""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from pandera.errors import SchemaErrors

from impactframe._constants import IMPACT_TYPES
from impactframe._dtypes import DTYPES, fixed_columns
from impactframe._frame._builder import records_to_frame
from impactframe.errors import SchemaDriftWarning, ValidationError
from impactframe.schemas import CustomerRecordsSchema, RecordsSchema, validate

RECORDS = [
    {
        "user_id": "U1",
        "time_utc": "2024-09-16T20:30:13.391Z",
        "carbon_captured": 5,
        "category": "food",
        "metadata": {"facility": "Portland Plant", "batch": "B-2024-09"},
    },
    {"user_id": "U1", "time_utc": "2024-09-17T13:24:04.429Z", "waste_removed": 15},
    {
        "user_id": "U2",
        "time_utc": "2024-09-17T14:32:01.638Z",
        "tree_planted": 10,
        "metadata": {"order_id": "ORD-456", "source": "shopify"},
    },
]
CUSTOMER_RECORDS = [
    {
        **RECORDS[0],
        "customer": {"customer_id": "C1", "customer_email": "a@x.io", "customer_name": "Ann"},
    },
    {**RECORDS[1], "customer": {"customer_id": "C2", "customer_email": "b@x.io"}},
]


def frame(endpoint: str = "records", **options: Any) -> pd.DataFrame:
    records = RECORDS if endpoint == "records" else CUSTOMER_RECORDS
    return records_to_frame(records, endpoint, **options)


def rejects(df: pd.DataFrame, endpoint: str = "records", **options: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        validate(df, endpoint, **options)
    error = caught.value
    assert isinstance(error.failure_cases, pd.DataFrame)
    assert len(error.failure_cases) > 0
    return error


def failing(error: ValidationError) -> set[tuple[str, str]]:
    cases = error.failure_cases
    return set(zip(cases["column"].astype(str), cases["check"].astype(str), strict=True))


# ---------------------------------------------------------------------------------------------
# What the schemas state


def test_class_attributes_are_column_names() -> None:
    assert RecordsSchema.time_utc == "time_utc"
    assert RecordsSchema.impact_type == "impact_type"
    assert RecordsSchema.amount == "amount"
    for name in fixed_columns("records"):
        assert getattr(RecordsSchema, name) == name
    for name in fixed_columns("customer_records"):
        assert getattr(CustomerRecordsSchema, name) == name
    assert RecordsSchema.metadata_columns == r"^metadata_.+"


@pytest.mark.parametrize(
    ("model", "endpoint"),
    [(RecordsSchema, "records"), (CustomerRecordsSchema, "customer_records")],
)
def test_schema_dtypes_are_those_of_DTYPES(model: Any, endpoint: str) -> None:
    schema = model.to_schema()
    columns = schema.columns
    assert set(fixed_columns(endpoint)) <= set(columns)
    for name in fixed_columns(endpoint):
        assert columns[name].dtype.type == DTYPES[name], name
    assert not columns["user_id"].nullable
    assert not columns["amount"].nullable
    assert columns["category"].nullable
    assert all(columns[name].nullable for name in IMPACT_TYPES)
    if endpoint == "customer_records":
        assert not columns["customer_id"].nullable
        assert not columns["customer_email"].nullable
        assert columns["customer_name"].nullable
    assert (schema.strict, schema.coerce, schema.unique_column_names) == (False, False, True)
    assert schema.name == model.__name__


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
@pytest.mark.parametrize("metadata", ["columns", "dict", "json", "drop"])
@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_builder_frames_validate(endpoint: str, metadata: str, backend: str) -> None:
    df = frame(endpoint, metadata=metadata, dtype_backend=backend)
    assert validate(df, endpoint, dtype_backend=backend, metadata=metadata) is df


def test_the_model_validates_a_default_frame_by_itself() -> None:
    df = frame()
    pd.testing.assert_frame_equal(RecordsSchema.validate(df, lazy=True), df)
    cdf = frame("customer_records")
    pd.testing.assert_frame_equal(CustomerRecordsSchema.validate(cdf, lazy=True), cdf)


# ---------------------------------------------------------------------------------------------
# What they reject


def test_two_impact_values_in_a_row() -> None:
    df = frame()
    df.loc[1, "tree_planted"] = 15
    error = rejects(df)
    assert set(
        error.failure_cases.loc[error.failure_cases["check"] == "one_impact_per_row", "index"]
    ) == {1}
    assert "one_impact_per_row" in str(error)
    assert "rows [1]" in str(error)
    assert isinstance(error.__cause__, SchemaErrors)


def test_an_amount_that_differs_from_its_impact_column() -> None:
    df = frame()
    df.loc[2, "amount"] = 11
    error = rejects(df)
    assert "one_impact_per_row" in str(error)
    assert "rows [2]" in str(error)


def test_an_impact_type_that_names_the_wrong_column() -> None:
    df = frame()
    df.loc[0, "impact_type"] = "tree_planted"  # the value sits in carbon_captured
    assert "rows [0]" in str(rejects(df))


def test_a_row_without_any_impact_value() -> None:
    df = frame()
    df.loc[0, "carbon_captured"] = pd.NA
    assert "one_impact_per_row" in str(rejects(df))


def test_a_negative_amount() -> None:
    df = frame()
    df.loc[1, ["amount", "waste_removed"]] = -15
    error = rejects(df)
    assert ("amount", "greater_than_or_equal_to(0)") in failing(error)
    assert ("waste_removed", "greater_than_or_equal_to(0)") in failing(error)
    assert "amount" in error.field
    assert "rows [1]" in str(error)


def test_a_null_user_id_and_customer_id() -> None:
    df = frame()
    df.loc[0, "user_id"] = pd.NA
    error = rejects(df)
    assert ("user_id", "not_nullable") in failing(error)
    assert error.field == "user_id"
    cdf = frame("customer_records")
    cdf.loc[1, "customer_id"] = pd.NA
    assert ("customer_id", "not_nullable") in failing(rejects(cdf, "customer_records"))
    cdf = frame("customer_records")
    cdf.loc[0, "customer_name"] = pd.NA  # names may be missing
    validate(cdf, "customer_records")


def test_failures_are_collected_lazily() -> None:
    df = frame()
    df.loc[0, "user_id"] = pd.NA
    df.loc[1, ["amount", "waste_removed"]] = -15
    error = rejects(df)
    columns = {column for column, _ in failing(error)}
    assert {"user_id", "amount", "waste_removed"} <= columns
    assert "user_id" in error.field
    assert "amount" in error.field


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("amount", lambda s: s.astype("int64")),
        ("tree_planted", lambda s: s.astype("float64")),
        ("user_id", lambda s: s.astype(object)),
        ("user_id", lambda s: s.astype("str")),
        ("category", lambda s: s.astype(pd.StringDtype("python"))),
        ("time_utc", lambda s: s.dt.as_unit("ns")),
        ("time_utc", lambda s: s.dt.tz_convert("Europe/Paris")),
        ("time_utc", lambda s: s.dt.tz_localize(None)),
        ("impact_type", lambda s: s.astype("string")),
        ("impact_type", lambda s: s.cat.reorder_categories(list(reversed(IMPACT_TYPES)))),
        ("impact_type", lambda s: s.cat.as_ordered()),
        ("metadata_batch", lambda s: s.astype(object)),
        ("amount", lambda s: s.astype(pd.ArrowDtype(pa.int64()))),
    ],
)
def test_wrong_dtypes_are_not_coerced(column: str, values: Any) -> None:
    df = frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some casts warn about precision; not what we test
        df[column] = values(df[column])
    error = rejects(df)
    assert column in {c for c, _ in failing(error)}
    assert column in str(error)


def test_a_frame_of_the_other_backend_is_rejected() -> None:
    arrow = frame(dtype_backend="pyarrow")
    error = rejects(arrow)
    assert {"user_id", "time_utc", "amount"} <= {c for c, _ in failing(error)}
    rejects(frame(), dtype_backend="pyarrow")


def test_a_missing_known_impact_column() -> None:
    df = frame().drop(columns="coral_restored")
    error = rejects(df)
    assert "coral_restored" in {c for c, _ in failing(error)}


def test_the_column_order_is_checked() -> None:
    df = frame()
    columns = list(df.columns)
    columns[1], columns[2] = columns[2], columns[1]
    error = rejects(df[columns])
    assert ("time_utc", "column_order") in failing(error)
    meta = [c for c in df.columns if c.startswith("metadata_")]
    error = rejects(df[[*fixed_columns("records"), *reversed(meta)]])
    assert "metadata_columns_sorted_after_category" in str(error)
    error = rejects(frame(metadata="json").drop(columns="metadata"), metadata="json")
    assert "metadata" in {c for c, _ in failing(error)}


def test_metadata_columns_must_be_strings_under_a_custom_prefix_too() -> None:
    df = frame(metadata_prefix="meta.")
    assert validate(df, "records", metadata_prefix="meta.") is df
    df["meta.batch"] = df["meta.batch"].astype(object)
    assert "meta.batch" in str(rejects(df, metadata_prefix="meta."))


def test_json_and_dict_metadata_columns_are_checked() -> None:
    df = frame(metadata="json")
    df["metadata"] = df["metadata"].astype(object)
    assert "metadata" in str(rejects(df, metadata="json"))
    dict_frame = frame(metadata="dict")
    dict_frame["metadata"] = dict_frame["metadata"].astype("string")
    rejects(dict_frame, metadata="dict")


def test_new_impact_type_columns_are_checked() -> None:
    records = [*RECORDS, {"user_id": "U3", "time_utc": "2025-01-01T00:00:00Z", "kelp": 4}]
    with pytest.warns(SchemaDriftWarning):
        df = records_to_frame(records)
    assert validate(df, "records") is df
    negative = df.copy()
    negative.loc[3, ["kelp", "amount"]] = -4
    assert ("kelp", "greater_than_or_equal_to(0)") in failing(rejects(negative))
    floats = df.copy()
    floats["kelp"] = floats["kelp"].astype("Float64")
    assert "kelp" in {c for c, _ in failing(rejects(floats))}
    missing = df.drop(columns="kelp")
    assert "kelp" in {c for c, _ in failing(rejects(missing))}


def test_validate_arguments() -> None:
    df = frame()
    with pytest.raises(
        ValueError, match=r"^endpoint: 'user_records' .* one of 'records', 'customer_records'$"
    ):
        validate(df, "user_records")
    with pytest.raises(
        ValueError, match=r"^dtype_backend: 'numpy' .* one of 'numpy_nullable', 'pyarrow'$"
    ):
        validate(df, "records", dtype_backend="numpy")
    with pytest.raises(ValueError, match="metadata_prefix"):
        validate(df, "records", metadata_prefix="")
    with pytest.raises(ValueError, match=r"^df: .* is not accepted; expected a pandas DataFrame$"):
        validate(df.to_dict(), "records")  # type: ignore[arg-type]
