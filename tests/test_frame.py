"""Records to a typed DataFrame (impactframe._frame._builder, SPEC §3). Pure: no HTTP."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from impactframe._constants import IMPACT_TYPES
from impactframe._dtypes import DTYPES, METADATA_DTYPES, backend_dtype, fixed_columns, fixed_dtypes
from impactframe._frame._builder import FrameBuilder, empty_frame, records_to_frame
from impactframe.errors import DuplicateRecordWarning, SchemaDriftWarning, ValidationError
from impactframe.schemas import RecordsSchema, validate

ENDPOINTS = ("records", "customer_records")
BACKENDS = ("numpy_nullable", "pyarrow")

# The documented example responses (../shared/reference/records-api.txt), without the "{...}".
DOC_USER_RECORDS: list[dict[str, Any]] = [
    {
        "user_id": "U123",
        "time_utc": "2024-09-16T20:30:13.391Z",
        "carbon_captured": 5,
        "metadata": {"facility": "Portland Plant", "batch": "B-2024-09"},
    },
    {"user_id": "U123", "time_utc": "2024-09-17T13:24:04.429Z", "waste_removed": 15},
    {
        "user_id": "U123",
        "time_utc": "2024-09-17T14:32:01.638Z",
        "tree_planted": 10,
        "metadata": {"order_id": "ORD-456", "source": "shopify"},
    },
]
DOC_CUSTOMER_RECORDS: list[dict[str, Any]] = [
    {
        "user_id": "U123",
        "customer": {
            "customer_id": "U1234",
            "customer_email": "sample-customer-1@email.com",
            "customer_name": "Sample Customer 1",
        },
        "time_utc": "2024-06-12T15:22:14.753Z",
        "waste_removed": 40,
        "metadata": {"cleanup_site": "Pacific Coast", "event": "World Ocean Day 2024"},
    },
    {
        "user_id": "U123",
        "customer": {
            "customer_id": "U789",
            "customer_email": "sample-customer-2@email.com",
            "customer_name": "Sample Customer 2",
        },
        "time_utc": "2024-06-15T16:41:58.323Z",
        "carbon_captured": 50,
    },
    {
        "user_id": "U123",
        "customer": {
            "customer_id": "U5678",
            "customer_email": "sample-customer-3@email.com",
            "customer_name": "Sample Customer 3",
        },
        "time_utc": "2024-06-21T18:16:02.083Z",
        "tree_planted": 10,
        "metadata": {"order_id": "ORD-789", "source": "shopify"},
    },
    {
        "user_id": "U123",
        "customer": {
            "customer_id": "U3456",
            "customer_email": "sample-customer-4@email.com",
            "customer_name": "Sample Customer 4",
        },
        "time_utc": "2024-06-21T20:34:35.913Z",
        "money_donated": 1000,
    },
]
DOCS = {"records": DOC_USER_RECORDS, "customer_records": DOC_CUSTOMER_RECORDS}
CUSTOMER = {"customer_id": "C1", "customer_email": "c1@example.com", "customer_name": "Cee One"}


def record(endpoint: str = "records", **fields: Any) -> dict[str, Any]:
    """A valid record; ``fields`` override or add (a value of ``...`` removes the field)."""
    rec: dict[str, Any] = {"user_id": "U1", "time_utc": "2024-09-16T20:30:13.391Z"}
    if endpoint == "customer_records":
        rec["customer"] = dict(CUSTOMER)
    if not any(name in fields for name in IMPACT_TYPES):
        rec["tree_planted"] = 3
    rec.update(fields)
    return {k: v for k, v in rec.items() if v is not ...}


def times(n: int, start: str = "2024-01-01T00:00:00.000Z") -> list[str]:
    first = datetime.fromisoformat(start)
    return [
        (first + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for i in range(n)
    ]


def ms_utc(*texts: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(texts), utc=True).as_unit("ms"))


def assert_spec_table(
    df: pd.DataFrame,
    endpoint: str,
    backend: str = "numpy_nullable",
    prefix: str = "metadata_",
    metadata: str = "columns",
) -> None:
    """Every rule of SPEC §3's table, for one frame."""
    fixed = fixed_dtypes(endpoint, backend)
    categories = list(df["impact_type"].cat.categories)
    new_types = categories[len(IMPACT_TYPES) :]
    head = [c for c in fixed if c != "category"] + new_types + ["category"]
    assert list(df.columns[: len(head)]) == head
    assert isinstance(df.index, pd.RangeIndex)
    assert df.index.equals(pd.RangeIndex(len(df)))
    for name, dtype in fixed.items():
        if name != "impact_type":
            assert df[name].dtype == dtype, name
    assert isinstance(df["impact_type"].dtype, pd.CategoricalDtype)
    assert not df["impact_type"].cat.ordered
    assert categories[: len(IMPACT_TYPES)] == list(IMPACT_TYPES)
    for name in new_types:
        assert df[name].dtype == backend_dtype(pd.Int64Dtype(), backend)
    never_null = ["user_id", "time_utc", "impact_type", "amount"]
    if endpoint == "customer_records":
        never_null.append("customer_id")
    assert not df[never_null].isna().any().any()
    assert (df["amount"] >= 0).all()
    set_per_row = df[categories].notna().sum(axis=1)
    assert (set_per_row == 1).all()
    for name in categories:
        rows = (df["impact_type"] == name).to_numpy(dtype=bool)
        assert df[name].notna().to_numpy(dtype=bool)[rows].all()
        assert (df.loc[rows, name] == df.loc[rows, "amount"]).all()
    rest = list(df.columns[len(head) :])
    if metadata == "columns":
        meta = [c for c in rest if c.startswith(prefix)]
        assert rest[: len(meta)] == meta
        assert meta == sorted(meta)
        for name in meta:
            assert df[name].dtype == backend_dtype(METADATA_DTYPES["columns"], backend)
    elif metadata in ("dict", "json"):
        assert rest[0] == "metadata"
        assert df["metadata"].dtype == backend_dtype(METADATA_DTYPES[metadata], backend)


# ---------------------------------------------------------------------------------------------
# The documented examples and SPEC §3's table


