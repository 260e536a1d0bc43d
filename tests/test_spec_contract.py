"""Black-box checks of SPEC.md §1–§11, written from the contract as an outside reviewer would.

Everything goes through the public surface: ``impactframe`` (``ifr``), ``impactframe.sandbox``,
``impactframe.schemas``, ``impactframe.aggregate``, ``impactframe.dask`` and the command line
(``python -m impactframe``). The sandbox is fed hand-made records in the API's JSON shape, and
``server.inject(Fault(...))`` serves faults or exact bodies (a ``"status"`` fault with status 200
and a ``body`` is a page the API could send). Tests that show the implementation deviating from
SPEC are marked ``xfail(strict=True)`` with the section and the difference.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

import impactframe as ifr
from impactframe import aggregate, schemas
from impactframe.sandbox import Fault, SandboxServer, encode_cursor, generate_records

REPO = Path(__file__).resolve().parents[1]
KNOWN_TYPES = [
    "tree_planted",
    "waste_removed",
    "carbon_captured",
    "coral_restored",
    "money_donated",
]
RECORD_FIXED = ["user_id", "time_utc", "impact_type", "amount", *KNOWN_TYPES, "category"]
CUSTOMER_FIXED = [
    "user_id",
    "customer_id",
    "customer_email",
    "customer_name",
    *RECORD_FIXED[1:],
]
FIXED = {"records": RECORD_FIXED, "customer_records": CUSTOMER_FIXED}
PATHS = {"records": "/v1/records", "customer_records": "/v1/customer_records"}
SECRET = "sk-contract-Zq8vR2xT"


def rec(
    user: str, time_utc: str, kind: str = "tree_planted", amount: Any = 1, **extra: Any
) -> dict[str, Any]:
    """One record in the API's JSON shape (§1)."""
    return {"user_id": user, "time_utc": time_utc, kind: amount, **extra}


def cust(record: dict[str, Any], cid: str, email: str, name: str | None) -> dict[str, Any]:
    """A customer record: ``record`` plus ``customer`` (``customer_name`` may be missing)."""
    customer = {"customer_id": cid, "customer_email": email}
    if name is not None:
        customer["customer_name"] = name
    return {"user_id": record["user_id"], "customer": customer, **record}


RECORDS = [
    rec("U1", "2023-01-05T10:00:00.000Z", "tree_planted", 10, category="food",
        metadata={"order_id": "O-1", "source": "shopify"}),
    rec("U1", "2023-01-20T11:00:00.123Z", "waste_removed", 15),
    rec("U2", "2023-03-02T00:00:00.000Z", "carbon_captured", 5,
        metadata={"facility": "Portland", "Batch": "B-1"}),
    rec("U1", "2023-04-15T23:59:59.999Z", "coral_restored", 2),
    rec("U3", "2023-07-01T12:00:00.500Z", "money_donated", 1234,
        metadata={"\u00e9": "accent", "_x": "u"}),
    rec("U2", "2023-12-31T23:59:59.999Z", "tree_planted", 0),
    rec("U1", "2024-01-01T00:00:00.000Z", "tree_planted", 3, category="plastic"),
    rec("U3", "2024-02-29T08:30:00.250Z", "waste_removed", 40, metadata={"Order ID": "x y"}),
    rec("U1", "2024-06-12T15:22:14.753Z", "carbon_captured", 50),
    rec("U2", "2024-09-16T20:30:13.391Z", "money_donated", 1000),
    rec("U1", "2024-09-17T13:24:04.429Z", "tree_planted", 7),
    rec("U3", "2024-09-17T14:32:01.638Z", "tree_planted", 1, metadata={"source": "api"}),
]  # fmt: skip
RECORD_META_KEYS = sorted({k for r in RECORDS for k in r.get("metadata", {})})

CUSTOMERS = [
    ("C1", "ann+impact@example.com", "Ann Lee"),
    ("C2", "bob@example.com", "Bob Roy"),
    ("C3", "cy/=@example.com", None),
]
CUSTOMER_RECORDS = [
    cust(rec("U1", "2023-02-01T09:00:00.000Z", "tree_planted", 4), *CUSTOMERS[0]),
    cust(rec("U1", "2023-05-10T10:00:00.000Z", "money_donated", 250,
             metadata={"campaign": "spring"}), *CUSTOMERS[1]),
    cust(rec("U1", "2023-08-08T08:08:08.808Z", "waste_removed", 12), *CUSTOMERS[2]),
    cust(rec("U1", "2024-01-15T12:00:00.000Z", "tree_planted", 9, category="food"), *CUSTOMERS[0]),
    cust(rec("U1", "2024-03-03T03:03:03.003Z", "carbon_captured", 30,
             metadata={"campaign": "march", "Site": "PDX"}), *CUSTOMERS[1]),
    cust(rec("U1", "2024-06-21T18:16:02.083Z", "tree_planted", 2), *CUSTOMERS[1]),
    cust(rec("U1", "2024-06-21T20:34:35.913Z", "money_donated", 1000), *CUSTOMERS[0]),
]  # fmt: skip
CUSTOMER_META_KEYS = sorted({k for r in CUSTOMER_RECORDS for k in r.get("metadata", {})})
DATA = {"records": RECORDS, "customer_records": CUSTOMER_RECORDS}


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key or host from the developer's shell, and a private cache folder."""
    monkeypatch.delenv("IMPACTFRAME_API_KEY", raising=False)
    monkeypatch.delenv("IMPACTFRAME_BASE_URL", raising=False)
    monkeypatch.setenv("IMPACTFRAME_CACHE_DIR", str(tmp_path / "env-cache"))


