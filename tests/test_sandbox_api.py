"""The sandbox's endpoints beyond the records (SPEC §12), over real HTTP on loopback.

Tests that change the account (POSTs, cancels) use their own sandbox (``make_sandbox``): the
session ``sandbox`` is shared and read-only.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impactframe._constants import IMPACT_TYPES
from impactframe.sandbox import Fault, SandboxServer, generate_records
from impactframe.sandbox._data import account_user_id

MakeSandbox = Callable[..., SandboxServer]
MAKE = {
    "tree_planted": "/v1/plant_tree",
    "waste_removed": "/v1/clean_ocean",
    "carbon_captured": "/v1/capture_carbon",
    "coral_restored": "/v1/restore_coral",
    "money_donated": "/v1/donate_money",
}
GET_PATHS = [
    "/v1/records",
    "/v1/customer_records",
    "/v1/impact",
    "/v1/impact/daily",
    "/v1/whoami",
    "/v1/customers",
    "/v1/track",
    "/v1/projects",
    "/v1/projects/sbx-coral-keys",
]
POST_PATHS = [*MAKE.values(), "/v1/cancel_impact"]


def call(
    server: SandboxServer,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    body: Any = None,
    *,
    key: str | None = "default",
) -> requests.Response:
    headers = {} if key is None else {"x-api-key": server.api_key if key == "default" else key}
    return requests.request(
        method, server.url + path, params=params, json=body, headers=headers, timeout=10
    )


def post(server: SandboxServer, path: str, body: Any) -> dict[str, Any]:
    response = call(server, "POST", path, body=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def kind_of(record: dict[str, Any]) -> str:
    return next(k for k in record if k in IMPACT_TYPES)


def expected_figures(server: SandboxServer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The body of /v1/impact and the daily entries, computed from the records served."""
    user, customer = Counter[str](), Counter[str]()
    daily: dict[str, Counter[str]] = defaultdict(Counter)
    for endpoint, totals in (("records", user), ("customer_records", customer)):
        for record in server.served_records(endpoint):
            kind = kind_of(record)
            totals[kind] += record[kind]
            daily[record["time_utc"][:10]][kind] += record[kind]
    impact: dict[str, Any] = {t: user[t] + customer[t] for t in IMPACT_TYPES}
    impact["user_impact"] = {t: user[t] for t in IMPACT_TYPES}
    impact["customer_impact"] = {t: customer[t] for t in IMPACT_TYPES}
    days = [{"date": d, **{t: daily[d][t] for t in IMPACT_TYPES}} for d in sorted(daily)]
    return impact, days


