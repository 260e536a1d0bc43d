"""The short hostile-server soak (``python -m benchmarks.soak --hostile`` runs the whole one).

One attack of each family, each in a fresh child process with a time limit and a memory
measurement: a clear impactframe error or the exact truth, in bounded time and memory.
"""

from __future__ import annotations

import pytest

from benchmarks import hostile

pytestmark = pytest.mark.timeout(180)


def test_hostile_servers_end_in_a_clear_error_or_the_truth() -> None:
    results = hostile.hostile(quick=True)
    assert [r.failure for r in results if not r.ok] == []
    outcomes = {(r.attack, r.entry): r.outcome for r in results}
    assert outcomes == {
        ("wrong order, asc asked", "load auto"): "truth",
        ("wrong order", "load c=1"): "ValidationError",
        ("wrong order", "load auto"): "ValidationError",
        ("same records, new cursors", "load c=1"): "PaginationError",
        ("names given twice", "load c=1"): "ValidationError",
        ("gzip bomb (1 MB -> 1 GiB)", "load c=1"): "TransportError",
        ("key-echoing error body", "load c=1"): "APIError",
    }
    for result in results:
        assert result.seconds < hostile.LIMIT
    bomb = next(r for r in results if r.attack.startswith("gzip bomb"))
    assert "larger than max_body_bytes" in bomb.detail
    assert bomb.peak_mb < hostile.BODY_MB  # 1 GiB inflated, stopped at the 256 MiB cap
    echoed = next(r for r in results if r.attack == "key-echoing error body")
    assert hostile.KEY not in echoed.detail
    assert "***" in echoed.detail
