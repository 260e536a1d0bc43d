"""Bad data from the API: every malformed response is a clear error, never a bare one.

Each case is served by the real sandbox: malformed records as given
(``SandboxServer(records=...)``), malformed pages and bodies as a 200 whose body is replaced
(``Fault("status", status=200, body=...)``). Each must raise ``ValidationError`` (the data
breaks SPEC §3) or ``APIError`` (the body is not JSON), naming the field and the record, and
never a bare ``KeyError``, ``TypeError``, ``JSONDecodeError``, ``ArrowInvalid`` or the like.
A bad record among good ones fails the whole load, so no valid record is dropped silently:
no frame comes back, no cache entry is written, and no dataset is left at an export's path.

Records (``RECORD_CASES``): ``user_id`` missing, null or a number; ``time_utc`` missing, null,
a number, unparseable, empty, with an offset or none (not UTC), impossible, finer than a
millisecond; an amount negative, fractional, a float, a string, a bool, null, beyond int64;
two impact fields, none at all; ``category`` not a string; ``metadata`` a list, a string, a
number. Customer records (``CUSTOMER_CASES``): ``customer`` missing, null, a list; its id or
e-mail missing or not a string; its name not a string.

Pages (``PAGE_CASES``): a body that is a list, null, a string or a number; the records field
missing, an object, a string, null, or holding a non-object; a cursor that is a number, a
bool, an object, a list or NaN; an HTML page; invalid UTF-8; an amount of 5000 digits (past
Python's int limit); an empty body, and one nested too deep (once a bare RecursionError).

Last, hypothesis feeds ``decode_page`` and ``records_to_frame`` arbitrary JSON in every field of
the envelope and of the records: the outcome is a valid frame or a ``ValidationError``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import impactframe as ifr
from impactframe._constants import IMPACT_TYPES
from impactframe._dtypes import fixed_columns
from impactframe._frame._builder import records_to_frame
from impactframe._paging._pages import decode_page
from impactframe.errors import ImpactFrameWarning
from impactframe.sandbox import Fault, SandboxServer, generate_records
from impactframe.schemas import validate

BAD_ID = "U-BAD-7"
VALID_TIME = re.compile(r"2[0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
BAD_TIME = "2023-06-15T12:00:00.000Z"


def good_records(n: int, *, customers: bool = False) -> list[dict[str, Any]]:
    # Generated in 2021-2022 and 2024-2025, so the bad record (mid 2023) sits in the middle.
    early = generate_records(n // 2, seed=3, customers=customers, end="2022-12-31")
    late = generate_records(n - n // 2, seed=4, customers=customers, start="2024-01-01")
    return early + late


def bad_record(customers: bool = False, **fields: Any) -> dict[str, Any]:
    """A valid record of ours, then `fields` over it (``...`` removes a field)."""
    record: dict[str, Any] = {"user_id": BAD_ID, "time_utc": BAD_TIME, "tree_planted": 3}
    if customers:
        record["customer"] = {"customer_id": "C9", "customer_email": "c9@example.com"}
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


RECORD_CASES: dict[str, tuple[dict[str, Any], str]] = {
    # id: (fields over a valid record, the field the error must name)
    "user_id-missing": ({"user_id": ...}, "user_id"),
    "user_id-null": ({"user_id": None}, "user_id"),
    "user_id-number": ({"user_id": 12345}, "user_id"),
    "time_utc-missing": ({"time_utc": ...}, "time_utc"),
    "time_utc-null": ({"time_utc": None}, "time_utc"),
    "time_utc-epoch-number": ({"time_utc": 1686830400000}, "time_utc"),
    "time_utc-unparseable": ({"time_utc": "yesterday at noon"}, "time_utc"),
    "time_utc-empty": ({"time_utc": ""}, "time_utc"),
    "time_utc-offset": ({"time_utc": "2023-06-15T12:00:00.000+02:00"}, "time_utc"),
    "time_utc-naive": ({"time_utc": "2023-06-15T12:00:00.000"}, "time_utc"),
    "time_utc-date-only": ({"time_utc": "2023-06-15"}, "time_utc"),
    "time_utc-impossible": ({"time_utc": "2023-02-29T12:00:00.000Z"}, "time_utc"),
    "time_utc-microseconds": ({"time_utc": "2023-06-15T12:00:00.000123Z"}, "time_utc"),
    "amount-negative": ({"tree_planted": -4}, "tree_planted"),
    "amount-fractional": ({"tree_planted": 2.5}, "tree_planted"),
    "amount-float-integral": ({"tree_planted": 2.0}, "tree_planted"),
    "amount-string": ({"tree_planted": "5"}, "tree_planted"),
    "amount-bool": ({"tree_planted": True}, "tree_planted"),
    "amount-null": ({"tree_planted": None}, "tree_planted"),
    "amount-huge": ({"tree_planted": 2**70}, "tree_planted"),
    "amount-huge-other-type": ({"tree_planted": ..., "money_donated": 10**30}, "money_donated"),
    "two-impact-fields": ({"waste_removed": 5}, "waste_removed"),
    "no-impact-field": ({"tree_planted": ...}, "impact_type"),
    "category-number": ({"category": 7}, "category"),
    "metadata-list": ({"metadata": ["shopify"]}, "metadata"),
    "metadata-string": ({"metadata": "source=shopify"}, "metadata"),
    "metadata-number": ({"metadata": 3}, "metadata"),
}

CUSTOMER_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "customer-missing": ({"customer": ...}, "customer"),
    "customer-null": ({"customer": None}, "customer"),
    "customer-list": ({"customer": ["C9"]}, "customer"),
    "customer_id-missing": ({"customer": {"customer_email": "c9@example.com"}}, "customer_id"),
    "customer_id-number": (
        {"customer": {"customer_id": 9, "customer_email": "c@x.io"}},
        "customer_id",
    ),
    "customer_email-missing": ({"customer": {"customer_id": "C9"}}, "customer_email"),
    "customer_email-null": (
        {"customer": {"customer_id": "C9", "customer_email": None}},
        "customer_email",
    ),
    "customer_name-number": (
        {"customer": {"customer_id": "C9", "customer_email": "c9@x.io", "customer_name": 1}},
        "customer_name",
    ),
}


def check_names_the_record(error: ifr.ValidationError, field: str, record: dict[str, Any]) -> None:
    """The error is ours, names `field`, and names the record (its user_id or time_utc)."""
    assert type(error) is ifr.ValidationError
    assert error.field == field
    message = str(error)
    assert field in message
    assert BAD_ID in message or BAD_TIME in message or "record" in message
    if isinstance(record.get("user_id"), str):
        assert BAD_ID in message
    assert "\n" not in message
    assert len(message) < 600


def record_case_params() -> list[Any]:
    # With concurrency, a bad time_utc at either end is the record the date-range probes of
    # _fetch read first: it must fail the load as well.
    return [
        pytest.param(fields, field, path, id=f"{path}-{case_id}")
        for path in ("load", "load-concurrent", "cache", "export")
        for case_id, (fields, field) in RECORD_CASES.items()
    ]


@pytest.mark.parametrize(("fields", "field", "path"), record_case_params())
def test_malformed_record_fails_the_whole_load(
    make_sandbox: Callable[..., SandboxServer],
    tmp_path: Path,
    fields: dict[str, Any],
    field: str,
    path: str,
) -> None:
    record = bad_record(**fields)
    server = make_sandbox(records=[*good_records(40), record], customer_records=[])
    options: dict[str, Any] = {"api_key": server.api_key, "base_url": server.url}
    options["progress"] = False

    def run() -> object:
        # Pages of 7: several pages of good records are received before the bad one.
        if path == "export":
            return ifr.export_parquet(tmp_path / "out", page_size=7, batch_records=10, **options)
        return ifr.load_records(
            page_size=7,
            concurrency=4 if path == "load-concurrent" else 1,
            cache=tmp_path / "cache" if path == "cache" else False,
            **options,
        )

    with pytest.raises(ifr.ValidationError) as info:
        run()
    check_names_the_record(info.value, field, record)
    assert any(r.status == 200 and r.records for r in server.requests)
    if path == "cache":
        assert not [p for p in tmp_path.rglob("*") if p.is_file() and "lock" not in p.name]
    if path == "export":
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("fields", "field"), CUSTOMER_CASES.values(), ids=CUSTOMER_CASES.keys())
def test_malformed_customer_record_fails_the_whole_load(
    make_sandbox: Callable[..., SandboxServer], fields: dict[str, Any], field: str
) -> None:
    record = bad_record(customers=True, **fields)
    records = [*good_records(30, customers=True), record]
    server = make_sandbox(records=[], customer_records=records)
    with pytest.raises(ifr.ValidationError) as info:
        ifr.load_customer_records(
            api_key=server.api_key, base_url=server.url, page_size=7, progress=False
        )
    check_names_the_record(info.value, field, record)


@pytest.mark.parametrize("metadata", ["columns", "json", "dict", "drop"])
def test_modes_do_not_change_which_records_are_refused(
    make_sandbox: Callable[..., SandboxServer], metadata: str
) -> None:
    # "drop" must not drop the check of metadata's type with the metadata itself.
    record = bad_record(metadata=["not", "an", "object"])
    server = make_sandbox(records=[*good_records(10), record], customer_records=[])
    with pytest.raises(ifr.ValidationError, match="metadata") as info:
        ifr.load_records(
            api_key=server.api_key, base_url=server.url, metadata=metadata, progress=False
        )
    check_names_the_record(info.value, "metadata", record)


# --- bad pages and bodies --------------------------------------------------------------------

PAGE_CASES: dict[str, Any] = {
    # id: (body, exception class, field (ValidationError) or text in the message (APIError))
    "body-list": (b"[]", ifr.ValidationError, "response body"),
    "body-null": (b"null", ifr.ValidationError, "response body"),
    "body-string": (b'"ok"', ifr.ValidationError, "response body"),
    "body-number": (b"200", ifr.ValidationError, "response body"),
    "records-missing": (b'{"cursor": "abc"}', ifr.ValidationError, "user_records"),
    "records-other-endpoint": (b'{"customer_records": []}', ifr.ValidationError, "user_records"),
    "records-object": (b'{"user_records": {"0": {}}}', ifr.ValidationError, "user_records"),
    "records-string": (b'{"user_records": "[]"}', ifr.ValidationError, "user_records"),
    "records-null": (b'{"user_records": null}', ifr.ValidationError, "user_records"),
    "record-not-object": (b'{"user_records": [7]}', ifr.ValidationError, "user_records"),
    "cursor-number": (b'{"user_records": [], "cursor": 5}', ifr.ValidationError, "cursor"),
    "cursor-bool": (b'{"user_records": [], "cursor": true}', ifr.ValidationError, "cursor"),
    "cursor-object": (b'{"user_records": [], "cursor": {}}', ifr.ValidationError, "cursor"),
    "cursor-list": (b'{"user_records": [], "cursor": ["a"]}', ifr.ValidationError, "cursor"),
    "cursor-nan": (b'{"user_records": [], "cursor": NaN}', ifr.ValidationError, "cursor"),
    "html": (b"<html><body>Bad Gateway</body></html>", ifr.APIError, "<html><body>Bad Gateway"),
    "truncated-json": (b'{"user_records": [{"user_id": "U1"', ifr.APIError, "not JSON"),
    "invalid-utf8": (b"\xff\xfe{}", ifr.APIError, "not JSON"),
    "whitespace": (b"  \n", ifr.APIError, "not JSON"),
    "empty": (b"", ifr.APIError, "not JSON"),
    "nested-too-deep": pytest.param(
        b'{"user_records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        ifr.APIError,
        "JSON",
    ),
}


def serve_bad_page(server: SandboxServer, body: bytes, at: int) -> None:
    """Make the `at`-th request get `body`; the ones before get valid pages with cursors."""
    records = generate_records(10 * (at - 1), seed=5)
    for i in range(at - 1):
        page = {"user_records": records[10 * i : 10 * (i + 1)], "cursor": f"cursor-{i + 1}"}
        server.inject(Fault("status", status=200, body=json.dumps(page)), times=1)
    server.inject(Fault("status", status=200, body=body), times=1)


def page_case_params() -> list[Any]:
    params = []
    for case_id, case in PAGE_CASES.items():
        if hasattr(case, "marks"):  # already a pytest.param (a ParameterSet is a tuple too)
            params.append(pytest.param(*case.values, id=case_id, marks=case.marks))
        else:
            params.append(pytest.param(*case, id=case_id))
    return params


@pytest.mark.parametrize(("body", "error", "needle"), page_case_params())
@pytest.mark.parametrize("at", [1, 3], ids=["first-page", "third-page"])
def test_malformed_page_is_a_clear_error(
    make_sandbox: Callable[..., SandboxServer],
    tmp_path: Path,
    body: bytes,
    error: type[ifr.ImpactFrameError],
    needle: str,
    at: int,
) -> None:
    server = make_sandbox(n_records=50, n_customer_records=0)
    serve_bad_page(server, body, at)
    with pytest.raises(ifr.ImpactFrameError) as info:
        ifr.load_records(
            api_key=server.api_key,
            base_url=server.url,
            page_size=10,
            cache=tmp_path,
            progress=False,
            concurrency=1,  # the injected pages answer one chain's requests in order
        )
    exc = info.value
    assert type(exc) is error
    if isinstance(exc, ifr.ValidationError):
        assert exc.field == needle
        assert needle in str(exc)
    else:
        assert isinstance(exc, ifr.APIError)
        assert exc.status == 200
        assert needle in str(exc)
        assert len(str(exc)) < 500  # the start of the body, not all of it
    # Not retried: the same body would come back. One request per page, nothing cached.
    assert len(server.requests) == at
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "lock" not in p.name]


@pytest.mark.parametrize("digits", [30, 5000])
def test_amount_with_many_digits_is_a_clear_error(
    make_sandbox: Callable[..., SandboxServer], digits: int
) -> None:
    # 5000 digits is past Python's int-to-text limit (4300): json.loads itself refuses it.
    record = b'{"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": 1'
    body = b'{"user_records": [' + record + b"0" * digits + b"}]}"
    server = make_sandbox(n_records=5, n_customer_records=0)
    server.inject(Fault("status", status=200, body=body), times=1)
    with pytest.raises(ifr.ImpactFrameError) as info:
        ifr.load_records(api_key=server.api_key, base_url=server.url, progress=False)
    if isinstance(info.value, ifr.ValidationError):
        assert info.value.field == "tree_planted"
    else:
        assert type(info.value) is ifr.APIError
        assert info.value.status == 200
    assert len(str(info.value)) < 500


def test_error_body_that_is_not_json_keeps_its_status(
    make_sandbox: Callable[..., SandboxServer],
) -> None:
    server = make_sandbox(n_records=5, n_customer_records=0)
    server.inject(Fault("status", status=404, body=b"<h1>Not Found</h1>"), times=1)
    with pytest.raises(ifr.APIError) as info:
        ifr.load_records(api_key=server.api_key, base_url=server.url, progress=False)
    assert type(info.value) is ifr.APIError
    assert info.value.status == 404
    assert "<h1>Not Found</h1>" in str(info.value)


def test_empty_503_is_retried_like_any_503(
    make_sandbox: Callable[..., SandboxServer], fake_sleep: Any
) -> None:
    server = make_sandbox(n_records=5, n_customer_records=0)
    server.inject(Fault("status", status=503, body=b""), times=1)
    client = ifr.Client(server.api_key, base_url=server.url)
    client._sleep = fake_sleep
    assert len(ifr.load_records(client=client, progress=False)) == 5
    assert len(fake_sleep) == 1


@pytest.mark.parametrize("metadata", ["columns", "json"])
def test_metadata_nested_too_deep_is_a_validation_error(metadata: str) -> None:
    nested: Any = "x"
    for _ in range(5000):
        nested = {"k": nested}
    record = bad_record(metadata=nested)
    with pytest.raises(ifr.ValidationError, match="metadata"):
        records_to_frame([record], metadata=metadata)


# --- fuzzing the page parser and the frame builder -------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
TIMES = st.datetimes(
    min_value=pd.Timestamp("2000-01-01").to_pydatetime(),
    max_value=pd.Timestamp("2030-12-31").to_pydatetime(),
).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z")


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes any JSON value."""
    return st.one_of(valid, valid, JSON_VALUES)


