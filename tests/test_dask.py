"""impactframe.dask against the sandbox: same rows as the loader, meta, partitions, key hiding."""

from __future__ import annotations

import datetime as dt
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import impactframe.loaders as loaders
from impactframe._constants import IMPACT_TYPES
from impactframe.errors import SchemaDriftWarning
from impactframe.sandbox import SandboxServer, generate_records

dd = pytest.importorskip("dask.dataframe")
from dask.tokenize import normalize_token, tokenize  # noqa: E402

from impactframe._readers import HiddenKey  # noqa: E402
from impactframe.dask import read_customer_records, read_records  # noqa: E402

SECRET = "sk-live-4f9c2e-SECRET-never-shown"
RECORDS = generate_records(500, seed=31, start="2023-01-01", end="2024-06-30")
CUSTOMER_RECORDS = generate_records(300, seed=32, customers=True, start="2024-01-01")


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(records=RECORDS, customer_records=CUSTOMER_RECORDS, api_key=SECRET) as srv:
        yield srv


@pytest.fixture
def conn(server: SandboxServer) -> dict[str, str]:
    server.clear_faults()
    server.clear_log()
    return {"api_key": server.api_key, "base_url": server.url}


def _compute(ddf: Any) -> pd.DataFrame:
    return ddf.compute(scheduler="sync").reset_index(drop=True)


def _load(conn: dict[str, str], endpoint: str = "records", **query: Any) -> pd.DataFrame:
    load = loaders.load_records if endpoint == "records" else loaders.load_customer_records
    return load(**conn, progress=False, **query)


def _day(record: dict[str, Any]) -> dt.date:
    return dt.date.fromisoformat(record["time_utc"][:10])


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
def test_computed_frame_equals_load_records_json(conn: dict[str, str], sort_order: str) -> None:
    ddf = read_records(**conn, npartitions=5, sort_order=sort_order, page_size=50)
    assert ddf.npartitions == 5
    expected = _load(conn, metadata="json", sort_order=sort_order)
    assert len(expected) == len(RECORDS)
    assert_frame_equal(_compute(ddf), expected)


def test_default_is_one_partition_per_month(conn: dict[str, str]) -> None:
    ddf = read_records(**conn)
    first, last = _day(RECORDS[0]), _day(RECORDS[-1])
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    assert ddf.npartitions == months > 12
    assert ddf.divisions == (None,) * (months + 1)  # unknown divisions


def test_partitions_match_meta_and_follow_the_sort_order(conn: dict[str, str]) -> None:
    for sort_order in ("asc", "desc"):
        ddf = read_records(**conn, npartitions=4, sort_order=sort_order, filter_by="tree_planted")
        previous = None
        for i in range(ddf.npartitions):
            part = ddf.get_partition(i).compute(scheduler="sync")
            assert list(part.columns) == list(ddf.columns)
            assert part.dtypes.to_dict() == ddf.dtypes.to_dict()
            assert set(part["impact_type"].astype(str)) <= {"tree_planted"}
            if previous is not None and len(part):
                if sort_order == "asc":
                    assert part["time_utc"].min() > previous
                else:
                    assert part["time_utc"].max() < previous
            if len(part):
                previous = part["time_utc"].iloc[-1]


def test_metadata_keys_select_exactly_those_columns(conn: dict[str, str]) -> None:
    keys = ["source", "order_id", "not_a_key"]
    ddf = read_records(**conn, metadata_keys=keys, npartitions=3, start_date="2023-03-01")
    wanted = ["metadata_not_a_key", "metadata_order_id", "metadata_source"]
    fixed = ["user_id", "time_utc", "impact_type", "amount", *IMPACT_TYPES, "category"]
    assert list(ddf.columns) == fixed + wanted
    full = _load(conn, start_date="2023-03-01")
    assert "metadata_facility" in full.columns  # left out of the Dask frame
    expected = full[[*fixed, "metadata_order_id", "metadata_source"]].copy()
    missing = pd.Series(pd.NA, index=expected.index, dtype=expected["user_id"].dtype)
    expected.insert(len(fixed), "metadata_not_a_key", missing)
    assert_frame_equal(_compute(ddf), expected)  # the keys not named: left out quietly


