"""The sandbox (SPEC §5) over real HTTP on loopback, with plain ``requests``."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import itertools
import json
import logging
import re
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from impactframe._constants import IMPACT_TYPES
from impactframe.cli import build_parser, main
from impactframe.sandbox import Fault, SandboxServer, generate_records

RECORDS = "/v1/records"
CUSTOMERS = "/v1/customer_records"
KEYS = {RECORDS: "user_records", CUSTOMERS: "customer_records"}
MakeSandbox = Callable[..., SandboxServer]


# -- helpers ------------------------------------------------------------------------------------


def get(
    server: SandboxServer,
    path: str = RECORDS,
    params: dict[str, Any] | None = None,
    *,
    key: str | None = "default",
    session: requests.Session | None = None,
) -> requests.Response:
    headers = {} if key is None else {"x-api-key": server.api_key if key == "default" else key}
    return (session or requests).get(server.url + path, params=params, headers=headers, timeout=10)


def walk(
    server: SandboxServer, path: str = RECORDS, params: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow the cursors to the end; returns the records and the page bodies."""
    records: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    cursor = None
    with requests.Session() as session:
        for _ in range(2500):  # more pages than any test data needs
            query = dict(params or {})
            if cursor is not None:
                query["cursor"] = cursor
            response = get(server, path, query, session=session)
            assert response.status_code == 200, response.text
            body = response.json()
            pages.append(body)
            records.extend(body[KEYS[path]])
            cursor = body.get("cursor")
            if cursor is None:
                return records, pages
    msg = "the cursor chain did not end"
    raise AssertionError(msg)


def kind_of(record: dict[str, Any]) -> str:
    return next(kind for kind in IMPACT_TYPES if kind in record)


def expected(
    records: list[dict[str, Any]],
    *,
    kinds: set[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    email: str | None = None,
    desc: bool = False,
) -> list[dict[str, Any]]:
    """What the API should return, computed the slow, obvious way."""
    out = sorted(records, key=lambda r: (r["time_utc"], r["user_id"]))
    if kinds:
        out = [r for r in out if kind_of(r) in kinds]
    if start:
        out = [r for r in out if r["time_utc"][:10] >= start]
    if end:
        out = [r for r in out if r["time_utc"][:10] <= end]
    if email:
        out = [r for r in out if r["customer"]["customer_email"] == email]
    return out[::-1] if desc else out


def decode(cursor: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(cursor, validate=True))  # type: ignore[no-any-return]


def record(time_utc: str, user_id: str = "U1", **fields: Any) -> dict[str, Any]:
    return {"user_id": user_id, "time_utc": time_utc, **(fields or {"tree_planted": 1})}


@pytest.fixture(scope="module")
def default_records() -> dict[str, list[dict[str, Any]]]:
    """The data the session sandbox serves (generated with the defaults)."""
    return {
        RECORDS: generate_records(2000, seed=0),
        CUSTOMERS: generate_records(2000, seed=0, customers=True),
    }


# -- generated data -----------------------------------------------------------------------------


def test_generate_records_is_deterministic() -> None:
    assert generate_records(300, seed=7) == generate_records(300, seed=7)
    assert generate_records(300, seed=7, customers=True) == generate_records(
        300, seed=7, customers=True
    )
    assert generate_records(300, seed=7) != generate_records(300, seed=8)
    assert generate_records(0) == []


@pytest.mark.parametrize("customers", [False, True])
def test_generated_records_have_the_api_shape_and_a_realistic_mix(
    customers: bool, check_api_record: Callable[..., None]
) -> None:
    records = generate_records(5000, seed=3, customers=customers)
    for item in records:
        check_api_record(item, customers=customers)
    times = [r["time_utc"] for r in records]
    assert times == sorted(times)
    assert len({(r["user_id"], r["time_utc"]) for r in records}) == len(records)
    assert len({r["user_id"] for r in records}) == 1  # one account
    kinds = Counter(kind_of(r) for r in records)
    assert set(kinds) == set(IMPACT_TYPES)
    assert kinds["tree_planted"] == max(kinds.values())
    assert {t[:4] for t in times} == {"2021", "2022", "2023", "2024", "2025"}
    with_metadata = [r["metadata"] for r in records if "metadata" in r]
    assert 0.6 < len(with_metadata) / len(records) < 0.95
    keys = {key for metadata in with_metadata for key in metadata}
    assert {"order_id", "source", "facility", "batch", "cleanup_site", "event", "campaign"} <= keys
    assert len({frozenset(metadata) for metadata in with_metadata}) >= 5
    assert any("category" in r for r in records)
    assert all(r["money_donated"] >= 100 for r in records if "money_donated" in r)  # cents
    if customers:
        customers_seen = {r["customer"]["customer_id"]: r["customer"] for r in records}
        assert 50 <= len(customers_seen) <= 5000
        nameless = [c for c in customers_seen.values() if "customer_name" not in c]
        assert 0 < len(nameless) < len(customers_seen)
        per_customer = Counter(r["customer"]["customer_id"] for r in records).most_common()
        assert per_customer[0][1] > 5 * per_customer[-1][1]  # some customers far more active


def test_generate_records_respects_the_date_range() -> None:
    records = generate_records(500, seed=1, start="2024-02-28", end=dt.date(2024, 3, 1))
    days = {r["time_utc"][:10] for r in records}
    assert days == {"2024-02-28", "2024-02-29", "2024-03-01"}
    # a dense range: more records than a quarter of the milliseconds still come out unique
    dense = generate_records(3000, seed=1, start="2024-01-01", end="2024-01-01")
    assert len({r["time_utc"] for r in dense}) == 3000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": -1}, r"^n: -1 is not accepted; expected an int >= 0$"),
        ({"n": 2.5}, r"^n: 2.5 is not accepted; expected an int >= 0$"),
        (
            {"n": 1, "start": "2024-13-01"},
            r"^start: '2024-13-01' .* expected a datetime.date or a 'YYYY",
        ),
        (
            {"n": 1, "end": "2024/01/01"},
            r"^end: '2024/01/01' .* expected a datetime.date or a 'YYYY",
        ),
        (
            {"n": 1, "start": "2025-01-02", "end": "2025-01-01"},
            r"^start 2025-01-02 .* expected start <= end$",
        ),
        (
            {"n": 86_400_001, "start": "2025-01-01", "end": "2025-01-01"},
            r"^n: 86400001 .* expected an int <= 86400000",
        ),
        ({"n": 1, "seed": "x"}, r"^seed: 'x' is not accepted; expected an int$"),
    ],
)
def test_generate_records_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        generate_records(n, **kwargs)


