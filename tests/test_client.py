"""The HTTP client against the real sandbox on loopback (SPEC §2, §4, §10). Sleeps are injected."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import json
import logging
import random
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from impactframe._constants import ENV_API_KEY, ENV_BASE_URL, IMPACT_TYPES, SANDBOX_URL
from impactframe._paging._cap import get_page, walk_query
from impactframe._params import normalize_query
from impactframe.client import Client
from impactframe.client import _pooled as _transport
from impactframe.client._retry import backoff_delay
from impactframe.errors import (
    APIError,
    AuthenticationError,
    PaginationError,
    RateLimitError,
    TransportError,
    ValidationError,
)
from impactframe.sandbox import Fault, SandboxServer, generate_records

SEED = 7
SECRET = "sk-live-DO-NOT-LEAK-4242"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_API_KEY, raising=False)
    monkeypatch.delenv(ENV_BASE_URL, raising=False)


@pytest.fixture
def connect(fake_sleep: list[float]) -> Iterator[Callable[..., Client]]:
    """Build clients that sleep into `fake_sleep` with seeded jitter; closed afterwards."""
    made: list[Client] = []

    def make(server: Any, *, api_key: str | None = None, **kwargs: Any) -> Client:
        client = Client(api_key or server.api_key, base_url=server.url, **kwargs)
        client._sleep = fake_sleep
        client._rng = random.Random(SEED)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def expected_backoff(n: int) -> list[float]:
    rng = random.Random(SEED)
    return [backoff_delay(a, retry_after=None, rng=rng) for a in range(n)]


# -- success ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "path", "sizes"),
    [
        ("records", "/v1/records", [50, 50, 20]),
        ("customer_records", "/v1/customer_records", [50, 30]),
    ],
)
def test_both_endpoints_walk_every_record(
    make_sandbox: Callable[..., SandboxServer],
    connect: Callable[..., Client],
    endpoint: str,
    path: str,
    sizes: list[int],
    fake_sleep: list[float],
) -> None:
    sandbox = make_sandbox(n_records=120, n_customer_records=80, seed=3)
    client = connect(sandbox)
    query = normalize_query(endpoint, page_size=50)
    pages = list(walk_query(client, endpoint, query))
    records = [r for page in pages for r in page.records]
    assert [len(p.records) for p in pages] == sizes
    assert pages[-1].cursor is None
    assert all(p.cursor for p in pages[:-1])
    keys = [(r["time_utc"], r["user_id"]) for r in records]
    assert keys == sorted(keys)
    assert len(set(keys)) == sum(sizes)
    assert [r.path for r in sandbox.requests] == [path] * len(sizes)
    assert [r.status for r in sandbox.requests] == [200] * len(sizes)
    assert sandbox.requests[0].params == {"limit": ["50"], "sort_order": ["asc"]}
    assert sandbox.requests[1].params["cursor"] == [pages[0].cursor]
    assert fake_sleep == []


def test_get_page_and_get_json(sandbox: SandboxServer, connect: Callable[..., Client]) -> None:
    client = connect(sandbox)
    page = get_page(client, "customer_records", {"limit": "3", "sort_order": "desc"})
    assert len(page.records) == 3
    assert all("customer" in r for r in page.records)
    assert page.records[0]["time_utc"] >= page.records[-1]["time_utc"]
    body = client.get_json("/v1/records", {"limit": "2"})
    assert isinstance(body, dict)
    assert len(body["user_records"]) == 2


def test_sort_order_desc_and_dates_reach_the_server(
    sandbox: SandboxServer, connect: Callable[..., Client]
) -> None:
    client = connect(sandbox)
    query = normalize_query(
        "records", start_date="2022-01-01", end_date="2023-12-31", sort_order="desc"
    )
    records = [r for p in walk_query(client, "records", query) for r in p.records]
    assert records, "the generated data spans these years"
    assert all("2022-01-01" <= r["time_utc"][:10] <= "2023-12-31" for r in records)
    stamps = [r["time_utc"] for r in records]
    assert stamps == sorted(stamps, reverse=True)
    assert sandbox.requests[0].params["start_date"] == ["2022-01-01"]
    assert sandbox.requests[0].params["end_date"] == ["2023-12-31"]


def test_repeated_filter_by(sandbox: SandboxServer, connect: Callable[..., Client]) -> None:
    client = connect(sandbox)
    query = normalize_query("records", filter_by=["waste_removed", "tree_planted"])
    records = [r for p in walk_query(client, "records", query) for r in p.records]
    assert sandbox.requests[0].params["filter_by"] == ["tree_planted", "waste_removed"]
    assert records
    assert all(("tree_planted" in r) or ("waste_removed" in r) for r in records)
    types = {t for r in records for t in IMPACT_TYPES if t in r}
    assert types == {"tree_planted", "waste_removed"}


def test_cursor_with_plus_slash_equals_survives(
    connect: Callable[..., Client], make_sandbox: Callable[..., SandboxServer]
) -> None:
    # User ids chosen so the base64 cursors (of JSON holding them) carry '+', '/' and '='.
    ids = ["U~~~", "U???", "U>>>", "U~?", "U?~>", "U~", "U??~~>>"]
    records = [
        {"user_id": uid, "time_utc": f"2024-01-0{i + 1}T00:00:00.000Z", "tree_planted": i + 1}
        for i, uid in enumerate(ids)
    ]
    server = make_sandbox(records=records, customer_records=[])
    client = connect(server)
    pages = list(walk_query(client, "records", normalize_query("records", page_size=1)))
    sent = [r.params.get("cursor", [None])[0] for r in server.requests]
    cursors = [p.cursor for p in pages if p.cursor]
    joined = "".join(cursors)
    assert "+" in joined
    assert "/" in joined
    assert any(c.endswith("=") for c in cursors)
    assert [r for p in pages for r in p.records] == records
    # The server decoded exactly the cursor it had sent (nothing lost to '+' -> ' ' etc.).
    assert sent == [None, *cursors]
    for cursor in cursors:
        base64.b64decode(cursor, validate=True)


def test_customer_email_travels_percent_encoded(
    sandbox: SandboxServer, connect: Callable[..., Client]
) -> None:
    client = connect(sandbox)
    email = next(
        r["customer"]["customer_email"]
        for p in walk_query(client, "customer_records", normalize_query("customer_records"))
        for r in p.records
    )
    sandbox.clear_log()
    query = normalize_query("customer_records", customer_email=email)
    records = [r for p in walk_query(client, "customer_records", query) for r in p.records]
    assert records
    assert {r["customer"]["customer_email"] for r in records} == {email}
    assert sandbox.requests[0].params["customer_email"] == [email]


def test_plus_in_customer_email_is_not_a_space(
    connect: Callable[..., Client], make_sandbox: Callable[..., SandboxServer]
) -> None:
    records = generate_records(6, seed=1, customers=True)
    for record in records[:3]:
        record["customer"]["customer_email"] = "ada+impact@example.com"
    server = make_sandbox(records=[], customer_records=records)
    client = connect(server)
    query = normalize_query("customer_records", customer_email="ada+impact@example.com")
    got = [r for p in walk_query(client, "customer_records", query) for r in p.records]
    assert server.requests[0].params["customer_email"] == ["ada+impact@example.com"]
    assert len(got) == 3


# -- max_records --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_records", "sizes", "limits"),
    [
        # After a cursor one record more than missing (a page may repeat the boundary
        # record); the extra one is trimmed.
        (25, [10, 10, 5], ["10", "10", "6"]),
        (20, [10, 10], ["10", "10"]),  # a cursor follows page 2, yet no third request
        (3, [3], ["3"]),
    ],
)
def test_max_records_never_fetches_more_than_needed(
    sandbox: SandboxServer,
    connect: Callable[..., Client],
    max_records: int,
    sizes: list[int],
    limits: list[str],
) -> None:
    client = connect(sandbox)
    query = normalize_query("records", page_size=10)
    pages = list(walk_query(client, "records", query, max_records=max_records))
    assert [len(p.records) for p in pages] == sizes
    assert [r.params["limit"][0] for r in sandbox.requests] == limits


def test_max_records_above_the_total_just_ends(
    make_sandbox: Callable[..., SandboxServer], connect: Callable[..., Client]
) -> None:
    sandbox = make_sandbox(n_records=25, n_customer_records=0)
    client = connect(sandbox)
    query = normalize_query("records", page_size=10)
    pages = list(walk_query(client, "records", query, max_records=500))
    assert [len(p.records) for p in pages] == [10, 10, 5]
    assert [r.params["limit"][0] for r in sandbox.requests] == ["10", "10", "10"]


def test_a_page_trimmed_to_max_records_keeps_its_unknown_fields(
    sandbox: SandboxServer, connect: Callable[..., Client]
) -> None:
    records = generate_records(3, seed=SEED)
    body = json.dumps({"user_records": records, "has_more": False})
    sandbox.inject(Fault("status", status=200, body=body), times=1)
    client = connect(sandbox)
    pages = list(walk_query(client, "records", normalize_query("records"), max_records=2))
    assert len(pages) == 1
    assert pages[0].records == records[:2]  # cut: the API sent one record too many
    assert pages[0].extra == ("has_more",)


def test_iter_pages_checks_arguments_before_any_request(
    sandbox: SandboxServer, connect: Callable[..., Client]
) -> None:
    client = connect(sandbox)
    query = normalize_query("records")
    with pytest.raises(ValueError, match=r"^max_records: 0"):
        walk_query(client, "records", query, max_records=0)
    with pytest.raises(ValueError, match=r"^endpoint: 'users'"):
        walk_query(client, "users", query)
    customer_query = normalize_query("customer_records", customer_email="a@example.com")
    with pytest.raises(ValueError, match=r"^customer_email: only the 'customer_records'"):
        walk_query(client, "records", customer_query)
    assert sandbox.requests == []


# -- authentication -------------------------------------------------------------------------------


def test_bad_key_is_an_authentication_error_that_never_shows_the_key(
    sandbox: SandboxServer,
    connect: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    fake_sleep: list[float],
) -> None:
    caplog.set_level(logging.DEBUG)
    raw = requests.get(f"{sandbox.url}/v1/records", headers={"x-api-key": SECRET}, timeout=5)
    client = connect(sandbox, api_key=SECRET)
    with pytest.raises(AuthenticationError) as info:
        get_page(client, "records", {})
    exc = info.value
    assert exc.status == raw.status_code == 401
    assert exc.message == raw.json()["message"]
    assert exc.error_type == raw.json()["type"]
    assert exc.message in str(exc)
    assert fake_sleep == []  # not retried
    assert len(sandbox.requests) == 2  # the raw probe and one client request
    for text in (str(exc), repr(exc), repr(client), repr(vars(client)), caplog.text):
        assert SECRET not in text
    assert any(r.name == "impactframe" for r in caplog.records)  # something was logged


def test_key_echoed_in_a_body_is_redacted(
    local: LocalServer, connect: Callable[..., Client]
) -> None:
    client = connect(local, api_key=SECRET)
    with pytest.raises(APIError) as info:
        client.get_json("/echo-key")
    assert info.value.status == 400
    assert SECRET not in str(info.value)
    assert "***" in str(info.value)
    with pytest.raises(APIError) as info:
        client.get_json("/echo-key-json")
    assert SECRET not in info.value.message
    assert "***" in info.value.message


# -- retries ---------------------------------------------------------------------------------------


def test_429_retry_after_is_honoured(
    sandbox: SandboxServer,
    connect: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    fake_sleep: list[float],
) -> None:
    caplog.set_level(logging.DEBUG, logger="impactframe")
    sandbox.inject(Fault("status", status=429, retry_after="2"), times=1, path="/v1/records")
    client = connect(sandbox)
    page = get_page(client, "records", {"limit": "5"})
    assert len(page.records) == 5
    assert fake_sleep == [2.0]
    assert [r.status for r in sandbox.requests] == [429, 200]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "HTTP 429" in warnings[0].getMessage()
    assert "2.00 s" in warnings[0].getMessage()
    assert sandbox.api_key not in caplog.text


@pytest.mark.parametrize(
    ("header", "expected"),
    [("1", [1.0]), ("3600", [120.0]), ("0", [0.0]), ("soon", expected_backoff(1))],
)
def test_retry_after_is_capped_and_useless_values_fall_back(
    sandbox: SandboxServer,
    connect: Callable[..., Client],
    header: str,
    expected: list[float],
    fake_sleep: list[float],
) -> None:
    sandbox.inject(Fault("status", status=429, retry_after=header), times=1)
    client = connect(sandbox)
    assert get_page(client, "records", {"limit": "1"}).records
    assert fake_sleep == expected


def test_429_retry_after_http_date_uses_the_clock(
    sandbox: SandboxServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    sandbox.inject(
        Fault("status", status=429, retry_after="Mon, 01 Jan 2024 12:00:07 GMT"), times=1
    )
    client = connect(sandbox)
    client._now = lambda: dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    get_page(client, "records", {"limit": "1"})
    assert fake_sleep == [7.0]


def test_429_without_retry_after_uses_backoff_then_rate_limit_error(
    sandbox: SandboxServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    sandbox.inject(Fault("status", status=429), times=None)
    client = connect(sandbox, max_retries=3)
    with pytest.raises(RateLimitError) as info:
        get_page(client, "records", {})
    assert info.value.status == 429
    assert fake_sleep == expected_backoff(3)
    assert len(sandbox.requests) == 4


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_then_success(
    sandbox: SandboxServer, connect: Callable[..., Client], status: int, fake_sleep: list[float]
) -> None:
    sandbox.inject(Fault("status", status=status), times=2)
    client = connect(sandbox)
    page = get_page(client, "records", {"limit": "4"})
    assert len(page.records) == 4
    assert [r.status for r in sandbox.requests] == [status, status, 200]
    assert fake_sleep == expected_backoff(2)


def test_persistent_500_gives_api_error_after_exactly_max_retries_plus_one(
    sandbox: SandboxServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    sandbox.inject(Fault("status", status=500), times=None)
    client = connect(sandbox, max_retries=4)
    with pytest.raises(APIError) as info:
        get_page(client, "records", {})
    assert type(info.value) is APIError
    assert info.value.status == 500
    assert len(sandbox.requests) == 5
    assert fake_sleep == expected_backoff(4)


def test_a_client_closed_while_a_retry_waits_sends_nothing_more(
    sandbox: SandboxServer, connect: Callable[..., Client]
) -> None:
    sandbox.inject(Fault("status", status=503), times=None)
    client = connect(sandbox, max_retries=3)
    waits: list[float] = []

    def close_during_the_wait(seconds: float) -> None:  # as another thread would
        waits.append(seconds)
        client.close()

    client._sleep = close_during_the_wait
    with pytest.raises(RuntimeError, match=r"closed while GET /v1/records waited for retry 1"):
        get_page(client, "records", {})
    assert len(waits) == 1
    assert [r.status for r in sandbox.requests] == [503]  # the retry was never sent


def test_max_retries_zero_means_one_request(
    sandbox: SandboxServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    sandbox.inject(Fault("status", status=503), times=None)
    client = connect(sandbox, max_retries=0)
    with pytest.raises(APIError, match="HTTP 503"):
        get_page(client, "records", {})
    assert len(sandbox.requests) == 1
    assert fake_sleep == []


@pytest.mark.parametrize("kind", ["drop", "truncate"])
def test_drop_and_truncate_are_retried(
    sandbox: SandboxServer, connect: Callable[..., Client], kind: str, fake_sleep: list[float]
) -> None:
    sandbox.inject(Fault(kind), times=2)
    client = connect(sandbox)
    page = get_page(client, "records", {"limit": "20"})
    assert len(page.records) == 20
    assert [r.fault for r in sandbox.requests] == [kind, kind, None]
    assert fake_sleep == expected_backoff(2)


def test_persistent_drop_is_a_transport_error_without_status(
    sandbox: SandboxServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    sandbox.inject(Fault("drop"), times=None)
    client = connect(sandbox, max_retries=2)
    with pytest.raises(TransportError, match=r"^no response: GET /v1/records: the conn") as info:
        get_page(client, "records", {})
    assert info.value.status is None
    assert (info.value.reason, info.value.attempts) == ("dropped", 3)
    assert info.value.host == sandbox.url.removeprefix("http://")
    assert f"{info.value.host} was closed or reset before a whole response (3 tries" in str(
        info.value
    )
    # Not chained: the requests exception carries the prepared request and its headers.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert len(sandbox.requests) == 3
    assert len(fake_sleep) == 2


def test_persistent_truncation_keeps_status_and_body_start(
    sandbox: SandboxServer, connect: Callable[..., Client]
) -> None:
    sandbox.inject(Fault("truncate"), times=None)
    client = connect(sandbox, max_retries=1)
    with pytest.raises(TransportError, match="dropped mid-body") as info:
        get_page(client, "records", {"limit": "1000"})
    assert info.value.status == 200
    assert info.value.reason == "dropped"
    assert '{"user_records"' in info.value.message.replace(" ", "")
    assert info.value.__cause__ is None
    assert "ChunkedEncodingError" in info.value.message


def test_read_timeout_is_retried(
    sandbox: SandboxServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    sandbox.inject(Fault("latency", delay=0.5), times=1)
    client = connect(sandbox, timeout=0.1)
    page = get_page(client, "records", {"limit": "2"})
    assert len(page.records) == 2
    assert len(fake_sleep) == 1


def test_bad_parameter_is_not_retried(
    sandbox: SandboxServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    client = connect(sandbox)
    with pytest.raises(APIError) as info:
        get_page(client, "records", {"limit": "5000"})
    assert info.value.status == 400
    assert info.value.error_type
    assert info.value.message
    assert type(info.value) is APIError
    assert len(sandbox.requests) == 1
    assert fake_sleep == []


def test_unknown_path_is_not_retried(
    sandbox: SandboxServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    client = connect(sandbox)
    with pytest.raises(APIError) as info:
        client.get_json("/v1/nothing-here")
    assert info.value.status == 404
    assert len(sandbox.requests) == 1
    assert fake_sleep == []


def test_repeated_cursor_from_a_server_is_a_pagination_error(
    local: LocalServer, connect: Callable[..., Client]
) -> None:
    client = connect(local)
    with pytest.raises(PaginationError, match="page 2"):
        list(walk_query(client, "records", normalize_query("records")))
    assert local.paths.count("/v1/records") == 2


# -- bodies the sandbox cannot serve: a tiny local server ------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    HTML = b"<!DOCTYPE html><html><head><title>Bad Gateway</title></head><body>oops</body></html>"

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.paths.append(path)  # type: ignore[attr-defined]
        key = self.headers.get("x-api-key", "")
        if path == "/html":
            self._send(200, self.HTML, "text/html")
        elif path == "/bad-gateway":
            self._send(502, self.HTML, "text/html")
        elif path == "/echo-key":
            self._send(400, f"invalid key {key}".encode(), "text/plain")
        elif path == "/echo-key-json":
            body = {"type": "invalid_request", "message": f"bad header {key}"}
            self._send(400, json.dumps(body).encode(), "application/json")
        elif path == "/gzip-junk":  # says gzip, is not: requests' ContentDecodingError
            junk = b"\x1f\x8b\x08\x00not-gzip-at-all" * 4
            self._send(200, junk, "application/json", {"Content-Encoding": "gzip"})
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://attacker.invalid/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/v1/records":  # a broken server: always the same cursor
            body = {"user_records": [], "cursor": "c2FtZQ=="}
            self._send(200, json.dumps(body).encode(), "application/json")
        elif path == "/v1/customer_records":
            self._send(200, b"[1, 2]", "application/json")
        else:
            self._send(404, b'{"type": "not_found", "message": "no such path"}', "application/json")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class LocalServer:
    def __init__(self) -> None:
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.paths = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.api_key = "local-key"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def paths(self) -> list[str]:
        return self._httpd.paths  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture(scope="module")
def local() -> Iterator[LocalServer]:
    server = LocalServer()
    yield server
    server.close()


def test_html_body_on_200_is_an_api_error_with_its_start(
    local: LocalServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    client = connect(local)
    with pytest.raises(APIError) as info:
        client.get_json("/html")
    assert info.value.status == 200
    assert "<!DOCTYPE html><html><head><title>Bad Gateway" in info.value.message
    assert "not JSON" in info.value.message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert fake_sleep == []


def test_html_502_is_retried_then_reported_with_its_body(
    local: LocalServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    local.paths.clear()
    client = connect(local, max_retries=2)
    with pytest.raises(APIError) as info:
        client.get_json("/bad-gateway")
    assert info.value.status == 502
    assert info.value.message.startswith("<!DOCTYPE html>")
    assert local.paths == ["/bad-gateway"] * 3
    assert fake_sleep == expected_backoff(2)


def test_body_of_the_wrong_shape_is_a_validation_error(
    local: LocalServer, connect: Callable[..., Client]
) -> None:
    client = connect(local)
    with pytest.raises(ValidationError, match=r"^response body: expected a JSON object, got list"):
        get_page(client, "customer_records", {})


def _raise_for_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    response.raise_for_status()  # a common session hook; it also takes requests' own route


@pytest.mark.parametrize("route", ["pooled", "requests"])
def test_a_body_that_cannot_be_decoded_is_an_api_error_that_hides_the_key(
    local: LocalServer, connect: Callable[..., Client], fake_sleep: list[float], route: str
) -> None:
    local.paths.clear()
    session = requests.Session()
    if route == "requests":
        session.hooks["response"].append(_raise_for_status)
    client = connect(local, api_key=SECRET, session=session, max_retries=3)
    with pytest.raises(APIError) as info:
        client.get_json("/gzip-junk")
    pooled = _transport.usable(client._route, local.url + "/gzip-junk")  # type: ignore[arg-type]
    assert pooled == (route == "pooled")
    session.close()
    error = info.value
    assert error.status == 200
    assert "could not be read (ContentDecodingError" in error.message
    assert local.paths == ["/gzip-junk"]  # no retry mends it
    assert fake_sleep == []
    # Not chained: the requests exception holds the prepared request, key header and all.
    assert error.__cause__ is None
    assert error.__context__ is None
    assert SECRET not in str(error)
    assert SECRET not in "".join(traceback.format_exception(error))


def test_other_requests_failures_are_api_errors_with_their_status(
    local: LocalServer, connect: Callable[..., Client], fake_sleep: list[float]
) -> None:
    # A session hook that raises requests.HTTPError: reported at once, with the response's status.
    session = requests.Session()
    session.hooks["response"].append(_raise_for_status)
    client = connect(local, api_key=SECRET, session=session)
    with pytest.raises(APIError, match=r"the request failed \(HTTPError: 404") as info:
        client.get_json("/nothing")
    session.close()
    assert info.value.status == 404
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert SECRET not in "".join(traceback.format_exception(info.value))
    assert fake_sleep == []


def test_redirect_is_not_followed(local: LocalServer, connect: Callable[..., Client]) -> None:
    client = connect(local)
    with pytest.raises(APIError, match="redirect") as info:
        client.get_json("/redirect")
    assert info.value.status == 302


# -- configuration -------------------------------------------------------------------------------


def test_no_key_anywhere_names_the_variable_and_sends_nothing(sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match=ENV_API_KEY):
        Client(base_url=sandbox.url)
    with pytest.raises(ValueError, match=ENV_API_KEY):
        Client("", base_url=sandbox.url)
    assert sandbox.requests == []


def test_env_var_fallbacks(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_API_KEY, sandbox.api_key)
    monkeypatch.setenv(ENV_BASE_URL, sandbox.url + "/")
    with Client() as client:
        assert client.base_url == sandbox.url
        assert len(get_page(client, "records", {"limit": "1"}).records) == 1
    assert len(sandbox.requests) == 1
    # An explicit argument beats the environment.
    with Client("other", base_url="https://example.org") as client:
        assert client.base_url == "https://example.org"
    monkeypatch.delenv(ENV_BASE_URL)
    with Client(environment="sandbox") as client:
        assert client.base_url == SANDBOX_URL
    with Client() as client:
        assert client.base_url == "https://api.1clickimpact.com"


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        msg = "a connection was attempted"
        raise AssertionError(msg)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("no_connections")
@pytest.mark.parametrize(
    "url", ["http://example.com", "http://10.0.0.1:8000", "http://localhost.example.com"]
)
def test_plain_http_to_a_remote_host_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match=r"^base_url: .*plain http.*allow_insecure=True"):
        Client("k", base_url=url)
    with Client("k", base_url=url, allow_insecure=True) as client:
        assert client.base_url == url


@pytest.mark.usefixtures("no_connections")
@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://127.9.9.9", "http://127.9.9.9"),
        ("HTTP://LocalHost:81", "http://localhost:81"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://[::ffff:127.0.0.1]", "http://[::ffff:127.0.0.1]"),
        ("https://proxy.example.com/impact/", "https://proxy.example.com/impact"),
    ],
)
def test_loopback_http_and_https_are_accepted(url: str, normalized: str) -> None:
    with Client("k", base_url=url) as client:
        assert client.base_url == normalized


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"base_url": "ftp://example.com"}, r"^base_url: 'ftp://example.com' .*http\(s\)"),
        ({"base_url": "example.com"}, r"^base_url: .*expected an http\(s\) URL"),
        ({"base_url": "https://"}, r"^base_url: .*expected an http\(s\) URL"),
        ({"base_url": "https://h:port"}, r"^base_url: .*expected an http\(s\) URL"),
        ({"base_url": "https://h/?a=1"}, r"^base_url: .*query or fragment"),
        ({"base_url": "https://u:pw@h"}, r"^base_url: credentials in the URL"),
        ({"environment": "staging"}, r"^environment: 'staging' .*'production', 'sandbox'$"),
        ({"timeout": 0}, r"^timeout: 0 .*> 0$"),
        ({"timeout": float("nan")}, r"^timeout: nan"),
        ({"timeout": True}, r"^timeout: True"),
        ({"max_retries": -1}, r"^max_retries: -1 .*int >= 0$"),
        ({"max_retries": 2.0}, r"^max_retries: 2.0"),
        (
            {"session": object()},
            r"^session: a value of type object is not accepted; expected a requests.Session",
        ),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        Client(SECRET, **kwargs)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("bad", ["key with space", "key\nInjected: 1", "clé", 42])
def test_malformed_key_is_refused_without_echoing_it(bad: object) -> None:
    with pytest.raises(ValueError, match="api_key") as info:
        Client(bad, base_url="https://example.org")  # type: ignore[arg-type]
    assert str(bad) not in str(info.value)


def test_surrounding_whitespace_in_the_key_is_stripped(sandbox: SandboxServer) -> None:
    with Client(f"  {sandbox.api_key}\n", base_url=sandbox.url) as client:
        assert get_page(client, "records", {"limit": "1"}).records


def test_repr_and_fingerprint_never_show_the_key() -> None:
    client = Client(SECRET, base_url="http://127.0.0.1:8000")
    assert repr(client) == (
        f"Client(base_url='http://127.0.0.1:8000', fingerprint='{client.fingerprint}')"
    )
    assert SECRET not in repr(client)
    assert SECRET not in repr(vars(client))
    digest = hashlib.sha256(f"http://127.0.0.1:8000\n{SECRET}".encode()).hexdigest()
    assert client.fingerprint == digest[:16]
    same = Client(SECRET, base_url="http://127.0.0.1:8000/")
    other_port = Client(SECRET, base_url="http://127.0.0.1:8001")
    other_key = Client(SECRET + "x", base_url="http://127.0.0.1:8000")
    assert client.fingerprint == same.fingerprint
    assert len({client.fingerprint, other_port.fingerprint, other_key.fingerprint}) == 3
    for c in (client, same, other_port, other_key):
        c.close()


# -- sessions ------------------------------------------------------------------------------------


class CountingAdapter(HTTPAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        return super().send(request, **kwargs)


class TrackedSession(requests.Session):
    closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()


def test_user_session_is_used_and_never_closed(sandbox: SandboxServer) -> None:
    session = TrackedSession()
    adapter = CountingAdapter()
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "my-app/1.0"
    with Client(sandbox.api_key, base_url=sandbox.url, session=session) as client:
        assert get_page(client, "records", {"limit": "2"}).records
    assert session.closed == 0
    assert len(adapter.sent) == 1
    sent = adapter.sent[0].headers
    assert sent["x-api-key"] == sandbox.api_key
    assert sent["User-Agent"] == "my-app/1.0"
    assert "x-api-key" not in session.headers  # the key is per request, not on the session
    # The session still works after the client is gone.
    assert session.get(f"{sandbox.url}/v1/records", headers={"x-api-key": sandbox.api_key}).ok
    session.close()


def test_own_session_is_pooled_identified_and_closed(sandbox: SandboxServer) -> None:
    client = Client(sandbox.api_key, base_url=sandbox.url)
    adapter = client._session.get_adapter(sandbox.url)
    assert adapter._pool_maxsize >= 16  # type: ignore[attr-defined]
    assert client._session.headers["User-Agent"].startswith("impactframe/")
    assert get_page(client, "records", {"limit": "1"}).records
    client.close()
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        get_page(client, "records", {})


def test_connections_are_kept_alive(local: LocalServer) -> None:
    with Client(local.api_key, base_url=local.url) as client:
        for _ in range(3):
            with pytest.raises(APIError):
                client.get_json("/nothing")
        manager = client._session.get_adapter(local.url).poolmanager  # type: ignore[attr-defined]
        # urllib3's RecentlyUsedContainer refuses plain iteration, hence .keys().
        pools = [manager.pools[key] for key in manager.pools.keys()]  # noqa: SIM118
        assert [pool.num_connections for pool in pools] == [1]  # three requests, one connection
        assert [pool.num_requests for pool in pools] == [3]
