"""The ``df.impact`` accessor: SPEC §8's functions as DataFrame methods.

Every method delegates to :mod:`impactframe.aggregate`, :mod:`impactframe.plot` or
:mod:`impactframe._privacy`; nothing is computed here. The methods are made from those
functions by :func:`_delegate`, so each keeps the function's signature (without ``df``) and its
docstring, with the examples rewritten to call the method. Importing this module registers the
accessor once: pandas warns when an accessor name is overwritten, so a second import (or a
reload) does not register again, and a foreign ``impact`` attribute is left alone and logged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import pandas as pd

from . import _privacy, aggregate
from .plot import plot as _plot

__all__ = ["ACCESSOR_NAME", "ImpactAccessor"]

ACCESSOR_NAME = "impact"
logger = logging.getLogger("impactframe")

P = ParamSpec("P")
R = TypeVar("R")

#: The ``df : ...`` entry of a numpydoc Parameters section, with its indented description.
_DF_PARAMETER = re.compile(r"^df : .*\n(?:    .*\n)*", re.MULTILINE)


def _method_doc(func: Callable[..., object]) -> str:
    """``func``'s docstring as the method's: no ``df`` parameter, examples call the method.

    Examples
    --------
    >>> doc = _method_doc(aggregate.totals)
    >>> "df : " in doc, ">>> df.impact.totals().tolist()" in doc
    (False, True)
    """
    name = func.__name__
    summary, _, rest = inspect.cleandoc(func.__doc__ or "").partition("\n")
    rest = _DF_PARAMETER.sub("", rest)
    # In example lines only: ``name(df, x)`` and ``name(df)`` become ``df.impact.name(x)``.
    call = re.compile(rf"\b{name}\(df(?:, )?")
    rest = re.sub(
        r"^(?:>>>|\.\.\.) .*$",
        lambda line: call.sub(f"df.{ACCESSOR_NAME}.{name}(", line[0]),
        rest,
        flags=re.MULTILINE,
    )
    note = f"Method form of :func:`{func.__module__}.{name}`, on the frame ``df``."
    return f"{summary}\n\n{note}\n{rest}"


def _delegate(
    func: Callable[Concatenate[pd.DataFrame, P], R],
) -> Callable[Concatenate[ImpactAccessor, P], R]:
    """A method calling ``func`` on the accessor's frame, documented from ``func``."""

    @functools.wraps(func)
    def method(self: ImpactAccessor, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return func(self._df, *args, **kwargs)

    # Owned by this module: doctest collects (and runs) the rewritten examples here.
    method.__module__ = __name__
    method.__qualname__ = f"ImpactAccessor.{func.__name__}"
    method.__doc__ = _method_doc(func)
    return method


class ImpactAccessor:
    """``df.impact``: totals, summaries, rankings, units, charts and pseudonyms of a frame.

    ``df.impact.name(...)`` is ``name(df, ...)`` of :mod:`impactframe.aggregate` (``totals``,
    ``summarize``, ``cumulative``, ``top_customers``, ``with_units``), of
    :mod:`impactframe.plot` (``plot``, needs ``impactframe[plot]``) or
    :func:`impactframe.pseudonymize`.

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

    totals = _delegate(aggregate.totals)
    summarize = _delegate(aggregate.summarize)
    cumulative = _delegate(aggregate.cumulative)
    top_customers = _delegate(aggregate.top_customers)
    with_units = _delegate(aggregate.with_units)
    plot = _delegate(_plot)
    pseudonymize = _delegate(_privacy.pseudonymize)


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
