"""Date windows (pure) and the rows they give: ``concurrency=N`` must equal one cursor chain."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

import impactframe.loaders as loaders
from impactframe._constants import IMPACT_TYPES
from impactframe._paging._concurrent import WINDOWS_PER_WORKER
from impactframe._paging._windows import split_windows
from impactframe.sandbox import SandboxServer, generate_records

DAYS = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2030, 12, 31))


@settings(max_examples=100, deadline=None)
@given(start=DAYS, length=st.integers(0, 4000), n=st.integers(1, 200))
def test_split_windows_cover_the_range_exactly_once(start: dt.date, length: int, n: int) -> None:
    end = start + dt.timedelta(days=length)
    windows = split_windows(start, end, n)
    days = length + 1
    assert 1 <= len(windows) == min(n, days)
    assert windows[0][0] == start
    assert windows[-1][1] == end
    for first, last in windows:
        assert first <= last  # never empty
    for (_, last), (first, _) in itertools.pairwise(windows):
        assert first == last + dt.timedelta(days=1)  # contiguous, no overlap, no gap
    lengths = [(last - first).days + 1 for first, last in windows]
    assert sum(lengths) == days
    assert max(lengths) - min(lengths) <= 1  # balanced


@pytest.mark.parametrize(
    ("start", "end", "n", "argument"),
    [
        (dt.date(2024, 1, 2), dt.date(2024, 1, 1), 1, "start"),
        (dt.date(2024, 1, 1), dt.date(2024, 1, 2), 0, "n"),
        (dt.date(2024, 1, 1), dt.date(2024, 1, 2), True, "n"),
    ],
)
def test_split_windows_refuses_bad_input(
    start: dt.date, end: dt.date, n: int, argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        split_windows(start, end, n)


def _load(server: SandboxServer, **query: object):
    # One chain unless a test asks for more (the loaders' default is "auto").
    query = {"concurrency": 1, **query}
    return loaders.load_records(
        api_key=server.api_key, base_url=server.url, progress=False, **query
    )


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n=st.integers(0, 250),
    seed=st.integers(0, 10_000),
    span=st.integers(0, 900),
    concurrency=st.sampled_from([2, 4, 8]),
    sort_order=st.sampled_from(["asc", "desc"]),
    filter_by=st.none() | st.lists(st.sampled_from(IMPACT_TYPES), min_size=1, max_size=3),
    filter_after_limit=st.booleans(),
    page_size=st.integers(1, 40),
    bounded=st.booleans(),
)
def test_concurrency_gives_the_rows_of_one_chain(
    n: int,
    seed: int,
    span: int,
    concurrency: int,
    sort_order: str,
    filter_by: list[str] | None,
    filter_after_limit: bool,
    page_size: int,
    bounded: bool,
) -> None:
    first = dt.date(2023, 1, 1)
    last = first + dt.timedelta(days=span)
    records = generate_records(n, seed=seed, start=first, end=last)
    query: dict[str, object] = {
        "sort_order": sort_order,
        "filter_by": filter_by,
        "page_size": page_size,
    }
    if bounded:
        # A closed range that cuts into the data at both ends.
        query["start_date"] = first + dt.timedelta(days=span // 4)
        query["end_date"] = last - dt.timedelta(days=span // 4)
    with SandboxServer(records=records, filter_after_limit=filter_after_limit) as server:
        one = _load(server, **query)
        one_chain_pages = len(server.requests)
        server.clear_log()
        many = _load(server, concurrency=concurrency, **query)
        logged = server.requests
    assert_frame_equal(many, one)
    column = many["time_utc"]
    assert column.is_monotonic_increasing if sort_order == "asc" else column.is_monotonic_decreasing

    # A query of one page costs one request; a longer one on a range of several days is
    # walked on several chains, one per planned window (the outer ones as open as the query).
    if one_chain_pages == 1:
        assert len(logged) == 1
    if bounded:
        days = (query["end_date"] - query["start_date"]).days + 1  # type: ignore[operator]
    elif records:
        days = (_day(records[-1]) - _day(records[0])).days + 1
    else:
        days = 0
    walked = {
        (r.params.get("start_date", [None])[0], r.params.get("end_date", [None])[0])
        for r in logged
        if r.params.get("limit") == [str(page_size)] and "cursor" not in r.params
    }
    if one_chain_pages > 1 and days > 1 and page_size > 1:
        assert 2 <= len(walked) - 1 <= concurrency * WINDOWS_PER_WORKER
    assert len(walked) <= 1 + concurrency * WINDOWS_PER_WORKER


def _day(record: dict) -> dt.date:
    return dt.date.fromisoformat(record["time_utc"][:10])


@pytest.fixture(scope="module")
def dynamo() -> Iterator[SandboxServer]:
    """Filters applied after the limit: short and empty pages that still carry a cursor."""
    records = generate_records(700, seed=41, start="2022-06-01", end="2024-05-31")
    with SandboxServer(records=records, filter_after_limit=True) as server:
        yield server


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
@pytest.mark.parametrize("concurrency", [2, 4, 8])
def test_every_concurrency_and_order_with_filters_after_the_limit(
    dynamo: SandboxServer, concurrency: int, sort_order: str
) -> None:
    query = {
        "filter_by": ["coral_restored", "money_donated"],
        "sort_order": sort_order,
        "page_size": 25,
        "start_date": "2022-09-15",
    }
    one = _load(dynamo, **query)
    dynamo.clear_log()
    many = _load(dynamo, concurrency=concurrency, **query)
    assert 0 < len(one) < 700
    assert set(many["impact_type"].astype(str)) == {"coral_restored", "money_donated"}
    assert any(r.status == 200 and "cursor" in r.params for r in dynamo.requests)
    assert_frame_equal(many, one)


def test_stopping_early_abandons_the_windows_in_flight() -> None:
    # A few windows of 2-3 days for 2 workers, ~30 pages or more each at 20 ms a request. The
    # caller takes the first page and stops: the walks already running must end after their
    # request in flight, not finish their windows.
    from impactframe import Client
    from impactframe._paging._concurrent import iter_pages
    from impactframe._params import normalize_query

    records = generate_records(5, seed=5, start="2024-01-01", end="2024-01-02")
    records += generate_records(2000, seed=6, start="2024-01-03", end="2024-01-16")
    with SandboxServer(records=records, latency=0.02) as server:
        with Client(server.api_key, base_url=server.url) as client:
            query = normalize_query("records", page_size=10)
            pages = iter_pages(client, "records", query, concurrency=2)
            first = next(pages).records
            pages.close()  # returns once the pool's threads have ended
            sent = len(server.requests)
        assert 0 < len(first) <= 10  # the first window's first page
        # the query's first page + 1 probe + 1 page + the requests in flight; finishing the
        # two running windows
        # would take ~60 more.
        assert sent <= 10, sent
        assert len(server.requests) == sent  # nothing more after close()


def test_a_walk_waiting_out_a_retry_after_is_abandoned_at_once() -> None:
    # A worker told to wait a minute (429, Retry-After: 60) must not hold up the caller's
    # Ctrl-C or error: setting the walk's stop event ends the wait.
    import threading
    import time

    from impactframe import Client
    from impactframe._paging._concurrent import _walk_window
    from impactframe._paging._gate import Gate
    from impactframe._paging._handoff import Handoff, WindowPages
    from impactframe._params import normalize_query
    from impactframe.client._client import WalkAbandoned
    from impactframe.sandbox import Fault

    stop = threading.Event()
    handoff, window = Handoff(stop, budget=None), WindowPages()
    with SandboxServer(n_records=50) as server:
        server.inject(Fault("status", status=429, retry_after="60"))
        with Client(server.api_key, base_url=server.url) as client:
            query = normalize_query("records")
            args = (client, "records", query, handoff, window, Gate(2))
            worker = threading.Thread(target=_walk_window, args=args)
            worker.start()
            deadline = time.monotonic() + 10
            while not server.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            began = time.monotonic()
            stop.set()
            worker.join(timeout=10)
            waited = time.monotonic() - began
    assert not worker.is_alive()
    assert waited < 5  # not the 60 s the API asked for
    assert window.done
    assert isinstance(window.error, WalkAbandoned)
    assert [r.status for r in server.requests] == [429]  # no retry was sent after the stop


def test_a_page_budget_bounds_the_pages_waiting_for_the_caller() -> None:
    # A caller far slower than the network: with a budget of 5 pages, the workers may only
    # run ahead by a bound set by the budget, however many pages the windows hold.
    import dataclasses
    import time

    from impactframe import Client
    from impactframe._paging._concurrent import _windowed
    from impactframe._params import normalize_query

    records = generate_records(600, seed=8, start="2024-01-01", end="2024-01-24")
    budget, concurrency = 5, 3
    with SandboxServer(records=records) as server:
        with Client(server.api_key, base_url=server.url) as client:
            query = normalize_query("records", page_size=5)
            spans = split_windows(dt.date(2024, 1, 1), dt.date(2024, 1, 24), 4 * concurrency)
            queries = [dataclasses.replace(query, start_date=a, end_date=b) for a, b in spans]
            pages = _windowed(client, "records", queries, concurrency, budget)
            rows, ahead = 0, []
            for read, page in enumerate(pages, start=1):
                rows += len(page.records)
                time.sleep(0.005)  # let the workers run as far ahead as they may
                fetched = len(server.requests)
                ahead.append(fetched - read)
        assert rows == len(records)
    # Waiting: up to the budget across the windows, up to the budget more of the head's own
    # (its worker pauses only on those), and one request in flight per worker.
    assert max(ahead) <= 2 * budget + concurrency, max(ahead)
    assert max(ahead) >= budget  # the workers did run ahead: the test can fail


def test_the_prefetch_thread_ends_when_the_caller_stops_during_a_retry_wait() -> None:
    # One cursor chain fetched ahead on a background thread: the caller stops while that
    # thread waits out a minute-long Retry-After. The thread must end, sending nothing more.
    import threading
    import time

    from impactframe import Client
    from impactframe._paging._concurrent import iter_pages
    from impactframe._params import normalize_query
    from impactframe.sandbox import Fault, encode_cursor

    records = generate_records(50, seed=9)
    with SandboxServer(records=records) as server:
        with Client(server.api_key, base_url=server.url) as client:
            first = records[:10]
            cursor = encode_cursor(first[-1]["time_utc"], first[-1]["user_id"])
            body = json.dumps({"user_records": first, "cursor": cursor})
            server.inject(Fault("status", status=200, body=body), times=1)  # page 1, then
            server.inject(Fault("status", status=429, retry_after="60"), times=1)  # a 429
            pages = iter_pages(client, "records", normalize_query("records", page_size=10))
            assert next(pages).count == 10  # the thread now fetches page 2 and gets the 429
            deadline = time.monotonic() + 10
            while len(server.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            pages.close()
            began = time.monotonic()
            while time.monotonic() - began < 5 and any(
                t.name == "impactframe-fetch" for t in threading.enumerate()
            ):
                time.sleep(0.01)
            ended_after = time.monotonic() - began
        assert ended_after < 5  # not the 60 s Retry-After
        assert [r.status for r in server.requests] == [200, 429]


# -- concurrency="auto" against a rate-limited API (SPEC §14) --------------------------------------


def test_the_sandbox_rate_limit_answers_429_with_retry_after() -> None:
    import requests

    with SandboxServer(n_records=5, n_customer_records=0, rate_limit=2) as server:
        headers = {"x-api-key": server.api_key}
        answers = [requests.get(server.url + "/v1/records", headers=headers) for _ in range(3)]
        logged = [(r.status, r.fault) for r in server.requests]
    assert [a.status_code for a in answers] == [200, 200, 429]  # a burst of one second's worth
    assert answers[2].headers["Retry-After"] == "1"
    assert answers[2].json()["type"] == "rate_limit"
    assert logged == [(200, None), (200, None), (429, "rate_limit")]


def test_auto_concurrency_adapts_to_a_rate_limit_and_gives_the_rows_of_one_chain() -> None:
    records = generate_records(6000, seed=12, start="2023-01-01", end="2024-12-31")
    with SandboxServer(records=records, n_customer_records=0) as server:
        one = _load(server, page_size=100)
    with SandboxServer(records=records, n_customer_records=0, rate_limit=15) as server:
        many = _load(server, page_size=100, concurrency="auto")
        statuses = [r.status for r in server.requests]
    assert_frame_equal(many, one)
    throttled = statuses.count(429)
    assert throttled >= 1  # the limit was reached: the test can fail
    # After a 429 the chains wait out Retry-After and are paced: most requests get through.
    assert throttled <= 0.15 * len(statuses), (throttled, len(statuses))


def test_the_gate_starts_slow_halves_once_per_wait_and_grows_back_by_one() -> None:
    import threading

    from impactframe._paging._gate import Gate
    from impactframe.client._client import WalkAbandoned

    now, slept = [0.0], []
    gate = Gate(8, clock=lambda: now[0], sleep=slept.append)
    assert gate.limit == 2  # slow start: no burst before the API's limit is known
    for _ in range(2 + 4):
        gate.succeeded()
    assert gate.limit == 8  # doubled twice
    for _ in range(5):  # one burst of 429s: halved once
        gate.throttled(429, 1.0)
    assert gate.limit == 4
    # The retries of the burst leave one after the other at the pace, not all at once.
    assert slept == sorted(slept)
    assert len(slept) == 4
    assert slept[0] > 0
    gate.throttled(503, 1.0)  # a 5xx is not a rate limit
    assert gate.limit == 4
    now[0] = 60.0
    gate.throttled(429, 1.0)
    assert gate.limit == 2
    for _ in range(2):
        gate.succeeded()
    assert gate.limit == 3  # after a 429: additive increase
    cancel = threading.Event()
    now[0] = 60.5  # still inside the Retry-After: a new request waits, cancel ends the wait
    assert gate.wait(now[0]) >= 0.5  # the Retry-After, and the pace behind it
    cancel.set()
    with pytest.raises(WalkAbandoned), gate.slot(cancel):
        pass


def test_the_pace_is_set_below_the_rate_the_api_accepted() -> None:
    from impactframe._paging._gate import Pace

    pace = Pace()
    assert pace.rate is None  # no pace before a 429
    assert pace.due(3.0) == 3.0
    for i in range(50):  # a saved-up burst: 10 accepted in 0.1 s, then 5 a second
        t = i * 0.01 if i < 10 else 0.1 + (i - 9) * 0.2
        pace.sent(t)
        pace.succeeded(t)
    pace.refused(8.2)
    assert pace.rate is not None
    assert 0.8 * 5 <= pace.rate < 5  # below what the API accepted, not the burst's rate
    first = pace.retry_at(8.2, 1.0)
    second = pace.retry_at(8.2, 1.0)
    assert first == pytest.approx(9.2)
    assert second == pytest.approx(9.2 + 1 / pace.rate)
    assert pace.due(9.2) == pytest.approx(9.2 + 2 / pace.rate)


def _simulate(rate: float, chains: int, latency: float, seconds: float) -> tuple[float, float]:
    """The gate's rules against the sandbox's token bucket, on a virtual clock: the share of
    the limit's throughput the chains get, and the share of requests refused."""
    import heapq

    from impactframe._paging._gate import Gate
    from impactframe.sandbox._rate import TokenBucket

    now, cpu = [0.0], 0.005  # the client's time per page
    bucket = TokenBucket(rate, clock=lambda: now[0])
    gate = Gate(chains, clock=lambda: now[0])
    events: list[tuple[float, int, str, float]] = [(0.0, i, "want", 0.0) for i in range(chains)]
    ok = refused = 0
    while events:
        t, chain, kind, delay = heapq.heappop(events)
        if t > seconds:
            break
        now[0] = t
        if kind == "want":
            wait = gate.wait(t)
            if wait > 0:  # the threaded gate wakes on a change or after a timeout: poll
                heapq.heappush(events, (t + min(wait, 0.005), chain, "want", 0.0))
                continue
            gate.enter(t)
            kind = "send"
        if kind == "send":
            now[0] = t + latency / 2  # the gateway sees it half-way
            answer = bucket.take()
            kind, delay = ("ok", 0.0) if answer is None else ("429", float(answer))
            heapq.heappush(events, (t + latency, chain, kind, delay))
        elif kind == "ok":
            ok += 1
            gate.answered(t)
            gate.leave()
            heapq.heappush(events, (t + cpu, chain, "want", 0.0))
        else:  # the retry leaves after Retry-After and its place in the pace
            refused += 1
            heapq.heappush(events, (t + delay + gate.refused(t, delay), chain, "send", 0.0))
    most = min(rate, chains / (latency + cpu))
    return ok / seconds / most, refused / max(1, ok + refused)


