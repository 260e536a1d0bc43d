"""The client against servers and networks that misbehave (SPEC §4, §10).

Each test reproduces an attack on loopback (servers from `benchmarks._hostile`): a proxy
listener that the environment points to, a gzip bomb, an endless chunked body, a body or status
line dripped a byte at a time, an error body that echoes the key after 199 emoji, a refused
port, an unknown host, TLS to a plain server. What a server cannot produce (a KeyboardInterrupt
or a MemoryError in the middle of a read) is raised by a patched ``socket.recv_into``; then
every local of every frame of the traceback is searched, by ``repr`` as Sentry, ``rich`` and
``pytest -l`` record them.

``route`` runs a test on both send paths: the client's own session (its urllib3 pool) and a
caller's ``requests.Session`` (``session.get``).
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import impactframe as ifr
from benchmarks._hostile import RawServer as Hostile
from benchmarks._hostile import (
    answer,
    bomb,
    drip_body,
    echo,
    endless_chunks,
    gzip_bomb,
    never_answer,
    ok_json,
)
from impactframe._constants import ENV_API_KEY, ENV_BASE_URL
from impactframe._paging._cap import get_page, walk_query
from impactframe.client import Client
from impactframe.client import _pooled as _transport
from impactframe.client._secrets import MaskedKey, _Secret
from impactframe.errors import APIError, TransportError
from impactframe.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-hostile-DO-NOT-LEAK-5e6f7a8b9c"
TAIL = KEY[-10:]
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                   "all_proxy", "NO_PROXY", "no_proxy")  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARIABLES, ENV_API_KEY, ENV_BASE_URL):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hostile() -> Iterator[Callable[[Callable[[socket.socket, bytes], None]], Hostile]]:
    made: list[Hostile] = []

    def make(handler: Callable[[socket.socket, bytes], None], **kwargs: Any) -> Hostile:
        made.append(Hostile(handler, **kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture(params=["own session", "caller's session"])
def route(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Client keywords for one send path: {} (the pooled route) or a caller's session."""
    if request.param == "own session":
        yield {}
    else:
        with requests.Session() as session:
            yield {"session": session}


def no_sleep(seconds: float) -> None:
    pass


# -- 1. the key never goes through an environment proxy to a loopback host ----------------------


def proxy_env(monkeypatch: pytest.MonkeyPatch, proxy: Hostile) -> None:
    for name in PROXY_VARIABLES[:6]:
        monkeypatch.setenv(name, proxy.url)