@pytest.fixture
def serve() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandboxes with given records (default: none); stopped after the test."""
    servers: list[SandboxServer] = []

    def start(records: Any = (), customer_records: Any = (), **kwargs: Any) -> SandboxServer:
        server = SandboxServer(
            records=list(records), customer_records=list(customer_records), **kwargs
        ).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def srv(serve: Callable[..., SandboxServer]) -> SandboxServer:
    """A sandbox serving RECORDS and CUSTOMER_RECORDS."""
    return serve(RECORDS, CUSTOMER_RECORDS)


def conn(server: SandboxServer) -> dict[str, str]:
    """The api_key/base_url keywords that point a loader at ``server``."""
    return {"api_key": server.api_key, "base_url": server.url}


def client(server: SandboxServer, **kwargs: Any) -> ifr.Client:
    return ifr.Client(server.api_key, base_url=server.url, **kwargs)


LOADERS = {"records": ifr.load_records, "customer_records": ifr.load_customer_records}


def load(endpoint: str, server: SandboxServer, **kwargs: Any) -> pd.DataFrame:
    if "client" not in kwargs:
        kwargs = {**conn(server), **kwargs}
    return LOADERS[endpoint](**kwargs)


def page(records: list[dict[str, Any]], cursor: Any = "absent", key: str = "user_records") -> str:
    """A page body as the API sends it; ``cursor="absent"`` leaves the key out."""
    body: dict[str, Any] = {key: records}
    if cursor != "absent":
        body["cursor"] = cursor
    return json.dumps(body)


def serve_body(
    server: SandboxServer, body: str, *, status: int = 200, times: int | None = 1
) -> None:
    server.inject(Fault("status", status=status, body=body), times=times)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).as_unit("ms")


def is_string(dtype: Any, backend: str) -> bool:
    if backend == "pyarrow":
        arrow = isinstance(dtype, pd.ArrowDtype) and (
            pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
        )
        return arrow or (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow")
    return isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA


def is_int64(dtype: Any, backend: str) -> bool:
    if backend == "pyarrow":
        return isinstance(dtype, pd.ArrowDtype) and dtype.pyarrow_dtype == pa.int64()
    return dtype == pd.Int64Dtype()


def is_float64(dtype: Any, backend: str) -> bool:
    if backend == "pyarrow":
        return isinstance(dtype, pd.ArrowDtype) and dtype.pyarrow_dtype == pa.float64()
    return dtype == pd.Float64Dtype()


def is_time(dtype: Any, backend: str) -> bool:
    if backend == "pyarrow":
        return isinstance(dtype, pd.ArrowDtype) and dtype.pyarrow_dtype == pa.timestamp(
            "ms", tz="UTC"
        )
    return dtype == pd.DatetimeTZDtype("ms", "UTC")


def is_category(dtype: Any) -> bool:
    # pandas keeps categoricals as they are under dtype_backend="pyarrow"; an Arrow dictionary
    # would be the Arrow-backed equivalent.
    return isinstance(dtype, pd.CategoricalDtype) or (
        isinstance(dtype, pd.ArrowDtype) and pa.types.is_dictionary(dtype.pyarrow_dtype)
    )


def categories(series: pd.Series) -> list[str]:
    if isinstance(series.dtype, pd.CategoricalDtype):
        return [str(c) for c in series.cat.categories]
    return [str(c) for c in series.array._pa_array.combine_chunks().dictionary.to_pylist()]


def keys_of(df: pd.DataFrame) -> list[tuple[str, pd.Timestamp]]:
    times = pd.to_datetime(df["time_utc"].astype("datetime64[ms, UTC]"))
    return list(zip(df["user_id"].astype(str), times, strict=True))


def expected_keys(records: list[dict[str, Any]]) -> list[tuple[str, pd.Timestamp]]:
    keys = [(r["user_id"], ts(r["time_utc"])) for r in records]
    return sorted(keys, key=lambda k: (k[1], k[0]))


def drift(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ifr.SchemaDriftWarning)]


def cursors_sent(server: SandboxServer) -> list[str]:
    return [r.params["cursor"][0] for r in server.requests if "cursor" in r.params]


# -- §1 / §2 public API and arguments ------------------------------------------------------------


def test_public_names_are_exported_and_typed() -> None:
    for name in (
        "Client",
        "load_records",
        "load_customer_records",
        "export_parquet",
        "pseudonymize",
        "ImpactFrameError",
        "APIError",
        "AuthenticationError",
        "RateLimitError",
        "PaginationError",
        "ValidationError",
        "SchemaDriftWarning",
    ):
        assert name in ifr.__all__, name
        assert hasattr(ifr, name)
    assert (Path(ifr.__file__).parent / "py.typed").is_file()
    assert hasattr(schemas, "RecordsSchema")
    assert hasattr(schemas, "CustomerRecordsSchema")


def test_error_hierarchy() -> None:
    for cls in (ifr.APIError, ifr.PaginationError, ifr.ValidationError):
        assert issubclass(cls, ifr.ImpactFrameError)
    assert issubclass(ifr.AuthenticationError, ifr.APIError)
    assert issubclass(ifr.RateLimitError, ifr.APIError)


BAD_ARGUMENTS = [
    ({"filter_by": "plastic_removed"}, "filter_by", "tree_planted"),
    ({"filter_by": ["tree_planted", "nope"]}, "filter_by", "money_donated"),
    ({"start_date": "2024-13-01"}, "start_date", "YYYY-MM-DD"),
    ({"start_date": "2023-02-29"}, "start_date", "YYYY-MM-DD"),
    ({"end_date": "2024/01/01"}, "end_date", "YYYY-MM-DD"),
    ({"end_date": "yesterday"}, "end_date", "YYYY-MM-DD"),
    ({"start_date": "20240101"}, "start_date", "YYYY-MM-DD"),
    ({"end_date": 20240101}, "end_date", "YYYY-MM-DD"),
    ({"start_date": "2024-02-01", "end_date": "2024-01-01"}, "start_date", "end_date"),
    ({"page_size": 0}, "page_size", "1000"),
    ({"page_size": 1001}, "page_size", "1000"),
    ({"sort_order": "ascending"}, "sort_order", "desc"),
    ({"metadata": "flat"}, "metadata", "columns"),
    ({"dtype_backend": "arrow"}, "dtype_backend", "pyarrow"),
]


@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
@pytest.mark.parametrize(("kwargs", "name", "accepted"), BAD_ARGUMENTS)
def test_bad_arguments_raise_before_any_request(
    srv: SandboxServer, endpoint: str, kwargs: dict[str, Any], name: str, accepted: str
) -> None:
    with pytest.raises(ValueError, match=name) as info:
        load(endpoint, srv, **kwargs)
    assert accepted in str(info.value)
    assert not isinstance(info.value, ifr.APIError)
    assert srv.requests == []


@pytest.mark.parametrize(
    ("kwargs", "name"), [(kw, n) for kw, n, _ in BAD_ARGUMENTS if n != "dtype_backend"]
)
def test_export_rejects_bad_arguments_before_any_request(
    srv: SandboxServer, tmp_path: Path, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        ifr.export_parquet(tmp_path / "ds", "records", **conn(srv), **kwargs)
    assert srv.requests == []


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("2024-09-16", "2024-09-16"),
        (dt.date(2024, 9, 16), "2024-09-16"),
        (dt.datetime(2024, 9, 16, 23, 0), "2024-09-16"),
        (dt.datetime(2024, 9, 17, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=5))), "2024-09-16"),
        (dt.datetime(2024, 9, 16, 22, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))), "2024-09-17"),
        (pd.Timestamp("2024-09-16"), "2024-09-16"),
        (pd.Timestamp("2024-09-17 01:00", tz="Europe/Paris"), "2024-09-16"),
    ],
)
def test_date_arguments_become_utc_days(srv: SandboxServer, value: Any, day: str) -> None:
    ifr.load_records(**conn(srv), start_date=value, end_date="2024-12-31")
    assert {r.params["start_date"][0] for r in srv.requests} == {day}


def test_dates_are_inclusive_days(srv: SandboxServer) -> None:
    df = ifr.load_records(**conn(srv), start_date="2024-09-17", end_date="2024-09-17")
    assert keys_of(df) == expected_keys([r for r in RECORDS if r["time_utc"][:10] == "2024-09-17"])


def test_query_parameters_travel_as_the_api_expects(srv: SandboxServer) -> None:
    df = ifr.load_records(
        **conn(srv),
        filter_by=["tree_planted", "money_donated"],
        start_date="2023-01-01",
        end_date="2024-09-16",
        sort_order="desc",
        page_size=2,
    )
    first = srv.requests[0].params
    assert sorted(first["filter_by"]) == ["money_donated", "tree_planted"]
    assert first["start_date"] == ["2023-01-01"]
    assert first["end_date"] == ["2024-09-16"]
    assert first["limit"] == ["2"]
    assert first.get("sort_order", ["asc"]) == ["desc"]
    wanted = [
        r
        for r in RECORDS
        if ("tree_planted" in r or "money_donated" in r) and r["time_utc"] < "2024-09-17"
    ]
    assert keys_of(df) == sorted(expected_keys(wanted), key=lambda k: k[1], reverse=True)


def test_single_filter_by_string(srv: SandboxServer) -> None:
    df = ifr.load_records(**conn(srv), filter_by="waste_removed")
    assert srv.requests[0].params["filter_by"] == ["waste_removed"]
    assert set(df["impact_type"].astype(str)) == {"waste_removed"}
    assert len(df) == 2
    assert categories(df["impact_type"]) == KNOWN_TYPES  # all known types, not just those seen


@pytest.mark.parametrize("concurrency", [1, 3])
@pytest.mark.parametrize("sort_order", ["asc", "desc"])
def test_max_records_caps_the_total(srv: SandboxServer, sort_order: str, concurrency: int) -> None:
    full = ifr.load_records(**conn(srv), sort_order=sort_order)
    capped = ifr.load_records(
        **conn(srv),
        sort_order=sort_order,
        max_records=3,
        page_size=2,
        concurrency=concurrency,
        start_date="2023-01-01",
        end_date="2024-12-31",
    )
    pd.testing.assert_frame_equal(capped, full.iloc[:3][capped.columns].reset_index(drop=True))


def test_key_and_base_url_from_the_environment(
    srv: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPACTFRAME_API_KEY", srv.api_key)
    monkeypatch.setenv("IMPACTFRAME_BASE_URL", srv.url)
    assert len(ifr.load_records()) == len(RECORDS)
    assert len(ifr.load_customer_records()) == len(CUSTOMER_RECORDS)
    assert len(srv.requests) == 2


def test_base_url_argument_beats_the_environment(
    srv: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPACTFRAME_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    assert len(ifr.load_records(**conn(srv))) == len(RECORDS)


def test_base_url_falls_back_to_the_environment_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ifr.Client("k").base_url.rstrip("/") == "https://api.1clickimpact.com"
    sandbox = ifr.Client("k", environment="sandbox")
    assert sandbox.base_url.rstrip("/") == "https://sandbox.1clickimpact.com"
    monkeypatch.setenv("IMPACTFRAME_BASE_URL", "https://proxy.example.com")
    assert ifr.Client("k").base_url.rstrip("/") == "https://proxy.example.com"


@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_no_key_anywhere_names_the_variable(
    srv: SandboxServer, tmp_path: Path, endpoint: str
) -> None:
    with pytest.raises(ValueError, match="IMPACTFRAME_API_KEY"):
        LOADERS[endpoint](base_url=srv.url)
    with pytest.raises(ValueError, match="IMPACTFRAME_API_KEY"):
        ifr.Client(base_url=srv.url)
    with pytest.raises(ValueError, match="IMPACTFRAME_API_KEY"):
        ifr.export_parquet(tmp_path / "ds", endpoint, base_url=srv.url)
    assert srv.requests == []
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("other", [{"api_key": "k"}, {"base_url": "http://127.0.0.1:1"}])
def test_client_and_key_or_url_are_alternatives(srv: SandboxServer, other: dict[str, str]) -> None:
    with pytest.raises((ValueError, TypeError), match="client"):
        ifr.load_records(client=client(srv), **other)
    assert srv.requests == []
    assert len(ifr.load_records(client=client(srv))) == len(RECORDS)


def test_session_argument_is_used_for_requests(
    srv: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The session's proxy is honoured: nothing listens at the base URL, the sandbox answers as
    # the proxy (it serves absolute-URL requests by their path).
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with requests.Session() as session:
        session.proxies = {"http": srv.url}
        proxied = ifr.Client(srv.api_key, base_url="http://localhost:9", session=session)
        df = ifr.load_records(client=proxied)
    assert keys_of(df) == expected_keys(RECORDS)
    assert len(srv.requests) == 1


def test_signatures_match_the_spec() -> None:
    import inspect

    client_params = inspect.signature(ifr.Client).parameters
    assert list(client_params)[:6] == [
        "api_key",
        "environment",
        "base_url",
        "timeout",
        "max_retries",
        "session",
    ]
    assert client_params["api_key"].default is None
    assert client_params["environment"].default == "production"
    assert client_params["timeout"].default == 30.0
    assert client_params["max_retries"].default == 5
    assert client_params["session"].default is None
    defaults = {
        "filter_by": None,
        "start_date": None,
        "end_date": None,
        "sort_order": "asc",
        "page_size": 1000,
        "max_records": None,
        "metadata": "columns",
        "cache": False,
        "refresh": False,
        "concurrency": "auto",
        "progress": None,
        "dtype_backend": "numpy_nullable",
        "client": None,
        "api_key": None,
        "base_url": None,
    }
    for func, extra in (
        (ifr.load_records, {}),
        (ifr.load_customer_records, {"customer_email": None}),
    ):
        params = inspect.signature(func).parameters
        for name, default in {**extra, **defaults}.items():
            assert params[name].default == default, (func.__name__, name)
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (func.__name__, name)
    export = inspect.signature(ifr.export_parquet).parameters
    assert list(export)[:2] == ["path", "endpoint"]
    assert export["endpoint"].default == "records"
    assert tuple(export["partition_by"].default) == ("year", "month")


# -- §3 the DataFrame ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_columns_order_and_dtypes(srv: SandboxServer, endpoint: str, backend: str) -> None:
    df = load(endpoint, srv, dtype_backend=backend)
    meta = RECORD_META_KEYS if endpoint == "records" else CUSTOMER_META_KEYS
    assert list(df.columns) == FIXED[endpoint] + [f"metadata_{k}" for k in meta]
    for column in df.columns:
        dtype = df[column].dtype
        if column == "time_utc":
            assert is_time(dtype, backend), (column, dtype)
        elif column == "impact_type":
            assert is_category(dtype), (column, dtype)
        elif column == "amount" or column in KNOWN_TYPES:
            assert is_int64(dtype, backend), (column, dtype)
        else:
            assert is_string(dtype, backend), (column, dtype)
    assert isinstance(df.index, pd.RangeIndex)
    assert df.index.equals(pd.RangeIndex(len(df)))


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_values_follow_the_records(srv: SandboxServer, endpoint: str, backend: str) -> None:
    df = load(endpoint, srv, dtype_backend=backend)
    records = sorted(DATA[endpoint], key=lambda r: (r["time_utc"], r["user_id"]))
    assert len(df) == len(records)
    assert categories(df["impact_type"]) == KNOWN_TYPES
    for i, record in enumerate(records):
        row = df.iloc[i]
        kind = next(k for k in KNOWN_TYPES if k in record)
        assert row["user_id"] == record["user_id"]
        assert pd.Timestamp(row["time_utc"]) == ts(record["time_utc"])
        assert row["impact_type"] == kind
        assert row["amount"] == record[kind]
        for other in KNOWN_TYPES:
            if other == kind:
                assert row[other] == record[kind]
            else:
                assert pd.isna(row[other]), (i, other)
        if "category" in record:
            assert row["category"] == record["category"]
        else:
            assert pd.isna(row["category"])
        meta = record.get("metadata", {})
        for column in [c for c in df.columns if c.startswith("metadata_")]:
            key = column.removeprefix("metadata_")
            if key in meta:
                assert row[column] == meta[key]
            else:
                assert pd.isna(row[column])
        if endpoint == "customer_records":
            customer = record["customer"]
            assert row["customer_id"] == customer["customer_id"]
            assert row["customer_email"] == customer["customer_email"]
            if "customer_name" in customer:
                assert row["customer_name"] == customer["customer_name"]
            else:
                assert pd.isna(row["customer_name"])
    for column in ("user_id", "time_utc", "amount"):
        assert df[column].notna().all()
    assert (df["amount"] >= 0).all()


def test_time_keeps_milliseconds(srv: SandboxServer) -> None:
    df = ifr.load_records(**conn(srv))
    assert df["time_utc"].iloc[1] == pd.Timestamp("2023-01-20T11:00:00.123Z")
    assert str(df["time_utc"].dtype) == "datetime64[ms, UTC]"


@pytest.mark.parametrize("dates", [{}, {"start_date": "2023-01-01", "end_date": "2024-12-31"}])
@pytest.mark.parametrize("sort_order", ["asc", "desc"])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_rows_come_in_the_requested_order(
    srv: SandboxServer, sort_order: str, concurrency: int, dates: dict[str, str]
) -> None:
    df = ifr.load_records(
        **conn(srv), sort_order=sort_order, concurrency=concurrency, page_size=2, **dates
    )
    assert keys_of(df) == sorted(
        expected_keys(RECORDS), key=lambda k: k[1], reverse=sort_order == "desc"
    )
    assert df.index.equals(pd.RangeIndex(len(df)))


def test_concurrency_gives_the_same_frame(srv: SandboxServer) -> None:
    one = ifr.load_customer_records(**conn(srv), sort_order="desc")
    many = ifr.load_customer_records(**conn(srv), sort_order="desc", concurrency=4)
    pd.testing.assert_frame_equal(one, many)


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_empty_result_has_every_fixed_column(
    srv: SandboxServer, endpoint: str, backend: str
) -> None:
    df = load(endpoint, srv, start_date="2030-01-01", dtype_backend=backend)
    full = load(endpoint, srv, dtype_backend=backend)
    assert len(df) == 0
    assert list(df.columns) == FIXED[endpoint]
    assert categories(df["impact_type"]) == KNOWN_TYPES
    for column in FIXED[endpoint]:
        assert df[column].dtype == full[column].dtype, column
    assert isinstance(df.index, pd.RangeIndex)


def test_metadata_columns_sorted_by_code_point_and_verbatim(srv: SandboxServer) -> None:
    df = ifr.load_records(**conn(srv))
    meta = [c for c in df.columns if c.startswith("metadata_")]
    assert meta == ["metadata_" + k for k in sorted(RECORD_META_KEYS)]
    assert "metadata_Order ID" in meta
    assert (
        meta.index("metadata_Batch")
        < meta.index("metadata_Order ID")
        < meta.index("metadata__x")
        < meta.index("metadata_facility")
        < meta.index("metadata_\u00e9")
    )


def test_metadata_prefix(srv: SandboxServer) -> None:
    df = ifr.load_records(**conn(srv), metadata_prefix="meta.")
    assert list(df.columns) == RECORD_FIXED + ["meta." + k for k in RECORD_META_KEYS]
    assert df.loc[df["user_id"].eq("U2"), "meta.facility"].dropna().tolist() == ["Portland"]


@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_metadata_dict_mode(srv: SandboxServer, endpoint: str) -> None:
    df = load(endpoint, srv, metadata="dict")
    assert list(df.columns) == [*FIXED[endpoint], "metadata"]
    records = sorted(DATA[endpoint], key=lambda r: (r["time_utc"], r["user_id"]))
    for value, record in zip(df["metadata"], records, strict=True):
        if "metadata" in record:
            assert value == record["metadata"]
        else:
            assert value is None or pd.isna(value)


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_metadata_json_mode(srv: SandboxServer, backend: str) -> None:
    df = ifr.load_records(**conn(srv), metadata="json", dtype_backend=backend)
    extra = [c for c in df.columns if c not in RECORD_FIXED]
    assert list(df.columns[: len(RECORD_FIXED)]) == RECORD_FIXED
    assert len(extra) == 1
    assert is_string(df[extra[0]].dtype, backend)
    records = sorted(RECORDS, key=lambda r: r["time_utc"])
    for value, record in zip(df[extra[0]], records, strict=True):
        if "metadata" in record:
            assert json.loads(value) == record["metadata"]
        else:
            assert pd.isna(value)


def test_metadata_drop_mode(srv: SandboxServer) -> None:
    df = ifr.load_customer_records(**conn(srv), metadata="drop")
    assert list(df.columns) == CUSTOMER_FIXED


def test_non_string_metadata_kept_as_json_text(serve: Callable[..., SandboxServer]) -> None:
    meta = {"n": 5, "f": 1.5, "ok": True, "tags": ["a", "b"], "nested": {"a": {"b": "c"}, "d": 1}}
    server = serve([rec("U1", "2024-01-01T00:00:00.000Z", metadata=meta)])
    row = ifr.load_records(**conn(server)).iloc[0]
    assert row["metadata_n"] == "5"
    assert json.loads(row["metadata_f"]) == 1.5
    assert row["metadata_ok"] == "true"
    assert json.loads(row["metadata_tags"]) == ["a", "b"]
    assert row["metadata_nested.a.b"] == "c"
    assert row["metadata_nested.d"] == "1"


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_unknown_fields_become_columns_at_the_end(
    serve: Callable[..., SandboxServer], backend: str
) -> None:
    records = [
        rec("U1", "2024-01-01T00:00:00.000Z", source_app="web", priority=3),
        rec("U1", "2024-01-02T00:00:00.000Z", source_app="ios", score=0.5),
        rec("U2", "2024-01-03T00:00:00.000Z", metadata={"k": "v"}),
    ]
    server = serve(records)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = ifr.load_records(**conn(server), dtype_backend=backend, page_size=1)
    messages = drift(caught)
    for field in ("source_app", "priority", "score"):
        assert sum(field in m for m in messages) == 1, (field, messages)
    assert len(messages) == 3
    assert list(df.columns[: len(RECORD_FIXED) + 1]) == [*RECORD_FIXED, "metadata_k"]
    assert sorted(df.columns[len(RECORD_FIXED) + 1 :]) == ["priority", "score", "source_app"]
    assert is_string(df["source_app"].dtype, backend)
    assert is_int64(df["priority"].dtype, backend)
    assert is_float64(df["score"].dtype, backend)
    assert df["source_app"].tolist()[:2] == ["web", "ios"]
    assert df["priority"].iloc[0] == 3
    assert pd.isna(df["priority"].iloc[1])
    assert df["score"].iloc[1] == 0.5


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_new_impact_type_gets_its_own_column(
    serve: Callable[..., SandboxServer], backend: str
) -> None:
    records = [
        rec("U1", "2024-01-01T00:00:00.000Z", "tree_planted", 2, category="food"),
        rec("U1", "2024-01-02T00:00:00.000Z", "kelp_planted", 4),
    ]
    server = serve(records)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = ifr.load_records(**conn(server), dtype_backend=backend)
    assert any("kelp_planted" in m for m in drift(caught))
    assert list(df.columns) == [*RECORD_FIXED[:-1], "kelp_planted", "category"]
    assert categories(df["impact_type"]) == [*KNOWN_TYPES, "kelp_planted"]
    assert is_int64(df["kelp_planted"].dtype, backend)
    row = df.iloc[1]
    assert row["impact_type"] == "kelp_planted"
    assert row["amount"] == 4
    assert row["kelp_planted"] == 4
    assert all(pd.isna(row[k]) for k in KNOWN_TYPES)
    assert pd.isna(df["kelp_planted"].iloc[0])


GOOD_TIME = "2024-05-05T05:05:05.005Z"
BAD_RECORDS = [
    ({"tree_planted": "5"}, "tree_planted"),
    ({"tree_planted": 5.5}, "tree_planted"),
    ({"tree_planted": -1}, "tree_planted"),
    ({"time_utc": "not a time"}, "time_utc"),
    ({"time_utc": "2023-02-29T00:00:00.000Z"}, "time_utc"),
    ({"metadata": "order=1"}, "metadata"),
    ({"metadata": ["a", "b"]}, "metadata"),
    ({"waste_removed": 2}, "waste_removed"),  # a second impact field
    ({"user_id": 123}, "user_id"),
    ({"category": 7}, "category"),
    ({"tree_planted": True}, "tree_planted"),  # JSON true is not an integer amount
    ({"tree_planted": 2**63}, "tree_planted"),  # does not fit Int64: no wrap-around
    ({"time_utc": 1714885505005}, "time_utc"),
]


@pytest.mark.parametrize(("change", "field"), BAD_RECORDS)
def test_wrong_known_field_raises_validation_error(
    serve: Callable[..., SandboxServer], change: dict[str, Any], field: str
) -> None:
    bad = {**rec("U-BAD-7", GOOD_TIME, "tree_planted", 1), **change}
    server = serve([rec("U1", "2024-01-01T00:00:00.000Z"), bad])
    with pytest.raises(ifr.ValidationError, match=field) as info:
        ifr.load_records(**conn(server))
    message = str(info.value)
    assert "U-BAD-7" in message or str(bad["time_utc"]) in message, message


def test_record_without_user_id_raises(serve: Callable[..., SandboxServer]) -> None:
    bad = {"time_utc": GOOD_TIME, "tree_planted": 1}
    server = serve([bad])
    with pytest.raises(ifr.ValidationError, match="user_id"):
        ifr.load_records(**conn(server))


def test_record_without_impact_field_raises(serve: Callable[..., SandboxServer]) -> None:
    server = serve([{"user_id": "U-BAD-7", "time_utc": GOOD_TIME, "category": "food"}])
    with pytest.raises(ifr.ValidationError, match="U-BAD-7"):
        ifr.load_records(**conn(server))


@pytest.mark.parametrize(
    ("customer", "field"),
    [
        ({"customer_email": "x@example.com"}, "customer_id"),
        ({"customer_id": "C9", "customer_email": 5}, "customer_email"),
        ("C9", "customer"),
    ],
)
def test_wrong_customer_raises(
    serve: Callable[..., SandboxServer], customer: Any, field: str
) -> None:
    bad = {**rec("U-BAD-7", GOOD_TIME), "customer": customer}
    server = serve(customer_records=[bad])
    with pytest.raises(ifr.ValidationError, match=field):
        ifr.load_customer_records(**conn(server))


def test_unknown_page_field_is_not_silently_dropped(srv: SandboxServer) -> None:
    body = json.dumps({"user_records": [RECORDS[0]], "has_more": False})
    serve_body(srv, body)
    with pytest.warns(ifr.SchemaDriftWarning, match="has_more"):
        ifr.load_records(**conn(srv))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (json.dumps({"user_records": {"user_id": "U1"}}), "user_records"),
        (json.dumps({"user_records": "none"}), "user_records"),
        (page([], cursor=5), "cursor"),
        (page([], cursor={"createdOn": "x"}), "cursor"),
    ],
)
def test_wrong_page_shape_raises_validation_error(
    srv: SandboxServer, body: str, field: str
) -> None:
    serve_body(srv, body)
    with pytest.raises(ifr.ValidationError, match=field):
        ifr.load_records(**conn(srv))


def test_duplicates_with_same_content_are_dropped(serve: Callable[..., SandboxServer]) -> None:
    server = serve([*RECORDS, dict(RECORDS[3]), dict(RECORDS[7])])
    # not right after a cursor: dropped, and never silently (SPEC §3)
    with pytest.warns(ifr.DuplicateRecordWarning, match="identical") as caught:
        df = ifr.load_records(**conn(server), page_size=4)
    assert len(caught) == 1
    assert keys_of(df) == expected_keys(RECORDS)


def test_same_content_in_another_key_order_is_a_duplicate(
    serve: Callable[..., SandboxServer],
) -> None:
    one = rec("U1", GOOD_TIME, metadata={"a": "1", "b": "2"}, category="food")
    two = {"category": "food", "metadata": {"b": "2", "a": "1"}, **rec("U1", GOOD_TIME)}
    server = serve([one, two])
    with pytest.warns(ifr.DuplicateRecordWarning, match="identical"):
        df = ifr.load_records(**conn(server))
    assert len(df) == 1


def test_record_repeated_across_a_page_boundary_is_dropped(srv: SandboxServer) -> None:
    srv.inject(Fault("repeat"), times=2)
    # One chain: the repeat fault answers requests that carry a cursor.
    df = ifr.load_records(**conn(srv), page_size=3, concurrency=1)
    assert any(r.fault == "repeat" for r in srv.requests)
    assert keys_of(df) == expected_keys(RECORDS)


def test_same_key_different_content_is_kept_and_warned(
    serve: Callable[..., SandboxServer],
) -> None:
    twin = {**RECORDS[3], "coral_restored": 9}
    server = serve([*RECORDS, twin])
    with pytest.warns(ifr.DuplicateRecordWarning):
        df = ifr.load_records(**conn(server))
    assert len(df) == len(RECORDS) + 1
    same = df[df["time_utc"] == ts(RECORDS[3]["time_utc"])]
    assert sorted(same["amount"].tolist()) == [2, 9]


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_frames_pass_the_public_schemas(srv: SandboxServer, backend: str) -> None:
    df = ifr.load_records(**conn(srv), dtype_backend=backend)
    cdf = ifr.load_customer_records(**conn(srv), dtype_backend=backend)
    schemas.validate(df, "records", dtype_backend=backend)
    schemas.validate(cdf, "customer_records", dtype_backend=backend)
    if backend == "numpy_nullable":
        ifr.RecordsSchema.validate(df)
        ifr.CustomerRecordsSchema.validate(cdf)


def test_schema_failure_is_a_validation_error_with_failure_cases(srv: SandboxServer) -> None:
    df = ifr.load_records(**conn(srv))
    df.loc[2, "amount"] = -7
    with pytest.raises(ifr.ValidationError, match="amount") as info:
        schemas.validate(df, "records")
    cases = info.value.failure_cases
    assert isinstance(cases, pd.DataFrame)
    assert len(cases) > 0
    assert 2 in set(cases["index"].dropna().tolist())
    assert "2" in str(info.value)


# -- §4 pagination, retries, errors -------------------------------------------------------------


@pytest.mark.parametrize("cursor", ["absent", None, ""])
def test_cursor_absent_null_or_empty_ends_the_walk(srv: SandboxServer, cursor: Any) -> None:
    serve_body(srv, page([RECORDS[0]], cursor=cursor))
    df = ifr.load_records(**conn(srv), page_size=1)
    assert len(srv.requests) == 1
    assert keys_of(df) == expected_keys([RECORDS[0]])


def test_empty_page_with_a_cursor_is_not_the_end(srv: SandboxServer) -> None:
    serve_body(srv, page([], cursor=encode_cursor("2000-01-01T00:00:00.000Z", "U0")))
    df = ifr.load_records(**conn(srv), page_size=5)
    assert keys_of(df) == expected_keys(RECORDS)
    assert len(srv.requests) > 1


def test_short_page_with_a_cursor_is_not_the_end(srv: SandboxServer) -> None:
    first = RECORDS[0]
    serve_body(srv, page([first], cursor=encode_cursor(first["time_utc"], first["user_id"])))
    df = ifr.load_records(**conn(srv), page_size=5)
    assert keys_of(df) == expected_keys(RECORDS)


def test_filter_after_limit_short_and_empty_pages(serve: Callable[..., SandboxServer]) -> None:
    server = serve(RECORDS, filter_after_limit=True)
    df = ifr.load_records(**conn(server), filter_by="money_donated", page_size=2)
    assert keys_of(df) == expected_keys([r for r in RECORDS if "money_donated" in r])
    counts = [r.records for r in server.requests]
    assert 0 in counts[:-1]  # an empty page that was not the last one


def test_repeated_cursor_raises_pagination_error(srv: SandboxServer) -> None:
    cursor = encode_cursor("2000-01-01T00:00:00.000Z", "U0")
    serve_body(srv, page([], cursor=cursor), times=None)
    with pytest.raises(ifr.PaginationError):
        ifr.load_records(**conn(srv))
    assert len(srv.requests) <= 3


def test_cursor_cycle_raises_pagination_error(srv: SandboxServer) -> None:
    a = encode_cursor("2000-01-01T00:00:00.000Z", "U0")
    b = encode_cursor("2000-01-02T00:00:00.000Z", "U0")
    for cursor in (a, b, a, b):  # handed out in this order, one request each
        serve_body(srv, page([], cursor=cursor))
    with pytest.raises(ifr.PaginationError):
        ifr.load_records(**conn(srv), concurrency=1)
    assert len(srv.requests) == 3


def _plus_slash_user(time_utc: str) -> str:
    """A user id whose cursor after ``time_utc`` holds base64's '+' and '/'."""
    for i in range(1_000):
        for pad in ("", "x", "xy"):  # the three base64 alignments
            user = f"U{pad}~~~???{i}"
            cursor = encode_cursor(time_utc, user)
            if "+" in cursor and "/" in cursor:
                return user
    raise AssertionError(time_utc)


