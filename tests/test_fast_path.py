"""The Arrow reader gives exactly what the Python reader gives (frames, warnings, errors).

One builder, `_frame._builder.FrameBuilder`, two readers: fed decoded pages (`loads` of every
body) it reads them all with the Python reader; fed the bodies (bytes) it reads them with
Arrow, and only the pages Arrow declines with the Python reader. A
hypothesis test throws odd records at both (metadata of every shape, missing names, new
impact types, unknown fields, duplicates, empty pages, bad records, bodies with spaces,
escapes and line breaks) and compares everything; the other tests pin the pieces (the page
envelope, timestamps, the null scan, the pooled transport, the loader end to end) and run the
benchmark's smoke mode.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import impactframe as ifr
from impactframe._constants import ENDPOINTS, IMPACT_TYPES
from impactframe._frame._arrow_reader import PageReader, has_null, milliseconds
from impactframe._frame._batch import Chunk
from impactframe._frame._builder import FrameBuilder
from impactframe._frame._python_reader import PageChecker
from impactframe._paging._cap import get_page, walk_query
from impactframe._paging._concurrent import iter_pages
from impactframe._paging._pages import (
    Page,
    _may_hold_a_long_int,
    decode_page,
    loads,
    page_of,
    parse_page,
)
from impactframe._params import normalize_query
from impactframe.client import Client
from impactframe.client import _pooled as _transport
from impactframe.errors import ValidationError
from impactframe.sandbox import Fault, SandboxServer, generate_records

ROOT = Path(__file__).resolve().parent.parent

# -- running both paths ----------------------------------------------------------------------


def outcome(build: Any) -> tuple[Any, list[tuple[type[Warning], str]]]:
    """``(("frame", df) or ("error", field, message), warnings)`` of ``build()``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: Any = ("frame", build())
        except ValidationError as exc:
            result = ("error", exc.field, str(exc))
    return result, [(w.category, str(w.message)) for w in caught]


def reference(bodies: list[bytes], endpoint: str, **options: Any) -> Any:
    """Every page through the Python reader (the wording of every error)."""

    def build() -> pd.DataFrame:
        builder = FrameBuilder(endpoint, **options)
        for body in bodies:
            builder.add(decode_page(loads(body), ENDPOINTS[endpoint][1]))
        assert builder._slow_pages == 0  # decoded pages: never Arrow's
        return builder.finish()

    return outcome(build)


def fast(bodies: list[bytes], endpoint: str, *, raw_pages: bool = True, **options: Any) -> Any:
    """The pages as bodies: the Arrow reader first, the Python reader for what it declines."""
    builder = FrameBuilder(endpoint, **options)

    def build() -> pd.DataFrame:
        for body in bodies:
            page: Page | bytes = body
            if raw_pages:
                page = parse_page(body, ENDPOINTS[endpoint][1])
            builder.add_raw(page)
        return builder.finish()

    return (*outcome(build), builder)


def assert_same(expected: Any, actual: Any) -> None:
    (want, want_warnings), (got, got_warnings) = expected, actual
    assert got[0] == want[0], (got[:1], want[1:] if want[0] == "error" else "a frame")
    if want[0] == "frame":
        pd.testing.assert_frame_equal(got[1], want[1])
    else:
        assert got[1:] == want[1:]
    assert got_warnings == want_warnings


def envelope(records: list[Any], endpoint: str, cursor: str | None, style: str) -> bytes:
    body: dict[str, Any] = {ENDPOINTS[endpoint][1]: records}
    if cursor is not None:
        body["cursor"] = cursor
    if style == "compact":
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    elif style == "ascii":
        text = json.dumps(body)
    else:
        text = json.dumps(body, indent=1)
    return text.encode("utf-8", "surrogatepass")


# -- odd records -------------------------------------------------------------------------------

