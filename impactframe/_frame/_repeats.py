"""Repeated records: which to drop, and the warning about keys with different content.

The API can repeat a record across a page boundary. A record with the same
``(user_id, time_utc)`` and identical content as one already taken is dropped; records that
share a key but differ are all kept, and `warn_conflicts` says so once per frame. Both frame
builders use these rules (the fast one on its own chunk columns).
"""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import DuplicateRecordWarning
from ._columns import _Columns

__all__ = ["Repeats", "warn_conflicts"]


def _strict_equal(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart (for 'identical content').

    Examples
    --------
    >>> _strict_equal({"a": [1]}, {"a": [1]}), _strict_equal(1, True), _strict_equal(1, 1.0)
    (True, False, False)
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_strict_equal, a, b))
    return bool(a == b)


def warn_conflicts(
    records_key: str, conflicts: dict[tuple[str, int], int], stacklevel: int
) -> None:
    """Warn once about the keys kept with different content (``conflicts``: key -> records).

    ``stacklevel`` is the one the caller would give `warnings.warn` itself.
    """
    if conflicts:
        msg = (
            f"{records_key}: {len(conflicts)} (user_id, time_utc) key(s) occur in records "
            f"with different content; all {sum(conflicts.values())} of those records were kept"
        )
        warnings.warn(msg, DuplicateRecordWarning, stacklevel=stacklevel + 1)


class Repeats:
    """The reference builder's record of the keys it took, to find repeats in the next pages.

    Only rows whose key hash was seen before are compared, so a page of new keys costs one
    hash per record.

    Examples
    --------
    >>> taken, page = _Columns(False, "drop"), _Columns(False, "drop")
    >>> page.user_id += ["U1", "U1"]; page.impact.extend([0, 0]); page.amount.extend([2, 2])
    >>> page.category += [None, None]
    >>> Repeats().keep(taken, page, [5, 5])  # the second record repeats the first
    [0]
    """

    def __init__(self) -> None:
        # hash of (user_id, ms) -> first row; later rows with that hash
        self._seen: dict[int, int] = {}
        self._more: dict[int, list[int]] = {}
        self.conflicts: dict[tuple[str, int], int] = {}  # key -> records kept with that key

    def keep(self, taken: _Columns, page: _Columns, times: list[int]) -> list[int] | None:
        """The rows of ``page`` that repeat no row taken before, or None for all of them.

        ``taken`` holds the rows taken so far; the rows kept are taken next (in order).
        """
        base, n = len(taken), len(page)
        seen = self._seen
        digests = list(map(hash, zip(page.user_id, times, strict=True)))
        if seen.keys().isdisjoint(digests) and len(set(digests)) == n:  # the usual page
            seen.update(zip(digests, range(base, base + n), strict=True))
            return None
        keep: list[int] = []
        for j, digest in enumerate(digests):
            row = base + len(keep)
            first = seen.setdefault(digest, row)
            key = (page.user_id[j], times[j])
            if first == row or not self._is_repeat(taken, digest, first, key, j, page, times, keep):
                keep.append(j)
        return keep

    def _is_repeat(
        self,
        taken: _Columns,
        digest: int,
        first: int,
        key: tuple[str, int],
        j: int,
        page: _Columns,
        times: list[int],
        keep: list[int],
    ) -> bool:
        """Whether page record ``j`` is identical to a row taken before (it is then dropped).

        Rows below ``len(taken)`` are taken already; the others are this page's kept ones.
        """
        base = len(taken)
        content = page.content(j)
        others = self._more.setdefault(digest, [])
        same_key = 0
        for r in (first, *others):
            if r < base:
                source, i, ms = taken, r, taken.time[r]
            else:
                source, i = page, keep[r - base]
                ms = times[i]
            if (source.user_id[i], ms) == key:
                if _strict_equal(source.content(i), content):
                    return True
                same_key += 1
        others.append(base + len(keep))
        if same_key:
            self.conflicts[key] = same_key + 1
        return False