def test_cursors_travel_percent_encoded(serve: Callable[..., SandboxServer]) -> None:
    times = [f"2024-03-0{d}T10:00:00.000Z" for d in range(1, 6)]
    records = [rec(_plus_slash_user(t), t) for t in times]
    server = serve(records)
    expected = {encode_cursor(r["time_utc"], r["user_id"]) for r in records}
    assert any("=" in c for c in expected) or any("+" in c for c in expected)
    df = ifr.load_records(**conn(server), page_size=1, concurrency=1)
    assert keys_of(df) == expected_keys(records)
    sent = cursors_sent(server)
    assert len(sent) == len(records) - 1
    assert set(sent) <= expected, sent  # a raw '+' would arrive as a space


def test_customer_email_travels_percent_encoded(srv: SandboxServer) -> None:
    for email in ("ann+impact@example.com", "cy/=@example.com"):
        srv.clear_log()
        df = ifr.load_customer_records(**conn(srv), customer_email=email)
        assert srv.requests[0].params["customer_email"] == [email]
        assert len(df) > 0
        assert set(df["customer_email"]) == {email}


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(srv: SandboxServer, status: int) -> None:
    srv.inject(Fault("status", status=status), times=1)
    df = ifr.load_records(client=client(srv, max_retries=2))
    assert keys_of(df) == expected_keys(RECORDS)
    assert [r.status for r in srv.requests] == [status, 200]


