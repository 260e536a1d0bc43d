"""Tests of impactframe.aggregate and the df.impact accessor (SPEC §8)."""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import logging
import warnings
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactframe import _accessor, aggregate, schemas
from impactframe._constants import IMPACT_TYPES, UNITS
from impactframe._frame._builder import records_to_frame
from impactframe.errors import SchemaDriftWarning
from impactframe.sandbox import generate_records

NEW_TYPE = "kelp_grown"
BACKENDS = ("numpy_nullable", "pyarrow")
UTC = dt.UTC


# ----------------------------------------------------------------------------- helpers


def _dtype(kind: str, backend: str) -> Any:
    """SPEC §3 dtypes: numpy-nullable by default, Arrow-backed with dtype_backend="pyarrow"."""
    if backend == "pyarrow":
        return {
            "string": pd.ArrowDtype(pa.string()),
            "int": pd.ArrowDtype(pa.int64()),
            "time": pd.ArrowDtype(pa.timestamp("ms", tz="UTC")),
        }[kind]
    return {"string": pd.StringDtype(), "int": pd.Int64Dtype(), "time": "datetime64[ms, UTC]"}[kind]


def make_frame(
    rows: list[dict[str, Any]],
    *,
    endpoint: str = "records",
    backend: str = "numpy_nullable",
    new_types: tuple[str, ...] = (),
) -> pd.DataFrame:
    """A frame exactly as SPEC §3 describes it, from short row dicts.

    Row keys: time (ISO str or datetime), type, amount, and optionally user, email, name, id,
    category and meta (dict of metadata key -> str).
    """
    types = (*IMPACT_TYPES, *dict.fromkeys(t for t in new_types if t not in IMPACT_TYPES))
    types = (*types, *dict.fromkeys(r["type"] for r in rows if r["type"] not in types))
    meta_keys = sorted({k for r in rows for k in (r.get("meta") or {})})
    s, i = _dtype("string", backend), _dtype("int", backend)
    cols: dict[str, Any] = {
        "user_id": pd.array([r.get("user", "U1") for r in rows], dtype=s),
    }
    if endpoint == "customer_records":
        emails = [r.get("email") for r in rows]
        cols["customer_id"] = pd.array(
            [r.get("id", f"C-{e}") for r, e in zip(rows, emails, strict=True)], dtype=s
        )
        cols["customer_email"] = pd.array(emails, dtype=s)
        cols["customer_name"] = pd.array([r.get("name") for r in rows], dtype=s)
    times = pd.to_datetime([r["time"] for r in rows], utc=True, format="ISO8601")
    cols["time_utc"] = pd.Series(times, dtype="datetime64[ms, UTC]").astype(_dtype("time", backend))
    cols["impact_type"] = pd.Categorical([r["type"] for r in rows], categories=list(types))
    cols["amount"] = pd.array([r["amount"] for r in rows], dtype=i)
    for typ in types:
        cols[typ] = pd.array([r["amount"] if r["type"] == typ else None for r in rows], dtype=i)
    cols["category"] = pd.array([r.get("category") for r in rows], dtype=s)
    for key in meta_keys:
        cols[f"metadata_{key}"] = pd.array([(r.get("meta") or {}).get(key) for r in rows], dtype=s)
    return pd.DataFrame({k: pd.Series(v).reset_index(drop=True) for k, v in cols.items()})


def rec(time: str, typ: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"time": time, "type": typ, "amount": amount, **extra}


def _na(value: Any) -> Any:
    return None if value is None or (not isinstance(value, tuple) and pd.isna(value)) else value


def _key(value: Any) -> Any:
    return tuple(_na(v) for v in value) if isinstance(value, tuple) else _na(value)


