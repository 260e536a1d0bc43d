"""The Parquet cache of loaded frames (SPEC §6, §10); disk only, no HTTP.

Layout, under a root folder (``0700``; files ``0600``)::

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
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import pathlib
import re
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._constants import ENDPOINTS, ENV_CACHE_DIR, IMPACT_TYPES
from ._frame import DTYPES, METADATA_COLUMN, backend_dtype, fixed_columns
from ._params import Query
from .errors import CacheWarning
from .schemas import validate

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

#: Bump when the layout or the manifest changes: entries of other versions are refetched.
SCHEMA_VERSION: int = 1

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_MANIFEST = "manifest.json"
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{8,64}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_DATA_RE = re.compile(r"data-[0-9a-f]{64}\.parquet")
_COMPRESSION = "zstd"
_FLOAT = pd.Float64Dtype()



# -- folders and permissions ---------------------------------------------------------------------


def _make_private_dir(path: pathlib.Path) -> None:
    """Create `path` (and missing parents) and make it ``0700`` whatever the umask.

    Parents this call creates are ``0700`` too: ``mkdir(parents=True)`` would give them the
    umask's mode (``0777`` under umask 0), and a writable parent lets others swap the cache.
    """
    missing = []
    parent = path.parent
    while parent != parent.parent and not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            folder.mkdir(mode=_DIR_MODE)
            folder.chmod(_DIR_MODE)
    path.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
    with contextlib.suppress(AttributeError):  # os.getuid: POSIX only
        if path.stat().st_uid != os.getuid():
            return  # not ours (e.g. a shared folder): leave its mode alone
    path.chmod(_DIR_MODE)


def resolve_cache_dir(cache: bool | str | os.PathLike[str]) -> pathlib.Path:
    """Return the cache root folder for the loaders' ``cache=`` argument, creating it.

    Parameters
    ----------
    cache : True, str or os.PathLike
        ``True``: ``$IMPACTFRAME_CACHE_DIR`` when set, else the platform's user cache folder
        (``platformdirs.user_cache_dir("impactframe")``). A path: that folder.

    Returns
    -------
    pathlib.Path
        The folder, existing and ``0700`` (when this user owns it).

    Raises
    ------
    ValueError
        If `cache` is ``False`` or an empty string.

    Examples
    --------
    >>> import tempfile
    >>> root = resolve_cache_dir(tempfile.mkdtemp() + "/cache")
    >>> oct(root.stat().st_mode & 0o777)
    '0o700'
    """
    if cache is True:
        env = os.environ.get(ENV_CACHE_DIR)
        if env:
            path = pathlib.Path(env).expanduser()
        else:
            import platformdirs

            path = pathlib.Path(platformdirs.user_cache_dir("impactframe"))
    elif isinstance(cache, str | os.PathLike) and not isinstance(cache, bool) and str(cache):
        path = pathlib.Path(cache).expanduser()
    else:
        msg = f"cache: {cache!r} is not accepted; expected True or a folder path"
        raise ValueError(msg)
    _make_private_dir(path)
    return path


# -- the key -------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _query_json(query: Query) -> dict[str, Any]:
    """The query as JSON-ready data: dates as ISO days, ``filter_by`` sorted, no ``page_size``."""
    fields = {k: _jsonable(v) for k, v in dataclasses.asdict(query).items() if k != "page_size"}
    if fields.get("filter_by") is not None:
        fields["filter_by"] = sorted(fields["filter_by"])
    return fields


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
            "query": _query_json(self.query),
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


# -- locks ---------------------------------------------------------------------------------------

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int) -> None:
        # LK_LOCK retries for about 10 s, then raises: keep waiting like flock does.
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _open_locked(path: pathlib.Path) -> int:
    """Open and lock `path`; retry if `clear` unlinked it meanwhile (so one inode is locked)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            with contextlib.suppress(AttributeError, PermissionError):  # fchmod: POSIX only
                os.fchmod(fd, _FILE_MODE)
            _lock_fd(fd)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        _unlock_fd(fd)
        os.close(fd)