def test_documented_records_example() -> None:
    df = records_to_frame(DOC_USER_RECORDS)
    na = None
    expected = pd.DataFrame(
        {
            "user_id": pd.array(["U123"] * 3, dtype="string"),
            "time_utc": ms_utc(
                "2024-09-16T20:30:13.391Z", "2024-09-17T13:24:04.429Z", "2024-09-17T14:32:01.638Z"
            ),
            "impact_type": pd.Categorical(
                ["carbon_captured", "waste_removed", "tree_planted"], categories=IMPACT_TYPES
            ),
            "amount": pd.array([5, 15, 10], dtype="Int64"),
            "tree_planted": pd.array([na, na, 10], dtype="Int64"),
            "waste_removed": pd.array([na, 15, na], dtype="Int64"),
            "carbon_captured": pd.array([5, na, na], dtype="Int64"),
            "coral_restored": pd.array([na, na, na], dtype="Int64"),
            "money_donated": pd.array([na, na, na], dtype="Int64"),
            "category": pd.array([na, na, na], dtype="string"),
            "metadata_batch": pd.array(["B-2024-09", na, na], dtype="string"),
            "metadata_facility": pd.array(["Portland Plant", na, na], dtype="string"),
            "metadata_order_id": pd.array([na, na, "ORD-456"], dtype="string"),
            "metadata_source": pd.array([na, na, "shopify"], dtype="string"),
        }
    )
    assert_frame_equal(df, expected)


def test_documented_customer_records_example() -> None:
    df = records_to_frame(DOC_CUSTOMER_RECORDS, "customer_records")
    assert list(df.columns) == [
        *fixed_columns("customer_records"),
        "metadata_cleanup_site",
        "metadata_event",
        "metadata_order_id",
        "metadata_source",
    ]
    assert df["customer_id"].tolist() == ["U1234", "U789", "U5678", "U3456"]
    assert df["customer_email"].tolist()[1] == "sample-customer-2@email.com"
    assert df["customer_name"].tolist()[3] == "Sample Customer 4"
    assert df["impact_type"].tolist() == [
        "waste_removed",
        "carbon_captured",
        "tree_planted",
        "money_donated",
    ]
    assert df["amount"].tolist() == [40, 50, 10, 1000]
    assert df["money_donated"].tolist() == [pd.NA, pd.NA, pd.NA, 1000]
    assert df["metadata_event"].tolist() == ["World Ocean Day 2024", pd.NA, pd.NA, pd.NA]
    assert df["time_utc"].iloc[0] == pd.Timestamp("2024-06-12T15:22:14.753Z")
    assert_spec_table(df, "customer_records")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_spec_table_holds_for_both_endpoints_and_backends(endpoint: str, backend: str) -> None:
    records = [
        *DOCS[endpoint],
        record(
            endpoint,
            category="food",
            time_utc="2025-01-01T00:00:00Z",
            coral_restored=7,
            tree_planted=...,
        ),
    ]
    df = records_to_frame(records, endpoint, dtype_backend=backend)
    assert_spec_table(df, endpoint, backend)
    assert len(df) == len(records)
    assert df["category"].tolist()[-1] == "food"
    assert df["coral_restored"].tolist()[-1] == 7
    assert df["time_utc"].iloc[-1] == pd.Timestamp("2025-01-01T00:00:00Z")


def test_pyarrow_backend_uses_arrow_dtypes_but_a_pandas_category() -> None:
    df = records_to_frame(DOC_USER_RECORDS, dtype_backend="pyarrow")
    assert df["user_id"].dtype == pd.ArrowDtype(pa.string())
    assert df["time_utc"].dtype == pd.ArrowDtype(pa.timestamp("ms", tz="UTC"))
    assert df["amount"].dtype == pd.ArrowDtype(pa.int64())
    assert df["metadata_source"].dtype == pd.ArrowDtype(pa.string())
    assert isinstance(df["impact_type"].dtype, pd.CategoricalDtype)
    assert df.groupby("impact_type", observed=False)["amount"].sum().to_dict() == {
        "tree_planted": 10,
        "waste_removed": 15,
        "carbon_captured": 5,
        "coral_restored": 0,
        "money_donated": 0,
    }
    # same values as the default backend
    default = records_to_frame(DOC_USER_RECORDS)
    assert df.astype(object).where(df.notna(), None).values.tolist() == (
        default.astype(object).where(default.notna(), None).values.tolist()
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_empty_frame_carries_exactly_the_dtypes_of_DTYPES(endpoint: str) -> None:
    df = empty_frame(endpoint)
    assert len(df) == 0
    assert list(df.columns) == fixed_columns(endpoint)
    assert df.dtypes.to_dict() == {name: DTYPES[name] for name in fixed_columns(endpoint)}
    assert list(df["impact_type"].cat.categories) == list(IMPACT_TYPES)
    assert isinstance(df.index, pd.RangeIndex)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metadata", ["columns", "dict", "json", "drop"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_empty_frames_in_every_mode(endpoint: str, metadata: str, backend: str) -> None:
    df = empty_frame(endpoint, metadata=metadata, dtype_backend=backend)
    expected = fixed_dtypes(endpoint, backend)
    if metadata in ("dict", "json"):
        expected["metadata"] = backend_dtype(METADATA_DTYPES[metadata], backend)
    assert df.dtypes.to_dict() == expected
    assert_frame_equal(records_to_frame([], endpoint, metadata=metadata, dtype_backend=backend), df)


def test_rows_keep_the_order_they_were_added_in() -> None:
    stamps = times(5)
    records = [record(time_utc=stamps[i], user_id=f"U{i}") for i in (3, 0, 4, 1, 2)]
    df = records_to_frame(records)
    assert df["user_id"].tolist() == ["U3", "U0", "U4", "U1", "U2"]
    assert df.index.equals(pd.RangeIndex(5))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-09-16T20:30:13.391Z", "2024-09-16T20:30:13.391Z"),
        ("2024-09-16T20:30:13Z", "2024-09-16T20:30:13.000Z"),
        ("2024-09-16T20:30:13.3Z", "2024-09-16T20:30:13.300Z"),
        ("2024-09-16T20:30:13.391000000Z", "2024-09-16T20:30:13.391Z"),
        ("2024-09-16T20:30:13.391+00:00", "2024-09-16T20:30:13.391Z"),
        ("2024-02-29T23:59:59.999Z", "2024-02-29T23:59:59.999Z"),
    ],
)
def test_accepted_timestamps_parse_to_the_exact_millisecond(text: str, expected: str) -> None:
    df = records_to_frame([record(time_utc=text)])
    assert df["time_utc"].iloc[0] == pd.Timestamp(expected)
    assert df["time_utc"].dtype == DTYPES["time_utc"]


