"""Totals, time series and customer rankings of a records frame.

Every function takes a records frame as the loaders return it (either endpoint, either
``dtype_backend``), never mutates it, and returns plain numpy-nullable ``Int64`` numbers
whatever the input backend, so results from both backends compare equal.

Amounts of different impact types are never added together: trees, pounds and cents do not
sum. Results therefore carry one column per impact type: every known impact type, in the
library's fixed order (``tree_planted`` first), then any new type the frame's ``impact_type``
categories (or values) hold.

The work is done on integer codes (group, period, impact type) accumulated with exact
``int64`` arithmetic, which keeps NA groups (``dropna=False`` semantics), empty frames and
zero-filled periods uniform instead of special cases of ``groupby``/``unstack``.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.tseries.frequencies import to_offset

from ._constants import IMPACT_TYPES, UNITS
from ._params import reject
from .schemas import CustomerRecordsSchema

__all__ = ["cumulative", "summarize", "top_customers", "totals", "with_units"]


# Column names come from the pandera models (SPEC §3): ``C.time_utc == "time_utc"``. The
# customer model is a superset of the records one, so one alias serves both endpoints.
C = CustomerRecordsSchema

#: Name of the period level/index in summaries.
PERIOD = "period"
#: Columns that ``with_units`` adds.
USD_COLUMN = "money_donated_usd"
UNIT_COLUMN = "unit"
#: Column of ``top_customers`` counting records.
RECORDS_COLUMN = "records"
#: Upper bound on periods in one summary, so ``freq="ms"`` over years fails fast, not by OOM.
MAX_PERIODS = 1_000_000
#: Upper bound on the cells (groups x periods x types) of one summary, for the same reason.
MAX_CELLS = 50_000_000

_FREQ_EXAMPLES = '"D", "W", "MS", "QS", "YS", "ME", "h" or a pandas DateOffset'
_FREQ_ACCEPTED = f"a pandas offset alias of a positive period such as {_FREQ_EXAMPLES}"


# --------------------------------------------------------------------------- validation


def _check_frame(df: object, *, need: Sequence[str], func: str) -> pd.DataFrame:
    # The type or the missing columns, not the repr: a frame's repr would bury the message.
    if not isinstance(df, pd.DataFrame):
        reject("df", df, "a pandas DataFrame", shown=f"a value of type {type(df).__name__}")
    missing = [c for c in need if c not in df.columns]
    if missing:
        accepted = f"a records frame with column(s) {need} for {func}()"
        reject("df", df, accepted, shown=f"a frame missing {missing}")
    return df


def _check_by(df: pd.DataFrame, by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    cols: list[Any] = [by] if isinstance(by, str) else list(by)
    if not cols:
        reject("by", by, "a column name or a non-empty list of column names")
    for col in cols:
        if col not in df.columns:
            reject("by", col, f"a column of the frame: {list(df.columns)}")
    if len(set(cols)) != len(cols):
        reject("by", by, "distinct column names")
    return cols


def _check_freq(freq: object) -> pd.DateOffset:
    if freq is None or isinstance(freq, bool):
        reject("freq", freq, _FREQ_ACCEPTED)
    try:
        offset = to_offset(freq)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        reject("freq", freq, f"{_FREQ_ACCEPTED} (pandas: {exc})")
    if offset is None or offset.n <= 0:
        reject("freq", freq, _FREQ_ACCEPTED)
    return offset


# ----------------------------------------------------------------------- integer codes


def _impact_types(df: pd.DataFrame) -> tuple[str, ...]:
    """Impact types a result for ``df`` has columns for.

    Parameters
    ----------
    df : pandas.DataFrame
        A records frame as the loaders return it.

    Returns
    -------
    tuple of str
        The known types in the library's fixed order, then new types: in category order when
        ``impact_type`` is categorical (as loaded), else sorted.

    Examples
    --------
    >>> import pandas as pd
    >>> kinds = pd.CategoricalDtype(["tree_planted", "kelp_grown"])
    >>> _impact_types(pd.DataFrame({"impact_type": pd.Series([], dtype=kinds)}))[-2:]
    ('money_donated', 'kelp_grown')
    """
    col = df[C.impact_type]
    if isinstance(col.dtype, pd.CategoricalDtype):
        seen = [str(c) for c in col.dtype.categories]
    else:
        seen = sorted(str(v) for v in pd.unique(col.dropna()))
    extras = [t for t in dict.fromkeys(seen) if t not in IMPACT_TYPES]
    return (*IMPACT_TYPES, *extras)


def _type_codes(df: pd.DataFrame, types: Sequence[str]) -> np.ndarray:
    codes, uniques = pd.factorize(df[C.impact_type])
    if (codes < 0).any():
        shown = f"a frame with {int((codes < 0).sum())} missing {C.impact_type!r} value(s)"
        reject("df", df, f"an impact type in every row of {C.impact_type!r}", shown=shown)
    position = {t: i for i, t in enumerate(types)}
    lut = np.array([position[str(u)] for u in uniques], dtype=np.intp)
    return lut[codes] if len(codes) else np.zeros(0, dtype=np.intp)


def _amounts(df: pd.DataFrame) -> np.ndarray:
    # Missing amounts count as 0, like pandas' skipna sums (a validated frame has none).
    return df[C.amount].to_numpy(dtype="int64", na_value=0)


def _groups(df: pd.DataFrame, by: list[str]) -> tuple[np.ndarray, pd.Index, int]:
    """Group id per row (sorted keys, NA last and kept) and the key index of each id."""
    if not by:
        return np.zeros(len(df), dtype=np.intp), pd.RangeIndex(1), 1
    grouped = df.groupby(by, dropna=False, sort=True, observed=True)
    ids = grouped.ngroup().to_numpy(dtype=np.intp)
    n_groups = int(ids.max()) + 1 if len(ids) else 0
    # Keys taken from each group's first row keep the column's dtype and align with ids.
    _, first = np.unique(ids, return_index=True)
    keys_frame = df[by].iloc[first]
    keys: pd.Index
    if len(by) == 1:
        keys = pd.Index(keys_frame[by[0]].array, name=by[0])
    else:
        keys = pd.MultiIndex.from_frame(keys_frame)
    return ids, keys, n_groups


def _times(df: pd.DataFrame) -> pd.DatetimeIndex:
    times = pd.DatetimeIndex(df[C.time_utc])
    times = times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")
    if times.hasnans:
        shown = f"a frame with missing {C.time_utc!r} timestamps"
        reject("df", df, f"a timestamp in every row of {C.time_utc!r}", shown=shown)
    return times


def _period_starts(times: pd.DatetimeIndex, offset: pd.DateOffset) -> pd.DatetimeIndex:
    """Start of every period from the first time's period to the last's."""
    if len(times) == 0:
        return pd.DatetimeIndex([], dtype=times.dtype, name=PERIOD)
    first, last = times.min(), times.max()
    if isinstance(offset, pd.offsets.Tick) and (last - first) / pd.Timedelta(offset) > MAX_PERIODS:
        accepted = f"a coarser period: this one gives more than {MAX_PERIODS} periods"
        reject("freq", offset.freqstr, accepted)
    # Resampling the two extremes yields pandas' bins for the whole range, cheaply. In
    # nanoseconds: pandas 3.1 adds a spurious trailing end-anchored bin at ms resolution.
    extremes = pd.DatetimeIndex([first, last])
    with contextlib.suppress(pd.errors.OutOfBoundsDatetime):  # past 2262: keep unit, trim below
        extremes = extremes.as_unit("ns")
    labels = pd.Series(0, index=extremes).resample(offset).size().index
    if pd.Grouper(freq=offset).label == "right":
        # End-anchored aliases (ME, QE, YE, W...) label a bin by its last day and the bin ends
        # at that day's midnight+1 day, so the next bin starts the day after each label.
        day = pd.Timedelta(days=1)
        starts = labels[:-1] + day
        starts = starts.insert(0, labels[0] - offset + day)
    else:
        starts = labels
    starts = pd.DatetimeIndex(starts, name=PERIOD, freq=None).as_unit(times.unit)
    # From the period holding the first record to the one holding the last, nothing more.
    lo, hi = starts.searchsorted([first, last], side="right") - 1
    return starts[lo : hi + 1]


_INT64 = np.iinfo(np.int64)


def _may_overflow(values: np.ndarray, terms: int) -> bool:
    """Whether a sum of up to ``terms`` of ``values`` could leave int64 (a cheap bound)."""
    if not values.size:
        return False
    largest = max(int(values.max()), -int(values.min()))  # Python ints: abs(int64 min) fits
    return largest * terms > _INT64.max


def _check_range(exact: np.ndarray, types: Sequence[str]) -> None:
    """Raise OverflowError if a Python-int result (last axis: ``types``) leaves int64.

    Examples
    --------
    >>> _check_range(np.array([1, 2**63], dtype=object), ["tree_planted", "money_donated"])
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    OverflowError: the money_donated total 9223372036854775808 does not fit in int64 ...
    """
    flat = exact.reshape(-1)
    bad = np.flatnonzero(((flat > _INT64.max) | (flat < _INT64.min)).astype(bool))
    if len(bad):
        typ, value = types[int(bad[0]) % len(types)], flat[bad[0]]
        msg = (
            f"the {typ} total {value} does not fit in int64 (-2**63 to 2**63 - 1), the "
            "dtype of the results; aggregate fewer rows or smaller amounts of that type"
        )
        raise OverflowError(msg)


def _accumulate(
    codes: np.ndarray, size: int, amounts: np.ndarray, types: Sequence[str]
) -> np.ndarray:
    """Sum ``amounts`` into ``size`` cells (``code % len(types)`` is the impact type)."""
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, codes, amounts)  # exact int64 sums, unlike float-weighted bincount
    # int64 wraps silently. Real amounts are far below the bound, so the exact (slow) sums
    # in Python ints are only computed when the bound says a sum might wrap.
    if _may_overflow(amounts, len(amounts)):
        exact = np.zeros(size, dtype=object)
        np.add.at(exact, codes, amounts.astype(object))
        _check_range(exact, types)
    return out


def _int_frame(values: np.ndarray, index: pd.Index, types: Sequence[str]) -> pd.DataFrame:
    columns = pd.Index(list(types), name=C.impact_type)
    frame = pd.DataFrame(values.reshape(len(index), len(types)), index=index, columns=columns)
    return frame.astype("Int64")


# ------------------------------------------------------------------------------ public


def totals(df: pd.DataFrame, by: str | Sequence[str] | None = None) -> pd.Series | pd.DataFrame:
    """Total amount of each impact type, overall or per group.

    Parameters
    ----------
    df : pandas.DataFrame
        A records frame as the loaders return it, of either endpoint and either dtype backend.
    by : str or list of str, optional
        Column(s) to group by, e.g. ``"customer_email"``, ``"category"`` or a ``metadata_*``
        column. Missing values form their own group (``dropna=False``).

    Returns
    -------
    pandas.Series or pandas.DataFrame
        Without ``by``: a Series named ``"amount"`` indexed by impact type (known types in
        the library's fixed order, then new ones), ``Int64``, zero for types without records.
        With ``by``: one row per group (sorted, NA last) and one ``Int64`` column per impact type.

    Raises
    ------
    ValueError
        If ``df`` is not a records frame or ``by`` names a column it does not have.
    OverflowError
        If a total does not fit in int64 (the message names its impact type).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({
    ...     "impact_type": pd.Categorical(["tree_planted", "money_donated", "tree_planted"]),
    ...     "amount": pd.array([2, 500, 3], dtype="Int64"),
    ... })
    >>> totals(df).tolist()
    [5, 0, 0, 0, 500]
    """
    df = _check_frame(df, need=[C.impact_type, C.amount], func="totals")
    by_cols = _check_by(df, by)
    types = _impact_types(df)
    t = _type_codes(df, types)
    ids, keys, n_groups = _groups(df, by_cols)
    sums = _accumulate(ids * len(types) + t, n_groups * len(types), _amounts(df), types)
    if not by_cols:
        index = pd.Index(list(types), name=C.impact_type)
        return pd.Series(sums, index=index, name=C.amount).astype("Int64")
    return _int_frame(sums, keys, types)


def _summary(
    df: pd.DataFrame, freq: object, by: str | Sequence[str] | None, func: str
) -> tuple[np.ndarray, pd.Index, tuple[str, ...], int, int]:
    """Per (group, period, type) sums as a (groups, periods, types) array plus its index."""
    df = _check_frame(df, need=[C.time_utc, C.impact_type, C.amount], func=func)
    offset = _check_freq(freq)
    by_cols = _check_by(df, by)
    types = _impact_types(df)
    t = _type_codes(df, types)
    times = _times(df)
    starts = _period_starts(times, offset)
    p = starts.searchsorted(times, side="right") - 1
    ids, keys, n_groups = _groups(df, by_cols)
    n_periods, n_types = len(starts), len(types)
    if n_groups * n_periods * n_types > MAX_CELLS:
        msg = (
            f"freq={freq!r} with by={by!r} gives {n_groups} groups x {n_periods} periods, "
            f"more than {MAX_CELLS} cells; expected a coarser freq or fewer groups"
        )
        raise ValueError(msg)
    codes = (ids * n_periods + p) * n_types + t
    sums = _accumulate(codes, n_groups * n_periods * n_types, _amounts(df), types)
    index: pd.Index
    if not by_cols:
        index = starts
    else:
        # Every group gets every period of the whole range, so groups align for plotting.
        levels = [keys.get_level_values(i).repeat(n_periods) for i in range(keys.nlevels)]
        period = pd.DatetimeIndex(np.tile(starts.to_numpy(), n_groups), dtype=starts.dtype)
        index = pd.MultiIndex.from_arrays([*levels, period], names=[*by_cols, PERIOD])
    return sums.reshape(n_groups, n_periods, n_types), index, types, n_groups, n_periods


def summarize(
    df: pd.DataFrame, freq: Any = "MS", by: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Amount of each impact type per period, every period of the range present.

    Parameters
    ----------
    df : pandas.DataFrame
        A records frame as the loaders return it, of either endpoint and either dtype backend.
    freq : str or pandas.DateOffset, default "MS"
        A pandas offset alias: ``"D"``, ``"W"``, ``"MS"``, ``"QS"``, ``"YS"``, ``"ME"``, ``"h"``...
        Periods are pandas' resample bins in UTC; end-anchored aliases (``"ME"``, ``"W"``...)
        bin like pandas but are labelled by their first day too (so ``"ME"`` equals ``"MS"``
        and ``"W"``, weeks ending Sunday, is labelled by each Monday).
    by : str or list of str, optional
        Column(s) to group by, e.g. ``"customer_email"`` or a ``metadata_*`` column. Missing
        values form their own group (``dropna=False``).

    Returns
    -------
    pandas.DataFrame
        One ``Int64`` column per impact type (all known types, then new ones; zeros where
        none), columns named ``"impact_type"``. Without ``by``, indexed by the UTC start of
        each period (a tz-aware ``DatetimeIndex`` named ``"period"``) from the first record's
        period to the last's, gaps filled with zeros. With ``by``, a long ``MultiIndex``
        ``(*by, "period")``: groups sorted (NA last) and each group holding every period of the
        frame's whole range, so ``summary.loc[group]`` is a complete, aligned series and
        ``summary.unstack(by)`` puts groups side by side.

    Raises
    ------
    ValueError
        If ``df`` is not a records frame, ``freq`` is not a positive offset alias, or ``by``
        names a column the frame does not have.
    OverflowError
        If a total does not fit in int64 (the message names its impact type).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({
    ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-03-09"], utc=True),
    ...     "impact_type": pd.Categorical(["tree_planted", "tree_planted"]),
    ...     "amount": pd.array([2, 3], dtype="Int64"),
    ... })
    >>> summarize(df)["tree_planted"].tolist()
    [2, 0, 3]
    """
    sums, index, types, _, _ = _summary(df, freq, by, "summarize")
    return _int_frame(sums, index, types)


def cumulative(
    df: pd.DataFrame, freq: Any = "MS", by: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Running totals of :func:`summarize`, per group when ``by`` is given.

    Parameters
    ----------
    df : pandas.DataFrame
        A records frame as the loaders return it.
    freq : str or pandas.DateOffset, default "MS"
        A pandas offset alias, as in :func:`summarize`.
    by : str or list of str, optional
        Column(s) to group by; each group's running total starts from zero.

    Returns
    -------
    pandas.DataFrame
        The shape of ``summarize(df, freq, by)``; each row holds the total up to and including
        its period, so the last row (of each group) equals :func:`totals`.

    Raises
    ------
    ValueError
        As :func:`summarize`.
    OverflowError
        If a running total does not fit in int64 (the message names its impact type).

    Examples
    --------
    Each group's total grows from its own first record (months without one repeat it):

    >>> import pandas as pd
    >>> df = pd.DataFrame({
    ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-02-20", "2024-03-09"], utc=True),
    ...     "amount": pd.array([2, 4, 3], dtype="Int64"),
    ...     "impact_type": pd.Categorical(["tree_planted"] * 3),
    ...     "category": ["a", "b", "a"],
    ... })
    >>> cumulative(df)["tree_planted"].tolist()
    [2, 6, 9]
    >>> cumulative(df, by="category")["tree_planted"].unstack("category").to_numpy().tolist()
    [[2, 0], [2, 4], [5, 4]]
    """
    sums, index, types, _, n_periods = _summary(df, freq, by, "cumulative")
    if _may_overflow(sums, n_periods):  # each period's sum fits; a running one may not
        _check_range(sums.astype(object).cumsum(axis=1), types)
    return _int_frame(sums.cumsum(axis=1), index, types)


def _check_n(n: object) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 0:
        reject("n", n, "an int >= 0 or None (all customers)")
    return int(n)


def _latest(df: pd.DataFrame, columns: list[str], ids: np.ndarray, n_groups: int) -> pd.DataFrame:
    """Each group's most recent non-missing value of ``columns`` (names can be added later)."""
    order = (
        np.argsort(_times(df).asi8, kind="stable")
        if C.time_utc in df.columns
        else np.arange(len(df))
    )
    latest = df[columns].iloc[order].groupby(ids[order], sort=True).last()
    return latest.reindex(pd.RangeIndex(n_groups))


def top_customers(
    df: pd.DataFrame, n: int | None = 10, impact_type: str | None = None
) -> pd.DataFrame:
    """The customers with the most impact, largest first.

    Parameters
    ----------
    df : pandas.DataFrame
        A customer records frame (``load_customer_records``).
    n : int or None, default 10
        How many customers to return; ``None`` returns all.
    impact_type : str, optional
        Rank by the total amount of this type (only customers with a record of it appear).
        With ``None``, rank by the number of records, since amounts of different types (trees,
        pounds, cents) cannot be added.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_email`` (missing e-mails form one group), with ``customer_id``
        and ``customer_name`` from each customer's most recent record that has them. With
        ``impact_type``: ``amount`` and ``records`` of that type. Without: ``records`` (all
        types) and one ``Int64`` column per impact type. Largest first, ties by e-mail.

    Raises
    ------
    ValueError
        If ``df`` lacks a customer column, ``n`` is negative or not an integer, or
        ``impact_type`` is not a known type nor one in the frame.
    OverflowError
        If a total does not fit in int64 (the message names its impact type).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({
    ...     "customer_id": pd.array(["c1", "c2", "c2"], dtype="string"),
    ...     "customer_email": pd.array(["a@x.io", "b@x.io", "b@x.io"], dtype="string"),
    ...     "customer_name": pd.array(["Ann", None, "Bo"], dtype="string"),
    ...     "impact_type": pd.Categorical(["tree_planted"] * 3),
    ...     "amount": pd.array([5, 1, 1], dtype="Int64"),
    ... })
    >>> top_customers(df, n=1)[["customer_name", "records"]].to_dict("index")
    {'b@x.io': {'customer_name': 'Bo', 'records': 2}}
    >>> top_customers(df, impact_type="tree_planted")["amount"].tolist()
    [5, 2]
    """
    need = [C.customer_id, C.customer_email, C.customer_name, C.impact_type, C.amount]
    df = _check_frame(df, need=need, func="top_customers")
    limit = _check_n(n)
    types = _impact_types(df)
    if impact_type is not None and impact_type not in types:
        reject("impact_type", impact_type, f"None or one of {', '.join(map(repr, types))}")
    n_types = len(types)
    t = _type_codes(df, types)
    ids, keys, n_groups = _groups(df, [C.customer_email])
    codes = ids * n_types + t
    sums = _accumulate(codes, n_groups * n_types, _amounts(df), types)
    sums = sums.reshape(n_groups, n_types)
    counts = np.bincount(codes, minlength=n_groups * n_types).reshape(n_groups, n_types)
    latest = _latest(df, [C.customer_id, C.customer_name], ids, n_groups)

    if impact_type is not None:
        col = types.index(impact_type)
        keep = np.flatnonzero(counts[:, col] > 0)
        rank = sums[keep, col]
        data: dict[str, Any] = {
            C.amount: pd.array(sums[keep, col], dtype="Int64"),
            RECORDS_COLUMN: pd.array(counts[keep, col], dtype="Int64"),
        }
    else:
        keep = np.arange(n_groups)
        rank = counts.sum(axis=1)
        data = {RECORDS_COLUMN: pd.array(rank, dtype="Int64")}
        data.update({typ: pd.array(sums[:, i], dtype="Int64") for i, typ in enumerate(types)})
    out = pd.DataFrame(
        {
            C.customer_id: latest[C.customer_id].array.take(keep),
            C.customer_name: latest[C.customer_name].array.take(keep),
            **data,
        },
        index=keys.take(keep),
    )
    # Keys are sorted by e-mail (NA last): a stable descending sort keeps that for ties.
    order = np.lexsort((np.arange(len(keep)), -rank))
    out = out.iloc[order]
    return out if limit is None else out.iloc[:limit]


def with_units(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a records frame with dollar amounts and unit labels.

    Parameters
    ----------
    df : pandas.DataFrame
        A records frame as the loaders return it. Summaries are not accepted: their columns
        already name the impact type, whose unit is ``impactframe._constants.UNITS``.

    Returns
    -------
    pandas.DataFrame
        The columns of ``df`` followed by ``money_donated_usd`` (``Float64`` dollars, cents
        / 100, missing on other types; correctly rounded, so 1234 cents display as 12.34) and
        ``unit`` (string, e.g. ``"trees"``; missing for impact types newer than this package).
        Both use Arrow dtypes when ``df`` does. Existing columns of those names are replaced.

    Raises
    ------
    ValueError
        If ``df`` lacks ``impact_type`` or ``amount``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({
    ...     "impact_type": pd.Categorical(["money_donated", "tree_planted"]),
    ...     "amount": pd.array([1000, 3], dtype="Int64"),
    ... })
    >>> out = with_units(df)
    >>> out["money_donated_usd"].tolist(), out["unit"].tolist()
    ([10.0, <NA>], ['US cents', 'trees'])
    """
    df = _check_frame(df, need=[C.impact_type, C.amount], func="with_units")
    types = _impact_types(df)
    t = _type_codes(df, types)
    amount = df[C.amount].to_numpy(dtype="float64", na_value=np.nan)
    is_money = np.array([typ == "money_donated" for typ in types], dtype=bool)[t]
    usd = pd.array(np.where(is_money, amount / 100, np.nan), dtype="Float64")
    units = np.array([UNITS.get(typ) for typ in types], dtype=object)
    unit = pd.array(units[t] if len(t) else [], dtype="string")

    if isinstance(df[C.amount].dtype, pd.ArrowDtype):  # keep the frame's backend
        usd = usd.astype(pd.ArrowDtype(pa.float64()))
        unit = unit.astype(pd.ArrowDtype(pa.string()))
    out = df.copy()
    out[USD_COLUMN] = usd  # arrays assign by position, whatever the index holds
    out[UNIT_COLUMN] = unit
    return out