def test_loopback_never_goes_through_an_environment_proxy(
    hostile: Any, route: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = hostile(ok_json)  # a proxy that would answer, and read the key
    server = hostile(ok_json)
    proxy_env(monkeypatch, proxy)
    with Client(KEY, base_url=server.url, **route) as client:
        assert client.get_json("/v1/records") == {"ok": True}
        assert client.get_json("/v1/records") == {"ok": True}
        if not route:  # the environment no longer pushes loopback off the pooled route
            assert isinstance(client._route, _transport.Route)
    assert proxy.connections == 0
    assert len(server.requests) == 2
    assert KEY.encode() in server.requests[0]


def test_a_proxy_set_on_the_callers_session_is_the_callers_choice(
    hostile: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = hostile(ok_json)
    proxy_env(monkeypatch, proxy)
    with requests.Session() as session:
        session.proxies = {"http": proxy.url}
        with Client(KEY, base_url="http://127.0.0.1:9", session=session) as client:
            assert client.get_json("/v1/records") == {"ok": True}
    assert proxy.requests[0].startswith(b"GET http://127.0.0.1:9/v1/records HTTP/1.1")


def test_other_hosts_keep_the_environment_proxy(
    hostile: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = hostile(lambda conn, request: conn.sendall(b"HTTP/1.1 502 No\r\n\r\n"))  # no tunnel
    proxy_env(monkeypatch, proxy)
    with Client(KEY, base_url="https://api.example.invalid", max_retries=0) as client:
        with pytest.raises(TransportError) as info:
            client.get_json("/v1/records")
        assert client._route is None  # requests, with the proxy, stays in charge
    assert proxy.requests[0].startswith(b"CONNECT api.example.invalid:443 HTTP/1.")
    assert KEY.encode() not in b"".join(proxy.requests)  # the key would travel in the tunnel
    assert info.value.reason == "proxy"
    assert "HTTPS_PROXY" in str(info.value)


def test_the_cli_never_sends_the_key_to_an_environment_proxy(hostile: Any, tmp_path: Path) -> None:
    proxy = hostile(ok_json)
    environment = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    environment |= {name: proxy.url for name in PROXY_VARIABLES[:6]}
    environment["PYTHONPATH"] = str(ROOT)
    with SandboxServer(n_records=30, n_customer_records=0, api_key=KEY) as server:
        environment[ENV_API_KEY] = KEY
        out = tmp_path / "r.csv"
        result = subprocess.run(
            [sys.executable, "-m", "impactframe", "fetch", "records", "--out", str(out),
             "--base-url", server.url],
            env=environment, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        served = len(server.requests)
    assert result.returncode == 0, result.stderr
    assert proxy.connections == 0
    assert served >= 1
    assert len(out.read_text().splitlines()) == 31


# -- 2. a cap on the decoded body ---------------------------------------------------------------


BOMB = gzip_bomb(256 << 20)  # 256 MiB of spaces in about 250 KB


def test_a_gzip_bomb_stops_at_the_cap_with_bounded_memory(
    hostile: Any, route: dict[str, Any]
) -> None:
    assert len(BOMB) < 300_000
    server = hostile(bomb(BOMB))
    with Client(KEY, base_url=server.url, max_body_bytes=4 << 20, **route) as client:
        client._sleep = no_sleep
        tracemalloc.start()
        try:
            with pytest.raises(TransportError) as info:
                client.get_json("/v1/records")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 16 << 20, peak  # the body would be 256 MiB; the cap is 4 MiB
    error = info.value
    assert (error.reason, error.status, error.attempts) == ("too_large", 200, 1)
    assert len(server.requests) == 1  # not retried: it would only repeat
    assert f"from {server.host} is larger than max_body_bytes=4194304 (1 try" in str(error)
    assert "raise max_body_bytes=" in str(error)


def test_an_endless_chunked_body_stops_at_the_cap(hostile: Any, route: dict[str, Any]) -> None:
    server = hostile(endless_chunks)
    started = time.monotonic()
    with (
        Client(KEY, base_url=server.url, max_body_bytes=2 << 20, timeout=5, **route) as client,
        pytest.raises(TransportError, match="larger than max_body_bytes=2097152") as info,
    ):
        client.get_json("/v1/records")
    assert time.monotonic() - started < 5
    assert info.value.reason == "too_large"


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    hostile: Any, route: dict[str, Any]
) -> None:
    def huge(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n[")
        time.sleep(3)  # reading it would wait here

    server = hostile(huge)
    started = time.monotonic()
    with (
        Client(KEY, base_url=server.url, max_body_bytes=1 << 20, **route) as client,
        pytest.raises(TransportError) as info,
    ):
        client.get_json("/v1/records")
    assert time.monotonic() - started < 1.5
    assert info.value.reason == "too_large"


def test_bodies_within_the_cap_and_the_defaults(hostile: Any, route: dict[str, Any]) -> None:
    body = json.dumps({"n": list(range(100_000))}).encode()  # about 600 KB
    zipped = gzip.compress(body)
    server = hostile(
        lambda conn, request: conn.sendall(answer(200, zipped, "Content-Encoding: gzip"))
    )
    with Client(KEY, base_url=server.url, max_body_bytes=len(body), **route) as client:
        assert client.get_json("/v1/records") == {"n": list(range(100_000))}
    with Client(KEY, base_url=server.url) as client:
        assert (client.max_body_bytes, client.deadline) == (256 << 20, 90.0)
    assert Client(KEY, base_url=server.url, timeout=2).deadline == 6.0
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match=r"^max_body_bytes: .* is not accepted"):
            Client(KEY, base_url=server.url, max_body_bytes=bad)  # type: ignore[arg-type]
    for bad in (0, -1.0, float("inf"), True, "1"):
        with pytest.raises(ValueError, match=r"^deadline: .* is not accepted"):
            Client(KEY, base_url=server.url, deadline=bad)  # type: ignore[arg-type]


# -- 3. a total deadline per request ------------------------------------------------------------


def test_a_dripped_body_ends_at_the_deadline(hostile: Any, route: dict[str, Any]) -> None:
    server = hostile(drip_body)
    started = time.monotonic()
    with (
        Client(KEY, base_url=server.url, timeout=1, deadline=1.0, **route) as client,
        pytest.raises(TransportError) as info,
    ):
        client.get_json("/v1/records")
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 2.5, elapsed  # `timeout` alone never fires: a byte every 0.05 s
    error = info.value
    assert (error.reason, error.status, error.attempts) == ("deadline", 200, 1)
    assert len(server.requests) == 1
    assert "did not finish within deadline=1 s" in str(error)


def test_a_dripped_status_line_ends_at_the_deadline(hostile: Any) -> None:
    def drip_head(conn: socket.socket, request: bytes) -> None:
        for byte in b"HTTP/1.1 200 OK\r\n\r\n":  # the status line takes 3 s
            conn.sendall(bytes([byte]))
            time.sleep(0.15)

    server = hostile(drip_head)
    started = time.monotonic()
    with (
        Client(KEY, base_url=server.url, timeout=1, deadline=1.0) as client,
        pytest.raises(TransportError) as info,
    ):
        client.get_json("/v1/records")
    assert time.monotonic() - started < 2.5
    assert (info.value.reason, info.value.status) == ("deadline", None)


def test_after_a_deadline_the_client_and_its_pool_still_work(hostile: Any) -> None:
    calls: list[int] = []

    def first_drips(conn: socket.socket, request: bytes) -> None:
        calls.append(1)
        if len(calls) == 1:
            drip_body(conn, request)
        else:
            ok_json(conn, request)

    server = hostile(first_drips)
    with Client(KEY, base_url=server.url, timeout=1, deadline=0.5) as client:
        with pytest.raises(TransportError, match="deadline"):
            client.get_json("/v1/records")
        for _ in range(3):  # kept-alive connection, each request with its own deadline
            assert client.get_json("/v1/records") == {"ok": True}
            time.sleep(0.2)
        time.sleep(0.5)  # past the old deadlines: nothing of ours is cut
        assert client.get_json("/v1/records") == {"ok": True}


# -- 4. the key in no frame's locals ------------------------------------------------------------


def _texts(value: object, depth: int = 0) -> Iterator[str]:
    yield repr(value)
    if depth < 5:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from _texts(key, depth + 1)
                yield from _texts(item, depth + 1)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                yield from _texts(item, depth + 1)


def leaking_frames(exc: BaseException) -> tuple[list[str], list[str]]:
    """(the frames of the traceback, those whose locals show the key or its tail)."""
    names: list[str] = []
    found: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        for frame, _ in traceback.walk_tb(current.__traceback__):
            names.append(frame.f_code.co_name)
            for name, value in frame.f_locals.items():
                if any(KEY in text or TAIL in text for text in _texts(value)):
                    found.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}: {name}")
        current = current.__context__
    return names, found


def raise_in_read(
    monkeypatch: pytest.MonkeyPatch, port: int, error: type[BaseException], on_call: int
) -> None:
    """Make the client's ``on_call``-th socket read to ``port`` raise `error`."""
    real = socket.socket.recv_into
    calls = [0]

    def recv_into(self: socket.socket, *args: Any, **kwargs: Any) -> int:
        try:
            to_port = self.getpeername()[1]
        except OSError:
            to_port = None
        if to_port == port:  # the client's side (the server's peer is an ephemeral port)
            calls[0] += 1
            if calls[0] == on_call:
                raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "recv_into", recv_into)


def slow_body(conn: socket.socket, request: bytes) -> None:
    body = b'{"user_records": [], "cursor": null}'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    time.sleep(0.3)  # the headers and the body come in separate reads
    conn.sendall(body)


@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError])
@pytest.mark.parametrize(("on_call", "frame"), [(1, "getresponse"), (2, "read_body")])
def test_no_frame_holds_the_key_when_a_read_is_interrupted(
    hostile: Any,
    route: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    error: type[BaseException],
    on_call: int,
    frame: str,
) -> None:
    server = hostile(slow_body)
    with Client(KEY, base_url=server.url, **route) as client:
        raise_in_read(monkeypatch, server.port, error, on_call)
        with pytest.raises(error) as info:
            get_page(client, "records", {"limit": "5"})
    names, found = leaking_frames(info.value)
    assert frame in names  # interrupted where meant: waiting for the status line, or mid-body
    assert "_exchange" in names
    assert found == []