def reported(server: SandboxServer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    impact = call(server, "GET", "/v1/impact").json()
    assert impact.pop("user_id") == server.served_records()[0]["user_id"]
    return impact, call(server, "GET", "/v1/impact/daily").json()["daily_impact"]


# -- authentication and routing ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", [*GET_PATHS, *POST_PATHS, "/v1/nope", "/", "/v2/records"])
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_bad_key_is_401_on_every_path(
    sandbox: SandboxServer, method: str, path: str, key: str | None
) -> None:
    response = call(sandbox, method, path, key=key)
    assert response.status_code == 401
    assert response.json() == {"type": "key_error", "message": "API Key does not exist"}


def test_unknown_paths_and_methods(sandbox: SandboxServer) -> None:
    missing = call(sandbox, "GET", "/v1/impacts")
    assert missing.status_code == 404
    assert missing.json()["type"] == "not_found"
    assert "/v1/impact/daily" in missing.json()["message"]
    for method, path, allowed in (("GET", "/v1/plant_tree", "POST"), ("POST", "/v1/impact", "GET")):
        response = call(sandbox, method, path, body={"amount": 1})
        assert response.status_code == 501, path
        assert response.json()["type"] == "method_not_allowed"
        assert response.headers["Allow"] == allowed
    assert len(sandbox.served_records()) == 2000  # nothing was made


@pytest.mark.parametrize("path", ["/v1/impact", "/v1/whoami", "/v1/plant_tree"])
def test_unknown_query_parameters_are_400(sandbox: SandboxServer, path: str) -> None:
    method = "POST" if path == "/v1/plant_tree" else "GET"
    response = call(sandbox, method, path, params={"limit": "5"}, body={"amount": 1})
    assert response.status_code == 400
    assert "Unknown query parameter 'limit'" in response.json()["message"]


def test_whoami_is_the_account_of_the_records(make_sandbox: MakeSandbox) -> None:
    given_records = [{"user_id": "U123", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": 1}]
    for server, user_id in (
        (make_sandbox(given_records, []), "U123"),
        (make_sandbox([], [], seed=4), account_user_id(4)),
        (make_sandbox(n_records=5, seed=2), generate_records(1, seed=2)[0]["user_id"]),
    ):
        body = call(server, "GET", "/v1/whoami").json()
        assert body == {"user_id": user_id, "email": "sandbox@example.com"}


# -- making impacts ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", IMPACT_TYPES)
def test_a_posted_impact_is_served_exactly_as_answered(
    make_sandbox: MakeSandbox, kind: str
) -> None:
    server = make_sandbox(n_records=20, n_customer_records=20)
    mine = post(server, MAKE[kind], {"amount": 7, "metadata": {"order": "A-1"}, "notify": False})
    theirs = post(
        server, MAKE[kind], {"amount": 9, "customer_email": "ada@example.com", "customer_name": "A"}
    )
    assert set(mine) == {"user_id", "time_utc", kind, "metadata"}
    assert mine[kind] == 7
    assert server.served_records()[-1] == mine
    assert server.served_records("customer_records")[-1] == theirs
    assert theirs["customer"]["customer_email"] == "ada@example.com"
    assert theirs["customer"]["customer_name"] == "A"
    assert mine["user_id"] == theirs["user_id"] == server.served_records()[0]["user_id"]
    assert mine["time_utc"] < theirs["time_utc"]
    page = call(server, "GET", "/v1/records", {"sort_order": "desc", "limit": "1"}).json()
    assert page["user_records"] == [mine]


def test_categories_where_the_sdk_sends_them(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=0, n_customer_records=0)
    assert post(server, "/v1/plant_tree", {"amount": 1, "category": "food"})["category"] == "food"
    gift = post(server, "/v1/donate_money", {"amount": 500, "category": "veterans"})
    assert gift["category"] == "veterans"
    response = call(server, "POST", "/v1/clean_ocean", body={"amount": 1, "category": "food"})
    assert response.status_code == 400
    assert "'category'" in response.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "word"),
    [
        ("/v1/plant_tree", {}, "amount"),
        ("/v1/plant_tree", {"amount": 0}, "amount"),
        ("/v1/plant_tree", {"amount": "5"}, "amount"),
        ("/v1/plant_tree", {"amount": True}, "amount"),
        ("/v1/plant_tree", {"amount": 1.5}, "amount"),
        ("/v1/plant_tree", {"amount": 10_000_001}, "10000000"),
        ("/v1/donate_money", {"amount": 1_000_000_001}, "1000000000"),
        ("/v1/plant_tree", {"amount": 1, "trees": 2}, "'trees'"),
        ("/v1/plant_tree", {"amount": 1, "customer_name": "Ada"}, "customer_email"),
        ("/v1/plant_tree", {"amount": 1, "customer_email": "not-an-email"}, "customer_email"),
        ("/v1/plant_tree", {"amount": 1, "customer_email": "a @b.co"}, "customer_email"),
        ("/v1/plant_tree", {"amount": 1, "category": ""}, "category"),
        ("/v1/plant_tree", {"amount": 1, "notify": "yes"}, "notify"),
        ("/v1/plant_tree", {"amount": 1, "metadata": ["a"]}, "metadata"),
        ("/v1/plant_tree", {"amount": 1, "metadata": {"gift": "x"}}, "reserved"),
        ("/v1/plant_tree", {"amount": 1, "metadata": {"k" * 41: "x"}}, "metadata key"),
        ("/v1/plant_tree", {"amount": 1, "metadata": {"k": 5}}, "metadata['k']"),
        ("/v1/plant_tree", {"amount": 1, "metadata": {f"k{i}": "v" for i in range(21)}}, "20"),
        ("/v1/plant_tree", [1], "JSON object"),
        ("/v1/cancel_impact", {"time_utc": "2024-01-01T00:00:00.000Z"}, "user_id"),
        ("/v1/cancel_impact", {"user_id": "U1", "time_utc": "x", "reason": "r" * 201}, "reason"),
    ],
)
def test_bad_bodies_are_400_and_change_nothing(
    make_sandbox: MakeSandbox, path: str, body: Any, word: str
) -> None:
    server = make_sandbox(n_records=10, n_customer_records=10)
    before = reported(server)
    response = call(server, "POST", path, body=body)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "validation_error"
    assert word in response.json()["message"]
    assert reported(server) == before
    assert len(server.served_records()) == 10


def test_a_body_that_is_not_json_is_400(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=0, n_customer_records=0)
    headers = {"x-api-key": server.api_key}
    response = requests.post(server.url + "/v1/plant_tree", data=b"{amount", headers=headers)
    assert response.status_code == 400
    assert "JSON object" in response.json()["message"]


def _raw(server: SandboxServer, request: bytes) -> bytes:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_and_chunked_bodies_are_refused(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=0, n_customer_records=0)
    key = server.api_key.encode()
    big = _raw(
        server,
        b"POST /v1/plant_tree HTTP/1.1\r\nHost: x\r\nx-api-key: " + key + b"\r\n"
        b"Content-Length: 100000\r\n\r\n",
    )
    assert big.startswith(b"HTTP/1.1 413")
    chunked = _raw(
        server,
        b"POST /v1/plant_tree HTTP/1.1\r\nHost: x\r\nx-api-key: " + key + b"\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n0\r\n\r\n',
    )
    assert chunked.startswith(b"HTTP/1.1 411")
    assert server.served_records() == []


def test_concurrent_posts_get_distinct_keys_in_order_and_add_up(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=100, n_customer_records=100)
    base, _ = reported(server)
    answers: list[dict[str, Any]] = []
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def make(n: int) -> None:
        with requests.Session() as session:
            for i in range(25):
                body = {"amount": n + 1}
                if i % 3 == 0:
                    body |= {"customer_email": f"c{n}@example.com"}
                response = session.post(
                    server.url + MAKE[IMPACT_TYPES[n % 5]],
                    json=body,
                    headers={"x-api-key": server.api_key},
                    timeout=10,
                )
                with lock:
                    answers.append(response.json())

    def read() -> None:
        with requests.Session() as session:
            for _ in range(20):
                body = session.get(
                    server.url + "/v1/impact", headers={"x-api-key": server.api_key}, timeout=10
                ).json()
                with lock:
                    seen.append(body)

    threads = [threading.Thread(target=make, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    keys = [(a["user_id"], a["time_utc"]) for a in answers]
    assert len(set(keys)) == len(keys) == 100
    served = server.served_records() + server.served_records("customer_records")
    assert len(served) == 300
    assert {(r["user_id"], r["time_utc"]) for r in served} >= set(keys)
    times = [r["time_utc"] for r in server.served_records()]
    assert times == sorted(times)
    # every answer read meanwhile is of one state: its splits add up to its totals
    for body in seen:
        for kind in IMPACT_TYPES:
            assert body[kind] == body["user_impact"][kind] + body["customer_impact"][kind]
            assert base[kind] <= body[kind]
    assert reported(server) == expected_figures(server)


def test_a_record_sorting_before_the_last_is_put_in_its_place(make_sandbox: MakeSandbox) -> None:
    future = {"user_id": "U1", "time_utc": "2999-01-01T00:00:00.000Z", "tree_planted": 4}
    server = make_sandbox([future], [])
    made = post(server, "/v1/plant_tree", {"amount": 2})
    assert [r["time_utc"] for r in server.served_records()] == [
        made["time_utc"],
        future["time_utc"],
    ]
    page = call(server, "GET", "/v1/records", {"limit": "1"}).json()
    second = call(server, "GET", "/v1/records", {"limit": "1", "cursor": page["cursor"]}).json()
    assert [page["user_records"], second["user_records"]] == [[made], [future]]
    assert call(server, "GET", "/v1/impact").json()["tree_planted"] == 6


def test_faults_on_posts(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=0, n_customer_records=0)
    server.inject(Fault("status", status=503), times=1)
    assert call(server, "POST", "/v1/plant_tree", body={"amount": 1}).status_code == 503
    assert server.served_records() == []  # a gateway failure: the API never saw it
    server.inject(Fault("truncate"), times=1)
    with pytest.raises(requests.RequestException):
        call(server, "POST", "/v1/plant_tree", body={"amount": 1}).json()
    assert len(server.served_records()) == 1  # made, though its answer was cut short


# -- customers ---------------------------------------------------------------------------------


def test_customers_page_through_every_customer_once(sandbox: SandboxServer) -> None:
    emails: dict[str, dict[str, str]] = {}
    for record in sandbox.served_records("customer_records"):
        emails.setdefault(record["customer"]["customer_email"], record | record["customer"])
    listed: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        params = {"limit": "7"} | ({"cursor": cursor} if cursor else {})
        body = call(sandbox, "GET", "/v1/customers", params).json()
        listed += body["customers"]
        cursor = body.get("cursor")
        if cursor is None:
            break
    assert [c["customer_email"] for c in listed] == sorted(
        emails, key=lambda e: (emails[e]["time_utc"], e)
    )
    for customer in listed:
        first = emails[customer["customer_email"]]
        assert customer["customer_id"] == first["customer_id"]
        assert customer["onboarded_on"] == first["time_utc"]
        assert customer.get("customer_name") == first.get("customer_name")
    some = listed[3]
    one = call(sandbox, "GET", "/v1/customers", {"customer_email": some["customer_email"]}).json()
    assert one == {"customers": [some]}
    none = call(sandbox, "GET", "/v1/customers", {"customer_email": "nobody@example.com"}).json()
    assert none == {"customers": []}
    assert len(call(sandbox, "GET", "/v1/customers").json()["customers"]) == 10  # the default


def test_customers_cursor_errors_and_repeat(sandbox: SandboxServer) -> None:
    for cursor in ("abc", base64.b64encode(b'{"createdOn": "x", "userID": "U"}').decode()):
        response = call(sandbox, "GET", "/v1/customers", {"cursor": cursor})
        assert response.status_code == 400
        assert "cursor" in response.json()["message"]
    first = call(sandbox, "GET", "/v1/customers", {"limit": "2"}).json()
    sandbox.inject(Fault("repeat"), times=1, path="/v1/customers")
    again = call(sandbox, "GET", "/v1/customers", {"limit": "2", "cursor": first["cursor"]}).json()
    assert again["customers"][0] == first["customers"][-1]


def test_a_new_email_onboards_a_customer_and_a_known_one_keeps_its_id(
    make_sandbox: MakeSandbox,
) -> None:
    server = make_sandbox(n_records=0, n_customer_records=200, seed=3)
    nameless = next(
        r["customer"]
        for r in server.served_records("customer_records")
        if "customer_name" not in r["customer"]
    )
    named = next(
        r["customer"]
        for r in server.served_records("customer_records")
        if "customer_name" in r["customer"]
    )
    new = post(server, "/v1/plant_tree", {"amount": 1, "customer_email": "new@example.com"})
    again = post(
        server,
        "/v1/clean_ocean",
        {"amount": 1, "customer_email": "new@example.com", "customer_name": "New"},
    )
    assert new["customer"]["customer_id"] == again["customer"]["customer_id"]
    assert "customer_name" not in new["customer"]
    assert again["customer"]["customer_name"] == "New"  # filled in, once missing
    body = {"amount": 1, "customer_email": named["customer_email"], "customer_name": "Other"}
    assert post(server, "/v1/plant_tree", body)["customer"] == named  # known: unchanged
    body = {"amount": 1, "customer_email": nameless["customer_email"], "customer_name": "Zed"}
    assert post(server, "/v1/plant_tree", body)["customer"] == nameless | {"customer_name": "Zed"}
    listed = call(server, "GET", "/v1/customers", {"customer_email": "new@example.com"}).json()
    assert listed["customers"] == [{**again["customer"], "onboarded_on": new["time_utc"]}]
    ids = [
        c["customer_id"]
        for c in call(server, "GET", "/v1/customers", {"limit": "1000"}).json()["customers"]
    ]
    assert len(ids) == len(set(ids))


# -- cancelling and tracking -------------------------------------------------------------------


def test_cancel_takes_an_impact_out_once(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=30, n_customer_records=30)
    before, _ = reported(server)
    made = post(server, "/v1/plant_tree", {"amount": 5, "customer_email": "a@example.com"})
    key = {"user_id": made["user_id"], "time_utc": made["time_utc"]}
    first = post(server, "/v1/cancel_impact", {**key, "reason": "order refunded"})
    assert first == {
        **key,
        "cancelled_on": first["cancelled_on"],
        "message": "Impact cancelled",
        "reason": "order refunded",
        "tree_planted": 5,
    }
    assert first["cancelled_on"] >= made["time_utc"]
    second = post(server, "/v1/cancel_impact", key)
    assert second == {**first, "message": "Impact was already cancelled"}
    assert made not in server.served_records("customer_records")
    assert reported(server) == expected_figures(server)
    assert reported(server)[0] == before
    old = server.served_records()[0]
    post(server, "/v1/cancel_impact", {"user_id": old["user_id"], "time_utc": old["time_utc"]})
    assert old not in server.served_records()
    assert reported(server) == expected_figures(server)
    missing = call(server, "POST", "/v1/cancel_impact", body={**key, "time_utc": "2020"})
    assert missing.status_code == 404
    assert missing.json()["type"] == "not_found"


def test_track_an_impact_through_its_life(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=0, n_customer_records=0)
    made = post(server, "/v1/plant_tree", {"amount": 3, "category": "food"})
    key = {"user_id": made["user_id"], "time_utc": made["time_utc"]}
    live = call(server, "GET", "/v1/track", key).json()
    assert live["tracking_id"] == f"{made['user_id']}-{made['time_utc']}"
    assert live["impact_initiated"] == made["time_utc"]
    assert (live["tree_planted"], live["category"]) == (3, "food")
    assert live["project_id"].startswith("sbx-trees-")
    assert live["is_test_transaction"] is True
    assert "cancelled_on" not in live
    post(server, "/v1/cancel_impact", {**key, "reason": "refund"})
    cancelled = call(server, "GET", "/v1/track", key).json()
    assert cancelled["cancellation_reason"] == "refund"
    assert cancelled["cancelled_on"]
    gift = post(server, "/v1/donate_money", {"amount": 100, "category": "animals"})
    tracked = call(
        server, "GET", "/v1/track", {"user_id": gift["user_id"], "time_utc": gift["time_utc"]}
    )
    assert tracked.json()["donation_category"] == "animals"
    assert "project_id" not in tracked.json()
    assert call(server, "GET", "/v1/track", {**key, "time_utc": "x"}).status_code == 404
    assert call(server, "GET", "/v1/track", {"user_id": "U1"}).status_code == 400


# -- the account's figures ---------------------------------------------------------------------


def test_figures_are_the_sums_of_the_records_served(sandbox: SandboxServer) -> None:
    impact, days = expected_figures(sandbox)
    assert reported(sandbox) == (impact, days)
    ranged = call(
        sandbox, "GET", "/v1/impact/daily", {"start_date": "2024-03-01", "end_date": "2024-03-31"}
    ).json()["daily_impact"]
    assert ranged == [d for d in days if "2024-03-01" <= d["date"] <= "2024-03-31"]
    assert ranged
    for params in (
        {"start_date": "2024-02-30"},
        {"start_date": "2024-03-02", "end_date": "2024-03-01"},
    ):
        response = call(sandbox, "GET", "/v1/impact/daily", params)
        assert response.status_code == 400
        assert response.json()["type"] == "validation_error"


def test_new_types_are_listed_and_malformed_records_not_counted(make_sandbox: MakeSandbox) -> None:
    records = [
        {"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": 2},
        {"user_id": "U1", "time_utc": "2024-01-01T01:00:00.000Z", "kelp_grown": 5, "x": "y"},
        {"user_id": "U1", "time_utc": "2024-01-02T00:00:00.000Z", "tree_planted": "3"},
        {"user_id": "U1", "time_utc": "not a time", "tree_planted": 3},
        {"user_id": "U1", "time_utc": "2024-01-03T00:00:00.000Z", "a_new": 1, "b_new": 2},
    ]
    server = make_sandbox(
        records, [{**records[0], "time_utc": "2024-01-05T00:00:00.000Z", "algae": 1}]
    )
    impact = call(server, "GET", "/v1/impact").json()
    # "algae" beside a known type is no impact type (the loaders make it a drift column)
    assert list(impact)[1:] == [*IMPACT_TYPES, "kelp_grown", "user_impact", "customer_impact"]
    assert impact["user_impact"] == dict.fromkeys([*IMPACT_TYPES, "kelp_grown"], 0) | {
        "tree_planted": 2,
        "kelp_grown": 5,
    }
    assert impact["customer_impact"]["tree_planted"] == 2  # its known type comes first
    daily = call(server, "GET", "/v1/impact/daily").json()["daily_impact"]
    assert [d["date"] for d in daily] == ["2024-01-01", "2024-01-05"]
    assert daily[0]["kelp_grown"] == 5


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("make"),
                st.sampled_from(IMPACT_TYPES),
                st.integers(1, 10_000),
                st.sampled_from([None, "a@example.com", "b@example.com"]),
            ),
            st.tuples(st.just("cancel"), st.integers(0, 10_000)),
            st.tuples(st.just("read")),
        ),
        max_size=12,
    )
)
def test_figures_follow_random_posts_and_cancels(
    make_sandbox: MakeSandbox, steps: list[tuple[Any, ...]]
) -> None:
    # "read" computes the figures, so later changes adjust them instead of recounting: both
    # ways must agree with the records.
    server = make_sandbox(n_records=40, n_customer_records=40, seed=len(steps))
    for step in steps:
        if step[0] == "make":
            _, kind, amount, email = step
            post(
                server,
                MAKE[kind],
                {"amount": amount} | ({"customer_email": email} if email else {}),
            )
        elif step[0] == "cancel":
            served = server.served_records() + server.served_records("customer_records")
            if served:
                victim = served[step[1] % len(served)]
                key = {"user_id": victim["user_id"], "time_utc": victim["time_utc"]}
                post(server, "/v1/cancel_impact", key)
        else:
            assert reported(server) == expected_figures(server)
    assert reported(server) == expected_figures(server)


