"""Streaming export of a whole history into a hive-partitioned Parquet dataset (SPEC §7).

Pages are gathered into batches of about ``batch_records`` records; each batch goes through a
`FrameBuilder` of its own (the loaders' builder: same checks, validation and dtypes; the repeat
rule continued from one batch to the next), becomes an Arrow table and is written as new
files, one per partition (``year=2024/month=09/part-00003-<run>.parquet``). Memory is bounded by
one batch, never by the history.

This module checks the arguments and runs the stream; its steps live beside it:
`_export_batches` (pages into batches, no record repeated across a batch boundary),
`_export_write` (the files, rewritten to one schema at the end, and the ``_metadata`` sidecars)
and `_export_swap` (the temporary folder, its atomic swap into place, and the clean-up after
runs that were killed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._constants import DEFAULTS, ENDPOINTS
from .._frame._builder import FrameBuilder
from .._frame._drift import Findings
from .._fs import folder_lock
from .._paging._concurrent import Concurrency
from .._params import check_choice
from .._prepare import DateLike, Plan, connect, prepare
from .._warn import warn_all
from ..client._client import Client
from ._batches import stream_frames
from ._place import (
    _hold_run_lock,
    _place,
    _release_run_lock,
    _remove_stale,
    _remove_tree,
    check_target,
)
from ._refresh import existing_dataset, refresh_base, refresh_dataset
from ._write import _DatasetWriter

__all__ = ["PARTITION_KEYS", "ExportResult", "export_parquet"]

logger = logging.getLogger("impactframe")

#: Columns a dataset can be partitioned by, as hive folders (``year=2024/month=09``).
PARTITION_KEYS = ("year", "month", "day", "impact_type")


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

    Examples
    --------
    >>> from pathlib import Path
    >>> result = ExportResult(Path("/data/records"), records=1200, files=3, partitions=2,
    ...                       columns=("user_id", "year"))
    >>> print(result)
    1,200 records -> /data/records (3 files, 2 partitions, 2 columns)
    """

    path: Path
    records: int
    files: int
    partitions: int
    columns: tuple[str, ...]

    def __str__(self) -> str:
        counts = ", ".join(
            _plural(n, word) for n, word in ((self.files, "file"), (self.partitions, "partition"))
        )
        return (
            f"{_plural(self.records, 'record')} -> {self.path} "
            f"({counts}, {_plural(len(self.columns), 'column')})"
        )


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


# -- argument checks (all before any request) ---------------------------------------------------


def _check_endpoint(endpoint: object) -> str:
    # The CLI's spelling stays accepted, but the message lists only the canonical names.
    if isinstance(endpoint, str) and endpoint == "customer-records":
        return "customer_records"
    return check_choice(endpoint, "endpoint", ENDPOINTS)


def _check_partition_by(partition_by: object) -> tuple[str, ...]:
    accepted = (
        f"expected one name or an ordered tuple of distinct names from {PARTITION_KEYS} "
        "(None or () for no partitions)"
    )
    if partition_by is None:
        return ()
    if isinstance(partition_by, str):
        partition_by = (partition_by,)  # as the CLI's --partition-by year
    if not isinstance(partition_by, Iterable):
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