@pytest.fixture
def keyed_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(n_records=600, n_customer_records=0, api_key=KEY) as server:
        yield server


def test_no_frame_holds_the_key_when_iter_pages_is_interrupted(
    keyed_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from impactframe._params import normalize_query

    client = Client(KEY, base_url=keyed_sandbox.url)
    raise_in_read(monkeypatch, int(keyed_sandbox.url.rsplit(":", 1)[1]), KeyboardInterrupt, 3)
    with pytest.raises(KeyboardInterrupt) as info:
        for _ in walk_query(client, "records", normalize_query("records", page_size=100)):
            pass
    client.close()
    names, found = leaking_frames(info.value)
    assert "_exchange" in names
    assert found == []


@pytest.mark.parametrize("call", ["export_parquet", "load_records"])
def test_no_frame_holds_the_key_when_a_load_or_export_is_interrupted(
    keyed_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, call: str
) -> None:
    monkeypatch.setenv(ENV_API_KEY, KEY)  # the key from the environment, as documented
    raise_in_read(monkeypatch, int(keyed_sandbox.url.rsplit(":", 1)[1]), KeyboardInterrupt, 4)
    if call == "export_parquet":
        run = lambda: ifr.export_parquet(  # noqa: E731
            tmp_path / "out", "records", page_size=100, base_url=keyed_sandbox.url, progress=False
        )
    else:
        run = lambda: ifr.load_records(  # noqa: E731
            page_size=100, base_url=keyed_sandbox.url, progress=False, concurrency=1, cache=False
        )
    with pytest.raises(KeyboardInterrupt) as info:
        run()
    names, found = leaking_frames(info.value)
    assert call in names
    assert "_exchange" in names
    assert found == []


def test_the_key_object_masks_itself() -> None:
    secret = _Secret(KEY)
    header = {"x-api-key": secret.get()}
    assert isinstance(secret.get(), MaskedKey)
    for text in (repr(header), str(header), f"{secret.get()}", str(secret), repr(secret)):
        assert KEY not in text
        assert TAIL not in text
    assert secret.get() == KEY
    assert secret.get().encode() == KEY.encode()


# -- 5. and 7. masking: first mask, then shorten; short keys only as whole tokens --------------


def no_part_of(key: str, text: str) -> bool:
    return not any(key[i : i + 4] in text for i in range(len(key) - 3))


@pytest.mark.parametrize("emoji", [197, 198, 199, 200, 201])
@pytest.mark.parametrize(
    ("status", "shape"),
    [(400, "text"), (400, "json message"), (200, "not json"), (502, "html")],
)
def test_an_echoed_key_is_masked_before_the_message_is_shortened(
    hostile: Any, emoji: int, status: int, shape: str
) -> None:
    def body(key: str) -> bytes:
        text = "\N{GRINNING FACE}" * emoji + key + " and more"
        if shape == "json message":
            return json.dumps({"type": "key_error", "message": text}).encode()
        if shape == "not json":
            return b'{"echo": "' + text.encode()
        if shape == "html":
            return f"<html>{text}</html>".encode()
        return text.encode()

    server = hostile(echo(status, body))
    with Client(KEY, base_url=server.url, max_retries=0) as client, pytest.raises(APIError) as info:
        client.get_json("/v1/records")
    shown = f"{info.value} {info.value!r}"
    assert no_part_of(KEY, shown), shown[-60:]


def test_a_key_echoed_with_json_escapes_is_masked(hostile: Any) -> None:
    key = 'sk-"quoted"-and-\\-0123456789'
    escaped = json.dumps(key)[1:-1].encode()
    server = hostile(lambda conn, request: conn.sendall(answer(200, b'{"k": "' + escaped)))
    with (
        Client(key, base_url=server.url, max_retries=0) as client,
        pytest.raises(APIError, match="not JSON") as info,
    ):
        client.get_json("/v1/records")
    assert "***" in str(info.value)
    assert escaped.decode() not in str(info.value)
    assert "0123456789" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "message", "shown"),
    [
        ("net", "network error for key net.", "network error for key ***."),
        ("net", "key=net; networks: net-net", "key=***; networks: net-net"),
        ("k", "bad key k (check the key)", "bad key *** (check the key)"),
        ("a1", "a1b2 is not a1", "a1b2 is not ***"),
        # At 12 characters or more a key is masked wherever it is, even inside a word.
        ("abcdefghijkl", "xxabcdefghijklyy abcdefghijkl", "xx***yy ***"),
    ],
)
def test_a_short_key_is_masked_only_as_a_whole_token(
    hostile: Any, key: str, message: str, shown: str
) -> None:
    body = json.dumps({"type": "validation_error", "message": message}).encode()
    server = hostile(lambda conn, request: conn.sendall(answer(400, body)))
    with Client(key, base_url=server.url, max_retries=0) as client, pytest.raises(APIError) as info:
        client.get_json("/v1/records")
    assert info.value.message == shown


