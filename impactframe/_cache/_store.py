"""The Parquet cache of loaded frames (SPEC §6, §10); disk only, no HTTP.

Layout, under a root folder (folders the cache creates ``0700``, files ``0600``)::

    <root>/<fingerprint>/<endpoint>/<digest>.lock         inter-process lock of one entry
    <root>/<fingerprint>/<endpoint>/<digest>/manifest.json
    <root>/<fingerprint>/<endpoint>/<digest>/data-<sha>.parquet

The fingerprint is the Client's hash of base URL and key (never the key); the digest hashes
the rest of the cache key. The manifest names the data file and its sha256, so a reader
either sees the old pair or the new one: a writer puts the data under a new name, then
atomically replaces the manifest, then deletes the old data file. A data file that does not
match its manifest is corrupt: `ParquetCache.get` warns and returns ``None`` (a refetch),
never wrong data.

Parquet does not keep every pandas dtype (``string`` storage and missing-value kind, unused
categories and their order, dict-valued ``metadata``), so the manifest records each column's
exact dtype and `ParquetCache.get` restores it after one pyarrow read.

This module is the store; its parts live beside it: the key (`_key`), the manifest protocol
(`_manifest`), the column codec (`_codec`), the root folder (`_files`; locks and atomic
writes are `impactframe._fs`) and the refresh merge (`_refresh`). The names other modules use
are importable from here.
`refresh_start` (from `_refresh`) is the refresh's first day, clamped to today (UTC): one record
dated in the future must not blind every later refresh. The manifest's ``built`` is when
the entry was last fetched whole (``refresh=True`` keeps it, ``refresh="full"`` renews it);
``impactframe cache list`` shows it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import pathlib
import shutil
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._constants import ENDPOINTS
from .._fs import path_lock
from ..errors import CacheWarning
from ._codec import _encode_frame, _Uncacheable
from ._files import resolve_cache_dir
from ._key import _FINGERPRINT_RE, CacheKey
from ._manifest import (
    COMPRESSION,
    DIGEST_RE,
    MANIFEST,
    SCHEMA_VERSION,
    Raced,
    read_entry,
    write_entry,
)
from ._refresh import merge, refresh_start

__all__ = [
    "SCHEMA_VERSION",
    "CacheKey",
    "CacheWarning",
    "ParquetCache",
    "merge",
    "refresh_start",
    "resolve_cache_dir",
]

logger = logging.getLogger("impactframe.cache")

# -- the store -----------------------------------------------------------------------------------


class ParquetCache:
    """Frames stored as Parquet plus a JSON manifest, one entry per `CacheKey`.

    Parameters
    ----------
    root : pathlib.Path
        The cache folder (see `resolve_cache_dir`).

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> from impactframe._params import normalize_query
    >>> store = ParquetCache(resolve_cache_dir(tempfile.mkdtemp()))
    >>> key = CacheKey("0123456789abcdef", "records", normalize_query("records"), None,
    ...                "columns", "metadata_", "numpy_nullable")
    >>> store.get(key) is None
    True
    >>> store.put(key, pd.DataFrame({"user_id": pd.array(["U1"], dtype="string")}))
    >>> store.get(key)["user_id"].dtype
    <StringDtype(na_value=<NA>)>
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.root = pathlib.Path(root)

    def __repr__(self) -> str:
        return f"ParquetCache(root={str(self.root)!r})"

    def _entry_dir(self, key: CacheKey) -> pathlib.Path:
        return self.root / key.fingerprint / key.endpoint / key.digest

    def _lock_path(self, key: CacheKey) -> pathlib.Path:
        return self.root / key.fingerprint / key.endpoint / f"{key.digest}.lock"

    def lock(self, key: CacheKey) -> contextlib.AbstractContextManager[None]:
        """Hold `key`'s entry against other threads and processes (re-entrant per thread).

        Parameters
        ----------
        key : CacheKey

        Returns
        -------
        context manager

        Examples
        --------
        >>> import tempfile
        >>> from impactframe._params import normalize_query
        >>> store = ParquetCache(resolve_cache_dir(tempfile.mkdtemp()))
        >>> key = CacheKey("0123456789abcdef", "records", normalize_query("records"), None,
        ...                "columns", "metadata_", "numpy_nullable")
        >>> with store.lock(key), store.lock(key):
        ...     store.get(key) is None
        True
        """
        return path_lock(self._lock_path(key)).hold()

    @contextlib.contextmanager
    def try_lock(self, key: CacheKey) -> Iterator[bool]:
        """`lock`, or ``False`` with a `CacheWarning` when the disk refuses the entry's lock.

        A failing disk under a usable root (a file where a folder should be, no permission)
        must not cost the caller its frame: the load goes on without the cache.

        Parameters
        ----------
        key : CacheKey

        Returns
        -------
        context manager of bool
            ``True`` while the entry is locked; ``False``: leave the cache alone.

        Examples
        --------
        >>> import tempfile
        >>> from impactframe._params import normalize_query
        >>> store = ParquetCache(resolve_cache_dir(tempfile.mkdtemp()))
        >>> key = CacheKey("0123456789abcdef", "records", normalize_query("records"), None,
        ...                "columns", "metadata_", "numpy_nullable")
        >>> with store.try_lock(key) as locked:
        ...     locked
        True
        """
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.lock(key))
            except OSError as exc:
                # user code -> load_records -> _load -> (contextlib) __enter__ -> try_lock
                warnings.warn(
                    f"not using the cache: its entry cannot be locked ({exc})",
                    CacheWarning,
                    stacklevel=5,
                )
                logger.debug("cache entry lock failed: %s", exc)
                locked = False
            else:
                locked = True
            yield locked

    def get(self, key: CacheKey) -> pd.DataFrame | None:
        """Return the cached frame of `key`, equal in values and dtypes to the one `put`.

        Parameters
        ----------
        key : CacheKey

        Returns
        -------
        pandas.DataFrame or None
            ``None`` when there is no usable entry.

        Warns
        -----
        CacheWarning
            The entry is corrupt (unreadable manifest, data that does not match its sha256,
            unreadable Parquet) or of another schema version; it will be refetched.

        Examples
        --------
        See `ParquetCache`.
        """
        folder = self._entry_dir(key)
        # A writer may replace the entry between our reads of the manifest and the data
        # (only `put` takes the lock): then the manifest has changed, and we read again.
        for _ in range(3):
            outcome = read_entry(folder, key)
            if not isinstance(outcome, Raced):
                break
        if isinstance(outcome, Raced | str):
            return self._unusable(str(outcome))
        return outcome

    @staticmethod
    def _unusable(reason: str) -> None:
        # user code -> load_records -> _load -> ParquetCache.get -> _unusable
        warnings.warn(
            f"ignoring a cache entry because {reason}; refetching", CacheWarning, stacklevel=5
        )
        # DEBUG, not WARNING: the warning already tells the user (the CLI prints both).
        logger.debug("ignoring a cache entry: %s", reason)

    def put(self, key: CacheKey, frame: pd.DataFrame, *, full: bool = True) -> None:
        """Store `frame` as `key`'s entry, atomically replacing any previous one.

        A reader sees the old entry or the new one, never a mix; a crash midway leaves the
        old entry readable. A frame the cache cannot store exactly, or a failing disk, gives a
        `CacheWarning` and leaves the cache as it was: the caller still has its frame.

        Parameters
        ----------
        key : CacheKey
        frame : pandas.DataFrame
            With a RangeIndex from 0 and distinct string column names.
        full : bool, default True
            `frame` was fetched whole (``False``: a ``refresh=True`` merge). The manifest's
            ``built`` keeps the time of the last full fetch: a refresh cannot see records
            changed or added before its start day, so that time tells how old they may be.

        Examples
        --------
        See `ParquetCache`.
        """
        buffer = io.BytesIO()
        try:
            table, layout = _encode_frame(frame)
            pq.write_table(table, buffer, compression=COMPRESSION)
        except (_Uncacheable, pa.ArrowException) as exc:
            # user code -> load_records -> _load -> ParquetCache.put
            warnings.warn(f"not cached: {exc}", CacheWarning, stacklevel=4)
            return
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        folder = self._entry_dir(key)
        try:
            with self.lock(key):
                write_entry(self.root, key, folder, frame, layout, data, sha, full=full)
        except OSError as exc:
            warnings.warn(
                f"not cached: the cache entry could not be written ({exc})",
                CacheWarning,
                stacklevel=4,
            )

    def _entry_dirs(self) -> Iterator[pathlib.Path]:
        """Every entry folder under the root that follows our layout (nothing else is touched)."""
        if not self.root.is_dir():
            return
        for account in sorted(self.root.iterdir()):
            if not (account.is_dir() and _FINGERPRINT_RE.fullmatch(account.name)):
                continue
            for endpoint in sorted(account.iterdir()):
                if not (endpoint.is_dir() and endpoint.name in ENDPOINTS):
                    continue
                for entry in sorted(endpoint.iterdir()):
                    if entry.is_dir() and DIGEST_RE.fullmatch(entry.name):
                        yield entry

    def entries(self) -> list[dict[str, Any]]:
        """Return the manifests of the readable entries (for ``impactframe cache list``).

        Returns
        -------
        list of dict
            Each manifest without its column layout, plus ``"path"`` (the entry folder).

        Examples
        --------
        >>> import tempfile
        >>> ParquetCache(resolve_cache_dir(tempfile.mkdtemp())).entries()
        []
        """
        found = []
        for entry in self._entry_dirs():
            try:
                manifest = json.loads((entry / MANIFEST).read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(manifest, dict):
                manifest.pop("layout", None)
                found.append({**manifest, "path": str(entry)})
        return found

    def clear(self) -> int:
        """Remove every entry (and its lock file) under the root; return how many.

        Only folders that follow the cache layout are removed, so a root shared with other
        files is safe.

        Returns
        -------
        int

        Examples
        --------
        >>> import tempfile
        >>> ParquetCache(resolve_cache_dir(tempfile.mkdtemp())).clear()
        0
        """
        removed = 0
        for entry in list(self._entry_dirs()):
            lock_path = entry.parent / f"{entry.name}.lock"
            with path_lock(lock_path).hold():
                shutil.rmtree(entry)
                removed += 1
                if sys.platform != "win32":  # an open file cannot be unlinked there
                    # Waiters on this inode notice the unlink and lock the new file.
                    with contextlib.suppress(FileNotFoundError):
                        lock_path.unlink()
                    for folder in (entry.parent, entry.parent.parent):
                        with contextlib.suppress(OSError):  # still holds other entries
                            folder.rmdir()
        return removed