TIMES = [
    "2024-01-01T00:00:00.000Z",
    "2024-01-01T00:00:00.001Z",
    "2024-02-29T12:00:00.500Z",
    "1999-12-31T23:59:59.999Z",
    "0001-01-01T00:00:00.000Z",
    "9999-12-31T23:59:59.999Z",
]
ODD_TIMES = [
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00.5Z",
    "2024-01-01T00:00:00.000+00:00",
    "2024-01-01T00:00:00.000000Z",
    "2023-02-29T00:00:00.000Z",
    "2024-01-01 00:00:00",
    "0000-01-01T00:00:00.000Z",
    "2024-01-01T23:59:60.000Z",
    "2024-01-01T24:00:00.000Z",
    "2024-01-01T00:00:00.000z",
    17,
    None,
]
META_KEYS = [
    *("source", "batch", "sku", "a.b", "", "Ünï", 'q"t', "cursor", "null", "x y", "category"),
    *("ategory", "oney_donated"),  # with the prefixes "c" and "m": a fixed column's name
]
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
ODD_TEXT = st.sampled_from(["null", "a\nb", '"q"', "\\", "\u2028", "\ud800", "é", "\x00"])
LEAF = st.one_of(
    st.integers(-5, 5), st.floats(allow_nan=False), st.booleans(), st.none(), st.just([1, "a"])
)


@st.composite
def metadata(draw: st.DrawFn, odd: float) -> Any:
    def rare() -> bool:
        return draw(st.floats(0, 1)) < odd

    if rare():
        return draw(st.sampled_from([None, "text", 5, [], {}]))
    keys = draw(st.lists(st.sampled_from(META_KEYS), max_size=3, unique=True))
    meta: dict[str, Any] = {}
    for key in keys:
        value: Any = draw(st.one_of(TEXT, ODD_TEXT) if rare() else st.sampled_from(["a", "b"]))
        if rare():
            value = draw(st.one_of(LEAF, st.dictionaries(st.sampled_from("ab"), LEAF, max_size=2)))
        meta[key] = value
    return meta


@st.composite
def record(draw: st.DrawFn, customers: bool, odd: float) -> Any:
    def rare() -> bool:
        return draw(st.floats(0, 1)) < odd

    if rare() and rare():
        return draw(st.sampled_from([None, 7, "record", []]))
    rec: dict[str, Any] = {}
    if not (rare() and rare()):
        rec["user_id"] = (
            draw(st.sampled_from(["U1", "U2", "Ü3"]))
            if not rare()
            else draw(st.one_of(TEXT, st.integers(), st.none()))
        )
    if not (rare() and rare()):
        rec["time_utc"] = draw(st.sampled_from(ODD_TIMES if rare() else TIMES))
    kinds = list(IMPACT_TYPES)
    if rare():
        kinds.append(draw(st.sampled_from(["plastic_recycled", "coral_restored"])))
    kind = draw(st.sampled_from(kinds))
    amount: Any = draw(st.integers(0, 1000))
    if rare():
        amount = draw(st.sampled_from([-1, 2**63, 2**63 - 1, 1.5, 1.0, "5", True, None]))
    rec[kind] = amount
    if rare():
        rec[draw(st.sampled_from(IMPACT_TYPES))] = draw(st.sampled_from([1, None]))
    if draw(st.booleans()):
        rec["category"] = (
            draw(st.sampled_from(["food", "retail"]))
            if not rare()
            else draw(st.one_of(st.none(), st.integers(), TEXT))
        )
    if customers and not (rare() and rare()):
        customer: dict[str, Any] = {"customer_id": "C1", "customer_email": "a@b.example"}
        if draw(st.booleans()):
            customer["customer_name"] = draw(st.sampled_from(["Ann", "Bé"])) if not rare() else None
        if rare():
            customer[draw(st.sampled_from(["customer_id", "customer_email", "tier"]))] = draw(
                st.one_of(st.none(), st.integers(), TEXT)
            )
        rec["customer"] = customer
    if draw(st.booleans()):
        rec["metadata"] = draw(metadata(odd))
    if rare():
        rec[draw(st.sampled_from(["project", "user_id2", "metadata_x", "amount"]))] = draw(
            st.one_of(LEAF, TEXT)
        )
    if not customers and rare() and rare():
        rec["customer"] = {"customer_id": "C1", "customer_email": "a@b.example"}
    return rec


