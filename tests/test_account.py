"""The account's figures and reconciliation (SPEC §12), against a real sandbox on loopback.

The session ``sandbox`` is only read; tests that make or cancel impacts start their own.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.errors
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

import impactframe as ifr
from impactframe._constants import IMPACT_TYPES
from impactframe.sandbox import Fault, SandboxServer

MakeSandbox = Callable[..., SandboxServer]
MAKE = {
    "tree_planted": "/v1/plant_tree",
    "waste_removed": "/v1/clean_ocean",
    "carbon_captured": "/v1/capture_carbon",
    "coral_restored": "/v1/restore_coral",
    "money_donated": "/v1/donate_money",
}


def keys(server: SandboxServer) -> dict[str, str]:
    return {"api_key": server.api_key, "base_url": server.url}


def loaded(server: SandboxServer) -> tuple[pd.DataFrame, pd.DataFrame]:
    conn = keys(server)
    return ifr.load_records(**conn, progress=False), ifr.load_customer_records(**conn)


def per_type(frame: pd.DataFrame) -> dict[str, int]:
    return {t: int(frame[t].sum()) for t in IMPACT_TYPES}


def per_day(*frames: pd.DataFrame) -> pd.DataFrame:
    """The expected daily frame: the records' amounts per UTC day and type."""
    both = pd.concat(frames, ignore_index=True)
    both["date"] = both["time_utc"].dt.floor("D")
    daily = both.groupby("date")[list(IMPACT_TYPES)].sum().reset_index()
    return daily.astype({t: "Int64" for t in IMPACT_TYPES})


