"""The frame options both builders take, checked once, and the dtypes they derive from.

`FrameOptions` declares the options of a frame (``endpoint``, ``metadata``, ``metadata_prefix``,
``dtype_backend``) and checks them with `check_options`; `impactframe._frame.FrameBuilder` and
`impactframe._frame_fast.FastFrameBuilder` inherit its constructor, ``repr``, ``count``, the
conversion of an Arrow array to a column and the final schema check, so neither repeats them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import pyarrow as pa

from .._constants import (
    DEFAULT_METADATA_PREFIX,
    ENDPOINTS,
)
from .._dtypes import check_options
from ..schemas import validate

__all__ = ["FrameOptions"]

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
        return validate(
            frame,
            self.endpoint,
            dtype_backend=self.dtype_backend,
            metadata=self.metadata,
            metadata_prefix=self.metadata_prefix,
        )