@st.composite
def pages(draw: st.DrawFn, customers: bool) -> list[list[Any]]:
    odd = draw(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.3]))
    out = draw(st.lists(st.lists(record(customers, odd), max_size=6), min_size=1, max_size=6))
    flat = [r for page in out for r in page]
    if flat and draw(st.booleans()):  # repeat a record (or a changed copy) in a later page
        copy = json.loads(json.dumps(draw(st.sampled_from(flat))))
        if isinstance(copy, dict) and draw(st.booleans()):
            copy["category"] = "other"
        out.append([copy, *draw(st.lists(record(customers, odd), max_size=2))])
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    endpoint=st.sampled_from(["records", "customer_records"]),
    metadata_mode=st.sampled_from(["columns", "columns", "columns", "drop", "json", "dict"]),
    prefix=st.sampled_from(["metadata_", "metadata_", "c", "m"]),
    dtype_backend=st.sampled_from(["numpy_nullable", "pyarrow"]),
    batch_bytes=st.sampled_from([1, 400, 1 << 20]),
    raw_pages=st.booleans(),
)
def test_arrow_reader_equals_the_python_reader(
    data: st.DataObject,
    endpoint: str,
    metadata_mode: str,
    prefix: str,
    dtype_backend: str,
    batch_bytes: int,
    raw_pages: bool,
) -> None:
    page_records = data.draw(pages(endpoint == "customer_records"))
    styles = data.draw(
        st.lists(
            st.sampled_from(["compact", "compact", "compact", "ascii", "ascii", "indent"]),
            min_size=len(page_records),
            max_size=len(page_records),
        )
    )
    bodies = []
    for i, (records, style) in enumerate(zip(page_records, styles, strict=True)):
        cursor = f"c{i}" if i < len(page_records) - 1 else None
        try:
            body = envelope(records, endpoint, cursor, style)
        except ValueError:  # a float json cannot write without NaN: keep it simple
            body = envelope(records, endpoint, cursor, "ascii")
        bodies.append(body)
    options = {"metadata": metadata_mode, "metadata_prefix": prefix, "dtype_backend": dtype_backend}
    expected = reference(bodies, endpoint, **options)
    *actual, builder = fast(
        bodies, endpoint, raw_pages=raw_pages, batch_bytes=batch_bytes, **options
    )
    assert_same(expected, actual)
    event(f"outcome: {expected[0][0]}, warnings: {bool(expected[1])}")
    event(f"pages through Arrow: {'some' if builder._slow_pages < len(bodies) else 'none'}")


def columns_of(chunk: Chunk) -> dict[str, Any]:
    """Every column of a chunk as Python values (what the frame is assembled from)."""

    def sparse(store: dict[str, pa.ChunkedArray] | None) -> Any:
        return None if store is None else {k: v.to_pylist() for k, v in sorted(store.items())}

    return {
        "user_id": chunk.user_id.to_pylist(),
        "customer": None if chunk.customer is None else [c.to_pylist() for c in chunk.customer],
        "time": chunk.time.tolist(),
        "impact": chunk.impact.tolist(),
        "amount": chunk.amount.tolist(),
        "category": chunk.category.to_pylist(),
        "meta": sparse(chunk.meta),
        "meta_kind": {k: v.tolist() for k, v in chunk.meta_kind.items()},
        "meta_json": None if chunk.meta_json is None else chunk.meta_json.to_pylist(),
        "extra": sparse(chunk.extra),
        "customer_extra": sparse(chunk.customer_extra),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    endpoint=st.sampled_from(["records", "customer_records"]),
    metadata_mode=st.sampled_from(["columns", "columns", "drop", "json", "dict"]),
    dtype_backend=st.sampled_from(["numpy_nullable", "pyarrow"]),
)
def test_a_page_arrow_reads_is_the_chunk_the_python_reader_reads(
    data: st.DataObject, endpoint: str, metadata_mode: str, dtype_backend: str
) -> None:
    records = data.draw(pages(endpoint == "customer_records"))[0]
    body = envelope(records, endpoint, None, data.draw(st.sampled_from(["compact", "ascii"])))
    text = pa.large_string() if dtype_backend == "numpy_nullable" else pa.string()
    arrow = PageReader(endpoint, metadata_mode, text)
    chunk = None  # as the builder: Arrow parses only the bodies it accepts (no null, ...)
    if arrow.accepts(body, False):
        chunk = arrow.chunk(arrow.parse_now([body], arrow.parse_options), 1)
    try:
        expected = PageChecker(endpoint, metadata_mode, text).read(
            decode_page(loads(body), ENDPOINTS[endpoint][1]).records, 0
        )
    except (ValidationError, ValueError):
        assert chunk is None  # what the Python reader refuses, Arrow never reads
        return
    event(f"Arrow reads it: {chunk is not None}")
    if chunk is not None:
        assert columns_of(chunk) == columns_of(expected)
        assert chunk.starts.tolist() == expected.starts.tolist() == [0]


