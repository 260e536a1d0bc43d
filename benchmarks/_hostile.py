"""Hostile servers on loopback, shared by the tests and ``python -m benchmarks.soak --hostile``.

Two kinds, both stdlib on 127.0.0.1:

- `PageServer` (``http.server``) pages a fixed list of records like the API (both endpoints),
  with one misbehaviour (``bug``) switched on: ``ignore_sort``, ``utc_minus_5`` (days counted in
  UTC−5), ``reverse_pages``, ``ignore_dates``, ``ignore_filter``, ``ignore_email``, ``replay``
  (the same records with new cursors), ``empty_forever``, ``names_twice`` (the page's record
  list given twice in one body), ``stall_and_break`` (the first date window is told to come
  back in 10 minutes, the last one is refused). ``None`` is an honest server.
- `RawServer` (``socket``) answers each connection with a handler that writes raw bytes: a gzip
  bomb (`gzip_bomb`), an endless chunked body (`endless_chunks`), a drip (`drip`), an error body
  that echoes the key (`echo`).

Used by ``tests/test_trust_pages.py``, ``tests/test_hostile_transport.py`` and
``benchmarks/hostile.py``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "KEY",
    "PAGE_BUGS",
    "PageServer",
    "RawServer",
    "answer",
    "bomb",
    "drip",
    "drip_body",
    "echo",
    "endless_chunks",
    "gzip_bomb",
    "never_answer",
    "ok_json",
    "page_records",
    "serving",
]

#: The key `PageServer` accepts unless told another.
KEY = "hostile-key"

#: The misbehaviours `PageServer` knows.
PAGE_BUGS = (
    "ignore_sort", "utc_minus_5", "reverse_pages", "ignore_dates", "ignore_filter",
    "ignore_email", "replay", "empty_forever", "names_twice", "stall_and_break",
)  # fmt: skip


# -- a paging server that does not honour the query ----------------------------------------------


def page_records(n: int = 100) -> list[dict[str, Any]]:
    """``n`` customer records on ``n // 4`` days, each day's first one at 02:00Z (its day in
    UTC−5 is the day before), mixed types, customers with two e-mails."""
    out = []
    start = dt.datetime(2024, 3, 1, 2, tzinfo=dt.UTC)
    kinds = ("tree_planted", "waste_removed", "carbon_captured")
    for i in range(n):
        moment = start + dt.timedelta(days=i // 4, hours=5 * (i % 4))
        record: dict[str, Any] = {
            "user_id": f"U{i:04d}",
            "time_utc": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{i % 1000:03d}Z",
            kinds[i % 3]: 1 + i % 7,
            "customer": {
                "customer_id": f"C{i % 2}",
                "customer_email": f"c{i % 2}@example.com",
                "customer_name": "Ada",
            },
        }
        out.append(record)
    return out


class PageServer(http.server.ThreadingHTTPServer):
    """Pages ``records`` like the API (both endpoints), with one ``bug`` switched on.

    ``log`` holds the query parameters of every request. Start it with `serving`.
    """

    daemon_threads = True

    def __init__(
        self, records: list[dict[str, Any]], bug: str | None = None, key: str = KEY
    ) -> None:
        if bug is not None and bug not in PAGE_BUGS:
            msg = f"bug: {bug!r} is not accepted; expected one of {PAGE_BUGS} or None"
            raise ValueError(msg)
        super().__init__(("127.0.0.1", 0), _PageHandler)
        self.records = sorted(records, key=lambda r: r["time_utc"])
        self.bug = bug
        self.key = key
        self.log: list[dict[str, list[str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def serving(server: PageServer) -> Iterator[PageServer]:
    """Serve `server` from a thread for the ``with`` block, then shut it down."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _day(record: dict[str, Any], shift_hours: int) -> str:
    moment = dt.datetime.fromisoformat(record["time_utc"].replace("Z", "+00:00"))
    return (moment + dt.timedelta(hours=shift_hours)).date().isoformat()


