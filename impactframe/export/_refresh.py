"""``export_parquet(path, ..., refresh=True)``: bring an exported dataset up to date (SPEC §7).

The refresh asks the API only from the dataset's newest UTC day on (clamped to today, as the
cache's refresh is: one record dated in the future must not blind every later refresh) and
replaces that day whole, as `impactframe._cache._refresh.merge` does: old rows of that day or
later are dropped, the fresh records of those days take their place. The old rows and the
fresh ones cover disjoint days, so no repeat crosses the boundary.

The new dataset is built beside the old one, in the export's temporary folder, and swapped in
by `_place` (atomic: a reader sees the old dataset or the new one):

- a partition folder the refresh touches (one holding rows of the first refreshed day or
  later, or receiving fresh rows) is written anew: the fresh batches, and the old files' rows
  before that day, one old file at a time (memory stays bounded by one file);
- every other file is hard-linked (copied where links fail) under its own name, so an
  untouched partition keeps its files, inodes and mtimes; `_DatasetWriter.finish` rewrites a
  linked file, under a new inode, only if fresh rows brought columns it lacks.

Within a touched folder the rows are put in the query's order (``asc``: the old rows first;
``desc``: the fresh ones first) and cut into files of ``batch_records`` rows whose names sort
in that order (`_repack`), so the layout depends on the rows only: a second refresh without
new records writes the same files. A column that only the replaced rows had values in goes
with them (`_drop_vanished`), as a full export would not have it. Without partitions
(``partition_by=None``) the one folder is always touched: every file is rewritten, one at a
time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._constants import ENDPOINTS
from .._frame._builder import FrameBuilder
from .._frame._drift import Findings
from .._prepare import Plan
from .._warn import warn_all
from ..client._client import Client
from ._batches import stream_frames
from ._place import (
    MARKER,
    _hold_run_lock,
    _place,
    _release_run_lock,
    _remove_stale,
    _remove_tree,
    is_our_dataset,
)
from ._write import _DatasetWriter, concat_unified

__all__ = [
    "COMPARED",
    "RefreshBase",
    "existing_dataset",
    "refresh_base",
    "refresh_dataset",
]

logger = logging.getLogger("impactframe")

#: What the marker records about the export that a refresh must repeat exactly.
COMPARED = ("endpoint", "query", "max_records", "metadata", "metadata_prefix", "partition_by")


@dataclasses.dataclass(frozen=True)
class RefreshBase:
    """The dataset a refresh starts from: its marker, its files, its first day to refetch."""

    marker: dict[str, Any]
    files: list[str]
    since: dt.date | None  # None: no rows (a full export rebuilds it)
    newest: dict[str, pd.Timestamp | None]  # each file's newest time_utc


def _jsonable(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


def existing_dataset(path: object, description: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of the impactframe dataset at `path`, or ``None`` when there is none yet.

    `description` is what this call's marker would say (endpoint, query, partitioning,
    metadata options). Raises `ValueError` naming ``refresh`` when `path` holds something
    else than an impactframe dataset, or one exported with other options.
    """
    if not isinstance(path, str | os.PathLike) or str(path) == "":
        return None  # check_target words the error
    target = Path(path).expanduser().absolute()
    shown = repr(str(path))
    if not target.exists() and not target.is_symlink():
        return None
    if target.is_symlink() or not target.is_dir():
        msg = f"refresh: {shown} is not an impactframe dataset (not a folder); nothing was changed"
        raise ValueError(msg)
    if not any(target.iterdir()):
        return None  # an empty folder: no dataset yet
    if not is_our_dataset(target):
        msg = (
            f"refresh: {shown} is not a dataset impactframe wrote (no marker, or files the "
            f"marker does not list); refresh "
            f"only updates a folder marked with {MARKER} and holding only its files; nothing "
            "was changed"
        )
        raise ValueError(msg)
    marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
    wanted = _jsonable({key: description.get(key) for key in COMPARED})
    differ = [key for key in COMPARED if _jsonable(marker.get(key)) != wanted[key]]  # type: ignore[index]
    if differ:
        shown_differ = ", ".join(
            f"{key} {marker.get(key)!r} (this call: {wanted[key]!r})"  # type: ignore[index]
            for key in differ
        )
        msg = (
            f"refresh: the dataset at {shown} was exported with other options: {shown_differ}; "
            "refresh with the same endpoint, query, partition_by and metadata options, or "
            "export afresh with overwrite=True"
        )
        raise ValueError(msg)
    return marker