def post(server: SandboxServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(
        server.url + path, json=body, headers={"x-api-key": server.api_key}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def frames(sandbox: SandboxServer) -> tuple[pd.DataFrame, pd.DataFrame]:
    return loaded(sandbox)


# -- load_impact and load_daily_impact ---------------------------------------------------------


def test_load_impact_is_the_sums_of_the_records(
    sandbox: SandboxServer, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, customer_records = frames
    impact = ifr.load_impact(**keys(sandbox))
    assert impact.index.tolist() == ["user", "customer", "total"]
    assert impact.index.name == "scope"
    assert impact.columns.tolist() == list(IMPACT_TYPES)
    assert (impact.dtypes == "Int64").all()
    assert impact.loc["user"].to_dict() == per_type(records)
    assert impact.loc["customer"].to_dict() == per_type(customer_records)
    both = {t: per_type(records)[t] + per_type(customer_records)[t] for t in IMPACT_TYPES}
    assert impact.loc["total"].to_dict() == both
    assert impact.attrs["user_id"] == records["user_id"].iloc[0]


def test_load_daily_impact_is_the_records_per_day(
    sandbox: SandboxServer, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, customer_records = frames
    everything = ifr.load_daily_impact(**keys(sandbox))
    assert_frame_equal(everything, per_day(records, customer_records))
    assert_frame_equal(ifr.DailyImpactSchema.validate(everything), everything)
    in_2024 = ifr.load_daily_impact(
        start_date="2024-01-01", end_date=pd.Timestamp("2024-12-31"), **keys(sandbox)
    )
    assert len(in_2024) > 100
    expected = everything[everything["date"].dt.year == 2024].reset_index(drop=True)
    assert_frame_equal(in_2024, expected)
    assert sandbox.requests[-1].params == {"start_date": ["2024-01-01"], "end_date": ["2024-12-31"]}


def test_a_range_without_impact_is_an_empty_typed_frame(sandbox: SandboxServer) -> None:
    empty = ifr.load_daily_impact(start_date="1990-01-01", end_date="1990-12-31", **keys(sandbox))
    assert empty.empty
    assert empty.columns.tolist() == ["date", *IMPACT_TYPES]
    assert str(empty["date"].dtype) == "datetime64[ms, UTC]"
    assert (empty.dtypes.iloc[1:] == "Int64").all()


def test_daily_impact_schema_refuses_what_breaks_it() -> None:
    good = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True).as_unit("ms"),
            **{t: pd.array([1, 2], dtype="Int64") for t in IMPACT_TYPES},
        }
    )
    ifr.DailyImpactSchema.validate(good)
    broken = {
        "int64": good.astype({"tree_planted": "int64"}),
        "negative": good.assign(waste_removed=pd.array([1, -1], dtype="Int64")),
        "null": good.assign(coral_restored=pd.array([1, None], dtype="Int64")),
        "duplicate day": good.assign(date=good["date"].iloc[[0, 0]].to_numpy()),
        "not midnight": good.assign(date=good["date"] + pd.Timedelta(hours=1)),
        "descending": good.iloc[::-1].reset_index(drop=True),
        "new type as float": good.assign(kelp=[1.0, 2.0]),
        "missing type": good.drop(columns="money_donated"),
    }
    for name, frame in broken.items():
        with pytest.raises(pandera.errors.SchemaError):
            ifr.DailyImpactSchema.validate(frame)
        with pytest.raises(pandera.errors.SchemaErrors):
            ifr.DailyImpactSchema.validate(frame, lazy=True)
        assert name


def test_new_impact_types_are_columns_and_warned(make_sandbox: MakeSandbox) -> None:
    records = [
        {"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": 2},
        {"user_id": "U1", "time_utc": "2024-01-02T00:00:00.000Z", "kelp_grown": 5},
    ]
    server = make_sandbox(records, [])
    with pytest.warns(ifr.SchemaDriftWarning, match="'kelp_grown'"):
        impact = ifr.load_impact(**keys(server))
    assert impact.columns.tolist() == [*IMPACT_TYPES, "kelp_grown"]
    assert impact["kelp_grown"].tolist() == [5, 0, 5]
    with pytest.warns(ifr.SchemaDriftWarning, match="'kelp_grown'"):
        daily = ifr.load_daily_impact(**keys(server))
    assert daily["kelp_grown"].tolist() == [0, 5]
    with pytest.warns(ifr.SchemaDriftWarning):
        result = ifr.reconcile(**keys(server))
    assert result.ok, result
    with pytest.warns(ifr.SchemaDriftWarning):
        short = ifr.reconcile(
            start_date="2024-01-01", **keys(server), records=records_frame(server)
        )
    assert short.ok


def records_frame(server: SandboxServer) -> pd.DataFrame:
    with pytest.warns(ifr.SchemaDriftWarning):
        return ifr.load_records(**keys(server))


# -- the API's bodies, checked ----------------------------------------------------------------

TOTALS = {"user_id": "U1", **dict.fromkeys(IMPACT_TYPES, 0)}
SPLIT = dict.fromkeys(IMPACT_TYPES, 0)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/impact", [], "response body"),
        ("/v1/impact", {**TOTALS, "customer_impact": SPLIT}, "user_impact"),
        ("/v1/impact", {**TOTALS, "user_impact": [], "customer_impact": SPLIT}, "user_impact"),
        (
            "/v1/impact",
            {**TOTALS, "user_impact": {"tree_planted": "3"}, "customer_impact": SPLIT},
            "user_impact.tree_planted",
        ),
        (
            "/v1/impact",
            {**TOTALS, "waste_removed": -1, "user_impact": SPLIT, "customer_impact": SPLIT},
            "waste_removed",
        ),
        (
            "/v1/impact",
            {**TOTALS, "user_impact": SPLIT, "customer_impact": {"coral_restored": True}},
            "customer_impact.coral_restored",
        ),
        (
            "/v1/impact",
            {**TOTALS, "user_id": 5, "user_impact": SPLIT, "customer_impact": SPLIT},
            "user_id",
        ),
        ("/v1/impact/daily", {"user_id": "U1"}, "daily_impact"),
        ("/v1/impact/daily", {"daily_impact": {}}, "daily_impact"),
        ("/v1/impact/daily", {"daily_impact": [5]}, "daily_impact[]"),
        ("/v1/impact/daily", {"daily_impact": [{"tree_planted": 1}]}, "daily_impact.date"),
        ("/v1/impact/daily", {"daily_impact": [{"date": "2024-02-30"}]}, "daily_impact.date"),
        ("/v1/impact/daily", {"daily_impact": [{"date": "2024-1-01"}]}, "daily_impact.date"),
        ("/v1/impact/daily", {"daily_impact": [{"date": "2023-12-31"}]}, "daily_impact.date"),
        (
            "/v1/impact/daily",
            {"daily_impact": [{"date": "2024-01-05"}, {"date": "2024-01-05"}]},
            "daily_impact.date",
        ),
        (
            "/v1/impact/daily",
            {"daily_impact": [{"date": "2024-01-05", "money_donated": 1.5}]},
            "daily_impact.money_donated",
        ),
    ],
)
def test_malformed_figures_are_validation_errors(
    sandbox: SandboxServer, path: str, body: object, field: str
) -> None:
    sandbox.inject(Fault("status", status=200, body=json.dumps(body)), path=path)
    load: Callable[..., Any] = ifr.load_impact
    if path != "/v1/impact":
        load = functools.partial(ifr.load_daily_impact, start_date="2024-01-01")
    with pytest.raises(ifr.ValidationError) as info:
        load(**keys(sandbox))
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_unknown_fields_are_named_in_warnings(sandbox: SandboxServer) -> None:
    body = {**TOTALS, "note": "hello", "user_impact": SPLIT, "customer_impact": SPLIT}
    sandbox.inject(Fault("status", status=200, body=json.dumps(body)), path="/v1/impact")
    with pytest.warns(ifr.SchemaDriftWarning, match="'note'"):
        impact = ifr.load_impact(**keys(sandbox))
    assert impact.columns.tolist() == list(IMPACT_TYPES)
    daily = {"user_id": "U1", "daily_impact": [], "has_more": False}
    sandbox.inject(Fault("status", status=200, body=json.dumps(daily)), path="/v1/impact/daily")
    with pytest.warns(ifr.SchemaDriftWarning, match="'has_more'"):
        assert ifr.load_daily_impact(**keys(sandbox)).empty