CUSTOMER = st.fixed_dictionaries(
    {"customer_id": field(st.text(min_size=1, max_size=6)), "customer_email": field(st.emails())},
    optional={"customer_name": field(st.text(max_size=8))},
)
KNOWN = {
    "user_id": field(st.text(min_size=1, max_size=6)),
    "time_utc": field(TIMES),
    "category": field(st.sampled_from(["food", "retail"])),
    "metadata": field(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)),
    "customer": field(CUSTOMER),
    **{kind: field(st.integers(min_value=0, max_value=2**63 - 1)) for kind in IMPACT_TYPES},
}
RECORDS = st.builds(
    lambda extra, known: {**extra, **known},
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2),
    st.fixed_dictionaries(
        {"user_id": KNOWN["user_id"], "time_utc": KNOWN["time_utc"]},
        optional={k: v for k, v in KNOWN.items() if k not in ("user_id", "time_utc")},
    ),
)
BODIES = st.one_of(
    JSON_VALUES,
    st.builds(
        lambda extra, known: {**extra, **known},
        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2),
        st.fixed_dictionaries(
            {},
            optional={
                "user_records": st.one_of(st.lists(RECORDS, max_size=4), JSON_VALUES),
                "customer_records": st.one_of(st.lists(RECORDS, max_size=4), JSON_VALUES),
                "cursor": st.one_of(st.text(max_size=10), JSON_VALUES),
            },
        ),
    ),
)


