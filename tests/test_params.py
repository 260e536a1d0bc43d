"""Argument normalisation (SPEC §2): each bad argument is a ValueError naming it and its choices."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactframe._constants import IMPACT_TYPES
from impactframe._params import (
    Query,
    check_choice,
    normalize_date,
    normalize_max_records,
    normalize_query,
)

ALL_TYPES = "'tree_planted', 'waste_removed', 'carbon_captured', 'coral_restored', 'money_donated'"


# -- filter_by ------------------------------------------------------------------------------------


def test_filter_by_single_string_is_one_type() -> None:
    assert normalize_query("records", filter_by="tree_planted").filter_by == ("tree_planted",)


def test_filter_by_list_is_deduplicated_in_canonical_order() -> None:
    query = normalize_query("records", filter_by=["money_donated", "tree_planted", "money_donated"])
    assert query.filter_by == ("tree_planted", "money_donated")


def test_filter_by_accepts_any_iterable() -> None:
    query = normalize_query("records", filter_by=(t for t in ("coral_restored", "waste_removed")))
    assert query.filter_by == ("waste_removed", "coral_restored")


def test_filter_by_none_means_every_type() -> None:
    assert normalize_query("records").filter_by is None


@pytest.mark.parametrize("bad", ["trees", ["tree_planted", "trees"], ["TREE_PLANTED"], [1]])
def test_filter_by_unknown_type_names_argument_and_types(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^filter_by: .* is not an impact type") as info:
        normalize_query("records", filter_by=bad)
    assert ALL_TYPES in str(info.value)


@pytest.mark.parametrize("bad", [[], (), 5, b"tree_planted", {"tree_planted": 1}])
def test_filter_by_wrong_shape_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^filter_by: ") as info:
        normalize_query("records", filter_by=bad)
    assert ALL_TYPES in str(info.value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(IMPACT_TYPES), min_size=1, max_size=12))
def test_filter_by_is_canonical_whatever_the_input_order(types: list[str]) -> None:
    query = normalize_query("records", filter_by=types)
    assert query.filter_by is not None
    assert set(query.filter_by) == set(types)
    assert list(query.filter_by) == sorted(set(types), key=IMPACT_TYPES.index)
    assert query == normalize_query("records", filter_by=list(reversed(types)))


# -- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-02-29", dt.date(2024, 2, 29)),
        (dt.date(2024, 1, 1), dt.date(2024, 1, 1)),
        (dt.datetime(2024, 1, 1, 23, 30), dt.date(2024, 1, 1)),  # naive: its own day
        (dt.datetime.fromisoformat("2024-01-01T23:30:00-05:00"), dt.date(2024, 1, 2)),
        (dt.datetime.fromisoformat("2024-01-02T00:30:00+02:00"), dt.date(2024, 1, 1)),
        (dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC), dt.date(2024, 6, 1)),
        (pd.Timestamp("2024-03-10 22:00"), dt.date(2024, 3, 10)),
        (pd.Timestamp("2024-03-10 22:00", tz="America/New_York"), dt.date(2024, 3, 11)),
        (pd.Timestamp("2024-03-10 01:00", tz="Asia/Tokyo"), dt.date(2024, 3, 9)),
        (None, None),
    ],
)
def test_normalize_date_gives_the_utc_day(value: object, expected: dt.date | None) -> None:
    result = normalize_date(value, "start_date")
    assert result == expected
    assert result is None or type(result) is dt.date


@pytest.mark.parametrize(
    "bad", ["2024-1-5", "20240105", "2024-01-05T00:00", " 2024-01-05", "yesterday", ""]
)
def test_malformed_date_string_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^end_date: .*not a date; expected a 'YYYY-MM-DD' str"):
        normalize_query("records", end_date=bad)


@pytest.mark.parametrize("bad", ["2024-02-30", "2023-02-29", "2024-13-01", "2024-00-10"])
def test_impossible_date_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"^start_date: '{bad}' is not a real calendar date"):
        normalize_query("records", start_date=bad)


@pytest.mark.parametrize("bad", [20240101, 1.5, pd.NaT, ["2024-01-01"]])
def test_date_of_another_type_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^start_date: .*expected a 'YYYY-MM-DD' string"):
        normalize_date(bad, "start_date")


def test_start_after_end_names_both() -> None:
    with pytest.raises(ValueError, match="start_date 2024-05-02 is after end_date 2024-05-01"):
        normalize_query("records", start_date="2024-05-02", end_date=dt.date(2024, 5, 1))


def test_start_equal_end_is_one_day() -> None:
    query = normalize_query("records", start_date="2024-05-01", end_date="2024-05-01")
    assert query.start_date == query.end_date == dt.date(2024, 5, 1)


def test_start_after_end_is_judged_on_utc_days() -> None:
    # 23:30 in New York on Jan 1 is already Jan 2 in UTC: after an end of Jan 1.
    start = dt.datetime.fromisoformat("2024-01-01T23:30:00-05:00")
    with pytest.raises(ValueError, match="start_date 2024-01-02 is after end_date 2024-01-01"):
        normalize_query("records", start_date=start, end_date="2024-01-01")


@settings(max_examples=100, deadline=None)
@given(st.dates(min_value=dt.date(1970, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_date_string_round_trips(day: dt.date) -> None:
    assert normalize_date(day.isoformat(), "start_date") == day


@settings(max_examples=100, deadline=None)
@given(
    st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9998, 12, 31)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_aware_datetime_gives_its_utc_day(naive: dt.datetime, offset_minutes: int) -> None:
    aware = naive.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes)))
    expected = (naive - dt.timedelta(minutes=offset_minutes)).date()
    assert normalize_date(aware, "end_date") == expected
    assert normalize_date(pd.Timestamp(aware), "end_date") == expected


# -- page_size, sort_order, customer_email, endpoint, max_records ---------------------------------


@pytest.mark.parametrize("good", [1, 10, 1000])
def test_page_size_bounds_are_inclusive(good: int) -> None:
    assert normalize_query("records", page_size=good).page_size == good


@pytest.mark.parametrize("bad", [0, -1, 1001, True, False, 10.0, "100", None])
def test_page_size_out_of_range_or_type(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^page_size: .* expected an int from 1 to 1000$"):
        normalize_query("records", page_size=bad)


@pytest.mark.parametrize("bad", ["ASC", "ascending", "", None, 1])
def test_sort_order_must_be_asc_or_desc(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^sort_order: .*expected one of 'asc', 'desc'$"):
        normalize_query("records", sort_order=bad)


def test_sort_order_desc_is_kept() -> None:
    assert normalize_query("records", sort_order="desc").sort_order == "desc"


def test_customer_email_only_on_customer_records() -> None:
    query = normalize_query("customer_records", customer_email="ada+test@example.com")
    assert query.customer_email == "ada+test@example.com"
    with pytest.raises(ValueError, match=r"^customer_email: only the 'customer_records'"):
        normalize_query("records", customer_email="ada@example.com")


@pytest.mark.parametrize("bad", ["", "   ", 42, ["a@example.com"]])
def test_customer_email_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^customer_email: .*expected a non-empty str or None$"):
        normalize_query("customer_records", customer_email=bad)


def test_unknown_endpoint_lists_both() -> None:
    with pytest.raises(
        ValueError, match=r"^endpoint: 'customers' .*'records', 'customer_records'$"
    ):
        normalize_query("customers")


@pytest.mark.parametrize("good", [None, 1, 5000])
def test_max_records_accepts_none_and_positive(good: int | None) -> None:
    assert normalize_max_records(good) == good


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "10"])
def test_max_records_refuses_zero_negative_and_non_int(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^max_records: .*expected None \(no cap\) or an int"):
        normalize_max_records(bad)


def test_check_choice_returns_the_value_and_lists_the_choices() -> None:
    assert check_choice("json", "metadata", ("columns", "json")) == "json"
    with pytest.raises(
        ValueError, match=re.escape("metadata: 'xml' is not accepted; expected one of 'columns'")
    ):
        check_choice("xml", "metadata", ("columns", "json"))


# -- Query.to_params / key ------------------------------------------------------------------------


def test_to_params_shape_with_everything() -> None:
    query = normalize_query(
        "customer_records",
        filter_by=["waste_removed", "tree_planted"],
        start_date="2024-01-01",
        end_date=dt.date(2024, 12, 31),
        sort_order="desc",
        page_size=250,
        customer_email="ada@example.com",
    )
    assert query.to_params(cursor="eyJ+/=") == {
        "filter_by": ["tree_planted", "waste_removed"],
        "start_date": "2024-01-01",
        "end_date": "2024-12-31",
        "limit": "250",
        "sort_order": "desc",
        "cursor": "eyJ+/=",
        "customer_email": "ada@example.com",
    }


def test_to_params_minimal_and_limit_override() -> None:
    query = normalize_query("records")
    assert query.to_params() == {"limit": "1000", "sort_order": "asc"}
    assert query.to_params(limit=7) == {"limit": "7", "sort_order": "asc"}
    with pytest.raises(ValueError, match=r"^limit: 0 is not accepted"):
        query.to_params(limit=0)


def test_query_is_frozen_and_hashable() -> None:
    query = normalize_query("records", filter_by="tree_planted")
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.page_size = 5  # type: ignore[misc]
    assert len({query, normalize_query("records", filter_by=["tree_planted"])}) == 1


def test_key_is_canonical_and_ignores_page_size() -> None:
    a = normalize_query("records", filter_by=["money_donated", "tree_planted"], page_size=10)
    b = normalize_query("records", filter_by=("tree_planted", "money_donated"), page_size=999)
    assert a.key() == b.key()
    assert a.key() != normalize_query("records", filter_by="tree_planted").key()
    assert a.key() != dataclasses.replace(a, sort_order="desc").key()
    assert a.key() != dataclasses.replace(a, start_date=dt.date(2024, 1, 1)).key()
    assert Query().key() == (
        '{"customer_email":null,"end_date":null,"filter_by":null,'
        '"sort_order":"asc","start_date":null}'
    )
