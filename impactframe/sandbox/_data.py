"""Seeded generator of realistic Records API data (SPEC §1, §5).

The generator favours speed over elegance: one ``random.Random`` per call, lookup tables built
once, timestamps formatted from integer milliseconds, so a million records take a few seconds.
"""

from __future__ import annotations

import datetime as dt
import gc
import operator
import random
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate, islice, pairwise
from typing import Any, TypeVar

from .._params import reject

__all__ = ["account_user_id", "generate_records"]

_T = TypeVar("_T")

_MS_PER_DAY = 86_400_000
_HOUR_MINUTE = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SECOND_MILLI = [f"{s:02d}.{ms:03d}Z" for s in range(60) for ms in range(1000)]

#: Share of each impact type in generated data (trees dominate, coral is the newest and rarest).
_TYPE_WEIGHTS = (
    ("tree_planted", 44),
    ("waste_removed", 20),
    ("carbon_captured", 16),
    ("coral_restored", 6),
    ("money_donated", 14),
)
#: Typical integer amounts; repeats in a table make a value more likely.
_AMOUNTS: dict[str, tuple[int, ...]] = {
    "tree_planted": (1,) * 12 + (2,) * 5 + (3, 3, 5, 5, 5, 10, 10, 10, 20, 25, 50, 100, 250),
    "waste_removed": (1, 1, 2, 5, 5, 10, 10, 10, 15, 20, 25, 40, 50, 100, 250, 1000),
    "carbon_captured": (1, 2, 5, 5, 10, 20, 20, 50, 50, 100, 100, 200, 500, 1000, 5000),
    "coral_restored": (1,) * 6 + (2, 2, 3, 5, 10, 20),
    # US cents
    "money_donated": (100, 100, 200, 250, 500, 500, 500, 1000, 1000, 1500, 2500, 5000, 10000),
}
_CATEGORIES = ("food", "ecommerce", "retail", "travel", "subscription", "events", "hospitality")
_SHOPS = ("shopify", "shopify", "shopify", "woocommerce", "bigcommerce", "wix", "api", "zapier")
_CAMPAIGNS = (
    "earth-day",
    "black-friday",
    "spring-planting",
    "holiday-giving",
    "newsletter-q3",
    "plastic-free-july",
)
_CAMPAIGN_SOURCES = ("newsletter", "landing_page", "instagram", "partner")
_FACILITIES = (
    "Portland Plant",
    "Austin Warehouse",
    "Rotterdam Hub",
    "Malmö Plant",
    "Osaka Factory",
    "São Paulo DC",
)
_SITES = (
    "Pacific Coast",
    "Gulf of Mexico",
    "Bali Beaches",
    "Haiti North Coast",
    "Great Barrier Reef",
    "Mediterranean Shore",
)
_EVENTS = (
    "World Ocean Day",
    "Coastal Cleanup Day",
    "Earth Day",
    "Día de la Tierra",
    "Team Volunteering",
)
_REEFS = ("Florida Keys", "Great Barrier Reef", "Red Sea", "Belize Barrier Reef")
_CHANNELS = ("web", "pos", "mobile", "marketplace")
_FIRST = (
    ("Ana", "ana"),
    ("Ben", "ben"),
    ("Chloé", "chloe"),
    ("David", "david"),
    ("Emma", "emma"),
    ("Fatima", "fatima"),
    ("George", "george"),
    ("Hana", "hana"),
    ("Ivan", "ivan"),
    ("José", "jose"),
    ("Kai", "kai"),
    ("Lena", "lena"),
    ("Mohammed", "mohammed"),
    ("Noor", "noor"),
    ("Olivia", "olivia"),
    ("Priya", "priya"),
    ("Sven", "sven"),
    ("Zoë", "zoe"),
)
_LAST = (
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Müller", "muller"),
    ("Nguyen", "nguyen"),
    ("O'Brien", "obrien"),
    ("Okafor", "okafor"),
    ("Rossi", "rossi"),
    ("Tanaka", "tanaka"),
    ("Kowalski", "kowalski"),
    ("Silva", "silva"),
    ("Johansson", "johansson"),
    ("Patel", "patel"),
)
_DOMAINS = ("example.com", "mail.example.org", "example.net", "shop.example.co.uk")