def _description(plan: Plan) -> dict[str, Any]:
    """What the dataset's marker records about the export (no key, no host)."""
    return {
        "endpoint": plan.endpoint,
        "query": plan.query.to_json(),
        "max_records": plan.max_records,
        "metadata": plan.metadata,
        "metadata_prefix": plan.metadata_prefix,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# -- the public function ------------------------------------------------------------------------


def export_parquet(
    path: str | os.PathLike[str],
    endpoint: str = "records",
    *,
    partition_by: Iterable[str] = ("year", "month"),
    customer_email: str | None = DEFAULTS["customer_email"],
    filter_by: str | Iterable[str] | None = DEFAULTS["filter_by"],
    start_date: DateLike | None = DEFAULTS["start_date"],
    end_date: DateLike | None = DEFAULTS["end_date"],
    sort_order: str = DEFAULTS["sort_order"],
    page_size: int = DEFAULTS["page_size"],
    max_records: int | None = DEFAULTS["max_records"],
    metadata: str = DEFAULTS["metadata"],
    metadata_prefix: str = DEFAULTS["metadata_prefix"],
    concurrency: Concurrency = DEFAULTS["concurrency"],
    progress: bool | None = DEFAULTS["progress"],
    batch_records: int = 50_000,
    overwrite: bool = False,
    refresh: bool = False,
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
        The dataset folder to create. Missing parent folders are created. Never the
        working folder, the home folder or a filesystem root (or a folder holding them).
    endpoint : {"records", "customer_records"}
        Which endpoint (``"customer-records"`` is accepted as the CLI's spelling).
    partition_by : str, tuple of str or None
        Hive partition columns, in folder order, from ``"year"``, ``"month"``, ``"day"``
        (UTC, from ``time_utc``) and ``"impact_type"``; one name (``"year"``) is one
        column; ``None`` or ``()`` writes unpartitioned files. Partition columns live in
        folder names (``year=2024/month=09``, months and days zero-padded), not in the files.
    customer_email : str, optional
        Only this customer's records (``customer_records`` only).
    filter_by, start_date, end_date, sort_order, page_size, max_records
        The query, exactly as for `load_records`.
    metadata : {"columns", "dict", "json", "drop"}
        As for `load_records`, except that ``"dict"`` is written like ``"json"``: one
        ``metadata`` column of JSON text, which every Parquet reader can hold.
    metadata_prefix : str
        Prefix of the metadata columns in ``"columns"`` mode.
    concurrency : "auto" or int
        Cursor chains walked at once over disjoint date windows; the rows are the same
        (``"auto"``: up to 8, fewer while the API answers 429; ``1``: one chain).
    progress : bool, optional
        A progress bar of records fetched; ``None`` shows it in notebooks and terminals.
    batch_records : int
        Records gathered before a batch is validated and written; it bounds the memory used.
    overwrite : bool
        Replace an existing dataset at `path` (atomically, once the new one is complete).
        Only a dataset impactframe wrote is replaced: one marked with ``_impactframe.json``
        and holding nothing but the files that marker lists (or an empty folder).
    refresh : bool
        Bring the dataset at `path` up to date instead of exporting it afresh: ask the API
        only from the dataset's newest UTC day on (never after today), rewrite the partition
        folders holding that day or later, add new ones, keep the others' files (hard
        links), then swap atomically. The result reads as a full export of the same query.
        The dataset must have been exported with the same endpoint, query, `max_records`,
        `partition_by` and metadata options (else a `ValueError` naming ``refresh``); no
        dataset yet (or an empty folder) is a full export; with `max_records` it is rebuilt
        whole. Records changed or added before the newest day are not seen.
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
        A bad argument, or `path` exists and `overwrite` is false (or it is not a dataset
        impactframe wrote, or a protected folder), or its parent is a file or not writable;
        before any request is sent, and nothing is deleted.
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
    written beside the files. ``impact_type`` is a dictionary-encoded string column. The
    marker ``_impactframe.json`` (package version, endpoint, query, partitioning, the files)
    is written last; readers skip files whose names start with ``_``.

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
    # Every argument is checked before a client (and so any connection) exists.
    checked_endpoint = _check_endpoint(endpoint)
    plan = prepare(
        checked_endpoint,
        customer_email=customer_email,
        filter_by=filter_by,
        start_date=start_date,
        end_date=end_date,
        sort_order=sort_order,
        page_size=page_size,
        max_records=max_records,
        metadata=metadata,
        metadata_prefix=metadata_prefix,
        concurrency=concurrency,
        progress=progress,
    )
    return _export(
        plan,
        path,
        partition_by=partition_by,
        batch_records=batch_records,
        overwrite=overwrite,
        refresh=refresh,
        client=client,
        api_key=api_key,
        base_url=base_url,
    )


def _export(
    plan: Plan,
    path: str | os.PathLike[str],
    *,
    partition_by: Iterable[str],
    batch_records: int,
    overwrite: bool,
    refresh: bool,
    client: Client | None,
    api_key: str | None,
    base_url: str | None,
) -> ExportResult:
    partition_keys = _check_partition_by(partition_by)
    batch_size = _check_batch_records(batch_records)
    if not isinstance(refresh, bool):
        msg = f"refresh: {refresh!r} is not accepted; expected True or False"
        raise ValueError(msg)
    if plan.metadata == "dict":
        # Parquet has no column of free-form dicts that reads back as dicts everywhere.
        plan = dataclasses.replace(plan, metadata="json")
    description = {"partition_by": list(partition_keys), **_description(plan)}
    marker = existing_dataset(path, description) if refresh else None
    target = check_target(path, overwrite or refresh)  # refresh replaces what it checked
    # the dataset folder itself, so a second refresh waits, then refreshes the first's result
    held = folder_lock(target) if marker is not None else contextlib.nullcontext()
    with held, connect(client, api_key, base_url) as active:
        if marker is not None:  # read again under the lock: a refresh may have just ended
            marker = existing_dataset(target, description)
        base = None if marker is None else refresh_base(target, marker)
        if base is not None and base.since is not None and plan.max_records is None:
            writer, schema, written = refresh_dataset(
                active,
                plan,
                target,
                base,
                partition_keys=partition_keys,
                batch_size=batch_size,
                description=description,
            )
            return _result(target, writer, schema, written, partition_keys)
        # No dataset yet, one without rows, or a capped query (whose first rows a refresh
        # cannot tell): a full export, replacing the old dataset as overwrite does.
        return _write_dataset(
            active,
            plan,
            target,
            partition_keys=partition_keys,
            batch_size=batch_size,
            overwrite=overwrite or refresh,
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
        writer = _DatasetWriter(temporary, partition_keys, run_id, _description(plan))
        written = 0
        found = Findings(ENDPOINTS[endpoint][1])
        for number, frame in enumerate(stream_frames(client, plan, plan.query, found, batch_size)):
            writer.write_batch(frame, number)
            written += len(frame)
            del frame  # the next batch is built without this one in memory
        warn_all(found.messages())  # once per export, at the user's line
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

    return _result(target, writer, schema, written, partition_keys)


def _result(
    target: Path,
    writer: _DatasetWriter,
    schema: Any,
    written: int,
    partition_keys: tuple[str, ...],
) -> ExportResult:
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
