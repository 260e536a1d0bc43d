"""``python -m benchmarks.users``: speed as users meet it (issue "Fast where users feel it").

Every figure comes from fresh processes with the imports outside the clock and everything else
inside it: the first call of the process (pandera's schema build, lazy imports, the first
connection) included, default arguments, against the naive ``requests`` + ``json.loads`` +
``json_normalize`` loop measured in the same run. Medians of ``--runs`` runs, interleaved.

Rows: records/s, ratio to naive and peak B/record at several sizes (loopback); first call
minus second call in one process; export vs load; a 50 ms network; a rate-limited gateway
(40 and 5 requests/s at 50 ms) with the share of requests it refused.

Examples
--------
``python -m benchmarks.users`` (sizes 1k, 20k, 200k, 1M: several minutes),
``python -m benchmarks.users --sizes 1000 20000 --runs 3``,
``python -m benchmarks.users --quick``,
``python -m benchmarks.users --output benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.__main__ import ROOT, _env, _replace_file, machine, measure

SIZES = (1_000, 20_000, 200_000, 1_000_000)
GOALS = {1_000: None, 20_000: 3.0, 200_000: 6.0, 1_000_000: 6.0}  # ratio to naive
LATENCY = 0.05
SECTION = "## As users meet it"


@contextmanager
def serve(n: int, latency: float = 0.0, rate: float = 0.0) -> Iterator[dict[str, Any]]:
    """A sandbox process; yields ``{"url", "key"}``, then (after the block) its answer counts
    under ``"stats"``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._serve", str(n), str(latency), str(rate)],
        cwd=ROOT, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdin is not None  # PIPE
    assert process.stdout is not None  # PIPE
    info: dict[str, Any] = {}
    try:
        info["url"], info["key"] = process.stdout.readline().split()
        yield info
    finally:
        process.stdin.close()
        tail = process.stdout.read().strip().splitlines()
        process.wait(timeout=60)
        info["stats"] = json.loads(tail[-1]) if tail else {}


def _median(rows: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(r[field] for r in rows))


def _rate(rows: list[dict[str, Any]]) -> float:
    return float(statistics.median(r["rows"] / r["seconds"] for r in rows))


def sizes_rows(sizes: list[int], runs: int) -> tuple[list[str], dict[int, list[dict[str, Any]]]]:
    lines = [
        "| records | impactframe records/s | naive records/s | ratio | goal | "
        "peak B/record (impactframe; naive) | first − second call |",
        "|---:|---:|---:|---:|---|---:|---:|",
    ]
    users: dict[int, list[dict[str, Any]]] = {}
    for n in sizes:
        with serve(n) as server:
            ours, naive = [], []
            for _ in range(runs):
                ours.append(measure("user", server["url"], server["key"]))
                naive.append(measure("naive", server["url"], server["key"]))
        users[n] = ours
        ratio = _median(naive, "seconds") / _median(ours, "seconds")
        goal = GOALS.get(n)
        verdict = "" if goal is None else f"≥ {goal:g}× ({'met' if ratio >= goal else 'missed'})"
        peak = statistics.median(r["peak"] / r["rows"] for r in ours)
        naive_peak = statistics.median(r["peak"] / r["rows"] for r in naive)
        extra = statistics.median(r["seconds"] - r["second"] for r in ours)
        lines.append(
            f"| {n:,} | {_rate(ours):,.0f} | {_rate(naive):,.0f} | {ratio:.1f}× | {verdict} | "
            f"{peak:,.0f}; {naive_peak:,.0f} | {extra:+.3f} s |"
        )
    return lines, users


def export_row(n: int, runs: int) -> str:
    with serve(n) as server, tempfile.TemporaryDirectory() as folder:
        loads, exports = [], []
        for i in range(runs):
            loads.append(measure("user", server["url"], server["key"]))
            exports.append(measure("export", server["url"], server["key"], f"{folder}/{i}"))
    ratio = _median(exports, "seconds") / _median(loads, "seconds")
    return (
        f"| export vs load, {n:,} records | export {_median(exports, 'seconds'):.2f} s, "
        f"load {_median(loads, 'seconds'):.2f} s: {ratio:.2f}× | ≤ 1.5× | "
        f"{'yes' if ratio <= 1.5 else 'no'} |"
    )


