"""``output="arrow"`` and ``output="polars"`` on the loaders (SPEC §13), over HTTP to the sandbox.

Each output must hold the values of ``output="pandas"``, column for column, with the Arrow
types of `impactframe._frame._outputs.ARROW_TYPES`, and fail the way the pandas frame fails.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import impactframe as ifr
from impactframe._frame._builder import FrameBuilder
from impactframe._frame._outputs import ARROW_TYPES, check_table
from impactframe.sandbox import SandboxServer, generate_records

HAS_POLARS = importlib.util.find_spec("polars") is not None
needs_polars = pytest.mark.skipif(
    not HAS_POLARS, reason="polars is not installed (impactframe[polars])"
)

RECORDS = generate_records(700, seed=21)
CUSTOMER_RECORDS = generate_records(700, seed=22, customers=True)
# drift (a number and a text field), a new impact type, odd metadata values
ODD = [
    {"user_id": "U1", "time_utc": "2024-03-01T10:00:00.000Z", "tree_planted": 3,
     "score": 1.5, "metadata": {"a": "x", "n": 2, "deep": {"k": "v"}}},
    {"user_id": "U2", "time_utc": "2024-03-01T11:00:00.000Z", "kelp_planted": 7,
     "note": "hi"},
    {"user_id": "U3", "time_utc": "2024-03-02T11:00:00.000Z", "waste_removed": 0,
     "score": 2, "category": "food"},
]  # fmt: skip
LOADERS = {"records": ifr.load_records, "customer_records": ifr.load_customer_records}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(records=RECORDS, customer_records=CUSTOMER_RECORDS) as srv:
        yield srv


@pytest.fixture
def conn(server: SandboxServer) -> dict[str, Any]:
    server.clear_log()
    return {"api_key": server.api_key, "base_url": server.url, "progress": False}


def pandas_values(series: pd.Series) -> list[Any]:
    return [None if v is pd.NA or v is None or v != v else v for v in series.astype(object)]


def assert_same_values(frame: pd.DataFrame, table: pa.Table) -> None:
    """``table`` holds ``frame``'s columns, in order, with equal values and the Arrow types."""
    assert table.column_names == list(frame.columns)
    assert table.num_rows == len(frame)
    for name in frame.columns:
        assert table.column(name).to_pylist() == pandas_values(frame[name]), name
        if name in ARROW_TYPES:
            assert table.schema.field(name).type == ARROW_TYPES[name], name
        elif frame[name].dtype == pd.StringDtype():
            assert table.schema.field(name).type == pa.string(), name
    categories = list(frame["impact_type"].cat.categories)
    assert table.column("impact_type").combine_chunks().dictionary.to_pylist() == categories


def assert_same_polars(frame: pd.DataFrame, table: pa.Table, polars_frame: Any) -> None:
    import polars as pl

    assert isinstance(polars_frame, pl.DataFrame)
    assert polars_frame.columns == list(frame.columns)
    for name in frame.columns:
        assert polars_frame[name].to_list() == table.column(name).to_pylist(), name
    assert polars_frame.schema["time_utc"] == pl.Datetime("ms", "UTC")
    assert polars_frame.schema["amount"] == pl.Int64
    assert polars_frame.schema["impact_type"] == pl.Categorical


@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
@pytest.mark.parametrize("metadata", ["columns", "json", "drop"])
def test_arrow_equals_pandas(conn: dict, endpoint: str, metadata: str) -> None:
    load = LOADERS[endpoint]
    frame = load(**conn, metadata=metadata)
    table = load(**conn, metadata=metadata, output="arrow")
    assert isinstance(table, pa.Table)
    assert len(frame) == 700
    assert_same_values(frame, table)
    if metadata == "columns":
        assert any(c.startswith("metadata_") for c in table.column_names)


@needs_polars
@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
@pytest.mark.parametrize("metadata", ["columns", "json"])
def test_polars_equals_pandas(conn: dict, endpoint: str, metadata: str) -> None:
    load = LOADERS[endpoint]
    frame = load(**conn, metadata=metadata)
    table = load(**conn, metadata=metadata, output="arrow")
    assert_same_polars(frame, table, load(**conn, metadata=metadata, output="polars"))


