"""The sandbox's HTTP side: the request log, faults, authentication, routing, the handler.

`App.handle` answers one request: injected faults first (a gateway in front of the API), then
the key (on every path, known or not), then the route (`_routes`), whose function reads the
account (`_ledger`) and returns a `Reply`.
"""

from __future__ import annotations

import hmac
import logging
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._constants import API_KEY_HEADER
from ._dataset import Dataset
from ._faults import FaultPlan
from ._ledger import Ledger
from ._protocol import BadRequest, Call, Reply, error_body
from ._rate import TokenBucket
from ._routes import PATHS, resolve

__all__ = ["App", "LoggedRequest", "SandboxHTTPServer"]

logger = logging.getLogger("impactframe.sandbox")

#: The largest request body read (a POST's JSON is a few hundred bytes).
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class LoggedRequest:
    """One request the sandbox received.

    Attributes
    ----------
    method : str
        The HTTP method.
    path : str
        The URL path, without the query string.
    params : dict of str to list of str
        The decoded query parameters (``urllib.parse.parse_qs``, blank values kept).
    status : int or None
        The status sent, ``None`` when the connection was dropped.
    fault : str or None
        The injected fault kinds applied, joined by ``+`` (``"latency+status"``), or ``None``.
    records : int or None
        Number of records in the page sent, ``None`` for errors and status faults.

    Examples
    --------
    >>> import requests
    >>> from impactframe.sandbox import SandboxServer
    >>> with SandboxServer(n_records=5) as server:
    ...     _ = requests.get(f"{server.url}/v1/records?limit=2",
    ...                      headers={"x-api-key": server.api_key})
    ...     logged = server.requests[0]
    >>> logged.path, logged.params, logged.status, logged.records
    ('/v1/records', {'limit': ['2']}, 200, 2)
    """

    method: str
    path: str
    params: dict[str, list[str]]
    status: int | None
    fault: str | None
    records: int | None = None


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request's body, read whole (so a kept-alive connection stays in step); up to
    `MAX_BODY` bytes of a ``Content-Length`` body, no chunked bodies."""
    if handler.headers.get("Transfer-Encoding"):
        msg = "Chunked request bodies are not supported: send a Content-Length"
        raise BadRequest(411, "validation_error", msg)
    length = handler.headers.get("Content-Length")
    if length is None:
        return b""
    if not length.isdigit():
        msg = f"Content-Length must be a number of bytes, got {length!r}"
        raise BadRequest(400, "validation_error", msg)
    if int(length) > MAX_BODY:
        msg = f"The request body is larger than {MAX_BODY} bytes"
        raise BadRequest(413, "validation_error", msg)
    return handler.rfile.read(int(length))


@dataclass
class App:
    """What the sandbox answers: faults, authentication, routing, and the request log."""

    api_key: str
    ledger: Ledger
    plan: FaultPlan
    filter_after_limit: bool = False
    latency: float = 0.0
    rate: TokenBucket | None = None  # a gateway's rate limit: 429 + Retry-After past it
    log: deque[LoggedRequest] = field(default_factory=lambda: deque(maxlen=100_000))
    log_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def datasets(self) -> Mapping[str, Dataset]:
        """The records served now, by endpoint name."""
        return self.ledger.snapshot.datasets

    def handle(self, handler: Handler) -> None:
        """Answer one request: faults first (a gateway in front of the API), then the API."""
        url = urlsplit(handler.path)
        path = url.path
        params = parse_qs(url.query, keep_blank_values=True)
        try:
            request_body = read_body(handler)
        except BadRequest as exc:  # the connection is out of step: answer and close it
            self._log(handler.command, path, params, exc.status, None, None)
            headers = {"Content-Type": "application/json", "Connection": "close"}
            send(handler, exc.status, headers, error_body(exc.error_type, exc.message))
            handler.close_connection = True
            return
        faults = self.plan.take(path, "cursor" in params)
        delay = self.latency + sum(f.delay for f in faults if f.kind == "latency")
        if delay:
            time.sleep(delay)
        if self.rate is not None and (wait := self.rate.take()) is not None:
            self._log(handler.command, path, params, 429, "rate_limit", None)
            headers = {"Content-Type": "application/json", "Retry-After": str(wait)}
            send(handler, 429, headers, error_body("rate_limit", "Too many requests"))
            return
        fault = next((f for f in faults if f.kind != "latency"), None)
        label = "+".join(f.kind for f in faults) or None
        kind = fault.kind if fault is not None else None
        if kind == "drop":
            self._log(handler.command, path, params, None, label, None)
            handler.close_connection = True  # nothing written: the client sees a dropped socket
            return
        count: int | None = None
        if fault is not None and kind == "status":
            status, headers, body = fault.response()
        else:
            headers = {"Content-Type": "application/json"}
            try:
                key = handler.headers.get(API_KEY_HEADER)
                reply = self.answer(
                    handler.command, path, params, key, request_body, repeat=kind == "repeat"
                )
            except BadRequest as exc:
                status, body = exc.status, error_body(exc.error_type, exc.message)
                headers.update(exc.headers)
            else:
                status, body, count = reply.status, reply.body, reply.count
                headers.update(reply.headers)
        # Log before sending: a client that got its answer must find the request in the log.
        self._log(handler.command, path, params, status, label, count)
        send(handler, status, headers, body, truncate=kind == "truncate")

    def answer(
        self,
        method: str,
        path: str,
        params: dict[str, list[str]],
        key: str | None,
        body: bytes = b"",
        *,
        repeat: bool = False,
    ) -> Reply:
        """The answer to a request no status/drop fault intercepted."""
        # The key first, on every path, known or not: an unknown key learns nothing of the API.
        if key is None or not hmac.compare_digest(
            key.encode("utf-8", "surrogateescape"), self.api_key.encode("utf-8", "surrogateescape")
        ):
            raise BadRequest(401, "key_error", "API Key does not exist")
        found = resolve(path)
        if found is None:
            paths = ", ".join(PATHS)
            raise BadRequest(404, "not_found", f"No such endpoint {path!r}; endpoints: {paths}")
        allowed, endpoint, path_args = found
        if method != allowed:
            msg = f"Method {method!r} is not supported on {path}; it takes {allowed}"
            raise BadRequest(501, "method_not_allowed", msg, {"Allow": allowed})
        call = Call(self.ledger, params, body, path_args, repeat, self.filter_after_limit)
        return endpoint(call)

    def _log(
        self,
        method: str,
        path: str,
        params: dict[str, list[str]],
        status: int | None,
        fault: str | None,
        count: int | None,
    ) -> None:
        entry = LoggedRequest(method, path, params, status, fault, count)
        with self.log_lock:
            self.log.append(entry)
        logger.debug("%s %s %s -> %s (fault: %s)", method, path, params, status, fault)


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    truncate: bool = False,
) -> None:
    """Write one response; ``truncate`` announces the full length but sends half and closes."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body[: len(body) // 2] if truncate else body)
    if truncate:
        handler.close_connection = True


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; everything it does goes through :class:`App`."""

    protocol_version = "HTTP/1.1"
    server_version = "impactframe-sandbox"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body are two writes: do not wait for an ACK
    server: SandboxHTTPServer

    def version_string(self) -> str:
        """The ``Server`` header."""
        return self.server_version

    def do_GET(self) -> None:
        """Serve a request (GET, or the methods below: the key is checked before the method)."""
        try:
            self.server.app.handle(self)
        except OSError as exc:  # the client went away mid-answer
            logger.debug("client %s disconnected: %r", self.client_address, exc)
            self.close_connection = True

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unsupported method) as API-style JSON."""
        self.close_connection = True
        if code == 501:
            error_type, text = "method_not_allowed", f"Method {self.command!r} is not supported"
        else:
            error_type, text = "validation_error", message or "Bad request"
        headers = {"Content-Type": "application/json", "Connection": "close"}
        try:
            send(self, code, headers, error_body(error_type, text))
        except OSError as exc:
            logger.debug("client %s disconnected: %r", self.client_address, exc)

    def log_message(self, format: str, *args: Any) -> None:
        """Log to ``impactframe.sandbox`` at DEBUG instead of printing to stderr."""
        logger.debug("%s - " + format, self.address_string(), *args)


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that can close its keep-alive connections when stopped."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: App, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup of the host (slow on some hosts)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection so that :meth:`close_connections` can end it."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget a connection its handler has finished with, then close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection, waking handler threads blocked in a read."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:  # already closed by its handler thread meanwhile
                logger.debug("closing a connection: %r", exc)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client disconnects are routine (DEBUG); anything else is a sandbox bug (ERROR)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            logger.debug("connection from %s ended: %r", client_address, exc)
        else:
            logger.error("error while serving %s", client_address, exc_info=True)