class _PageHandler(http.server.BaseHTTPRequestHandler):
    server: PageServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in two writes: no 40 ms delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        self._send(status, json.dumps(body).encode(), headers)

    def do_GET(self) -> None:
        server, bug = self.server, self.server.bug
        parts = urlsplit(self.path)
        params = parse_qs(parts.query)
        server.log.append(params)
        if self.headers.get("x-api-key") != server.key:
            self._json(401, {"type": "key_error", "message": "API Key does not exist"})
            return
        key = "customer_records" if parts.path == "/v1/customer_records" else "user_records"
        one = {name: values[0] for name, values in params.items()}
        if bug == "stall_and_break" and "end_date" in one and "start_date" not in one:
            # The first window (open start): "come back in 10 minutes".
            self._json(503, {"type": "unavailable", "message": "later"}, {"Retry-After": "600"})
            return
        if bug == "stall_and_break" and "start_date" in one and "end_date" not in one:
            self._json(400, {"type": "validation_error", "message": "no"})  # the last window
            return
        rows = list(server.records)
        shift = -5 if bug == "utc_minus_5" else 0
        if bug != "ignore_dates":
            if "start_date" in one:
                rows = [r for r in rows if _day(r, shift) >= one["start_date"]]
            if "end_date" in one:
                rows = [r for r in rows if _day(r, shift) <= one["end_date"]]
        if bug != "ignore_filter" and "filter_by" in params:
            rows = [r for r in rows if any(kind in r for kind in params["filter_by"])]
        if bug != "ignore_email" and "customer_email" in one:
            rows = [r for r in rows if r["customer"]["customer_email"] == one["customer_email"]]
        if one.get("sort_order") == "desc" and bug != "ignore_sort":
            rows.reverse()
        limit = int(one.get("limit", "10"))
        cursor = one.get("cursor")
        start = int(base64.b64decode(cursor).decode().split(":")[0]) if cursor else 0
        number = int(base64.b64decode(cursor).decode().split(":")[1]) + 1 if cursor else 1
        if bug == "replay":
            start = 0
        page = rows[start : start + limit]
        if bug == "empty_forever":
            page = []
        if bug == "reverse_pages":
            page = page[::-1]
        if key == "user_records":  # the customer is the other endpoint's field
            page = [{k: v for k, v in r.items() if k != "customer"} for r in page]
        more = start + limit < len(rows) or bug in ("replay", "empty_forever")
        next_cursor = base64.b64encode(f"{start + limit}:{number}".encode()).decode()
        if bug == "names_twice":  # {"user_records": [...], "user_records": [], "cursor": ...}
            text = f'{{"{key}": {json.dumps(page)}, "{key}": []'
            text += f', "cursor": "{next_cursor}"}}' if more else "}"
            self._send(200, text.encode())
            return
        body: dict[str, Any] = {key: page}
        if more:
            body["cursor"] = next_cursor
        self._json(200, body)


# -- a raw TCP server: bombs, endless bodies, drips, echoes ------------------------------------


Handler = Callable[[socket.socket, bytes], None]


class RawServer:
    """A TCP server on 127.0.0.1: ``handler(conn, request)`` answers each connection, raw.

    ``requests`` holds the raw request bytes each connection sent (up to the blank line).
    """

    def __init__(self, handler: Handler, *, read_request: bool = True) -> None:
        self.handler = handler
        self.read_request = read_request
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            data = b""
            while self.read_request and b"\r\n\r\n" not in data:
                piece = conn.recv(65536)
                if not piece:
                    break
                data += piece
            self.requests.append(data)
            self.handler(conn, data)
        except OSError:
            pass  # the client went away (as it should, past a cap or a deadline)
        finally:
            conn.close()

    def close(self) -> None:
        self._listener.close()
        for conn in self._open:
            conn.close()


def answer(status: int, body: bytes, *headers: str) -> bytes:
    """A whole HTTP/1.1 response: the status line, ``Content-Length``, `headers`, `body`."""
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(head).encode() + body


def ok_json(conn: socket.socket, request: bytes) -> None:
    conn.sendall(answer(200, b'{"ok": true}', "Content-Type: application/json"))


def never_answer(conn: socket.socket, request: bytes) -> None:
    time.sleep(5)


def gzip_bomb(decoded_bytes: int, members: int = 1) -> bytes:
    """A gzip body of `decoded_bytes` spaces (1 GiB packs into about 1 MB).

    With ``members > 1`` the body is that many identical gzip members one after the other (a
    valid gzip stream, RFC 1952), built in a fraction of the time of one 1 GiB member.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    piece = b" " * (1 << 20)
    parts = [packer.compress(piece) for _ in range((decoded_bytes // members) >> 20)]
    return b"".join([*parts, packer.flush()]) * members


def bomb(body: bytes) -> Handler:
    """A handler answering 200 with the gzip `body` (from `gzip_bomb`)."""

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(answer(200, body, "Content-Encoding: gzip", "Content-Type: application/json"))

    return handler


def endless_chunks(conn: socket.socket, request: bytes) -> None:
    """A chunked body of ``[`` that never ends (until the client goes away)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n%s\r\n" % (65536, b"[" * 65536)
    for _ in range(100_000):  # 6.5 GB, if nobody stopped reading
        conn.sendall(piece)


def drip(interval: float, length: int = 1000) -> Handler:
    """A handler that declares a body of `length` bytes and sends one every `interval` s."""

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length)
        for _ in range(length):
            conn.sendall(b" ")
            time.sleep(interval)

    return handler


drip_body = drip(0.05)


def echo(status: int, make_body: Callable[[str], bytes]) -> Handler:
    """A handler answering `status` with ``make_body(the key the request sent)``."""

    def handler(conn: socket.socket, request: bytes) -> None:
        key = request.split(b"x-api-key: ", 1)[1].split(b"\r\n", 1)[0].decode()
        conn.sendall(answer(status, make_body(key)))

    return handler