def test_metadata_keys_not_named_are_left_out_without_a_warning(conn: dict[str, str]) -> None:
    # metadata_keys is the caller's selection: the other keys go, and no warning says so
    # (pytest turns any warning into an error here).
    ddf = read_records(**conn, metadata_keys=["source"], npartitions=3)
    full = _load(conn)
    for i in range(ddf.npartitions):
        part = ddf.get_partition(i).compute(scheduler="sync")
        assert [c for c in part.columns if c.startswith("metadata")] == ["metadata_source"]
    assert sum(c.startswith("metadata_") for c in full.columns) > 3  # there were others


def test_customer_records(conn: dict[str, str]) -> None:
    email = CUSTOMER_RECORDS[3]["customer"]["customer_email"]
    ddf = read_customer_records(**conn, customer_email=email, npartitions=3)
    expected = _load(conn, "customer_records", customer_email=email, metadata="json")
    assert len(expected) > 0
    assert list(ddf.columns[:4]) == ["user_id", "customer_id", "customer_email", "customer_name"]
    assert_frame_equal(_compute(ddf), expected)


def test_pyarrow_backend(conn: dict[str, str]) -> None:
    ddf = read_records(**conn, npartitions=2, dtype_backend="pyarrow", end_date="2023-06-30")
    expected = _load(conn, metadata="json", dtype_backend="pyarrow", end_date="2023-06-30")
    assert ddf.dtypes.to_dict() == expected.dtypes.to_dict()
    assert_frame_equal(_compute(ddf), expected)


def test_nothing_matches(conn: dict[str, str]) -> None:
    ddf = read_records(**conn, start_date="2030-01-01")
    got = _compute(ddf)
    assert got.empty
    assert got.dtypes.to_dict() == ddf.dtypes.to_dict()


def test_a_new_impact_type_in_a_window_is_kept(tmp_path: Any) -> None:
    records = generate_records(120, seed=33, start="2024-01-01", end="2024-04-30")
    records.insert(
        60,
        {
            "user_id": records[0]["user_id"],
            "time_utc": "2024-03-01T12:00:00.000Z",
            "kelp_planted": 7,
        },
    )
    with SandboxServer(records=records, customer_records=[]) as srv:
        conn = {"api_key": srv.api_key, "base_url": srv.url}
        ddf = read_records(**conn, npartitions=4)
        assert list(ddf.dtypes["impact_type"].categories) == list(IMPACT_TYPES)
        with pytest.warns(SchemaDriftWarning, match="kelp_planted") as caught:
            got = _compute(ddf)
        with pytest.warns(SchemaDriftWarning, match="kelp_planted"):
            expected = _load(conn, metadata="json")
    # The partition says the column is left out, not (as the loader does) that it is kept.
    (message,) = [str(w.message) for w in caught]
    assert "unknown impact type 'kelp_planted' in 1 record(s)" in message
    assert "its column 'kelp_planted' is left out" in message
    assert "Int64 column" not in message
    # The value and its amount are kept; the type's own column is not in meta.
    assert got.loc[got["impact_type"] == "kelp_planted", "amount"].tolist() == [7]
    assert list(got["impact_type"].cat.categories) == [*IMPACT_TYPES, "kelp_planted"]
    assert_frame_equal(got, expected.drop(columns="kelp_planted"))