@settings(max_examples=30, deadline=None)
@given(
    rate=st.floats(2.0, 200.0),
    chains=st.integers(1, 8),
    latency=st.floats(0.001, 0.2),
)
def test_the_gate_keeps_a_rate_limit_busy_without_a_storm_of_429s(
    rate: float, chains: int, latency: float
) -> None:
    throughput, refused = _simulate(rate, chains, latency, seconds=60.0)
    assert refused <= 0.10, refused
    assert throughput >= 0.80, throughput


@pytest.mark.parametrize("rate", [5.0, 40.0])
def test_the_gate_at_the_benchmarks_limits(rate: float) -> None:
    throughput, refused = _simulate(rate, 8, 0.05, seconds=120.0)
    assert refused <= 0.05, refused
    assert throughput >= 0.90, throughput


def test_progress_counts_the_days_covered_of_a_known_range() -> None:
    import io

    from tqdm.std import tqdm

    from impactframe import Client
    from impactframe._paging._concurrent import iter_pages
    from impactframe._params import normalize_query
    from impactframe._progress import page_progress

    records = generate_records(400, seed=13, start="2024-01-01", end="2024-01-31")
    with (
        SandboxServer(records=records, n_customer_records=0) as server,
        Client(server.api_key, base_url=server.url) as client,
    ):
        seen: list[tuple[int, tuple[int, int] | None]] = []
        bar = tqdm(file=io.StringIO(), unit=" records")
        track = page_progress(bar)
        assert track is not None

        def on_page(count: int, days: tuple[int, int] | None) -> None:
            seen.append((count, days))
            track(count, days)

        query = normalize_query("records", page_size=20)
        for _ in iter_pages(client, "records", query, concurrency="auto", on_page=on_page):
            pass
        bar.close()
        # One chain with both dates given knows its range too.
        dated = normalize_query(
            "records", page_size=50, start_date="2024-01-01", end_date="2024-01-10"
        )
        one: list[tuple[int, int] | None] = []
        for _ in iter_pages(client, "records", dated, on_page=lambda count, days: one.append(days)):
            pass
    assert sum(count for count, _ in seen) == 400
    days = [d for _, d in seen]
    assert all(d is not None for d in days)
    totals = {d[1] for d in days if d is not None}
    assert len(totals) == 1
    total = totals.pop()
    assert 28 <= total <= 31  # the days the probes found
    done = [d[0] for d in days if d is not None]
    assert done == sorted(done)
    assert done[-1] == total  # the last page covers the last day
    assert (bar.n, bar.total, bar.unit) == (total, total, " days")
    assert one[-1] == (10, 10)
    assert all(d is not None and d[1] == 10 for d in one)
