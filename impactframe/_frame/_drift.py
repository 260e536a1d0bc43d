"""What ``finish`` decides over all chunks: new impact types, drift columns, name clashes, and
the `Findings` the caller warns about (SPEC §3).

Decided over all records, so the frame does not depend on how they were split into pages or
batches. A record whose only impact field is unknown (its one unknown field that is a
non-negative integer) makes that field a new impact type; every other unknown field becomes a
drift column, typed here from the JSON text it was sent as. What is wrong raises `BadRow`,
which the builder turns into a ``ValidationError`` naming the record.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa

from .._constants import IMPACT_TYPES
from .._dtypes import FLOAT, INT, STRING
from ..errors import DuplicateRecordWarning, SchemaDriftWarning
from ._batch import Chunk
from ._python_reader import _INT64_MAX, _amount_problem, _format_ms

__all__ = ["BadRow", "Findings", "check_names", "classify", "drift_array", "first_row"]

_INT: Final = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_EXACT: Final = 2**53  # integers a float holds exactly


class BadRow(Exception):
    """Row ``row`` (over all chunks) cannot be taken; ``text`` follows the record's place."""

    def __init__(self, row: int, field: str, text: str):
        super().__init__(text)
        self.row = row
        self.field = field
        self.text = text


@dataclasses.dataclass
class Findings:
    """What a frame holds that its caller must be told about (one warning each, see
    `messages`); the export adds up the findings of its batches with `update`.

    Examples
    --------
    >>> found = Findings("user_records", drift=[("project", "string")])
    >>> found.messages()[0][0]
    "user_records: unknown field 'project' kept as a column of dtype string"
    """

    records_key: str
    new_types: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> records
    drift: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (column, dtype)
    conflicts: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    dropped: int = 0  # identical records dropped, not right after a cursor
    examples: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    def update(self, other: Findings) -> None:
        for name, n in other.new_types.items():
            self.new_types[name] = self.new_types.get(name, 0) + n
        self.drift += [pair for pair in other.drift if pair not in self.drift]
        for key, n in other.conflicts.items():
            self.conflicts[key] = self.conflicts.get(key, 0) + n
        self.dropped += other.dropped
        self.examples = (self.examples + other.examples)[:3]

    def messages(self) -> list[tuple[str, type[Warning]]]:
        """``(message, category)`` of each warning, in order."""
        key = self.records_key
        out: list[tuple[str, type[Warning]]] = [
            (
                f"{key}: unknown impact type {name!r} in {n} record(s), kept as a category of "
                f"impact_type and an Int64 column {name!r}",
                SchemaDriftWarning,
            )
            for name, n in self.new_types.items()
        ]
        out += [
            (f"{key}: unknown field {name!r} kept as a column of dtype {dtype}", SchemaDriftWarning)
            for name, dtype in self.drift
        ]
        if self.conflicts:
            msg = (
                f"{key}: {len(self.conflicts)} (user_id, time_utc) key(s) occur in records with "
                f"different content; all {sum(self.conflicts.values())} of those records were kept"
            )
            out.append((msg, DuplicateRecordWarning))
        if self.dropped:
            named = ", ".join(
                f"(user_id={u!r}, time_utc={_format_ms(ms)!r})" for u, ms in self.examples
            )
            msg = (
                f"{key}: {self.dropped} record(s) identical to an earlier one, not where the API "
                f"repeats the end of a page, were dropped: {named}"
                + (", ..." if self.dropped > len(self.examples) else "")
            )
            out.append((msg, DuplicateRecordWarning))
        return out


def _rows(chunks: list[Chunk], attr: str) -> Iterator[tuple[int, Chunk, str, np.ndarray]]:
    """``(offset, chunk, name, rows present)`` of each sparse column of ``attr``."""
    offset = 0
    for chunk in chunks:
        for name, column in getattr(chunk, attr).items():
            yield offset, chunk, name, np.flatnonzero(column.is_valid().to_numpy(False))
        offset += len(chunk)


def first_row(chunks: list[Chunk], attr: str) -> dict[str, int]:
    """Each name of a sparse column (``extra``, ``meta``...) and the first row that has it."""
    first: dict[str, int] = {}
    for offset, _, name, rows in _rows(chunks, attr):
        if rows.size and name not in first:
            first[name] = offset + int(rows[0])
    return first


