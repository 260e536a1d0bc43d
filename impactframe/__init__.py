"""impactframe: the 1ClickImpact Records API as typed, validated pandas DataFrames.

Start with :func:`load_records` and :func:`load_customer_records`; see the README.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from . import (
    _accessor,  # noqa: F401  (registers the DataFrame.impact accessor)
    aggregate,
    schemas,
)
from ._privacy import pseudonymize
from .client import Client
from .errors import (
    APIError,
    AuthenticationError,
    CacheWarning,
    DuplicateRecordWarning,
    ImpactFrameError,
    ImpactFrameWarning,
    PaginationError,
    RateLimitError,
    SchemaDriftWarning,
    ValidationError,
)
from .export import ExportResult, export_parquet
from .loaders import load_customer_records, load_records
from .schemas import CustomerRecordsSchema, RecordsSchema

try:
    __version__ = _metadata.version("impactframe")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "APIError",
    "AuthenticationError",
    "CacheWarning",
    "Client",
    "CustomerRecordsSchema",
    "DuplicateRecordWarning",
    "ExportResult",
    "ImpactFrameError",
    "ImpactFrameWarning",
    "PaginationError",
    "RateLimitError",
    "RecordsSchema",
    "SchemaDriftWarning",
    "ValidationError",
    "__version__",
    "aggregate",
    "export_parquet",
    "load_customer_records",
    "load_records",
    "pseudonymize",
    "schemas",
]
