"""impactframe: the 1ClickImpact Records API as typed, validated pandas DataFrames.

Start with :func:`load_records` and :func:`load_customer_records`; :func:`reconcile` proves a
load complete against the account's own figures (:func:`load_impact`, :func:`load_daily_impact`).
See the README.
"""

from __future__ import annotations

from . import (
    _accessor,  # noqa: F401  (registers the DataFrame.impact accessor)
    aggregate,
    schemas,
)
from ._privacy import pseudonymize
from ._version import package_version as _package_version
from .account import (
    DailyImpactSchema,
    Reconciliation,
    load_daily_impact,
    load_impact,
    reconcile,
)
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
    TransportError,
    ValidationError,
)
from .export import ExportResult, export_parquet
from .loaders import load_customer_records, load_records
from .schemas import CustomerRecordsSchema, RecordsSchema

__version__ = _package_version()

__all__ = [
    "APIError",
    "AuthenticationError",
    "CacheWarning",
    "Client",
    "CustomerRecordsSchema",
    "DailyImpactSchema",
    "DuplicateRecordWarning",
    "ExportResult",
    "ImpactFrameError",
    "ImpactFrameWarning",
    "PaginationError",
    "RateLimitError",
    "Reconciliation",
    "RecordsSchema",
    "SchemaDriftWarning",
    "TransportError",
    "ValidationError",
    "__version__",
    "aggregate",
    "export_parquet",
    "load_customer_records",
    "load_daily_impact",
    "load_impact",
    "load_records",
    "pseudonymize",
    "reconcile",
    "schemas",
]