# ---------------------------------------------------------------------------------------------
# Metadata


def test_metadata_columns_are_sorted_by_code_point_with_keys_verbatim() -> None:
    keys = ["b", "a", "Z", "é", "ä", "10", "2", "with space", "日本", "a.b"]
    df = records_to_frame([record(metadata={key: f"v-{key}" for key in keys})])
    meta = [c for c in df.columns if c.startswith("metadata_")]
    assert meta == ["metadata_" + key for key in sorted(keys)]
    assert meta[:4] == ["metadata_10", "metadata_2", "metadata_Z", "metadata_a"]
    assert df["metadata_with space"].iloc[0] == "v-with space"
    assert df["metadata_日本"].iloc[0] == "v-日本"
    assert df["metadata_a.b"].iloc[0] == "v-a.b"


def test_metadata_nested_non_string_null_and_empty() -> None:
    meta = {
        "a": {"b": "x", "c": {"d": 1}},
        "n": 5,
        "f": 1.5,
        "t": True,
        "l": [1, "two", None],
        "z": None,
        "e": {},
        "s": "5",
        "u": "日本",
    }
    df = records_to_frame([record(metadata=meta), record(time_utc="2024-09-16T20:30:14Z")])
    row = {c[len("metadata_") :]: df[c].iloc[0] for c in df.columns if c.startswith("metadata_")}
    assert row == {
        "a.b": "x",
        "a.c.d": "1",
        "n": "5",
        "f": "1.5",
        "t": "true",
        "l": '[1,"two",null]',
        "z": pd.NA,
        "e": "{}",
        "s": "5",
        "u": "日本",
    }
    assert df.filter(like="metadata_").iloc[1].isna().all()
    assert_spec_table(df, "records")


def test_metadata_that_is_null_or_empty_adds_no_columns() -> None:
    df = records_to_frame(
        [record(metadata=None), record(time_utc="2024-09-16T20:30:14Z", metadata={})]
    )
    assert list(df.columns) == fixed_columns("records")


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_dict_mode(backend: str) -> None:
    nested = {"a": {"b": 1}, "tags": ["x"]}
    records = [
        record(metadata=nested),
        record(time_utc="2024-09-16T20:30:14Z"),
        record(time_utc="2024-09-16T20:30:15Z", metadata={}),
    ]
    df = records_to_frame(records, metadata="dict", dtype_backend=backend)
    assert df.columns[-1] == "metadata"
    assert df["metadata"].dtype == np.dtype(object)
    assert df["metadata"].iloc[0] == nested
    assert df["metadata"].iloc[1] is None
    assert df["metadata"].iloc[2] == {}
    assert not any(c.startswith("metadata_") for c in df.columns)
    assert_spec_table(df, "records", backend, metadata="dict")


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_json_mode(backend: str) -> None:
    meta = {"ü": "é", "n": 5, "nested": {"x": [1, None]}}
    records = [record(metadata=meta), record(time_utc="2024-09-16T20:30:14Z")]
    df = records_to_frame(records, metadata="json", dtype_backend=backend)
    # compact, the top-level keys sorted by code point (the same text on the Arrow path)
    assert df["metadata"].iloc[0] == '{"n":5,"nested":{"x":[1,null]},"ü":"é"}'
    assert json.loads(df["metadata"].iloc[0]) == meta
    assert pd.isna(df["metadata"].iloc[1])
    assert_spec_table(df, "records", backend, metadata="json")


def test_metadata_drop_mode() -> None:
    df = records_to_frame(DOC_USER_RECORDS, metadata="drop")
    assert list(df.columns) == fixed_columns("records")


def test_custom_metadata_prefix() -> None:
    df = records_to_frame(DOC_USER_RECORDS, metadata_prefix="meta.")
    assert [c for c in df.columns if c.startswith("meta.")] == [
        "meta.batch",
        "meta.facility",
        "meta.order_id",
        "meta.source",
    ]
    assert df["meta.source"].iloc[2] == "shopify"
    assert not any(c.startswith("metadata_") for c in df.columns)
    assert_spec_table(df, "records", prefix="meta.")


def test_a_prefix_that_begins_a_fixed_column_name_still_validates() -> None:
    # "m" also begins "money_donated": that column must not be taken for metadata
    df = records_to_frame(
        [record(metadata={"x": "1"}, money_donated=5, tree_planted=...)], metadata_prefix="m"
    )
    assert df["mx"].iloc[0] == "1"
    assert df["money_donated"].iloc[0] == 5


def test_missing_customer_names() -> None:
    records = [
        record("customer_records", customer={"customer_id": "A", "customer_email": "a@x.io"}),
        record(
            "customer_records",
            time_utc="2024-09-16T20:30:14Z",
            customer={"customer_id": "B", "customer_email": "b@x.io", "customer_name": None},
        ),
        record("customer_records", time_utc="2024-09-16T20:30:15Z"),
    ]
    df = records_to_frame(records, "customer_records")
    assert df["customer_name"].tolist() == [pd.NA, pd.NA, "Cee One"]
    assert df["customer_id"].tolist() == ["A", "B", "C1"]
    assert_spec_table(df, "customer_records")


# ---------------------------------------------------------------------------------------------
# Validation errors: never coerced, never skipped

