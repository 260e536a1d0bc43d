"""The frame options both builders take, checked once, and the dtypes they derive from.

`FrameOptions` declares the options of a frame (``endpoint``, ``metadata``, ``metadata_prefix``,
``dtype_backend``) and checks them with `check_options`; `impactframe._frame.FrameBuilder` and
`impactframe._frame_fast.FastFrameBuilder` inherit its constructor, ``repr``, ``count``, the
conversion of an Arrow array to a column and the final schema check, so neither repeats them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import pandas as pd
import pyarrow as pa

from ._constants import (
    DEFAULT_METADATA_PREFIX,
    DTYPE_BACKENDS,
    ENDPOINTS,
    IMPACT_TYPES,
    METADATA_MODES,
)
from ._params import check_choice, reject

__all__ = ["FrameOptions", "backend_dtype", "check_options", "fixed_columns"]

_STRING: Final = pd.StringDtype()
_INT: Final = pd.Int64Dtype()
_FLOAT: Final = pd.Float64Dtype()
_CUSTOMER_COLUMNS: Final = ("customer_id", "customer_email", "customer_name")


def check_options(
    *,
    endpoint: object = "records",
    metadata: object = "columns",
    metadata_prefix: object = DEFAULT_METADATA_PREFIX,
    dtype_backend: object = "numpy_nullable",
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
    customer = list(_CUSTOMER_COLUMNS) if endpoint == "customer_records" else []
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


# The options are dataclass fields so that the builders' signature is written once: a builder
# subclass sets up its own state in ``__post_init__`` (after calling this one).
@dataclasses.dataclass(eq=False, repr=False)
class FrameOptions:
    """The checked options of a frame builder (the base of both builders).

    Parameters
    ----------
    endpoint, metadata, metadata_prefix, dtype_backend
        As documented by :class:`impactframe._frame.FrameBuilder`; checked by `check_options`.

    Examples
    --------
    >>> FrameOptions("customer_records", metadata="json").options()
    {'metadata': 'json', 'metadata_prefix': 'metadata_', 'dtype_backend': 'numpy_nullable'}
    """

    endpoint: str
    _: dataclasses.KW_ONLY
    metadata: str = "columns"
    metadata_prefix: str = DEFAULT_METADATA_PREFIX
    dtype_backend: str = "numpy_nullable"

    def __post_init__(self) -> None:
        check_options(
            endpoint=self.endpoint,
            metadata=self.metadata,
            metadata_prefix=self.metadata_prefix,
            dtype_backend=self.dtype_backend,
        )
        self._records_key = ENDPOINTS[self.endpoint][1]
        self._customers = self.endpoint == "customer_records"

    def options(self) -> dict[str, str]:
        """The keyword options, to build another builder of the same frame."""
        return {
            "metadata": self.metadata,
            "metadata_prefix": self.metadata_prefix,
            "dtype_backend": self.dtype_backend,
        }

    def __len__(self) -> int:
        return 0  # a builder counts the rows it has taken

    @property
    def count(self) -> int:
        """Rows taken so far: the records added minus identical repeats (``len(builder)``)."""
        return len(self)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.endpoint!r}, metadata={self.metadata!r}, "
            f"dtype_backend={self.dtype_backend!r}, rows={len(self)})"
        )

    def _column(self, values: pa.Array | pa.ChunkedArray, dtype: Any) -> Any:
        """A pandas array of ``values``: ``dtype`` (numpy_nullable), or Arrow-backed (pyarrow)."""
        if self.dtype_backend == "pyarrow":
            return pd.arrays.ArrowExtensionArray(values)
        return dtype.__from_arrow__(values)

    def _validate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` checked against its schema (see `impactframe.schemas.validate`)."""
        # imported here: impactframe.schemas imports this package's _frame module
        from .schemas import validate

        return validate(
            frame,
            self.endpoint,
            dtype_backend=self.dtype_backend,
            metadata=self.metadata,
            metadata_prefix=self.metadata_prefix,
        )