DRIFT = [
    {
        "user_id": f"U{i}",
        "time_utc": f"2024-0{month}-0{day}T00:00:00.000Z",
        "tree_planted": i,
        "planted_by": "volunteers",
    }
    for i, (month, day) in enumerate([(1, 1), (1, 2), (2, 1), (3, 1), (3, 2), (4, 1)], 1)
]


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_field_left_out_by_meta_is_named_not_said_kept(scheduler: str) -> None:
    before = (list(warnings.filters), warnings.showwarning)
    with SandboxServer(records=DRIFT, customer_records=[]) as srv:
        conn = {"api_key": srv.api_key, "base_url": srv.url}
        ddf = read_records(**conn, npartitions=4)
        with pytest.warns(SchemaDriftWarning) as caught:
            got = ddf.compute(scheduler=scheduler).reset_index(drop=True)
        with pytest.warns(SchemaDriftWarning, match="'planted_by' kept as a column"):
            expected = _load(conn, metadata="json")
    assert "planted_by" not in got.columns
    assert_frame_equal(got, expected.drop(columns="planted_by"))
    messages = [str(w.message) for w in caught]
    assert all("kept" not in m for m in messages)
    # One warning per partition (four windows, each holding the field).
    assert (
        messages
        == [
            "user_records: unknown field 'planted_by' is left out: the Dask frame's columns (meta) "
            "are fixed before any partition is fetched"
        ]
        * 4
    )
    # Threads built partitions at once: no warning state was left behind.
    assert (list(warnings.filters), warnings.showwarning) == before


# --- the key ------------------------------------------------------------------------------------


def test_the_key_is_in_no_repr_graph_or_token_input(conn: dict[str, str]) -> None:
    ddf = read_records(**conn, npartitions=3)
    graph = dict(ddf.__dask_graph__())
    texts = [
        repr(ddf),
        str(ddf),
        repr(ddf.expr),
        ddf.expr.tree_repr(),
        ddf.optimize().expr.tree_repr(),
        str(ddf.dask),
        str(graph),
        str(ddf.__dask_keys__()),
    ]
    texts += [f"{task.args} {task.kwargs}" for task in graph.values()]
    values = [v for task in graph.values() for v in (*task.args, *task.kwargs.values())]
    hidden = [v for v in values if type(v).__name__ == "_WindowReader"]
    assert len(hidden) == 3
    texts += [repr(r) for r in hidden]
    texts += [str(normalize_token(r)) for r in hidden]
    for text in texts:
        assert SECRET not in text
    # The key still reaches the workers: the graph computes.
    assert len(ddf.compute(scheduler="sync")) == len(RECORDS)


def test_hidden_key_tokens_differ_by_key_and_pickle() -> None:
    import pickle

    a, b = HiddenKey("key-a", "http://x"), HiddenKey("key-b", "http://x")
    assert tokenize(a) != tokenize(b)
    assert tokenize(a) == tokenize(HiddenKey("key-a", "http://x"))
    assert "key-a" not in repr(a)
    assert pickle.loads(pickle.dumps(a)).get() == "key-a"


def test_on_a_distributed_cluster(conn: dict[str, str]) -> None:
    distributed = pytest.importorskip("distributed")
    ddf = read_records(**conn, npartitions=6, sort_order="desc")
    with (
        distributed.LocalCluster(
            processes=False, n_workers=2, threads_per_worker=2, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        got = client.compute(ddf).result().reset_index(drop=True)
    assert_frame_equal(got, _load(conn, metadata="json", sort_order="desc"))


# --- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"npartitions": 0}, "npartitions"),
        ({"npartitions": True}, "npartitions"),
        ({"metadata_keys": [""]}, "metadata_keys"),
        ({"metadata_keys": 5}, "metadata_keys"),
        ({"dtype_backend": "arrow"}, "dtype_backend"),
        ({"sort_order": "up"}, "sort_order"),
        ({"filter_by": "kelp"}, "filter_by"),
        ({"page_size": 0}, "page_size"),
        ({"start_date": "2024-13-01"}, "start_date"),
        ({"base_url": "http://example.com"}, "base_url"),
    ],
)
def test_bad_arguments_fail_before_any_request(
    server: SandboxServer, conn: dict[str, str], kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        read_records(**(conn | kwargs))
    assert server.requests == []


def test_missing_key_names_the_environment_variable(
    server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMPACTFRAME_API_KEY", raising=False)
    server.clear_log()
    with pytest.raises(ValueError, match="IMPACTFRAME_API_KEY"):
        read_records(base_url=server.url)
    assert server.requests == []


def test_without_dask_the_error_names_the_extra(
    server: SandboxServer, conn: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(ImportError, match=r"impactframe\[dask\]"):
        read_records(**conn)
    assert server.requests == []