# -- projects ----------------------------------------------------------------------------------


def test_projects_catalogue(sandbox: SandboxServer) -> None:
    everything = call(sandbox, "GET", "/v1/projects").json()["projects"]
    assert {p["type"] for p in everything} == {"trees", "ocean", "carbon", "coral"}
    assert any(not p["available"] for p in everything)
    for project in everything:
        assert isinstance(project["latitude"], float)
        assert isinstance(project["about"], list)
        assert project["sdgs"]
        assert all(
            isinstance(s["number"], int) and s["color"].startswith("#") for s in project["sdgs"]
        )
        assert (
            call(sandbox, "GET", f"/v1/projects/{project['project_id']}", {"locale": "de"}).json()
            == project
        )
    trees = call(sandbox, "GET", "/v1/projects", {"type": "trees", "locale": "fr"}).json()[
        "projects"
    ]
    assert trees == [p for p in everything if p["type"] == "trees"]
    assert len(trees) == 2
    assert call(sandbox, "GET", "/v1/projects", {"type": "forest"}).status_code == 400
    assert call(sandbox, "GET", "/v1/projects", {"locale": "it"}).status_code == 400
    missing = call(sandbox, "GET", "/v1/projects/nope")
    assert missing.status_code == 404
    assert "sbx-coral-keys" in missing.json()["message"]


def test_set_records_resets_what_was_derived(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(n_records=10, n_customer_records=10)
    made = post(server, "/v1/plant_tree", {"amount": 1, "customer_email": "gone@example.com"})
    post(server, "/v1/cancel_impact", {"user_id": made["user_id"], "time_utc": made["time_utc"]})
    server.set_records(generate_records(5, seed=9, customers=True), endpoint="customer_records")
    assert call(server, "GET", "/v1/customers", {"customer_email": "gone@example.com"}).json() == {
        "customers": []
    }
    key = {"user_id": made["user_id"], "time_utc": made["time_utc"]}
    assert call(server, "GET", "/v1/track", key).status_code == 404
    assert reported(server) == expected_figures(server)