# -- responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RECORDS, CUSTOMERS])
def test_default_page_is_ten_records_with_a_cursor(
    sandbox: SandboxServer, default_records: dict[str, list[dict[str, Any]]], path: str
) -> None:
    response = get(sandbox, path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == [KEYS[path], "cursor"]
    assert body[KEYS[path]] == default_records[path][:10]
    assert decode(body["cursor"]) == {
        "createdOn": body[KEYS[path]][-1]["time_utc"],
        "userID": body[KEYS[path]][-1]["user_id"],
    }


def test_served_bytes_are_compact_stable_json(sandbox: SandboxServer) -> None:
    params = {"limit": 50, "filter_by": ["carbon_captured", "coral_restored"]}
    first, second = get(sandbox, params=params), get(sandbox, params=params)
    assert first.content == second.content
    records = first.json()["user_records"]
    compact = ",".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in records)
    assert first.content.decode("utf-8").startswith('{"user_records":[' + compact + "]")


def test_limit_bounds(sandbox: SandboxServer) -> None:
    assert len(get(sandbox, params={"limit": 1000}).json()["user_records"]) == 1000
    assert len(get(sandbox, params={"limit": 1}).json()["user_records"]) == 1
    assert get(sandbox, params={"limit": 0}).json() == {"user_records": []}  # empty and final


def test_sort_orders(sandbox: SandboxServer, default_records: dict[str, list[Any]]) -> None:
    asc = get(sandbox, params={"limit": 5, "sort_order": "asc"}).json()["user_records"]
    desc = get(sandbox, params={"limit": 5, "sort_order": "desc"}).json()["user_records"]
    assert asc == default_records[RECORDS][:5]
    assert desc == default_records[RECORDS][::-1][:5]


def test_api_key_is_required(sandbox: SandboxServer) -> None:
    error = {"type": "key_error", "message": "API Key does not exist"}
    for key in (None, "wrong-key", ""):
        response = get(sandbox, key=key)
        assert response.status_code == 401
        assert response.json() == error
    headers = {"X-API-KEY": sandbox.api_key}  # header names are case-insensitive
    assert requests.get(sandbox.url + RECORDS, headers=headers, timeout=10).status_code == 200


def test_unknown_path_is_a_json_404(sandbox: SandboxServer) -> None:
    response = get(sandbox, "/v1/recordz")
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"
    assert "/v1/records" in response.json()["message"]


def test_other_methods_are_refused_in_json(sandbox: SandboxServer) -> None:
    response = requests.post(sandbox.url + RECORDS, headers={"x-api-key": sandbox.api_key})
    assert response.status_code == 501
    assert response.json()["type"] == "method_not_allowed"


