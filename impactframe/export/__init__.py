"""Streaming export of a whole history into a partitioned Parquet dataset (SPEC §7).

Public: ``impactframe.export.export_parquet``, `ExportResult` and `PARTITION_KEYS`, from
`_export`; `_batches` (pages into frame batches), `_write` (the files and the unified schema),
`_place` (the temporary folder, the atomic swap into place, the clean-up) and `_refresh`
(``refresh=True``: the touched partitions rebuilt beside the old dataset) do the work.
"""

from ._export import PARTITION_KEYS, ExportResult, export_parquet

__all__ = ["PARTITION_KEYS", "ExportResult", "export_parquet"]
