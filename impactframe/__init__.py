"""impactframe: the 1ClickImpact Records API as typed, validated pandas DataFrames."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    APIError,
    AuthenticationError,
    DuplicateRecordWarning,
    ImpactFrameError,
    ImpactFrameWarning,
    PaginationError,
    RateLimitError,
    SchemaDriftWarning,
    ValidationError,
)

try:
    __version__ = version("impactframe")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "APIError",
    "AuthenticationError",
    "DuplicateRecordWarning",
    "ImpactFrameError",
    "ImpactFrameWarning",
    "PaginationError",
    "RateLimitError",
    "SchemaDriftWarning",
    "ValidationError",
    "__version__",
]
