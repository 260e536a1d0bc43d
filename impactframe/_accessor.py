"""The ``df.impact`` accessor: SPEC §8's functions as DataFrame methods.

Every method delegates to :mod:`impactframe.aggregate`, :mod:`impactframe.plot` or
:mod:`impactframe._privacy`; nothing is computed here. Importing this module registers the
accessor once: pandas warns when an accessor name is overwritten, so a second import (or a
reload) does not register again, and a foreign ``impact`` attribute is left alone and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import _privacy, aggregate

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes

__all__ = ["ACCESSOR_NAME", "ImpactAccessor"]

ACCESSOR_NAME = "impact"
logger = logging.getLogger("impactframe")


class ImpactAccessor:
    """``df.impact``: totals, summaries, rankings, units, charts and pseudonyms of a frame.

    Examples
    --------
    >>> import pandas as pd
    >>> import impactframe._accessor
    >>> df = pd.DataFrame({
    ...     "impact_type": pd.Categorical(["tree_planted", "tree_planted"]),
    ...     "amount": pd.array([2, 3], dtype="Int64"),
    ... })
    >>> int(df.impact.totals()["tree_planted"])
    5
    """

    def __init__(self, pandas_obj: pd.DataFrame) -> None:
        self._df = pandas_obj

    def totals(self, by: str | Sequence[str] | None = None) -> pd.Series | pd.DataFrame:
        """See :func:`impactframe.aggregate.totals`.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-03-09"], utc=True),
        ...     "impact_type": pd.Categorical(["tree_planted", "tree_planted"]),
        ...     "amount": pd.array([2, 3], dtype="Int64"),
        ... })
        >>> df.impact.totals()["tree_planted"]
        np.int64(5)
        """
        return aggregate.totals(self._df, by=by)

    def summarize(self, freq: Any = "MS", by: str | Sequence[str] | None = None) -> pd.DataFrame:
        """See :func:`impactframe.aggregate.summarize`.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-03-09"], utc=True),
        ...     "impact_type": pd.Categorical(["tree_planted", "tree_planted"]),
        ...     "amount": pd.array([2, 3], dtype="Int64"),
        ... })
        >>> df.impact.summarize("QS")["tree_planted"].tolist()
        [5]
        """
        return aggregate.summarize(self._df, freq=freq, by=by)

    def cumulative(self, freq: Any = "MS", by: str | Sequence[str] | None = None) -> pd.DataFrame:
        """See :func:`impactframe.aggregate.cumulative`.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-03-09"], utc=True),
        ...     "impact_type": pd.Categorical(["tree_planted", "tree_planted"]),
        ...     "amount": pd.array([2, 3], dtype="Int64"),
        ... })
        >>> df.impact.cumulative()["tree_planted"].tolist()
        [2, 2, 5]
        """
        return aggregate.cumulative(self._df, freq=freq, by=by)

    def top_customers(self, n: int | None = 10, impact_type: str | None = None) -> pd.DataFrame:
        """See :func:`impactframe.aggregate.top_customers`.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "customer_id": pd.array(["c1", "c2"], dtype="string"),
        ...     "customer_email": pd.array(["a@x.io", "b@x.io"], dtype="string"),
        ...     "customer_name": pd.array(["Ann", None], dtype="string"),
        ...     "impact_type": pd.Categorical(["tree_planted", "money_donated"]),
        ...     "amount": pd.array([2, 500], dtype="Int64"),
        ... })
        >>> df.impact.top_customers(5, impact_type="money_donated").index.tolist()
        ['b@x.io']
        """
        return aggregate.top_customers(self._df, n=n, impact_type=impact_type)

    def with_units(self) -> pd.DataFrame:
        """See :func:`impactframe.aggregate.with_units`.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "customer_id": pd.array(["c1", "c2"], dtype="string"),
        ...     "customer_email": pd.array(["a@x.io", "b@x.io"], dtype="string"),
        ...     "customer_name": pd.array(["Ann", None], dtype="string"),
        ...     "impact_type": pd.Categorical(["tree_planted", "money_donated"]),
        ...     "amount": pd.array([2, 500], dtype="Int64"),
        ... })
        >>> df.impact.with_units()["money_donated_usd"].tolist()
        [<NA>, 5.0]
        """
        return aggregate.with_units(self._df)

    def plot(
        self,
        freq: Any = "MS",
        *,
        kind: str = "line",
        impact_types: str | Sequence[str] | None = None,
        cumulative: bool = False,
        ax: Axes | None = None,
        title: str | None = None,
        subplots: bool = True,
    ) -> Axes | np.ndarray:
        """See :func:`impactframe.plot.plot` (needs ``impactframe[plot]``).

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-03-09"], utc=True),
        ...     "impact_type": pd.Categorical(["tree_planted", "tree_planted"]),
        ...     "amount": pd.array([2, 3], dtype="Int64"),
        ... })
        >>> axes = df.impact.plot(freq="QS", kind="bar")
        >>> axes[0].get_title()
        'tree_planted (trees)'
        """
        from . import plot  # lazily: keeps matplotlib optional

        return plot.plot(
            self._df,
            freq,
            kind=kind,
            impact_types=impact_types,
            cumulative=cumulative,
            ax=ax,
            title=title,
            subplots=subplots,
        )

    def pseudonymize(
        self, *, salt: str | bytes, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """See :func:`impactframe._privacy.pseudonymize`.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "customer_id": pd.array(["c1", "c2"], dtype="string"),
        ...     "customer_email": pd.array(["a@x.io", "b@x.io"], dtype="string"),
        ...     "customer_name": pd.array(["Ann", None], dtype="string"),
        ...     "impact_type": pd.Categorical(["tree_planted", "money_donated"]),
        ...     "amount": pd.array([2, 500], dtype="Int64"),
        ... })
        >>> df.impact.pseudonymize(salt="s3cret")["customer_email"].str[:6].tolist()
        ['email_', 'email_']
        """
        return _privacy.pseudonymize(self._df, salt=salt, columns=columns)


def _register() -> None:
    existing = getattr(pd.DataFrame, ACCESSOR_NAME, None)
    if existing is None:
        pd.api.extensions.register_dataframe_accessor(ACCESSOR_NAME)(ImpactAccessor)
    elif getattr(existing, "__module__", None) != __name__:
        logger.warning(
            "pandas.DataFrame.%s is already taken by %r; impactframe's accessor is not "
            "registered (use impactframe.aggregate directly).",
            ACCESSOR_NAME,
            existing,
        )


_register()