# -- 6. TransportError: plain words, fast for what a retry does not mend ------------------------


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def test_a_refused_connection_fails_fast_in_plain_words() -> None:
    port = closed_port()
    started = time.monotonic()
    with (
        Client(KEY, base_url=f"http://127.0.0.1:{port}") as client,
        pytest.raises(TransportError) as info,
    ):  # real sleeps, 5 retries
        client.get_json("/v1/records")
    assert time.monotonic() - started < 2
    error = info.value
    assert isinstance(error, ifr.APIError)
    assert ifr.TransportError is TransportError
    assert (error.reason, error.attempts, error.status) == ("refused", 2, None)
    assert str(error).startswith(
        f"no response: GET /v1/records: connection refused by 127.0.0.1:{port} (2 tries in "
    )
    assert "check that the server is running" in str(error)
    assert "Max retries" not in str(error)
    assert "HTTPConnectionPool" not in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None


def test_an_unknown_host_fails_fast_in_plain_words() -> None:
    started = time.monotonic()
    with (
        Client(KEY, base_url="https://no-such-host.invalid") as client,
        pytest.raises(TransportError) as info,
    ):
        client.get_json("/v1/records")
    assert time.monotonic() - started < 3
    assert (info.value.reason, info.value.attempts) == ("dns", 2)
    assert "unknown host no-such-host.invalid (the name does not resolve)" in str(info.value)
    assert "check base_url's host name" in str(info.value)