BAD_RECORDS: list[tuple[str, Any, str, str]] = [
    # (endpoint, record, field, words the message must hold)
    ("records", 7, "user_records", "must hold JSON objects"),
    ("records", record(user_id=...), "user_id", "is missing"),
    ("records", record(user_id=5), "user_id", "must be a string"),
    ("records", record(time_utc=...), "time_utc", "is missing"),
    ("records", record(time_utc=1726518613391), "time_utc", "must be a timestamp string"),
    ("records", record(time_utc="2024-09-16 20:30:13"), "time_utc", "ISO 8601"),
    ("records", record(time_utc="2024-09-16T20:30:13.391"), "time_utc", "ISO 8601"),
    ("records", record(time_utc="2024-09-16T20:30:13+01:00"), "time_utc", "ISO 8601"),
    ("records", record(time_utc="2024-09-16"), "time_utc", "ISO 8601"),
    ("records", record(time_utc="yesterday"), "time_utc", "ISO 8601"),
    ("records", record(time_utc="2024-09-16T20:30:13.3914Z"), "time_utc", "sub-millisecond"),
    ("records", record(time_utc="2024-09-16T20:30:13.391000001Z"), "time_utc", "sub-millisecond"),
    ("records", record(time_utc="2023-02-29T00:00:00Z"), "time_utc", "not a real date"),
    ("records", record(time_utc="2024-09-16T24:00:00Z"), "time_utc", "not a real date"),
    ("records", record(time_utc="2024-13-01T00:00:00Z"), "time_utc", "not a real date"),
    ("records", record(time_utc="0000-01-01T00:00:00Z"), "time_utc", "not a real date"),
    ("records", record(tree_planted=5.0), "tree_planted", "got float 5.0"),
    ("records", record(tree_planted=2.5), "tree_planted", "got float 2.5"),
    ("records", record(tree_planted="5"), "tree_planted", "got str '5'"),
    ("records", record(tree_planted=True), "tree_planted", "got bool True"),
    ("records", record(tree_planted=None), "tree_planted", "got NoneType"),
    ("records", record(waste_removed=-1), "waste_removed", "non-negative"),
    ("records", record(money_donated=2**63), "money_donated", "64-bit"),
    ("records", record(tree_planted=1, waste_removed=2), "waste_removed", "second impact field"),
    ("records", record(tree_planted=...), "impact_type", "none of the impact fields"),
    ("records", record(category=5), "category", "must be a string or null"),
    ("records", record(metadata="a=b"), "metadata", "must be an object or null"),
    ("records", record(metadata=["a"]), "metadata", "must be an object or null"),
    ("records", record(metadata={"a.b": "1", "a": {"b": "2"}}), "metadata", "'a.b'"),
    ("records", record(metadata={"a": {"b": "2"}, "a.b": "1"}), "metadata", "'a.b'"),
    ("records", record(metadata={"a": {"b.c": "1", "b": {"c": "2"}}}), "metadata", "'a.b.c'"),
    ("records", record(metadata={1: "x"}), "metadata", "not a string"),
    ("records", record(x={1, 2}), "x", "JSON cannot represent"),
    ("records", {**record(), 1: "one"}, "user_records", "field name that is not a string"),
    (
        "customer_records",
        record("customer_records", customer={**CUSTOMER, 2: "x"}),
        "customer",
        "field name that is not a string",
    ),
    (
        "customer_records",
        record("customer_records", customer={**CUSTOMER, "tags": {"a"}}),
        "tags",
        "JSON cannot represent",
    ),
    ("customer_records", record("customer_records", customer=...), "customer", "is missing"),
    ("customer_records", record("customer_records", customer=None), "customer", "an object"),
    ("customer_records", record("customer_records", customer="C1"), "customer", "an object"),
    (
        "customer_records",
        record("customer_records", customer={"customer_email": "a@x"}),
        "customer_id",
        "is missing",
    ),
    (
        "customer_records",
        record("customer_records", customer={**CUSTOMER, "customer_id": 1}),
        "customer_id",
        "must be a string",
    ),
    (
        "customer_records",
        record("customer_records", customer={"customer_id": "C"}),
        "customer_email",
        "is missing",
    ),
    (
        "customer_records",
        record("customer_records", customer={**CUSTOMER, "customer_email": None}),
        "customer_email",
        "must be a string",
    ),
    (
        "customer_records",
        record("customer_records", customer={**CUSTOMER, "customer_name": 3}),
        "customer_name",
        "must be a string",
    ),
]


@pytest.mark.parametrize(("endpoint", "bad", "field", "words"), BAD_RECORDS)
def test_a_bad_known_field_raises_naming_field_and_record(
    endpoint: str, bad: Any, field: str, words: str
) -> None:
    good = record(endpoint, user_id="U0", time_utc="2024-01-01T00:00:00.000Z")
    with pytest.raises(ValidationError) as caught:
        records_to_frame([good, bad], endpoint)
    error = caught.value
    assert error.field == field
    message = str(error)
    assert field in message
    assert words in message
    assert "record 1 of the page (record 1 overall" in message
    if isinstance(bad, dict) and isinstance(bad.get("user_id"), str):
        assert f"user_id={bad['user_id']!r}" in message
    assert error.record is bad


@pytest.mark.parametrize("records", ["[]", {"user_records": []}, None, (record(),)])
def test_records_that_are_not_a_list(records: Any) -> None:
    with pytest.raises(ValidationError, match="user_records must be a list") as caught:
        FrameBuilder("records").add(records)
    assert caught.value.field == "user_records"
    with pytest.raises(ValidationError, match="customer_records must be a list"):
        FrameBuilder("customer_records").add(records)


def test_the_message_counts_records_across_pages() -> None:
    builder = FrameBuilder("records")
    builder.add([record(time_utc=t) for t in times(3)])
    with pytest.raises(ValidationError, match=r"record 1 of the page \(record 4 overall"):
        builder.add([record(time_utc="2025-01-01T00:00:00Z"), record(category=1)])


def test_an_earlier_bad_timestamp_is_reported_before_a_later_bad_field() -> None:
    with pytest.raises(ValidationError) as caught:
        records_to_frame([record(time_utc="2024-09-16"), record(user_id=None)])
    assert caught.value.field == "time_utc"
    assert "record 0 of the page" in str(caught.value)


