"""The pure retry policy: which statuses, how long, Retry-After (SPEC §4). No sleeping."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactframe._constants import BACKOFF_BASE, BACKOFF_CAP, RETRY_AFTER_CAP
from impactframe.client._retry import backoff_delay, is_retryable_status, parse_retry_after

NOW = dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 422, 501, 505])
def test_other_statuses_are_final(status: int) -> None:
    assert not is_retryable_status(status)


def test_backoff_sequence_is_exact_with_a_seeded_rng() -> None:
    # Equal jitter: half of min(cap, base * 2**attempt) fixed, the other half from the rng.
    rng, twin = random.Random(42), random.Random(42)
    sleeps: list[float] = []
    for attempt in range(8):
        sleeps.append(backoff_delay(attempt, retry_after=None, rng=rng))
    expected = []
    for attempt in range(8):
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
        expected.append(ceiling / 2 + twin.uniform(0, ceiling / 2))
    assert sleeps == expected
    # Pinned, so a change of policy is a visible decision (the last two hit the 30 s cap).
    assert [round(s, 4) for s in sleeps] == [
        0.4099, 0.5125, 1.275, 2.4464, 6.9459, 13.4136, 28.3827, 16.3041,
    ]  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0))
def test_backoff_stays_within_equal_jitter_bounds(attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, retry_after=None, rng=random.Random(seed))
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 64))
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= BACKOFF_CAP


def test_retry_after_wins_over_backoff_and_is_capped() -> None:
    rng = random.Random(0)
    assert backoff_delay(3, retry_after=2.0, rng=rng) == 2.0
    assert backoff_delay(0, retry_after=RETRY_AFTER_CAP + 1, rng=rng) == RETRY_AFTER_CAP
    # The rng is untouched when the server decides.
    assert rng.random() == random.Random(0).random()


def test_raw_retry_after_header_is_parsed_with_now() -> None:
    rng = random.Random(0)
    assert backoff_delay(0, retry_after="7", rng=rng) == 7.0
    header = "Mon, 01 Jan 2024 12:00:45 GMT"
    assert backoff_delay(0, retry_after=header, rng=rng, now=NOW) == 45.0


@pytest.mark.parametrize("now_please", [0.0, -5.0, "0", "-1", "Mon, 01 Jan 2024 11:59:00 GMT"])
def test_retry_after_asking_for_no_wait_is_honoured(now_please: float | str) -> None:
    # The server says "now" (0, a negative delay, a date in the past): retry at once; the
    # retries stay bounded by max_retries.
    assert backoff_delay(2, retry_after=now_please, rng=random.Random(1), now=NOW) == 0.0


@pytest.mark.parametrize("useless", [float("nan"), "nan", "inf", "garbage"])
def test_useless_retry_after_falls_back_to_backoff(useless: float | str) -> None:
    delay = backoff_delay(2, retry_after=useless, rng=random.Random(1), now=NOW)
    assert delay == backoff_delay(2, retry_after=None, rng=random.Random(1))
    assert 1.0 <= delay <= 2.0


@pytest.mark.parametrize("bad", [-1, True, 1.0])
def test_attempt_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^attempt: .* expected an int >= 0$"):
        backoff_delay(bad, retry_after=None, rng=random.Random())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("100000", 100000.0),  # uncapped here; backoff_delay caps
        ("Mon, 01 Jan 2024 12:00:30 GMT", 30.0),
        ("Monday, 01-Jan-24 12:01:00 GMT", 60.0),  # RFC 850, still allowed by RFC 9110
        ("Mon Jan  1 12:00:10 2024", 10.0),  # asctime
        ("Mon, 01 Jan 2024 13:00:00 +0100", 0.0),  # 12:00 UTC: now, so no wait
        ("Mon, 01 Jan 2024 11:59:00 GMT", 0.0),  # in the past: now
        ("0", 0.0),
        ("-3", 0.0),
        ("inf", None),
        ("nan", None),
        ("", None),
        ("soon", None),
        ("Mon, 32 Jan 2024 12:00:00 GMT", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_parse_retry_after_with_naive_now_takes_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:05 GMT", now=naive_now) == 5.0
