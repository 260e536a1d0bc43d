"""What the command line writes: files (atomically), aligned tables and the summary text.

``impactframe.cli`` re-exports the public names; :mod:`impactframe._demo` uses them too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .. import aggregate
from .._constants import UNITS
from .._fs import atomic_output

__all__ = [
    "FORMULA_STARTS",
    "FRAME_SUFFIXES",
    "byte_size",
    "format_table",
    "neutralize_formulas",
    "summary_lines",
    "write_frame",
]

#: Output formats of ``fetch --out``, by file suffix.
FRAME_SUFFIXES = (".parquet", ".csv")
#: A CSV cell starting with one of these runs as a formula in a spreadsheet (OWASP, "CSV
#: injection"): ``=HYPERLINK(...)``, ``+cmd|...``, ``@SUM(...)``, or after a tab or CR.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` in which text that a spreadsheet would run as a formula starts with ``'``.

    The OWASP rule for CSV files: a text cell (or column name) starting with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return gets a leading single quote, which spreadsheets
    show as text. Numbers are left alone: only text columns are looked at.

    Examples
    --------
    >>> df = pd.DataFrame({"note": ["=1+2", "fine", "@x", "-2"], "amount": [-1, 2, 3, 4]})
    >>> neutralize_formulas(df)["note"].tolist()
    ["'=1+2", 'fine', "'@x", "'-2"]
    >>> neutralize_formulas(df)["amount"].tolist()
    [-1, 2, 3, 4]
    """

    def risky(value: object) -> bool:
        return isinstance(value, str) and value.startswith(FORMULA_STARTS)

    out = df.copy(deep=False)
    for name in out.columns:
        column = out[name]
        dtype = column.dtype
        if not (
            isinstance(dtype, pd.CategoricalDtype)
            or pd.api.types.is_string_dtype(dtype)
            or pd.api.types.is_object_dtype(dtype)
        ):
            continue
        values = column.astype(object) if isinstance(dtype, pd.CategoricalDtype) else column
        mask = values.map(risky).fillna(False).astype(bool)
        if mask.any():
            out[name] = values.mask(mask, "'" + values[mask].astype(str))
    out.columns = ["'" + c if risky(c) else c for c in out.columns]
    return out