def outcome(func: Callable[..., Any], *args: Any) -> tuple[Any, ifr.ValidationError | None]:
    """``(result, None)``, or ``(None, error)`` when `func` raises a ValidationError."""
    try:
        return func(*args), None
    except ifr.ValidationError as exc:
        return None, exc


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, endpoint=st.sampled_from(["records", "customer_records"]))
def test_fuzzed_page_is_a_frame_or_a_validation_error(body: Any, endpoint: str) -> None:
    records_key = "user_records" if endpoint == "records" else "customer_records"
    # What the client hands over: the body after a JSON round trip (NaN survives it).
    body = json.loads(json.dumps(body))
    page, error = outcome(decode_page, body, records_key)
    if error is not None:
        assert error.field in ("response body", records_key, "cursor")
        return
    assert isinstance(page.records, list)
    assert page.cursor is None or (isinstance(page.cursor, str) and page.cursor)
    with warnings.catch_warnings():
        # Drift and duplicate keys are warned and kept; any other warning still fails.
        warnings.simplefilter("ignore", ImpactFrameWarning)
        frame, error = outcome(records_to_frame, page.records, endpoint)
    if error is not None:
        assert error.field
        assert str(error)
        return
    # A frame: every record became a row (identical repeats once), in the schema.
    distinct = {json.dumps(r, sort_keys=True) for r in page.records}
    keys = {(r["user_id"], r["time_utc"]) for r in page.records}
    assert len(keys) <= len(frame) <= len(distinct)
    assert list(frame.columns[: len(fixed_columns(endpoint))]) == fixed_columns(endpoint)
    assert isinstance(frame.index, pd.RangeIndex)
    validate(frame, endpoint)


