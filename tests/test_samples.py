"""The documented example responses (data-samples/) and the sandbox serving them (SPEC §1, §11)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from impactframe._constants import ENDPOINTS, IMPACT_TYPES
from impactframe.sandbox import SandboxServer, generate_records

SAMPLES = Path(__file__).resolve().parent.parent / "data-samples"
MakeSandbox = Callable[..., SandboxServer]


def load(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_samples_are_the_documented_responses(
    endpoint: str, check_api_record: Callable[..., None]
) -> None:
    body = load(endpoint)
    records_key = ENDPOINTS[endpoint][1]
    assert list(body) == [records_key, "cursor"]
    assert isinstance(body["cursor"], str)
    for record in body[records_key]:
        check_api_record(record, customers=endpoint == "customer_records")
        assert record["user_id"] == "U123"


def test_records_sample_values() -> None:
    body = load("records")
    records = body["user_records"]
    assert [r["time_utc"] for r in records] == [
        "2024-09-16T20:30:13.391Z",
        "2024-09-17T13:24:04.429Z",
        "2024-09-17T14:32:01.638Z",
    ]
    assert records[0] == {
        "user_id": "U123",
        "time_utc": "2024-09-16T20:30:13.391Z",
        "carbon_captured": 5,
        "metadata": {"facility": "Portland Plant", "batch": "B-2024-09"},
    }
    assert records[1] == {
        "user_id": "U123",
        "time_utc": "2024-09-17T13:24:04.429Z",
        "waste_removed": 15,
    }
    assert records[2]["tree_planted"] == 10
    assert records[2]["metadata"] == {"order_id": "ORD-456", "source": "shopify"}
    assert body["cursor"] == "fNJjcmV32dGVkTiOiIyMDI0LTA3LTidXNlcklE3UiVTk2OTQ0MDcwIpT"


def test_customer_records_sample_values() -> None:
    body = load("customer_records")
    records = body["customer_records"]
    assert [r["customer"]["customer_id"] for r in records] == ["U1234", "U789", "U5678", "U3456"]
    assert [r["customer"]["customer_email"] for r in records] == [
        f"sample-customer-{i}@email.com" for i in range(1, 5)
    ]
    assert [r["customer"]["customer_name"] for r in records] == [
        f"Sample Customer {i}" for i in range(1, 5)
    ]
    impacts = [(k, r[k]) for r in records for k in IMPACT_TYPES if k in r]
    assert impacts == [
        ("waste_removed", 40),
        ("carbon_captured", 50),
        ("tree_planted", 10),
        ("money_donated", 1000),
    ]
    assert records[0]["metadata"] == {
        "cleanup_site": "Pacific Coast",
        "event": "World Ocean Day 2024",
    }
    assert records[2]["metadata"] == {"order_id": "ORD-789", "source": "shopify"}
    assert "metadata" not in records[1]
    assert "metadata" not in records[3]
    assert body["cursor"] == "eyJjcmVhdGVkT24iOiIyMDI0LTA3LTidXNlcklEIjoiVTk2OTQ0MDcwIn0="


def test_the_sandbox_serves_the_samples(make_sandbox: MakeSandbox) -> None:
    records = load("records")["user_records"]
    customer_records = load("customer_records")["customer_records"]
    server = make_sandbox(records=records, customer_records=customer_records)
    headers = {"x-api-key": server.api_key}

    def get(path: str, **params: Any) -> dict[str, Any]:
        response = requests.get(server.url + path, params=params, headers=headers, timeout=10)
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]

    assert get("/v1/records") == {"user_records": records}
    assert get("/v1/customer_records") == {"customer_records": customer_records}
    first = get("/v1/customer_records", limit=3)
    assert first["customer_records"] == customer_records[:3]
    rest = get("/v1/customer_records", limit=3, cursor=first["cursor"])
    assert rest == {"customer_records": customer_records[3:]}
    assert get("/v1/records", filter_by="tree_planted") == {"user_records": records[2:]}
    assert get("/v1/records", start_date="2024-09-17", end_date="2024-09-17") == {
        "user_records": records[1:]
    }
    one = get("/v1/customer_records", customer_email="sample-customer-2@email.com")
    assert one == {"customer_records": [customer_records[1]]}


@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_generated_records_look_like_the_samples(endpoint: str) -> None:
    sample = load(endpoint)[ENDPOINTS[endpoint][1]]
    generated = generate_records(500, seed=2, customers=endpoint == "customer_records")
    # The documented fields come in the documented order, with the documented JSON types.
    order = list(dict.fromkeys(k for r in sample for k in r if k not in IMPACT_TYPES))
    for record in generated:
        fields = [k for k in record if k not in IMPACT_TYPES and k != "category"]
        assert fields == [k for k in order if k in fields]
        assert list(record)[:2] == list(sample[0])[:2]
        for key in set(record) & {k for r in sample for k in r}:
            assert type(record[key]) is type(next(r[key] for r in sample if key in r))