def _cursor_of(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


@pytest.mark.parametrize(
    ("path", "query", "word"),
    [
        (RECORDS, "filter_by=trees", "filter_by"),
        (RECORDS, "filter_by=", "filter_by"),
        (RECORDS, "filter_by=tree_planted&filter_by=Tree_Planted", "filter_by"),
        (RECORDS, "start_date=2024-02-30", "start_date"),
        (RECORDS, "start_date=2024-1-01", "start_date"),
        (RECORDS, "start_date=20240101", "start_date"),
        (RECORDS, "end_date=2024-01-01T00:00:00", "end_date"),
        (RECORDS, "end_date=", "end_date"),
        (RECORDS, "start_date=2024-02-02&end_date=2024-02-01", "start_date"),
        (RECORDS, "limit=-1", "limit"),
        (RECORDS, "limit=1001", "limit"),
        (RECORDS, "limit=ten", "limit"),
        (RECORDS, "limit=1.5", "limit"),
        (RECORDS, "limit=1&limit=2", "limit"),
        (RECORDS, "sort_order=ascending", "sort_order"),
        (RECORDS, "sort_order=DESC", "sort_order"),
        (RECORDS, "cursor=not-base64!", "cursor"),
        (RECORDS, "cursor=" + base64.b64encode(b"not json").decode(), "cursor"),
        (RECORDS, "cursor=" + _cursor_of(["2024", "U1"]), "cursor"),
        (RECORDS, "cursor=" + _cursor_of({"createdOn": "2024"}), "cursor"),
        (RECORDS, "cursor=" + _cursor_of({"createdOn": 1, "userID": "U1"}), "cursor"),
        (RECORDS, "cursor=" + _cursor_of({"createdOn": "x", "userID": "U", "page": 2}), "cursor"),
        (RECORDS, "cursor=", "cursor"),
        (RECORDS, "customer_email=a@example.com", "customer_email"),
        (RECORDS, "page=2", "page"),
        (CUSTOMERS, "customer_email=", "customer_email"),
        (CUSTOMERS, "pageSize=10", "pageSize"),
    ],
)
def test_bad_parameters_are_400(sandbox: SandboxServer, path: str, query: str, word: str) -> None:
    # A raw query string, so that requests does not normalise anything away.
    response = requests.get(
        f"{sandbox.url}{path}?{query}", headers={"x-api-key": sandbox.api_key}, timeout=10
    )
    assert response.status_code == 400, query
    body = response.json()
    assert set(body) == {"type", "message"}
    assert body["type"] == "validation_error"
    assert word in body["message"]


# -- paging -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RECORDS, CUSTOMERS])
@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize(
    ("filter_by", "start", "end"),
    [
        (None, None, None),
        (["money_donated"], None, None),
        (["tree_planted", "coral_restored"], "2023-03-01", None),
        (None, "2022-01-01", "2024-06-30"),
        (["waste_removed"], None, "2022-12-31"),
    ],
)
def test_walking_the_cursors_returns_every_matching_record_once(
    sandbox: SandboxServer,
    default_records: dict[str, list[dict[str, Any]]],
    path: str,
    order: str,
    filter_by: list[str] | None,
    start: str | None,
    end: str | None,
) -> None:
    params: dict[str, Any] = {"limit": 97, "sort_order": order}
    if filter_by:
        params["filter_by"] = filter_by
    if start:
        params["start_date"] = start
    if end:
        params["end_date"] = end
    records, pages = walk(sandbox, path, params)
    want = expected(
        default_records[path],
        kinds=set(filter_by or ()),
        start=start,
        end=end,
        desc=order == "desc",
    )
    assert records == want
    assert all(len(page[KEYS[path]]) == 97 for page in pages[:-1])  # filtering before limit
    assert "cursor" not in pages[-1]


def test_a_last_full_page_has_no_cursor(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(generate_records(20), [])
    records, pages = walk(server, params={"limit": 10})
    assert len(records) == 20
    assert [len(p["user_records"]) for p in pages] == [10, 10]
    assert "cursor" not in pages[-1]


def test_filter_after_limit_gives_short_and_empty_pages(make_sandbox: MakeSandbox) -> None:
    data = generate_records(400, seed=5)
    server = make_sandbox(data, [], filter_after_limit=True)
    params = {"limit": 10, "filter_by": ["coral_restored", "money_donated"]}
    records, pages = walk(server, params=params)
    assert records == expected(data, kinds={"coral_restored", "money_donated"})
    sizes = [len(page["user_records"]) for page in pages]
    assert len(pages) == 41  # 40 full scans, each with a cursor, then an empty final page
    assert 0 in sizes[:-1]  # an empty page that is not the end
    assert any(0 < size < 10 for size in sizes)
    assert sizes[-1] == 0
    assert all("cursor" in page for page in pages[:-1])
    # DynamoDB style even without filters: a page that scanned `limit` records has a cursor
    _, pages = walk(server, params={"limit": 100})
    assert [len(page["user_records"]) for page in pages] == [100, 100, 100, 100, 0]


def test_filter_after_limit_can_be_switched_on_a_running_server(
    make_sandbox: MakeSandbox,
) -> None:
    server = make_sandbox(generate_records(30, seed=2), [])
    server.filter_after_limit = True
    body = get(server, params={"limit": 30, "filter_by": "coral_restored"}).json()
    assert "cursor" in body
    server.filter_after_limit = False
    assert "cursor" not in get(server, params={"limit": 30}).json()
    with pytest.raises(ValueError, match="filter_after_limit"):
        server.filter_after_limit = "yes"  # type: ignore[assignment]


def test_repeated_filter_by_selects_each_type(sandbox: SandboxServer) -> None:
    query = "filter_by=carbon_captured&filter_by=waste_removed&limit=1000"
    response = requests.get(
        f"{sandbox.url}{RECORDS}?{query}", headers={"x-api-key": sandbox.api_key}, timeout=10
    )
    kinds = {kind_of(r) for r in response.json()["user_records"]}
    assert kinds == {"carbon_captured", "waste_removed"}


def test_dates_are_inclusive_utc_days(make_sandbox: MakeSandbox) -> None:
    data = [
        record("2023-12-31T23:59:59.999Z"),
        record("2024-01-01T00:00:00.000Z"),
        record("2024-01-15T12:00:00.000Z"),
        record("2024-01-31T23:59:59.999Z"),
        record("2024-02-01T00:00:00.000Z"),
    ]
    server = make_sandbox(data, [])
    body = get(server, params={"start_date": "2024-01-01", "end_date": "2024-01-31"}).json()
    assert body == {"user_records": data[1:4]}
    one_day = get(server, params={"start_date": "2024-01-15", "end_date": "2024-01-15"}).json()
    assert one_day == {"user_records": [data[2]]}
    assert get(server, params={"end_date": "2023-12-31"}).json() == {"user_records": data[:1]}
    assert get(server, params={"start_date": "2024-02-01"}).json() == {"user_records": data[4:]}


def test_customer_email_selects_one_customer_exactly(
    sandbox: SandboxServer, default_records: dict[str, list[dict[str, Any]]]
) -> None:
    data = default_records[CUSTOMERS]
    emails = Counter(r["customer"]["customer_email"] for r in data)
    plus = next(e for e in emails if "+" in e)  # plus-addressing: "+" must travel encoded
    for email_address in (plus, emails.most_common(1)[0][0]):
        records, _ = walk(sandbox, CUSTOMERS, {"customer_email": email_address, "limit": 7})
        assert records == expected(data, email=email_address)
        assert len(records) == emails[email_address]
    unknown = get(sandbox, CUSTOMERS, {"customer_email": plus.upper()}).json()
    assert unknown == {"customer_records": []}
    records, _ = walk(
        sandbox,
        CUSTOMERS,
        {"customer_email": emails.most_common(1)[0][0], "filter_by": "tree_planted"},
    )
    assert records == expected(data, email=emails.most_common(1)[0][0], kinds={"tree_planted"})


def test_cursors_work_plain_and_percent_encoded(make_sandbox: MakeSandbox) -> None:
    # Cursors of ASCII keys only hold "+" or "/" for bytes like "~" and "?": make some.
    data = [record(f"2024-01-0{day}T00:00:00.000Z", "U~~~???") for day in range(1, 4)]
    server = make_sandbox(data, [])
    cursor = get(server, params={"limit": 1}).json()["cursor"]
    assert {"+", "/", "="} <= set(cursor)
    assert decode(cursor) == {"createdOn": data[0]["time_utc"], "userID": "U~~~???"}
    headers = {"x-api-key": server.api_key}
    plain = requests.get(f"{server.url}{RECORDS}?cursor={cursor}", headers=headers, timeout=10)
    encoded = get(server, params={"cursor": cursor})  # requests percent-encodes + / =
    assert plain.status_code == encoded.status_code == 200
    assert plain.json() == encoded.json() == {"user_records": data[1:]}
    logged = [entry.params["cursor"] for entry in server.requests[-2:]]
    assert logged == [[cursor.replace("+", " ")], [cursor]]  # what each form decodes to
    generated = get(server, params={"limit": 1}).json()["cursor"]
    assert generated.endswith("=")  # padding: "=" is in every cursor of this length


def test_records_with_the_same_key_page_with_a_tiebreak(make_sandbox: MakeSandbox) -> None:
    same = "2024-05-05T05:05:05.005Z"
    data = [
        record(same, "U2", tree_planted=1),
        record(same, "U1", tree_planted=2),
        record(same, "U1", tree_planted=3),
        record(same, "U1", tree_planted=4),
        record("2024-05-05T05:05:05.006Z", "U1"),
    ]
    server = make_sandbox(data, [])
    for order in ("asc", "desc"):
        records, _ = walk(server, params={"limit": 1, "sort_order": order})
        assert records == expected(data, desc=order == "desc")
    cursors = [decode(page["cursor"]) for page in walk(server, params={"limit": 1})[1][:-1]]
    assert cursors[0] == {"createdOn": same, "userID": "U1", "seq": 0}
    assert cursors[3] == {"createdOn": same, "userID": "U2"}  # unique keys need no tiebreak


def test_given_records_are_served_sorted_and_as_given(make_sandbox: MakeSandbox) -> None:
    odd = {"user_id": "U1", "time_utc": "2024-01-02T00:00:00.000Z", "tree_planted": "5"}
    data = [record("2024-01-03T00:00:00.000Z"), odd, record("2024-01-01T00:00:00.000Z")]
    server = make_sandbox(data, [])
    body = get(server).json()
    assert body == {"user_records": [data[2], odd, data[0]]}  # even a malformed amount
    assert server.served_records() == [data[2], odd, data[0]]


def test_set_records_replaces_the_data_of_a_running_server(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(generate_records(5), [])
    more = generate_records(8, seed=1)
    server.set_records(more)
    assert get(server, params={"limit": 100}).json() == {"user_records": expected(more)}
    server.set_records(more[:2], endpoint="customer_records")
    assert len(get(server, CUSTOMERS).json()["customer_records"]) == 2
    with pytest.raises(
        ValueError,
        match=r"^endpoint: 'users' is not accepted; expected one of 'records', 'customer_records'$",
    ):
        server.set_records([], endpoint="users")


# -- faults -------------------------------------------------------------------------------------


def test_status_fault_with_retry_after_seconds(sandbox: SandboxServer) -> None:
    sandbox.inject(Fault("status", status=429, retry_after="2"), times=1, path=RECORDS)
    first, second = get(sandbox), get(sandbox)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "2"
    assert first.json()["type"] == "rate_limit_error"
    assert second.status_code == 200
    assert [(e.status, e.fault) for e in sandbox.requests] == [(429, "status"), (200, None)]


def test_status_fault_retry_after_as_http_date(sandbox: SandboxServer) -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    sandbox.inject(Fault("status", status=503, retry_after=when))
    response = get(sandbox)
    assert response.status_code == 503
    assert response.json()["type"] == "server_error"
    assert email.utils.parsedate_to_datetime(response.headers["Retry-After"]) == when
    assert "Retry-After" not in get(sandbox).headers


def test_status_faults_count_times_and_match_paths(sandbox: SandboxServer) -> None:
    sandbox.inject(Fault("status", status=502), times=2, path=CUSTOMERS)
    assert get(sandbox, RECORDS).status_code == 200  # another path: untouched
    statuses = [get(sandbox, CUSTOMERS).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    sandbox.inject(Fault("status", status=500), times=None)
    assert [get(sandbox, p).status_code for p in (RECORDS, CUSTOMERS, "/nope")] == [500] * 3
    sandbox.clear_faults()
    assert get(sandbox).status_code == 200


def test_status_fault_comes_before_authentication(sandbox: SandboxServer) -> None:
    sandbox.inject(Fault("status", status=503))
    assert get(sandbox, key="wrong").status_code == 503  # the gateway fails first
    assert get(sandbox, key="wrong").status_code == 401


def test_status_fault_with_a_custom_body(sandbox: SandboxServer) -> None:
    sandbox.inject(Fault("status", status=502, body="<html>Bad Gateway</html>"))
    sandbox.inject(Fault("status", status=200, body='{"user_records": "oops"}'))
    html, page = get(sandbox), get(sandbox)
    assert (html.status_code, html.text) == (502, "<html>Bad Gateway</html>")
    assert html.headers["Content-Type"].startswith("text/html")
    assert (page.status_code, page.json()) == (200, {"user_records": "oops"})
    assert page.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "validation_error"), (401, "key_error"), (404, "not_found"), (504, "server_error")],
)
def test_status_fault_error_types(sandbox: SandboxServer, status: int, error_type: str) -> None:
    sandbox.inject(Fault("status", status=status))
    response = get(sandbox)
    assert response.status_code == status
    assert response.json()["type"] == error_type


def test_drop_fault_closes_the_connection_without_an_answer(sandbox: SandboxServer) -> None:
    with requests.Session() as session:
        get(sandbox, session=session)  # open a keep-alive connection first
        sandbox.clear_log()
        sandbox.inject(Fault("drop"))
        with pytest.raises(requests.ConnectionError):
            get(sandbox, session=session)
        assert get(sandbox, session=session).status_code == 200  # a new connection works
    assert [(e.status, e.fault) for e in sandbox.requests] == [(None, "drop"), (200, None)]


def test_truncate_fault_sends_half_the_announced_body(sandbox: SandboxServer) -> None:
    sandbox.inject(Fault("truncate"))
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        get(sandbox, params={"limit": 100})
    # The same, byte by byte: the full Content-Length, half the body, then EOF.
    full = get(sandbox, params={"limit": 100}).content
    sandbox.inject(Fault("truncate"))
    head, _, body = _raw_get(sandbox, f"{RECORDS}?limit=100").partition(b"\r\n\r\n")
    assert f"Content-Length: {len(full)}".encode() in head
    assert head.startswith(b"HTTP/1.1 200")
    assert body == full[: len(full) // 2]
    assert [e.fault for e in sandbox.requests] == ["truncate", None, "truncate"]


def _raw_get(server: SandboxServer, target: str) -> bytes:
    """One request on a raw socket, read until the server closes the connection."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = f"GET {target} HTTP/1.1\r\nHost: x\r\nx-api-key: {server.api_key}\r\n\r\n"
        sock.sendall(request.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_latency_fault_is_applied_and_logged(sandbox: SandboxServer) -> None:
    sandbox.inject(Fault("latency", delay=0.001), times=None, path=RECORDS)
    sandbox.inject(Fault("status", status=500), times=1)
    assert [get(sandbox).status_code for _ in range(3)] == [500, 200, 200]
    assert get(sandbox, CUSTOMERS).status_code == 200
    faults = [e.fault for e in sandbox.requests]
    assert faults == ["latency+status", "latency", "latency", None]


def test_repeat_fault_repeats_the_boundary_record(
    sandbox: SandboxServer, default_records: dict[str, list[dict[str, Any]]]
) -> None:
    sandbox.inject(Fault("repeat"))  # waits for the first request that carries a cursor
    records, pages = walk(sandbox, params={"limit": 400})
    assert pages[1]["user_records"][0] == pages[0]["user_records"][-1]
    assert len(records) == 2001
    assert records[:400] + records[401:] == default_records[RECORDS]
    assert [e.fault for e in sandbox.requests] == [None, "repeat", None, None, None, None]


def test_repeat_fault_in_descending_order(
    sandbox: SandboxServer, default_records: dict[str, list[dict[str, Any]]]
) -> None:
    sandbox.inject(Fault("repeat"), times=None)
    records, pages = walk(sandbox, CUSTOMERS, {"limit": 500, "sort_order": "desc"})
    assert len(pages) == 5  # each later page brings 499 new records
    for previous, page in itertools.pairwise(pages):
        assert page["customer_records"][0] == previous["customer_records"][-1]
    assert len(records) == 2004
    assert {r["time_utc"] for r in records} == {r["time_utc"] for r in default_records[CUSTOMERS]}


def test_fault_rate_is_seeded_and_deterministic(make_sandbox: MakeSandbox) -> None:
    def faults(server: SandboxServer) -> list[tuple[int | None, str | None]]:
        for _ in range(40):
            with contextlib.suppress(requests.RequestException):  # drops, truncations
                get(server, params={"limit": 5})
        return [(e.status, e.fault) for e in server.requests]

    settings_ = {"n_records": 50, "n_customer_records": 0, "fault_rate": 0.5, "fault_seed": 3}
    first = faults(make_sandbox(**settings_))
    assert first == faults(make_sandbox(**settings_))
    assert first != faults(make_sandbox(**{**settings_, "fault_seed": 4}))
    kinds = Counter(fault for _, fault in first)
    assert 5 < sum(n for fault, n in kinds.items() if fault) < 35
    assert kinds[None] > 0


def test_fault_rate_429_carries_retry_after_zero(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=5, n_customer_records=0, fault_rate=1.0, fault_kinds=["429"])
    responses = [get(server) for _ in range(3)]
    assert {(r.status_code, r.headers["Retry-After"]) for r in responses} == {(429, "0")}


def test_a_walk_with_retries_survives_random_faults(make_sandbox: MakeSandbox) -> None:
    data = generate_records(300, seed=9)
    server = make_sandbox(
        data, [], fault_rate=0.3, fault_kinds=("429", "500", "503", "drop", "truncate")
    )
    records: list[dict[str, Any]] = []
    cursor = None
    with requests.Session() as session:
        for _ in range(1000):
            try:
                response = get(server, params={"limit": 25, "cursor": cursor}, session=session)
                body = response.json() if response.status_code == 200 else None
            except requests.RequestException:
                body = None
            if body is None:
                continue  # retry the same cursor
            records += body["user_records"]
            cursor = body.get("cursor")
            if cursor is None:
                break
    assert records == data
    assert any(e.fault for e in server.requests)


def test_faults_and_log_are_cleared(sandbox: SandboxServer) -> None:
    sandbox.inject(Fault("status", status=500), times=None)
    sandbox.clear_faults()
    get(sandbox, params={"filter_by": ["tree_planted", "coral_restored"], "limit": 3})
    log = sandbox.requests
    assert len(log) == 1
    assert log[0].path == RECORDS
    assert log[0].params == {"filter_by": ["tree_planted", "coral_restored"], "limit": ["3"]}
    assert (log[0].status, log[0].fault, log[0].records, log[0].method) == (200, None, 3, "GET")
    log.clear()  # a snapshot: the server's log is untouched
    assert len(sandbox.requests) == 1
    sandbox.clear_log()
    assert sandbox.requests == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "explode"}, r"^kind: 'explode' .* expected one of 'status', 'drop'"),
        (
            {"kind": "status", "status": 99},
            r"^status: 99 .* expected an int HTTP status between 200 and 599$",
        ),
        (
            {"kind": "status", "status": 200},
            r"^body: None .* status fault below 400 \(200\) needs a body$",
        ),
        ({"kind": "latency", "delay": -1}, r"^delay: -1 .* expected a finite number of seconds"),
        ({"kind": "latency", "delay": float("nan")}, r"^delay: nan .* expected a finite number"),
        (
            {"kind": "status", "retry_after": -1},
            r"^retry_after: -1 .* expected seconds >= 0, an HTTP date",
        ),
        (
            {"kind": "status", "retry_after": dt.datetime(2030, 1, 1)},
            r"^retry_after: .* timezone-aware datetime$",
        ),
        ({"kind": "status", "body": 3}, r"^body: .* type int .* expected a str, bytes or None$"),
    ],
)
def test_fault_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    kind = kwargs.pop("kind")
    with pytest.raises(ValueError, match=match):
        Fault(kind, **kwargs)


def test_inject_rejects_bad_arguments(sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match=r"^times: 0 is not accepted; expected an int >= 1"):
        sandbox.inject(Fault("drop"), times=0)
    with pytest.raises(
        ValueError,
        match=r"^path: 'v1/records' is not accepted; expected a URL path starting with '/'",
    ):
        sandbox.inject(Fault("drop"), path="v1/records")
    with pytest.raises(ValueError, match=r"^fault: 'drop' is not accepted; expected a Fault$"):
        sandbox.inject("drop")  # type: ignore[arg-type]
    assert get(sandbox).status_code == 200  # nothing was queued


# -- construction and lifecycle -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_records": -1}, r"^n_records: -1 is not accepted; expected an int >= 0$"),
        ({"n_customer_records": -5}, r"^n_customer_records: -5 .* expected an int >= 0$"),
        ({"n_records": 1.5}, "n_records"),
        ({"seed": None}, r"^seed: None is not accepted; expected an int$"),
        ({"fault_rate": 1.5}, r"^fault_rate: 1.5 .* expected a probability between 0 and 1$"),
        ({"fault_rate": -0.1}, "fault_rate"),
        ({"fault_kinds": ("418",)}, r"^fault_kinds: '418' .* expected only kinds from 429, 500"),
        ({"fault_kinds": "429"}, r"^fault_kinds: '429' .* expected a sequence \(not a string\)"),
        (
            {"fault_rate": 0.1, "fault_kinds": ()},
            r"^fault_kinds: \(\) .* expected some of 429, 500",
        ),
        ({"latency": -0.5}, r"^latency: -0.5 .* expected a finite number of seconds >= 0$"),
        ({"port": 70_000}, r"^port: 70000 is not accepted; expected an int between 0 and 65535"),
        ({"host": "10.1.2.3"}, r"^host: '10.1.2.3' is not accepted; expected a loopback address"),
        (
            {"host": "example.com"},
            r"^host: 'example.com' .* expected an IP address or 'localhost'$",
        ),
        ({"api_key": ""}, r"^api_key: .* is not accepted; expected a non-empty string"),
        ({"records": [1, 2]}, r"^records: item 0 \(of type int\) .* expected a list of dicts"),
        ({"customer_records": [{"time_utc": {1, 2}}]}, "customer_records must hold only JSON"),
        ({"filter_after_limit": "yes"}, r"^filter_after_limit: 'yes' .* expected True or False$"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SandboxServer(**{"n_records": 0, "n_customer_records": 0, **kwargs})


def test_same_seed_serves_the_same_data(make_sandbox: MakeSandbox) -> None:
    one = make_sandbox(n_records=30, n_customer_records=30, seed=11)
    two = make_sandbox(n_records=30, n_customer_records=30, seed=11)
    other = make_sandbox(n_records=30, n_customer_records=30, seed=12)
    for path in (RECORDS, CUSTOMERS):
        params = {"limit": 30}
        assert get(one, path, params).content == get(two, path, params).content
        assert get(one, path, params).content != get(other, path, params).content
    assert one.served_records() == generate_records(30, seed=11)


def test_lifecycle(make_sandbox: MakeSandbox) -> None:
    server = SandboxServer(n_records=3, n_customer_records=0)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    assert "stopped" in repr(server)
    with server:
        assert server.running
        assert server.url in repr(server)
        assert "sandbox-key" not in repr(server)
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        assert get(server).status_code == 200
    assert not server.running
    with server:  # a stopped server can start again
        assert get(server).status_code == 200


def test_stop_closes_keep_alive_connections_promptly() -> None:
    server = SandboxServer(n_records=5, n_customer_records=0).start()
    session = requests.Session()
    assert get(server, session=session).status_code == 200  # the connection stays open
    url = server.url
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < 2  # not the handler's idle timeout (there is none)
    with pytest.raises(requests.ConnectionError):
        session.get(url + RECORDS, headers={"x-api-key": server.api_key}, timeout=5)
    session.close()


def test_localhost_and_ipv6_loopback(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=1, n_customer_records=0, host="localhost")
    assert server.url.startswith("http://127.0.0.1:")
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server6 = make_sandbox(n_records=1, n_customer_records=0, host="::1")
    except OSError:
        pytest.skip("IPv6 loopback is not configured")
    assert server6.url.startswith("http://[::1]:")
    assert get(server6).status_code == 200


def test_a_remote_host_needs_allow_remote() -> None:
    server = SandboxServer(n_records=0, n_customer_records=0, host="0.0.0.0", allow_remote=True)
    with server:
        assert server.url.startswith("http://127.0.0.1:")  # reachable from here on loopback
        assert get(server).status_code == 200


def test_no_stderr_noise_when_clients_go_away(
    sandbox: SandboxServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="impactframe.sandbox")
    get(sandbox)  # request lines go to the logger, not to stderr
    sandbox.inject(Fault("latency", delay=0.2))
    host, port = sandbox.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    request = (
        f"GET {RECORDS}?limit=1000 HTTP/1.1\r\nHost: x\r\nx-api-key: {sandbox.api_key}\r\n\r\n"
    )
    sock.sendall(request.encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset while the server is still "thinking"
    deadline = time.monotonic() + 10
    while not any("disconnected" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the server never noticed the disconnect"
        time.sleep(0.01)
    assert any("GET /v1/records" in r.getMessage() for r in caplog.records)
    assert capfd.readouterr().err == ""


# -- property: the cursor walk is exact ---------------------------------------------------------

_TIMES = [f"2024-03-0{day}T0{hour}:00:00.000Z" for day in (1, 2, 3) for hour in (0, 5, 9)]
_DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]
_EMAILS = ["a@example.com", "b+x@example.com", "c@example.com"]


@st.composite
def _records(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(_TIMES),
                st.sampled_from(["U1", "U2"]),
                st.sampled_from(IMPACT_TYPES),
                st.integers(1, 3),
                st.sampled_from(_EMAILS),
            ),
            max_size=30,
        )
    )
    return [
        {
            "user_id": user,
            "customer": {"customer_id": email_address[0], "customer_email": email_address},
            "time_utc": time_utc,
            kind: amount,
        }
        for time_utc, user, kind, amount, email_address in rows
    ]


@pytest.fixture(scope="module")
def property_server() -> Iterator[SandboxServer]:
    with SandboxServer([], []) as server:
        yield server


@settings(max_examples=60, deadline=None)
@given(
    data=_records(),
    limit=st.integers(1, 7),
    kinds=st.none() | st.sets(st.sampled_from(IMPACT_TYPES), min_size=1),
    order=st.sampled_from(["asc", "desc"]),
    days=st.tuples(st.none() | st.sampled_from(_DAYS), st.none() | st.sampled_from(_DAYS)),
    email_address=st.none() | st.sampled_from(_EMAILS),
    customers=st.booleans(),
    after_limit=st.booleans(),
)
def test_walking_cursors_returns_exactly_the_matching_records(
    property_server: SandboxServer,
    data: list[dict[str, Any]],
    limit: int,
    kinds: set[str] | None,
    order: str,
    days: tuple[str | None, str | None],
    email_address: str | None,
    customers: bool,
    after_limit: bool,
) -> None:
    path = CUSTOMERS if customers else RECORDS
    property_server.set_records(data, endpoint="customer_records" if customers else "records")
    property_server.filter_after_limit = after_limit
    start, end = days
    if start and end and start > end:
        start, end = end, start
    params: dict[str, Any] = {"limit": limit, "sort_order": order}
    if kinds:
        params["filter_by"] = sorted(kinds)
    if start:
        params["start_date"] = start
    if end:
        params["end_date"] = end
    if customers and email_address:
        params["customer_email"] = email_address
    records, pages = walk(property_server, path, params)
    assert records == expected(
        data,
        kinds=kinds,
        start=start,
        end=end,
        email=email_address if customers else None,
        desc=order == "desc",
    )
    assert all(len(page[KEYS[path]]) <= limit for page in pages)
    if not after_limit:  # filtering first: every page but the last is full
        assert all(len(page[KEYS[path]]) == limit for page in pages[:-1])


# -- command line -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cli_serves_until_terminated() -> None:
    command = [sys.executable, "-m", "impactframe", "sandbox", "--port", "0", "--records", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        match = re.search(r"IMPACTFRAME_BASE_URL=(\S+) IMPACTFRAME_API_KEY=(\S+)", lines[1])
        assert match, lines
        assert "50 records" in lines[0]
        url, key = match.groups()
        response = requests.get(url + RECORDS, headers={"x-api-key": key}, timeout=10)
        assert response.status_code == 200
        assert len(response.json()["user_records"]) == 10
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err  # SIGTERM stops it cleanly
    assert "Traceback" not in err


def test_cli_rejects_negative_records_with_exit_2() -> None:
    command = [sys.executable, "-m", "impactframe", "sandbox", "--records", "-1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    expected_error = "argument --records: must be a non-negative integer, got '-1'"
    assert last == f"impactframe sandbox: error: {expected_error}"


def test_cli_usage_errors_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "--customer-records", "many"]) == 2
    assert "--customer-records: must be a non-negative integer" in capsys.readouterr().err
    assert main(["sandbox", "--host", "192.0.2.1"]) == 2
    assert (
        "host: '192.0.2.1' is not accepted; expected a loopback address" in capsys.readouterr().err
    )
    assert main([]) == 2
    assert "sandbox" in capsys.readouterr().err
    assert main(["--version"]) == 0


def test_cli_parser_defaults() -> None:
    args = build_parser().parse_args(["sandbox"])
    assert (args.port, args.records, args.customer_records, args.seed) == (8000, 10_000, None, 0)
    assert (args.host, args.filter_after_limit, args.debug) == ("127.0.0.1", False, False)
    args = build_parser().parse_args(["sandbox", "--debug", "--filter-after-limit"])
    assert (args.debug, args.filter_after_limit) == (True, True)