@settings(max_examples=50, deadline=None)
@given(records=st.lists(RECORDS, max_size=5))
def test_fuzzed_records_keep_every_valid_value(records: list[dict[str, Any]]) -> None:
    # Records whose known fields are all valid must come back whole, drift included.
    valid = [r for r in records if _is_valid(r)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImpactFrameWarning)
        frame, error = outcome(records_to_frame, valid, "customer_records")
    if error is not None:
        # Only a drift field may still be refused: one whose name clashes with a column.
        assert error.field not in ("user_id", "time_utc", "customer", *IMPACT_TYPES)
        return
    got = set(zip(frame["user_id"], frame["time_utc"], frame["amount"], strict=True))
    for record in valid:
        amount = next(record[kind] for kind in IMPACT_TYPES if kind in record)
        assert (record["user_id"], pd.Timestamp(record["time_utc"]), amount) in got


def _is_valid(record: dict[str, Any]) -> bool:
    """Whether the known fields of `record` follow SPEC §1 (extra fields are not judged)."""
    if not isinstance(record.get("user_id"), str) or not isinstance(record.get("time_utc"), str):
        return False
    if not VALID_TIME.fullmatch(record["time_utc"]):
        return False
    kinds = [k for k in IMPACT_TYPES if k in record]
    if len(kinds) != 1:
        return False
    amount = record[kinds[0]]
    if type(amount) is not int or not 0 <= amount < 2**63:
        return False
    if "category" in record and not isinstance(record["category"], str | None):
        return False
    metadata = record.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        return False
    customer = record.get("customer")
    if not isinstance(customer, dict):
        return False
    if not isinstance(customer.get("customer_id"), str):
        return False
    if not isinstance(customer.get("customer_email"), str):
        return False
    return isinstance(customer.get("customer_name", ""), str)


