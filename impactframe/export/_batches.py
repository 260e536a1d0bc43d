"""Pages into batches for the export: one `FrameBuilder` per batch, no repeats across batches.

Each batch is validated by its own builder, which only sees that batch. A record repeated
across a page boundary that is also a batch boundary is dropped here, and a warning the
loader gives once per query is given once per export, not once per batch.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable, Iterable, Iterator

import pandas as pd

from .._frame._reference import FrameBuilder
from ..errors import DuplicateRecordWarning

logger = logging.getLogger("impactframe")


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
