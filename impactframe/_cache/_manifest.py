"""The manifest protocol of one cache entry: read the data file it names, or write both.

A writer puts the data under a new name (``data-<sha>.parquet``), then atomically replaces
``manifest.json``, then deletes the old data file; a reader checks the manifest's schema
version, digest and the data's size and sha256 before decoding the frame with its layout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import pathlib
import re
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._fs import atomic_write, private_dir
from .._version import package_version
from ._codec import _decode_frame
from ._key import CacheKey
from ._refresh import refresh_start

__all__ = [
    "COMPRESSION",
    "DATA_RE",
    "DIGEST_RE",
    "MANIFEST",
    "SCHEMA_VERSION",
    "Raced",
    "read_entry",
    "write_entry",
]

logger = logging.getLogger("impactframe.cache")

#: Bump when the layout, the manifest or the frame's values change: entries of other versions
#: are refetched. 2: mixed-type drift columns keep their strings unquoted. 3: the
#: ``metadata="json"`` text has its keys sorted.
SCHEMA_VERSION: int = 3

MANIFEST = "manifest.json"
DIGEST_RE = re.compile(r"[0-9a-f]{64}")
DATA_RE = re.compile(r"data-[0-9a-f]{64}\.parquet")
COMPRESSION = "zstd"


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Raced(str):
    """`read_entry` lost a race with a writer: read again."""


def read_entry(folder: pathlib.Path, key: CacheKey) -> pd.DataFrame | str | Raced | None:
    """One read of the entry in `folder`: the frame, ``None`` (no entry) or why it is unusable.

    `Raced` (a ``str``) when a writer replaced the entry meanwhile: read again.
    """
    try:
        raw = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:  # e.g. a file where the entry folder should be
        return f"its manifest cannot be read ({exc})"
    try:
        manifest = json.loads(raw)
        version = manifest["schema_version"]
    except (ValueError, TypeError, KeyError):
        return "its manifest is unreadable"
    if version != SCHEMA_VERSION:
        return (
            f"it was written with cache schema version {version!r}, this version "
            f"reads {SCHEMA_VERSION}"
        )
    try:
        if manifest["digest"] != key.digest:
            return "its manifest belongs to another query"
        data_file = manifest["data_file"]
        if not DATA_RE.fullmatch(data_file):
            return "its manifest names an unexpected data file"
        try:
            data = (folder / data_file).read_bytes()
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if (folder / MANIFEST).read_bytes() != raw:
                    return Raced("its entry kept changing while being read")
            return "its data file is missing"
        if len(data) != manifest["data_bytes"] or (
            hashlib.sha256(data).hexdigest() != manifest["data_sha256"]
        ):
            return "its data file does not match the manifest's sha256"
        table = pq.read_table(pa.BufferReader(data))
        return _decode_frame(table, manifest["layout"])
    except (KeyError, TypeError, ValueError, OSError, pa.ArrowException) as exc:
        # ArrowInvalid is a ValueError; a bad layout gives Key/Type/ValueError.
        return f"it cannot be read back ({type(exc).__name__}: {exc})"


def write_entry(
    root: pathlib.Path,
    key: CacheKey,
    folder: pathlib.Path,
    frame: pd.DataFrame,
    layout: dict[str, Any],
    data: bytes,
    sha: str,
    *,
    full: bool = True,
) -> None:
    """Write `data` (sha256 `sha`) and then the manifest naming it into `folder`, under the lock.

    `root` is the cache root; `full` as for `ParquetCache.put`.
    """
    for path in (root / key.fingerprint, folder.parent, folder):
        private_dir(path)
    now = _utc_now()
    created = built = now
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        previous = json.loads((folder / MANIFEST).read_bytes())
        if previous["schema_version"] == SCHEMA_VERSION:
            created = str(previous["created"])
            if not full:
                built = str(previous.get("built") or previous["created"])
    data_file = f"data-{sha}.parquet"
    atomic_write(folder / data_file, data)
    since = refresh_start(frame) if "time_utc" in frame else None
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "package_version": package_version(),
        **key.describe(),
        "digest": key.digest,
        "rows": len(frame),
        "last_synced_day": since.isoformat() if since is not None else None,
        "created": created,
        "built": built,
        "updated": now,
        "data_file": data_file,
        "data_sha256": sha,
        "data_bytes": len(data),
        "layout": layout,
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False)
    atomic_write(folder / MANIFEST, text.encode())
    # Only now is the old data unreferenced; we hold the lock, so leftovers of crashed
    # writers (temporary files, data no manifest names) can go too.
    for path in folder.iterdir():
        if path.name not in (data_file, MANIFEST) and (
            DATA_RE.fullmatch(path.name) or path.name.startswith(".tmp-")
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    logger.debug("cached %d rows of %s in entry %s", len(frame), key.endpoint, key.digest[:12])
