"""The sandbox's account: the records of both endpoints, its customers, its cancelled impacts,
and the figures (lifetime and daily totals) derived from them.

Every change runs under one lock and ends by publishing a new, immutable `Snapshot`; a request
reads ``ledger.snapshot`` once and answers from it alone. So a page of records, the totals and
the daily figures are always of one state of the account, however many threads serve and
however many POSTs arrive meanwhile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._checks import ENDPOINT_NAMES
from ._data import account_user_id
from ._dataset import Dataset
from ._figures import Figures, Once

__all__ = [
    "Cancellation",
    "Customer",
    "Customers",
    "Ledger",
    "Snapshot",
    "format_ms",
]

_ID_SPACE = (1000, 10_000_000)  # customer ids "U<n>", as generate_records draws them


def format_ms(ms: int) -> str:
    """Milliseconds since the epoch as the API's ``time_utc``.

    Examples
    --------
    >>> format_ms(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    """
    moment = dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True)
class Customer:
    """A customer of the account, as ``/v1/customers`` lists it."""

    customer_id: str
    customer_email: str
    customer_name: str | None
    onboarded_on: str

    def as_field(self) -> dict[str, str]:
        """The ``customer`` object of a customer record (no name key when it has none)."""
        out = {"customer_id": self.customer_id, "customer_email": self.customer_email}
        if self.customer_name is not None:
            out["customer_name"] = self.customer_name
        return out


@dataclasses.dataclass(frozen=True)
class Cancellation:
    """A cancelled impact: the record as it was served, when and why it was cancelled."""

    endpoint: str
    record: dict[str, Any]
    cancelled_on: str
    reason: str | None


def _customers_of(dataset: Dataset) -> dict[str, Customer]:
    """The customers of a dataset's records: id and onboarding from the first record of each
    e-mail, the name from the first record that has one."""
    found: dict[str, Customer] = {}
    for record in dataset.records():
        customer = record.get("customer")
        if not isinstance(customer, dict):
            continue
        email, cid, name = (customer.get(f"customer_{k}") for k in ("email", "id", "name"))
        if not isinstance(email, str) or not isinstance(cid, str):
            continue
        name = name if isinstance(name, str) else None
        known = found.get(email)
        if known is None:
            found[email] = Customer(cid, email, name, str(record.get("time_utc")))
        elif known.customer_name is None and name is not None:
            found[email] = dataclasses.replace(known, customer_name=name)
    return found


class Customers:
    """The account's customers: those of the customer records it started with (derived once,
    lazily) and those that POSTs onboarded or named since (``created``, which wins)."""

    def __init__(self, base: Once, created: Mapping[str, Customer]) -> None:
        self._base = base
        self._created = created
        self._listing = Once(self._sorted)

    @classmethod
    def of(cls, dataset: Dataset) -> Customers:
        return cls(Once(lambda: _customers_of(dataset)), {})

    def get(self, email: str) -> Customer | None:
        return self._created.get(email) or self._base.get().get(email)

    def with_customer(self, customer: Customer) -> Customers:
        return Customers(self._base, {**self._created, customer.customer_email: customer})

    def _sorted(self) -> tuple[list[Customer], list[tuple[str, str]]]:
        merged = {**self._base.get(), **self._created}
        ordered = sorted(merged.values(), key=lambda c: (c.onboarded_on, c.customer_email))
        return ordered, [(c.onboarded_on, c.customer_email) for c in ordered]

    def listing(self) -> tuple[list[Customer], list[tuple[str, str]]]:
        """Every customer by ``(onboarded_on, customer_email)``, and those sort keys."""
        return self._listing.get()  # type: ignore[no-any-return]

    def new_id(self, email: str, taken: str) -> str:
        """A customer id for ``email``: stable (from its hash) and unused."""
        ids = {c.customer_id for c in self.listing()[0]} | {taken}
        low, high = _ID_SPACE
        n = low + int.from_bytes(hashlib.sha256(email.encode()).digest()[:8]) % (high - low)
        while f"U{n}" in ids:
            n = low + (n + 1 - low) % (high - low)
        return f"U{n}"


class Snapshot:
    """One state of the account; never changed once published."""

    def __init__(
        self,
        datasets: Mapping[str, Dataset],
        customers: Customers,
        cancelled: Mapping[tuple[str, str], Cancellation],
        figures: Figures | None = None,
    ) -> None:
        self.datasets = datasets
        self.customers = customers
        self.cancelled = cancelled  # (user_id, time_utc) -> Cancellation
        if figures is None:
            self._figures = Once(lambda: Figures.of(datasets))
        else:
            self._figures = Once(value=figures)

    @property
    def figures(self) -> Figures:
        """The totals of this state (counted on first use unless adjusted from the last)."""
        return self._figures.get()  # type: ignore[no-any-return]

    def ready_figures(self) -> Figures | None:
        """The figures if already there: a change then adjusts them instead of recounting."""
        return self.figures if self._figures.ready else None

    def locate(self, user_id: str, time_utc: str) -> tuple[str, int] | None:
        """The endpoint and position of the served record with this key (user records first)."""
        for name in ENDPOINT_NAMES:
            pos = self.datasets[name].find(time_utc, user_id)
            if pos is not None:
                return name, pos
        return None


class Ledger:
    """The account the sandbox serves; every change is made here, under one lock."""

    def __init__(
        self,
        records: Iterable[Mapping[str, Any]],
        customer_records: Iterable[Mapping[str, Any]],
        *,
        seed: int,
        email: str,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        datasets = {
            "records": Dataset(records, name="records"),
            "customer_records": Dataset(customer_records, name="customer_records"),
        }
        self.user_id = _account_id(datasets, seed)
        self.email = email
        self._clock = clock
        self._last_ms = 0
        self._lock = threading.Lock()
        customers = Customers.of(datasets["customer_records"])
        self.snapshot = Snapshot(datasets, customers, {})

    def replace(self, endpoint: str, records: Iterable[Mapping[str, Any]]) -> None:
        """Serve ``records`` on ``endpoint`` from now on; what was derived from it is reset."""
        dataset = Dataset(records, name=endpoint)  # checked before anything changes
        with self._lock:
            old = self.snapshot
            customers = old.customers
            if endpoint == "customer_records":
                customers = Customers.of(dataset)
            cancelled = {k: v for k, v in old.cancelled.items() if v.endpoint != endpoint}
            self.snapshot = Snapshot({**old.datasets, endpoint: dataset}, customers, cancelled)

    def create(
        self,
        kind: str,
        amount: int,
        *,
        category: str | None = None,
        email: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Make one impact now and serve it; returns the record as the endpoints serve it."""
        with self._lock:
            old = self.snapshot
            time_utc = self._stamp(old)
            customers = old.customers
            record: dict[str, Any] = {"user_id": self.user_id}
            if email is not None:
                customer = customers.get(email)
                if customer is None:
                    cid = customers.new_id(email, taken=self.user_id)
                    customer = Customer(cid, email, name, time_utc)
                    customers = customers.with_customer(customer)
                elif customer.customer_name is None and name is not None:
                    customer = dataclasses.replace(customer, customer_name=name)
                    customers = customers.with_customer(customer)
                record["customer"] = customer.as_field()
            record["time_utc"] = time_utc
            record[kind] = amount
            if category is not None:
                record["category"] = category
            if metadata:
                record["metadata"] = dict(metadata)
            endpoint = "customer_records" if email is not None else "records"
            datasets = {**old.datasets, endpoint: old.datasets[endpoint].with_record(record)}
            ready = old.ready_figures()
            figures = ready.adjusted(record, endpoint, 1) if ready is not None else None
            self.snapshot = Snapshot(datasets, customers, old.cancelled, figures)
            return record

    def cancel(
        self, user_id: str, time_utc: str, reason: str | None
    ) -> tuple[Cancellation, bool] | None:
        """Cancel the impact with this key: its cancellation and whether it was cancelled before
        (then nothing changes); ``None`` when the account has no such impact."""
        with self._lock:
            old = self.snapshot
            previous = old.cancelled.get((user_id, time_utc))
            if previous is not None:
                return previous, True
            found = old.locate(user_id, time_utc)
            if found is None:
                return None
            endpoint, pos = found
            dataset = old.datasets[endpoint]
            record = dataset.record_at(pos)
            entry = Cancellation(endpoint, record, format_ms(self._clock()), reason)
            ready = old.ready_figures()
            figures = ready.adjusted(record, endpoint, -1) if ready is not None else None
            cancelled = {**old.cancelled, (user_id, time_utc): entry}
            datasets = {**old.datasets, endpoint: dataset.without(pos)}
            self.snapshot = Snapshot(datasets, old.customers, cancelled, figures)
            return entry, False

    def _stamp(self, snapshot: Snapshot) -> str:
        # Now, but never the key of another impact of the account (served or cancelled): the key
        # is the impact's identity (its tracking id), and new impacts come in the order made.
        ms = max(self._clock(), self._last_ms + 1)
        while True:
            time_utc = format_ms(ms)
            key = (self.user_id, time_utc)
            if key not in snapshot.cancelled and snapshot.locate(*key) is None:
                self._last_ms = ms
                return time_utc
            ms += 1


def _account_id(datasets: Mapping[str, Dataset], seed: int) -> str:
    """The account's ``user_id``: that of its first record, else the generator's for ``seed``."""
    for name in ENDPOINT_NAMES:
        dataset = datasets[name]
        if len(dataset):
            user_id = dataset.record_at(0).get("user_id")
            if isinstance(user_id, str) and user_id:
                return user_id
    return account_user_id(seed)