# Period starts computed without pandas' resampling, as the oracle for summarize().
def _start(ts: dt.datetime, freq: str) -> dt.datetime:
    day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    if freq == "h":
        return ts.replace(minute=0, second=0, microsecond=0)
    if freq == "D":
        return day
    if freq == "W":  # weeks end on Sunday, so they start on Monday
        return day - dt.timedelta(days=ts.weekday())
    if freq in ("MS", "ME"):
        return day.replace(day=1)
    if freq in ("QS", "QE"):
        return day.replace(day=1, month=3 * ((ts.month - 1) // 3) + 1)
    if freq in ("YS", "YE"):
        return day.replace(day=1, month=1)
    raise AssertionError(freq)


_RANGE_FREQ = {"h": "h", "D": "D", "W": "7D", "MS": "MS", "ME": "MS", "QS": "QS-JAN"}
_RANGE_FREQ |= {"QE": "QS-JAN", "YS": "YS", "YE": "YS"}


def _all_periods(starts: list[dt.datetime], freq: str) -> list[pd.Timestamp]:
    if not starts:
        return []
    return list(pd.date_range(min(starts), max(starts), freq=_RANGE_FREQ[freq]))


def _expected_summary(
    rows: list[dict[str, Any]], freq: str, by: list[str], types: tuple[str, ...]
) -> dict[Any, dict[str, int]]:
    field = {"customer_email": "email", "metadata_k": "meta"}
    sums: dict[Any, dict[str, int]] = defaultdict(lambda: dict.fromkeys(types, 0))
    starts = []
    groups = set()
    for r in rows:
        ts = dt.datetime.fromtimestamp(r["ms"] / 1000, tz=UTC)
        start = _start(ts, freq)
        starts.append(start)
        group = tuple((r["meta"] or {}).get("k") if field[b] == "meta" else r[field[b]] for b in by)
        groups.add(group)
        sums[(*group, pd.Timestamp(start).value)][r["type"]] += r["amount"]
    periods = _all_periods(starts, freq)
    return {
        (*g, p.value): dict(sums.get((*g, p.value), dict.fromkeys(types, 0)))
        for g in groups
        for p in periods
    }


def _as_dict(summary: pd.DataFrame) -> dict[Any, dict[str, int]]:
    out = {}
    for key, row in summary.astype("int64").to_dict("index").items():
        *group, period = key if isinstance(key, tuple) else (key,)
        out[(*(_na(g) for g in group), pd.Timestamp(period).value)] = row
    return out


# ----------------------------------------------------------------------- strategies

T0 = int(pd.Timestamp("2021-01-01", tz="UTC").value // 10**6)
T1 = int(pd.Timestamp("2025-12-31 23:59:59.999", tz="UTC").value // 10**6)
# Instants either side of month and year boundaries, where an off-by-one would show.
EDGES = [
    int(pd.Timestamp(t, tz="UTC").value // 10**6) + d
    for t in ("2022-01-01", "2022-03-01", "2023-07-01", "2024-03-01", "2024-12-30")
    for d in (-1, 0, 1)
]
EMAILS = ["a@x.io", "b@x.io", "Z@x.io", None]
FREQS = ["D", "W", "MS", "ME", "QS", "QE", "YS", "YE"]

raw_rows = st.lists(
    st.fixed_dictionaries(
        {
            "ms": st.one_of(st.integers(T0, T1), st.sampled_from(EDGES)),
            "type": st.sampled_from((*IMPACT_TYPES, NEW_TYPE)),
            "amount": st.integers(0, 10**12),
            "email": st.sampled_from(EMAILS),
            "meta": st.sampled_from([None, {"k": "x"}, {"k": "y"}, {"other": "z"}]),
        }
    ),
    max_size=25,
)


def frame_from(rows: list[dict[str, Any]], backend: str) -> pd.DataFrame:
    recs = [
        rec(
            pd.Timestamp(r["ms"], unit="ms", tz="UTC").isoformat(),
            r["type"],
            r["amount"],
            email=r["email"],
            meta={**(r["meta"] or {}), "k": (r["meta"] or {}).get("k")},
        )
        for r in rows
    ]
    for r in recs:  # a None value means the key is absent for that record
        r["meta"] = {k: v for k, v in r["meta"].items() if v is not None}
    frame = make_frame(recs, endpoint="customer_records", backend=backend, new_types=(NEW_TYPE,))
    if "metadata_k" not in frame:
        frame["metadata_k"] = pd.array([None] * len(frame), dtype=_dtype("string", backend))
    return frame


ALL_TYPES = (*IMPACT_TYPES, NEW_TYPE)
BYS = [None, "customer_email", "metadata_k", ["customer_email", "metadata_k"]]


# ------------------------------------------------------------------- property tests


@settings(max_examples=60, deadline=None)
@given(
    rows=raw_rows,
    backend=st.sampled_from(BACKENDS),
    freq=st.sampled_from(FREQS),
    by=st.sampled_from(BYS),
)
def test_summarize_matches_independent_oracle(
    rows: list[dict[str, Any]], backend: str, freq: str, by: Any
) -> None:
    df = frame_from(rows, backend)
    by_list = [] if by is None else [by] if isinstance(by, str) else by
    got = aggregate.summarize(df, freq=freq, by=by)
    assert list(got.columns) == list(ALL_TYPES)
    assert all(str(d) == "Int64" for d in got.dtypes)
    assert _as_dict(got) == _expected_summary(rows, freq, by_list, ALL_TYPES)
    assert len(got) == len(_as_dict(got))  # every (group, period) once


@settings(max_examples=30, deadline=None)
@given(rows=raw_rows, backend=st.sampled_from(BACKENDS), by=st.sampled_from(BYS))
def test_totals_conserved_across_frequencies(
    rows: list[dict[str, Any]], backend: str, by: Any
) -> None:
    df = frame_from(rows, backend)
    total = aggregate.totals(df)
    plain = df.groupby("impact_type", observed=False)["amount"].sum()
    assert total.to_dict() == {t: int(plain[t]) for t in ALL_TYPES}
    for freq in ("D", "W", "MS", "YS"):
        summary = aggregate.summarize(df, freq=freq, by=by)
        pd.testing.assert_series_equal(
            summary.sum().astype("Int64"), total, check_names=False, check_index_type=False
        )
        cum = aggregate.cumulative(df, freq=freq, by=by)
        assert cum.index.equals(summary.index)
        if by is None and len(df):
            pd.testing.assert_series_equal(cum.iloc[-1], total, check_names=False)
            assert (cum.diff().fillna(0) >= 0).all().all()


@settings(max_examples=30, deadline=None)
@given(rows=raw_rows, by=st.sampled_from(BYS[1:]))
def test_grouped_results_match_groupby_and_backends_agree(
    rows: list[dict[str, Any]], by: Any
) -> None:
    df = frame_from(rows, "numpy_nullable")
    by_totals = aggregate.totals(df, by=by)
    plain = (
        df.groupby([*([by] if isinstance(by, str) else by), "impact_type"], dropna=False)["amount"]
        .sum()
        .unstack("impact_type", fill_value=0)
        .reindex(columns=list(ALL_TYPES), fill_value=0)
    )
    assert len(by_totals) == len(plain)
    expected = {_key(k): {t: int(v[t]) for t in ALL_TYPES} for k, v in plain.iterrows()}
    got = {_key(k): {t: int(v[t]) for t in ALL_TYPES} for k, v in by_totals.iterrows()}
    assert got == expected

    # Cumulative per group ends at that group's totals.
    cum = aggregate.cumulative(df, freq="QS", by=by)
    n_groups = len(by_totals)
    if n_groups:
        last = cum.to_numpy().reshape(n_groups, -1, len(ALL_TYPES))[:, -1, :]
        np.testing.assert_array_equal(last.astype("int64"), by_totals.to_numpy().astype("int64"))

    arrow = frame_from(rows, "pyarrow")
    for func in (aggregate.totals, aggregate.summarize, aggregate.cumulative):
        pd.testing.assert_frame_equal(func(arrow, by=by), func(df, by=by), check_index_type=False)


# ----------------------------------------------------------------------- unit tests

RECORDS = [
    rec("2024-01-05T10:00:00.000Z", "tree_planted", 2, email="b@x.io", name="Bo", category="food"),
    rec("2024-01-31T23:59:59.999Z", "money_donated", 1000, email="a@x.io", meta={"src": "web"}),
    rec("2024-03-01T00:00:00.000Z", "tree_planted", 3, email="b@x.io", name="Bob"),
    rec("2024-03-09T12:00:00.000Z", "waste_removed", 7, email=None, meta={"src": "app"}),
    rec("2024-03-10T12:00:00.000Z", "money_donated", 250, email="c@x.io", name="Cy"),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["records", "customer_records"])
def endpoint(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def frame(backend: str, endpoint: str) -> pd.DataFrame:
    return make_frame(RECORDS, endpoint=endpoint, backend=backend)


@pytest.fixture
def customers(backend: str) -> pd.DataFrame:
    return make_frame(RECORDS, endpoint="customer_records", backend=backend)


def test_helper_frames_pass_the_real_schema(backend: str, endpoint: str) -> None:
    # The customer schema requires an e-mail; the NA e-mail elsewhere tests robustness.
    rows = [{**r, "email": r.get("email") or "z@x.io"} for r in RECORDS]
    df = make_frame(rows, endpoint=endpoint, backend=backend)
    assert schemas.validate(df, endpoint, dtype_backend=backend) is df


@pytest.mark.parametrize("seed", [0, 1])
def test_real_frames_from_generated_records(backend: str, endpoint: str, seed: int) -> None:
    customers = endpoint == "customer_records"
    raw = generate_records(400, seed=seed, customers=customers)
    df = records_to_frame(raw, endpoint, dtype_backend=backend)
    expected = dict.fromkeys(IMPACT_TYPES, 0)
    for record in raw:
        (typ,) = (k for k in record if k in IMPACT_TYPES)
        expected[typ] += record[typ]
    total = aggregate.totals(df)
    assert total.to_dict() == expected
    for freq in ("D", "W", "MS", "YS"):
        summary = aggregate.summarize(df, freq)
        assert summary.sum().to_dict() == expected
        assert summary.index.is_monotonic_increasing
        assert summary.index.is_unique
    cum = aggregate.cumulative(df, "QS", by="category")
    assert cum.groupby(level="category", dropna=False).tail(1).sum().to_dict() == expected
    units = aggregate.with_units(df)
    money = units["impact_type"] == "money_donated"
    assert (units.loc[money, "money_donated_usd"] * 100 == units.loc[money, "amount"]).all()
    if customers:
        top = aggregate.top_customers(df, n=None)
        assert int(top["records"].sum()) == len(df)
        assert top.index.is_unique
        assert top["records"].is_monotonic_decreasing


def test_helper_builds_spec_dtypes(frame: pd.DataFrame, backend: str) -> None:
    assert isinstance(frame["impact_type"].dtype, pd.CategoricalDtype)
    assert list(frame["impact_type"].cat.categories) == list(IMPACT_TYPES)
    if backend == "pyarrow":
        assert frame["amount"].dtype == pd.ArrowDtype(pa.int64())
    else:
        assert str(frame["time_utc"].dtype) == "datetime64[ms, UTC]"
        assert frame["amount"].dtype == "Int64"
        assert frame["user_id"].dtype == pd.StringDtype()


def test_totals(frame: pd.DataFrame) -> None:
    got = aggregate.totals(frame)
    assert got.name == "amount"
    assert got.index.name == "impact_type"
    assert list(got.index) == list(IMPACT_TYPES)
    assert got.dtype == "Int64"
    assert got.to_dict() == {
        "tree_planted": 5,
        "waste_removed": 7,
        "carbon_captured": 0,
        "coral_restored": 0,
        "money_donated": 1250,
    }


def test_totals_by_keeps_na_group_and_all_types(customers: pd.DataFrame) -> None:
    got = aggregate.totals(customers, by="customer_email")
    assert list(got.columns) == list(IMPACT_TYPES)
    assert got.index.name == "customer_email"
    assert list(got.index[:-1]) == ["a@x.io", "b@x.io", "c@x.io"]
    assert pd.isna(got.index[-1])  # missing e-mail: its own group, last
    assert got.loc["b@x.io", "tree_planted"] == 5
    assert got.iloc[-1]["waste_removed"] == 7
    assert (got.dtypes == "Int64").all()

    multi = aggregate.totals(customers, by=["metadata_src", "category"])
    assert multi.index.names == ["metadata_src", "category"]
    assert int(multi.to_numpy().sum()) == 1262
    as_dict = {
        _key(k): (int(v["tree_planted"]), int(v["money_donated"])) for k, v in multi.iterrows()
    }
    assert list(as_dict) == [("app", None), ("web", None), (None, "food"), (None, None)]
    assert as_dict[(None, None)] == (3, 250)
    assert as_dict[("web", None)] == (0, 1000)


def test_totals_by_metadata_groups(customers: pd.DataFrame) -> None:
    got = aggregate.totals(customers, by="metadata_src")
    as_dict = {_na(k): int(v["money_donated"]) for k, v in got.iterrows()}
    assert as_dict == {"app": 0, "web": 1000, None: 250}
    assert int(got.loc["app", "waste_removed"]) == 7


def test_totals_includes_new_impact_types(backend: str) -> None:
    df = make_frame([rec("2024-01-01T00:00:00Z", NEW_TYPE, 4)], backend=backend)
    got = aggregate.totals(df)
    assert list(got.index) == [*IMPACT_TYPES, NEW_TYPE]
    assert got[NEW_TYPE] == 4
    # A frame whose impact_type lost its categorical dtype still works.
    plain = df.assign(impact_type=df["impact_type"].astype("string"))
    pd.testing.assert_series_equal(aggregate.totals(plain), got)


def test_summarize_fills_gaps(frame: pd.DataFrame) -> None:
    got = aggregate.summarize(frame)
    assert isinstance(got.index, pd.DatetimeIndex)
    assert str(got.index.tz) == "UTC"
    assert got.index.name == "period"
    assert list(got.index) == list(pd.date_range("2024-01-01", "2024-03-01", freq="MS", tz="UTC"))
    assert got["tree_planted"].tolist() == [2, 0, 3]
    assert got["money_donated"].tolist() == [1000, 0, 250]
    assert got["coral_restored"].tolist() == [0, 0, 0]
    assert got.columns.name == "impact_type"


def test_summarize_end_anchored_aliases_are_labelled_by_period_start(frame: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        aggregate.summarize(frame, "ME"), aggregate.summarize(frame, "MS")
    )
    weekly = aggregate.summarize(frame, "W")
    assert (weekly.index.day_of_week == 0).all()  # Mondays
    assert weekly.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    # Sunday 2024-03-10 12:00 belongs to the week starting Monday 2024-03-04.
    assert weekly.loc[pd.Timestamp("2024-03-04", tz="UTC"), "money_donated"] == 250
    assert len(weekly) == 10  # Mondays 2024-01-01 .. 2024-03-04
    assert aggregate.summarize(frame, "D").index.size == 66
    yearly = aggregate.summarize(frame, pd.offsets.YearBegin())
    assert yearly.to_numpy().sum() == 1262


def test_summarize_by_long_shape(customers: pd.DataFrame) -> None:
    got = aggregate.summarize(customers, freq="MS", by="customer_email")
    assert got.index.names == ["customer_email", "period"]
    assert len(got) == 4 * 3  # 3 e-mails + NA, each with all 3 months
    b = got.loc["b@x.io"]
    assert b["tree_planted"].tolist() == [2, 0, 3]
    assert list(b.index) == list(aggregate.summarize(customers).index)
    wide = got["tree_planted"].unstack("customer_email")
    assert wide.shape == (3, 4)


def test_cumulative(frame: pd.DataFrame) -> None:
    got = aggregate.cumulative(frame)
    assert got["tree_planted"].tolist() == [2, 2, 5]
    assert got["money_donated"].tolist() == [1000, 1000, 1250]
    pd.testing.assert_series_equal(got.iloc[-1], aggregate.totals(frame), check_names=False)


def test_sums_that_leave_int64_raise_naming_the_impact_type(backend: str) -> None:
    big = 2**62
    rows = [
        rec("2024-01-01T00:00:00Z", "money_donated", big, email="a@x.io"),
        rec("2024-02-01T00:00:00Z", "money_donated", big, email="a@x.io"),
        rec("2024-02-01T00:00:00Z", "tree_planted", 3, email="b@x.io"),
    ]
    df = make_frame(rows, endpoint="customer_records", backend=backend)
    calls = [
        lambda: aggregate.totals(df),
        lambda: aggregate.totals(df, by="customer_email"),
        lambda: aggregate.summarize(df, freq="YS"),
        lambda: aggregate.summarize(df, freq="YS", by="customer_email"),
        lambda: aggregate.cumulative(df, freq="YS"),
        lambda: aggregate.top_customers(df),
        lambda: aggregate.top_customers(df, impact_type="money_donated"),
        # Each month's sum fits; the running total of the second does not.
        lambda: aggregate.cumulative(df, freq="MS"),
        lambda: aggregate.cumulative(df, freq="MS", by="customer_email"),
    ]
    for call in calls:
        with pytest.raises(OverflowError, match=r"^the money_donated total \d+ does not fit"):
            call()
    with pytest.raises(OverflowError, match=f"money_donated total {2 * big} does not fit in int64"):
        aggregate.totals(df)
    assert aggregate.summarize(df, freq="MS")["money_donated"].tolist() == [big, big]
    # Sums near the limit that fit are still exact.
    fits = make_frame([*rows[:1], {**rows[1], "amount": big - 1}, rows[2]], backend=backend)
    assert aggregate.totals(fits)["money_donated"] == 2**63 - 1
    assert aggregate.cumulative(fits)["money_donated"].tolist() == [big, 2**63 - 1]


@pytest.mark.parametrize(
    "func", [aggregate.summarize, aggregate.cumulative, aggregate.totals, aggregate.with_units]
)
def test_empty_frames(func: Any, backend: str, endpoint: str) -> None:
    empty = make_frame([], endpoint=endpoint, backend=backend)
    got = func(empty)
    if func is aggregate.totals:
        assert got.to_dict() == dict.fromkeys(IMPACT_TYPES, 0)
        return
    assert len(got) == 0
    if func is aggregate.with_units:
        assert list(got.columns) == [*empty.columns, "money_donated_usd", "unit"]
    else:
        assert list(got.columns) == list(IMPACT_TYPES)
        assert isinstance(got.index, pd.DatetimeIndex)
        assert str(got.index.tz) == "UTC"


def test_empty_frames_with_by(backend: str) -> None:
    empty = make_frame([], endpoint="customer_records", backend=backend)
    got = aggregate.summarize(empty, by="customer_email")
    assert got.empty
    assert got.index.names == ["customer_email", "period"]
    assert list(got.columns) == list(IMPACT_TYPES)
    assert aggregate.totals(empty, by="customer_email").empty
    top = aggregate.top_customers(empty)
    assert top.empty
    assert list(top.columns) == ["customer_id", "customer_name", "records", *IMPACT_TYPES]


@pytest.mark.parametrize("freq", ["M", "xyz", "0D", "-1MS", None, "", True])
def test_bad_freq(frame: pd.DataFrame, freq: Any) -> None:
    with pytest.raises(ValueError, match="freq") as info:
        aggregate.summarize(frame, freq=freq)
    assert '"MS"' in str(info.value)
    with pytest.raises(ValueError, match="freq"):
        aggregate.cumulative(frame, freq=freq)


def test_too_many_periods(frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"^freq: 'ms' is not accepted; expected a coarser period"):
        aggregate.summarize(frame, freq="ms")
    monkeypatch.setattr(aggregate, "MAX_CELLS", 66 * 5 - 1)  # 66 days x 5 types
    with pytest.raises(ValueError, match=r"freq='D' with by=None gives 1 groups x 66 periods"):
        aggregate.summarize(frame, freq="D")
    assert len(aggregate.summarize(frame, freq="W")) == 10


@pytest.mark.parametrize("by", ["nope", ["customer_email", "nope"], [], ["amount", "amount"]])
def test_bad_by(customers: pd.DataFrame, by: Any) -> None:
    for func in (aggregate.totals, aggregate.summarize, aggregate.cumulative):
        with pytest.raises(ValueError, match="by"):
            func(customers, by=by)


def test_not_a_records_frame() -> None:
    with pytest.raises(ValueError, match="missing \\['impact_type', 'amount'\\]"):
        aggregate.totals(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="time_utc"):
        aggregate.summarize(pd.DataFrame({"impact_type": ["tree_planted"], "amount": [1]}))
    with pytest.raises(
        ValueError, match=r"^df: a value of type list is not accepted; expected a pandas DataFrame$"
    ):
        aggregate.totals([1, 2])  # type: ignore[arg-type]


def test_missing_impact_type_is_an_error(backend: str) -> None:
    df = make_frame(RECORDS, backend=backend)
    df.loc[0, "impact_type"] = None
    with pytest.raises(ValueError, match="impact_type"):
        aggregate.totals(df)


def test_top_customers_order_and_ties(backend: str) -> None:
    rows = [
        rec("2024-01-01T00:00:00Z", "tree_planted", 5, email="d@x.io", id="C4"),
        rec("2024-01-02T00:00:00Z", "tree_planted", 9, email="c@x.io", id="C3"),
        rec("2024-01-03T00:00:00Z", "tree_planted", 5, email="a@x.io", id="C1"),
        rec("2024-01-04T00:00:00Z", "tree_planted", 5, email="b@x.io", id="C2"),
        rec("2024-01-05T00:00:00Z", "money_donated", 100, email="e@x.io", id="C5"),
        rec("2024-01-06T00:00:00Z", "money_donated", 100, email="e@x.io", id="C5"),
    ]
    df = make_frame(rows, endpoint="customer_records", backend=backend)
    trees = aggregate.top_customers(df, n=10, impact_type="tree_planted")
    assert trees.index.name == "customer_email"
    assert list(trees.index) == ["c@x.io", "a@x.io", "b@x.io", "d@x.io"]  # ties by e-mail
    assert trees["amount"].tolist() == [9, 5, 5, 5]
    assert trees["records"].tolist() == [1, 1, 1, 1]
    assert list(trees.columns) == ["customer_id", "customer_name", "amount", "records"]
    assert trees["customer_id"].tolist() == ["C3", "C1", "C2", "C4"]
    assert list(aggregate.top_customers(df, n=2, impact_type="tree_planted").index) == [
        "c@x.io",
        "a@x.io",
    ]

    everything = aggregate.top_customers(df, n=None)
    assert list(everything.index) == ["e@x.io", "a@x.io", "b@x.io", "c@x.io", "d@x.io"]
    assert everything["records"].tolist() == [2, 1, 1, 1, 1]
    assert everything.loc["e@x.io", "money_donated"] == 200
    assert list(everything.columns) == ["customer_id", "customer_name", "records", *IMPACT_TYPES]
    assert aggregate.top_customers(df, n=0).empty
    assert len(aggregate.top_customers(df, n=np.int64(3))) == 3


def test_top_customers_latest_name_and_na_email(customers: pd.DataFrame) -> None:
    got = aggregate.top_customers(customers, n=None)
    assert got.loc["b@x.io", "customer_name"] == "Bob"  # the most recent record's name
    assert got.loc["b@x.io", "records"] == 2
    assert pd.isna(got.index[-1])  # the NA e-mail is its own customer, last among ties
    assert aggregate.top_customers(customers, impact_type="coral_restored").empty


def test_top_customers_bad_arguments(frame: pd.DataFrame, endpoint: str) -> None:
    if endpoint == "records":
        with pytest.raises(ValueError, match="customer_id"):
            aggregate.top_customers(frame)
        return
    for n in (-1, 1.5, "3", True):
        with pytest.raises(
            ValueError, match=r"^n: .* is not accepted; expected an int >= 0 or None"
        ):
            aggregate.top_customers(frame, n=n)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^impact_type: 'trees' is not accepted; expected None or one of .*'tree_planted'",
    ):
        aggregate.top_customers(frame, impact_type="trees")


def test_with_units(frame: pd.DataFrame, backend: str) -> None:
    got = aggregate.with_units(frame)
    assert list(got.columns) == [*frame.columns, "money_donated_usd", "unit"]
    usd = got["money_donated_usd"]
    assert usd.iloc[1] == 10.0
    assert usd.iloc[4] == 2.5
    assert usd.isna().tolist() == [True, False, True, True, False]
    assert got["unit"].tolist() == [UNITS[t] for t in frame["impact_type"]]
    if backend == "pyarrow":
        assert usd.dtype == pd.ArrowDtype(pa.float64())
        assert got["unit"].dtype == pd.ArrowDtype(pa.string())
    else:
        assert usd.dtype == "Float64"
        assert got["unit"].dtype == pd.StringDtype()


@pytest.mark.parametrize(
    ("cents", "text"), [(1, "0.01"), (1234, "12.34"), (10**15 + 7, "10000000000000.07")]
)
def test_with_units_dollars_display_exactly(cents: int, text: str) -> None:
    df = make_frame([rec("2024-01-01T00:00:00Z", "money_donated", cents)])
    value = aggregate.with_units(df)["money_donated_usd"].iloc[0]
    assert value == cents / 100
    assert repr(float(value)) == text


def test_with_units_new_type_has_no_unit() -> None:
    df = make_frame([rec("2024-01-01T00:00:00Z", NEW_TYPE, 4)])
    got = aggregate.with_units(df)
    assert pd.isna(got["unit"].iloc[0])
    assert pd.isna(got["money_donated_usd"].iloc[0])


def test_functions_never_mutate(customers: pd.DataFrame) -> None:
    before = customers.copy(deep=True)
    aggregate.totals(customers, by="customer_email")
    aggregate.summarize(customers, by=["customer_email", "metadata_src"])
    aggregate.cumulative(customers, "W")
    aggregate.top_customers(customers)
    aggregate.with_units(customers)
    pd.testing.assert_frame_equal(customers, before)


# ------------------------------------------------------------------------- accessor


def test_accessor_delegates(customers: pd.DataFrame) -> None:
    acc = customers.impact
    pd.testing.assert_series_equal(acc.totals(), aggregate.totals(customers))
    pd.testing.assert_frame_equal(
        acc.totals(by="customer_email"), aggregate.totals(customers, by="customer_email")
    )
    pd.testing.assert_frame_equal(acc.summarize("QS"), aggregate.summarize(customers, "QS"))
    pd.testing.assert_frame_equal(
        acc.cumulative(by="category"), aggregate.cumulative(customers, by="category")
    )
    pd.testing.assert_frame_equal(
        acc.top_customers(2, "tree_planted"), aggregate.top_customers(customers, 2, "tree_planted")
    )
    pd.testing.assert_frame_equal(acc.with_units(), aggregate.with_units(customers))
    hashed = acc.pseudonymize(salt="k")
    assert hashed["customer_email"].iloc[0].startswith("email_")
    with pytest.raises(ValueError, match="freq"):
        acc.summarize("bogus")


@pytest.mark.parametrize(
    "name", ["totals", "summarize", "cumulative", "top_customers", "with_units"]
)
def test_accessor_methods_show_the_functions_docs(customers: pd.DataFrame, name: str) -> None:
    # help(df.impact.totals) must be as useful as help(aggregate.totals).
    method, func = getattr(customers.impact, name), getattr(aggregate, name)
    doc, func_doc = inspect.getdoc(method) or "", inspect.getdoc(func) or ""
    assert doc.splitlines()[0] == func_doc.splitlines()[0]
    assert f"impactframe.aggregate.{name}" in doc
    assert all(section in doc for section in ("Parameters", "Returns", "Examples"))
    assert "df : " not in doc
    examples = [line for line in doc.splitlines() if line.startswith(">>> ")]
    assert any(f"df.impact.{name}(" in line for line in examples)
    params = list(inspect.signature(func).parameters.values())
    assert list(inspect.signature(method).parameters.values()) == params[1:]


def test_accessor_registration_is_idempotent_and_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _accessor._register()
        importlib.reload(_accessor)
    assert pd.DataFrame.impact.__module__ == "impactframe._accessor"


def test_accessor_leaves_a_foreign_impact_attribute_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sentinel = object()
    monkeypatch.setattr(pd.DataFrame, "impact", sentinel)
    with caplog.at_level(logging.WARNING, logger="impactframe"):
        _accessor._register()
    assert pd.DataFrame.impact is sentinel
    assert "already taken" in caplog.text


def test_hourly_and_offset_objects(frame: pd.DataFrame) -> None:
    hourly = aggregate.summarize(frame, "h")
    first, last = (
        pd.Timestamp("2024-01-05 10:00", tz="UTC"),
        pd.Timestamp("2024-03-10 12:00", tz="UTC"),
    )
    assert hourly.index[0] == first
    assert hourly.index[-1] == last
    assert len(hourly) == (last - first) / pd.Timedelta(hours=1) + 1
    pd.testing.assert_series_equal(
        hourly.sum().astype("Int64"), aggregate.totals(frame), check_names=False
    )
    pd.testing.assert_frame_equal(
        aggregate.summarize(frame, pd.offsets.MonthBegin()), aggregate.summarize(frame, "MS")
    )


def test_filtered_frames_with_duplicate_index_labels(customers: pd.DataFrame) -> None:
    sub = customers[customers["impact_type"] != "waste_removed"]  # index 0, 1, 2, 4
    twice = pd.concat([sub, sub])  # every label twice
    units = aggregate.with_units(twice)
    assert units["money_donated_usd"].tolist() == [pd.NA, 10.0, pd.NA, 2.5] * 2
    assert units["unit"].iloc[0] == "trees"
    assert aggregate.totals(twice)["tree_planted"] == 10
    assert aggregate.top_customers(twice).loc["b@x.io", "records"] == 4
    assert aggregate.summarize(twice, by="customer_email").loc[
        "b@x.io", "tree_planted"
    ].tolist() == [4, 0, 6]


def test_real_frame_with_a_new_impact_type(backend: str) -> None:
    raw = [
        {"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": 2},
        {"user_id": "U1", "time_utc": "2024-03-01T00:00:00.000Z", NEW_TYPE: 7},
    ]
    with pytest.warns(SchemaDriftWarning, match=NEW_TYPE):
        df = records_to_frame(raw, "records", dtype_backend=backend)
    assert aggregate.totals(df).to_dict() == {
        **dict.fromkeys(IMPACT_TYPES, 0),
        "tree_planted": 2,
        NEW_TYPE: 7,
    }
    assert aggregate.summarize(df)[NEW_TYPE].tolist() == [0, 0, 7]
    assert aggregate.with_units(df)["unit"].isna().tolist() == [False, True]
