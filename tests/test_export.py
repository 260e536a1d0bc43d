"""export_parquet against the sandbox: what readers see, atomicity, batches and arguments."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal

import impactframe.loaders as loaders
from impactframe.client import Client
from impactframe.errors import (
    APIError,
    DuplicateRecordWarning,
    SchemaDriftWarning,
    ValidationError,
)
from impactframe.export import PARTITION_KEYS, ExportResult, export_parquet
from impactframe.sandbox import Fault, SandboxServer, generate_records

RECORDS = generate_records(900, seed=21, start="2023-01-01", end="2024-12-31")
CUSTOMER_RECORDS = generate_records(400, seed=22, customers=True, start="2024-01-01")


def _drifting_metadata() -> list[dict[str, Any]]:
    """Early records know only metadata key "alpha", late ones only "omega" (and "a b/c")."""
    records = generate_records(600, seed=23, start="2024-01-01", end="2024-12-31")
    for i, record in enumerate(records):
        record.pop("metadata", None)
        if i < 200:
            record["metadata"] = {"alpha": f"a{i}"}
        elif i >= 400:
            record["metadata"] = {"omega": f"o{i}", "a b/c": "x"}
    return records


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(records=RECORDS, customer_records=CUSTOMER_RECORDS) as srv:
        yield srv


@pytest.fixture
def conn(server: SandboxServer) -> dict[str, Any]:
    server.clear_faults()
    server.clear_log()
    return {"api_key": server.api_key, "base_url": server.url, "progress": False}


def _load(conn: dict[str, Any], endpoint: str = "records", **query: Any) -> pd.DataFrame:
    load = loaders.load_records if endpoint == "records" else loaders.load_customer_records
    return load(**conn, **query)


def _same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal as sets of rows ordered by time, with values equal after dtype normalisation."""
    got = got.drop(columns=[c for c in ("year", "month", "day") if c in got.columns])
    assert sorted(got.columns) == sorted(expected.columns)
    got = got[list(expected.columns)].copy()
    expected = expected.copy()
    for frame in (got, expected):
        frame["impact_type"] = frame["impact_type"].astype(str)
    got = got.sort_values(["time_utc", "user_id"], kind="stable", ignore_index=True)
    expected = expected.sort_values(["time_utc", "user_id"], kind="stable", ignore_index=True)
    got = got.astype(expected.dtypes.to_dict())
    assert_frame_equal(got, expected)


def _data_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.parquet"))


def _read_duckdb(path: Path) -> pd.DataFrame:
    duckdb = pytest.importorskip("duckdb")
    glob = (path / "**" / "*.parquet").as_posix()
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(
            f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
        ).df()


def _read_dask(path: Path) -> pd.DataFrame:
    dd = pytest.importorskip("dask.dataframe")
    return dd.read_parquet(path).compute(scheduler="sync")


# dask.dataframe.read_parquet calls reset_index(inplace=True), deprecated in pandas 3.1.
DASK_READ_WARNING = pytest.mark.filterwarnings(
    "ignore:The inplace keyword in DataFrame.reset_index:pandas.errors.Pandas4Warning"
)

READERS = {
    "pyarrow.dataset": lambda p: (
        ds.dataset(p, format="parquet", partitioning="hive").to_table().to_pandas()
    ),
    "pandas": pd.read_parquet,
    "duckdb": _read_duckdb,
    "dask": _read_dask,
}


# --- what readers see ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reader", [pytest.param(r, marks=DASK_READ_WARNING) if r == "dask" else r for r in READERS]
)
def test_every_reader_sees_the_rows_of_load_records(
    conn: dict[str, Any], tmp_path: Path, reader: str
) -> None:
    out = tmp_path / "records"
    result = export_parquet(out, **conn, page_size=97, batch_records=250)
    expected = _load(conn)
    assert result.records == len(expected) == len(RECORDS)
    _same_rows(READERS[reader](out), expected)