@pytest.mark.parametrize("output", ["arrow", "polars"])
@pytest.mark.parametrize("metadata", ["columns", "json"])
def test_drift_new_types_and_odd_metadata(output: str, metadata: str) -> None:
    if output == "polars" and not HAS_POLARS:
        pytest.skip("polars is not installed (impactframe[polars])")
    with SandboxServer(records=ODD, customer_records=[]) as srv:
        conn = {"api_key": srv.api_key, "base_url": srv.url, "progress": False}
        with pytest.warns(ifr.SchemaDriftWarning) as pandas_warnings:
            frame = ifr.load_records(**conn, metadata=metadata)
        with pytest.warns(ifr.SchemaDriftWarning) as arrow_warnings:
            table = ifr.load_records(**conn, metadata=metadata, output="arrow")
        if output == "polars":
            with pytest.warns(ifr.SchemaDriftWarning):
                assert_same_polars(
                    frame, table, ifr.load_records(**conn, output="polars", metadata=metadata)
                )
    # the same warnings, naming the type each output has
    in_pandas = [str(w.message).replace("Float64", "double") for w in pandas_warnings]
    assert [str(w.message) for w in arrow_warnings] == in_pandas
    assert "kelp_planted" in frame.columns
    assert frame.columns[-2:].tolist() == ["score", "note"]
    assert_same_values(frame, table)
    assert table.schema.field("score").type == pa.float64()
    assert table.schema.field("kelp_planted").type == pa.int64()
    assert table.column("impact_type").to_pylist()[1] == "kelp_planted"
    if metadata == "json":
        assert json.loads(table.column("metadata").to_pylist()[0]) == ODD[0]["metadata"]
    else:
        assert table.column("metadata_n").to_pylist() == ["2", None, None]


@pytest.mark.parametrize("output", ["arrow", "polars"])
@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_empty_results_have_every_column(conn: dict, output: str, endpoint: str) -> None:
    if output == "polars" and not HAS_POLARS:
        pytest.skip("polars is not installed (impactframe[polars])")
    load = LOADERS[endpoint]
    frame = load(**conn, start_date="1999-01-01", end_date="1999-01-02")
    result = load(**conn, start_date="1999-01-01", end_date="1999-01-02", output=output)
    table = result if output == "arrow" else result.to_arrow()
    assert len(frame) == 0
    assert table.num_rows == 0
    assert table.column_names == list(frame.columns)
    if output == "arrow":
        assert_same_values(frame, table)


def test_max_records_and_sort_order(conn: dict) -> None:
    frame = ifr.load_records(**conn, max_records=150, page_size=100, sort_order="desc")
    table = ifr.load_records(
        **conn, max_records=150, page_size=100, sort_order="desc", output="arrow"
    )
    assert table.num_rows == 150
    assert_same_values(frame, table)


@pytest.mark.parametrize("output", ["arrow", "polars"])
def test_bad_records_raise_the_same_error(output: str) -> None:
    if output == "polars" and not HAS_POLARS:
        pytest.skip("polars is not installed (impactframe[polars])")
    bad = [
        *RECORDS[:5],
        {"user_id": "U9", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": "5"},
    ]
    new = {"user_id": "U8", "time_utc": "2024-01-01T00:00:00.000Z", "kelp_planted": 2}
    two = [*RECORDS[:5], new, {**new, "user_id": "U9", "tree_planted": 1}]
    for records in (bad, two):
        with SandboxServer(records=records, customer_records=[]) as srv:
            conn = {"api_key": srv.api_key, "base_url": srv.url, "progress": False}
            with pytest.raises(ifr.ValidationError) as pandas_error:
                ifr.load_records(**conn)
            with pytest.raises(ifr.ValidationError) as other_error:
                ifr.load_records(**conn, output=output)
        assert str(other_error.value) == str(pandas_error.value)
        assert other_error.value.field == pandas_error.value.field


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (
            {"output": "numpy"},
            "output: 'numpy' is not accepted; expected one of 'pandas', 'arrow', 'polars'",
        ),
        (
            {"output": "arrow", "dtype_backend": "pyarrow"},
            "dtype_backend: 'pyarrow' is not accepted",
        ),
        (
            {"output": "arrow", "metadata": "dict"},
            "metadata: 'dict' is not accepted; expected 'columns', 'json' or 'drop' with output='arrow'",  # noqa: E501
        ),
        ({"output": "polars", "metadata": "dict"}, "metadata: 'dict' is not accepted"),
    ],
)
def test_bad_output_combinations_fail_before_any_request(
    conn: dict, server: SandboxServer, arguments: dict, named: str
) -> None:
    with pytest.raises(ValueError, match="^" + named.replace("(", r"\(").replace(")", r"\)")):
        ifr.load_records(**conn, **arguments)
    assert server.requests == []


