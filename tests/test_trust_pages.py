"""Servers that do not honour the query: every page is checked, so an error, never rows missing.

SPEC §4: records in the requested order (within and across pages), inside the requested UTC days,
of the requested impact types and customer; walks without progress end. A small hostile server
(`benchmarks._hostile.PageServer`, stdlib ``http.server`` on loopback) pages a fixed list of
records like the API, with one misbehaviour switched on per test: it ignores ``sort_order``,
counts days in UTC−5, reverses its pages, ignores the dates, ``filter_by`` or
``customer_email``, replays the same records with a new cursor, or answers empty pages for
ever. Loads (one chain and ``"auto"``), the cache, the export and Dask must all end in
`ValidationError` or `PaginationError`, or give every row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import impactframe as ifr
from benchmarks._hostile import KEY, page_records, serving
from benchmarks._hostile import PageServer as Hostile
from impactframe._paging._pages import Facts
from impactframe._paging._verify import _times
from impactframe._time import canonical_time
from impactframe.errors import APIError, PaginationError, ValidationError
from impactframe.sandbox import SandboxServer, generate_records

pytestmark = pytest.mark.timeout(120)

RECORDS = page_records()


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[Hostile]:
    with serving(Hostile(RECORDS, request.param)) as server:
        yield server


def _load(server: Hostile, endpoint: str = "records", **options: Any) -> Any:
    loader = ifr.load_customer_records if endpoint == "customer_records" else ifr.load_records
    options = {"page_size": 10, "progress": False, **options}
    return loader(api_key=KEY, base_url=server.url, **options)


# -- the server honours everything: the hostile server itself gives the truth ---------------------


@pytest.mark.parametrize("hostile", [None], indirect=True)
@pytest.mark.parametrize("concurrency", [1, 4, "auto"])
@pytest.mark.parametrize("sort_order", ["asc", "desc"])
def test_an_honest_server_gives_every_row_in_order(
    hostile: Hostile, concurrency: Any, sort_order: str
) -> None:
    df = _load(hostile, concurrency=concurrency, sort_order=sort_order)
    expected = [r["user_id"] for r in RECORDS]
    assert df["user_id"].tolist() == (expected if sort_order == "asc" else expected[::-1])


# -- a server that ignores sort_order -------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["ignore_sort"], indirect=True)
@pytest.mark.parametrize("concurrency", [1, 4, "auto"])
def test_ignoring_sort_order_is_an_error_or_every_row(hostile: Hostile, concurrency: Any) -> None:
    # Ascending was asked for and sent: every row (the probe's wrong answer for the last day
    # only balances the windows, it never bounds them).
    df = _load(hostile, concurrency=concurrency)
    assert df["user_id"].tolist() == [r["user_id"] for r in RECORDS]
    # Descending was asked for, ascending sent: an error naming the rule.
    with pytest.raises(ValidationError, match=r"sort_order='desc' was asked for"):
        _load(hostile, concurrency=concurrency, sort_order="desc")


@pytest.mark.parametrize("hostile", ["ignore_sort"], indirect=True)
def test_ignoring_sort_order_through_cache_export_and_dask(
    hostile: Hostile, tmp_path: Path
) -> None:
    df = _load(hostile, concurrency=4, cache=tmp_path / "cache")
    assert len(df) == len(RECORDS)
    with pytest.raises(ValidationError, match="sort_order='desc'"):
        _load(hostile, concurrency=4, sort_order="desc", cache=tmp_path / "cache")
    result = ifr.export_parquet(
        tmp_path / "out", api_key=KEY, base_url=hostile.url, page_size=10, concurrency=4,
        progress=False,
    )  # fmt: skip
    assert result.records == len(RECORDS)
    with pytest.raises(ValidationError, match="sort_order='desc'"):
        ifr.export_parquet(
            tmp_path / "out-desc", api_key=KEY, base_url=hostile.url, page_size=10,
            concurrency=4, sort_order="desc", progress=False,
        )  # fmt: skip
    dask = pytest.importorskip("impactframe.dask")
    frame = dask.read_records(api_key=KEY, base_url=hostile.url, page_size=10, npartitions=4)
    assert len(frame.compute()) == len(RECORDS)
    with pytest.raises(ValidationError, match="sort_order='desc'"):
        dask.read_records(
            api_key=KEY, base_url=hostile.url, page_size=10, npartitions=4, sort_order="desc"
        ).compute()


# -- a server that counts days in UTC−5 -----------------------------------------------------------


@pytest.mark.parametrize("hostile", ["utc_minus_5"], indirect=True)
@pytest.mark.parametrize("concurrency", [1, 4, "auto"])
def test_days_counted_in_another_time_zone_are_an_error(hostile: Hostile, concurrency: Any) -> None:
    # Windows have dates: their edge records fall on the wrong side of midnight UTC.
    if concurrency != 1:
        with pytest.raises(ValidationError, match=r"its UTC day is (before|after) the requested"):
            _load(hostile, concurrency=concurrency)
    with pytest.raises(ValidationError, match=r"its UTC day is (before|after) the requested"):
        _load(hostile, concurrency=concurrency, start_date="2024-03-03", end_date="2024-03-10")


# -- pages in the wrong order, records outside the dates, types or customer not asked for ---------


@pytest.mark.parametrize("hostile", ["reverse_pages"], indirect=True)
def test_descending_pages_for_an_ascending_query_are_an_error(hostile: Hostile) -> None:
    with pytest.raises(ValidationError, match=r"record 1 of the page .*sort_order='asc'") as info:
        _load(hostile, concurrency=1)
    assert info.value.field == "time_utc"
    assert info.value.record["user_id"] == "U0008"  # the page came 9, 8, ...: 8 is the first out


@pytest.mark.parametrize("hostile", ["ignore_dates"], indirect=True)
@pytest.mark.parametrize("concurrency", [1, "auto"])
def test_records_outside_the_dates_are_an_error(hostile: Hostile, concurrency: Any) -> None:
    with pytest.raises(ValidationError, match=r"U0000.*before the requested start_date=2024-03-05"):
        _load(hostile, concurrency=concurrency, start_date="2024-03-05")
    with pytest.raises(ValidationError, match=r"after the requested end_date=2024-03-05"):
        _load(hostile, concurrency=concurrency, end_date="2024-03-05", sort_order="desc")


@pytest.mark.parametrize("hostile", ["ignore_filter"], indirect=True)
@pytest.mark.parametrize("concurrency", [1, "auto"])
def test_unrequested_impact_types_are_an_error(hostile: Hostile, concurrency: Any) -> None:
    with pytest.raises(ValidationError, match=r"it is a waste_removed record, not of the reque"):
        _load(hostile, concurrency=concurrency, filter_by="tree_planted")
    with pytest.raises(ValidationError, match=r"U0002.*carbon_captured record"):
        _load(hostile, concurrency=concurrency, filter_by=["tree_planted", "waste_removed"])


@pytest.mark.parametrize("hostile", ["ignore_email"], indirect=True)
def test_another_customers_records_are_an_error(hostile: Hostile) -> None:
    with pytest.raises(ValidationError, match=r"customer_email is 'c0@example.com', not the re"):
        _load(hostile, "customer_records", customer_email="c1@example.com")


# -- walks that make no progress -------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["replay"], indirect=True)
@pytest.mark.parametrize("max_records", [None, 10, 1000])
def test_the_same_records_with_new_cursors_end_in_pagination_error(
    hostile: Hostile, max_records: int | None
) -> None:
    with pytest.raises(PaginationError, match="held only records the walk had just seen"):
        _load(hostile, concurrency=1, page_size=3, max_records=max_records)
    assert len(hostile.log) == 4  # the first page, then three that brought nothing new


@pytest.mark.parametrize("hostile", ["empty_forever"], indirect=True)
def test_endless_empty_pages_end_in_pagination_error(hostile: Hostile) -> None:
    with pytest.raises(PaginationError, match="1000 empty pages in a row"):
        _load(hostile, concurrency=1)
    assert len(hostile.log) == 1000


# -- with concurrency, a later window's error does not wait for the first window's retries -------


@pytest.mark.parametrize("hostile", ["stall_and_break"], indirect=True)
def test_a_later_windows_error_does_not_wait_for_the_first_windows_retries(
    hostile: Hostile,
) -> None:
    began = time.monotonic()
    with pytest.raises(APIError) as info:
        _load(hostile, concurrency=4)
    assert info.value.status == 400
    assert time.monotonic() - began < 10  # not the 600 s (capped at 120) the first window waits
    stalled = [p for p in hostile.log if "end_date" in p and "start_date" not in p]
    assert len(stalled) == 1  # the stalled window's retry was never sent


# -- a load of one page costs one request --------------------------------------------------------


def test_a_load_of_one_page_costs_one_request() -> None:
    records = generate_records(50, seed=3)
    with SandboxServer(records=records, n_customer_records=0) as server:
        df = ifr.load_records(api_key=server.api_key, base_url=server.url, progress=False)
        assert len(df) == 50
        assert len(server.requests) == 1
        server.clear_log()
        df = ifr.load_records(
            api_key=server.api_key, base_url=server.url, progress=False, page_size=10
        )
        assert len(df) == 50
        assert len(server.requests) > 5  # several chains: the first page, a probe, the windows


# -- the page-wide time check against the record-by-record one ------------------------------


_TIME_TEXT = st.one_of(
    st.sampled_from(
        ["2024-01-02T03:04:05.678Z", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05.678+00:00",
         "2024-01-02", "2024-01-02T03:04:05.678Z\n2024", "", "2024-01-02T03:04:05.678Z2024",
         "-01-02T03:04:05.678Z", "２０２４-01-02T03:04:05.678Z"]
    ),
    st.text(alphabet="0123456789-T:.Z\n+", max_size=30),
)  # fmt: skip


@given(st.lists(_TIME_TEXT, max_size=8))
@example(["2024-01-02T03:04:05.678Z2024", "-01-02T03:04:05.678Z"])
def test_the_page_wide_time_check_agrees_with_each_record_alone(texts: list[str]) -> None:
    # The fast path joins a page's times; no time may lend characters to its neighbour.
    facts = [Facts(user_id=f"U{i}", time_utc=text) for i, text in enumerate(texts)]
    expected = [(i, key) for i, text in enumerate(texts) if (key := canonical_time(text))]
    assert _times(facts) == expected