def test_a_rejected_page_changes_nothing() -> None:
    builder = FrameBuilder("records")
    good = [record(time_utc=t, metadata={"k": t}) for t in times(3)]
    assert builder.add(good) == 3
    bad_page = [
        record(time_utc="2025-01-01T00:00:00Z", metadata={"new": "x"}, extra_field=1),
        record(time_utc="2025-01-01T00:00:01Z", tree_planted=-5),
    ]
    with pytest.raises(ValidationError):
        builder.add(bad_page)
    assert len(builder) == 3
    assert_frame_equal(builder.finish(), records_to_frame(good))


def test_a_lone_surrogate_is_a_validation_error_not_a_crash() -> None:
    with pytest.raises(ValidationError, match="lone surrogate") as caught:
        records_to_frame([record(), record(time_utc="2025-01-01T00:00:00Z", category="a\ud800")])
    assert caught.value.field == "category"
    assert "record 1 overall" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Schema drift


def drift_messages(caught: Any) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, SchemaDriftWarning)]


def test_unknown_fields_become_typed_columns_with_one_warning_each() -> None:
    stamps = times(4)
    records = [
        record(time_utc=stamps[0], note="a", count=1, score=1, blob={"k": [1]}, flag=True),
        record(time_utc=stamps[1], note="b", count=2, score=2.5, blob=[1, 2], flag=False),
        record(time_utc=stamps[2], note=None, count=None, score=None, mixed="x", nothing=None),
        record(time_utc=stamps[3], mixed=3),
    ]
    with pytest.warns(SchemaDriftWarning) as caught:
        df = records_to_frame(records)
    messages = drift_messages(caught)
    names = ["note", "count", "score", "blob", "flag", "mixed", "nothing"]
    assert len(messages) == len(names)
    for name, message in zip(names, messages, strict=True):
        assert f"unknown field {name!r}" in message
    assert (
        list(df.columns[len(fixed_columns("records")) :]) == names
    )  # at the end, first seen first
    assert df["note"].dtype == pd.StringDtype()
    assert df["note"].tolist() == ["a", "b", pd.NA, pd.NA]
    assert df["count"].dtype == pd.Int64Dtype()
    assert df["count"].tolist() == [1, 2, pd.NA, pd.NA]
    assert df["score"].dtype == pd.Float64Dtype()
    assert df["score"].tolist() == [1.0, 2.5, pd.NA, pd.NA]
    assert df["blob"].tolist() == ['{"k":[1]}', "[1,2]", pd.NA, pd.NA]
    assert df["flag"].tolist() == ["true", "false", pd.NA, pd.NA]
    assert df["mixed"].tolist() == [pd.NA, pd.NA, "x", "3"]  # as metadata: strings verbatim
    assert df["nothing"].isna().all()
    assert_spec_table(df, "records")


def test_drift_warnings_point_at_the_caller() -> None:
    with pytest.warns(SchemaDriftWarning) as caught:
        records_to_frame([record(surprise=1)])
    assert caught[0].filename == __file__
    builder = FrameBuilder("records")
    builder.add([record(surprise=1)])
    with pytest.warns(SchemaDriftWarning) as caught:
        builder.finish()
    assert caught[0].filename == __file__


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_impact_type_becomes_a_category_and_a_column(backend: str) -> None:
    stamps = times(5)
    records = [
        record(time_utc=stamps[0]),
        {"user_id": "U2", "time_utc": stamps[1], "kelp_planted": 4},
        {"user_id": "U2", "time_utc": stamps[2], "kelp_planted": 6, "note": "x"},
        {"user_id": "U3", "time_utc": stamps[3], "bees_saved": 0},
        record(time_utc=stamps[4], money_donated=100, tree_planted=...),
    ]
    with pytest.warns(SchemaDriftWarning) as caught:
        df = records_to_frame(records, dtype_backend=backend)
    messages = drift_messages(caught)
    assert len(messages) == 3
    assert "impact type 'kelp_planted' in 2 record(s)" in messages[0]
    assert "impact type 'bees_saved'" in messages[1]
    assert "unknown field 'note'" in messages[2]
    categories = [*IMPACT_TYPES, "kelp_planted", "bees_saved"]
    assert list(df["impact_type"].cat.categories) == categories
    assert list(df.columns) == [
        *fixed_columns("records")[:-1],
        "kelp_planted",
        "bees_saved",
        "category",
        "note",
    ]
    assert df["impact_type"].tolist() == [
        "tree_planted",
        "kelp_planted",
        "kelp_planted",
        "bees_saved",
        "money_donated",
    ]
    assert df["amount"].tolist() == [3, 4, 6, 0, 100]
    assert df["kelp_planted"].tolist() == [pd.NA, 4, 6, pd.NA, pd.NA]
    assert df["note"].tolist() == [pd.NA, pd.NA, "x", pd.NA, pd.NA]
    assert_spec_table(df, "records", backend)


def test_a_new_impact_type_next_to_a_known_one_is_two_impact_fields_in_any_order() -> None:
    orphan = {"user_id": "U2", "time_utc": "2024-09-16T20:30:14.000Z", "kelp_planted": 4}
    both = record(kelp_planted=1)
    for records in ([orphan, both], [both, orphan]):
        with pytest.raises(ValidationError) as caught:
            records_to_frame(records)
        assert caught.value.field == "kelp_planted"
        message = str(caught.value)
        assert "second impact field besides tree_planted" in message
        assert f"record {records.index(both)} overall (user_id='U1'" in message


def test_records_without_an_impact_field_that_is_not_a_new_type() -> None:
    for unknown in ({"note": "x"}, {"kelp_planted": -4}, {"kelp_planted": 1.5}, {"a": 1, "b": 2}):
        with pytest.raises(ValidationError, match="none of the impact fields") as caught:
            records_to_frame([{"user_id": "U1", "time_utc": "2024-09-16T20:30:13Z", **unknown}])
        assert caught.value.field == "impact_type"


