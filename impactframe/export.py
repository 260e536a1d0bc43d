"""Streaming export of a whole history into a hive-partitioned Parquet dataset (SPEC §7).

Pages are gathered into batches of about ``batch_records`` records; each batch goes through the
loaders' own `FrameBuilder` (same validation, same dtypes), becomes an Arrow table and is
written as new files, one per partition (``year=2024/month=9/part-00003-<run>.parquet``). Memory
is bounded by one batch, never by the history.

Batches may see different metadata keys, so files may start with different columns. When the
stream ends every file whose columns differ from the union is rewritten to the union (one file
at a time, null columns added), then ``_common_metadata`` and ``_metadata`` are written. Readers
that take the schema of the first file they open (pyarrow.dataset, pandas, Dask, Spark without
``mergeSchema``) would otherwise miss columns, and the sidecar files alone do not fix that.

The dataset is built in a temporary sibling folder and renamed to ``path`` only once complete:
a failed export leaves nothing at ``path`` that looks like a finished dataset. An old dataset is
swapped out atomically (``renameat2(RENAME_EXCHANGE)`` on Linux), so a process killed at any
moment leaves the old complete dataset or the new one at ``path``. Each run holds a lock file
beside its temporary folder; the next export of the same path removes the folders of runs that
were killed (their lock is free), never those of a run still going.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import json
import logging
import os
import re
import shutil
import sys
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._constants import DEFAULT_METADATA_PREFIX
from ._fetch import iter_record_pages
from ._frame import FrameBuilder
from ._params import check_choice
from ._prepare import DateLike, Plan, connect, prepare
from .client import Client
from .errors import DuplicateRecordWarning
from .loaders import _progress_bar

__all__ = ["PARTITION_KEYS", "ExportResult", "export_parquet"]

logger = logging.getLogger("impactframe")

#: Columns a dataset can be partitioned by, as hive folders (``year=2024/month=9``).
PARTITION_KEYS = ("year", "month", "day", "impact_type")

#: ``customer-records`` is the CLI's spelling.
_ENDPOINTS = {
    "records": "records",
    "customer_records": "customer_records",
    "customer-records": "customer_records",
}
_COMMON_METADATA = "_common_metadata"
_METADATA = "_metadata"
#: impact_type as a dictionary column with the same index and value types in every file, so
#: that readers can concatenate files whose dictionaries differ (a new type in a later batch).
_IMPACT_TYPE_ARROW = pa.dictionary(pa.int32(), pa.large_string())


@dataclass(frozen=True)
class ExportResult:
    """What `export_parquet` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The dataset folder.
    records : int
        Rows written (after duplicates were dropped).
    files : int
        Parquet data files (sidecars ``_common_metadata`` and ``_metadata`` not counted).
    partitions : int
        Partition folders holding data (1 when unpartitioned).
    columns : tuple of str
        The dataset's columns as readers see them: the file columns, then the partition
        columns that live in folder names.
    """

    path: Path
    records: int
    files: int
    partitions: int
    columns: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.records:,} records -> {self.path} "
            f"({self.files} files, {self.partitions} partitions, {len(self.columns)} columns)"
        )


# -- argument checks (all before any request) ---------------------------------------------------


def _check_endpoint(endpoint: object) -> str:
    check_choice(endpoint, "endpoint", _ENDPOINTS)
    return _ENDPOINTS[str(endpoint)]


def _check_partition_by(partition_by: object) -> tuple[str, ...]:
    accepted = f"expected an ordered tuple of distinct names from {PARTITION_KEYS} (or ())"
    if isinstance(partition_by, str) or not isinstance(partition_by, Iterable):
        msg = f"partition_by: {partition_by!r} is not accepted; {accepted}"
        raise ValueError(msg)
    keys = tuple(partition_by)
    if any(key not in PARTITION_KEYS for key in keys) or len(set(keys)) != len(keys):
        msg = f"partition_by: {keys!r} is not accepted; {accepted}"
        raise ValueError(msg)
    return keys


def _check_batch_records(batch_records: object) -> int:
    if isinstance(batch_records, bool) or not isinstance(batch_records, int) or batch_records < 1:
        msg = f"batch_records: {batch_records!r} is not accepted; expected an int >= 1"
        raise ValueError(msg)
    return batch_records


def _looks_like_dataset(folder: Path) -> bool:
    """True if `folder` holds only Parquet files, sidecars and ``key=value`` folders.

    ``overwrite=True`` deletes the old folder; this keeps a typo (``path="."``) from
    deleting anything that is not a dataset.
    """
    for root, _dirs, files in os.walk(folder):
        if Path(root) != folder and "=" not in Path(root).name:
            return False
        for name in files:
            if not (name.endswith(".parquet") or name.startswith(("_", "."))):
                return False
    return True


def _check_target(path: object, overwrite: object) -> Path:
    if not isinstance(path, str | os.PathLike) or str(path) == "":
        msg = f"path: {path!r} is not accepted; expected a folder path (str or os.PathLike)"
        raise ValueError(msg)
    if not isinstance(overwrite, bool):
        msg = f"overwrite: {overwrite!r} is not accepted; expected True or False"
        raise ValueError(msg)
    target = Path(path).expanduser().absolute()
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            msg = f"path: {str(target)!r} exists and is not a folder; expected a folder path"
            raise ValueError(msg)
        if not overwrite:
            msg = (
                f"path: {str(target)!r} already exists; pass overwrite=True to replace it "
                "(overwrite=False keeps it)"
            )
            raise ValueError(msg)
        if not _looks_like_dataset(target):
            msg = (
                f"path: {str(target)!r} holds files that are not part of a Parquet dataset; "
                "overwrite=True only replaces a Parquet dataset folder"
            )
            raise ValueError(msg)
    return target


# -- batches ------------------------------------------------------------------------------------


def _content(record: object) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _record_key(record: object) -> tuple[object, object] | None:
    if isinstance(record, dict):
        return record.get("user_id"), record.get("time_utc")
    return None


class _BoundaryDedup:
    """Drops records that repeat, at the start of a batch, the last page of the previous one.

    A `FrameBuilder` only sees its own batch. A record repeated across the page boundary
    that is also a batch boundary (SPEC §3) would otherwise be written twice.
    """

    def __init__(self) -> None:
        self._tail: dict[tuple[object, object], set[str]] = {}
        self._at_start = False

    def new_batch(self, last_page: list[object]) -> None:
        self._tail = {}
        for record in last_page:
            key = _record_key(record)
            if key is not None:
                self._tail.setdefault(key, set()).add(_content(record))
        self._at_start = bool(self._tail)

    def filter(self, records: list[object]) -> list[object]:
        """Filter a page; only the first non-empty page of a batch is looked at."""
        if not self._at_start or not records:
            return records
        self._at_start = False
        kept = []
        for record in records:
            key = _record_key(record)
            seen = self._tail.get(key) if key is not None else None
            if seen is None or key is None:
                kept.append(record)
            elif _content(record) in seen:
                logger.debug("dropped a record repeated across a batch boundary")
            else:
                kept.append(record)
                user_id, time_utc = key
                warnings.warn(
                    f"two records share user_id={user_id!r} and time_utc={time_utc!r} "
                    "but differ; both were kept",
                    DuplicateRecordWarning,
                    # user -> export_parquet -> _export -> _write_dataset -> _batches -> filter
                    stacklevel=6,
                )
        return kept


def _batches(
    pages: Iterable[list[object]],
    new_builder: Callable[[], FrameBuilder],
    finish: Callable[[FrameBuilder], pd.DataFrame],
    batch_records: int,
) -> Iterator[pd.DataFrame]:
    """Feed pages to one builder after another; yield a frame whenever one holds a batch.

    Pages go into the builder as they arrive (it keeps compact column buffers, not the
    record dicts), and a builder is dropped as soon as its frame is built, so a batch costs
    its typed columns only. The last non-empty page is the one raw page kept: the next batch
    is checked against it.
    """
    dedup = _BoundaryDedup()
    builder: FrameBuilder | None = new_builder()
    last: list[object] = []
    for page in pages:
        if builder is None:
            builder = new_builder()
        records = dedup.filter(page)
        builder.add(records)
        if records:
            last = records
        if len(builder) >= batch_records:
            frame = finish(builder)
            builder = None
            dedup.new_batch(last)
            last = []
            yield frame
    if builder is not None and len(builder):
        yield finish(builder)


def _finish_batch(builder: FrameBuilder, warned: set[tuple[type[Warning], str]]) -> pd.DataFrame:
    """Build a batch's frame; a warning already given for an earlier batch is not repeated.

    The loader warns once per unknown field or new impact type (SPEC §3); every batch's
    builder would warn again, with its own counts, so the counts are left out of the match.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = builder.finish()
    for warning in caught:
        key = (warning.category, re.sub(r"\d+", "#", str(warning.message)))
        if key not in warned:
            warned.add(key)
            # user -> export_parquet -> _export -> _write_dataset -> _batches -> _finish_batch
            # (a partial adds no frame)
            warnings.warn(warning.message, stacklevel=6)
    return frame