class _KeyLock:
    """One entry's lock: a re-entrant thread lock plus a file lock held while depth > 0.

    ``flock`` locks belong to an open file, not a thread, so threads of one process are kept
    apart by the RLock; the file lock keeps processes apart.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self.rlock:
            if self.depth == 0:
                _make_private_dir(self.path.parent)
                self.fd = _open_locked(self.path)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd is not None:
                    fd, self.fd = self.fd, None
                    try:
                        _unlock_fd(fd)
                    finally:
                        os.close(fd)


_KEY_LOCKS: dict[str, _KeyLock] = {}
_KEY_LOCKS_GUARD = threading.Lock()


def _key_lock(path: pathlib.Path) -> _KeyLock:
    name = os.path.abspath(path)
    with _KEY_LOCKS_GUARD:
        lock = _KEY_LOCKS.get(name)
        if lock is None:
            lock = _KEY_LOCKS[name] = _KeyLock(pathlib.Path(name))
        return lock


# -- atomic files --------------------------------------------------------------------------------


def _fsync_dir(path: pathlib.Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - directories cannot be opened there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600): a synced temporary file in the same folder, renamed."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            with contextlib.suppress(AttributeError):
                os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- column codecs -------------------------------------------------------------------------------


class _Uncacheable(Exception):
    """The frame holds something the cache cannot store exactly (it is returned uncached)."""


def _missing_kind(value: Any) -> str:
    if value is None:
        return "None"
    if value is pd.NA:
        return "NA"
    return "nan"


_MISSING = {"None": None, "NA": pd.NA, "nan": np.nan}


def _refuse(value: Any) -> Any:
    msg = f"a {type(value).__name__} is not JSON"
    raise TypeError(msg)


def _encode_column(name: str, series: pd.Series) -> tuple[pa.ChunkedArray | pa.Array, dict]:
    """One column as Arrow data plus the manifest entry that restores its exact dtype."""
    dtype = series.dtype
    spec: dict[str, Any] = {"name": name, "dtype": str(dtype)}
    if isinstance(dtype, pd.ArrowDtype):
        # Parquet renames some nested fields (a map's entries): keep the exact Arrow type.
        arrow_type = dtype.pyarrow_dtype
        schema = pa.schema([pa.field("t", arrow_type)]).serialize().to_pybytes()
        spec |= {"kind": "arrow", "arrow_schema": base64.b64encode(schema).decode()}
        return pa.array(series.array, type=arrow_type), spec
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories
        spec |= {
            "kind": "category",
            "categories": categories.tolist(),
            "categories_dtype": str(categories.dtype),
            "ordered": bool(dtype.ordered),
        }
        try:
            json.dumps(spec["categories"], default=_refuse, allow_nan=False)
        except (TypeError, ValueError) as exc:
            msg = f"column {name!r}: categories must be JSON values ({exc})"
            raise _Uncacheable(msg) from None
        return pa.array(series, from_pandas=True), spec
    if isinstance(dtype, pd.StringDtype):
        spec |= {
            "kind": "string",
            "storage": dtype.storage,
            "na_value": "NA" if dtype.na_value is pd.NA else "nan",
        }
        return pa.array(series, from_pandas=True, type=pa.large_string()), spec
    if pd.api.types.is_object_dtype(dtype):
        values = series.to_numpy()
        missing = pd.isna(values)
        spec["kind"] = "json"
        spec["missing"] = _missing_kind(values[missing.argmax()]) if missing.any() else "None"
        # One encoder for the column: json.dumps with options would build one per value.
        encode = json.JSONEncoder(ensure_ascii=False, default=_refuse).encode
        try:
            texts = [None if miss else encode(v) for v, miss in zip(values, missing, strict=True)]
        except (TypeError, ValueError) as exc:
            msg = f"column {name!r} holds a value the cache cannot store ({exc})"
            raise _Uncacheable(msg) from None
        return pa.array(texts, type=pa.large_string()), spec
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):
        if not hasattr(dtype, "__from_arrow__"):
            msg = f"column {name!r}: dtype {dtype} cannot be stored"
            raise _Uncacheable(msg)
        spec["kind"] = "extension"
    else:
        spec["kind"] = "numpy"
    return pa.array(series, from_pandas=True), spec


def _decode_column(column: pa.ChunkedArray, spec: dict[str, Any]) -> Any:
    """Turn one Arrow column back into pandas values of exactly the recorded dtype."""
    kind = spec["kind"]
    if kind == "arrow":
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(spec["arrow_schema"])))
        arrow_type = schema.field(0).type
        if str(column.type) != str(arrow_type):  # ``==`` ignores the nested field names
            column = column.cast(arrow_type)
        return pd.arrays.ArrowExtensionArray(column)
    if kind == "string":
        na_value = pd.NA if spec["na_value"] == "NA" else np.nan
        dtype = pd.StringDtype(spec["storage"], na_value=na_value)
        return dtype.__from_arrow__(column.cast(pa.large_string()))
    if kind == "category":
        categories = pd.Index(spec["categories"], dtype=spec["categories_dtype"])
        raw = column.to_pandas()
        if not isinstance(raw.dtype, pd.CategoricalDtype):
            raw = raw.astype("category")
        values = pd.Categorical(raw).set_categories(categories, ordered=spec["ordered"])
        if int(values.isna().sum()) != column.null_count:
            msg = "a category value is not among the recorded categories"
            raise ValueError(msg)
        return values
    if kind == "json":
        # One parse of the whole column as a JSON array is twice as fast as one per value.
        text = ",".join(column.fill_null("null").to_pylist())
        values = np.fromiter(json.loads(f"[{text}]"), dtype=object, count=len(column))
        missing = _MISSING[spec["missing"]]
        if missing is not None and column.null_count:
            values[column.is_null().to_numpy(zero_copy_only=False)] = missing
        return values
    dtype = pd.api.types.pandas_dtype(spec["dtype"])
    if kind == "extension":
        return dtype.__from_arrow__(column)  # type: ignore[union-attr]
    return column.to_numpy().astype(dtype, copy=False)


def _encode_frame(frame: pd.DataFrame) -> tuple[pa.Table, dict[str, Any]]:
    names = list(frame.columns)
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        msg = "column names must be distinct strings"
        raise _Uncacheable(msg)
    if (
        not isinstance(frame.index, pd.RangeIndex)
        or frame.index.start != 0
        or (frame.index.step != 1)
    ):
        msg = "the index must be a RangeIndex from 0"
        raise _Uncacheable(msg)
    arrays, specs = [], []
    for position, name in enumerate(names):
        try:
            array, spec = _encode_column(name, frame.iloc[:, position])
        except (TypeError, ValueError, pa.ArrowException) as exc:  # no Arrow form for it
            msg = f"column {name!r} of dtype {frame.dtypes.iloc[position]} ({exc})"
            raise _Uncacheable(msg) from None
        arrays.append(array)
        specs.append(spec)
    table = pa.Table.from_arrays(arrays, names=names)
    layout = {"columns": specs, "columns_dtype": str(frame.columns.dtype), "rows": len(frame)}
    try:
        json.dumps(frame.attrs, default=_refuse, allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = f"frame.attrs must be JSON values ({exc})"
        raise _Uncacheable(msg) from None
    layout["attrs"] = frame.attrs
    return table, layout


def _decode_frame(table: pa.Table, layout: dict[str, Any]) -> pd.DataFrame:
    specs = layout["columns"]
    if table.column_names != [s["name"] for s in specs] or table.num_rows != layout["rows"]:
        msg = "the data file does not hold the columns and rows of its manifest"
        raise ValueError(msg)
    columns = {}
    for position, spec in enumerate(specs):
        columns[position] = _decode_column(table.column(position), spec)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows), copy=False)
    frame.columns = pd.Index([s["name"] for s in specs], dtype=layout["columns_dtype"])
    frame.attrs = layout.get("attrs", {})
    for position, spec in enumerate(specs):
        if str(frame.dtypes.iloc[position]) != spec["dtype"]:
            msg = f"column {spec['name']!r} came back as {frame.dtypes.iloc[position]}"
            raise ValueError(msg)
    return frame


# -- the store -----------------------------------------------------------------------------------


class _Raced(str):
    """`ParquetCache._read` lost a race with a writer: read again."""


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
        return _key_lock(self._lock_path(key)).hold()

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
            outcome = self._read(folder, key)
            if not isinstance(outcome, _Raced):
                break
        if isinstance(outcome, _Raced | str):
            return self._unusable(str(outcome))
        return outcome

    @staticmethod
    def _read(folder: pathlib.Path, key: CacheKey) -> pd.DataFrame | str | _Raced | None:
        """One attempt: the frame, ``None`` (no entry) or why the entry is unusable."""
        try:
            raw = (folder / _MANIFEST).read_bytes()
        except FileNotFoundError:
            return None
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
            if not _DATA_RE.fullmatch(data_file):
                return "its manifest names an unexpected data file"
            try:
                data = (folder / data_file).read_bytes()
            except FileNotFoundError:
                with contextlib.suppress(OSError):
                    if (folder / _MANIFEST).read_bytes() != raw:
                        return _Raced("its entry kept changing while being read")
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

    @staticmethod
    def _unusable(reason: str) -> None:
        # user code -> load_records -> _load -> ParquetCache.get -> _unusable
        warnings.warn(
            f"ignoring a cache entry because {reason}; refetching", CacheWarning, stacklevel=5
        )
        logger.warning("ignoring a cache entry: %s", reason)

    def put(self, key: CacheKey, frame: pd.DataFrame) -> None:
        """Store `frame` as `key`'s entry, atomically replacing any previous one.

        A reader sees the old entry or the new one, never a mix; a crash midway leaves the
        old entry readable. A frame the cache cannot store exactly, or a failing disk, gives a
        `CacheWarning` and leaves the cache as it was: the caller still has its frame.

        Parameters
        ----------
        key : CacheKey
        frame : pandas.DataFrame
            With a RangeIndex from 0 and distinct string column names.

        Examples
        --------
        See `ParquetCache`.
        """
        buffer = io.BytesIO()
        try:
            table, layout = _encode_frame(frame)
            pq.write_table(table, buffer, compression=_COMPRESSION)
        except (_Uncacheable, pa.ArrowException) as exc:
            # user code -> load_records -> _load -> ParquetCache.put
            warnings.warn(f"not cached: {exc}", CacheWarning, stacklevel=4)
            return
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        folder = self._entry_dir(key)
        try:
            with self.lock(key):
                self._write_entry(key, folder, frame, layout, data, sha)
        except OSError as exc:
            warnings.warn(
                f"not cached: the cache entry could not be written ({exc})",
                CacheWarning,
                stacklevel=4,
            )

    def _write_entry(
        self,
        key: CacheKey,
        folder: pathlib.Path,
        frame: pd.DataFrame,
        layout: dict[str, Any],
        data: bytes,
        sha: str,
    ) -> None:
        for path in (self.root / key.fingerprint, folder.parent, folder):
            _make_private_dir(path)
        now = _utc_now()
        created = now
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            previous = json.loads((folder / _MANIFEST).read_bytes())
            if previous["schema_version"] == SCHEMA_VERSION:
                created = str(previous["created"])
        data_file = f"data-{sha}.parquet"
        _write_atomic(folder / data_file, data)
        since = refresh_start(frame) if "time_utc" in frame else None
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "package_version": _package_version(),
            **key.describe(),
            "digest": key.digest,
            "rows": len(frame),
            "last_synced_day": since.isoformat() if since is not None else None,
            "created": created,
            "updated": now,
            "data_file": data_file,
            "data_sha256": sha,
            "data_bytes": len(data),
            "layout": layout,
        }
        text = json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False)
        _write_atomic(folder / _MANIFEST, text.encode())
        # Only now is the old data unreferenced; we hold the lock, so leftovers of crashed
        # writers (temporary files, data no manifest names) can go too.
        for path in folder.iterdir():
            if path.name not in (data_file, _MANIFEST) and (
                _DATA_RE.fullmatch(path.name) or path.name.startswith(".tmp-")
            ):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        logger.debug("cached %d rows of %s in entry %s", len(frame), key.endpoint, key.digest[:12])

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
                    if entry.is_dir() and _DIGEST_RE.fullmatch(entry.name):
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
                manifest = json.loads((entry / _MANIFEST).read_bytes())
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
            with _key_lock(lock_path).hold():
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


def _package_version() -> str:
    try:
        from . import __version__
    except ImportError:  # imported as a bare namespace package (an odd editable install)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("impactframe")
        except PackageNotFoundError:
            return "0.0.0"
    return str(__version__)


# -- refresh -------------------------------------------------------------------------------------


def refresh_start(frame: pd.DataFrame) -> dt.date | None:
    """Return the UTC day of the newest ``time_utc`` in `frame`, whatever its row order.

    A refresh asks the API from this day on (inclusive), so records later on that day are
    picked up too.

    Parameters
    ----------
    frame : pandas.DataFrame
        With a ``time_utc`` column (``datetime64[ms, UTC]`` or an Arrow timestamp).

    Returns
    -------
    datetime.date or None
        ``None`` when the frame has no timestamps.

    Examples
    --------
    >>> times = pd.to_datetime(["2024-03-01T23:59:59.999Z", "2024-01-01T00:00:00.000Z"])
    >>> refresh_start(pd.DataFrame({"time_utc": times}))
    datetime.date(2024, 3, 1)
    >>> refresh_start(pd.DataFrame({"time_utc": times[:0]})) is None
    True
    """
    newest = frame["time_utc"].max()
    if newest is None or pd.isna(newest):
        return None
    stamp = pd.Timestamp(newest)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.date()


def merge(
    cached: pd.DataFrame,
    fresh: pd.DataFrame,
    *,
    since: dt.date,
    endpoint: str,
    metadata: str,
    metadata_prefix: str,
    dtype_backend: str,
    sort_order: str | None = None,
) -> pd.DataFrame:
    """Combine a cached frame with the records fetched from day `since` on (a refresh).

    Cached rows of day `since` or later are replaced by `fresh` (which covers those days);
    the result is what a full load would give: ordered by `sort_order`, free of exact
    duplicates, in the column order of SPEC §3, with the impact types and columns of both
    frames (those only the replaced rows had are dropped with them).

    Parameters
    ----------
    cached, fresh : pandas.DataFrame
        Frames of the same endpoint and frame options, each in `sort_order`.
    since : datetime.date
        The first UTC day `fresh` covers.
    endpoint, metadata, metadata_prefix, dtype_backend : str
        The frame options (for the column order and the final schema check).
    sort_order : {"asc", "desc"}, optional
        The query's order; ``None`` infers it from the frames (ascending when they cannot
        tell, which only happens when neither frame has two different timestamps).

    Returns
    -------
    pandas.DataFrame
        With a RangeIndex, validated by `impactframe.schemas.validate`.

    Raises
    ------
    ValueError
        An unknown `sort_order`.
    impactframe.ValidationError
        The merged frame breaks the schema (the inputs did not come from one query).

    Notes
    -----
    A drift column whose type differs between the two frames gets the builder's common
    type: Float64 for integers and floats, else text. The text of a number is the same as a
    full load's, but a full load would also quote the strings (JSON text): such columns may
    differ in that detail.

    Examples
    --------
    >>> from impactframe._frame import records_to_frame
    >>> def record(user, time, trees):
    ...     return {"user_id": user, "time_utc": time, "tree_planted": trees}
    >>> cached = records_to_frame([record("U1", "2024-01-01T10:00:00.000Z", 1),
    ...                            record("U1", "2024-01-02T10:00:00.000Z", 2)])
    >>> fresh = records_to_frame([record("U1", "2024-01-02T10:00:00.000Z", 2),
    ...                           record("U1", "2024-01-03T08:00:00.000Z", 3)])
    >>> merged = merge(cached, fresh, since=refresh_start(cached), endpoint="records",
    ...                metadata="columns", metadata_prefix="metadata_",
    ...                dtype_backend="numpy_nullable", sort_order="asc")
    >>> merged["amount"].tolist()
    [1, 2, 3]
    """
    if sort_order is None:
        sort_order = _infer_order(cached, fresh)
    if sort_order not in ("asc", "desc"):
        msg = f"sort_order: {sort_order!r} is not accepted; expected 'asc' or 'desc'"
        raise ValueError(msg)
    kept = cached.loc[~_day_at_or_after(cached["time_utc"], since)]
    fixed = fixed_columns(endpoint)
    # A column only the replaced rows had (a drift field, a metadata key) goes with them,
    # as it would be absent from a full load.
    kept = kept[
        [c for c in kept.columns if c in fresh.columns or c in fixed or kept[c].notna().any()]
    ]
    parts = [kept, fresh] if sort_order == "asc" else [fresh, kept]
    new_types = _new_impact_types(parts)
    columns = _column_order(parts, fixed, metadata, metadata_prefix, new_types)
    dtypes = {name: _common_dtype(name, parts, dtype_backend) for name in columns}
    categories = pd.CategoricalDtype([*IMPACT_TYPES, *new_types], ordered=False)
    aligned = [_align(part, dtypes, categories) for part in parts]
    frame = pd.concat(aligned, ignore_index=True)
    duplicated = _duplicated(frame)
    if duplicated.any():
        frame = frame.loc[~duplicated].reset_index(drop=True)
    return validate(
        frame,
        endpoint,
        dtype_backend=dtype_backend,
        metadata=metadata,
        metadata_prefix=metadata_prefix,
    )


def _infer_order(cached: pd.DataFrame, fresh: pd.DataFrame) -> str:
    for part in (cached, fresh):
        times = part["time_utc"]
        if times.is_monotonic_decreasing and not times.is_monotonic_increasing:
            return "desc"
        if times.is_monotonic_increasing and not times.is_monotonic_decreasing:
            return "asc"
    return "asc"


def _day_at_or_after(times: pd.Series, since: dt.date) -> np.ndarray:
    bound = pd.Timestamp(since, tz="UTC")
    values = times
    if isinstance(values.dtype, pd.ArrowDtype):
        values = values.astype(f"datetime64[{values.dtype.pyarrow_dtype.unit}, UTC]")
    return (values >= bound).fillna(False).to_numpy(dtype=bool)


def _new_impact_types(parts: list[pd.DataFrame]) -> list[str]:
    """Impact types beyond the known ones, in order of first appearance (as a full load has)."""
    seen: list[str] = []
    for part in parts:
        for value in part["impact_type"].dropna().unique():
            if value not in IMPACT_TYPES and value not in seen:
                seen.append(str(value))
    return seen


def _column_order(
    parts: list[pd.DataFrame],
    fixed: list[str],
    metadata: str,
    metadata_prefix: str,
    new_types: list[str],
) -> list[str]:
    """SPEC §3's order: fixed columns (new impact types before ``category``), metadata, drift."""
    head = [*fixed[:-1], *new_types, fixed[-1]]
    if metadata in ("dict", "json"):
        head.append(METADATA_COLUMN)
    present = list(dict.fromkeys(c for part in parts for c in part.columns))
    # The columns of impact types no kept row has any more go with them.
    stale = set(_impact_categories(parts)) - set(IMPACT_TYPES) - set(new_types)
    rest = [c for c in present if c not in head and c not in stale]
    meta = []
    if metadata == "columns":  # the builder refuses drift fields that start with the prefix
        meta = sorted(c for c in rest if c.startswith(metadata_prefix))
    drift = [c for c in rest if c not in meta]  # first seen first, as the builder orders them
    return [*head, *meta, *drift]