@pytest.mark.parametrize("kind", ["drop", "truncate"])
def test_broken_connections_are_retried(srv: SandboxServer, kind: str) -> None:
    srv.inject(Fault(kind), times=2)
    df = ifr.load_records(client=client(srv, max_retries=3), page_size=5, concurrency=1)
    assert keys_of(df) == expected_keys(RECORDS)
    assert len(srv.requests) == 3 + 2


def test_read_timeout_is_retried(srv: SandboxServer) -> None:
    srv.inject(Fault("latency", delay=1.0), times=1)
    # Without a retry the first read (1 s > timeout) would fail the load.
    df = ifr.load_records(client=client(srv, max_retries=2, timeout=0.3))
    assert keys_of(df) == expected_keys(RECORDS)


def test_dropped_connections_after_the_retries_are_an_impactframe_error(
    srv: SandboxServer,
) -> None:
    srv.inject(Fault("drop"), times=None)
    with pytest.raises(ifr.ImpactFrameError):
        ifr.load_records(client=client(srv, max_retries=1))
    assert len(srv.requests) == 2


def test_retries_stop_at_max_retries(srv: SandboxServer) -> None:
    srv.inject(Fault("status", status=503), times=None)
    with pytest.raises(ifr.APIError) as info:
        ifr.load_records(client=client(srv, max_retries=1))
    assert info.value.status == 503
    assert not isinstance(info.value, ifr.RateLimitError)
    assert len(srv.requests) == 2


