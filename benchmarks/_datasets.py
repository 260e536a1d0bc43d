"""Exported datasets compared with frames (``soak`` and ``hostile``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["comparable", "equal_loose", "read_dataset"]


def read_dataset(path: Path) -> pd.DataFrame:
    """An exported dataset (partitioned by year) as a frame in the loader's row order."""
    frame = pd.read_parquet(path).drop(columns=["year"])
    frame["impact_type"] = frame["impact_type"].astype(str)
    return frame.sort_values(["time_utc", "user_id"], ignore_index=True)


def comparable(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` as `read_dataset` gives it back: `columns`, plain impact types, in order."""
    frame = frame.copy()
    frame["impact_type"] = frame["impact_type"].astype(str)
    return frame.sort_values(["time_utc", "user_id"], ignore_index=True)[columns]


def equal_loose(got: pd.DataFrame, expected: pd.DataFrame) -> bool:
    """Equal values; dtypes may differ where Parquet's round trip changes them (categories)."""
    try:
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    except AssertionError:
        return False
    return True