def test_nan_and_infinity_in_amounts_are_refused() -> None:
    # Python's json accepts NaN and Infinity; an amount must still be a non-negative integer.
    for value in (math.nan, math.inf):
        with pytest.raises(ifr.ValidationError, match="tree_planted"):
            records_to_frame([bad_record(tree_planted=value)])


@pytest.fixture(scope="module")
def fuzz_server() -> Any:
    with SandboxServer(records=[], customer_records=[]) as server:
        yield server


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(RECORDS, max_size=6),
    endpoint=st.sampled_from(["records", "customer_records"]),
    page_size=st.integers(min_value=1, max_value=4),
)
def test_fuzzed_records_through_the_loader_match_the_reference(
    fuzz_server: SandboxServer, records: list[dict[str, Any]], endpoint: str, page_size: int
) -> None:
    # Differential: the loader's path (HTTP, paging, its own parser and builder) must agree
    # with records_to_frame on the same records: the same frame, or a ValidationError each.
    fuzz_server.set_records(records, endpoint=endpoint)
    served = fuzz_server.served_records(endpoint)
    load = ifr.load_records if endpoint == "records" else ifr.load_customer_records
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImpactFrameWarning)
        try:
            expected = records_to_frame(served, endpoint)
        except ifr.ValidationError:
            expected = None
        if expected is None:
            with pytest.raises(ifr.ValidationError):
                load(
                    api_key=fuzz_server.api_key,
                    base_url=fuzz_server.url,
                    page_size=page_size,
                    progress=False,
                )
            return
        got = load(
            api_key=fuzz_server.api_key,
            base_url=fuzz_server.url,
            page_size=page_size,
            progress=False,
        )
    pd.testing.assert_frame_equal(got, expected)