def test_429_after_the_retries_is_a_rate_limit_error(srv: SandboxServer) -> None:
    srv.inject(Fault("status", status=429, retry_after=0), times=None)
    with pytest.raises(ifr.RateLimitError) as info:
        ifr.load_records(client=client(srv, max_retries=1))
    assert info.value.status == 429
    assert info.value.error_type == "rate_limit_error"
    assert len(srv.requests) == 2


def test_retry_after_seconds_is_honoured(srv: SandboxServer) -> None:
    srv.inject(Fault("status", status=429, retry_after=1), times=1)
    start = time.monotonic()
    ifr.load_records(client=client(srv, max_retries=2))
    assert time.monotonic() - start >= 0.95


def test_retry_after_http_date_is_honoured(srv: SandboxServer) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2.5)
    srv.inject(Fault("status", status=503, retry_after=when), times=1)
    start = time.monotonic()
    ifr.load_records(client=client(srv, max_retries=2))
    assert 1.0 <= time.monotonic() - start < 10


@pytest.mark.parametrize(("status", "cls"), [(400, ifr.APIError), (404, ifr.APIError)])
def test_other_4xx_are_not_retried(srv: SandboxServer, status: int, cls: type) -> None:
    srv.inject(Fault("status", status=status), times=None)
    with pytest.raises(cls) as info:
        ifr.load_records(client=client(srv, max_retries=3))
    assert info.value.status == status
    assert len(srv.requests) == 1


def test_api_error_carries_status_type_and_message(srv: SandboxServer) -> None:
    body = json.dumps({"type": "quota_error", "message": "Monthly quota exceeded"})
    serve_body(srv, body, status=402, times=None)
    with pytest.raises(ifr.APIError) as info:
        ifr.load_records(client=client(srv, max_retries=3))
    error = info.value
    assert (error.status, error.error_type, error.message) == (
        402,
        "quota_error",
        "Monthly quota exceeded",
    )
    assert len(srv.requests) == 1


def test_unknown_key_is_an_authentication_error(srv: SandboxServer) -> None:
    with pytest.raises(ifr.AuthenticationError) as info:
        ifr.load_records(api_key=SECRET, base_url=srv.url)
    error = info.value
    assert (error.status, error.error_type, error.message) == (
        401,
        "key_error",
        "API Key does not exist",
    )
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert len(srv.requests) == 1


@pytest.mark.parametrize("suffix", ["\n", "\r\nX-Evil: 1", "\u00e9", "\x00", " "])
def test_odd_key_never_appears_in_an_exception(srv: SandboxServer, suffix: str) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011  (any error; only the text matters)
        ifr.load_records(api_key=SECRET + suffix, base_url=srv.url)
    error: BaseException | None = info.value
    while error is not None:
        assert SECRET not in str(error)
        assert SECRET not in repr(error)
        error = error.__cause__ or error.__context__


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (403, json.dumps({"type": "forbidden", "message": "no"})),
        (400, json.dumps({"type": "key_error", "message": "API Key does not exist"})),
    ],
)
def test_403_or_key_error_is_an_authentication_error(
    srv: SandboxServer, status: int, body: str
) -> None:
    serve_body(srv, body, status=status, times=None)
    with pytest.raises(ifr.AuthenticationError) as info:
        ifr.load_records(client=client(srv, max_retries=2))
    assert info.value.status == status
    assert len(srv.requests) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, "<html><body>Bad gateway from the proxy</body></html>"),
        (200, "<html><body>Maintenance page</body></html>"),
        (200, '{"user_records": [{"user_id": "U1", "time_utc": "2024-'),
        (400, "Bad request: plain text"),
    ],
)
def test_non_json_body_is_an_api_error(srv: SandboxServer, status: int, body: str) -> None:
    serve_body(srv, body, status=status, times=None)
    with pytest.raises(ifr.APIError) as info:
        ifr.load_records(client=client(srv, max_retries=0))
    assert info.value.status == status
    assert body[:20] in str(info.value)
    assert not isinstance(info.value, json.JSONDecodeError)
    assert len(srv.requests) == 1  # max_retries=0: no retry


def test_long_non_json_body_is_cut_to_its_start(srv: SandboxServer) -> None:
    body = "<html>" + "x" * 20_000 + "</html>"
    serve_body(srv, body, status=502, times=None)
    with pytest.raises(ifr.APIError) as info:
        ifr.load_records(client=client(srv, max_retries=0))
    assert "<html>xxx" in str(info.value)
    assert len(str(info.value)) < 5_000


def test_truncated_body_is_an_api_error(srv: SandboxServer) -> None:
    srv.inject(Fault("truncate"), times=None)
    with pytest.raises(ifr.APIError) as info:
        ifr.load_records(client=client(srv, max_retries=1))
    assert info.value.status == 200
    assert "user_records" in str(info.value)


def test_logs_to_impactframe_logger_never_the_key(
    serve: Callable[..., SandboxServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(RECORDS, api_key=SECRET)
    caplog.set_level(logging.DEBUG, logger="impactframe")
    server.inject(Fault("status", status=503), times=1)
    ifr.load_records(client=client(server, max_retries=2))
    with pytest.raises(ifr.AuthenticationError):
        ifr.load_records(api_key=SECRET + "x", base_url=server.url)
    assert any(r.name.startswith("impactframe") for r in caplog.records)
    assert SECRET not in caplog.text
    assert SECRET not in repr(client(server))


# -- §5 the sandbox ----------------------------------------------------------------------------


def test_sandbox_generated_data_is_seeded_and_realistic() -> None:
    a = SandboxServer(n_records=600, n_customer_records=400, seed=1)
    b = SandboxServer(n_records=600, n_customer_records=400, seed=1)
    c = SandboxServer(n_records=600, n_customer_records=400, seed=2)
    assert a.served_records() == b.served_records()
    assert a.served_records() != c.served_records()
    records = a.served_records()
    customers = a.served_records("customer_records")
    assert len(records) == 600
    assert len(customers) == 400
    kinds = {k for r in records for k in KNOWN_TYPES if k in r}
    assert len(kinds) >= 4
    assert sum("metadata" in r for r in records) > 0
    assert len({k for r in records for k in r.get("metadata", {})}) >= 2
    assert any("customer_name" in r["customer"] for r in customers)
    assert any("customer_name" not in r["customer"] for r in customers)
    times = sorted(r["time_utc"] for r in records)
    assert ts(times[-1]) - ts(times[0]) > pd.Timedelta(days=365)
    assert generate_records(5, seed=3) == generate_records(5, seed=3)


def test_generated_sandbox_loads_through_the_client() -> None:
    with SandboxServer(n_records=300, n_customer_records=200, seed=4) as server:
        df = ifr.load_records(**conn(server))
        cdf = ifr.load_customer_records(**conn(server))
    assert len(df) == 300
    assert len(cdf) == 200
    assert cdf["customer_name"].isna().any()
    assert cdf["customer_name"].notna().any()


def _get(server: SandboxServer, path: str = "/v1/records", key: str | None = None, **params):
    headers = {"x-api-key": server.api_key if key is None else key}
    return requests.get(server.url + path, params=params, headers=headers, timeout=10)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "1001"},
        {"limit": "ten"},
        {"filter_by": "plastic"},
        {"start_date": "2024-02-30"},
        {"start_date": "2024-03-01", "end_date": "2024-02-01"},
        {"sort_order": "up"},
        {"cursor": "not-a-cursor"},
    ],
)
def test_sandbox_bad_parameter_is_400_in_the_api_shape(
    srv: SandboxServer, params: dict[str, str]
) -> None:
    response = _get(srv, **params)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"type", "message"}


def test_sandbox_bad_key_is_401_key_error(srv: SandboxServer) -> None:
    response = _get(srv, key="wrong")
    assert response.status_code == 401
    assert response.json() == {"type": "key_error", "message": "API Key does not exist"}
    assert [(r.path, r.status) for r in srv.requests] == [("/v1/records", 401)]


def test_sandbox_default_limit_is_10(srv: SandboxServer) -> None:
    body = _get(srv).json()
    assert len(body["user_records"]) == 10
    assert body["cursor"]
    desc = _get(srv, sort_order="desc").json()["user_records"]
    assert [r["time_utc"] for r in desc] == sorted((r["time_utc"] for r in RECORDS), reverse=True)[
        :10
    ]


def test_sandbox_pages_with_dynamodb_cursors(srv: SandboxServer) -> None:
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        params = {"limit": "5"} | ({"cursor": cursor} if cursor else {})
        body = _get(srv, **params).json()
        seen += body["user_records"]
        cursor = body.get("cursor")
        if not cursor:
            break
        key = json.loads(base64.b64decode(cursor))
        assert {"createdOn", "userID"} <= set(key)
    assert [r["time_utc"] for r in seen] == sorted(r["time_utc"] for r in RECORDS)
    assert len(srv.requests) == 3


def test_sandbox_filter_after_limit_gives_short_pages(serve: Callable[..., SandboxServer]) -> None:
    server = serve(RECORDS, filter_after_limit=True)
    body = _get(server, limit="3", filter_by="money_donated").json()
    assert len(body["user_records"]) < 3
    assert body.get("cursor")


def test_sandbox_fault_injection(srv: SandboxServer) -> None:
    srv.inject(Fault("latency", delay=0.3), times=1)
    start = time.monotonic()
    assert _get(srv).status_code == 200
    assert time.monotonic() - start >= 0.3
    srv.inject(Fault("status", status=429, retry_after=7), times=1)
    response = _get(srv)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert set(response.json()) == {"type", "message"}
    srv.inject(Fault("status", status=503), times=1)
    assert _get(srv).status_code == 503
    srv.inject(Fault("drop"), times=1)
    with pytest.raises(requests.ConnectionError):
        _get(srv)
    srv.inject(Fault("truncate"), times=1)
    with pytest.raises(requests.RequestException):
        _get(srv).json()
    first = _get(srv, limit="3").json()
    srv.inject(Fault("repeat"), times=1)
    second = _get(srv, limit="3", cursor=first["cursor"]).json()
    assert second["user_records"][0] == first["user_records"][-1]