def test_missing_types_are_zero_and_the_total_their_sum(sandbox: SandboxServer) -> None:
    body = {"user_id": "U1", "user_impact": {"tree_planted": 2}, "customer_impact": {}}
    sandbox.inject(Fault("status", status=200, body=json.dumps(body)), path="/v1/impact")
    impact = ifr.load_impact(**keys(sandbox))
    assert impact["tree_planted"].tolist() == [2, 0, 2]
    assert impact["money_donated"].tolist() == [0, 0, 0]


# -- arguments and errors ----------------------------------------------------------------------


def _bad_calls(sandbox: SandboxServer) -> list[tuple[Callable[[], Any], str]]:
    conn = keys(sandbox)
    records, customer_records = pd.DataFrame(), pd.DataFrame()
    frame = pd.DataFrame({"time_utc": [], "impact_type": [], "amount": []})
    client = ifr.Client(sandbox.api_key, base_url=sandbox.url)
    return [
        (lambda: ifr.load_daily_impact(start_date="2024-02-30", **conn), "start_date"),
        (lambda: ifr.load_daily_impact(end_date="yesterday", **conn), "end_date"),
        (
            lambda: ifr.load_daily_impact(start_date="2024-03-02", end_date="2024-03-01", **conn),
            "start_date",
        ),
        (lambda: ifr.load_daily_impact(start_date=20240101, **conn), "start_date"),
        (lambda: ifr.load_impact(client=client, api_key="k"), "client"),
        (lambda: ifr.load_impact(client="my-key"), "client"),  # type: ignore[arg-type]
        (lambda: ifr.load_impact(base_url="http://example.com", api_key="k"), "base_url"),
        (lambda: ifr.reconcile("not a frame", **conn), "records"),  # type: ignore[arg-type]
        (lambda: ifr.reconcile(records, **conn), "records"),
        (lambda: ifr.reconcile(frame.assign(customer_id=[], customer_email=[]), **conn), "records"),
        (lambda: ifr.reconcile(None, frame, **conn), "customer_records"),
        (lambda: ifr.reconcile(None, customer_records, **conn), "customer_records"),
        (lambda: ifr.reconcile(start_date="2024-13-01", **conn), "start_date"),
        (
            lambda: ifr.reconcile(end_date="2024-01-01", start_date="2024-02-01", **conn),
            "start_date",
        ),
        (lambda: ifr.reconcile(client=client, base_url=sandbox.url), "client"),
    ]