def network_row(n: int, runs: int) -> str:
    with serve(n, LATENCY) as server:
        ours, naive = [], []
        for _ in range(runs):
            ours.append(measure("user", server["url"], server["key"]))
            naive.append(measure("naive", server["url"], server["key"]))
    ratio = _median(naive, "seconds") / _median(ours, "seconds")
    return (
        f"| {LATENCY * 1000:.0f} ms per request, {n:,} records, default arguments | "
        f"{_rate(ours):,.0f} records/s vs naive {_rate(naive):,.0f}: {ratio:.1f}× | ≥ 4× | "
        f"{'yes' if ratio >= 4 else 'no'} |"
    )


def checks_row(n: int, runs: int) -> str:
    """What the trust checks cost a well-behaved server's load (issue "Trust")."""
    found: dict[str, list[dict[str, Any]]] = {"on": [], "off": [], "bare": []}
    with serve(n) as server:
        for _ in range(runs):
            for variant, rows in found.items():
                rows.append(measure("checks", server["url"], server["key"], variant))
    cpu = {variant: _median(rows, "cpu") for variant, rows in found.items()}
    wall = {variant: _median(rows, "seconds") for variant, rows in found.items()}
    return (
        f"| trust checks, {n:,} records, default arguments | CPU {cpu['on']:.2f} s with "
        f"them, {cpu['off']:.2f} s without the page and progress checks "
        f"(×{cpu['on'] / cpu['off']:.2f}), {cpu['bare']:.2f} s also without the per-record "
        f"facts (×{cpu['on'] / cpu['bare']:.2f}); wall {wall['on']:.2f} / {wall['off']:.2f} / "
        f"{wall['bare']:.2f} s | little |  |"
    )


def rate_row(n: int, rate: float, runs: int) -> str:
    achieved, refused = [], []
    for _ in range(runs):  # a new gateway each run: a fresh token bucket
        with serve(n, LATENCY, rate) as server:
            result = measure("user", server["url"], server["key"], "once")
        statuses = server["stats"].get("statuses", {})
        total = max(1, server["stats"].get("requests", 0))
        achieved.append(statuses.get("200", 0) / result["seconds"] / rate)
        refused.append(statuses.get("429", 0) / total)
    share, denied = statistics.median(achieved), statistics.median(refused)
    met = share >= 0.8 and denied <= 0.10
    return (
        f"| {rate:g} requests/s limit at {LATENCY * 1000:.0f} ms, {n:,} records, default "
        f"arguments | {share:.0%} of the limit's throughput; {denied:.1%} of requests "
        f"refused (429) | ≥ 80 %, ≤ 10 % | {'yes' if met else 'no'} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.users", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke check on small sizes")
    parser.add_argument("--output", type=Path, help="also write the section into this file")
    parser.add_argument(
        "--only-checks", action="store_true", help="only the row pricing the trust checks"
    )
    args = parser.parse_args(argv)
    sizes, runs = args.sizes, args.runs
    export_n, network_n, rate_n, slow_rate_n, checks_n = (
        200_000, 50_000, 100_000, 100_000, 1_000_000
    )  # fmt: skip
    if args.quick:
        sizes, runs = [1_000, 5_000], 1
        export_n, network_n, rate_n, slow_rate_n, checks_n = 5_000, 5_000, 5_000, 2_000, 5_000
    print(f"running {runs} run(s) per measurement...", file=sys.stderr)
    if args.only_checks:
        print(checks_row(checks_n, runs))
        return
    lines, _ = sizes_rows(sizes, runs)
    checks = [
        export_row(export_n, runs),
        network_row(network_n, runs),
        rate_row(rate_n, 40, runs),
        rate_row(slow_rate_n, 5, runs),
        checks_row(checks_n, runs),
    ]
    text = "\n".join(
        [
            f"Machine: {machine()}",
            "",
            f"Customer records, default arguments (page size 1000), median of {runs} run(s), "
            "each in a fresh process with imports outside the clock and the first call inside.",
            "",
            *lines,
            "",
            "| measurement | measured | goal | met |",
            "|---|---|---|---|",
            *checks,
        ]
    )
    if args.quick:
        text += "\n\n**Quick mode: a smoke check; its numbers mean nothing.**"
    print(text)
    if args.output:
        old = args.output.read_text() if args.output.exists() else ""
        head, marker, rest = old.partition(SECTION)
        tail = rest.partition("\n## ")
        after = f"\n## {tail[2]}" if tail[1] else ""
        before = head if marker else old.rstrip() + "\n\n"
        _replace_file(args.output, f"{before}{SECTION}\n\n{text}\n{after}")


if __name__ == "__main__":
    main()
