"""Cursor pagination without HTTP: dict-fed walks, body checks and walks that end (SPEC §4)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactframe._paging import _walk
from impactframe._paging._pages import Page, decode_page, page_of, parse_page
from impactframe._paging._walk import walk
from impactframe.errors import PaginationError, ValidationError


def feed(
    bodies: list[dict[str, object]], key: str = "user_records"
) -> Callable[[str | None], Page]:
    """A fake fetch serving `bodies` in order; checks that each call passes the previous cursor."""
    calls: list[str | None] = []
    expected: list[str | None] = [None]

    def fetch(cursor: str | None) -> Page:
        assert cursor == expected[-1], "walk must pass the previous page's cursor"
        calls.append(cursor)
        page = decode_page(bodies[len(calls) - 1], key)
        expected.append(page.cursor)
        return page

    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


@pytest.mark.parametrize("last", [{}, {"cursor": None}, {"cursor": ""}])
def test_walk_stops_on_absent_null_or_empty_cursor(last: dict[str, object]) -> None:
    fetch = feed([{"user_records": [1], "cursor": "c1"}, {"user_records": [2], **last}])
    assert [p.records for p in walk(fetch)] == [[1], [2]]
    assert fetch.calls == [None, "c1"]  # type: ignore[attr-defined]


def test_walk_continues_through_short_and_empty_pages() -> None:
    bodies: list[dict[str, object]] = [
        {"user_records": [1, 2, 3], "cursor": "a"},
        {"user_records": [], "cursor": "b"},
        {"user_records": [4], "cursor": "c"},
        {"user_records": [], "cursor": "d"},
        {"user_records": []},
    ]
    fetch = feed(bodies)
    assert [r for p in walk(fetch) for r in p.records] == [1, 2, 3, 4]
    assert fetch.calls == [None, "a", "b", "c", "d"]  # type: ignore[attr-defined]


def test_walk_of_a_single_empty_page() -> None:
    assert [p.records for p in walk(feed([{"user_records": []}]))] == [[]]


def test_walk_is_lazy() -> None:
    fetch = feed([{"user_records": [1], "cursor": "a"}, {"user_records": [2]}])
    pages = walk(fetch)
    assert fetch.calls == []  # type: ignore[attr-defined]
    assert next(pages).records == [1]
    assert fetch.calls == [None]  # type: ignore[attr-defined]


def test_repeated_cursor_raises_pagination_error_with_page_number() -> None:
    fetch = feed(
        [
            {"user_records": [1], "cursor": "a"},
            {"user_records": [2], "cursor": "b"},
            {"user_records": [3], "cursor": "a"},
        ]
    )
    pages = walk(fetch)
    assert [next(pages).records for _ in range(3)] == [[1], [2], [3]]
    with pytest.raises(PaginationError, match=r"^page 3 returned a cursor already followed .*'a'"):
        next(pages)
    assert fetch.calls == [None, "a", "b"]  # type: ignore[attr-defined]


def test_guarantee_termination() -> None:
    """A server that always answers the same cursor cannot make the walk loop forever."""
    calls = itertools.count()

    def stuck(cursor: str | None) -> Page:
        next(calls)
        return page_of([{"user_id": "U1"}], "always-the-same-cursor" * 3)

    with pytest.raises(PaginationError, match=r"page 2 .*\('always-the-same-cursoral\.\.\.'\)"):
        for _ in walk(stuck):
            pass
    assert next(calls) == 2


def test_a_cycle_longer_than_one_is_caught() -> None:
    cycle = itertools.cycle(["x", "y", "z"])
    pages = walk(lambda cursor: page_of([], next(cycle)))
    with pytest.raises(PaginationError, match="page 4"):
        list(pages)


# -- decode_page -----------------------------------------------------------------------------------


def test_parse_page_customer_key() -> None:
    page = decode_page(
        {"customer_records": [{"user_id": "U"}], "cursor": "eyJ9"}, "customer_records"
    )
    assert (page.records, page.cursor, page.count, page.body) == (
        [{"user_id": "U"}],
        "eyJ9",
        1,
        None,
    )


@pytest.mark.parametrize("body", [[], "oops", None, 3])
def test_body_not_an_object(body: object) -> None:
    with pytest.raises(ValidationError, match=r"^response body: expected a JSON object") as info:
        decode_page(body, "user_records")
    assert info.value.field == "response body"


def test_records_field_missing_names_it() -> None:
    with pytest.raises(ValidationError, match=r"^user_records: missing .*\['customer_records'\]"):
        decode_page({"customer_records": []}, "user_records")


@pytest.mark.parametrize("records", [None, {}, "[]", 5])
def test_records_not_a_list(records: object) -> None:
    with pytest.raises(ValidationError, match=r"^user_records: expected a list") as info:
        decode_page({"user_records": records}, "user_records")
    assert info.value.field == "user_records"


@pytest.mark.parametrize("cursor", [123, 0, ["a"], {"k": "v"}, True])
def test_cursor_not_a_string(cursor: object) -> None:
    with pytest.raises(ValidationError, match=r"^cursor: expected a string or null") as info:
        decode_page({"user_records": [], "cursor": cursor}, "user_records")
    assert info.value.field == "cursor"
    assert isinstance(info.value, ValueError)


def test_unknown_top_level_fields_are_named_for_the_fetch_loop_to_warn() -> None:
    page = decode_page({"user_records": [], "next": 1, "count": 0}, "user_records")
    assert (page.records, page.cursor, page.extra) == ([], None, ("count", "next"))
    raw = parse_page(b'{"user_records": [], "next": 1, "count": 0}', "user_records")
    assert (raw.count, raw.cursor, raw.extra) == (0, None, ("count", "next"))


# -- property: any split walks back to the original list ------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(st.integers(), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=15),
    final=st.sampled_from([{}, {"cursor": None}, {"cursor": ""}]),
)
def test_any_split_walks_to_all_records_in_order_once(
    records: list[int], cuts: list[int], final: dict[str, object]
) -> None:
    # Cut points may repeat (empty pages) and exceed the length (empty trailing pages).
    bounds = [0, *sorted(min(c, len(records)) for c in cuts), len(records)]
    bodies: list[dict[str, object]] = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        last = i == len(bounds) - 2
        body: dict[str, object] = {"user_records": records[lo:hi]}
        body.update(final if last else {"cursor": f"cursor-{i}+/="})
        bodies.append(body)
    fetch = feed(bodies)
    walked = [r for page in walk(fetch) for r in page.records]
    assert walked == records
    assert len(fetch.calls) == len(bodies)  # type: ignore[attr-defined]


# -- one page type: the body kept, the records decoded when asked for -----------------------------


def test_a_parsed_page_keeps_its_body_and_decodes_records_lazily() -> None:
    body = (
        b'{"user_records": [{"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", '
        b'"tree_planted": 2, "metadata": {"k": "v"}}], "cursor": "c"}'
    )
    page = parse_page(body, "user_records")
    assert (page.body, page.count, page.cursor) == (body, 1, "c")
    assert [(f.user_id, f.time_utc, f.tree_planted) for f in page.facts] == [
        ("U1", "2024-01-01T00:00:00.000Z", 2)
    ]
    assert page._records is None  # nothing decoded in full yet
    assert page.records == [
        {"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": 2,
         "metadata": {"k": "v"}}
    ]  # fmt: skip


def test_a_body_msgspec_declines_is_read_by_json_with_the_same_outcome() -> None:
    page = parse_page(b'{"user_records": [1, {"user_id": NaN}], "cursor": null}', "user_records")
    assert (page.body, page.count, page.cursor) == (None, 2, None)
    assert page.records[0] == 1
    assert len(page.facts) == 1  # facts only of objects


# -- walks without progress end (SPEC §4) ---------------------------------------------------------


def _record(i: int) -> dict[str, object]:
    return {
        "user_id": f"U{i}",
        "time_utc": f"2024-01-01T00:00:{i % 60:02d}.000Z",
        "tree_planted": 1,
    }


def test_the_same_records_with_a_new_cursor_each_page_end_the_walk() -> None:
    fetched = itertools.count()
    records = [_record(i) for i in range(3)]

    def replay(cursor: str | None) -> Page:
        return page_of(records, f"cursor-{next(fetched)}")

    with pytest.raises(PaginationError, match=r"3 pages in a row .* only records"):
        list(walk(replay))
    assert next(fetched) == 1 + _walk.STALE_PAGES  # the first page, then the stale run


def test_endless_empty_pages_with_new_cursors_end_the_walk() -> None:
    fetched = itertools.count()
    pages = walk(lambda cursor: page_of([], f"c{next(fetched)}"))
    with pytest.raises(PaginationError, match=r"1000 empty pages in a row"):
        list(pages)
    assert next(fetched) == _walk.EMPTY_PAGES


def test_many_empty_pages_then_records_are_a_legitimate_walk() -> None:
    # DynamoDB paging with a filter after the limit: long runs of empty pages, then records.
    script = [[_record(0)], *([[]] * 900), [_record(1)], *([[]] * 900), [_record(2)]]
    pages = iter(enumerate(script))

    def fetch(cursor: str | None) -> Page:
        i, records = next(pages)
        return page_of(records, f"c{i}" if i < len(script) - 1 else None)

    walked = [r for p in walk(fetch) for r in p.records]
    assert walked == [_record(0), _record(1), _record(2)]


def test_a_record_repeated_across_one_boundary_is_progress() -> None:
    script = [[_record(0)], [_record(0)], [_record(1)], [_record(1)], [_record(2)]]
    pages = iter(enumerate(script))

    def fetch(cursor: str | None) -> Page:
        i, records = next(pages)
        return page_of(records, f"c{i}" if i < len(script) - 1 else None)

    assert [p.count for p in walk(fetch)] == [1, 1, 1, 1, 1]


def test_the_walk_keeps_digests_not_cursors() -> None:
    long = "x" * 10_000
    pages = iter(range(5))

    def fetch(cursor: str | None) -> Page:
        i = next(pages)
        return page_of([_record(i)], f"{long}{i}")

    walked = walk(fetch)
    for _ in range(4):
        next(walked)
    frame = walked.gi_frame  # type: ignore[attr-defined]
    assert frame is not None
    followed = frame.f_locals["followed"]
    assert len(followed) == 3
    assert all(isinstance(d, int) for d in followed)
