"""Facts about the Records API (SPEC §1) and the package's defaults, in one place."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Final, Literal

PRODUCTION_URL: Final = "https://api.1clickimpact.com"
SANDBOX_URL: Final = "https://sandbox.1clickimpact.com"
ENVIRONMENTS: Final = {"production": PRODUCTION_URL, "sandbox": SANDBOX_URL}

ENV_API_KEY: Final = "IMPACTFRAME_API_KEY"
ENV_BASE_URL: Final = "IMPACTFRAME_BASE_URL"
ENV_CACHE_DIR: Final = "IMPACTFRAME_CACHE_DIR"

API_KEY_HEADER: Final = "x-api-key"

#: Known impact types, in the order of SPEC §1; the API may add more.
IMPACT_TYPES: Final = (
    "tree_planted",
    "waste_removed",
    "carbon_captured",
    "coral_restored",
    "money_donated",
)
#: The unit of each impact type's integer amount.
UNITS: Final = {
    "tree_planted": "trees",
    "waste_removed": "lbs of ocean plastic",
    "carbon_captured": "lbs of CO2",
    "coral_restored": "coral fragments",
    "money_donated": "US cents",
}

Endpoint = Literal["records", "customer_records"]
#: endpoint name -> (URL path, the response field that holds the records)
ENDPOINTS: Final[dict[str, tuple[str, str]]] = {
    "records": ("/v1/records", "user_records"),
    "customer_records": ("/v1/customer_records", "customer_records"),
}

MIN_PAGE_SIZE: Final = 1
MAX_PAGE_SIZE: Final = 1000
API_DEFAULT_LIMIT: Final = 10

SORT_ORDERS: Final = ("asc", "desc")
METADATA_MODES: Final = ("columns", "dict", "json", "drop")
DTYPE_BACKENDS: Final = ("numpy_nullable", "pyarrow")
DEFAULT_METADATA_PREFIX: Final = "metadata_"
#: The defaults of the public keywords (SPEC §2), written once: the signatures of the loaders,
#: `export_parquet`, `impactframe.dask` and `_prepare.prepare` read them from here.
DEFAULTS: Final[MappingProxyType[str, Any]] = MappingProxyType(
    {
        "customer_email": None,
        "filter_by": None,
        "start_date": None,
        "end_date": None,
        "sort_order": "asc",
        "page_size": MAX_PAGE_SIZE,
        "max_records": None,
        "metadata": "columns",
        "metadata_prefix": DEFAULT_METADATA_PREFIX,
        "cache": False,
        "refresh": False,
        "concurrency": "auto",
        "progress": None,
        "dtype_backend": "numpy_nullable",
        "output": "pandas",
    }
)

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_MAX_RETRIES: Final = 5
#: Exponential backoff: base * 2**attempt seconds with equal jitter (half fixed, half
#: random), never above the cap.
BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 30.0
#: A server's Retry-After is honoured up to this many seconds.
RETRY_AFTER_CAP: Final = 120.0
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
