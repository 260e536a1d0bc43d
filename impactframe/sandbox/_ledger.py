"""The sandbox's account: the records of both endpoints, its customers, its cancelled impacts,
and the figures (lifetime and daily totals) derived from them.

Every change runs under one lock and ends by publishing a new, immutable `Snapshot`; a request
reads ``ledger.snapshot`` once and answers from it alone. So a page of records, the totals and
the daily figures are always of one state of the account, however many threads serve and
however many POSTs arrive meanwhile.

Which records count towards the figures: those the loaders accept as one impact, i.e. with a
``time_utc`` that starts with a real ``YYYY-MM-DD`` day followed by ``T``, and exactly one impact
field whose amount is an integer >= 0 (a known type, or else the record's one unknown field with
such a value, as the frame builder reads a new type). Malformed records, served on purpose to test
validation, do not count.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._constants import IMPACT_TYPES
from ._checks import ENDPOINT_NAMES
from ._data import account_user_id
from ._dataset import Dataset

__all__ = [
    "Cancellation",
    "Customer",
    "Customers",
    "Figures",
    "Ledger",
    "Snapshot",
    "counted",
    "format_ms",
]

_FIXED_FIELDS = frozenset({"user_id", "time_utc", "category", "metadata", "customer"})
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ID_SPACE = (1000, 10_000_000)  # customer ids "U<n>", as generate_records draws them


def _is_amount(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def counted(record: Mapping[str, Any]) -> tuple[str, str, int] | None:
    """``(day, impact type, amount)`` of a record that counts towards the figures, else None.

    Examples
    --------
    >>> counted({"user_id": "U1", "time_utc": "2024-05-01T10:00:00.000Z", "tree_planted": 3})
    ('2024-05-01', 'tree_planted', 3)
    >>> counted({"time_utc": "2024-05-01T10:00:00.000Z", "kelp_grown": 2}), counted({})
    (('2024-05-01', 'kelp_grown', 2), None)
    """
    time_utc = record.get("time_utc")
    if not isinstance(time_utc, str) or time_utc[10:11] != "T" or not _DAY.fullmatch(time_utc[:10]):
        return None
    try:
        dt.date.fromisoformat(time_utc[:10])
    except ValueError:
        return None
    known = [kind for kind in IMPACT_TYPES if kind in record]
    if not known:  # a new type: the one unknown field that can be an amount
        known = [k for k, v in record.items() if k not in _FIXED_FIELDS and _is_amount(v)]
    if len(known) != 1 or not _is_amount(record[known[0]]):
        return None
    return time_utc[:10], known[0], record[known[0]]


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


class _Once:
    """A value computed on first use, once, whichever thread asks first (or given ready)."""

    def __init__(self, compute: Callable[[], Any] | None = None, value: Any = None) -> None:
        self._compute = compute
        self._value = value
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether the value exists already."""
        return self._compute is None

    def get(self) -> Any:
        if self._compute is not None:
            with self._lock:
                if self._compute is not None:
                    self._value, self._compute = self._compute(), None
        return self._value


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

    def __init__(self, base: _Once, created: Mapping[str, Customer]) -> None:
        self._base = base
        self._created = created
        self._listing = _Once(self._sorted)

    @classmethod
    def of(cls, dataset: Dataset) -> Customers:
        return cls(_Once(lambda: _customers_of(dataset)), {})

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


class Figures:
    """Lifetime totals per endpoint and daily totals of the records that count (`counted`)."""

    def __init__(
        self,
        totals: dict[str, dict[str, int]],
        daily: dict[str, dict[str, int]],
        day_counts: dict[str, int],
        type_counts: dict[str, int],
    ) -> None:
        self.totals = totals  # endpoint -> impact type -> amount
        self.daily = daily  # day -> impact type -> amount (records of both endpoints)
        self._day_counts = day_counts  # day -> records counted
        self._type_counts = type_counts  # impact type -> records counted
        self._days = _Once(lambda: sorted(self.daily))

    @classmethod
    def of(cls, datasets: Mapping[str, Dataset]) -> Figures:
        figures = cls({name: {} for name in ENDPOINT_NAMES}, {}, {}, {})
        for name in ENDPOINT_NAMES:
            for record in datasets[name].records():
                figures._add(record, name, 1)
        return figures

    def _add(self, record: Mapping[str, Any], endpoint: str, sign: int) -> bool:
        found = counted(record)
        if found is None:
            return False
        day, kind, amount = found
        totals = self.totals[endpoint]
        totals[kind] = totals.get(kind, 0) + sign * amount
        per_day = self.daily.setdefault(day, {})
        per_day[kind] = per_day.get(kind, 0) + sign * amount
        self._type_counts[kind] = self._type_counts.get(kind, 0) + sign
        self._day_counts[day] = self._day_counts.get(day, 0) + sign
        if not self._day_counts[day]:  # its last record was cancelled: the day is gone
            del self._day_counts[day], self.daily[day]
        return True

    def adjusted(self, record: Mapping[str, Any], endpoint: str, sign: int) -> Figures:
        """These figures with ``record`` added (``sign=1``) or taken away (``sign=-1``)."""
        found = counted(record)
        if found is None:
            return self
        day = found[0]
        daily = dict(self.daily)  # only the changed day's totals are copied, not every day's
        if day in daily:
            daily[day] = dict(daily[day])
        totals = {name: dict(values) for name, values in self.totals.items()}
        new = Figures(totals, daily, dict(self._day_counts), dict(self._type_counts))
        new._add(record, endpoint, sign)
        return new

    def types(self) -> list[str]:
        """The known types in SPEC §1 order, then the new types that some record has, sorted."""
        new = sorted(k for k, n in self._type_counts.items() if n and k not in IMPACT_TYPES)
        return [*IMPACT_TYPES, *new]

    def days(self, start: str | None, end: str | None) -> list[str]:
        """The days with a counted record, ascending, within ``start``..``end`` (inclusive)."""
        days: list[str] = self._days.get()
        lo = bisect_left(days, start) if start else 0
        hi = bisect_right(days, end) if end else len(days)
        return days[lo:hi]


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
            self._figures = _Once(lambda: Figures.of(datasets))
        else:
            self._figures = _Once(value=figures)

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