def test_tls_to_a_plain_server_fails_fast_in_plain_words(hostile: Any) -> None:
    # Answers in plain HTTP at once, without waiting for a request: the ClientHello gets text.
    server = hostile(
        lambda conn, request: conn.sendall(b"HTTP/1.1 400 X\r\n\r\n"), read_request=False
    )
    started = time.monotonic()
    with (
        Client(KEY, base_url=f"https://{server.host}") as client,
        pytest.raises(TransportError) as info,
    ):
        client.get_json("/v1/records")
    assert time.monotonic() - started < 2
    assert (info.value.reason, info.value.attempts) == ("tls", 2)
    assert f"TLS with {server.host} failed" in str(info.value)
    assert "CA bundle" in str(info.value)


def test_timeouts_keep_their_retries(hostile: Any, route: dict[str, Any]) -> None:
    server = hostile(never_answer)
    waits: list[float] = []
    with Client(KEY, base_url=server.url, timeout=0.2, max_retries=2, **route) as client:
        client._sleep = waits.append
        with pytest.raises(TransportError) as info:
            client.get_json("/v1/records")
    assert (info.value.reason, info.value.attempts) == ("timeout", 3)
    assert len(waits) == 2
    assert server.connections == 3
    assert f"{server.host} timed out (no data for 0.2 s) (3 tries" in str(info.value)
    assert "raise timeout=" in str(info.value)
