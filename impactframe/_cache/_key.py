"""The cache key: everything that decides a cached frame's content, hashed to name its entry."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from .._constants import ENDPOINTS
from .._params import Query

__all__ = ["CacheKey"]

_FINGERPRINT_RE = re.compile(r"[0-9a-f]{8,64}")


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """Everything that decides a cached frame's content, and so names its cache entry.

    Attributes
    ----------
    fingerprint : str
        The Client's account fingerprint (hex; a hash of base URL and key, never the key).
    endpoint : str
        ``"records"`` or ``"customer_records"``.
    query : Query
        The validated query; its ``page_size`` does not change the result and is ignored.
    max_records : int or None
        The cap on rows.
    metadata, metadata_prefix, dtype_backend : str
        The frame options of the loader.

    Raises
    ------
    ValueError
        If `fingerprint` is not hex (it becomes a folder name) or `endpoint` is unknown.

    Examples
    --------
    >>> from impactframe._params import normalize_query
    >>> key = CacheKey("0123456789abcdef", "records", normalize_query("records"), None,
    ...                "columns", "metadata_", "numpy_nullable")
    >>> len(key.digest)
    64
    """

    fingerprint: str
    endpoint: str
    query: Query
    max_records: int | None
    metadata: str
    metadata_prefix: str
    dtype_backend: str

    def __post_init__(self) -> None:
        if not isinstance(self.fingerprint, str) or not _FINGERPRINT_RE.fullmatch(self.fingerprint):
            msg = "fingerprint: expected 8 to 64 lowercase hex digits (Client.fingerprint)"
            raise ValueError(msg)
        if self.endpoint not in ENDPOINTS:
            msg = f"endpoint: {self.endpoint!r} is not accepted; expected one of "
            msg += ", ".join(repr(e) for e in ENDPOINTS)
            raise ValueError(msg)

    def describe(self) -> dict[str, Any]:
        """The key as JSON-ready data (what the digest hashes; nothing secret).

        Returns
        -------
        dict

        Examples
        --------
        >>> from impactframe._params import normalize_query
        >>> key = CacheKey("0123456789abcdef", "records", normalize_query("records"), 10,
        ...                "drop", "metadata_", "pyarrow")
        >>> key.describe()["max_records"], "page_size" in key.describe()["query"]
        (10, False)
        """
        return {
            "fingerprint": self.fingerprint,
            "endpoint": self.endpoint,
            "query": self.query.to_json(),
            "max_records": self.max_records,
            "metadata": self.metadata,
            "metadata_prefix": self.metadata_prefix,
            "dtype_backend": self.dtype_backend,
        }

    @property
    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of `describe`; stable across runs and platforms."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