# -- the fast path is taken ----------------------------------------------------------------------


def sandbox_bodies(n: int, *, customers: bool, page_size: int = 100) -> list[bytes]:
    records = generate_records(n, seed=3, customers=customers)
    records.sort(key=lambda r: (r["time_utc"], r["user_id"]))
    endpoint = "customer_records" if customers else "records"
    return [
        envelope(records[i : i + page_size], endpoint, f"c{i}", "compact")
        for i in range(0, n, page_size)
    ]


@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
@pytest.mark.parametrize("metadata_mode", ["columns", "drop"])
@pytest.mark.parametrize("dtype_backend", ["numpy_nullable", "pyarrow"])
def test_generated_data_takes_the_arrow_path(
    endpoint: str, metadata_mode: str, dtype_backend: str
) -> None:
    bodies = sandbox_bodies(3000, customers=endpoint == "customer_records")
    options = {"metadata": metadata_mode, "dtype_backend": dtype_backend}
    expected = reference(bodies, endpoint, **options)
    *actual, builder = fast(bodies, endpoint, batch_bytes=50_000, **options)
    assert_same(expected, actual)
    assert builder._slow_pages == 0
    assert len(builder) == 3000


def test_an_odd_page_goes_alone_through_the_reference_checks() -> None:
    bodies = sandbox_bodies(2000, customers=True)
    odd = json.loads(bodies[7])
    odd["customer_records"][3]["category"] = None  # a JSON null: Arrow cannot tell it apart
    odd["customer_records"][4]["metadata"] = {"nested": {"k": 1}}  # flattened by the reference
    bodies[7] = json.dumps(odd).encode()
    expected = reference(bodies, "customer_records")
    *actual, builder = fast(bodies, "customer_records", batch_bytes=60_000)
    assert_same(expected, actual)
    assert builder._slow_pages == 1  # the batch was halved down to that page


def test_pages_with_nulls_take_the_reference_checks_and_still_make_few_chunks() -> None:
    bodies = []
    for body in sandbox_bodies(4000, customers=True, page_size=50):
        page = json.loads(body)
        page["customer_records"][0]["category"] = None  # every page has a JSON null
        bodies.append(json.dumps(page).encode())
    expected = reference(bodies, "customer_records")
    *actual, builder = fast(bodies, "customer_records")
    assert_same(expected, actual)
    assert builder._slow_pages == len(bodies) == 80
    assert len(builder._chunks) <= 80 // 16 + 16


def test_drift_and_new_types_are_decided_over_all_chunks_with_the_same_warnings() -> None:
    bodies = sandbox_bodies(1500, customers=False)
    page = json.loads(bodies[10])
    page["user_records"][0]["project_id"] = "P-1"  # an unknown field: a drift column
    page["user_records"][1] = {
        "user_id": "U9",
        "time_utc": "2030-01-01T00:00:00.000Z",
        "plastic_recycled": 3,
    }
    bodies[10] = json.dumps(page).encode()
    expected = reference(bodies, "records")
    *actual, builder = fast(bodies, "records", batch_bytes=30_000)
    assert_same(expected, actual)
    assert builder._slow_pages == 1  # the other pages stay Arrow's
    assert {category for category, _ in actual[1]} == {ifr.SchemaDriftWarning}


def test_repeats_across_batches_are_dropped_and_conflicts_warned() -> None:
    bodies = sandbox_bodies(1000, customers=False, page_size=50)
    pages_ = [json.loads(body) for body in bodies]
    for i in (4, 9, 12):  # start a page with the previous page's last record (the API does)
        pages_[i]["user_records"].insert(0, pages_[i - 1]["user_records"][-1])
    changed = dict(pages_[15]["user_records"][0], category="changed")
    pages_[16]["user_records"].insert(0, changed)  # same key, other content: kept and warned
    bodies = [json.dumps(page).encode() for page in pages_]
    expected = reference(bodies, "records")
    *actual, builder = fast(bodies, "records", batch_bytes=20_000)
    assert_same(expected, actual)
    assert builder._slow_pages == 0
    assert len(builder) == 1001
    assert [category for category, _ in actual[1]] == [ifr.DuplicateRecordWarning]