def _parse_day(value: object, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    reject(name, value, "a datetime.date or a 'YYYY-MM-DD' string")


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        reject(name, value, "an int >= 0")
    return value


def _timestamps(rng: random.Random, n: int, first: dt.date, days: int) -> list[str]:
    """``n`` unique, sorted ``time_utc`` strings within ``days`` days from ``first``."""
    span = days * _MS_PER_DAY
    if n > span:
        reject("n", n, f"an int <= {span} (one record per millisecond of start..end)")
    if n > span // 4:
        offsets = sorted(rng.sample(range(span), n))
    else:
        # Density grows linearly with time, like a business whose impact grows year on year.
        rand = rng.random
        # Sort the floats (much faster than sorting big ints); the mapping keeps the order.
        uniforms = sorted([rand() for _ in range(n)])
        offsets = [int(span * u**0.5) for u in uniforms]
        if any(map(operator.eq, offsets, islice(offsets, 1, None))):
            offsets = _top_up(offsets, n, lambda: int(span * rand() ** 0.5))
    # Lookup tables turn each timestamp into three list lookups and two concatenations.
    day_part = [(first + dt.timedelta(days=d)).isoformat() + "T" for d in range(days)]
    return [
        day_part[ms // _MS_PER_DAY] + _HOUR_MINUTE[ms // 60_000 % 1440] + _SECOND_MILLI[ms % 60_000]
        for ms in offsets
    ]


def _top_up(offsets: list[int], n: int, draw: Callable[[], int]) -> list[int]:
    """Drop duplicates from sorted ``offsets`` and draw replacements until ``n`` are unique."""
    unique = [a for a, b in pairwise(offsets) if a != b]
    unique.append(offsets[-1])
    if n - len(unique) > 1000:  # many collisions: a set is cheaper than inserting one by one
        taken = set(unique)
        while len(taken) < n:
            taken.update(draw() for _ in range(n - len(taken)))
        return sorted(taken)
    while len(unique) < n:  # usually a handful of birthday collisions among millions
        value = draw()
        i = bisect_left(unique, value)
        if i == len(unique) or unique[i] != value:
            unique.insert(i, value)
    return unique


def _customers(rng: random.Random, n: int) -> tuple[list[dict[str, str]], list[float]]:
    """A pool of customers (about 20% without a name) and cumulative weights (a few big ones)."""
    size = max(1, min(5000, n // 25))
    ids = rng.sample(range(1000, 10_000_000), size)
    pool = []
    for k, cid in enumerate(ids):
        first, first_ascii = rng.choice(_FIRST)
        last, last_ascii = rng.choice(_LAST)
        tag = "+impact" if rng.random() < 0.05 else ""  # plus-addressing: must be URL-encoded
        email = f"{first_ascii}.{last_ascii}{k}{tag}@{rng.choice(_DOMAINS)}"
        customer = {"customer_id": f"U{cid}", "customer_email": email}
        if rng.random() >= 0.2:
            customer["customer_name"] = f"{first} {last}"
        pool.append(customer)
    weights = list(accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(size)))
    return pool, weights


def _metadata(rand: Callable[[], float], kind: str, order_no: int, time_utc: str) -> dict[str, str]:
    """A metadata object whose keys depend on the kind of impact and the integration behind it."""
    roll = rand()
    if kind == "carbon_captured" and roll < 0.7:
        return {"facility": _pick(_FACILITIES, rand), "batch": f"B-{time_utc[:7]}"}
    if kind == "waste_removed" and roll < 0.6:
        site = _pick(_SITES, rand)
        if roll < 0.4:
            return {"cleanup_site": site, "event": f"{_pick(_EVENTS, rand)} {time_utc[:4]}"}
        return {"cleanup_site": site}
    if kind == "coral_restored" and roll < 0.6:
        return {"reef": _pick(_REEFS, rand), "campaign": _pick(_CAMPAIGNS, rand)}
    if roll < 0.75:
        meta = {"order_id": f"ORD-{order_no}", "source": _pick(_SHOPS, rand)}
        if roll < 0.08:
            meta["channel"] = _pick(_CHANNELS, rand)
        if roll < 0.02:
            meta["sku"] = f"SKU-{100 + int(rand() * 900)}"
        return meta
    return {"campaign": _pick(_CAMPAIGNS, rand), "source": _pick(_CAMPAIGN_SOURCES, rand)}


def _pick(options: Sequence[_T], rand: Callable[[], float]) -> _T:
    # Faster than Random.choice (no rejection sampling); the tiny bias does not matter here.
    return options[int(rand() * len(options))]


def account_user_id(seed: int) -> str:
    """The ``user_id`` of the account that :func:`generate_records` makes records for.

    Examples
    --------
    >>> account_user_id(0) == generate_records(1, seed=0)[0]["user_id"]
    True
    """
    return f"U{random.Random(seed).randrange(10_000_000, 100_000_000)}"


def generate_records(
    n: int,
    *,
    seed: int = 0,
    customers: bool = False,
    start: str | dt.date = "2021-01-01",
    end: str | dt.date = "2025-12-31",
) -> list[dict[str, Any]]:
    """Generate ``n`` realistic impact records, exactly in the API's JSON shape (SPEC §1).

    All records belong to one account (``user_id``, derived from ``seed``), carry a unique
    millisecond ``time_utc`` between ``start`` and ``end`` (both inclusive UTC days), exactly one
    impact field with an integer amount ≥ 1 (``money_donated`` in US cents), a ``category`` on
    some tree records and a string-to-string ``metadata`` object on most records. They come sorted
    by ``time_utc``. The same arguments always give the same records.

    Parameters
    ----------
    n : int
        Number of records, ≥ 0.
    seed : int, default 0
        Seed of the generator; also picks the account id.
    customers : bool, default False
        Generate customer records: each adds ``customer`` (``customer_id``, ``customer_email``
        and, for about 80% of the customers, ``customer_name``) drawn from a pool of customers
        of very different activity; some e-mails use plus-addressing (``name+impact@...``).
    start, end : str or datetime.date
        First and last UTC day of the records (``YYYY-MM-DD``).

    Returns
    -------
    list of dict
        Fresh dicts (nothing shared between records), safe to modify.

    Raises
    ------
    ValueError
        ``n`` negative or not an integer, a malformed date, ``start`` after ``end``, or more
        records than milliseconds in the range.

    Examples
    --------
    >>> records = generate_records(3, seed=1)
    >>> len(records), len({r["user_id"] for r in records})
    (3, 1)
    >>> records[0]["time_utc"] < records[1]["time_utc"] < records[2]["time_utc"]
    True
    >>> records == generate_records(3, seed=1)
    True
    >>> "customer" in generate_records(1, customers=True)[0]
    True
    """
    _check_int(n, "n")
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a million fresh dicts would trigger many useless full collections
    try:
        return _generate(n, seed, customers, start, end)
    finally:
        if gc_was_enabled:
            gc.enable()


def _generate(
    n: int, seed: int, customers: bool, start: str | dt.date, end: str | dt.date
) -> list[dict[str, Any]]:
    if isinstance(seed, bool) or not isinstance(seed, int):
        reject("seed", seed, "an int")
    first = _parse_day(start, "start")
    last = _parse_day(end, "end")
    if first > last:
        msg = f"start {first} is after end {last}; expected start <= end"
        raise ValueError(msg)
    user_id = account_user_id(seed)
    # A string seed is hashed with SHA-512: stable across runs and Python versions.
    rng = random.Random(f"impactframe-sandbox/{seed}/{'customers' if customers else 'records'}")
    times = _timestamps(rng, n, first, (last - first).days + 1)
    names = [name for name, _ in _TYPE_WEIGHTS]
    kinds = rng.choices(names, cum_weights=list(accumulate(w for _, w in _TYPE_WEIGHTS)), k=n)
    if customers:
        pool, cum = _customers(rng, n)
        picks = rng.choices(pool, cum_weights=cum, k=n)
    records: list[dict[str, Any]] = []
    append = records.append
    rand = rng.random
    order_no = 1000 + rng.randrange(9000)
    for i in range(n):
        kind = kinds[i]
        time_utc = times[i]
        record: dict[str, Any] = {"user_id": user_id}
        if customers:
            record["customer"] = picks[i].copy()
        record["time_utc"] = time_utc
        record[kind] = _pick(_AMOUNTS[kind], rand)
        if kind == "tree_planted" and rand() < 0.35:
            record["category"] = _pick(_CATEGORIES, rand)
        if rand() < 0.8:
            order_no += 1
            record["metadata"] = _metadata(rand, kind, order_no, time_utc)
        append(record)
    return records
