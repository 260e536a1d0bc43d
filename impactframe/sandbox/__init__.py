"""A faithful local fake of the 1ClickImpact API, for offline use and tests (SPEC §5, §12).

``SandboxServer`` serves, on loopback, every endpoint the official SDK (``makeimpact`` 2.0.0)
calls, over one account whose records are generated (:func:`generate_records`) or given, with the
API's errors, DynamoDB-style cursors, and faults injected on request (:class:`Fault`):

- ``GET /v1/records``, ``/v1/customer_records``: the records, paged (SPEC §1).
- ``POST /v1/plant_tree``, ``/v1/clean_ocean``, ``/v1/capture_carbon``, ``/v1/restore_coral``,
  ``/v1/donate_money``: make an impact; ``POST /v1/cancel_impact``: cancel one.
- ``GET /v1/impact`` (lifetime totals, split ``user_impact``/``customer_impact``),
  ``/v1/impact/daily``, ``/v1/whoami``, ``/v1/customers``, ``/v1/track``, ``/v1/projects``,
  ``/v1/projects/{id}``.

Every answer is read from one state of the account, so the totals and daily figures always equal
the sums of the records served, whatever runs concurrently. Below, the real API's behaviour where
its documentation or the SDK fixes it, and otherwise the sandbox's own choices.

Requests, on every path:

- Faults apply before anything else, like a failing gateway in front of the API: ``status`` and
  ``drop`` faults answer (or drop) before authentication and validation, so a POST they hit is
  not applied; ``latency``, ``truncate`` and ``repeat`` wrap the normal answer (which may be a
  401 or 400; a truncated POST answer was applied).
- Then a missing or wrong ``x-api-key`` → 401 ``key_error`` on every path and method, known or
  not; then an unknown path → 404 ``not_found`` (listing the paths); then a method the path does
  not take → 501 ``method_not_allowed`` with an ``Allow`` header; then the parameters → 400
  ``validation_error``. Every error body is ``{"type": ..., "message": ...}``.
- Every endpoint refuses an unknown or repeated query parameter (``filter_by`` may repeat; the
  POST endpoints take none); dates are real ``YYYY-MM-DD`` days, ``start_date`` not after
  ``end_date``, both inclusive UTC days; ``limit`` is 0..1000, default 10.
- Request bodies need a ``Content-Length`` (chunked → 411) of at most 64 KiB (→ 413).

The records (``/v1/records``: the account's own impacts; ``/v1/customer_records``: those made
for customers):

- A bad parameter → 400: an unknown one (``customer_email`` is one on ``/v1/records``) or a
  repeated one, an unknown ``filter_by``, a malformed or impossible date, ``start_date`` after
  ``end_date``, ``limit`` outside 0..1000, a ``sort_order`` other than asc/desc, a cursor that is
  not base64 JSON of exactly ``createdOn``/``userID`` (and ``seq``), an empty
  ``customer_email``. Checks run in that order.
- Records are served sorted by ``(time_utc, user_id)`` (``desc``: exactly reversed);
  ``limit=0`` gives an empty, final page.
- The cursor is standard base64 (with ``+``, ``/``, ``=``) of ``{"createdOn", "userID"}``, the
  last record's key, plus ``"seq"`` only when several records share that key. A raw, unencoded
  ``+`` (which arrives as a space) is accepted too. The last page has no ``cursor`` key.
- ``filter_by`` is applied before ``limit`` (a cursor is sent exactly when more matching records
  follow) unless ``filter_after_limit=True``: then a page scans ``limit`` records of the range
  (dates, ``customer_email``, cursor) and filters them afterwards, so pages may be short or empty
  and any page that scanned ``limit`` records carries a cursor, even when nothing follows.

Making and cancelling impacts:

- A body is a JSON object of the SDK's fields only: ``amount`` (an integer, 1..10,000,000;
  ``donate_money``: 1..1,000,000,000 cents), ``category`` (``plant_tree`` and ``donate_money``
  only), ``customer_email``, ``customer_name`` (only with an e-mail), ``notify`` (a boolean,
  accepted and ignored: the sandbox sends no mail), ``metadata`` (at most 20 string pairs, keys
  of 1..40 characters, values of at most 500, ``gift`` and ``widgetID`` reserved). Texts
  (``category``, ``customer_name``, a cancellation's ``reason``) are non-empty, of at most 200
  characters; an e-mail has one ``@``, a dot in its domain, no spaces and at most 254
  characters. Anything else → 400 naming the field, and nothing changes.
- 200 with the new record, exactly as the records endpoints serve it from then on: under
  ``/v1/customer_records`` when it names a customer, else under ``/v1/records``. Its
  ``user_id`` is the account's; its ``time_utc`` is the server's clock, moved on by a
  millisecond where needed so that no two impacts of the account (cancelled ones included)
  share a key and new impacts sort in the order made.
- A customer is its e-mail: a new one onboards a customer (``onboarded_on``: that impact's
  ``time_utc``; ``customer_id``: ``U`` and a number derived from the e-mail, unused so far); a
  known one keeps its id and name, ``customer_name`` only filling in a missing name.
- ``POST /v1/cancel_impact`` (``user_id``, ``time_utc``, optional ``reason``) takes the impact
  out of the records and the figures and answers ``user_id``, ``time_utc``, ``cancelled_on``,
  ``message`` ("Impact cancelled"), ``reason`` and the record's amount (under its type) and
  category. Cancelling it again changes nothing and answers the same, with the message "Impact
  was already cancelled". No such impact → 404 ``not_found``. A key both endpoints hold cancels
  (and tracks) the user record; of duplicate records, the first.

The account:

- Its ``user_id`` is that of its first record (user records, then customer records) when the
  server is made, else the generator's for ``seed``; ``/v1/whoami`` gives it with the e-mail
  ``sandbox@example.com``.
- The figures count the records that the loaders read as one impact: a ``time_utc`` starting
  with a real day and ``T``, and exactly one impact field with an integer amount >= 0 (a known
  type, or else the record's one unknown field with such a value: a new type). Malformed
  records, served to test validation, do not count.
- ``/v1/impact``: ``user_id``, the lifetime total per type, ``user_impact`` (the records of
  ``/v1/records``) and ``customer_impact`` (of ``/v1/customer_records``). Every known type is
  listed (0 where none), then the new types some record has, sorted by name; the same types in
  every daily entry.
- ``/v1/impact/daily`` (``start_date``, ``end_date``): ``user_id`` and ``daily_impact``, one
  ``{"date", <type>: total}`` per UTC day that has a counted record of either endpoint,
  ascending; days without impact are left out.
- ``/v1/customers`` (``customer_email``, ``limit``, ``cursor``): ``customer_id``,
  ``customer_email``, ``customer_name`` (when known) and ``onboarded_on``, ordered by
  ``(onboarded_on, customer_email)``; the cursor is base64 JSON of the last one's
  ``onboardedOn``/``customerEmail``; ``customer_email`` gives that customer or none. The
  customers are those of the customer records the server started with (or got from
  :meth:`SandboxServer.set_records`, which also forgets what was cancelled there) plus those
  POSTs onboarded; cancelling a customer's impacts does not remove the customer.
- ``/v1/track`` (``user_id``, ``time_utc``): ``tracking_id`` (``<user_id>-<time_utc>``),
  ``impact_initiated`` (its ``time_utc``), its amount and category, the ``project_id`` and
  ``project_location`` of an available project of its type (none for donations),
  ``donation_category`` (a donation's category), ``is_test_transaction`` true,
  ``is_bonus_impact`` false, and ``cancelled_on``/``cancellation_reason`` once cancelled. No
  progress is simulated: the fields of later stages (``impact_completed``, ``certificate``...)
  are absent. Both parameters are required (else 400); no such impact → 404 ``not_found``.
- ``/v1/projects`` (``type``: trees, ocean, carbon or coral; ``locale``: en, de, es, fr or nl,
  accepted, the text staying English) and ``/v1/projects/{id}`` (``locale``): a fixed catalogue
  of six made-up projects, one of them unavailable; an unknown id → 404 ``not_found``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from .._params import reject
from ._checks import (
    ENDPOINT_NAMES,
    check_bool,
    check_count,
    check_endpoint,
    check_host,
    check_int,
    is_number,
)
from ._data import generate_records
from ._faults import FAULT_KINDS, RATE_FAULT_KINDS, Fault, FaultPlan, check_rate_kinds
from ._ledger import Ledger
from ._rate import TokenBucket
from ._records import encode_cursor
from ._server import App, LoggedRequest, SandboxHTTPServer

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

#: The e-mail ``/v1/whoami`` gives for the sandbox's account.
ACCOUNT_EMAIL = "sandbox@example.com"
#: Rate-mode kinds used unless ``fault_kinds`` says otherwise.
DEFAULT_FAULT_KINDS = ("429", "500", "502", "503", "drop", "truncate", "repeat")


class SandboxServer:
    """A local, threaded HTTP/1.1 server that behaves like the 1ClickImpact API.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). It listens on a
    loopback address in a daemon thread; keep-alive connections are closed by :meth:`stop`.

    Parameters
    ----------
    records, customer_records : iterable of dict, optional
        Records to serve on ``/v1/records`` and ``/v1/customer_records``, in the API's JSON
        shape, served as given (even malformed ones, to test validation) and sorted by
        ``(time_utc, user_id)``. ``None`` generates them (see :func:`generate_records`); ``[]``
        serves nothing. The POST endpoints add to them and cancel from them.
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
        check_int(seed, "seed")
        check_int(fault_seed, "fault_seed")
        check_count(n_records, "n_records")
        check_count(n_customer_records, "n_customer_records")
        if not isinstance(api_key, str) or not api_key or api_key != api_key.strip():
            accepted = "a non-empty string without surrounding whitespace"
            reject("api_key", api_key, accepted, shown="this key (not echoed)")
        self._host, self._bind_host = check_host(host, allow_remote)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            reject("port", port, "an int between 0 and 65535 (0: any free port)")
        check_bool(filter_after_limit, "filter_after_limit")
        if not is_number(fault_rate) or not 0.0 <= fault_rate <= 1.0:
            reject("fault_rate", fault_rate, "a probability between 0 and 1")
        kinds = check_rate_kinds(fault_kinds)
        if fault_rate and not kinds:
            accepted = f"some of {', '.join(RATE_FAULT_KINDS)} when fault_rate > 0"
            reject("fault_kinds", fault_kinds, accepted)
        if not is_number(latency) or latency < 0:
            reject("latency", latency, "a finite number of seconds >= 0")
        if records is None:
            records = generate_records(n_records, seed=seed)
        if customer_records is None:
            customer_records = generate_records(n_customer_records, seed=seed, customers=True)
        self._port = port
        self._app = App(
            api_key=api_key,
            ledger=Ledger(records, customer_records, seed=seed, email=ACCOUNT_EMAIL),
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
        sizes = ", ".join(f"{name}={len(self._app.datasets[name])}" for name in ENDPOINT_NAMES)
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
        check_bool(value, "filter_after_limit")
        self._app.filter_after_limit = value

    # -- data, log and faults -------------------------------------------------------------------

    def served_records(self, endpoint: str = "records") -> list[dict[str, Any]]:
        """The records of ``endpoint`` in the order served ascending, decoded from the bytes sent.

        Those made by POSTs included, those cancelled left out.

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
        return self._app.datasets[check_endpoint(endpoint)].records()

    def set_records(
        self, records: Iterable[Mapping[str, Any]], *, endpoint: str = "records"
    ) -> None:
        """Replace the records of ``endpoint`` (also while running), e.g. to add new ones.

        What the sandbox derived from the old records is reset with them: the cancelled impacts
        of ``endpoint`` and, for ``"customer_records"``, the customers.

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
        self._app.ledger.replace(check_endpoint(endpoint), records)

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