def test_bad_arguments_raise_before_any_request(sandbox: SandboxServer) -> None:
    calls = _bad_calls(sandbox)
    for call, argument in calls:
        with pytest.raises(ValueError, match=re.escape(argument)) as info:
            call()
        assert str(info.value).startswith(argument) or "client=" in str(info.value), info.value
        assert not isinstance(info.value, ifr.ValidationError)
    assert sandbox.requests == []
    assert len(calls) == 15


@pytest.mark.parametrize(
    "call",
    [
        lambda conn: ifr.load_impact(**conn),
        lambda conn: ifr.load_daily_impact(start_date="2024-01-01", **conn),
        lambda conn: ifr.reconcile(**conn),
        lambda conn: ifr.reconcile(start_date="2024-01-01", **conn),
    ],
)
def test_a_wrong_key_is_an_authentication_error(
    sandbox: SandboxServer, call: Callable[[dict[str, str]], Any]
) -> None:
    secret = "sk-live-not-this-one"
    with pytest.raises(ifr.AuthenticationError) as info:
        call({"api_key": secret, "base_url": sandbox.url})
    assert info.value.status == 401
    assert info.value.error_type == "key_error"
    assert secret not in str(info.value)
    assert len(sandbox.requests) == 1  # not retried


@pytest.mark.parametrize("path", ["/v1/impact", "/v1/impact/daily"])
def test_server_errors_are_retried_then_raised(
    sandbox: SandboxServer, client: ifr.Client, fake_sleep: list[float], path: str
) -> None:
    sandbox.inject(Fault("status", status=503), times=None, path=path)
    load: Callable[..., Any] = ifr.reconcile
    if path != "/v1/impact":
        load = functools.partial(ifr.load_daily_impact, end_date="2024-01-01")
    with pytest.raises(ifr.APIError) as info:
        load(client=client)
    assert info.value.status == 503
    assert len(fake_sleep) == client.max_retries
    assert [r.path for r in sandbox.requests] == [path] * (client.max_retries + 1)
    sandbox.clear_faults()
    sandbox.inject(Fault("status", status=429, retry_after="2"), times=2, path=path)
    fake_sleep.clear()
    if path == "/v1/impact":
        assert ifr.load_impact(client=client).loc["total"].sum() > 0
    else:
        assert not ifr.load_daily_impact(client=client).empty
    assert fake_sleep == [2.0, 2.0]


# -- reconcile ---------------------------------------------------------------------------------