def test_a_bad_record_is_reported_like_the_reference_with_its_page_and_position() -> None:
    bodies = sandbox_bodies(1000, customers=False)
    page = json.loads(bodies[6])
    page["user_records"][5]["waste_removed"] = -3
    page["user_records"][5].pop("tree_planted", None)
    for kind in IMPACT_TYPES[:1] + IMPACT_TYPES[2:]:
        page["user_records"][5].pop(kind, None)
    bodies[6] = json.dumps(page).encode()
    expected = reference(bodies, "records")
    assert expected[0][0] == "error"
    assert "record 605 overall" in expected[0][2]
    *actual, _ = fast(bodies, "records", batch_bytes=100_000)
    assert_same(expected, actual)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (
            b'{"user_records": [{"user_id": "U1", "user_id": "U2", "tree_planted": 1, '
            b'"time_utc": "2024-01-01T00:00:00.000Z"}]}',
            "user_id",
        ),
        (
            b'{"user_records": [{"user_id": "U1", "tree_planted": 1, "tree_planted": 2, '
            b'"time_utc": "2024-01-01T00:00:00.000Z"}]}',
            "tree_planted",
        ),
        (
            b'{"user_records": [{"user_id": "U1", "tree_planted": 1, '
            b'"time_utc": "2024-01-01T00:00:00.000Z", "metadata": {"k": "a", "k": "b"}}]}',
            "k",
        ),
        (
            b'{"user_records": [{"user_id": "A", "tree_planted": 1, '
            b'"time_utc": "2024-01-01T00:00:00.000Z"}], "user_records": []}',
            "user_records",
        ),
    ],
)
@pytest.mark.parametrize("raw_pages", [True, False])
def test_a_name_given_twice_is_ambiguous_never_last_one_wins(
    body: bytes, name: str, raw_pages: bool
) -> None:
    good = envelope(
        [{"user_id": "U0", "time_utc": "2023-01-01T00:00:00.000Z", "tree_planted": 1}],
        "records",
        "c",
        "compact",
    )
    *actual, _ = fast([good, body], "records", raw_pages=raw_pages, batch_bytes=1 << 20)
    if raw_pages and name == "user_records":  # the envelope: refused by parse_page
        with pytest.raises(ValidationError, match="appears twice"):
            parse_page(body, "user_records")
        return
    assert actual[0][0] == "error"
    assert actual[0][1] == name
    assert "appears twice" in actual[0][2]


def test_pages_that_come_slowly_are_checked_without_waiting_for_a_full_batch() -> None:
    bodies = sandbox_bodies(300, customers=False)
    page = json.loads(bodies[0])
    page["user_records"][7]["user_id"] = 7
    builder = FrameBuilder("records", batch_bytes=1 << 30, batch_seconds=0)
    builder.add_raw(json.dumps(page).encode())  # its own batch, parsed meanwhile
    with pytest.raises(ValidationError, match="record 7 of the page") as info:
        builder.add_raw(bodies[1])  # starts the next batch, so takes the first one
    assert info.value.field == "user_id"


def test_empty_input_and_empty_pages() -> None:
    for bodies in ([], [envelope([], "records", None, "compact")] * 3):
        expected = reference(bodies, "records")
        *actual, _ = fast(bodies, "records")
        assert_same(expected, actual)


def test_add_takes_decoded_records_too() -> None:
    records = generate_records(300, seed=1)
    want = FrameBuilder("records")
    got = FrameBuilder("records")
    for i in range(0, 300, 70):
        page = {"user_records": records[i : i + 70], "cursor": "c"}
        want.add_raw(json.dumps(page).encode())
        assert got.add(page_of(records[i : i + 70], "c")) == len(page["user_records"])
    pd.testing.assert_frame_equal(got.finish(), want.finish())
    assert want._slow_pages == 0


def test_invalid_utf8_goes_to_the_reference() -> None:
    body = '{"user_records": [{"user_id": "\ud800", "time_utc": "2024-01-01T00:00:00.000Z", '
    body += '"tree_planted": 1}]}'
    raw = body.encode("utf-8", "surrogatepass")  # what json.loads(bytes) still accepts
    assert_same(reference([raw], "records"), fast([raw], "records", raw_pages=False)[:2])


