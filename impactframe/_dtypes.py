"""The frame's layout, in one leaf module: every column's dtype, the column order, the options.

SPEC §3's table lives here and only here (the README mirrors it): the builders, the schemas,
the cache codec and the export's Arrow schema all derive their dtypes and column order from
these names. It imports nothing of impactframe but the constants and the argument checks.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from ._constants import (
    DEFAULTS,
    DTYPE_BACKENDS,
    ENDPOINTS,
    IMPACT_TYPES,
    METADATA_MODES,
)
from ._params import check_choice, reject

__all__ = [
    "CUSTOMER_COLUMNS",
    "DTYPES",
    "FLOAT",
    "INT",
    "METADATA_COLUMN",
    "METADATA_DTYPES",
    "STRING",
    "backend_dtype",
    "check_options",
    "fixed_columns",
    "fixed_dtypes",
]

STRING: Final = pd.StringDtype()
INT: Final = pd.Int64Dtype()
FLOAT: Final = pd.Float64Dtype()
CUSTOMER_COLUMNS: Final = ("customer_id", "customer_email", "customer_name")


def check_options(
    *,
    endpoint: object = "records",
    metadata: object = DEFAULTS["metadata"],
    metadata_prefix: object = DEFAULTS["metadata_prefix"],
    dtype_backend: object = DEFAULTS["dtype_backend"],
) -> None:
    """Raise ``ValueError`` naming the argument and the accepted values when one is wrong.

    Examples
    --------
    >>> check_options(endpoint="records", metadata="json")
    >>> check_options(metadata="flat")
    Traceback (most recent call last):
    ...
    ValueError: metadata: 'flat' is not accepted; expected one of 'columns', 'dict', 'json', 'drop'
    """
    check_choice(endpoint, "endpoint", ENDPOINTS)
    check_choice(metadata, "metadata", METADATA_MODES)
    check_choice(dtype_backend, "dtype_backend", DTYPE_BACKENDS)
    if not isinstance(metadata_prefix, str) or not metadata_prefix:
        reject("metadata_prefix", metadata_prefix, "a non-empty string like 'metadata_'")


def fixed_columns(endpoint: str) -> list[str]:
    """The fixed columns of an endpoint's frame, in order (SPEC §3, no metadata or drift columns).

    Examples
    --------
    >>> fixed_columns("records")[:4]
    ['user_id', 'time_utc', 'impact_type', 'amount']
    >>> fixed_columns("customer_records")[:4]
    ['user_id', 'customer_id', 'customer_email', 'customer_name']
    """
    check_options(endpoint=endpoint)
    customer = list(CUSTOMER_COLUMNS) if endpoint == "customer_records" else []
    return ["user_id", *customer, "time_utc", "impact_type", "amount", *IMPACT_TYPES, "category"]


def backend_dtype(dtype: Any, dtype_backend: str = "numpy_nullable") -> Any:
    """The dtype a column of (numpy_nullable) ``dtype`` has under ``dtype_backend``.

    The pyarrow backend maps strings, integers, floats and timestamps to ``pd.ArrowDtype``;
    ``impact_type`` stays a pandas ``category`` (so ``.cat`` and groupby work) and the
    ``"dict"`` metadata column stays ``object``.

    Examples
    --------
    >>> backend_dtype(pd.Int64Dtype(), "pyarrow")
    int64[pyarrow]
    >>> backend_dtype(pd.Int64Dtype())
    Int64Dtype()
    """
    check_options(dtype_backend=dtype_backend)
    if dtype_backend == "numpy_nullable":
        return dtype
    if isinstance(dtype, pd.StringDtype):
        return pd.ArrowDtype(pa.string())
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pd.ArrowDtype(pa.timestamp(dtype.unit, tz=str(dtype.tz)))
    if isinstance(dtype, pd.Int64Dtype):
        return pd.ArrowDtype(pa.int64())
    if isinstance(dtype, pd.Float64Dtype):
        return pd.ArrowDtype(pa.float64())
    return dtype


#: The dtype of every fixed column (``dtype_backend="numpy_nullable"``), in SPEC §3 order.
#: If you update this mapping, also update the table in README.md.
DTYPES: Final[dict[str, Any]] = {
    "user_id": STRING,
    "customer_id": STRING,
    "customer_email": STRING,
    "customer_name": STRING,
    "time_utc": pd.DatetimeTZDtype(unit="ms", tz="UTC"),
    # a frame's categories also hold the new impact types it met, after these
    "impact_type": pd.CategoricalDtype(categories=list(IMPACT_TYPES), ordered=False),
    "amount": INT,
    **dict.fromkeys(IMPACT_TYPES, INT),
    "category": STRING,
}
#: Name of the single metadata column of the ``"dict"`` and ``"json"`` modes.
METADATA_COLUMN: Final = "metadata"
#: dtype of the metadata column(s) in each mode that has them.
METADATA_DTYPES: Final[dict[str, Any]] = {
    "columns": STRING,
    "dict": np.dtype(object),
    "json": STRING,
}


def fixed_dtypes(endpoint: str, dtype_backend: str = "numpy_nullable") -> dict[str, Any]:
    """Fixed column name to dtype for an endpoint and backend (derived from ``DTYPES``).

    Examples
    --------
    >>> fixed_dtypes("records")["time_utc"]
    datetime64[ms, UTC]
    >>> fixed_dtypes("records", "pyarrow")["time_utc"]
    timestamp[ms, tz=UTC][pyarrow]
    """
    return {name: backend_dtype(DTYPES[name], dtype_backend) for name in fixed_columns(endpoint)}