# -- the dataset --------------------------------------------------------------------------------


@dataclass
class _File:
    relpath: str  # POSIX-style, relative to the dataset root
    schema: pa.Schema


def _partition_values(frame: pd.DataFrame, partition_by: tuple[str, ...]) -> pd.DataFrame:
    times = frame["time_utc"].dt
    columns: dict[str, Any] = {}
    for key in partition_by:
        if key == "impact_type":
            columns[key] = frame["impact_type"].astype(object).to_numpy()
        else:
            columns[key] = getattr(times, key).to_numpy(dtype="int64")
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    index = table.schema.get_field_index("impact_type")
    if index >= 0:
        field = table.schema.field(index).with_type(_IMPACT_TYPE_ARROW)
        table = table.set_column(index, field, table.column(index).cast(_IMPACT_TYPE_ARROW))
    return table


def _pandas_entries(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(b"pandas")
    return json.loads(raw) if raw else {}


def _unify(files: list[_File], metadata_columns: str | None) -> pa.Schema:
    """The union of the files' columns, in SPEC §3 order, with one type per column.

    Columns keep the position they have in the batch that brought them; metadata columns
    (named ``metadata_columns + key``) are sorted by code point right after ``category``.
    A column whose types cannot be widened into one (a drifted field that was a number in
    one batch and text in another) becomes text, so nothing is lost.
    """
    schemas = [f.schema for f in files]
    order: list[str] = []
    types: dict[str, list[pa.DataType]] = {}
    meta_names: set[str] = set()
    for schema in schemas:
        previous: str | None = None
        for field in schema:
            types.setdefault(field.name, []).append(field.type)
            if metadata_columns is not None and field.name.startswith(metadata_columns):
                meta_names.add(field.name)
                continue
            if field.name not in order:
                # After its predecessor and after columns this batch does not have (drift
                # columns seen earlier stay first).
                at = order.index(previous) + 1 if previous else 0
                while at < len(order) and order[at] not in schema.names:
                    at += 1
                order.insert(at, field.name)
            previous = field.name
    if meta_names:
        at = order.index("category") + 1 if "category" in order else len(order)
        order[at:at] = sorted(meta_names)

    fields = []
    for name in order:
        kinds = types[name]
        try:
            unified = pa.unify_schemas(
                [pa.schema([pa.field(name, t)]) for t in kinds], promote_options="permissive"
            ).field(name)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            unified = pa.field(name, pa.large_string())
        fields.append(unified)

    # Pandas metadata for every column, so pandas restores Int64, string and category dtypes
    # for columns that only some batches had; a column whose type was widened has no entry
    # from a batch that matches it, and is left for pandas to infer.
    final = {field.name: field.type for field in fields}
    entries: dict[str, Any] = {}
    head: dict[str, Any] = {}
    for schema in schemas:
        info = _pandas_entries(schema)
        head = head or info
        for entry in info.get("columns", []):
            name = entry.get("name")
            if name in final and schema.field(name).type.equals(final[name]):
                entries[name] = entry
    metadata = None
    if head:
        head = {**head, "columns": [entries[f.name] for f in fields if f.name in entries]}
        metadata = {b"pandas": json.dumps(head).encode()}
    return pa.schema(fields, metadata=metadata)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            arrays.append(column if column.type.equals(field.type) else column.cast(field.type))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class _DatasetWriter:
    """Writes batches as new files under a root folder; unifies them at the end."""

    def __init__(self, root: Path, partition_by: tuple[str, ...], run_id: str) -> None:
        self.root = root
        self.partition_by = partition_by
        self.run_id = run_id
        self.files: list[_File] = []

    def _write(self, table: pa.Table, relpath: str) -> None:
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        self.files.append(_File(relpath, table.schema))

    def write_batch(self, frame: pd.DataFrame, batch: int) -> None:
        name = f"part-{batch:05d}-{self.run_id}.parquet"
        table = _to_arrow(frame)
        if not self.partition_by:
            self._write(table, name)
            return
        # Partition columns live in the folder names (hive style), not in the files.
        table = table.drop_columns([k for k in self.partition_by if k in table.column_names])
        keys = _partition_values(frame, self.partition_by)
        groups = keys.groupby(list(self.partition_by), sort=True).indices
        for values, rows in groups.items():
            values = values if isinstance(values, tuple) else (values,)
            folders = [
                f"{key}={quote(str(value), safe='')}"
                for key, value in zip(self.partition_by, values, strict=True)
            ]
            self._write(table.take(pa.array(rows)), "/".join([*folders, name]))

    def finish(self, empty: pd.DataFrame, metadata_columns: str | None) -> pa.Schema:
        if not self.files:
            # An empty result is still a readable dataset: one file with no rows.
            self._write(_to_arrow(empty), f"part-00000-{self.run_id}.parquet")
        schema = _unify(self.files, metadata_columns)
        collected = []
        for file in self.files:
            path = self.root / file.relpath
            if not file.schema.equals(schema, check_metadata=False):
                logger.debug("rewriting %s to the dataset's %d columns", file.relpath, len(schema))
                table = _conform(pq.ParquetFile(path).read(), schema)
                temporary = path.with_name(f".{path.name}.tmp")
                pq.write_table(table, temporary)
                os.replace(temporary, path)
                del table
            metadata = pq.read_metadata(path)
            metadata.set_file_path(file.relpath)
            collected.append(metadata)
        pq.write_metadata(schema, self.root / _COMMON_METADATA)
        pq.write_metadata(schema, self.root / _METADATA, metadata_collector=collected)
        return schema

    @property
    def partitions(self) -> int:
        return len({file.relpath.rpartition("/")[0] for file in self.files})


# -- atomic placement ---------------------------------------------------------------------------

#: What a run keeps beside ``<name>``: its lock file ``.tmp-<run>.lock``, its temporary folder
#: ``.tmp-<run>`` and, while it swaps datasets without an atomic exchange, ``.old-<run>``.
_LEFTOVER = re.compile(r"\.(tmp|old)-([0-9a-f]{32})(\.lock)?")

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    fcntl: Any = None
else:
    import fcntl


def _remove_tree(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)


def _lock_path(target: Path, run_id: str) -> Path:
    return target.with_name(f"{target.name}.tmp-{run_id}.lock")


def _lock(path: Path, *, wait: bool) -> int | None:
    """Open and lock `path` (created if missing); ``None`` if held elsewhere and not `wait`.

    Retries until the locked file is the one at `path`: a cleaner may unlink the name between
    our open and our lock, and a lock on an unlinked file protects nothing.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            if wait:
                raise
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _hold_run_lock(target: Path, run_id: str) -> int | None:
    """Create and lock this run's lock file, before its temporary folder exists."""
    if fcntl is None:  # pragma: no cover - no stale-folder cleanup on Windows
        return None
    return _lock(_lock_path(target, run_id), wait=True)


def _release_run_lock(target: Path, run_id: str, fd: int | None) -> None:
    """Unlink the lock file while still holding it, then let go."""
    if fd is None:  # pragma: no cover - Windows
        return
    with contextlib.suppress(FileNotFoundError):
        _lock_path(target, run_id).unlink()
    os.close(fd)


def _remove_stale(target: Path) -> None:
    """Remove what exports of `target` killed mid-way left beside it, never a live run's.

    A run's lock file is locked before its folders exist and until they are gone; the kernel
    releases the lock of a killed process, so a lock that can be taken marks a dead run.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return
    for path in siblings:
        if not path.name.startswith(target.name):
            continue
        match = _LEFTOVER.fullmatch(path.name[len(target.name) :])
        if match is None or path.is_symlink():
            continue
        kind, run_id, is_lock = match[1], match[2], match[3] is not None
        if is_lock != (not path.is_dir()) or (is_lock and kind != "tmp"):
            continue
        if kind == "old" and not target.exists():
            # Killed between the two renames of a non-atomic swap: this is the only complete
            # copy of the old dataset; leave it to the user rather than delete it.
            logger.warning("an interrupted export left the previous dataset at %s", path)
            continue
        lock_path = _lock_path(target, run_id)
        try:
            fd = _lock(lock_path, wait=False)
        except OSError:
            continue
        if fd is None:  # a live export holds it
            continue
        try:
            logger.debug("removing %s, left by an interrupted export", path)
            if not is_lock:
                _remove_tree(path)
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False when the platform or the file system cannot, so the caller falls back.
    """
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no libc symbol (glibc < 2.28, musl < 1.2.4)
        return False
    int_, path_ = ctypes.c_int, ctypes.c_char_p
    renameat2.argtypes = [int_, path_, int_, path_, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _place(temporary: Path, target: Path, overwrite: bool, run_id: str) -> None:
    """Put the finished dataset at `target`; an old dataset is replaced, never merged.

    Readers (and a crash) see the old complete dataset or the new one: the two folders are
    exchanged atomically where the platform can; elsewhere the old one is renamed aside first.
    """
    if not target.exists():
        temporary.rename(target)
        return
    if not overwrite:
        msg = f"path: {str(target)!r} appeared during the export; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    if _exchange(temporary, target):
        aside = temporary  # now holds the old dataset
    else:
        aside = target.with_name(f"{target.name}.old-{run_id}")
        target.rename(aside)
        try:
            temporary.rename(target)
        except BaseException:
            aside.rename(target)
            raise
    try:
        _remove_tree(aside)
    except OSError as exc:
        # The new dataset is in place; a leftover old copy is not worth failing the export.
        logger.warning("could not remove the replaced dataset %s: %s", aside, exc)


# -- the public function ------------------------------------------------------------------------


def export_parquet(
    path: str | os.PathLike[str],
    endpoint: str = "records",
    *,
    partition_by: Iterable[str] = ("year", "month"),
    customer_email: str | None = None,
    filter_by: str | Iterable[str] | None = None,
    start_date: DateLike | None = None,
    end_date: DateLike | None = None,
    sort_order: str = "asc",
    page_size: int = 1000,
    max_records: int | None = None,
    metadata: str = "columns",
    metadata_prefix: str = DEFAULT_METADATA_PREFIX,
    concurrency: int = 1,
    progress: bool | None = None,
    batch_records: int = 50_000,
    overwrite: bool = False,
    client: Client | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> ExportResult:
    """Stream every record of a query into a hive-partitioned Parquet dataset.

    Memory stays bounded by one batch of about `batch_records` records, however long the
    history. The rows and values are those `load_records` (or `load_customer_records`) would
    return for the same query, with the same validation; the files are readable by pyarrow,
    pandas, DuckDB, Dask and Spark, and every file carries every column (see Notes).

    Parameters
    ----------
    path : str or os.PathLike
        The dataset folder to create. Missing parent folders are created.
    endpoint : {"records", "customer_records"}
        Which endpoint (``"customer-records"`` is accepted as the CLI's spelling).
    partition_by : tuple of str
        Hive partition columns, in folder order, from ``"year"``, ``"month"``, ``"day"``
        (UTC, from ``time_utc``) and ``"impact_type"``; ``()`` writes unpartitioned files.
        Partition columns live in folder names (``year=2024/month=9``), not in the files.
    customer_email : str, optional
        Only this customer's records (``customer_records`` only).
    filter_by, start_date, end_date, sort_order, page_size, max_records
        The query, exactly as for `load_records`.
    metadata : {"columns", "dict", "json", "drop"}
        As for `load_records`, except that ``"dict"`` is written like ``"json"``: one
        ``metadata`` column of JSON text, which every Parquet reader can hold.
    metadata_prefix : str
        Prefix of the metadata columns in ``"columns"`` mode.
    concurrency : int
        Cursor chains walked at once over disjoint date windows; the rows are the same.
    progress : bool, optional
        A progress bar of records fetched; ``None`` shows it in notebooks and terminals.
    batch_records : int
        Records gathered before a batch is validated and written; it bounds the memory used.
    overwrite : bool
        Replace an existing dataset at `path` (atomically, once the new one is complete).
    client : Client, optional
        A configured client; alternative to `api_key`/`base_url`.
    api_key : str, optional
        Defaults to ``IMPACTFRAME_API_KEY``.
    base_url : str, optional
        Defaults to ``IMPACTFRAME_BASE_URL``, then the production host.

    Returns
    -------
    ExportResult
        The folder, and how many records, files, partitions and columns were written.

    Raises
    ------
    ValueError
        A bad argument, or `path` exists and `overwrite` is false (or it is not a Parquet
        dataset folder), before any request is sent.
    impactframe.APIError
        The API failed, even after the retries; nothing is left at `path`.
    impactframe.ValidationError
        The API sent data that breaks the contract (SPEC §3); nothing is left at `path`.

    Notes
    -----
    The dataset is written to a temporary sibling folder ``<path>.tmp-<id>`` and renamed to
    `path` when complete; a failed export removes it, and the next export of `path` removes
    one left by a killed process. With `overwrite`, the new folder and the old one are swapped
    atomically (Linux; elsewhere the old one is renamed aside first), then the old one is
    deleted. Files and folders get the process's default permissions (umask), as user data
    does; only the private cache restricts itself to ``0600``/``0700``.

    Batches that see different metadata keys start out as files with different columns; at
    the end, files missing some are rewritten with those columns as nulls, so that readers
    which take their schema from one file see them all. ``_common_metadata`` (the unified
    schema, with pandas metadata for every column) and ``_metadata`` (every row group) are
    written beside the files. ``impact_type`` is a dictionary-encoded string column.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import pandas as pd
    >>> from impactframe.sandbox import SandboxServer
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "records"
    >>> with SandboxServer(n_records=200) as server:
    ...     result = export_parquet(folder, api_key=server.api_key, base_url=server.url,
    ...                             progress=False)
    >>> result.records, len(pd.read_parquet(folder))
    (200, 200)
    >>> (folder / "_common_metadata").exists()
    True
    """
    # locals() holds exactly the keywords above: the body is shared, the signature is not.
    return _export(**locals())


def _export(
    path: str | os.PathLike[str],
    endpoint: str,
    *,
    partition_by: Iterable[str],
    batch_records: int,
    overwrite: bool,
    client: Client | None,
    api_key: str | None,
    base_url: str | None,
    **arguments: Any,
) -> ExportResult:
    # Every argument is checked before a client (and so any connection) exists.
    endpoint = _check_endpoint(endpoint)
    plan = prepare(endpoint, **arguments)
    partition_keys = _check_partition_by(partition_by)
    batch_size = _check_batch_records(batch_records)
    target = _check_target(path, overwrite)
    if plan.metadata == "dict":
        # Parquet has no column of free-form dicts that reads back as dicts everywhere.
        plan = dataclasses.replace(plan, metadata="json")
    with connect(client, api_key, base_url) as active:
        return _write_dataset(
            active,
            plan,
            target,
            partition_keys=partition_keys,
            batch_size=batch_size,
            overwrite=overwrite,
        )


def _write_dataset(
    client: Client,
    plan: Plan,
    target: Path,
    *,
    partition_keys: tuple[str, ...],
    batch_size: int,
    overwrite: bool,
) -> ExportResult:
    """Stream the checked query's batches into a new dataset and put it at `target`."""
    endpoint, builder_options = plan.endpoint, plan.builder_options
    run_id = uuid.uuid4().hex
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.tmp-{run_id}")
    lock = None
    try:
        _remove_stale(target)
        lock = _hold_run_lock(target, run_id)
        temporary.mkdir()
        writer = _DatasetWriter(temporary, partition_keys, run_id)
        written = 0
        warned: set[tuple[type[Warning], str]] = set()
        with _progress_bar(plan.progress, f"impactframe export {endpoint}") as bar:
            pages = iter_record_pages(
                client,
                endpoint,
                plan.query,
                max_records=plan.max_records,
                concurrency=plan.concurrency,
                on_page=bar.update if bar is not None else None,
            )
            frames = _batches(
                pages,
                lambda: FrameBuilder(endpoint, **builder_options),
                functools.partial(_finish_batch, warned=warned),
                batch_size,
            )
            for number, frame in enumerate(frames):
                writer.write_batch(frame, number)
                written += len(frame)
                del frame  # the next batch is built without this one in memory
        empty = FrameBuilder(endpoint, **builder_options).finish()
        metadata_columns = plan.metadata_prefix if plan.metadata == "columns" else None
        schema = writer.finish(empty, metadata_columns)
        _place(temporary, target, overwrite, run_id)
    except BaseException:
        # Interrupted or failed: nothing half-written may stay behind or look finished.
        _remove_tree(temporary)
        raise
    finally:
        _release_run_lock(target, run_id, lock)

    columns = (*schema.names, *(k for k in partition_keys if k not in schema.names))
    result = ExportResult(
        path=target,
        records=written,
        files=len(writer.files),
        partitions=writer.partitions,
        columns=tuple(columns),
    )
    logger.info("exported %s", result)
    return result