# -- §6 Parquet cache --------------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_cache_repeat_makes_zero_requests_and_equal_frame(
    srv: SandboxServer, tmp_path: Path, endpoint: str, backend: str
) -> None:
    cache = tmp_path / "cache"
    first = load(endpoint, srv, cache=str(cache), dtype_backend=backend)
    network = load(endpoint, srv, dtype_backend=backend)
    srv.clear_log()
    second = load(endpoint, srv, cache=str(cache), dtype_backend=backend)
    assert srv.requests == []
    pd.testing.assert_frame_equal(second, first)
    pd.testing.assert_frame_equal(second, network)


CACHE_VARIANTS = [
    {"max_records": 3},
    {"max_records": 3, "sort_order": "desc"},
    {"sort_order": "desc"},
    {"metadata": "json"},
    {"metadata": "dict"},
    {"metadata": "drop"},
    {"metadata_prefix": "m_"},
    {"dtype_backend": "pyarrow"},
    {"start_date": "2024-01-01"},
    {"end_date": "2023-06-30"},
    {"filter_by": ["money_donated", "coral_restored"]},
    {"concurrency": 3, "start_date": "2023-01-01", "end_date": "2024-12-31"},
]


def test_one_cache_serves_every_query_right(srv: SandboxServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # a Path works as well as a str
    ifr.load_records(**conn(srv), cache=cache)
    for variant in CACHE_VARIANTS:
        cached = ifr.load_records(**conn(srv), cache=cache, **variant)
        again = ifr.load_records(**conn(srv), cache=cache, **variant)
        network = ifr.load_records(**conn(srv), **variant)
        pd.testing.assert_frame_equal(cached, network, obj=str(variant))
        pd.testing.assert_frame_equal(again, network, obj=str(variant))


def test_cache_never_serves_another_key(srv: SandboxServer, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    ifr.load_records(**conn(srv), cache=cache)
    srv.clear_log()
    with pytest.raises(ifr.AuthenticationError):
        ifr.load_records(api_key="another-key", base_url=srv.url, cache=cache)
    assert len(srv.requests) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_CACHE_HOME is the Linux user cache")
def test_cache_true_defaults_to_the_user_cache_folder(
    srv: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMPACTFRAME_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ifr.load_records(**conn(srv), cache=True)
    assert _files(tmp_path / "xdg")
    srv.clear_log()
    ifr.load_records(**conn(srv), cache=True)
    assert srv.requests == []


def test_cache_true_uses_the_environment_folder(srv: SandboxServer, tmp_path: Path) -> None:
    ifr.load_records(**conn(srv), cache=True)
    assert _files(tmp_path / "env-cache")
    srv.clear_log()
    ifr.load_records(**conn(srv), cache=True)
    assert srv.requests == []


def test_cache_is_keyed_by_query_and_host(
    serve: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    a = serve(RECORDS)
    b = serve(RECORDS)  # same key and data, another port
    ifr.load_records(**conn(a), cache=cache)
    a.clear_log()
    df = ifr.load_records(**conn(a), cache=cache, filter_by="tree_planted")
    assert len(a.requests) > 0
    assert set(df["impact_type"].astype(str)) == {"tree_planted"}
    ifr.load_records(**conn(b), cache=cache)
    assert len(b.requests) > 0
    a.clear_log()
    customers = ifr.load_customer_records(**conn(a), cache=cache)  # another endpoint
    assert len(a.requests) > 0
    pd.testing.assert_frame_equal(customers, ifr.load_customer_records(**conn(a)))


def test_open_ended_query_is_served_cached_until_refresh(
    serve: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    server = serve(RECORDS)
    ifr.load_records(**conn(server), cache=cache)
    newer = [
        rec("U9", "2024-09-17T20:00:00.000Z", "waste_removed", 3),
        rec("U9", "2024-10-01T00:00:00.000Z", "tree_planted", 8),
    ]
    server.set_records([*RECORDS, *newer])
    server.clear_log()
    stale = ifr.load_records(**conn(server), cache=cache)
    assert server.requests == []
    assert keys_of(stale) == expected_keys(RECORDS)
    refreshed = ifr.load_records(**conn(server), cache=cache, refresh=True)
    assert server.requests
    assert {r.params.get("start_date", [None])[0] for r in server.requests} == {"2024-09-17"}
    fresh = ifr.load_records(**conn(server))
    pd.testing.assert_frame_equal(refreshed, fresh)
    server.clear_log()
    pd.testing.assert_frame_equal(ifr.load_records(**conn(server), cache=cache), fresh)
    assert server.requests == []


def test_refresh_keeps_the_sort_order(serve: Callable[..., SandboxServer], tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    server = serve(RECORDS)
    assert len(ifr.load_records(**conn(server), cache=cache, refresh=True)) == len(RECORDS)
    ifr.load_records(**conn(server), cache=cache, sort_order="desc")
    server.set_records(
        [*RECORDS, rec("U9", "2024-09-17T20:00:00.000Z"), rec("U9", "2025-01-01T00:00:00.000Z")]
    )
    refreshed = ifr.load_records(**conn(server), cache=cache, sort_order="desc", refresh=True)
    pd.testing.assert_frame_equal(refreshed, ifr.load_records(**conn(server), sort_order="desc"))


def test_refresh_full_rebuilds(serve: Callable[..., SandboxServer], tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    server = serve(RECORDS)
    ifr.load_records(**conn(server), cache=cache)
    changed = [*RECORDS[1:], rec("U9", "2025-01-01T00:00:00.000Z")]  # one record gone
    server.set_records(changed)
    server.clear_log()
    rebuilt = ifr.load_records(**conn(server), cache=cache, refresh="full")
    assert all("start_date" not in r.params for r in server.requests)
    assert keys_of(rebuilt) == expected_keys(changed)


def test_interrupted_refresh_leaves_the_old_cache(
    serve: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    server = serve(RECORDS)
    before = ifr.load_records(**conn(server), cache=cache)
    server.set_records([*RECORDS, rec("U9", "2025-01-01T00:00:00.000Z")])
    server.inject(Fault("status", status=400), times=None)
    with pytest.raises(ifr.APIError):
        ifr.load_records(client=client(server), cache=cache, refresh="full")
    server.clear_faults()
    server.clear_log()
    after = ifr.load_records(**conn(server), cache=cache)
    assert server.requests == []
    pd.testing.assert_frame_equal(after, before)


def test_corrupt_cache_warns_and_refetches(srv: SandboxServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    network = ifr.load_records(**conn(srv), cache=str(cache))
    parquet = [p for p in _files(cache) if p.suffix == ".parquet"]
    assert parquet
    for path in parquet:
        path.write_bytes(b"PAR1 this is not parquet PAR1")
    srv.clear_log()
    with pytest.warns(ifr.ImpactFrameWarning):
        again = ifr.load_records(**conn(srv), cache=str(cache))
    assert srv.requests
    pd.testing.assert_frame_equal(again, network)


def test_corrupt_manifest_warns_and_refetches(srv: SandboxServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    network = ifr.load_records(**conn(srv), cache=str(cache))
    for path in _files(cache):
        if path.suffix != ".parquet":
            path.write_text("{not json")
    srv.clear_log()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        again = ifr.load_records(**conn(srv), cache=str(cache))
    assert srv.requests
    pd.testing.assert_frame_equal(again, network)


def test_older_schema_version_is_refetched(srv: SandboxServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    network = ifr.load_records(**conn(srv), cache=str(cache))
    manifests = [p for p in _files(cache) if p.name == "manifest.json"]
    assert manifests
    for path in manifests:
        manifest = json.loads(path.read_text())
        manifest["schema_version"] = 0
        path.write_text(json.dumps(manifest))
    srv.clear_log()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        again = ifr.load_records(**conn(srv), cache=str(cache))
    assert srv.requests
    pd.testing.assert_frame_equal(again, network)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_cache_permissions_and_no_key_anywhere(
    serve: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = serve(RECORDS, CUSTOMER_RECORDS, api_key=SECRET)
    cache = tmp_path / "new" / "cache"
    ifr.load_records(**conn(server), cache=str(cache))
    ifr.load_customer_records(**conn(server), cache=str(cache))
    paths = [cache, *cache.rglob("*")]
    assert len(paths) > 2
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        assert SECRET not in str(path)
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# -- §7 export and dask ------------------------------------------------------------------------


MIXED_META = [
    rec("U1", "2023-01-05T10:00:00.000Z", metadata={"alpha": "1"}),
    rec("U1", "2023-02-05T10:00:00.000Z", metadata={"beta": "2"}),
    rec("U2", "2024-02-05T10:00:00.000Z", "money_donated", 5, metadata={"gamma": "3"}),
    rec("U2", "2024-03-05T10:00:00.000Z", "waste_removed", 5),
]


def test_export_writes_a_hive_dataset_every_reader_sees(
    serve: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = serve(MIXED_META)
    out = tmp_path / "ds"
    ifr.export_parquet(out, "records", **conn(server), page_size=1)
    folders = {p.relative_to(out).parts[:2] for p in out.rglob("*.parquet")}
    assert folders == {
        ("year=2023", "month=01"),  # zero-padded: text order is calendar order
        ("year=2023", "month=02"),
        ("year=2024", "month=02"),
        ("year=2024", "month=03"),
    }
    common = out / "_common_metadata"
    assert common.is_file()
    meta_columns = {"metadata_alpha", "metadata_beta", "metadata_gamma"}
    assert meta_columns <= set(pq.read_schema(common).names)
    import duckdb
    from dask import dataframe as dd

    readers = {
        "pyarrow": pq.read_table(out).to_pandas(),
        "pandas": pd.read_parquet(out),
        "duckdb": duckdb.sql(
            f"SELECT * FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true)"
        ).df(),
    }
    with warnings.catch_warnings():
        # dask's parquet reader still passes inplace= to pandas 3.1 (not impactframe's doing)
        warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
        readers["dask"] = dd.read_parquet(str(out)).compute()
    for name, frame in readers.items():
        assert len(frame) == len(MIXED_META), name
        assert meta_columns <= set(frame.columns), (name, list(frame.columns))
        assert set(RECORD_FIXED) <= set(frame.columns), name
        assert sorted(frame["user_id"].astype(str)) == sorted(r["user_id"] for r in MIXED_META)


def test_export_unifies_drift_columns_across_files(
    serve: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    records = [
        rec("U1", "2023-01-05T10:00:00.000Z", zz="a"),
        rec("U1", "2023-02-05T10:00:00.000Z", "kelp_planted", 2),
        rec("U1", "2023-03-05T10:00:00.000Z", yy=4),
    ]
    server = serve(records)
    out = tmp_path / "ds"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ifr.export_parquet(out, **conn(server), page_size=1)
    messages = drift(caught)
    assert all(any(f in m for m in messages) for f in ("zz", "yy", "kelp_planted")), messages
    frame = pd.read_parquet(out)
    assert {"zz", "yy", "kelp_planted"} <= set(frame.columns)
    assert sorted(frame["impact_type"].astype(str)) == [
        "kelp_planted",
        "tree_planted",
        "tree_planted",
    ]


def test_export_matches_load_and_partition_by(srv: SandboxServer, tmp_path: Path) -> None:
    out = tmp_path / "cust"
    ifr.export_parquet(out, "customer_records", **conn(srv), partition_by=("year",))
    tops = {p.relative_to(out).parts[0] for p in out.rglob("*.parquet")}
    assert tops == {"year=2023", "year=2024"}
    assert not any("month=" in str(p) for p in out.rglob("*"))
    frame = pd.read_parquet(out)
    loaded = ifr.load_customer_records(**conn(srv))
    assert len(frame) == len(loaded)
    assert set(CUSTOMER_FIXED) <= set(frame.columns)
    got = sorted(zip(frame["customer_id"], frame["amount"].astype(int), strict=True))
    assert got == sorted(zip(loaded["customer_id"], loaded["amount"].astype(int), strict=True))


def test_export_takes_the_query_keywords(srv: SandboxServer, tmp_path: Path) -> None:
    query = {"filter_by": ["tree_planted", "waste_removed"], "start_date": "2023-01-10"}
    ifr.export_parquet(tmp_path / "ds", "records", **conn(srv), **query, max_records=4)
    frame = pd.read_parquet(tmp_path / "ds")
    loaded = ifr.load_records(**conn(srv), **query, max_records=4)
    assert sorted(keys_of(frame)) == sorted(keys_of(loaded))


def test_export_drops_duplicates_like_load(serve: Callable[..., SandboxServer], tmp_path: Path):
    server = serve([*RECORDS, dict(RECORDS[2])])
    ifr.export_parquet(tmp_path / "ds", **conn(server), page_size=3)
    assert len(pd.read_parquet(tmp_path / "ds")) == len(RECORDS)


def test_dask_read_records_is_lazy_and_matches_load(srv: SandboxServer) -> None:
    from impactframe import dask as ifd

    ddf = ifd.read_records(
        **conn(srv), start_date="2023-01-01", end_date="2024-12-31", npartitions=4
    )
    assert srv.requests == []
    assert ddf.npartitions > 1
    frame = ddf.compute(scheduler="sync")
    expected = ifr.load_records(
        **conn(srv), start_date="2023-01-01", end_date="2024-12-31", metadata="json"
    )
    assert list(frame.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected)
    assert list(ddf.dtypes) == list(expected.dtypes)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"filter_by": "plastic"}, "filter_by"),
        ({"start_date": "2024-02-30"}, "start_date"),
        ({"start_date": "2024-02-01", "end_date": "2024-01-01"}, "start_date"),
        ({"sort_order": "up"}, "sort_order"),
        ({"page_size": 0}, "page_size"),
        ({"dtype_backend": "arrow"}, "dtype_backend"),
    ],
)
def test_dask_rejects_bad_arguments_before_any_request(
    srv: SandboxServer, kwargs: dict[str, Any], name: str
) -> None:
    from impactframe import dask as ifd

    with pytest.raises(ValueError, match=name):
        ifd.read_records(**conn(srv), **kwargs)
    assert srv.requests == []


def test_dask_pyarrow_backend(srv: SandboxServer) -> None:
    from impactframe import dask as ifd

    ddf = ifd.read_records(
        **conn(srv), start_date="2023-01-01", end_date="2024-12-31", dtype_backend="pyarrow"
    )
    frame = ddf.compute(scheduler="sync").reset_index(drop=True)
    expected = ifr.load_records(
        **conn(srv),
        start_date="2023-01-01",
        end_date="2024-12-31",
        metadata="json",
        dtype_backend="pyarrow",
    )
    pd.testing.assert_frame_equal(frame, expected)


def test_dask_metadata_keys_and_customers(srv: SandboxServer) -> None:
    from impactframe import dask as ifd

    ddf = ifd.read_customer_records(
        **conn(srv),
        start_date="2023-01-01",
        end_date="2024-12-31",
        metadata_keys=["campaign"],
        npartitions=3,
    )
    assert srv.requests == []
    frame = ddf.compute(scheduler="sync").reset_index(drop=True)
    assert list(frame.columns) == [*CUSTOMER_FIXED, "metadata_campaign"]
    loaded = ifr.load_customer_records(**conn(srv))
    pd.testing.assert_frame_equal(frame, loaded[frame.columns])


# -- §8 aggregation ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_totals(srv: SandboxServer, backend: str) -> None:
    df = ifr.load_records(**conn(srv), dtype_backend=backend)
    totals = aggregate.totals(df)
    assert isinstance(totals, pd.Series)
    assert list(totals.index) == KNOWN_TYPES
    for kind in KNOWN_TYPES:
        assert totals[kind] == sum(r.get(kind, 0) for r in RECORDS)
    pd.testing.assert_series_equal(df.impact.totals(), totals)


def test_totals_by_group(srv: SandboxServer) -> None:
    cdf = ifr.load_customer_records(**conn(srv))
    table = aggregate.totals(cdf, by="customer_email")
    assert isinstance(table, pd.DataFrame)
    assert len(table) == len(CUSTOMERS)
    assert set(KNOWN_TYPES) <= set(table.columns)
    table = table.reset_index() if "customer_email" not in table.columns else table
    ann = table[table["customer_email"] == "ann+impact@example.com"].iloc[0]
    assert ann["tree_planted"] == 13
    assert ann["money_donated"] == 1000
    pd.testing.assert_frame_equal(
        cdf.impact.totals(by="customer_email"), aggregate.totals(cdf, by="customer_email")
    )


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_summarize_and_cumulative(srv: SandboxServer, backend: str) -> None:
    df = ifr.load_records(
        **conn(srv), start_date="2023-01-01", end_date="2023-04-30", dtype_backend=backend
    )
    summary = aggregate.summarize(df, freq="MS")
    assert list(summary.columns) == KNOWN_TYPES
    starts = [pd.Timestamp(s) for s in summary.index]
    assert [s.strftime("%Y-%m-%d") for s in starts] == [
        "2023-01-01",
        "2023-02-01",
        "2023-03-01",
        "2023-04-01",
    ]
    assert summary["tree_planted"].tolist() == [10, 0, 0, 0]
    assert summary["waste_removed"].tolist() == [15, 0, 0, 0]
    assert summary["carbon_captured"].tolist() == [0, 0, 5, 0]
    assert summary["coral_restored"].tolist() == [0, 0, 0, 2]
    assert summary["money_donated"].tolist() == [0, 0, 0, 0]
    cumulative = aggregate.cumulative(df, freq="MS")
    assert cumulative["tree_planted"].tolist() == [10, 10, 10, 10]
    assert cumulative["carbon_captured"].tolist() == [0, 0, 5, 5]
    pd.testing.assert_frame_equal(cumulative, summary.cumsum(), check_dtype=False)
    pd.testing.assert_frame_equal(df.impact.summarize(freq="MS"), summary)
    pd.testing.assert_frame_equal(df.impact.cumulative(freq="MS"), cumulative)


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_top_customers(srv: SandboxServer, backend: str) -> None:
    cdf = ifr.load_customer_records(**conn(srv), dtype_backend=backend)
    top = aggregate.top_customers(cdf, n=2, impact_type="tree_planted")
    assert top.index.name == "customer_email"
    assert list(top.index) == ["ann+impact@example.com", "bob@example.com"]
    assert {"customer_id", "customer_name"} <= set(top.columns)
    assert top.loc["ann+impact@example.com", "customer_id"] == "C1"
    assert top.loc["ann+impact@example.com", "customer_name"] == "Ann Lee"
    totals = top.drop(columns=["customer_id", "customer_name"])
    assert 13 in totals.iloc[0].tolist()
    everyone = aggregate.top_customers(cdf)
    assert len(everyone) == len(CUSTOMERS)
    assert pd.isna(everyone.loc["cy/=@example.com", "customer_name"])
    pd.testing.assert_frame_equal(cdf.impact.top_customers(n=2, impact_type="tree_planted"), top)


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_with_units(srv: SandboxServer, backend: str) -> None:
    df = ifr.load_records(**conn(srv), dtype_backend=backend)
    out = aggregate.with_units(df)
    assert list(out.columns[: len(df.columns)]) == list(df.columns)
    money = out[out["impact_type"] == "money_donated"]
    assert sorted(money["money_donated_usd"].tolist()) == [10.0, 12.34]
    added = [c for c in out.columns if c not in df.columns and c != "money_donated_usd"]
    assert added
    labels = out.loc[out["impact_type"] == "tree_planted", added].astype(str)
    assert any((labels[c] == "trees").all() for c in added)
    pd.testing.assert_frame_equal(df.impact.with_units(), out)


def test_plot(srv: SandboxServer) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    df = ifr.load_records(**conn(srv))
    result = df.impact.plot()
    assert result is not None
    plt.close("all")


# -- §9 command line ---------------------------------------------------------------------------


def run_cli(
    *args: str, cwd: Path, key: str | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTFRAME_")}
    env["IMPACTFRAME_CACHE_DIR"] = str(cwd / "cli-cache")
    env["MPLBACKEND"] = "Agg"
    if key is not None:
        env["IMPACTFRAME_API_KEY"] = key
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "impactframe", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_fetch_parquet_and_csv(srv: SandboxServer, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    result = run_cli("fetch", "records", "--out", str(out), "--base-url", srv.url,
                     cwd=tmp_path, key=srv.api_key)  # fmt: skip
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(out)
    assert len(frame) == len(RECORDS)
    assert list(frame.columns[: len(RECORD_FIXED)]) == RECORD_FIXED
    csv = tmp_path / "c.csv"
    email = "ann+impact@example.com"
    result = run_cli("fetch", "customer-records", "--out", str(csv), "--base-url", srv.url,
                     "--customer-email", email, cwd=tmp_path, key=srv.api_key)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(pd.read_csv(csv)["customer_email"]) == {"ann+impact@example.com"}
    assert srv.requests[-1].params["customer_email"] == ["ann+impact@example.com"]


def test_cli_query_options(srv: SandboxServer, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    result = run_cli(
        "fetch", "records", "--out", str(out), "--base-url", srv.url,
        "--filter-by", "tree_planted", "--filter-by", "money_donated",
        "--start", "2023-01-01", "--end", "2024-09-16", "--sort", "desc",
        "--max-records", "3", "--page-size", "2", "--concurrency", "1",
        cwd=tmp_path, key=srv.api_key,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    params = srv.requests[0].params
    assert sorted(params["filter_by"]) == ["money_donated", "tree_planted"]
    assert params["start_date"] == ["2023-01-01"]
    assert params["end_date"] == ["2024-09-16"]
    assert params["limit"] == ["2"]
    assert params["sort_order"] == ["desc"]
    frame = pd.read_parquet(out)
    assert pd.to_datetime(frame["time_utc"]).tolist() == [
        ts(t) for t in ["2024-09-16T20:30:13.391Z", "2024-01-01T00:00:00.000Z",
                             "2023-12-31T23:59:59.999Z"]
    ]  # fmt: skip


def test_cli_fetch_cache_and_cache_commands(srv: SandboxServer, tmp_path: Path) -> None:
    args = ("fetch", "records", "--out", str(tmp_path / "r.parquet"), "--base-url", srv.url)
    assert run_cli(*args, "--cache", cwd=tmp_path, key=srv.api_key).returncode == 0
    srv.clear_log()
    assert run_cli(*args, "--cache", cwd=tmp_path, key=srv.api_key).returncode == 0
    assert srv.requests == []
    result = run_cli(*args, "--cache", "--refresh", cwd=tmp_path, key=srv.api_key)
    assert result.returncode == 0, result.stderr
    assert {r.params.get("start_date", [None])[0] for r in srv.requests} == {"2024-09-17"}
    listing = run_cli("cache", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "records" in listing.stdout
    assert srv.api_key not in listing.stdout
    cleared = run_cli("cache", "clear", cwd=tmp_path)
    assert cleared.returncode == 0, cleared.stderr
    assert not list((tmp_path / "cli-cache").rglob("*.parquet"))


def test_cli_export_and_summary(srv: SandboxServer, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = run_cli("export", "records", "--out", str(out), "--base-url", srv.url,
                     cwd=tmp_path, key=srv.api_key)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(pd.read_parquet(out)) == len(RECORDS)
    assert (out / "_common_metadata").is_file()
    result = run_cli("summary", "records", "--freq", "MS", "--base-url", srv.url,
                     cwd=tmp_path, key=srv.api_key)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "tree_planted" in result.stdout
    result = run_cli("summary", "customer-records", "--by", "customer_email",
                     "--base-url", srv.url, cwd=tmp_path, key=srv.api_key)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "bob@example.com" in result.stdout


def test_cli_api_key_file(srv: SandboxServer, tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(srv.api_key + "\n")
    env = {"IMPACTFRAME_BASE_URL": srv.url}  # the host from the environment, no --base-url
    result = run_cli("fetch", "records", "--out", str(tmp_path / "r.csv"), "--api-key-file",
                     str(key_file), cwd=tmp_path, extra_env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(RECORDS)
    result = run_cli("fetch", "records", "--out", str(tmp_path / "r.csv"), "--base-url", srv.url,
                     "--api-key", srv.api_key, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_cli_api_error_exits_1_in_one_line(
    serve: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = serve(RECORDS, api_key="right-key")
    args = ("fetch", "records", "--out", str(tmp_path / "r.csv"), "--base-url", server.url)
    result = run_cli(*args, cwd=tmp_path, key=SECRET)
    assert result.returncode == 1
    line = _one_line_error(result)
    assert SECRET not in result.stderr + result.stdout
    assert "API Key does not exist" in line or "key" in line.lower()
    debug = run_cli(*args, "--debug", cwd=tmp_path, key=SECRET)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert SECRET not in debug.stderr + debug.stdout


def test_cli_validation_error_exits_1(serve: Callable[..., SandboxServer], tmp_path: Path) -> None:
    server = serve([rec("U-BAD-7", GOOD_TIME, "tree_planted", "5")])
    result = run_cli("fetch", "records", "--out", str(tmp_path / "r.csv"),
                     "--base-url", server.url, cwd=tmp_path, key=server.api_key)  # fmt: skip
    assert result.returncode == 1
    assert "tree_planted" in _one_line_error(result)


@pytest.mark.parametrize(
    "bad",
    [
        ("--start", "2024-02-30"),
        ("--filter-by", "plastic"),
    ],
)
def test_cli_usage_errors_exit_2(srv: SandboxServer, tmp_path: Path, bad: tuple[str, str]):
    result = run_cli("fetch", "records", "--out", str(tmp_path / "r.csv"), "--base-url", srv.url,
                     *bad, cwd=tmp_path, key=srv.api_key)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert srv.requests == []


def test_cli_without_key_names_the_variable(srv: SandboxServer, tmp_path: Path) -> None:
    result = run_cli("fetch", "records", "--out", str(tmp_path / "r.csv"), "--base-url", srv.url,
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode in (1, 2)
    assert "IMPACTFRAME_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert srv.requests == []


def test_cli_demo(tmp_path: Path) -> None:
    # No key in the environment, no --out: the default folder is ./impactframe-demo.
    result = run_cli("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "impactframe-demo"
    assert list(out.rglob("*.parquet"))
    assert list(out.rglob("*.png"))
    assert result.stdout.strip()


def test_cli_sandbox(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "impactframe", "sandbox", "--port", "0", "--records", "25",
         "--seed", "3"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                # SPEC does not say what is printed: a URL at least, perhaps the key after it
                if "IMPACTFRAME_API_KEY=" in line or len(lines) >= 4:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=30)
        url = next(
            word.split("=", 1)[-1]
            for line in lines
            for word in line.split()
            if word.startswith(("http://", "IMPACTFRAME_BASE_URL="))
        )
        default_key = SandboxServer(n_records=0, n_customer_records=0).api_key
        key = next(
            (
                word.split("=", 1)[1]
                for line in lines
                for word in line.split()
                if word.startswith("IMPACTFRAME_API_KEY=")
            ),
            default_key,
        )
        response = requests.get(url + "/v1/records", params={"limit": 1000},
                                headers={"x-api-key": key}, timeout=10)  # fmt: skip
        assert response.status_code == 200
        records = response.json()["user_records"]
        assert records == generate_records(25, seed=3)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


# -- §10 security and privacy ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://192.168.1.10:8000",
        "http://127.0.0.1.nip.io:8000",
        "http://localhost.example.com",
        "http://api.1clickimpact.com",
        "HTTP://EXAMPLE.COM",
        "http://127.0.0.1@example.com",
    ],
)
def test_plain_http_to_other_hosts_is_refused_at_creation(
    srv: SandboxServer, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    with pytest.raises((ValueError, ifr.ImpactFrameError), match=r"(?i)http|url"):
        ifr.Client("k", base_url=url)
    with pytest.raises((ValueError, ifr.ImpactFrameError), match=r"(?i)http|url"):
        ifr.load_records(api_key="k", base_url=url)
    monkeypatch.setenv("IMPACTFRAME_BASE_URL", url)
    with pytest.raises((ValueError, ifr.ImpactFrameError), match=r"(?i)http|url"):
        ifr.Client("k")
    if "@" not in url:  # the host of "http://127.0.0.1@example.com" is example.com
        assert ifr.Client("k", base_url=url, allow_insecure=True) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.2:8000",
        "http://localhost:8000",
        "http://[::1]:8000",
        "https://x.io",
    ],
)
def test_loopback_http_and_https_are_accepted(url: str) -> None:
    assert ifr.Client("k", base_url=url) is not None


def test_pseudonymize(srv: SandboxServer) -> None:
    cdf = ifr.load_customer_records(**conn(srv))
    original = cdf.copy()
    out = ifr.pseudonymize(cdf, salt="pepper")
    pd.testing.assert_frame_equal(cdf, original)  # the input is left alone
    emails = set(original["customer_email"])
    names = set(original["customer_name"].dropna())
    assert not emails & set(out["customer_email"].dropna())
    assert not names & set(out["customer_name"].dropna())
    for column in out.columns:
        if column not in ("customer_email", "customer_name"):
            pd.testing.assert_series_equal(out[column], original[column])
    # stable and keyed: the same value maps to the same pseudonym, another salt to another
    mapping = dict(zip(original["customer_email"], out["customer_email"], strict=True))
    pairs = set(zip(original["customer_email"], out["customer_email"], strict=True))
    assert len(pairs) == len(mapping) == len(emails)
    again = ifr.pseudonymize(cdf, salt="pepper")
    pd.testing.assert_frame_equal(again, out)
    other = ifr.pseudonymize(cdf, salt="salt")
    assert set(other["customer_email"]) != set(out["customer_email"])


# -- §11 repository ----------------------------------------------------------------------------


def test_repository_layout() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {"dask", "plot", "dev"} <= set(project["optional-dependencies"])
    assert "impactframe" in project["scripts"]  # the `impactframe` command (§9)
    for name in ("README.md", "impactframe", "tests", "notebooks", "data-samples", "benchmarks"):
        assert (REPO / name).exists(), name
    assert list((REPO / "notebooks").glob("*.ipynb"))
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test", "bench"):
        assert f"\n{target}:" in "\n" + makefile, target
    assert "make test" in (REPO / ".ci" / "run").read_text()
