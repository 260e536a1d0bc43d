"""End-to-end tests of load_records / load_customer_records over real HTTP to the sandbox."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import threading
from collections.abc import Iterator

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import impactframe as ifr
from impactframe._constants import IMPACT_TYPES
from impactframe._dtypes import DTYPES
from impactframe._frame._builder import records_to_frame
from impactframe.sandbox import Fault, SandboxServer, generate_records

RECORDS = generate_records(600, seed=11)
CUSTOMER_RECORDS = generate_records(600, seed=12, customers=True)


def _truth(
    records: list[dict],
    endpoint: str = "records",
    *,
    filter_by: tuple[str, ...] | None = None,
    start: str | None = None,
    end: str | None = None,
    email: str | None = None,
    sort_order: str = "asc",
) -> pd.DataFrame:
    """The expected frame, computed without the API: filter, sort, convert."""
    kept = []
    for record in records:
        day = record["time_utc"][:10]
        if filter_by and not any(t in record for t in filter_by):
            continue
        if (start and day < start) or (end and day > end):
            continue
        if email and record["customer"]["customer_email"] != email:
            continue
        kept.append(record)
    kept.sort(key=lambda r: (r["time_utc"], r["user_id"]), reverse=sort_order == "desc")
    return records_to_frame(kept, endpoint=endpoint)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(records=RECORDS, customer_records=CUSTOMER_RECORDS) as srv:
        yield srv


@pytest.fixture
def conn(server: SandboxServer) -> dict[str, str]:
    server.clear_faults()
    server.clear_log()
    return {"api_key": server.api_key, "base_url": server.url, "progress": False}


# --- the frame of SPEC §3 -------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_columns_dtypes_and_rules(conn: dict, endpoint: str) -> None:
    load = ifr.load_records if endpoint == "records" else ifr.load_customer_records
    df = load(**conn, page_size=97)
    fixed = ["user_id", "time_utc", "impact_type", "amount", *IMPACT_TYPES, "category"]
    if endpoint == "customer_records":
        fixed[1:1] = ["customer_id", "customer_email", "customer_name"]
    assert list(df.columns[: len(fixed)]) == fixed
    meta = list(df.columns[len(fixed) :])
    assert meta
    assert all(c.startswith("metadata_") for c in meta)
    assert meta == sorted(meta)
    for column in fixed:
        assert df[column].dtype == DTYPES[column], column
    assert all(df[c].dtype == "string" for c in meta)
    assert str(df["time_utc"].dtype) == "datetime64[ms, UTC]"
    assert list(df["impact_type"].cat.categories) == list(IMPACT_TYPES)
    assert isinstance(df.index, pd.RangeIndex)
    assert df["user_id"].notna().all()
    assert df["time_utc"].notna().all()
    assert (df["amount"] >= 0).all()
    impacts = df[list(IMPACT_TYPES)]
    assert (impacts.notna().sum(axis=1) == 1).all()
    assert (impacts.sum(axis=1) == df["amount"]).all()
    for impact_type, group in df.groupby("impact_type", observed=True):
        assert group[impact_type].notna().all()
    if endpoint == "customer_records":
        assert df["customer_id"].notna().all()
        assert df["customer_name"].isna().any(), "the sandbox serves customers without names"
    records = RECORDS if endpoint == "records" else CUSTOMER_RECORDS
    assert_frame_equal(df, _truth(records, endpoint))


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
def test_sort_orders(conn: dict, sort_order: str) -> None:
    df = ifr.load_records(**conn, sort_order=sort_order, page_size=50)
    assert len(df) == len(RECORDS)
    times = df["time_utc"]
    assert times.is_monotonic_increasing if sort_order == "asc" else times.is_monotonic_decreasing
    assert_frame_equal(df, _truth(RECORDS, sort_order=sort_order))


def test_empty_result_has_full_schema(conn: dict) -> None:
    df = ifr.load_customer_records(**conn, customer_email="nobody@example.org")
    assert len(df) == 0
    assert isinstance(df.index, pd.RangeIndex)
    for column, dtype in DTYPES.items():
        assert df[column].dtype == dtype, column


@pytest.mark.parametrize("mode", ["dict", "json", "drop"])
def test_metadata_modes(conn: dict, mode: str) -> None:
    df = ifr.load_records(**conn, metadata=mode)
    columns = ifr.load_records(**conn)
    assert not any(c.startswith("metadata_") for c in df.columns)
    if mode == "drop":
        assert "metadata" not in df.columns
        return
    assert df.columns[-1] == "metadata"
    first = next(i for i, r in enumerate(RECORDS) if r.get("metadata"))
    value = df["metadata"].iloc[first]
    decoded = value if mode == "dict" else json.loads(value)
    assert decoded == RECORDS[first]["metadata"]
    key = next(iter(RECORDS[first]["metadata"]))
    assert columns[f"metadata_{key}"].iloc[first] == RECORDS[first]["metadata"][key]


def test_metadata_prefix(conn: dict) -> None:
    df = ifr.load_records(**conn, metadata_prefix="m.")
    assert any(c.startswith("m.") for c in df.columns)
    assert not any(c.startswith("metadata_") for c in df.columns)


def test_pyarrow_backend(conn: dict) -> None:
    df = ifr.load_records(**conn, dtype_backend="pyarrow")
    reference = ifr.load_records(**conn)
    assert list(df.columns) == list(reference.columns)
    assert isinstance(df["user_id"].dtype, pd.ArrowDtype)
    assert isinstance(df["amount"].dtype, pd.ArrowDtype)
    assert str(df["time_utc"].dtype) == "timestamp[ms, tz=UTC][pyarrow]"
    assert df["amount"].sum() == reference["amount"].sum()
    assert df["user_id"].tolist() == reference["user_id"].tolist()


# --- the query -------------------------------------------------------------------------


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize(
    "filter_by", [("tree_planted",), ("carbon_captured", "money_donated"), ("coral_restored",)]
)
def test_filters_with_short_and_empty_pages(filter_by: tuple[str, ...], dynamo: bool) -> None:
    with SandboxServer(records=RECORDS, filter_after_limit=dynamo) as srv:
        df = ifr.load_records(
            api_key=srv.api_key,
            base_url=srv.url,
            progress=False,
            filter_by=list(filter_by),
            page_size=25,
            concurrency=1,  # the request count of one chain is asserted
        )
        requests = len(srv.requests)
    assert set(df["impact_type"].astype(str)) <= set(filter_by)
    assert_frame_equal(df, _truth(RECORDS, filter_by=filter_by))
    if dynamo:
        # The filter is applied after the limit, so every record of the range is scanned:
        # the pages are short (or empty) yet the walk went on to the end.
        assert requests >= len(RECORDS) // 25
    else:
        assert requests == max(1, -(-len(df) // 25))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2022-03-01", "2022-06-30"),
        (dt.date(2022, 3, 1), dt.date(2022, 6, 30)),
        (dt.datetime(2022, 3, 1, 12), dt.datetime(2022, 6, 30, 1)),
        (pd.Timestamp("2022-03-01"), pd.Timestamp("2022-06-30 23:59")),
        # An aware datetime counts by its UTC day: 22:00 at UTC-5 on Feb 28 is Mar 1 in UTC.
        (
            dt.datetime(2022, 2, 28, 22, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            pd.Timestamp("2022-06-30 20:00", tz="America/New_York"),
        ),
    ],
)
def test_inclusive_dates(conn: dict, start: object, end: object) -> None:
    df = ifr.load_records(**conn, start_date=start, end_date=end)
    expected = _truth(RECORDS, start="2022-03-01", end="2022-06-30")
    assert len(expected) > 0
    assert_frame_equal(df, expected)
    assert df["time_utc"].min().date() >= dt.date(2022, 3, 1)
    assert df["time_utc"].max().date() <= dt.date(2022, 6, 30)


def test_dates_are_inclusive_at_both_ends() -> None:
    records = [
        {"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": 1},
        {"user_id": "U1", "time_utc": "2024-01-02T23:59:59.999Z", "tree_planted": 2},
        {"user_id": "U1", "time_utc": "2024-01-03T00:00:00.000Z", "tree_planted": 3},
    ]
    with SandboxServer(records=records) as srv:
        df = ifr.load_records(
            api_key=srv.api_key,
            base_url=srv.url,
            start_date="2024-01-01",
            end_date="2024-01-02",
            progress=False,
        )
    assert df["tree_planted"].tolist() == [1, 2]


def test_customer_email(conn: dict) -> None:
    email = CUSTOMER_RECORDS[5]["customer"]["customer_email"]
    df = ifr.load_customer_records(**conn, customer_email=email)
    assert len(df) > 0
    assert (df["customer_email"] == email).all()
    assert_frame_equal(df, _truth(CUSTOMER_RECORDS, "customer_records", email=email))


def test_max_records_fetches_no_extra_page(conn: dict, server: SandboxServer) -> None:
    df = ifr.load_records(**conn, page_size=40, max_records=100)
    assert len(df) == 100
    assert_frame_equal(df, _truth(RECORDS).iloc[:100])
    limits = [int(r.params["limit"][0]) for r in server.requests]
    assert limits == [40, 40, 21]  # after a cursor, one more than missing (see _walk_query)


def test_client_and_credentials_are_alternatives(server: SandboxServer) -> None:
    client = ifr.Client(server.api_key, base_url=server.url)
    with pytest.raises(ValueError, match="client"):
        ifr.load_records(client=client, api_key=server.api_key)
    df = ifr.load_records(client=client, progress=False, max_records=5)
    assert len(df) == 5
    client.close()


def test_env_fallbacks(server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPACTFRAME_API_KEY", server.api_key)
    monkeypatch.setenv("IMPACTFRAME_BASE_URL", server.url)
    df = ifr.load_records(progress=False, max_records=3)
    assert len(df) == 3


# --- faults and errors -----------------------------------------------------------------


def test_faults_do_not_change_the_result(server: SandboxServer, conn: dict) -> None:
    expected = ifr.load_customer_records(**conn, page_size=50)
    client = ifr.Client(server.api_key, base_url=server.url, max_retries=5)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    server.inject(Fault("status", status=429, retry_after="1"), times=2)
    server.inject(Fault("status", status=503), times=1)
    server.inject(Fault("drop"), times=1)
    server.inject(Fault("truncate"), times=1)
    server.inject(Fault("repeat"), times=3)
    got = ifr.load_customer_records(client=client, page_size=50, progress=False)
    client.close()
    assert_frame_equal(got, expected)
    faults = [r.fault for r in server.requests if r.fault]
    assert len(faults) >= 8
    assert sleeps[:2] == [1.0, 1.0], "Retry-After is honoured"


def test_persistent_500_ends_in_api_error(server: SandboxServer) -> None:
    client = ifr.Client(server.api_key, base_url=server.url, max_retries=3)
    client._sleep = lambda seconds: None
    server.clear_log()
    server.inject(Fault("status", status=500), times=None)
    try:
        with pytest.raises(ifr.APIError) as info:
            ifr.load_records(client=client, progress=False)
    finally:
        server.clear_faults()
        client.close()
    assert info.value.status == 500
    assert len(server.requests) == 4


def test_wrong_key(server: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-do-not-leak-123"
    caplog.set_level(logging.DEBUG, logger="impactframe")
    with pytest.raises(ifr.AuthenticationError) as info:
        ifr.load_records(api_key=secret, base_url=server.url, progress=False)
    assert info.value.status == 401
    assert info.value.error_type == "key_error"
    assert "API Key does not exist" in str(info.value)
    for text in (str(info.value), repr(info.value), caplog.text):
        assert secret not in text
    assert secret not in repr(ifr.Client(secret, base_url=server.url))


def test_no_key_anywhere(monkeypatch: pytest.MonkeyPatch, server: SandboxServer) -> None:
    monkeypatch.delenv("IMPACTFRAME_API_KEY", raising=False)
    server.clear_log()
    with pytest.raises(ValueError, match="IMPACTFRAME_API_KEY"):
        ifr.load_records(base_url=server.url)
    assert server.requests == []


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"filter_by": "trees"}, "filter_by"),
        ({"filter_by": ["tree_planted", 3]}, "filter_by"),
        ({"start_date": "2024-02-30"}, "start_date"),
        ({"end_date": "01/02/2024"}, "end_date"),
        ({"start_date": "2024-03-01", "end_date": "2024-02-01"}, "start_date"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_size": True}, "page_size"),
        ({"sort_order": "up"}, "sort_order"),
        ({"metadata": "flat"}, "metadata"),
        ({"dtype_backend": "arrow"}, "dtype_backend"),
        ({"max_records": 0}, "max_records"),
        ({"concurrency": 0}, "concurrency"),
        ({"refresh": "yes"}, "refresh"),
    ],
)
def test_bad_arguments_send_nothing(
    server: SandboxServer, conn: dict, kwargs: dict, argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        ifr.load_records(**conn, **kwargs)
    assert server.requests == []


def test_customer_email_only_on_customer_endpoint(conn: dict) -> None:
    with pytest.raises(TypeError):
        ifr.load_records(**conn, customer_email="a@b.c")  # type: ignore[call-arg]


class _StubHandler(http.server.BaseHTTPRequestHandler):
    """Answers what the sandbox never would: HTML with 200, a cursor that repeats."""

    protocol_version = "HTTP/1.1"
    mode = "html"

    def do_GET(self) -> None:
        if self.mode == "html":
            body = b"<html><body>Gateway says hello</body></html>"
            ctype = "text/html"
        else:
            page = {"user_records": [], "cursor": "c2FtZQ=="}
            body = json.dumps(page).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_StubHandler]]]:
    handler = type("Handler", (_StubHandler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_html_body_is_an_api_error(stub: tuple[str, type[_StubHandler]]) -> None:
    url, handler = stub
    handler.mode = "html"
    with pytest.raises(ifr.APIError) as info:
        ifr.load_records(api_key="k", base_url=url, progress=False)
    assert info.value.status == 200
    assert "Gateway says hello" in str(info.value)


def test_repeated_cursor_is_a_pagination_error(stub: tuple[str, type[_StubHandler]]) -> None:
    url, handler = stub
    handler.mode = "loop"
    with pytest.raises(ifr.PaginationError):
        ifr.load_records(api_key="k", base_url=url, progress=False)


# --- concurrency and progress ----------------------------------------------------------


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
def test_concurrency_gives_the_same_frame(conn: dict, sort_order: str) -> None:
    one = ifr.load_customer_records(**conn, sort_order=sort_order, page_size=30)
    many = ifr.load_customer_records(**conn, sort_order=sort_order, page_size=30, concurrency=4)
    assert_frame_equal(many, one)


def test_progress_bar(conn: dict, capsys: pytest.CaptureFixture[str]) -> None:
    conn = {**conn, "progress": True}
    df = ifr.load_records(**conn, page_size=200)
    err = capsys.readouterr().err
    assert "records" in err
    assert len(df) == len(RECORDS)


def test_unknown_response_fields_are_warned_once_each(server: SandboxServer, conn: dict) -> None:
    # Every page of a three-page walk carries two fields beside the records and the cursor.
    pages = [RECORDS[:2], RECORDS[2:4], RECORDS[4:5]]
    for number, records in enumerate(pages):
        body = {"user_records": records, "has_more": number < 2, "count": len(records)}
        if number < 2:
            body["cursor"] = f"page-{number + 1}"
        server.inject(Fault("status", status=200, body=json.dumps(body)), times=1)
    with pytest.warns(ifr.SchemaDriftWarning) as caught:
        df = ifr.load_records(max_records=5, **conn)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2, messages
    assert "'count'" in messages[0]
    assert "'has_more'" in messages[1]
    assert {w.filename for w in caught} == {__file__}  # pointed at the caller's line
    assert_frame_equal(df, records_to_frame(RECORDS[:5]))


def test_unknown_response_fields_are_warned_by_export(
    server: SandboxServer, conn: dict, tmp_path: object
) -> None:
    body = {"user_records": RECORDS[:3], "has_more": False}
    server.inject(Fault("status", status=200, body=json.dumps(body)), times=1)
    conn = {k: v for k, v in conn.items() if k != "progress"}
    with pytest.warns(ifr.SchemaDriftWarning, match="'has_more'"):
        result = ifr.export_parquet(tmp_path / "out", "records", **conn)  # type: ignore[operator]
    assert result.records == 3


# Two different records share a key; no other field is new, so the fast path builds the frame.
_CONFLICTING = [
    *(
        {"user_id": f"U{day}", "time_utc": f"2024-01-{day:02d}T00:00:00.000Z", "tree_planted": 1}
        for day in range(1, 11)
    ),
    {"user_id": "U5", "time_utc": "2024-01-05T00:00:00.000Z", "tree_planted": 2},
]


@pytest.mark.parametrize(
    ("concurrency", "cached"), [(1, False), (2, False), (1, True)], ids=["one", "two", "cache"]
)
def test_duplicate_warning_points_at_the_caller(
    concurrency: int, cached: bool, tmp_path: object
) -> None:
    records = sorted(_CONFLICTING, key=lambda r: (r["time_utc"], r["user_id"]))
    with SandboxServer(records=records, customer_records=[]) as srv:
        options = {"cache": tmp_path} if cached else {}
        with pytest.warns(ifr.DuplicateRecordWarning) as caught:
            df = ifr.load_records(
                api_key=srv.api_key,
                base_url=srv.url,
                progress=False,
                page_size=3,
                concurrency=concurrency,
                **options,
            )
    assert len(df) == len(records)
    assert [w.category for w in caught] == [ifr.DuplicateRecordWarning]
    assert caught[0].filename == __file__  # the caller's line, not impactframe's nor sys


def test_unknown_response_fields_survive_the_max_records_trim(
    server: SandboxServer, conn: dict
) -> None:
    # The API sends more records than the cap asks for; the page is cut, its field still warned.
    body = {"user_records": RECORDS[:3], "has_more": False}
    server.inject(Fault("status", status=200, body=json.dumps(body)), times=1)
    with pytest.warns(ifr.SchemaDriftWarning, match="'has_more'") as caught:
        df = ifr.load_records(max_records=2, **conn)
    assert len(caught) == 1
    assert caught[0].filename == __file__
    assert_frame_equal(df, records_to_frame(RECORDS[:2]))