@pytest.mark.parametrize("output", ["arrow", "polars"])
def test_cache_serves_the_same_table(
    conn: dict, server: SandboxServer, tmp_path: Path, output: str
) -> None:
    if output == "polars" and not HAS_POLARS:
        pytest.skip("polars is not installed (impactframe[polars])")
    direct = ifr.load_customer_records(**conn, output="arrow")
    first = ifr.load_customer_records(**conn, output=output, cache=tmp_path)
    server.clear_log()
    second = ifr.load_customer_records(**conn, output=output, cache=tmp_path)
    assert server.requests == []
    for result in (first, second):
        table = result if output == "arrow" else result.to_arrow()
        if output == "arrow":
            assert table.equals(direct)
        else:
            assert result.equals(ifr.load_customer_records(**conn, output="polars"))


# --- the Arrow-level check -----------------------------------------------------------


def _table(records: list) -> pa.Table:
    builder = FrameBuilder("records", output="arrow")
    builder.add(records)
    return builder.finish()


def test_check_table_holds_the_schema_rules() -> None:
    table = _table(RECORDS[:50])
    assert check_table(table, "records", "columns", "metadata_") is table
    i = table.column_names.index("amount")
    negative = table.set_column(i, "amount", pc.negate(table.column("amount")))
    with pytest.raises(ifr.ValidationError, match="greater_than_or_equal_to") as error:
        check_table(negative, "records", "columns", "metadata_")
    assert "one_impact_per_row failed in impact_type, amount (at rows [0, 1, 2, 3, 4" in str(
        error.value
    )
    assert error.value.failure_cases["check"].str.contains("one_impact_per_row").any()
    user = table.set_column(0, "user_id", pa.nulls(50, pa.string()))
    with pytest.raises(ifr.ValidationError, match=r"not_nullable failed in user_id \(at rows"):
        check_table(user, "records", "columns", "metadata_")
    wide = table.set_column(0, "user_id", table.column("user_id").cast(pa.large_string()))
    with pytest.raises(ifr.ValidationError, match=r"dtype\('string'\) failed in user_id"):
        check_table(wide, "records", "columns", "metadata_")
    moved = table.select([1, 0, *range(2, table.num_columns)])
    with pytest.raises(ifr.ValidationError, match="column_order failed in user_id"):
        check_table(moved, "records", "columns", "metadata_")


# --- metadata="json" through the Arrow reader ----------------------------------------


def test_json_metadata_takes_the_arrow_path_with_the_python_readers_text() -> None:
    metas = [
        {"z": "1", "a": 'say "hi"', "é": "back\\slash"},
        {"b": "ünï 😀 /", "a": ""},
        {},
        None,
        {"ctl": "tab\there"},  # a control character: the Python reader's escape
    ]
    records = [
        {"user_id": f"U{i}", "time_utc": f"2024-01-0{i + 1}T00:00:00.000Z", "tree_planted": 1}
        | ({} if meta is None else {"metadata": meta})
        for i, meta in enumerate(metas)
    ]
    bodies = [json.dumps({"user_records": records[:4]}).encode()]
    bodies.append(json.dumps({"user_records": records[4:]}).encode())
    fast = FrameBuilder("records", metadata="json")
    for body in bodies:
        fast.add_raw(body)
    frame = fast.finish()
    assert fast._slow_pages == 1  # only the page with the tab
    slow = FrameBuilder("records", metadata="json")
    slow.add(records)
    expected = slow.finish()
    assert frame["metadata"].tolist()[:4] == expected["metadata"].tolist()[:4]
    assert frame["metadata"].iloc[4] == expected["metadata"].iloc[4] == '{"ctl":"tab\\there"}'
    texts = frame["metadata"].tolist()
    assert texts[0] == '{"a":"say \\"hi\\"","z":"1","é":"back\\\\slash"}'  # sorted keys
    assert [None if t is pd.NA else json.loads(t) for t in texts] == metas
