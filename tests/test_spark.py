"""A real local Spark (``local[2]``) reads impactframe's exports and its data source (SPEC §13).

One Spark session for the module (starting one costs seconds), with the session time zone
UTC, talking to a sandbox on loopback. The data source's Python workers get the API key from
the environment the session was started with; the test process's own environment is restored
right after, so no other test sees the key.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'impactframe[spark]')")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Java (17+) not found: Spark needs a JVM", allow_module_level=True)

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, TimestampType

import impactframe as ifr
import impactframe.spark as ifs
from impactframe._constants import ENV_API_KEY, ENV_BASE_URL, IMPACT_TYPES
from impactframe.errors import SchemaDriftWarning
from impactframe.sandbox import SandboxServer, generate_records

# pyspark 4 warns that it does not fully support pandas 3 (session start, toPandas).
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)

KEY = "spark-test-key-5b1f0e9c7d"  # distinctive, to look for in plans and pickles


def _records() -> list[dict[str, Any]]:
    """Records with drift (a float and a text field), a nested metadata key and a new type."""
    records = generate_records(1200, seed=31, start="2023-06-01", end="2024-12-31")
    for i, record in enumerate(records):
        if i % 7 == 0:
            record["score"] = i / 4  # drift: Float64
        if i % 11 == 0:
            record["metadata"] = {"shop": {"id": f"S{i % 5}"}, "source": "pos"}  # shop.id
    kelp = records[600]
    records[600] = {"user_id": kelp["user_id"], "time_utc": kelp["time_utc"], "kelp_planted": 4}
    return records


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    customers = generate_records(700, seed=32, customers=True, start="2024-01-01")
    with SandboxServer(records=_records(), customer_records=customers, api_key=KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def spark(server: SandboxServer) -> Iterator[SparkSession]:
    names = (ENV_API_KEY, ENV_BASE_URL, "PYSPARK_PYTHON", "SPARK_LOCAL_IP")
    saved = {name: os.environ.get(name) for name in names}
    # The JVM, and so every Python worker it starts, keeps the environment of this moment
    # (the base URL for the README's example, which names none).
    os.environ.update({ENV_API_KEY: KEY, ENV_BASE_URL: server.url})
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # loopback only
    try:
        session = (
            SparkSession.builder.master("local[2]")
            .appName("impactframe-tests")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    session.sparkContext.setLogLevel("ERROR")
    ifs.register(session)
    yield session
    session.stop()


def _load(server: SandboxServer, endpoint: str = "records", **query: Any) -> pd.DataFrame:
    load = ifr.load_records if endpoint == "records" else ifr.load_customer_records
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaDriftWarning)  # the drift of _records()
        return load(api_key=KEY, base_url=server.url, progress=False, **query)


def _rows_of_frame(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    """Sorted rows: timestamps as epoch milliseconds, missing values as None."""
    frame = frame.reindex(columns=columns).astype(object)
    frame["time_utc"] = [t.value // 1_000_000 if t is not pd.NaT else None for t in frame.time_utc]
    frame = frame.where(frame.notna(), None)
    rows = (tuple(getattr(v, "item", lambda v=v: v)() for v in row) for row in frame.values)
    return sorted(rows, key=repr)


def _rows_of_spark(df: Any) -> list[tuple[Any, ...]]:
    columns = [
        F.unix_millis(F.col(name)).alias(name) if name == "time_utc" else F.col(f"`{name}`")
        for name in df.columns
    ]
    return sorted((tuple(row) for row in df.select(columns).collect()), key=repr)


def _read(spark: SparkSession, server: SandboxServer, **options: str) -> Any:
    reader = spark.read.format("impactframe").option("base_url", server.url)
    # few windows: each costs a Spark task (the rows do not depend on the windows)
    for name, value in {"npartitions": "2", **options}.items():
        reader = reader.option(name, value)
    return reader.load()


# --- exports read back by Spark -------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "partition_by"),
    [("records", ("year", "month")), ("records", ()), ("customer_records", ("impact_type",))],
)
def test_spark_reads_an_export_with_its_types_and_values(
    spark: SparkSession,
    server: SandboxServer,
    tmp_path: Path,
    endpoint: str,
    partition_by: tuple[str, ...],
) -> None:
    out = tmp_path / "export"
    connection = {"api_key": KEY, "base_url": server.url, "progress": False}
    if endpoint == "records":
        with pytest.warns(SchemaDriftWarning) as caught:
            ifr.export_parquet(out, endpoint, partition_by=partition_by, **connection)
        drift = " ".join(str(w.message) for w in caught)
        assert "'score'" in drift
        assert "'kelp_planted'" in drift
    else:
        ifr.export_parquet(out, endpoint, partition_by=partition_by, **connection)
    expected = _load(server, endpoint)
    df = spark.read.parquet(str(out))

    types = dict((f.name, f.dataType) for f in df.schema.fields)
    assert types["time_utc"] == TimestampType()
    assert types["amount"] == types["tree_planted"] == LongType()
    metadata = [c for c in expected.columns if c.startswith("metadata_")]
    assert metadata
    assert all(types[c] == StringType() for c in metadata)
    if endpoint == "records":
        assert types["score"] == DoubleType()  # the drift column
        assert {"metadata_shop.id", "kelp_planted"} <= set(types)
    assert set(expected.columns) <= set(types)

    assert df.count() == len(expected)
    sums = df.groupBy("impact_type").agg(F.sum("amount").alias("total")).collect()
    want = expected.groupby("impact_type", observed=True)["amount"].sum()
    assert {r.impact_type: r.total for r in sums} == {k: int(v) for k, v in want.items()}
    nulls = df.select(
        [F.sum(F.col(f"`{c}`").isNull().cast("long")).alias(c) for c in expected.columns]
    ).first()
    assert nulls is not None
    assert nulls.asDict() == {c: int(expected[c].isna().sum()) for c in expected.columns}
    # millisecond timestamps, every one of them, in UTC
    got_ms = sorted(r[0] for r in df.select(F.unix_millis("time_utc")).collect())
    assert got_ms == sorted(expected["time_utc"].astype("int64").tolist())
    assert got_ms[0] % 1000 != 0 or got_ms[1] % 1000 != 0  # milliseconds survived
    if "year" in partition_by:
        years = {r.year for r in df.select("year").distinct().collect()}
        assert years == set(expected["time_utc"].dt.year)
    # the dotted metadata key is one column, reached with backticks
    if endpoint == "records":
        shops = df.where(F.col("`metadata_shop.id`").isNotNull()).count()
        assert shops == int(expected["metadata_shop.id"].notna().sum()) > 0


# --- the data source ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "options", "query"),
    [
        ("records", {}, {}),
        (
            "customer_records",
            {"start_date": "2024-03-01", "filter_by": "tree_planted,carbon_captured"},
            {"start_date": "2024-03-01", "filter_by": ["tree_planted", "carbon_captured"]},
        ),
        (
            "records",
            {"metadata_keys": "source,shop.id", "sort_order": "desc", "npartitions": "3"},
            {"sort_order": "desc"},
        ),
        (
            "records",
            {"end_date": "2023-12-31", "page_size": "70", "filter_by": "waste_removed"},
            {"end_date": "2023-12-31", "page_size": 70, "filter_by": "waste_removed"},
        ),
    ],
)
def test_the_data_source_gives_the_loaders_rows(
    spark: SparkSession,
    server: SandboxServer,
    endpoint: str,
    options: dict[str, str],
    query: dict[str, Any],
) -> None:
    df = _read(spark, server, endpoint=endpoint, **options)
    keys = options.get("metadata_keys")
    expected = _load(server, endpoint, metadata="json" if keys is None else "columns", **query)
    assert df.columns[0] == "user_id"
    if keys is None:
        assert df.columns[-1] == "metadata"
    else:
        assert df.columns[-2:] == ["metadata_shop.id", "metadata_source"]
    got = _rows_of_spark(df)
    assert len(got) == len(expected) > 0
    assert got == _rows_of_frame(expected, df.columns)


def test_pushed_filters_reach_the_api_and_keep_the_rows(
    spark: SparkSession, server: SandboxServer
) -> None:
    df = _read(spark, server, endpoint="customer_records")
    since = pd.Timestamp("2024-07-15T12:00:00Z")
    query = df.where((F.col("impact_type") == "tree_planted") & (F.col("time_utc") >= since))
    server.clear_log()
    got = _rows_of_spark(query)
    requests = [r for r in server.requests if r.path == "/v1/customer_records"]
    assert all(r.params["start_date"][0] >= "2024-07-15" for r in requests)
    # the page walks; the one-record probe for the last day asks for any type (a superset)
    pages = [r for r in requests if r.params["limit"] != ["1"]]
    assert pages
    assert all(r.params.get("filter_by") == ["tree_planted"] for r in pages)
    expected = _load(server, "customer_records", metadata="json", filter_by="tree_planted")
    expected = expected[expected["time_utc"] >= since]
    assert len(got) > 0
    assert got == _rows_of_frame(expected, df.columns)
    # impact_type went to the API; time_utc is still applied by Spark (whole days at the API)
    plan = query._jdf.queryExecution().optimizedPlan().toString()
    assert "impact_type" not in plan.split("RelationV2")[0]
    assert "time_utc" in plan.split("RelationV2")[0]


def test_without_pushdown_spark_filters_after_the_fetch(
    spark: SparkSession, server: SandboxServer
) -> None:
    spark.conf.set(ifs.PUSHDOWN_CONF, "false")
    ifs.register(spark, filter_pushdown=False)
    try:
        assert spark.conf.get(ifs.PUSHDOWN_CONF) == "false"  # left alone
        df = _read(spark, server, endpoint="customer_records")
        server.clear_log()
        got = _rows_of_spark(df.where(F.col("impact_type") == "coral_restored"))
        pages = [r for r in server.requests if r.params.get("limit") != ["1"]]
        assert pages
        assert all("filter_by" not in r.params for r in pages)
    finally:
        ifs.register(spark)
    assert spark.conf.get(ifs.PUSHDOWN_CONF) == "true"
    expected = _load(server, "customer_records", metadata="json", filter_by="coral_restored")
    assert len(got) > 0
    assert got == _rows_of_frame(expected, df.columns)


def test_a_new_impact_type_is_kept_and_filtered_by_spark(
    spark: SparkSession, server: SandboxServer
) -> None:
    df = _read(spark, server).where(F.col("impact_type") == "kelp_planted")
    rows = df.select("impact_type", "amount").collect()
    assert [tuple(r) for r in rows] == [("kelp_planted", 4)]
    assert set(IMPACT_TYPES).isdisjoint({r.impact_type for r in rows})


def test_a_filter_no_record_can_pass_fetches_no_page(
    spark: SparkSession, server: SandboxServer
) -> None:
    df = _read(spark, server, filter_by="tree_planted")
    server.clear_log()
    assert df.where(F.col("impact_type") == "money_donated").count() == 0
    assert [r for r in server.requests if r.path == "/v1/records"] == []


def test_the_key_is_in_no_plan_option_or_pickle(spark: SparkSession, server: SandboxServer) -> None:
    df = _read(spark, server, endpoint="customer_records", start_date="2024-06-01")
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        df.explain(True)
        df.where(F.col("impact_type") == "tree_planted").explain("formatted")
    assert "impactframe" in shown.getvalue()
    assert KEY not in shown.getvalue()
    assert KEY not in df._jdf.queryExecution().toString()
    options = {"endpoint": "customer_records", "base_url": server.url}
    source = ifs.ImpactFrameDataSource(options)
    reader = source.reader(source.schema())
    os.environ[ENV_API_KEY] = KEY  # as on a worker, to plan the windows here
    try:
        partitions = reader.partitions()
    finally:
        os.environ.pop(ENV_API_KEY)
    for thing in (source, reader, partitions, source.options):
        assert KEY not in repr(thing)
        assert KEY.encode() not in pickle.dumps(thing)
    assert len(partitions) > 1


def test_a_partition_read_logs_and_warns_without_the_key(
    server: SandboxServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What an executor does, in this process, so that its log and warnings can be read.
    monkeypatch.setenv("ONECLICK_SECRET", KEY)
    source = ifs.ImpactFrameDataSource({"base_url": server.url, "api_key_env": "ONECLICK_SECRET"})
    reader = source.reader(source.schema())
    caplog.set_level("DEBUG", logger="impactframe")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [b for p in reader.partitions() for b in reader.read(p)]
    assert sum(b.num_rows for b in batches) == len(_load(server))
    assert all(b.schema.field("time_utc").type.tz == "UTC" for b in batches)
    messages = [str(w.message) for w in caught]
    assert any("'score' is left out" in m for m in messages)
    assert any("its column 'kelp_planted' is left out" in m for m in messages)
    assert caplog.records  # the pages were logged
    assert KEY not in caplog.text
    assert not any(KEY in m for m in messages)


def test_a_key_given_as_an_option_is_refused_without_echoing_it(
    spark: SparkSession, server: SandboxServer
) -> None:
    with pytest.raises(Exception, match="api_key_env") as caught:
        _read(spark, server, api_key="an-actual-key-9f8e")
    assert "an-actual-key-9f8e" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"filter_by": "trees"}, "filter_by"),
        ({"start_date": "2024-02-30"}, "start_date"),
        ({"colour": "blue"}, "colour"),
        ({"api_key_env": "IMPACTFRAME_TEST_UNSET_VARIABLE"}, "IMPACTFRAME_TEST_UNSET_VARIABLE"),
    ],
)
def test_bad_options_fail_when_the_read_is_planned(
    spark: SparkSession, server: SandboxServer, options: dict[str, str], named: str
) -> None:
    server.clear_log()
    with pytest.raises(Exception, match=named):
        _read(spark, server, **options).count()
    assert [r for r in server.requests if r.path == "/v1/records"] == []


# --- what the README says -------------------------------------------------------------------


def test_the_readmes_spark_example_runs(spark: SparkSession, server: SandboxServer) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Spark\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```py\n(.*?)```", section, flags=re.DOTALL)
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        exec(compile(code, "README.md (Spark)", "exec"), {"__name__": "readme_example"})
    want = _load(server, "customer_records", start_date="2024-01-01")
    want = want[want["impact_type"].isin(["tree_planted", "carbon_captured"])]
    for impact_type, total in want.groupby("impact_type", observed=True)["amount"].sum().items():
        assert re.search(rf"\|\s*{impact_type}\|\s*{total}\|", shown.getvalue()), shown.getvalue()


# pyspark's toPandas on pandas 3 warns of a deprecated keyword it passes
@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
def test_to_pandas_gives_float64_for_nullable_integers(
    spark: SparkSession, server: SandboxServer
) -> None:
    frame = _read(spark, server, end_date="2023-08-31").toPandas()
    assert frame["tree_planted"].isna().any()
    assert frame["tree_planted"].dtype == "float64"  # the README's caveat
    assert str(_load(server, end_date="2023-08-31")["tree_planted"].dtype) == "Int64"