def test_pandas_reads_back_the_loader_dtypes(conn: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "records"
    export_parquet(out, **conn, batch_records=300)
    got = pd.read_parquet(out)
    expected = _load(conn)
    for column in expected.columns:
        if column != "impact_type":
            assert got[column].dtype == expected[column].dtype, column
    assert isinstance(got["impact_type"].dtype, pd.CategoricalDtype)
    assert str(got["year"].dtype) == "category"  # partition keys, from the folder names


def test_hive_folders_match_the_rows_they_hold(conn: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "records"
    # One chain: full pages, so batches of 200 records exactly.
    result = export_parquet(out, **conn, page_size=100, batch_records=200, concurrency=1)
    files = _data_files(out)
    assert len(files) == result.files
    months = {(r["time_utc"][:4], int(r["time_utc"][5:7])) for r in RECORDS}
    folders = {f.parent.relative_to(out).as_posix() for f in files}
    assert folders == {f"year={y}/month={m:02d}" for y, m in months}  # zero-padded
    assert result.partitions == len(folders)
    batches = {f.name.split("-")[1] for f in files}
    assert len(batches) == -(-len(RECORDS) // 200)  # one file per partition per batch
    for file in files:
        year, month = (int(part.split("=")[1]) for part in file.parent.relative_to(out).parts)
        times = pq.read_table(file, columns=["time_utc"], partitioning=None)["time_utc"]
        assert {(t.year, t.month) for t in times.to_pylist()} == {(year, month)}
        assert "year" not in pq.read_schema(file).names  # the folder holds it, not the file


@pytest.mark.parametrize(
    "partition_by",
    [(), ("year",), ("year", "month", "day"), ("impact_type",), ("impact_type", "year")],
)
def test_partition_by_variants(
    conn: dict[str, Any], tmp_path: Path, partition_by: tuple[str, ...]
) -> None:
    out = tmp_path / "records"
    result = export_parquet(out, **conn, partition_by=partition_by, batch_records=400)
    for file in _data_files(out):
        keys = [part.split("=")[0] for part in file.parent.relative_to(out).parts]
        assert keys == list(partition_by)
    if partition_by:
        # Readers add the partition columns, from the folder names, after the file columns.
        assert result.columns[-len(partition_by) :] == partition_by
    _same_rows(pd.read_parquet(out), _load(conn))


# --- schema: files with different metadata columns ---------------------------------------------


@DASK_READ_WARNING
def test_files_with_different_metadata_columns_all_show_every_column(
    tmp_path: Path, make_sandbox: Callable[..., SandboxServer], caplog: pytest.LogCaptureFixture
) -> None:
    records = _drifting_metadata()
    out = tmp_path / "drift"
    srv = make_sandbox(records=records, customer_records=[])
    conn = {"api_key": srv.api_key, "base_url": srv.url, "progress": False}
    with caplog.at_level(logging.DEBUG, logger="impactframe"):
        result = export_parquet(out, **conn, page_size=50, batch_records=100, partition_by=())
    # Batches 0-1 lack the late keys, 2-3 have none, 4-5 lack "alpha": all six differed.
    assert sum("rewriting" in r.getMessage() for r in caplog.records) == result.files == 6
    expected = _load(conn)
    columns = ["metadata_a b/c", "metadata_alpha", "metadata_omega"]
    assert [c for c in expected.columns if c.startswith("metadata_")] == columns

    common = pq.read_schema(out / "_common_metadata")
    assert set(columns) <= set(common.names)
    assert list(common.names) == list(expected.columns)  # SPEC §3 order, metadata sorted
    pandas_meta = json.loads(common.metadata[b"pandas"])
    assert [c["name"] for c in pandas_meta["columns"]] == list(common.names)
    # Every file now carries every column, so readers that read one file's schema see them.
    for file in _data_files(out):
        assert pq.read_schema(file).equals(common, check_metadata=False), file.name
    assert pq.read_metadata(out / "_metadata").num_rows == result.records
    assert result.columns == tuple(expected.columns)
    for reader in READERS.values():
        _same_rows(reader(out), expected)


def test_common_metadata_with_partitions_and_drift(
    tmp_path: Path, make_sandbox: Callable[..., SandboxServer]
) -> None:
    out = tmp_path / "drift"
    srv = make_sandbox(records=_drifting_metadata(), customer_records=[])
    conn = {"api_key": srv.api_key, "base_url": srv.url, "progress": False}
    result = export_parquet(out, **conn, batch_records=150)
    expected = _load(conn)
    dataset = ds.parquet_dataset(out / "_metadata", partitioning="hive")
    assert dataset.count_rows() == result.records == 600
    assert {"metadata_alpha", "metadata_omega"} <= set(dataset.schema.names)
    _same_rows(dataset.to_table().to_pandas(), expected)
    _same_rows(READERS["duckdb"](out), expected)


def test_drift_is_warned_once_and_kept_even_when_its_type_changes(
    tmp_path: Path, make_sandbox: Callable[..., SandboxServer]
) -> None:
    records = generate_records(300, seed=24, start="2024-01-01", end="2024-03-31")
    for i, record in enumerate(records):
        record["partner"] = i if i < 150 else f"p{i}"  # a number first, text later
    # A new impact type in the fifth batch.
    records[200] = {k: v for k, v in records[200].items() if k in ("user_id", "time_utc")}
    records[200]["kelp_planted"] = 3
    out = tmp_path / "drift"
    srv = make_sandbox(records=records, customer_records=[])
    conn = {"api_key": srv.api_key, "base_url": srv.url, "progress": False}
    with pytest.warns(SchemaDriftWarning) as caught:
        result = export_parquet(out, **conn, page_size=50, batch_records=50)
    messages = [str(w.message) for w in caught]
    # Six batches: one warning per kind of drift, not one per batch.
    assert sum("'partner'" in m for m in messages) == 2  # Int64, then string
    assert sum("'kelp_planted'" in m for m in messages) == 1
    assert caught[0].filename == __file__  # points at the caller
    got = pd.read_parquet(out).sort_values("time_utc", ignore_index=True)
    partner = got["partner"].astype(object).where(got["partner"].notna(), None).tolist()
    assert partner == [str(i) if i < 150 else None if i == 200 else f"p{i}" for i in range(300)]
    assert got["kelp_planted"].notna().sum() == 1
    assert got.loc[got["impact_type"] == "kelp_planted", "amount"].tolist() == [3]
    assert result.columns.index("kelp_planted") < result.columns.index("category")
    assert result.columns.index("partner") > result.columns.index("metadata_source")


# --- batches -------------------------------------------------------------------------------------


def test_record_repeated_across_a_batch_boundary_is_dropped(
    server: SandboxServer, conn: dict[str, Any], tmp_path: Path
) -> None:
    expected = _load(conn, page_size=50)
    server.clear_log()
    # Every page after the first starts again with the previous page's last record, and every
    # page boundary is a batch boundary.
    server.inject(Fault("repeat"), times=None)
    # One chain: every page boundary is a batch boundary.
    result = export_parquet(tmp_path / "out", **conn, page_size=50, batch_records=50, concurrency=1)
    server.clear_faults()
    assert sum(r.fault == "repeat" for r in server.requests) >= len(RECORDS) // 50 - 1
    assert result.records == len(RECORDS)
    got = pd.read_parquet(tmp_path / "out")
    assert not got.duplicated(["user_id", "time_utc"]).any()
    _same_rows(got, expected)


def test_same_key_other_content_across_a_batch_boundary_is_kept_and_warned(
    tmp_path: Path, make_sandbox: Callable[..., SandboxServer]
) -> None:
    records = generate_records(100, seed=25)
    twin = dict(records[49], category="changed")  # same (user_id, time_utc), other content
    twin.pop("metadata", None)
    records.insert(50, twin)
    out = tmp_path / "twins"
    srv = make_sandbox(records=records, customer_records=[])
    conn = {"api_key": srv.api_key, "base_url": srv.url, "progress": False}
    with pytest.warns(DuplicateRecordWarning, match="differ") as caught:
        result = export_parquet(out, **conn, page_size=50, batch_records=50)
    with pytest.warns(DuplicateRecordWarning):
        expected = _load(conn)
    assert len(caught) == 1
    assert caught[0].filename == __file__
    assert result.records == len(expected) == 101
    _same_rows(pd.read_parquet(out), expected)


def test_batches_bound_what_is_built_at_once(conn: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = export_parquet(  # one chain: full pages, so batches of whole pages
        out, **conn, partition_by=(), page_size=40, batch_records=100, concurrency=1
    )
    sizes = [pq.read_metadata(f).num_rows for f in _data_files(out)]
    # A batch is whole pages: the first that reach 100 records (3 pages of 40).
    assert sizes == [120] * 7 + [60]
    assert result.files == len(sizes)


# --- queries, endpoints, metadata modes ---------------------------------------------------------


def test_customer_records_with_the_cli_spelling(conn: dict[str, Any], tmp_path: Path) -> None:
    email = CUSTOMER_RECORDS[0]["customer"]["customer_email"]
    out = tmp_path / "customers"
    result = export_parquet(
        out, "customer-records", **conn, customer_email=email, sort_order="desc", page_size=7
    )
    expected = _load(conn, "customer_records", customer_email=email)
    assert 0 < result.records == len(expected)
    assert result.columns[:4] == ("user_id", "customer_id", "customer_email", "customer_name")
    _same_rows(pd.read_parquet(out), expected)


@pytest.mark.parametrize(
    "query",
    [
        {"filter_by": ["coral_restored", "waste_removed"]},
        {"start_date": "2023-05-02", "end_date": dt.date(2024, 2, 1)},
        {"max_records": 123, "sort_order": "desc"},
        {"concurrency": 4, "sort_order": "desc", "filter_by": "tree_planted"},
    ],
)
def test_query_arguments_select_the_loader_rows(
    conn: dict[str, Any], tmp_path: Path, query: dict[str, Any]
) -> None:
    out = tmp_path / "q"
    result = export_parquet(out, **conn, page_size=101, batch_records=150, **query)
    expected = _load(conn, **query)
    assert result.records == len(expected) > 0
    _same_rows(pd.read_parquet(out), expected)


@pytest.mark.parametrize(
    ("metadata", "loaded_as"), [("json", "json"), ("dict", "json"), ("drop", "drop")]
)
def test_metadata_modes(
    conn: dict[str, Any], tmp_path: Path, metadata: str, loaded_as: str
) -> None:
    out = tmp_path / "m"
    export_parquet(out, **conn, metadata=metadata, batch_records=300)
    expected = _load(conn, metadata=loaded_as)
    got = pd.read_parquet(out)
    _same_rows(got, expected)
    if metadata == "dict":
        first = got.dropna(subset=["metadata"]).iloc[0]["metadata"]
        assert isinstance(json.loads(first), dict)


def test_metadata_prefix(conn: dict[str, Any], tmp_path: Path) -> None:
    result = export_parquet(tmp_path / "p", **conn, metadata_prefix="md.")
    assert any(c.startswith("md.") for c in result.columns)
    assert not any(c.startswith("metadata_") for c in result.columns)


def test_empty_result_is_a_readable_dataset(conn: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "empty"
    result = export_parquet(out, **conn, start_date="2030-01-01")
    assert result.records == 0
    assert result.files == 1
    got = pd.read_parquet(out)
    expected = _load(conn, start_date="2030-01-01")
    assert got.empty
    assert list(got.columns) == list(expected.columns)
    assert str(result).startswith("0 records -> ")


def test_result(conn: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = export_parquet(str(out), **conn, filter_by="money_donated")
    assert isinstance(result, ExportResult)
    assert result.path == out.absolute()
    assert result.columns[-2:] == ("year", "month")
    assert f"{result.records:,} records -> {out}" in str(result)
    with pytest.raises(AttributeError):
        result.records = 0  # type: ignore[misc]


def test_client_argument(server: SandboxServer, tmp_path: Path) -> None:
    with Client(server.api_key, base_url=server.url) as client:
        result = export_parquet(tmp_path / "c", client=client, progress=False, max_records=10)
        assert result.records == 10
        client.get_json("/v1/records", {"limit": "1"})  # a client passed in stays open


def test_default_umask_permissions(conn: dict[str, Any], tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        export_parquet(tmp_path / "u", **conn, max_records=5)
    finally:
        os.umask(mask)
    assert (tmp_path / "u").stat().st_mode & 0o777 == 0o755
    assert _data_files(tmp_path / "u")[0].stat().st_mode & 0o777 == 0o644


# --- atomicity and overwrite --------------------------------------------------------------------


class _FailingAfter(Client):
    """A real client that, on its n-th page request, makes the sandbox fail for good."""

    def __init__(self, server: SandboxServer, n: int, parent: Path) -> None:
        super().__init__(server.api_key, base_url=server.url, max_retries=2)
        self._sleep = lambda _seconds: None  # retries must not sleep for real
        self.server, self.n, self.parent, self.calls = server, n, parent, 0
        self.seen: list[str] = []

    def get_body(self, path: str, params: Any = None, **options: Any) -> Any:
        self.calls += 1
        if self.calls == self.n:
            # Pages are fetched ahead of the writer: let it write what it has first.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(self.parent.rglob("*.parquet")):
                time.sleep(0.01)
            self.seen = [p.relative_to(self.parent).as_posix() for p in self.parent.rglob("*")]
            self.server.inject(Fault("status", status=500), times=None)
        return super().get_body(path, params, **options)


def test_failed_export_leaves_nothing_behind(server: SandboxServer, tmp_path: Path) -> None:
    server.clear_faults()
    client = _FailingAfter(server, 6, tmp_path)
    with pytest.raises(APIError) as info:
        export_parquet(
            tmp_path / "out", client=client, progress=False, page_size=50, batch_records=100,
            concurrency=1,  # the n-th request of one chain fails
        )  # fmt: skip
    server.clear_faults()
    assert info.value.status == 500
    # Two batches had been written in the temporary folder when the API broke...
    assert any(".tmp-" in p and p.endswith(".parquet") for p in client.seen)
    # ...and none of it is left, nor anything at the target.
    assert list(tmp_path.iterdir()) == []


def test_invalid_data_mid_way_leaves_nothing_behind(
    tmp_path: Path, make_sandbox: Callable[..., SandboxServer]
) -> None:
    records = generate_records(300, seed=5)
    # A known field of the wrong type, in the third batch (SPEC §3: never coerced).
    records[250] = {k: v for k, v in records[250].items() if k in ("user_id", "time_utc")}
    records[250]["tree_planted"] = "many"
    old = tmp_path / "out"
    srv = make_sandbox(records=records, customer_records=[])
    conn = {"api_key": srv.api_key, "base_url": srv.url, "progress": False}
    export_parquet(old, **conn, max_records=10)
    before = sorted(p.name for p in old.rglob("*"))
    with pytest.raises(ValidationError, match="tree_planted"):
        export_parquet(old, **conn, page_size=50, batch_records=100, overwrite=True)
    # The old dataset is untouched and no temporary folder is left.
    assert sorted(p.name for p in old.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_existing_path_needs_overwrite(
    server: SandboxServer, conn: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    export_parquet(out, **conn, filter_by="tree_planted")
    server.clear_log()
    with pytest.raises(ValueError, match="overwrite") as info:
        export_parquet(out, **conn)
    assert str(out) in str(info.value)
    assert server.requests == []

    result = export_parquet(out, **conn, filter_by="money_donated", overwrite=True)
    got = pd.read_parquet(out)
    assert set(got["impact_type"].astype(str)) == {"money_donated"}
    assert len(got) == result.records
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no .old-/.tmp- folder left


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(
    server: SandboxServer, conn: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a dataset impactframe wrote"):
        export_parquet(tmp_path, **conn, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        export_parquet(tmp_path / "file", **conn, overwrite=True)
    assert server.requests == []


def test_an_empty_existing_folder_is_replaced(conn: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    result = export_parquet(tmp_path / "out", **conn, overwrite=True, max_records=3)
    assert result.records == 3


def test_missing_parents_are_created(conn: dict[str, Any], tmp_path: Path) -> None:
    result = export_parquet(tmp_path / "a" / "b" / "out", **conn, max_records=3)
    assert (result.path / "_common_metadata").is_file()


# --- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"partition_by": ("week",)}, "partition_by"),
        ({"partition_by": "week"}, "partition_by"),
        ({"partition_by": ("year", "year")}, "partition_by"),
        ({"partition_by": 5}, "partition_by"),
        ({"endpoint": "users"}, "endpoint"),
        ({"endpoint": "customer_records", "customer_email": ""}, "customer_email"),
        ({"customer_email": "a@b.c"}, "customer_email"),
        ({"batch_records": 0}, "batch_records"),
        ({"batch_records": True}, "batch_records"),
        ({"metadata": "xml"}, "metadata"),
        ({"metadata_prefix": ""}, "metadata_prefix"),
        ({"sort_order": "up"}, "sort_order"),
        ({"page_size": 1001}, "page_size"),
        ({"max_records": 0}, "max_records"),
        ({"filter_by": "kelp"}, "filter_by"),
        ({"start_date": "2024-02-30"}, "start_date"),
        ({"start_date": "2024-02-02", "end_date": "2024-02-01"}, "start_date"),
        ({"concurrency": 0}, "concurrency"),
        ({"progress": "yes"}, "progress"),
        ({"overwrite": "yes"}, "overwrite"),
        ({"path": ""}, "path"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"client": "c"}, "client"),
    ],
)
def test_bad_arguments_fail_before_any_request(
    server: SandboxServer, tmp_path: Path, kwargs: dict[str, Any], argument: str
) -> None:
    server.clear_log()
    call: dict[str, Any] = {"path": tmp_path / "out", "progress": False}
    if "client" not in kwargs:
        call |= {"api_key": server.api_key, "base_url": server.url}
    call |= kwargs
    path = call.pop("path")
    endpoint = call.pop("endpoint", "records")
    with pytest.raises(ValueError, match=argument):
        export_parquet(path, endpoint, **call)
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_client_and_api_key_are_alternatives(server: SandboxServer, tmp_path: Path) -> None:
    with (
        Client(server.api_key, base_url=server.url) as client,
        pytest.raises(ValueError, match="client"),
    ):
        export_parquet(tmp_path / "x", client=client, api_key=server.api_key)


def test_partition_keys_constant() -> None:
    assert PARTITION_KEYS == ("year", "month", "day", "impact_type")


def test_unified_column_order_follows_spec_section_3() -> None:
    import pyarrow as pa

    from impactframe.export._write import _File, _unify

    def file(*names: str) -> _File:
        return _File("x", pa.schema([(n, pa.int64()) for n in names]))

    files = [
        file("user_id", "money_donated", "category", "metadata_b", "partner"),
        file("user_id", "money_donated", "kelp", "category", "metadata_a", "zeta"),
        file("user_id", "money_donated", "category", "metadata_c"),
    ]
    assert _unify(files, "metadata_").names == [
        "user_id",
        "money_donated",
        "kelp",  # a new impact type's column, before category
        "category",
        "metadata_a",
        "metadata_b",
        "metadata_c",
        "partner",  # drift columns last, in the order first seen
        "zeta",
    ]
    mixed = [_File("x", pa.schema([("p", t)])) for t in (pa.int64(), pa.large_string())]
    assert _unify(mixed, None).field("p").type == pa.large_string()
    widened = [_File("x", pa.schema([("p", t)])) for t in (pa.int64(), pa.float64())]
    assert _unify(widened, None).field("p").type == pa.float64()


def test_progress_bar_counts_records(
    conn: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_parquet(tmp_path / "p", **(conn | {"progress": True}), page_size=300)
    err = capsys.readouterr().err
    assert "impactframe export records" in err
