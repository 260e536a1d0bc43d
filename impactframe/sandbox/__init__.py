"""A faithful local fake of the 1ClickImpact Records API, for offline use and tests (SPEC §5).

``SandboxServer`` serves ``/v1/records`` and ``/v1/customer_records`` on loopback, from generated
data (:func:`generate_records`) or from records you give it, with the API's parameters, errors,
DynamoDB-style cursors, and faults injected on request (:class:`Fault`).

Behaviour worth knowing (the real API's where known, the sandbox's choices otherwise):

- Unknown path → 404 ``not_found``; missing or wrong ``x-api-key`` → 401 ``key_error``; a bad
  parameter → 400 ``validation_error``: an unknown parameter (``customer_email`` is one on
  ``/v1/records``) or a repeated one (other than ``filter_by``), an unknown ``filter_by``, a
  malformed or impossible date, ``start_date`` after ``end_date``, ``limit`` outside 0..1000, a
  ``sort_order`` other than asc/desc, a cursor that is not base64 JSON of exactly
  ``createdOn``/``userID`` (and ``seq``), an empty ``customer_email``. Checks run in that order;
  every error body is ``{"type": ..., "message": ...}``.
- Records are served sorted by ``(time_utc, user_id)`` (``desc``: exactly reversed); dates are
  inclusive UTC days; ``limit`` defaults to 10; ``limit=0`` gives an empty, final page.
- The cursor is standard base64 (with ``+``, ``/``, ``=``) of ``{"createdOn", "userID"}``, the
  last record's key, plus ``"seq"`` only when several records share that key. A raw, unencoded
  ``+`` (which arrives as a space) is accepted too. The last page has no ``cursor`` key.
- ``filter_by`` is applied before ``limit`` (a cursor is sent exactly when more matching records
  follow) unless ``filter_after_limit=True``: then a page scans ``limit`` records of the range
  (dates, ``customer_email``, cursor) and filters them afterwards, so pages may be short or empty
  and any page that scanned ``limit`` records carries a cursor, even when nothing follows.
- Faults apply before anything else, like a failing gateway in front of the API: ``status`` and
  ``drop`` faults answer (or drop) before authentication and validation; ``latency``,
  ``truncate`` and ``repeat`` wrap the normal answer (which may be a 401 or 400).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import socket
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from .._params import check_choice, reject
from ._data import generate_records
from ._faults import FAULT_KINDS, RATE_FAULT_KINDS, Fault, FaultPlan, check_rate_kinds
from ._rate import TokenBucket
from ._server import App, Dataset, LoggedRequest, SandboxHTTPServer, encode_cursor

__all__ = [
    "DEFAULT_FAULT_KINDS",
    "FAULT_KINDS",
    "RATE_FAULT_KINDS",
    "Fault",
    "LoggedRequest",
    "SandboxServer",
    "encode_cursor",
    "generate_records",
]

#: Rate-mode kinds used unless ``fault_kinds`` says otherwise.
DEFAULT_FAULT_KINDS = ("429", "500", "502", "503", "drop", "truncate", "repeat")
_ENDPOINT_NAMES = ("records", "customer_records")


class SandboxServer:
    """A local, threaded HTTP/1.1 server that behaves like the Records API.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). It listens on a
    loopback address in a daemon thread; keep-alive connections are closed by :meth:`stop`.

    Parameters
    ----------
    records, customer_records : iterable of dict, optional
        Records to serve on ``/v1/records`` and ``/v1/customer_records``, in the API's JSON
        shape, served as given (even malformed ones, to test validation) and sorted by
        ``(time_utc, user_id)``. ``None`` generates them (see :func:`generate_records`); ``[]``
        serves nothing.
    seed : int, default 0
        Seed of the generated data.
    n_records, n_customer_records : int, default 2000
        Number of generated records per endpoint, ≥ 0.
    api_key : str, default "sandbox-key"
        The only ``x-api-key`` accepted.
    host : str, default "127.0.0.1"
        Address to listen on; a loopback address (``127.0.0.1``, ``::1``, ``localhost``)
        unless ``allow_remote=True``.
    port : int, default 0
        Port to listen on; 0 picks a free one (read it from :attr:`url`).
    filter_after_limit : bool, default False
        Apply ``filter_by`` after ``limit``, DynamoDB style (short and empty pages with a cursor).
        Also settable on a running server.
    fault_rate : float, default 0.0
        Probability, in [0, 1], that a request without an injected fault gets a random one.
    fault_kinds : sequence of str, default :data:`DEFAULT_FAULT_KINDS`
        Kinds the rate mode picks from, uniformly: ``"429"`` (with ``Retry-After: 0``),
        ``"500"``, ``"502"``, ``"503"``, ``"504"``, ``"drop"``, ``"truncate"``, ``"repeat"``
        (``repeat`` only hits requests with a cursor).
    fault_seed : int, default 0
        Seed of the rate mode; the same sequence of requests gets the same faults.
    latency : float, default 0.0
        Seconds added to every request.
    rate_limit : float, optional
        Requests per second let through, as a gateway's token bucket (bursts of one second's
        worth); past it, 429 with ``Retry-After`` (logged with the fault ``"rate_limit"``).
    allow_remote : bool, default False
        Allow a non-loopback ``host``. The sandbox is a test server: only for containers.

    Raises
    ------
    ValueError
        Any argument out of range, naming the argument and the accepted values.

    Examples
    --------
    >>> import requests
    >>> with SandboxServer(n_records=25, n_customer_records=0) as server:
    ...     response = requests.get(
    ...         server.url + "/v1/records",
    ...         params={"limit": 10, "filter_by": ["tree_planted", "waste_removed"]},
    ...         headers={"x-api-key": server.api_key},
    ...     )
    ...     statuses = [entry.status for entry in server.requests]
    >>> response.status_code, statuses, "cursor" in response.json()
    (200, [200], True)
    """

    def __init__(
        self,
        records: Iterable[Mapping[str, Any]] | None = None,
        customer_records: Iterable[Mapping[str, Any]] | None = None,
        *,
        seed: int = 0,
        n_records: int = 2000,
        n_customer_records: int = 2000,
        api_key: str = "sandbox-key",
        host: str = "127.0.0.1",
        port: int = 0,
        filter_after_limit: bool = False,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = DEFAULT_FAULT_KINDS,
        fault_seed: int = 0,
        latency: float = 0.0,
        rate_limit: float | None = None,
        allow_remote: bool = False,
    ) -> None:
        _check_int(seed, "seed")
        _check_int(fault_seed, "fault_seed")
        _check_count(n_records, "n_records")
        _check_count(n_customer_records, "n_customer_records")
        if not isinstance(api_key, str) or not api_key or api_key != api_key.strip():
            accepted = "a non-empty string without surrounding whitespace"
            reject("api_key", api_key, accepted, shown="this key (not echoed)")
        self._host, self._bind_host = _check_host(host, allow_remote)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            reject("port", port, "an int between 0 and 65535 (0: any free port)")
        _check_bool(filter_after_limit, "filter_after_limit")
        if not _is_number(fault_rate) or not 0.0 <= fault_rate <= 1.0:
            reject("fault_rate", fault_rate, "a probability between 0 and 1")
        kinds = check_rate_kinds(fault_kinds)
        if fault_rate and not kinds:
            accepted = f"some of {', '.join(RATE_FAULT_KINDS)} when fault_rate > 0"
            reject("fault_kinds", fault_kinds, accepted)
        if not _is_number(latency) or latency < 0:
            reject("latency", latency, "a finite number of seconds >= 0")
        if records is None:
            records = generate_records(n_records, seed=seed)
        if customer_records is None:
            customer_records = generate_records(n_customer_records, seed=seed, customers=True)
        self._port = port
        self._app = App(
            api_key=api_key,
            datasets={
                "records": Dataset(records, name="records"),
                "customer_records": Dataset(customer_records, name="customer_records"),
            },
            plan=FaultPlan(float(fault_rate), kinds, fault_seed),
            filter_after_limit=filter_after_limit,
            latency=float(latency),
            rate=None if rate_limit is None else TokenBucket(rate_limit),
        )
        self._httpd: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start listening and serving in a daemon thread; returns the server itself.

        Raises
        ------
        RuntimeError
            The server is already running.
        OSError
            The address cannot be bound (e.g. the port is taken).

        Examples
        --------
        >>> server = SandboxServer(n_records=0, n_customer_records=0).start()
        >>> server.url.startswith("http://127.0.0.1:")
        True
        >>> server.stop()
        """
        with self._state_lock:
            if self._httpd is not None:
                msg = "the sandbox is already running"
                raise RuntimeError(msg)
            family = socket.AF_INET6 if ":" in self._bind_host else socket.AF_INET
            httpd = SandboxHTTPServer((self._bind_host, self._port), self._app, family)
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},  # how fast stop() is noticed
                name=f"impactframe-sandbox-{httpd.server_port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop serving and close every connection, keep-alive ones included; idempotent.

        Examples
        --------
        >>> server = SandboxServer(n_records=0, n_customer_records=0).start()
        >>> server.stop(); server.stop(); server.running
        False
        """
        with self._state_lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        sizes = ", ".join(f"{name}={len(self._app.datasets[name])}" for name in _ENDPOINT_NAMES)
        return f"SandboxServer({where}, {sizes})"

    # -- properties -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._httpd is not None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:49152`` (no trailing slash)."""
        httpd = self._httpd
        if httpd is None:
            msg = "the sandbox is not running: call start() or use it in a with block"
            raise RuntimeError(msg)
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{httpd.server_port}"

    @property
    def api_key(self) -> str:
        """The ``x-api-key`` the server accepts (a sandbox key, not a secret)."""
        return self._app.api_key

    @property
    def requests(self) -> list[LoggedRequest]:
        """A snapshot of the requests received (the latest 100,000), oldest first."""
        with self._app.log_lock:
            return list(self._app.log)

    @property
    def filter_after_limit(self) -> bool:
        """Whether ``filter_by`` is applied after ``limit`` (DynamoDB style)."""
        return self._app.filter_after_limit

    @filter_after_limit.setter
    def filter_after_limit(self, value: bool) -> None:
        _check_bool(value, "filter_after_limit")
        self._app.filter_after_limit = value

    # -- data, log and faults -------------------------------------------------------------------

    def served_records(self, endpoint: str = "records") -> list[dict[str, Any]]:
        """The records of ``endpoint`` in the order served ascending, decoded from the bytes sent.

        Parameters
        ----------
        endpoint : {"records", "customer_records"}

        Examples
        --------
        >>> server = SandboxServer(n_records=3, n_customer_records=0)
        >>> [r["time_utc"] for r in server.served_records()] == [
        ...     r["time_utc"] for r in generate_records(3)]
        True
        """
        return self._app.datasets[_check_endpoint(endpoint)].records()

    def set_records(
        self, records: Iterable[Mapping[str, Any]], *, endpoint: str = "records"
    ) -> None:
        """Replace the records of ``endpoint`` (also while running), e.g. to add new ones.

        Parameters
        ----------
        records : iterable of dict
            The new records, as for the constructor.
        endpoint : {"records", "customer_records"}

        Examples
        --------
        >>> server = SandboxServer(n_records=0, n_customer_records=0)
        >>> server.set_records(generate_records(5, seed=3))
        >>> len(server.served_records())
        5
        """
        name = _check_endpoint(endpoint)
        self._app.datasets[name] = Dataset(records, name=name)

    def clear_log(self) -> None:
        """Forget the requests logged so far.

        Examples
        --------
        >>> import requests
        >>> with SandboxServer(n_records=5) as server:
        ...     _ = requests.get(f"{server.url}/v1/records", headers={"x-api-key": "no"})
        ...     before = len(server.requests)
        ...     server.clear_log()
        ...     before, len(server.requests)
        (1, 0)
        """
        with self._app.log_lock:
            self._app.log.clear()

    def inject(self, fault: Fault, times: int | None = 1, path: str | None = None) -> None:
        """Give ``fault`` to the next ``times`` requests to ``path``.

        Parameters
        ----------
        fault : Fault
            The fault; see :class:`Fault` for what each kind does.
        times : int or None, default 1
            How many requests get it; ``None``: every matching request until
            :meth:`clear_faults`.
        path : str, optional
            Only requests to this path (e.g. ``"/v1/records"``); ``None``: any path.

        Notes
        -----
        Faults are handed out in the order injected. A request gets at most one ``latency``
        fault plus one other; a ``repeat`` fault waits for a request that carries a cursor.

        Examples
        --------
        >>> server = SandboxServer(n_records=0, n_customer_records=0)
        >>> server.inject(Fault("status", status=503), times=2, path="/v1/records")
        >>> server.clear_faults()
        """
        if not isinstance(fault, Fault):
            reject("fault", fault, "a Fault")
        if times is not None and (
            isinstance(times, bool) or not isinstance(times, int) or times < 1
        ):
            reject("times", times, "an int >= 1 or None (forever)")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            reject("path", path, "a URL path starting with '/' (e.g. '/v1/records')")
        self._app.plan.add(fault, times=times, path=path)

    def clear_faults(self) -> None:
        """Forget every injected fault (``fault_rate`` and ``latency`` stay).

        Examples
        --------
        >>> import requests
        >>> with SandboxServer(n_records=5) as server:
        ...     server.inject(Fault("status", status=503), times=None)
        ...     server.clear_faults()
        ...     requests.get(f"{server.url}/v1/records",
        ...                  headers={"x-api-key": server.api_key}).status_code
        200
        """
        self._app.plan.clear()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        reject(name, value, "an int")


def _check_count(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        reject(name, value, "an int >= 0")


def _check_bool(value: object, name: str) -> None:
    if not isinstance(value, bool):
        reject(name, value, "True or False")


def _check_endpoint(endpoint: str) -> str:
    return check_choice(endpoint, "endpoint", _ENDPOINT_NAMES)


def _check_host(host: object, allow_remote: bool) -> tuple[str, str]:
    """The host for URLs and the address to bind; loopback only unless ``allow_remote``."""
    if host == "localhost":
        return "127.0.0.1", "127.0.0.1"
    address = None
    if isinstance(host, str):  # ip_address() would also take an integer
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
    if address is None:
        reject("host", host, "an IP address or 'localhost'")
    if not address.is_loopback and not allow_remote:
        accepted = "a loopback address (127.0.0.1, ::1 or localhost), or allow_remote=True "
        accepted += "(CLI: --allow-remote) to serve other machines"
        reject("host", host, accepted)
    bind = str(address)
    if address.is_unspecified:  # listening everywhere: this machine reaches it on loopback
        return ("::1" if address.version == 6 else "127.0.0.1"), bind
    return bind, bind