def _impact_categories(parts: list[pd.DataFrame]) -> list[str]:
    found: list[str] = []
    for part in parts:
        dtype = part["impact_type"].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            found += [str(c) for c in dtype.categories]
    return found


def _common_dtype(name: str, parts: list[pd.DataFrame], dtype_backend: str) -> Any:
    """One dtype for a column both frames may have with different dtypes (a drift field).

    Mirrors the builder: integers and floats make Float64, any other mix is text.
    """
    dtypes = [part[name].dtype for part in parts if name in part]
    first = dtypes[0]
    if all(d == first for d in dtypes[1:]):
        return first

    def kind(dtype: Any) -> str:
        if isinstance(dtype, pd.ArrowDtype):
            return dtype.kind
        return np.dtype(dtype.numpy_dtype).kind if hasattr(dtype, "numpy_dtype") else "O"

    if all(kind(d) in "iuf" for d in dtypes):
        return backend_dtype(_FLOAT, dtype_backend)
    return backend_dtype(DTYPES["category"], dtype_backend)  # the backend's string dtype


def _align(
    part: pd.DataFrame, dtypes: dict[str, Any], categories: pd.CategoricalDtype
) -> pd.DataFrame:
    """`part` with exactly the columns of `dtypes` (missing ones all-NA), cast where needed."""
    out = {}
    for name, dtype in dtypes.items():
        if name == "impact_type":
            out[name] = part[name].cat.set_categories(
                pd.Index(categories.categories, dtype=part[name].cat.categories.dtype)
            )
        elif name not in part:
            filler = pd.Series(index=part.index, dtype=dtype)
            if pd.api.types.is_object_dtype(dtype):
                filler[:] = None  # the builder's "no metadata" in "dict" mode
            out[name] = filler
        elif part[name].dtype != dtype:
            out[name] = part[name].astype(dtype)
        else:
            out[name] = part[name]
    return pd.DataFrame(out, index=part.index)


def _duplicated(frame: pd.DataFrame) -> np.ndarray:
    """Rows identical (every column) to an earlier one; checked only among rows sharing a key."""
    candidates = frame.duplicated(["user_id", "time_utc"], keep=False).to_numpy()
    result = np.zeros(len(frame), dtype=bool)
    if not candidates.any():
        return result
    view = {}
    subset = frame.loc[candidates]
    for name in subset.columns:
        series = subset[name]
        if pd.api.types.is_object_dtype(series.dtype):  # dicts are unhashable: use JSON text
            series = series.map(lambda v: json.dumps(v, sort_keys=True, default=str))
        view[name] = series
    result[np.flatnonzero(candidates)] = pd.DataFrame(view).duplicated().to_numpy()
    return result