# -- the pieces -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.datetimes(
            min_value=pd.Timestamp("0001-01-01").to_pydatetime(),
            max_value=pd.Timestamp("9999-12-31").to_pydatetime(),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_timestamp_arithmetic_matches_arrows_cast(moments: list[Any]) -> None:
    texts = [m.strftime("%Y-%m-%dT%H:%M:%S.") + f"{m.microsecond // 1000:03d}Z" for m in moments]
    texts = [t.rjust(24, "0") for t in texts]  # strftime drops a year's leading zeros
    array = pa.array(texts)
    expected = array.cast(pa.timestamp("ms", tz="UTC")).view(pa.int64()).to_numpy()
    np.testing.assert_array_equal(milliseconds(array), expected)


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29T00:00:00.000Z",
        "2024-04-31T00:00:00.000Z",
        "2024-13-01T00:00:00.000Z",
        "0000-06-01T00:00:00.000Z",
        "2024-01-01T24:00:00.000Z",
        "2024-01-01T23:59:60.000Z",
        "2024-01-01T00:00:00.000+0",
        "2024-01-01T00:00:00,000Z",
        "2024-01-01T00:00:00.0001Z",
        "２024-01-01T00:00:00.000Z",
    ],
)
def test_timestamps_left_to_the_reference_are_ones_it_refuses_or_reads_itself(
    text: str,
) -> None:
    assert milliseconds(pa.array([text])) is None
    body = envelope(
        [{"user_id": "U1", "time_utc": text, "tree_planted": 1}], "records", None, "compact"
    )
    assert_same(reference([body], "records"), fast([body], "records")[:2])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=9000), st.integers(0, 9000))
def test_null_scan_finds_every_null(body: bytes, at: int) -> None:
    with_null = body[:at] + b"null" + body[at:]
    assert has_null(with_null)
    assert has_null(body) == (b"null" in body)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5000), st.integers(sys.get_int_max_str_digits() + 1, 9000))
def test_long_integers_always_go_to_json_loads(pad: int, digits: int) -> None:
    body = b" " * pad + b'{"user_records": [], "n": ' + b"7" * digits + b"}"
    assert _may_hold_a_long_int(body)
    with pytest.raises(ValueError, match="integer string conversion"):
        parse_page(body, "user_records")


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    body=st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries(
            {},
            optional={
                "user_records": st.one_of(st.lists(JSON_VALUES, max_size=3), JSON_VALUES),
                "cursor": st.one_of(st.text(max_size=6), JSON_VALUES),
                "other": JSON_VALUES,
                "has_more": JSON_VALUES,
            },
        ),
    ),
    spaced=st.booleans(),
)
def test_raw_envelope_reading_equals_decode_page(body: Any, spaced: bool) -> None:
    text = json.dumps(body, separators=(", ", ": ") if spaced else (",", ":")).encode()
    try:
        expected: Any = decode_page(json.loads(text), "user_records")
    except ValidationError as exc:
        expected = (exc.field, str(exc))
    try:
        page = parse_page(text, "user_records")
    except ValidationError as exc:
        got: Any = (exc.field, str(exc))
    else:
        got = page
    if isinstance(got, tuple):
        assert got == expected
        return
    assert isinstance(expected, Page)
    assert (got.count, got.cursor, got.extra) == (
        len(expected.records),
        expected.cursor,
        expected.extra,
    )
    records = got.records if got.body is None else json.loads(got.body)["user_records"]
    assert json.dumps(records) == json.dumps(expected.records)  # NaN-proof equality


@pytest.mark.parametrize(
    "body",
    [b"[]", b"", b"<html>", b'{"user_records": [1,]}', b"\xff{}", b'{"user_records": [NaN]}'],
)
def test_raw_envelope_errors_are_the_ones_json_loads_gives(body: bytes) -> None:
    try:
        expected: Any = decode_page(json.loads(body), "user_records")
    except ValueError as exc:
        expected = (type(exc), str(exc))
    try:
        got: Any = parse_page(body, "user_records")
    except ValueError as exc:
        got = (type(exc), str(exc))
    else:
        assert got.records == expected.records or math.isnan(got.records[0])
        return
    assert got == expected


# -- HTTP ------------------------------------------------------------------------------------------