def _newest(path: Path, metadata: pq.FileMetaData) -> pd.Timestamp | None:
    """The newest ``time_utc`` of one file: from its statistics, else from the column."""
    names = metadata.schema.to_arrow_schema().names
    if "time_utc" not in names:
        return None
    column = names.index("time_utc")
    newest: pd.Timestamp | None = None
    try:
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(column)
            stats = chunk.statistics
            if chunk.num_values == 0:
                continue
            if stats is None or not stats.has_min_max:
                raise LookupError
            value = _utc(stats.max)
            newest = value if newest is None or value > newest else newest
    except (LookupError, ValueError, TypeError):
        table = pq.ParquetFile(path).read(columns=["time_utc"])
        value = pc.max(table.column("time_utc")).as_py()
        return None if value is None else _utc(value)
    return newest


def _utc(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def refresh_base(target: Path, marker: dict[str, Any], today: dt.date | None = None) -> RefreshBase:
    """The files of the dataset at `target` and the first UTC day a refresh asks for."""
    files = sorted(marker["files"])
    each = {f: _newest(target / f, pq.read_metadata(target / f)) for f in files}
    known = [value for value in each.values() if value is not None]
    if not known:
        return RefreshBase(marker, files, None, each)
    since = min(max(known).date(), today or dt.datetime.now(dt.UTC).date())
    return RefreshBase(marker, files, since, each)


def _folder(relpath: str) -> str:
    return relpath.rpartition("/")[0]


def _link(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:  # a file system without hard links
        shutil.copy2(source, destination)


def _before(table: pa.Table, bound: pd.Timestamp) -> pa.Table:
    """The rows of `table` dated before `bound` (the old rows a refresh keeps)."""
    times = table.column("time_utc")
    limit = pa.scalar(bound.to_pydatetime(), type=times.type)
    return table.filter(pc.less(times, limit))


def _repack(
    writer: _DatasetWriter,
    folder: str,
    rows_per_file: int,
    run_id: str,
    metadata_columns: str | None,
) -> None:
    """Cut a touched folder's rows, in name order, into files of `rows_per_file` rows.

    The layout then depends on the folder's rows only, not on where the fresh batches
    happened to end: refreshing again without new records gives the same files. Memory
    holds at most about two files' rows.
    """
    mine = sorted((f for f in writer.files if _folder(f.relpath) == folder), key=_name)
    writer.files[:] = [f for f in writer.files if _folder(f.relpath) != folder]
    root = writer.root / folder
    pending: list[pa.Table] = []
    held = 0
    cuts: list[Path] = []

    def cut(table: pa.Table) -> None:
        path = root / f"_repack-{len(cuts):05d}"
        pq.write_table(table, path)
        cuts.append(path)

    for file in mine:
        path = writer.root / file.relpath
        pending.append(pq.ParquetFile(path).read())
        path.unlink()
        held += pending[-1].num_rows
        while held >= rows_per_file:
            table = concat_unified(pending, metadata_columns)
            cut(table.slice(0, rows_per_file))
            pending = [table.slice(rows_per_file)]
            held = pending[0].num_rows
    if held:
        cut(concat_unified(pending, metadata_columns))
    del pending
    for number, path in enumerate(cuts):
        name = f"part-{number:05d}-{run_id}.parquet"
        path.rename(root / name)
        writer.adopt(f"{folder}/{name}" if folder else name)


def _drop_vanished(writer: _DatasetWriter, kept: set[str]) -> None:
    """Drop the columns that only the replaced rows had values in, as a full export has them.

    Old files carry every column of the old dataset (nulls where their rows had none); a
    column not in `kept` (the fresh batches' and the always-present ones) and null in every
    file now is one no remaining row has, so a full export would not have it.
    """
    alive: set[str] = set(kept)
    for file in writer.files:
        metadata = pq.read_metadata(writer.root / file.relpath)
        for index, name in enumerate(metadata.schema.to_arrow_schema().names):
            if name in alive:
                continue
            nulls = 0
            for group in range(metadata.num_row_groups):
                stats = metadata.row_group(group).column(index).statistics
                if stats is None or not stats.has_null_count:
                    nulls = -1
                    break
                nulls += stats.null_count
            if nulls != metadata.num_rows:
                alive.add(name)
    for file in writer.files:
        dead = [name for name in file.schema.names if name not in alive]
        if not dead:
            continue
        path = writer.root / file.relpath
        table = pq.ParquetFile(path).read().drop_columns(dead)
        temporary = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, path)  # a new inode: a linked old file stays as it was
        file.schema = table.schema
        del table


def _name(file: Any) -> str:
    return str(file.relpath).rpartition("/")[2]


def refresh_dataset(
    client: Client,
    plan: Plan,
    target: Path,
    base: RefreshBase,
    *,
    partition_keys: tuple[str, ...],
    batch_size: int,
    description: dict[str, Any],
) -> tuple[_DatasetWriter, pa.Schema, int]:
    """Build the refreshed dataset beside `target` and swap it in; the writer, schema, rows.

    `base.since` must be a day (a dataset without rows is exported afresh instead).
    """
    assert base.since is not None
    query = plan.query
    start = max(base.since, query.start_date) if query.start_date else base.since
    bound = pd.Timestamp(start, tz="UTC")
    ascending = query.sort_order == "asc"
    run_id = uuid.uuid4().hex
    temporary = target.with_name(f"{target.name}.tmp-{run_id}")
    marker = {**description, "created": base.marker.get("created", description.get("created"))}
    marker["refreshed"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    lock = None
    try:
        _remove_stale(target)
        lock = _hold_run_lock(target, run_id)
        temporary.mkdir()
        writer = _DatasetWriter(temporary, partition_keys, run_id, marker)
        # Old files that hold rows of the refreshed days: their folders are rewritten.
        touched = set()
        for relpath in base.files:
            newest = base.newest[relpath]
            if newest is None or newest >= bound:
                touched.add(_folder(relpath))
        # The fresh rows first: numbered after every old file when ascending, before when not.
        found = Findings(ENDPOINTS[plan.endpoint][1])
        offset = len(base.files) if ascending else 0
        fresh_query = dataclasses.replace(query, start_date=start)
        records = batches = 0
        for number, frame in enumerate(stream_frames(client, plan, fresh_query, found, batch_size)):
            writer.write_batch(frame, offset + number)
            records += len(frame)
            batches = number + 1
            del frame
        warn_all(found.messages())  # once per refresh, at the user's line
        fresh_columns = {name for file in writer.files for name in file.schema.names}
        touched |= {_folder(file.relpath) for file in writer.files}
        first_old = 0 if ascending else batches
        for index, relpath in enumerate(base.files):
            if _folder(relpath) not in touched:
                _link(target / relpath, temporary / relpath)
                writer.adopt(relpath)
                records += pq.read_metadata(temporary / relpath).num_rows
                continue
            kept = _before(pq.ParquetFile(target / relpath).read(), bound)
            if kept.num_rows:
                name = f"part-{first_old + index:05d}-{run_id}.parquet"
                folder = _folder(relpath)
                writer.add_table(kept, f"{folder}/{name}" if folder else name)
                records += kept.num_rows
            del kept
        metadata_columns = plan.metadata_prefix if plan.metadata == "columns" else None
        for folder in sorted(touched):
            _repack(writer, folder, batch_size, run_id, metadata_columns)
        empty = FrameBuilder(plan.endpoint, **plan.builder_options).finish()
        _drop_vanished(writer, fresh_columns | set(empty.columns))
        schema = writer.finish(empty, metadata_columns)
        _place(temporary, target, True, run_id)
    except BaseException:
        _remove_tree(temporary)  # the old dataset was only read: it stays whole
        raise
    finally:
        _release_run_lock(target, run_id, lock)
    logger.info("refreshed %s from %s: %d partitions rewritten", target, start, len(touched))
    return writer, schema, records
