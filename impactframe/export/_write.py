"""Writing an export's batches as Parquet files, and unifying their columns at the end.

Each batch becomes new files, one per partition (``year=2024/month=09/part-00003-<run>.parquet``),
with the batch's own columns. Batches may see different metadata keys, so files may start with
different columns. When the stream ends every file whose columns differ from the union is
rewritten to the union (one file at a time, null columns added), then ``_common_metadata`` and
``_metadata`` are written. Readers that take the schema of the first file they open
(pyarrow.dataset, pandas, Dask, Spark without ``mergeSchema``) would otherwise miss columns, and
the sidecar files alone do not fix that. Last, the marker ``_impactframe.json`` (see `_place`)
lists every file written, so that only this dataset can later be replaced.

Month and day folders are zero-padded (``month=09``): readers that sort partition values as
text (pandas' categories, a directory listing) then keep calendar order, and those that infer
types (pyarrow, pandas, Dask) still read integers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._fs import atomic_output
from ._place import write_marker

__all__ = ["concat_unified"]

logger = logging.getLogger("impactframe")

_COMMON_METADATA = "_common_metadata"
_METADATA = "_metadata"
#: impact_type as a dictionary column with the same index and value types in every file, so
#: that readers can concatenate files whose dictionaries differ (a new type in a later batch).
_IMPACT_TYPE_ARROW = pa.dictionary(pa.int32(), pa.large_string())


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


def _folder_value(key: str, value: object) -> str:
    """The text of a partition value in its folder name: month and day zero-padded."""
    if key in ("month", "day"):
        return f"{int(value):02d}"  # type: ignore[call-overload]
    return quote(str(value), safe="")


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


def concat_unified(tables: list[pa.Table], metadata_columns: str | None) -> pa.Table:
    """`tables` one after the other, under their unified schema (pandas metadata included).

    For a refresh's rewritten folders, whose files come from the old dataset and the new
    batches: every column keeps the pandas entry that restores its dtype.
    """
    schema = _unify([_File("", table.schema) for table in tables], metadata_columns)
    return pa.concat_tables([_conform(table, schema) for table in tables])


class _DatasetWriter:
    """Writes batches as new files under a root folder; unifies them at the end."""

    def __init__(
        self,
        root: Path,
        partition_by: tuple[str, ...],
        run_id: str,
        description: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.partition_by = partition_by
        self.run_id = run_id
        #: What the marker says besides the files: endpoint, query, partitioning.
        self.description = {"partition_by": list(partition_by), **(description or {})}
        self.files: list[_File] = []

    def _write(self, table: pa.Table, relpath: str) -> None:
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        self.files.append(_File(relpath, table.schema))

    def add_table(self, table: pa.Table, relpath: str) -> None:
        """Write `table` as the new file `relpath` (a refresh's kept rows of an old file)."""
        self._write(table, relpath)

    def adopt(self, relpath: str) -> None:
        """Count the file already at `relpath` (linked from an old dataset) as one of ours.

        `finish` rewrites it, under a new inode, only if its columns differ from the union.
        """
        self.files.append(_File(relpath, pq.read_schema(self.root / relpath)))

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
                f"{key}={_folder_value(key, value)}"
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
                with atomic_output(path) as temporary:
                    pq.write_table(table, temporary)
                del table
            metadata = pq.read_metadata(path)
            metadata.set_file_path(file.relpath)
            collected.append(metadata)
        pq.write_metadata(schema, self.root / _COMMON_METADATA)
        pq.write_metadata(schema, self.root / _METADATA, metadata_collector=collected)
        write_marker(self.root, self.description, (file.relpath for file in self.files))
        return schema

    @property
    def partitions(self) -> int:
        return len({file.relpath.rpartition("/")[0] for file in self.files})