def test_a_new_types_bad_value_in_another_record_is_named() -> None:
    records = [
        {"user_id": "U1", "time_utc": "2024-09-16T20:30:13Z", "kelp_planted": 4},
        {"user_id": "U1", "time_utc": "2024-09-16T20:30:14Z", "kelp_planted": "5", "note": "x"},
    ]
    with pytest.raises(ValidationError, match="kelp_planted must be a non-negative integer") as e:
        records_to_frame(records)
    assert e.value.field == "kelp_planted"
    assert "record 1 overall" in str(e.value)


def test_an_unknown_field_may_not_replace_another_column() -> None:
    with pytest.raises(ValidationError, match="'amount' would take the name") as caught:
        records_to_frame([record(amount=3)])
    assert caught.value.field == "amount"
    with pytest.raises(ValidationError, match="metadata_prefix"):
        records_to_frame([record(metadata_version=2)])
    with pytest.warns(SchemaDriftWarning, match="metadata_version"):
        df = records_to_frame([record(metadata_version=2)], metadata="json")
    assert df["metadata_version"].tolist() == [2]
    with pytest.raises(ValidationError, match="would make the column 'customer_id'") as caught:
        records_to_frame(
            [record("customer_records", metadata={"id": "x"})],
            "customer_records",
            metadata_prefix="customer_",
        )
    assert caught.value.field == "metadata"


def test_unknown_customer_keys_and_a_customer_on_the_records_endpoint() -> None:
    customer = {**CUSTOMER, "customer_phone": "555", "customer_tier": 2}
    with pytest.warns(SchemaDriftWarning) as caught:
        df = records_to_frame([record("customer_records", customer=customer)], "customer_records")
    assert len(drift_messages(caught)) == 2
    assert df["customer_phone"].tolist() == ["555"]
    assert df["customer_tier"].tolist() == [2]
    with pytest.warns(SchemaDriftWarning, match="'customer'"):
        df = records_to_frame([record(customer=CUSTOMER)])
    assert json.loads(df["customer"].iloc[0]) == CUSTOMER


# ---------------------------------------------------------------------------------------------
# Duplicates


def test_identical_duplicates_are_dropped_silently(caplog: pytest.LogCaptureFixture) -> None:
    stamps = times(4)
    first = [record(time_utc=t, metadata={"k": t}) for t in stamps[:3]]
    second = [copy.deepcopy(first[-1]), record(time_utc=stamps[3])]  # repeated across the boundary
    builder = FrameBuilder("records")
    with caplog.at_level(logging.DEBUG, logger="impactframe"):
        assert builder.add(first) == 3
        assert builder.add(second) == 1
        assert len(builder) == builder.count == 4
        df = builder.finish()
    assert df["time_utc"].tolist() == [pd.Timestamp(t) for t in stamps]
    assert any("dropped 1" in r.getMessage() for r in caplog.records)


def test_the_same_instant_written_differently_is_the_same_record() -> None:
    with pytest.warns(DuplicateRecordWarning, match="1 record"):  # inside a page: told
        df = records_to_frame(
            [record(time_utc="2024-09-16T20:30:13.000Z"), record(time_utc="2024-09-16T20:30:13Z")]
        )
    assert len(df) == 1


def test_a_repeat_not_right_after_a_cursor_is_dropped_with_one_warning_naming_it() -> None:
    stamps = times(6)
    pages = [[record(time_utc=t) for t in stamps[:3]], [record(time_utc=t) for t in stamps[3:]]]
    pages[1].insert(2, copy.deepcopy(pages[0][0]))  # pages apart
    pages[1].append(copy.deepcopy(pages[1][0]))  # inside a page
    pages.append([copy.deepcopy(pages[1][-1]), copy.deepcopy(pages[0][1])])  # a boundary run
    builder = FrameBuilder("records")
    for page in pages:
        builder.add(page)
    with pytest.warns(DuplicateRecordWarning) as caught:
        df = builder.finish()
    assert len(df) == 6
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "3 record(s) identical to an earlier one" in message
    assert f"time_utc={stamps[0]!r}" in message
    assert builder.repeats.quiet == 1  # the first record of the last page only


def test_a_repeat_across_pages_of_one_arrow_batch_is_quiet_only_after_a_cursor() -> None:
    stamps = times(4)
    first = {"user_records": [record(time_utc=t) for t in stamps[:2]], "cursor": "c1"}
    second = {"user_records": [record(time_utc=t) for t in stamps[1:]]}
    builder = FrameBuilder("records")
    for body in (first, second):
        builder.add_raw(json.dumps(body).encode())
    df = builder.finish()  # no warning: the repeat is the API's, at the page boundary
    assert len(df) == 4
    assert builder.repeats.quiet == 1
    assert builder._slow_pages == 0


def test_conflicting_duplicates_are_kept_with_one_warning() -> None:
    a = record(tree_planted=1)
    b = record(tree_planted=2)
    c = record(time_utc="2024-09-16T20:30:14Z", metadata={"k": "1"})
    d = record(time_utc="2024-09-16T20:30:14Z", metadata={"k": "2"})
    e = record(time_utc="2024-09-16T20:30:14Z", metadata={"k": 1})  # 1 was not sent as "1"
    with pytest.warns(DuplicateRecordWarning) as caught:
        df = records_to_frame([a, b, copy.deepcopy(b), c, d, e, copy.deepcopy(a)])
    assert len(caught) == 2
    assert "2 (user_id, time_utc) key(s)" in str(caught[0].message)
    assert "all 5 of those records" in str(caught[0].message)
    assert "2 record(s) identical to an earlier one" in str(caught[1].message)
    assert df["amount"].tolist() == [1, 2, 3, 3, 3]
    assert df["metadata_k"].tolist() == [pd.NA, pd.NA, "1", "2", "1"]


@pytest.mark.parametrize("metadata", ["dict", "json"])
def test_duplicates_compare_metadata_as_the_frame_holds_it(metadata: str) -> None:
    a = record(metadata={"x": 1, "y": [1]})
    with pytest.warns(DuplicateRecordWarning):
        df = records_to_frame([a, record(metadata={"x": True, "y": [1]})], metadata=metadata)
    assert len(df) == 2
    with pytest.warns(DuplicateRecordWarning, match="1 record"):
        assert len(records_to_frame([a, copy.deepcopy(a)], metadata=metadata)) == 1