def test_reconcile_is_ok_on_the_intact_sandbox(
    sandbox: SandboxServer, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, customer_records = frames
    totals = ifr.reconcile(**keys(sandbox))
    assert totals.ok
    assert (totals.basis, totals.n_records, totals.n_customer_records) == ("totals", 2000, 2000)
    assert totals.differences.columns.tolist() == [
        "where",
        "impact_type",
        "loaded",
        "reported",
        "difference",
    ]
    assert str(totals).startswith("Complete: 2,000 records and 2,000 customer records match")
    daily = ifr.reconcile(start_date="2023-01-01", end_date="2023-06-30", **keys(sandbox))
    assert daily.ok
    assert daily.basis == "daily"
    in_range = records["time_utc"].dt.strftime("%Y-%m-%d").between("2023-01-01", "2023-06-30")
    assert daily.n_records == int(in_range.sum()) > 0
    assert "from 2023-01-01 to 2023-06-30" in str(daily)
    given = ifr.reconcile(records, customer_records, start_date="2023-01-01", **keys(sandbox))
    assert given.ok  # rows before the start left out
    assert given.n_records < len(records)


def test_reconcile_finds_a_removed_day(
    sandbox: SandboxServer, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, customer_records = frames
    day = records["time_utc"].dt.floor("D")
    gone = day.iloc[len(day) // 2]
    without = records[day != gone]
    result = ifr.reconcile(without, customer_records, start_date="2024-01-01", **keys(sandbox))
    assert not result.ok
    removed = records[day == gone]
    lost = removed.groupby("impact_type", observed=True)["amount"].sum()
    assert set(result.differences["where"]) == {gone.strftime("%Y-%m-%d")}
    assert dict(
        zip(result.differences["impact_type"], result.differences["difference"], strict=True)
    ) == {str(k): -int(v) for k, v in lost.items()}
    assert (result.differences["loaded"] + lost.sum() >= 0).all()
    text = str(result)
    assert text.startswith("Incomplete:")
    assert gone.strftime("%Y-%m-%d") in text
    assert str(lost.index[0]) in text
    # over the lifetime totals, the same loss shows as the user records' shortfall
    overall = ifr.reconcile(without, customer_records, **keys(sandbox))
    assert overall.differences["where"].unique().tolist() == ["user"]
    assert overall.differences["difference"].sum() == -lost.sum()


def test_reconcile_finds_a_removed_customer_record(
    sandbox: SandboxServer, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, customer_records = frames
    victim = customer_records.iloc[123]
    result = ifr.reconcile(records, customer_records.drop(index=123), **keys(sandbox))
    assert not result.ok
    row = result.differences.iloc[0]
    assert len(result.differences) == 1
    assert (row["where"], row["impact_type"]) == ("customer", victim["impact_type"])
    assert row["difference"] == -victim["amount"]
    assert row["reported"] - row["loaded"] == victim["amount"]
    assert f"customer {victim['impact_type']}" in " ".join(str(result).split())


def test_reconcile_finds_a_doubled_record(
    sandbox: SandboxServer, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, customer_records = frames
    twice = pd.concat([records, records.iloc[[7]]], ignore_index=True)
    doubled = records.iloc[7]
    result = ifr.reconcile(twice, customer_records, **keys(sandbox))
    assert result.differences.to_dict("records") == [
        {
            "where": "user",
            "impact_type": doubled["impact_type"],
            "loaded": result.differences["reported"].iloc[0] + doubled["amount"],
            "reported": result.differences["reported"].iloc[0],
            "difference": doubled["amount"],
        }
    ]
    day = doubled["time_utc"].strftime("%Y-%m-%d")
    daily = ifr.reconcile(twice, customer_records, start_date=day, end_date=day, **keys(sandbox))
    assert daily.differences["where"].tolist() == [day]
    assert daily.differences["difference"].tolist() == [doubled["amount"]]
    assert repr(daily).startswith("Reconciliation(ok=False, basis='daily', differences=1")


def test_reconcile_reads_frames_of_either_dtype_backend(sandbox: SandboxServer) -> None:
    conn = keys(sandbox)
    records = ifr.load_records(dtype_backend="pyarrow", **conn)
    customer_records = ifr.load_customer_records(dtype_backend="pyarrow", **conn)
    assert ifr.reconcile(records, customer_records, **conn).ok
    assert ifr.reconcile(
        records.iloc[1:], customer_records, start_date="2021-01-01", **conn
    ).differences["difference"].tolist() == [-records["amount"].iloc[0]]


def test_reconcile_loads_only_what_is_not_given(
    sandbox: SandboxServer, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, _ = frames
    sandbox.clear_log()
    assert ifr.reconcile(records, **keys(sandbox)).ok
    paths = [r.path for r in sandbox.requests]
    assert "/v1/records" not in paths
    assert paths.count("/v1/impact") == 2  # before and after the customer records loaded
    assert "/v1/customer_records" in paths


def test_reconcile_says_when_the_account_changed_during_the_load(
    make_sandbox: MakeSandbox,
) -> None:
    server = make_sandbox(n_records=1500, n_customer_records=1500)
    stop = threading.Event()

    def keep_planting() -> None:
        with requests.Session() as session:
            while not stop.wait(0.002):
                session.post(
                    server.url + "/v1/plant_tree",
                    json={"amount": 1},
                    headers={"x-api-key": server.api_key},
                    timeout=10,
                )

    planter = threading.Thread(target=keep_planting)
    planter.start()
    try:
        result = ifr.reconcile(**keys(server))
    finally:
        stop.set()
        planter.join()
    assert not result.stable
    assert not result.ok
    assert "changed while the records loaded" in str(result)
    assert [r.path for r in server.requests].count("/v1/impact") == 6  # 3 tries
    assert ifr.reconcile(**keys(server)).ok  # once quiet


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(IMPACT_TYPES),
                st.integers(1, 5000),
                st.sampled_from([None, "a@example.com", "b@example.com"]),
            ),
            st.integers(0, 1000),  # cancel the n-th record served
        ),
        min_size=1,
        max_size=10,
    )
)
def test_figures_equal_the_records_after_random_posts_and_cancels(
    make_sandbox: MakeSandbox, steps: list[Any]
) -> None:
    server = make_sandbox(n_records=60, n_customer_records=60, seed=len(steps))
    for step in steps:
        if isinstance(step, tuple):
            kind, amount, email = step
            post(
                server,
                MAKE[kind],
                {"amount": amount} | ({"customer_email": email} if email else {}),
            )
        else:
            served = server.served_records() + server.served_records("customer_records")
            victim = served[step % len(served)]
            key = {"user_id": victim["user_id"], "time_utc": victim["time_utc"]}
            post(server, "/v1/cancel_impact", key)
    records, customer_records = loaded(server)
    impact = ifr.load_impact(**keys(server))
    assert impact.loc["user"].to_dict() == per_type(records)
    assert impact.loc["customer"].to_dict() == per_type(customer_records)
    assert_frame_equal(ifr.load_daily_impact(**keys(server)), per_day(records, customer_records))
    assert ifr.reconcile(records, customer_records, **keys(server)).ok
    assert ifr.reconcile(start_date="2021-01-01", **keys(server)).ok


def test_the_readme_shows_what_reconcile_prints(sandbox: SandboxServer) -> None:
    # The README's example runs in tests/test_readme.py; here its printed lines are checked.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Proving a load complete") :].split("\n## ")[0]
    comments = [line[2:] for line in section.splitlines() if line.startswith("# ")]
    complete = next(c for c in comments if c.startswith("Complete:"))
    start = next(i for i, c in enumerate(comments) if c.startswith("Incomplete:"))
    stop = next(i for i, c in enumerate(comments) if i > start and c.strip() == "...")
    incomplete = comments[start:stop]
    conn = keys(sandbox)
    assert str(ifr.reconcile(**conn)) == complete
    df = ifr.load_records(start_date="2024-01-01", end_date="2024-12-31", **conn)
    broken = df[df["time_utc"].dt.strftime("%Y-%m-%d") != "2024-05-19"]
    printed = str(ifr.reconcile(broken, start_date="2024-01-01", end_date="2024-12-31", **conn))
    lines = printed.splitlines()
    assert " ".join(incomplete[:2]) == lines[0]  # the README wraps the first line
    assert incomplete[2:] == lines[1:4]
