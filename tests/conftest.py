"""Shared fixtures: the sandbox (a real HTTP server on loopback), a sandbox factory, fake sleep.

- ``sandbox`` (session): ``SandboxServer()`` with its default generated data (2000 records per
  endpoint, seed 0). Its injected faults and request log are cleared before every test that
  uses it, so a test sees only its own requests; tests that need other data or settings
  (``filter_after_limit``, ``fault_rate``, ``latency``) use ``make_sandbox``.
- ``make_sandbox`` (function): ``make_sandbox(**kwargs)`` starts a ``SandboxServer(**kwargs)``
  and stops it after the test.
- ``fake_sleep`` (function): a callable list; calling it records the seconds asked for instead
  of sleeping. Inject it as the client's ``_sleep``.
- ``check_api_record`` (function): ``check_api_record(record, customers=False)`` asserts the
  record shape of SPEC §1.
- ``client`` (function): an ``impactframe.client.Client`` on the session sandbox, with
  ``_sleep`` = ``fake_sleep`` and ``_rng`` = ``random.Random(0)``.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from impactframe._constants import IMPACT_TYPES
from impactframe.sandbox import SandboxServer


class FakeSleep(list[float]):
    """A ``time.sleep`` stand-in that records the delays it was asked for.

    Examples
    --------
    >>> sleep = FakeSleep()
    >>> sleep(0.5); sleep(1)
    >>> sleep, sleep.total
    ([0.5, 1], 1.5)
    """

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    @property
    def total(self) -> float:
        """Sum of the delays asked for."""
        return float(sum(self))


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """The shared sandbox: default generated data on both endpoints, no faults."""
    with SandboxServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_sandbox(request: pytest.FixtureRequest) -> None:
    """Clear the shared sandbox's faults and log before each test that uses it."""
    if "sandbox" in request.fixturenames:
        server: SandboxServer = request.getfixturevalue("sandbox")
        server.clear_faults()
        server.clear_log()


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """A factory of started sandboxes (``SandboxServer`` keywords), stopped after the test."""
    servers: list[SandboxServer] = []

    def factory(*args: Any, **kwargs: Any) -> SandboxServer:
        server = SandboxServer(*args, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def fake_sleep() -> FakeSleep:
    """Records requested sleeps in a list instead of sleeping."""
    return FakeSleep()


@pytest.fixture
def client(sandbox: SandboxServer, fake_sleep: FakeSleep) -> Iterator[Any]:
    """A ``Client`` on the session sandbox that never really sleeps (seeded jitter)."""
    from impactframe.client import Client  # owned by the client module; imported when used

    with Client(api_key=sandbox.api_key, base_url=sandbox.url) as instance:
        instance._sleep = fake_sleep
        instance._rng = random.Random(0)
        yield instance


_TIME_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def _check_api_record(record: dict[str, Any], *, customers: bool = False) -> None:
    """Assert that ``record`` has the shape SPEC §1 describes (known fields only)."""
    allowed = {"user_id", "time_utc", "category", "metadata", *IMPACT_TYPES}
    if customers:
        allowed.add("customer")
    assert set(record) <= allowed, set(record) - allowed
    assert isinstance(record["user_id"], str)
    assert record["user_id"]
    assert _TIME_UTC.fullmatch(record["time_utc"]), record["time_utc"]
    dt.datetime.strptime(record["time_utc"], "%Y-%m-%dT%H:%M:%S.%fZ")  # a real instant
    impacts = [kind for kind in IMPACT_TYPES if kind in record]
    assert len(impacts) == 1, record
    amount = record[impacts[0]]
    assert type(amount) is int
    assert amount >= 1
    if "category" in record:
        assert impacts == ["tree_planted"]
        assert isinstance(record["category"], str)
    if "metadata" in record:
        metadata = record["metadata"]
        assert isinstance(metadata, dict)
        assert metadata
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    if customers:
        customer = record["customer"]
        assert set(customer) <= {"customer_id", "customer_email", "customer_name"}
        assert isinstance(customer["customer_id"], str)
        assert "@" in customer["customer_email"]
        assert isinstance(customer.get("customer_name", ""), str)


@pytest.fixture
def check_api_record() -> Callable[..., None]:
    """``check_api_record(record, customers=False)`` asserts the API's record shape (SPEC §1)."""
    return _check_api_record