def test_drift_values_are_compared_strictly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaDriftWarning)
        with pytest.warns(DuplicateRecordWarning):
            df = records_to_frame([record(extra=1), record(extra=1.0)])
        assert len(df) == 2
        twins = [record(extra={"a": [1]}), record(extra={"a": [1]})]
        with pytest.warns(DuplicateRecordWarning, match="1 record"):
            assert len(records_to_frame(twins)) == 1


# ---------------------------------------------------------------------------------------------
# Arguments and helpers


@pytest.mark.parametrize(
    ("kwargs", "argument", "accepted"),
    [
        ({"endpoint": "user_records"}, "endpoint", "'records', 'customer_records'"),
        ({"metadata": "flat"}, "metadata", "'columns', 'dict', 'json', 'drop'"),
        ({"metadata": None}, "metadata", "'columns'"),
        ({"dtype_backend": "arrow"}, "dtype_backend", "'numpy_nullable', 'pyarrow'"),
        ({"metadata_prefix": ""}, "metadata_prefix", "non-empty string"),
        ({"metadata_prefix": 5}, "metadata_prefix", "non-empty string"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_accepted_values(
    kwargs: dict[str, Any], argument: str, accepted: str
) -> None:
    endpoint = kwargs.pop("endpoint", "records")
    for call in (FrameBuilder, empty_frame):
        with pytest.raises(ValueError, match=argument) as caught:
            call(endpoint, **kwargs)
        assert accepted in str(caught.value)
        assert not isinstance(caught.value, ValidationError)
    with pytest.raises(ValueError, match=argument):
        records_to_frame([], endpoint, **kwargs)


def test_finish_can_be_called_again_after_more_pages() -> None:
    builder = FrameBuilder("records")
    stamps = times(2)
    builder.add([record(time_utc=stamps[0])])
    assert len(builder.finish()) == 1
    builder.add([record(time_utc=stamps[1])])
    assert len(builder.finish()) == 2
    assert "rows=2" in repr(builder)


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)

_START = datetime(2020, 1, 1, tzinfo=UTC)
_LEAF = st.one_of(
    st.text(max_size=5),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.lists(st.integers(0, 3), max_size=2),
)
_KEY = st.text(alphabet="abxyé ", min_size=1, max_size=3)  # no "." so keys never collide


def _metadata(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    value = _LEAF if depth == 0 else st.one_of(_LEAF, st.deferred(lambda: _metadata(depth - 1)))
    return st.dictionaries(_KEY, value, max_size=3)


def _time_text(ms: int, style: int) -> str:
    moment = _START + timedelta(milliseconds=ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond // 1000:03d}"
    suffix = "+00:00" if style == 3 else "Z"
    if style == 1 and fraction == "000":
        return text + suffix
    return text + "." + fraction + ("000" if style == 2 else "") + suffix


@st.composite
def _records(draw: st.DrawFn, endpoint: str = "records", drift: bool = True) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "user_id": draw(st.sampled_from(["U1", "U2", "Ü3"])),
        "time_utc": _time_text(draw(st.integers(0, 40)) * 997, draw(st.integers(0, 3))),
    }
    impact = draw(st.sampled_from([*IMPACT_TYPES, "kelp_planted"] if drift else IMPACT_TYPES))
    rec[impact] = draw(st.integers(0, 2**63 - 1) | st.integers(0, 100))
    if draw(st.booleans()):
        rec["category"] = draw(st.none() | st.sampled_from(["food", "travel"]))
    if draw(st.booleans()):
        rec["metadata"] = draw(st.none() | _metadata())
    if drift and impact != "kelp_planted" and draw(st.integers(0, 4)) == 0:
        rec["note"] = draw(st.none() | st.text(max_size=3) | st.integers(0, 9))
    if endpoint == "customer_records":
        name = draw(st.sampled_from(["C1", "C2"]))
        rec["customer"] = {"customer_id": name, "customer_email": f"{name}@x.io"}
        if draw(st.booleans()):
            rec["customer"]["customer_name"] = draw(st.none() | st.text(max_size=3))
    return rec


def _build(pages: list[list[dict[str, Any]]], endpoint: str, **options: Any) -> Any:
    """(frame, warnings as text, repeats dropped) for pages added in turn; the warning about
    identical records is left out of the text: whether one is told depends on the pages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        builder = FrameBuilder(endpoint, **options)
        for page in pages:
            builder.add(page)
        frame = builder.finish()
    told = [f"{w.category.__name__}: {w.message}" for w in caught]
    dropped = (builder.findings.dropped, builder.repeats.quiet)
    return frame, [t for t in told if "identical to an earlier one" not in t], dropped


def _split(records: list[Any], cuts: list[int]) -> list[list[Any]]:
    bounds = sorted({min(c, len(records)) for c in cuts} | {0, len(records)})
    return [records[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=60, deadline=None)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    data=st.data(),
    cuts=st.lists(st.integers(0, 30), max_size=6),
    metadata=st.sampled_from(["columns", "dict", "json", "drop"]),
    backend=st.sampled_from(BACKENDS),
)
def test_property_pages_do_not_matter(
    endpoint: str, data: st.DataObject, cuts: list[int], metadata: str, backend: str
) -> None:
    records = data.draw(st.lists(_records(endpoint), max_size=25))
    options = {"metadata": metadata, "dtype_backend": backend}
    whole, whole_warnings, (whole_told, whole_quiet) = _build([records], endpoint, **options)
    paged, paged_warnings, (told, quiet) = _build(_split(records, cuts), endpoint, **options)
    assert_frame_equal(paged, whole)
    assert paged_warnings == whole_warnings
    # the same records dropped; only those right after a page boundary quietly
    assert whole_quiet == 0
    assert told + quiet == whole_told
    # (3) the schema accepts every frame the builder builds, also when asked directly
    assert validate(paged, endpoint, dtype_backend=backend, metadata=metadata) is paged
    assert_spec_table(paged, endpoint, backend, metadata=metadata)


def _leaves(meta: dict[str, Any], parent: str = "") -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, value in meta.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, parent + key + "."))
        elif value is None or isinstance(value, str):
            out[parent + key] = value
        else:
            out[parent + key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return out


@settings(max_examples=80, deadline=None)
@given(metas=st.lists(st.none() | _metadata(3), min_size=1, max_size=6))
def test_property_flattening_never_loses_a_metadata_value(metas: list[Any]) -> None:
    stamps = times(len(metas))
    records = [record(time_utc=t, metadata=m) for t, m in zip(stamps, metas, strict=True)]
    df = records_to_frame(records)
    meta_columns = [c for c in df.columns if c.startswith("metadata_")]
    expected_keys = set()
    for i, meta in enumerate(metas):
        leaves = _leaves(meta or {})
        expected_keys |= leaves.keys()
        got = {
            c[len("metadata_") :]: df[c].iloc[i] for c in meta_columns if pd.notna(df[c].iloc[i])
        }
        assert got == {k: v for k, v in leaves.items() if v is not None}
        for key, value in leaves.items():
            if value is None:
                assert pd.isna(df["metadata_" + key].iloc[i])
    assert {c[len("metadata_") :] for c in meta_columns} == expected_keys


@settings(max_examples=60, deadline=None)
@given(
    # one record per instant (however the time is written), so every key is unique
    uniques=st.lists(
        _records(drift=False), max_size=12, unique_by=lambda r: pd.Timestamp(r["time_utc"])
    ),
    picks=st.lists(st.integers(0, 11), max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=4),
    metadata=st.sampled_from(["columns", "dict", "json", "drop"]),
)
def test_property_dedup_keeps_the_unique_records_in_first_seen_order(
    uniques: list[dict[str, Any]], picks: list[int], cuts: list[int], metadata: str
) -> None:
    stream = [copy.deepcopy(uniques[i]) for i in picks if i < len(uniques)]
    first_seen = list(dict.fromkeys(i for i in picks if i < len(uniques)))
    builder = FrameBuilder("records", metadata=metadata)
    added = sum(builder.add(page) for page in _split(stream, cuts))
    assert added == len(builder) == len(first_seen)
    expected = records_to_frame([uniques[i] for i in first_seen], metadata=metadata)
    frame = builder.finish(warn=False)
    assert_frame_equal(frame, expected)
    dropped = builder.repeats.quiet + builder.findings.dropped
    assert dropped == len(stream) - len(first_seen)


def test_schema_class_accepts_builder_frames_directly() -> None:
    extra = record(category="x", time_utc="2025-01-01T00:00:00Z")
    df = records_to_frame([*DOC_USER_RECORDS, extra])
    assert_frame_equal(RecordsSchema.validate(df), df)


# ---------------------------------------------------------------------------------------------
# What was sent is kept (issue 12, point 14)


def _from_body(body: bytes, **options: Any) -> pd.DataFrame:
    builder = FrameBuilder("records", **options)
    builder.add_raw(body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaDriftWarning)
        return builder.finish()


_ROW = b'"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": 1'


def test_a_drift_integer_stays_exact_and_a_mix_a_float_cannot_hold_is_text() -> None:
    alone = _from_body(b'{"user_records": [{%s, "big": 9007199254740993}]}' % _ROW)
    assert alone["big"].dtype == "Int64"
    assert alone["big"].tolist() == [9007199254740993]
    mixed = _from_body(
        b'{"user_records": [{%s, "big": 9007199254740993}, {"user_id": "U2", '
        b'"time_utc": "2024-01-01T00:00:00.001Z", "tree_planted": 1, "big": 1.5}]}' % _ROW
    )
    assert mixed["big"].tolist() == ["9007199254740993", "1.5"]  # never 9007199254740992.0
    small = _from_body(
        b'{"user_records": [{%s, "n": 2}, {"user_id": "U2", '
        b'"time_utc": "2024-01-01T00:00:00.001Z", "tree_planted": 1, "n": 2.5}]}' % _ROW
    )
    assert small["n"].dtype == "Float64"
    assert small["n"].tolist() == [2.0, 2.5]


def test_metadata_numbers_keep_the_text_they_were_sent_as() -> None:
    df = _from_body(b'{"user_records": [{%s, "metadata": {"a": 1E2, "b": 1e400, "c": 1}}]}' % _ROW)
    assert df[["metadata_a", "metadata_b", "metadata_c"]].iloc[0].tolist() == ["1E2", "1e400", "1"]


@pytest.mark.parametrize("dtype_backend", ["numpy_nullable", "pyarrow"])
def test_nan_and_infinity_are_text_the_same_in_both_backends(dtype_backend: str) -> None:
    body = b'{"user_records": [{%s, "x": NaN, "metadata": {"n": NaN, "i": -Infinity}}]}' % _ROW
    df = _from_body(body, dtype_backend=dtype_backend)
    assert df["x"].tolist() == ["NaN"]
    assert df["metadata_n"].tolist() == ["NaN"]
    assert df["metadata_i"].tolist() == ["-Infinity"]


def test_json_metadata_is_strict_json_with_numbers_as_sent() -> None:
    body = b'{"user_records": [{%s, "metadata": {"n": NaN, "a": [1E2, Infinity], "s": "x"}}]}'
    text = _from_body(body % _ROW, metadata="json")["metadata"].iloc[0]
    assert text == '{"a":[1E2,"Infinity"],"n":"NaN","s":"x"}'  # keys sorted

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    assert json.loads(text, parse_constant=refuse)["a"] == [100.0, "Infinity"]
    decoded = records_to_frame([record(metadata={"f": float("nan")})], metadata="json")
    assert decoded["metadata"].tolist() == ['{"f":"NaN"}']


def test_a_null_metadata_value_is_not_a_missing_key() -> None:
    with pytest.warns(DuplicateRecordWarning, match="differ"):
        df = records_to_frame([record(metadata={"k": None}), record(metadata={})])
    assert len(df) == 2  # not identical records
    assert df["metadata_k"].isna().all()