def drift_array(texts: list[str | None]) -> tuple[pa.Array, Any]:
    """Arrow values and dtype of an unknown field from its JSON texts: string, Int64 (all
    integers, exact), Float64 (numbers a float holds exactly), else text (strings as they
    came, other values as their JSON text as sent: ``NaN`` or ``1e400`` are no floats).

    Examples
    --------
    >>> drift_array(["1", None, "2.5"])[1], drift_array(["1", '"a"', "[2]"])[0].to_pylist()
    (Float64Dtype(), ['1', 'a', '[2]'])
    >>> drift_array(["9007199254740993", "null"])[0].to_pylist()
    [9007199254740993, None]
    """
    values: list[Any] = [None if t is None or t == "null" else t for t in texts]
    present = [t for t in values if t is not None]
    if all(t[0] == '"' for t in present):
        return pa.array([None if t is None else json.loads(t) for t in values], pa.string()), STRING
    if all(_INT.fullmatch(t) and -_INT64_MAX - 1 <= int(t) <= _INT64_MAX for t in present):
        return pa.array([None if t is None else int(t) for t in values], pa.int64()), INT
    if all(_NUMBER.fullmatch(t) for t in present):
        floats = [None if t is None else float(t) for t in values]
        exact = all(
            math.isfinite(f) and (not _INT.fullmatch(t) or abs(int(t)) <= _EXACT)
            for t, f in zip(values, floats, strict=True)
            if t is not None and f is not None
        )
        if exact:
            return pa.array(floats, pa.float64()), FLOAT
    texts_out = [None if t is None else json.loads(t) if t[0] == '"' else t for t in values]
    return pa.array(texts_out, pa.string()), STRING


def classify(chunks: list[Chunk]) -> tuple[list[str], list[int], list[int], list[int]]:
    """The new impact types, and the row, category code and amount of each record with no
    known impact field. Raises `BadRow` for the first record with two impact fields or none."""
    orphans: list[tuple[int, dict[str, Any]]] = []  # (row, unknown fields decoded)
    offset = 0
    for chunk in chunks:
        for r in np.flatnonzero(chunk.impact < 0).tolist():
            extra = {k: json.loads(t) for k, c in chunk.extra.items() if (t := c[r].as_py())}
            orphans.append((offset + r, extra))
        offset += len(chunk)
    candidates = set()
    for _, extra in orphans:
        # The record's one unknown field that can be an amount is its impact; the others are
        # drift. Decided per record, so a record reads the same whatever else a query holds.
        amounts = [name for name, value in extra.items() if _amount_problem(value) is None]
        if len(amounts) == 1:
            candidates.add(amounts[0])
    new_types = [name for name in first_row(chunks, "extra") if name in candidates]
    code_of = {name: len(IMPACT_TYPES) + k for k, name in enumerate(new_types)}
    problems: list[tuple[int, str, str]] = []  # (row, field, reason)
    for offset, chunk, name, rows in _rows(chunks, "extra"):
        clash = rows[chunk.impact[rows] >= 0] if name in code_of else rows[:0]
        if clash.size:
            known = IMPACT_TYPES[chunk.impact[clash[0]]]
            reason = f"is a second impact field besides {known}; a record has exactly one"
            problems.append((offset + int(clash[0]), name, reason))
    rows_out, codes_out, amounts_out = [], [], []
    for row, extra in orphans:
        hits = [name for name in extra if name in code_of]
        problem = _amount_problem(extra[hits[0]]) if len(hits) == 1 else None
        if len(hits) == 1 and problem is None:
            rows_out.append(row)
            codes_out.append(code_of[hits[0]])
            amounts_out.append(extra[hits[0]])
        elif problem is not None:
            problems.append((row, hits[0], problem))
        elif hits:
            reason = f"is a second impact field besides {hits[0]}; a record has exactly one"
            problems.append((row, hits[1], reason))
        else:
            reason = (
                f"is missing: the record has none of the impact fields "
                f"{', '.join(IMPACT_TYPES)} nor a new one (unknown: {', '.join(extra)})"
            )
            problems.append((row, "impact_type", reason))
    if problems:
        row, field, reason = min(problems)
        raise BadRow(row, field, f"{field} {reason}")
    return new_types, rows_out, codes_out, amounts_out


def check_names(
    unknown: list[tuple[str, int]],
    meta_columns: dict[str, int],
    taken: set[str],
    prefix: str | None,
) -> None:
    """Column names must be unique: an unknown field may not replace another column.

    ``unknown`` and ``meta_columns`` map each new column's name to its first row; ``taken``
    names the fixed columns; ``prefix`` is the metadata prefix in ``"columns"`` mode (a drift
    field may not start with it), else None. Raises `BadRow`.
    """
    taken = set(taken)
    for name, row in unknown:
        reason = None
        if name in taken:
            reason = "would take the name of another column"
        elif prefix is not None and name.startswith(prefix):
            reason = f"starts with the metadata prefix {prefix!r}; pass another metadata_prefix"
        if reason:
            raise BadRow(row, name, f"unknown field {name!r} {reason}")
        taken.add(name)
    for name, row in meta_columns.items():
        if name in taken:
            key = name[len(prefix or "") :]
            text = (
                f"metadata key {key!r} would make the column {name!r}, which exists already; "
                "pass another metadata_prefix"
            )
            raise BadRow(row, "metadata", text)
