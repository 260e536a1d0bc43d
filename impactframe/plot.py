"""Charts of a records frame over time (SPEC §8, extra ``impactframe[plot]``).

Impact types have different units (trees, pounds, cents), so by default each gets its own
small panel titled with its unit instead of sharing one misleading y axis. matplotlib is
imported only when a chart is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import aggregate as _agg
from ._constants import UNITS
from ._params import check_choice, reject
from .aggregate import C, _impact_types

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["KINDS", "plot"]

KINDS = ("line", "bar", "area")
#: money_donated is drawn in dollars: cents make axes with needlessly long tick labels.
_DISPLAY = {"money_donated": (100, "US dollars")}


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = "plot() needs matplotlib: pip install 'impactframe[plot]'"
        raise ImportError(msg) from exc
    return plt


def _check_types(df: pd.DataFrame, impact_types: str | Sequence[str] | None) -> list[str]:
    known = _impact_types(df)
    if impact_types is None:
        present = set(pd.unique(df[C.impact_type].dropna().astype(str)))
        return [t for t in known if t in present]
    wanted = [impact_types] if isinstance(impact_types, str) else list(impact_types)
    unknown = [t for t in wanted if t not in known]
    if unknown or not wanted:
        accepted = "one or more of " + ", ".join(repr(t) for t in known)
        reject("impact_types", unknown or wanted, accepted)
    return list(dict.fromkeys(wanted))


def _draw(ax: Axes, kind: str, x: np.ndarray, y: np.ndarray, width: float, label: str) -> None:
    if kind == "line":
        ax.plot(x, y, marker="o" if len(x) < 40 else None, label=label)
    elif kind == "bar":
        ax.bar(x, y, width=width, align="edge", label=label)
    else:
        ax.fill_between(x, y, step=None, alpha=0.6, label=label)


def plot(
    df: pd.DataFrame,
    freq: Any = "MS",
    *,
    kind: str = "line",
    impact_types: str | Sequence[str] | None = None,
    cumulative: bool = False,
    ax: Axes | None = None,
    title: str | None = None,
    subplots: bool = True,
) -> Axes | np.ndarray:
    """Chart impact amounts per period, one panel (or line) per impact type.

    Parameters
    ----------
    df : pandas.DataFrame
        A records frame (SPEC §3).
    freq : str or pandas.DateOffset, default "MS"
        Period length, as in :func:`impactframe.aggregate.summarize`.
    kind : {"line", "bar", "area"}, default "line"
        How each series is drawn; bars span their period.
    impact_types : str or list of str, optional
        Types to draw; default: every type with at least one record in ``df``.
    cumulative : bool, default False
        Draw running totals (:func:`impactframe.aggregate.cumulative`) instead of per-period
        amounts.
    ax : matplotlib.axes.Axes, optional
        Draw every type on this Axes (implies ``subplots=False``).
    title : str, optional
        Figure title (Axes title with ``subplots=False``); a default names ``freq``.
    subplots : bool, default True
        One panel per type, titled with its unit, sharing the time axis. ``False`` overlays
        every type on one Axes with a legend naming the units.

    Returns
    -------
    matplotlib.axes.Axes or numpy.ndarray of Axes
        With ``subplots=True`` (and no ``ax``): a 1-d array holding one Axes per type, like
        ``DataFrame.plot(subplots=True)``. Otherwise the one Axes drawn on. ``.figure`` of
        any of them saves the chart. ``money_donated`` is drawn in US dollars. A frame without
        records gives one empty Axes saying so.

    Raises
    ------
    ValueError
        For an unknown ``kind`` or ``impact_types`` value, or a bad ``freq``.
    ImportError
        If matplotlib is not installed (``pip install 'impactframe[plot]'``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> df = pd.DataFrame({
    ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-03-09"], utc=True),
    ...     "impact_type": pd.Categorical(["tree_planted", "money_donated"]),
    ...     "amount": pd.array([2, 300], dtype="Int64"),
    ... })
    >>> axes = plot(df)
    >>> [a.get_title() for a in axes]
    ['tree_planted (trees)', 'money_donated (US dollars)']
    >>> axes[0].figure.savefig("impacts.png")  # doctest: +SKIP
    """
    check_choice(kind, "kind", KINDS)
    plt = _pyplot()
    table = (_agg.cumulative if cumulative else _agg.summarize)(df, freq=freq)
    types = _check_types(df, impact_types)
    what = "Cumulative impact" if cumulative else "Impact per period"
    title = title if title is not None else f"{what} (freq={_freq_label(freq)})"

    overlay = ax is not None or not subplots
    if overlay:
        if ax is None:
            _, ax = plt.subplots(figsize=(9, 4), layout="constrained")
        axes = [ax] * max(len(types), 1)
        ax.set_title(title)
    else:
        n = max(len(types), 1)
        fig, grid = plt.subplots(
            n, 1, sharex=True, figsize=(9, 1.0 + 2.2 * n), layout="constrained", squeeze=False
        )
        axes = list(grid[:, 0])
        fig.suptitle(title)

    x = table.index.tz_convert(None).to_numpy()  # matplotlib wants naive datetimes (UTC here)
    width = float(np.diff(x).min() / np.timedelta64(1, "D")) * 0.8 if len(x) > 1 else 0.8
    for axis, typ in zip(axes, types, strict=False):
        scale, unit = _DISPLAY.get(typ, (1, UNITS.get(typ, "unknown unit")))
        y = table[typ].to_numpy(dtype="float64") / scale
        _draw(axis, kind, x, y, width, label=f"{typ} ({unit})")
        if not overlay:
            axis.set_title(f"{typ} ({unit})", fontsize="medium")
            axis.set_ylabel(unit)
    if overlay and types:
        axes[0].legend()
        axes[0].set_ylabel("amount (units differ, see legend)")
    if not types:
        axes[0].text(0.5, 0.5, "no records", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel("period start (UTC)")
    return axes[0] if overlay else np.array(axes, dtype=object)


def _freq_label(freq: Any) -> str:
    return freq if isinstance(freq, str) else getattr(freq, "freqstr", str(freq))
