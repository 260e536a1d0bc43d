"""pandera's import without pyspark, and the exact dtypes the package's schemas check.

`pandera_without_pyspark` keeps pandera's import (and its backends' first use) from importing
``pyspark.pandas`` and from setting Spark's environment variables (see `impactframe.schemas`).
`ExactDtype` is the package's one notion of "a column has exactly this dtype" (``Int64`` is not
``int64``, nor ``string`` ``str``), used by `impactframe.schemas` and the daily figures' schema;
`ImpactCategory` is ``impact_type``'s dtype rule.
"""

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import pandas as pd

from .._constants import IMPACT_TYPES
from .._dtypes import DTYPES

__all__ = [
    "SPARE_PYSPARK",
    "ExactDtype",
    "ImpactCategory",
    "actual_dtype",
    "pandera_without_pyspark",
]

# What pandera's import does for pyspark (pandera/external_config.py): sets these two variables
# and imports pyspark.pandas, only so that pandas-on-Spark frames can be validated.
_PANDERA_SPARK_ENV = ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")
_PYSPARK_MODULES = ("pyspark", "pyspark.pandas")


# Decided once, before the import below: a pandera imported by the user first is left as it is.
SPARE_PYSPARK = "pandera" not in sys.modules


@contextlib.contextmanager
def pandera_without_pyspark() -> Iterator[None]:
    """While pandera is imported and warmed up: ``import pyspark.pandas`` fails, the environment
    is kept.

    A ``None`` in ``sys.modules`` makes an import raise ``ImportError``, which pandera catches
    (it then leaves out pandas-on-Spark, which impactframe never validates); the entries are
    removed afterwards, so the user's own ``import pyspark`` works as usual. Both pandera's
    import and its backends' first use (the schemas' warm-up) try it. ``SPARK_LOCAL_IP=127.0.0.1``
    left behind would bind a later Spark driver of this process to loopback.
    """
    if not SPARE_PYSPARK:
        yield
        return
    blocked = [name for name in _PYSPARK_MODULES if name not in sys.modules]
    environment = {name: os.environ.get(name) for name in _PANDERA_SPARK_ENV}
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


with pandera_without_pyspark():
    import pandera.pandas  # noqa: F401  (pandera's whole import, under the guard)
    from pandera.engines import pandas_engine


def actual_dtype(pandera_dtype: Any, data_container: Any) -> Any:
    """The pandas dtype being checked (pandera passes its own wrapper, which can lose detail)."""
    if data_container is not None:
        return data_container.dtype
    if isinstance(pandera_dtype, pandas_engine.DataType):
        return pandera_dtype.type
    return pandera_dtype


class ExactDtype(pandas_engine.DataType):
    """A dtype a column must have exactly (``Int64`` is not ``int64``, nor ``string`` ``str``)."""

    def __init__(self, dtype: Any) -> None:
        # DataType is a frozen dataclass whose __init__ warns about unknown dtypes; set the field
        object.__setattr__(self, "type", dtype)

    def check(self, pandera_dtype: Any, data_container: Any = None) -> bool:
        actual = actual_dtype(pandera_dtype, data_container)
        return type(actual) is type(self.type) and bool(actual == self.type)

    def __str__(self) -> str:
        return str(self.type)


class ImpactCategory(pandas_engine.DataType):
    """An unordered category whose categories start with the known impact types, in order."""

    def __init__(self) -> None:
        object.__setattr__(self, "type", DTYPES["impact_type"])

    def check(self, pandera_dtype: Any, data_container: Any = None) -> bool:
        actual = actual_dtype(pandera_dtype, data_container)
        return (
            isinstance(actual, pd.CategoricalDtype)
            and not actual.ordered
            and tuple(actual.categories[: len(IMPACT_TYPES)]) == IMPACT_TYPES
        )

    def __str__(self) -> str:
        return "category"
