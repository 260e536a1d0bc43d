"""Tests of impactframe.plot (SPEC §8, extra impactframe[plot]), drawn with the Agg backend."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

matplotlib.use("Agg")  # before pyplot: no display needed

import matplotlib.pyplot as plt

from impactframe import _accessor, aggregate  # noqa: F401  (_accessor registers df.impact)
from impactframe._constants import IMPACT_TYPES
from impactframe.plot import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def records(
    backend: str = "numpy_nullable", rows: list[tuple[str, str, int]] | None = None
) -> pd.DataFrame:
    """A minimal SPEC §3 records frame: time_utc, impact_type, amount and type columns."""
    rows = (
        [
            ("2024-01-05T10:00:00Z", "tree_planted", 2),
            ("2024-01-20T10:00:00Z", "money_donated", 1000),
            ("2024-03-01T00:00:00Z", "tree_planted", 3),
            ("2024-04-09T12:00:00Z", "money_donated", 250),
        ]
        if rows is None
        else rows
    )
    arrow = backend == "pyarrow"
    i: Any = pd.ArrowDtype(pa.int64()) if arrow else pd.Int64Dtype()
    times = pd.Series(
        pd.to_datetime([r[0] for r in rows], utc=True, format="ISO8601"),
        dtype="datetime64[ms, UTC]",
    )
    if arrow:
        times = times.astype(pd.ArrowDtype(pa.timestamp("ms", tz="UTC")))
    frame = pd.DataFrame(
        {
            "time_utc": times,
            "impact_type": pd.Categorical([r[1] for r in rows], categories=list(IMPACT_TYPES)),
            "amount": pd.array([r[2] for r in rows], dtype=i),
        }
    )
    for typ in IMPACT_TYPES:
        frame[typ] = pd.array([r[2] if r[1] == typ else None for r in rows], dtype=i)
    return frame


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _save(figure: Any, path: Path) -> None:
    figure.savefig(path)
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_small_multiples_line(tmp_path: Path, backend: str) -> None:
    axes = plot(records(backend))
    assert isinstance(axes, np.ndarray)
    assert [a.get_title() for a in axes] == [
        "tree_planted (trees)",
        "money_donated (US dollars)",
    ]
    for ax in axes:
        assert len(ax.get_lines()) == 1
        assert len(ax.get_lines()[0].get_xdata()) == 4  # Jan..Apr, gaps zero-filled
    assert axes[0].get_lines()[0].get_ydata().tolist() == [2, 0, 3, 0]
    assert axes[1].get_lines()[0].get_ydata().tolist() == [10.0, 0, 0, 2.5]  # cents -> dollars
    assert axes[0].figure.get_suptitle() == "Impact per period (freq=MS)"
    _save(axes[0].figure, tmp_path / "line.png")


def test_bar_and_area(tmp_path: Path) -> None:
    bars = plot(records(), kind="bar", freq="QS")
    assert [len(ax.patches) for ax in bars] == [2, 2]  # two quarters per panel
    _save(bars[0].figure, tmp_path / "bar.png")
    areas = plot(records(), kind="area", impact_types="tree_planted")
    assert len(areas) == 1
    assert len(areas[0].collections) == 1
    _save(areas[0].figure, tmp_path / "area.png")


def test_overlay_and_given_ax(tmp_path: Path) -> None:
    ax = plot(records(), subplots=False, title="All")
    assert ax.get_title() == "All"
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "tree_planted (trees)",
        "money_donated (US dollars)",
    ]
    _, own = plt.subplots()
    got = plot(records(), ax=own, impact_types=["money_donated"], cumulative=True)
    assert got is own
    assert own.get_lines()[0].get_ydata().tolist() == [10.0, 10.0, 10.0, 12.5]
    _save(own.figure, tmp_path / "overlay.png")


def test_cumulative_ends_at_totals() -> None:
    df = records()
    axes = plot(df, cumulative=True, impact_types=list(IMPACT_TYPES), freq="W")
    assert len(axes) == len(IMPACT_TYPES)
    last = {ax.get_title().split()[0]: ax.get_lines()[0].get_ydata()[-1] for ax in axes}
    total = aggregate.totals(df)
    assert last["tree_planted"] == total["tree_planted"]
    assert last["money_donated"] == total["money_donated"] / 100
    assert last["coral_restored"] == 0


def test_empty_frame(tmp_path: Path) -> None:
    axes = plot(records(rows=[]))
    assert len(axes) == 1
    assert [t.get_text() for t in axes[0].texts] == ["no records"]
    _save(axes[0].figure, tmp_path / "empty.png")


def test_bad_arguments() -> None:
    with pytest.raises(
        ValueError, match=r"^kind: 'pie' is not accepted; expected one of 'line', 'bar', 'area'$"
    ):
        plot(records(), kind="pie")
    with pytest.raises(ValueError, match="impact_types"):
        plot(records(), impact_types=["trees"])
    with pytest.raises(ValueError, match="impact_types"):
        plot(records(), impact_types=[])
    with pytest.raises(ValueError, match="freq"):
        plot(records(), freq="fortnight")


def test_accessor_delegates() -> None:
    axes = records().impact.plot(freq="QS", kind="bar")
    assert [len(ax.patches) for ax in axes] == [2, 2]


def test_missing_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail, as on a machine without the extra.
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'impactframe\[plot\]'"):
        plot(records())
