"""The one repeat rule (SPEC §3), on the builder's chunks, and on frames for the cache merge.

Two records repeat each other when they share the key ``(user_id, time_utc)`` (milliseconds)
and their content as sent (`Chunk.content`):

- a record that repeats the end of the previous page at the start of the next one (right
  after a cursor: the API does that) is dropped quietly (a DEBUG log);
- an identical record anywhere else (inside a page, pages apart) is dropped too, and counted
  for the one `DuplicateRecordWarning` of the load (`Findings`);
- records that share a key but differ are all kept, and warned about once.

Only rows whose timestamp occurs more than once are compared, so a page of new keys costs a
few numpy calls. The export continues the rule across its batches with `Repeats.handoff`.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_right
from typing import Any, Final

import numpy as np
import pandas as pd

from ._batch import NO_ROWS, Chunk

__all__ = ["Repeats", "duplicated"]

logger = logging.getLogger("impactframe.frame")

#: How many repeated records the warning names.
EXAMPLES: Final = 3


def _repeated(times: np.ndarray) -> np.ndarray:
    """The values that occur more than once in ``times`` (sorted; fast for sorted input)."""
    if len(times) < 2:
        return NO_ROWS
    step = np.diff(times)
    if (step > 0).all() or (step < 0).all():
        return NO_ROWS
    if not ((step >= 0).all() or (step <= 0).all()):
        times = np.sort(times)
        step = np.diff(times)
    return np.unique(times[1:][step == 0])


class Repeats:
    """The repeat state of one builder: page starts, conflicts and the repeats dropped.

    Examples
    --------
    >>> from impactframe._frame._python_reader import PageChecker
    >>> record = {"user_id": "U1", "time_utc": "2024-09-16T20:30:13.391Z", "tree_planted": 2}
    >>> chunk = PageChecker("records", "drop").read([record, record], 0)
    >>> chunk.position = np.arange(2)
    >>> rule = Repeats()
    >>> rule.page(0)
    >>> rule.keep(chunk, []).tolist(), rule.dropped, rule.examples
    ([True, False], 1, [('U1', 1726518613391)])
    """

    def __init__(self, tail: Chunk | None = None) -> None:
        self.tail = tail  # the previous batch's last page (positions < 0), see `handoff`
        self.starts: list[int] = []  # position of the first record of each page
        self.conflicts: dict[tuple[str, int], int] = {}  # key -> records kept with it
        self.dropped = 0  # identical records dropped that are not a page-boundary repeat
        self.quiet = 0  # page-boundary repeats dropped
        self.examples: list[tuple[str, int]] = []

    def page(self, position: int) -> None:
        """A page starts at record ``position`` (in the order added)."""
        self.starts.append(position)

    def _page_of(self, position: int) -> int:
        return bisect_right(self.starts, position) - 1

    def keep(self, chunk: Chunk, taken: list[Chunk]) -> np.ndarray | None:
        """Which rows of ``chunk`` to keep (None: all), given the chunks ``taken`` before."""
        if not len(chunk):
            return None
        earlier = [c for c in taken if c.low <= chunk.high and c.high >= chunk.low]
        if self.tail is not None and self.tail.low <= chunk.high and self.tail.high >= chunk.low:
            earlier.append(self.tail)
        repeated = _repeated(chunk.time)
        if earlier:
            shared = np.intersect1d(np.concatenate([c.time for c in earlier]), chunk.time)
            repeated = np.union1d(repeated, shared)
        if not repeated.size:
            return None
        return self._unique_rows(chunk, repeated, earlier)

    def _unique_rows(
        self, chunk: Chunk, repeated: np.ndarray, earlier: list[Chunk]
    ) -> np.ndarray | None:
        # (key -> [(content, position)]) of the rows taken that share a timestamp
        seen: dict[tuple[str, int], list[tuple[Any, int]]] = {}
        for c in earlier:
            for r in np.flatnonzero(np.isin(c.time, repeated)).tolist():
                seen.setdefault(c.key(r), []).append((c.content(r), int(c.position[r])))
        keep = np.ones(len(chunk), dtype=bool)
        quiet = -2  # position of the last record dropped as a page-boundary repeat
        for r in np.flatnonzero(np.isin(chunk.time, repeated)).tolist():
            key, content, position = chunk.key(r), chunk.content(r), int(chunk.position[r])
            page = self._page_of(position)
            same = seen.setdefault(key, [])
            match = next((p for other, p in same if other == content), None)
            if match is None:
                same.append((content, position))
                if len(same) > 1:
                    self.conflicts[key] = len(same)
                continue
            keep[r] = False
            # the start of a page, or right after such a repeat: repeats the previous page?
            at_start = page >= 0 and position in (self.starts[page], quiet + 1)
            if at_start and self._page_of(match) == page - 1:
                quiet = position
                self.quiet += 1
                continue
            self.dropped += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(key)
        if self.quiet:
            logger.debug("dropped %d records repeated right after a cursor", self.quiet)
        return None if keep.all() else keep

    def handoff(self, taken: list[Chunk]) -> Repeats:
        """The rule for the next batch's builder: it knows this batch's last page."""
        start = self.starts[-1] if self.starts else 0
        parts = [c.filter(c.position >= start) for c in taken if len(c) and c.position[-1] >= start]
        if not parts:
            return Repeats()
        tail = Chunk.concat(parts) if len(parts) > 1 else parts[0]
        tail.position = tail.position - int(tail.position.max()) - 1  # before the next page 0
        return Repeats(tail)


def duplicated(frame: pd.DataFrame) -> np.ndarray:
    """Rows of a frame identical (every column) to an earlier one with the same key: the rule
    for frames (the cache refresh merges two of them), where the content is the columns.

    Examples
    --------
    >>> df = pd.DataFrame({"user_id": ["U1", "U1"], "time_utc": [1, 1], "amount": [2, 2]})
    >>> duplicated(df).tolist()
    [False, True]
    """
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