def test_raw_pages_walk_like_pages(sandbox: SandboxServer) -> None:
    query = normalize_query("customer_records", page_size=300, sort_order="desc")
    with Client(sandbox.api_key, base_url=sandbox.url) as client:
        pages_ = list(walk_query(client, "customer_records", query, max_records=1234))
        raw = list(iter_pages(client, "customer_records", query, max_records=1234))
    assert [(p.count, p.cursor) for p in raw] == [(len(p.records), p.cursor) for p in pages_]
    decoded = [r for p in raw for r in json.loads(p.body or b"{}").get("customer_records", [])]
    assert decoded[:1000] == [r for p in pages_ for r in p.records][:1000]


def test_own_session_goes_through_the_pooled_route(sandbox: SandboxServer) -> None:
    with Client(sandbox.api_key, base_url=sandbox.url) as client:
        get_page(client, "records", {"limit": "3"})
        assert isinstance(client._route, _transport.Route)
        assert _transport.usable(client._route, sandbox.url + "/v1/records")
        client._session.cookies.set("seen", "1")  # requests would send it: requests sends
        assert not _transport.usable(client._route, sandbox.url + "/v1/records")
        assert len(get_page(client, "records", {"limit": "3"}).records) == 3


def test_a_proxy_from_the_environment_keeps_requests_in_charge(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Off loopback only: a loopback base URL never goes through an environment proxy (SPEC §10).
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    with Client(sandbox.api_key, base_url="https://api.example.invalid", max_retries=0) as client:
        with pytest.raises(ifr.APIError, match=r"ProxyError|ConnectionError"):
            get_page(client, "records", {"limit": "1"})
        assert client._route is None


@pytest.mark.parametrize("concurrency", [1, 3])
def test_loader_equals_the_reference_end_to_end(make_sandbox: Any, concurrency: int) -> None:
    server = make_sandbox(n_records=0, n_customer_records=4000, seed=4, filter_after_limit=True)
    server.inject(Fault("repeat"), times=3)  # records repeated across page boundaries
    kwargs = {"api_key": server.api_key, "base_url": server.url, "progress": False}
    query = normalize_query(
        "customer_records", page_size=250, filter_by=["tree_planted", "money_donated"]
    )
    got = ifr.load_customer_records(
        page_size=250,
        filter_by=["tree_planted", "money_donated"],
        concurrency=concurrency,
        **kwargs,
    )
    server.inject(Fault("repeat"), times=3)
    with Client(server.api_key, base_url=server.url) as client:
        builder = FrameBuilder("customer_records")
        for page in iter_pages(client, "customer_records", query, concurrency=concurrency):
            builder.add(page.records)
    pd.testing.assert_frame_equal(got, builder.finish())


def test_a_bad_record_wins_over_a_later_network_failure(make_sandbox: Any) -> None:
    server = make_sandbox(n_records=10, n_customer_records=0)
    records = generate_records(500, seed=2)
    records.sort(key=lambda r: (r["time_utc"], r["user_id"]))
    records[150]["tree_planted"] = "12"  # on the second page; it has no other impact field
    for kind in IMPACT_TYPES[1:]:
        records[150].pop(kind, None)
    for i in range(5):  # five good-looking pages, then the API fails for good
        page = {"user_records": records[100 * i : 100 * (i + 1)], "cursor": f"c{i}"}
        server.inject(Fault("status", status=200, body=json.dumps(page)), times=1)
    server.inject(Fault("status", status=500), times=None)
    client = Client(server.api_key, base_url=server.url, max_retries=0)
    with pytest.raises(ValidationError) as info:
        ifr.load_records(client=client, page_size=100, progress=False, concurrency=1)
    assert info.value.field == "tree_planted"
    assert "record 50 of the page (record 150 overall" in str(info.value)
    client.close()


def test_the_fetch_thread_stops_when_the_caller_does(sandbox: SandboxServer) -> None:
    import threading

    with Client(sandbox.api_key, base_url=sandbox.url) as client:
        pages_ = iter_pages(client, "records", normalize_query("records", page_size=10))
        next(pages_)
        pages_.close()
    for thread in threading.enumerate():
        if thread.name == "impactframe-fetch":
            thread.join(timeout=5)
            assert not thread.is_alive()


# -- the benchmark's smoke mode --------------------------------------------------------------------


def test_benchmark_quick_mode_runs_and_prints_every_row() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("impactframe", "naive", "conversion", "validation", "cache", "concurrency"):
        assert row in done.stdout