def write_frame(
    df: pd.DataFrame, path: str | os.PathLike[str], *, neutralize_formulas: bool = True
) -> Path:
    """Write a records frame to ``.parquet`` or ``.csv`` (by suffix), atomically.

    Parquet keeps every dtype (a read with :func:`pandas.read_parquet` gives the frame back).
    CSV writes ``time_utc`` as the API does (``2024-01-31T12:00:00.000Z``), missing values
    as empty fields and no index; text cells that a spreadsheet would run as formulas
    (starting with ``=``, ``+``, ``-``, ``@``, tab or CR) get a leading ``'`` unless
    ``neutralize_formulas=False``. Records hold user-supplied text (metadata, customer names),
    so a file opened in Excel or LibreOffice must not run it.

    Parameters
    ----------
    df : pandas.DataFrame
        The frame (a ``metadata`` column of dicts cannot be written: use another mode).
    path : str or os.PathLike
        Ends in ``.parquet`` or ``.csv`` (any case), in an existing folder.
    neutralize_formulas : bool, default True
        CSV only: prefix formula-like text cells with ``'`` (see `neutralize_formulas`);
        ``False`` writes every cell verbatim (CLI: ``--csv-raw``).

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    ValueError
        If the suffix is neither, the frame holds dict values, or `neutralize_formulas` is
        not a bool.
    FileNotFoundError
        If the folder of `path` does not exist.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> df = pd.DataFrame({"time_utc": pd.to_datetime(["2024-01-31T12:00:00Z"]).as_unit("ms"),
    ...                    "amount": pd.array([3], dtype="Int64")})
    >>> out = write_frame(df, pathlib.Path(tempfile.mkdtemp()) / "records.csv")
    >>> out.read_text().splitlines()
    ['time_utc,amount', '2024-01-31T12:00:00.000Z,3']
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        msg = f"path: {str(target)!r} is not accepted; expected a name ending in "
        msg += " or ".join(FRAME_SUFFIXES)
        raise ValueError(msg)
    if "metadata" in df and df["metadata"].map(lambda v: isinstance(v, dict)).any():
        msg = "metadata holds dicts, which no file format here keeps; use metadata='json'"
        raise ValueError(msg)
    if not isinstance(neutralize_formulas, bool):
        shown = repr(neutralize_formulas)
        msg = f"neutralize_formulas: {shown} is not accepted; expected True or False"
        raise ValueError(msg)
    safe = neutralize_formulas
    with atomic_output(target) as temporary:
        if suffix == ".parquet":
            df.to_parquet(temporary, index=False)
        else:
            out = _neutralize(df) if safe else df.copy(deep=False)
            times = _aware_times(out["time_utc"]) if "time_utc" in out else None
            if times is not None:
                # The API's own form, which every CSV reader parses as UTC.
                out["time_utc"] = times.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
            out.to_csv(temporary, index=False)
    return target


_neutralize = neutralize_formulas  # the keyword of write_frame shadows the function's name


def _aware_times(column: pd.Series) -> pd.Series | None:
    """`column` as numpy ``datetime64[unit, UTC]`` if it holds tz-aware times, else ``None``.

    Arrow-backed times (``dtype_backend="pyarrow"``) are converted too: pandas would write
    them in its own ``2024-01-31 12:00:00.123000+00:00`` form.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.ArrowDtype):
        kind = dtype.pyarrow_dtype
        if not (pa.types.is_timestamp(kind) and kind.tz is not None):
            return None
        return column.astype(pd.DatetimeTZDtype(kind.unit, "UTC"))
    if isinstance(dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC")
    return None


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None
) -> list[str]:
    """Align text cells in columns separated by two spaces.

    Parameters
    ----------
    header : sequence of str
        Column titles (an empty sequence prints no header line).
    rows : sequence of sequences of str
        The cells.
    right : sequence of bool, optional
        Right-align that column (numbers); default left for the first column, right for the
        others.

    Returns
    -------
    list of str
        One string per line, trailing spaces removed.

    Examples
    --------
    >>> print("\\n".join(format_table(["type", "total"], [["trees", "1,204"], ["coral", "7"]])))
    type   total
    trees  1,204
    coral      7
    """
    lines = [list(header), *map(list, rows)] if header else [list(r) for r in rows]
    if not lines:
        return []
    n = max(len(line) for line in lines)
    lines = [line + [""] * (n - len(line)) for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(n)]
    aligns = list(right) if right is not None else [i > 0 for i in range(n)]
    out = []
    for line in lines:
        cells = [
            cell.rjust(w) if aligns[i] else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def byte_size(n_bytes: float) -> str:
    """A byte count for people (decimal units).

    Examples
    --------
    >>> byte_size(512), byte_size(2_345_678)
    ('512 B', '2.3 MB')
    """
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError  # pragma: no cover - the loop always returns


# -- impactframe summary -------------------------------------------------------------------------


def _period_labels(index: pd.DatetimeIndex) -> list[str]:
    at_midnight = bool((index == index.normalize()).all())
    return [t.strftime("%Y-%m-%d" if at_midnight else "%Y-%m-%d %H:%M") for t in index]


def summary_lines(
    df: pd.DataFrame, *, freq: str = "MS", by: str | None = None, endpoint: str = "records"
) -> list[str]:
    """The text ``impactframe summary`` prints for a records frame.

    Parameters
    ----------
    df : pandas.DataFrame
        A records frame (SPEC §3).
    freq : str, default "MS"
        Period alias, as for :func:`impactframe.aggregate.summarize`.
    by : str, optional
        Group by this column; periods in which a group has no record are left out.
    endpoint : str, default "records"
        Named in the heading.

    Returns
    -------
    list of str
        A heading, the aligned table ending in a ``total`` row, and a units line (with
        ``money_donated`` also in dollars).

    Raises
    ------
    ValueError
        A bad ``freq`` or a ``by`` column that the frame lacks.

    Examples
    --------
    >>> df = pd.DataFrame({
    ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-03-09"], utc=True),
    ...     "impact_type": pd.Categorical(["tree_planted", "money_donated"]),
    ...     "amount": pd.array([2, 1250], dtype="Int64"),
    ... })
    >>> print("\\n".join(summary_lines(df, freq="MS")[2:7]))
    period      tree_planted  waste_removed  carbon_captured  coral_restored  money_donated
    2024-01-01             2              0                0               0              0
    2024-02-01             0              0                0               0              0
    2024-03-01             0              0                0               0          1,250
    total                  2              0                0               0          1,250
    """

    if df.empty:
        return [f"No {endpoint.replace('_', ' ')} match the query."]
    table = aggregate.summarize(df, freq=freq, by=by)
    totals = aggregate.totals(df)
    types = [str(t) for t in table.columns]
    times = df["time_utc"]
    first, last = times.min(), times.max()
    label = "records" if endpoint == "records" else "customer records"
    heading = (
        f"{len(df):,} {label} from {first:%Y-%m-%d} to {last:%Y-%m-%d} (UTC), "
        f"per period of freq={freq}" + (f", by {by}" if by else "")
    )
    keys, titles, table = _row_keys(table, by)
    values = table.to_numpy(dtype="int64")
    rows = [[*key, *(f"{v:,}" for v in row)] for key, row in zip(keys, values, strict=True)]
    total = [f"{int(totals.get(t, 0)):,}" for t in types]
    rows.append(["total", *[""] * (len(titles) - 1), *total])
    right = [False] * len(titles) + [True] * len(types)
    table_lines = format_table([*titles, *types], rows, right=right)
    return [heading, "", *table_lines, "", _units_line(types, totals)]


def _row_keys(
    table: pd.DataFrame, by: str | None
) -> tuple[list[list[str]], list[str], pd.DataFrame]:
    """The key cells of each row, their titles and the table left to print."""
    if by is None:
        labels = _period_labels(pd.DatetimeIndex(table.index))
        return [[label] for label in labels], ["period"], table
    # Long form: a group's empty periods say nothing, and there may be many groups.
    table = table.loc[(table.to_numpy(dtype="int64") != 0).any(axis=1)]
    index = pd.MultiIndex.from_frame(table.index.to_frame(index=False))
    groups = ["<NA>" if pd.isna(v) else str(v) for v in index.get_level_values(0)]
    periods = _period_labels(pd.DatetimeIndex(index.get_level_values(-1)))
    return [[g, p] for g, p in zip(groups, periods, strict=True)], [by, "period"], table


def _units_line(types: list[str], totals: pd.Series) -> str:
    units = []
    for t in types:
        unit = UNITS.get(t, "unknown unit")
        if t == "money_donated":
            unit += f" (${int(totals.get(t, 0)) / 100:,.2f})"
        units.append(f"{t}: {unit}")
    return "units: " + "; ".join(units)
