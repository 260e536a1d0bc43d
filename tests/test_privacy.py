"""Tests of impactframe._privacy.pseudonymize (SPEC §10)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactframe._privacy import pseudonymize

BACKENDS = ("numpy_nullable", "pyarrow")


def customer_frame(
    emails: list[str | None], names: list[str | None], backend: str = "numpy_nullable"
) -> pd.DataFrame:
    """The customer columns of SPEC §3 (plus user_id and amount), in either backend."""
    s: Any = pd.ArrowDtype(pa.string()) if backend == "pyarrow" else pd.StringDtype()
    i: Any = pd.ArrowDtype(pa.int64()) if backend == "pyarrow" else pd.Int64Dtype()
    return pd.DataFrame(
        {
            "user_id": pd.array(["U1"] * len(emails), dtype=s),
            "customer_id": pd.array([f"C{n}" for n in range(len(emails))], dtype=s),
            "customer_email": pd.array(emails, dtype=s),
            "customer_name": pd.array(names, dtype=s),
            "amount": pd.array(range(len(emails)), dtype=i),
        }
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def frame(backend: str) -> pd.DataFrame:
    return customer_frame(
        ["a@x.io", "b@x.io", None, "a@x.io"], ["Ann", None, "Cy", "Ann"], backend=backend
    )


def test_known_answer() -> None:
    # Pins the scheme: prefix + first 16 hex digits of HMAC-SHA256(salt, value).
    got = pseudonymize(customer_frame(["a@x.io"], ["Ann"]), salt="pepper")
    digest = hmac.new(b"pepper", b"a@x.io", hashlib.sha256).hexdigest()
    assert got["customer_email"].iloc[0] == "email_" + digest[:16]
    name_digest = hmac.new(b"pepper", b"Ann", hashlib.sha256).hexdigest()
    assert got["customer_name"].iloc[0] == "name_" + name_digest[:16]


def test_stable_per_salt_and_na_kept(frame: pd.DataFrame, backend: str) -> None:
    before = frame.copy(deep=True)
    got = pseudonymize(frame, salt="s1")
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    emails = got["customer_email"]
    assert emails.iloc[0] == emails.iloc[3]  # same address, same pseudonym
    assert emails.iloc[0] != emails.iloc[1]
    assert pd.isna(emails.iloc[2])
    assert pd.isna(got["customer_name"].iloc[1])
    assert emails.dtype == frame["customer_email"].dtype  # string dtype and backend kept
    assert got["customer_id"].equals(frame["customer_id"])  # the API's opaque id stays
    assert got["amount"].equals(frame["amount"])
    assert not got["customer_email"].dropna().isin(frame["customer_email"].dropna()).any()
    pd.testing.assert_frame_equal(got, pseudonymize(frame, salt="s1"))


def test_different_salts_differ(frame: pd.DataFrame) -> None:
    one = pseudonymize(frame, salt="s1")["customer_email"].dropna()
    two = pseudonymize(frame, salt="s2")["customer_email"].dropna()
    assert not (one.to_numpy() == two.to_numpy()).any()
    # str and bytes salts are the same key.
    pd.testing.assert_frame_equal(pseudonymize(frame, salt="s1"), pseudonymize(frame, salt=b"s1"))


def test_same_email_same_pseudonym_across_frames() -> None:
    first = pseudonymize(customer_frame(["a@x.io", "b@x.io"], [None, None]), salt="k")
    second = pseudonymize(
        customer_frame(["c@x.io", "a@x.io"], ["X", None], backend="pyarrow"), salt="k"
    )
    assert first["customer_email"].iloc[0] == second["customer_email"].iloc[1]
    assert len(first["customer_email"].iloc[0]) == len("email_") + 16


def test_customer_id_hashed_when_listed(frame: pd.DataFrame) -> None:
    got = pseudonymize(frame, salt="k", columns=["customer_id", "user_id"])
    assert got["customer_id"].str.startswith("cust_").all()
    assert got["user_id"].str.startswith("anon_").all()
    assert got["customer_email"].equals(frame["customer_email"])  # not listed: kept
    single = pseudonymize(frame, salt="k", columns="customer_id")
    assert single["customer_id"].equals(got["customer_id"])


def test_records_frame_comes_back_unchanged() -> None:
    df = pd.DataFrame({"user_id": pd.array(["U1"], dtype="string"), "amount": [1]})
    got = pseudonymize(df, salt="k")
    pd.testing.assert_frame_equal(got, df)
    assert got is not df


def test_empty_frame(backend: str) -> None:
    empty = customer_frame([], [], backend=backend)
    pd.testing.assert_frame_equal(pseudonymize(empty, salt="k"), empty)


@pytest.mark.parametrize("salt", ["", b"", None, 123, ["k"]])
def test_bad_salt(frame: pd.DataFrame, salt: Any) -> None:
    with pytest.raises(
        ValueError, match=r"^salt: .* is not accepted; expected a non-empty str or bytes$"
    ):
        pseudonymize(frame, salt=salt)


def test_missing_listed_column(frame: pd.DataFrame) -> None:
    with pytest.raises(
        ValueError,
        match=r"^columns: \['customer_phone'\] is not accepted; expected columns of the frame",
    ):
        pseudonymize(frame, salt="k", columns=["customer_email", "customer_phone"])


def test_not_a_frame() -> None:
    with pytest.raises(
        ValueError, match=r"^df: a value of type dict is not accepted; expected a pandas DataFrame$"
    ):
        pseudonymize({"customer_email": ["a"]}, salt="k")  # type: ignore[arg-type]


def test_accessor_delegates(frame: pd.DataFrame) -> None:
    import impactframe._accessor  # noqa: F401  (registers df.impact)

    pd.testing.assert_frame_equal(
        frame.impact.pseudonymize(salt="k", columns=["customer_name"]),
        pseudonymize(frame, salt="k", columns=["customer_name"]),
    )


@settings(max_examples=80, deadline=None)
@given(
    emails=st.lists(
        st.one_of(st.none(), st.sampled_from(["a", "b", "A", "é@x", " a"])), max_size=12
    ),
    salt=st.one_of(st.text(min_size=1, max_size=8), st.binary(min_size=1, max_size=8)),
)
def test_equality_pattern_preserved(emails: list[str | None], salt: str | bytes) -> None:
    # Equal values stay equal and distinct values stay distinct: joins and counts survive.
    df = customer_frame(emails, [None] * len(emails))
    got = pseudonymize(df, salt=salt)["customer_email"]
    assert got.isna().tolist() == df["customer_email"].isna().tolist()
    before = pd.factorize(df["customer_email"])[0]
    after = pd.factorize(got)[0]
    assert before.tolist() == after.tolist()
