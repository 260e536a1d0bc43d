"""``python -m benchmarks``: impactframe against the obvious approach, in numbers.

Starts two sandboxes in their own processes (the data, and a copy that answers every request
after 50 ms), runs every measurement of `benchmarks._measure` in fresh processes, ``--runs``
times each (interleaved, so that a busy machine slows every contender alike), and prints the
medians as Markdown tables: records/s and peak memory per contender, then each target of the
performance issue with its measured value.

Examples
--------
``python -m benchmarks`` (1,000,000 records, 3 runs: a few minutes),
``python -m benchmarks --records 200000 --runs 5``, ``python -m benchmarks --quick`` (a smoke
check on 5,000 records), ``python -m benchmarks --output benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LATENCY = 0.05  # seconds added to every request of the slow sandbox
_SERVERS: list[int] = []  # pids of the running sandboxes (their CPU is ours, not others')


@contextmanager
def sandbox(n: int, latency: float = 0.0) -> Iterator[tuple[str, str]]:
    """A sandbox process serving ``n`` records; yields ``(url, key)``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._serve", str(n), str(latency)],
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if process.stdout is None:  # not with stdout=PIPE; a clear error if it ever is
            msg = "the sandbox process has no stdout pipe"
            raise RuntimeError(msg)
        url, key = process.stdout.readline().split()
        _SERVERS.append(process.pid)
        yield url, key
    finally:
        _SERVERS.remove(process.pid)
        if process.stdin is not None:  # stdin=PIPE: always
            process.stdin.close()  # the server stops when its stdin closes
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def _seconds(path: str, fields: slice) -> float:
    """CPU seconds from a ``/proc`` stat line (0 where there is no ``/proc``)."""
    try:
        with open(path) as stat:
            line = stat.readline()
    except OSError:
        return 0.0
    values = line.rsplit(")", 1)[-1].split() if path != "/proc/stat" else line.split()[1:]
    return sum(int(v) for v in values[fields]) / os.sysconf("SC_CLK_TCK")


def _cpu() -> tuple[float, float, float]:
    """(busy CPU s of the machine, of finished children, of the sandboxes) so far."""
    machine = _seconds("/proc/stat", slice(0, 3)) + _seconds("/proc/stat", slice(5, 8))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    servers = sum(_seconds(f"/proc/{pid}/stat", slice(11, 13)) for pid in _SERVERS)
    return machine, children.ru_utime + children.ru_stime, servers


def measure(kind: str, *args: str) -> dict[str, Any]:
    """Run one measurement in a fresh process and return what it printed, plus the share of
    the machine that other processes used meanwhile (``"others"``, Linux only)."""
    began, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._measure", kind, *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        msg = f"measurement {kind} failed:\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    busy, ours, servers = (b - a for a, b in zip(cpu, _cpu(), strict=True))
    capacity = (time.perf_counter() - began) * (os.cpu_count() or 1)
    result["others"] = max(0.0, busy - ours - servers) / capacity
    return result


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    versions = ", ".join(
        f"{name} {_version(name)}"
        for name in ("pandas", "pyarrow", "numpy", "pandera", "requests", "msgspec", "makeimpact")
    )
    return (
        f"{dt.date.today().isoformat()}; {platform.platform()}; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}; {versions}; load average {load}"
    )


def run_all(n: int, runs: int, slow_n: int, jobs: int) -> dict[str, list[dict[str, Any]]]:
    """Every measurement ``runs`` times; returns the results per measurement."""
    results: dict[str, list[dict[str, Any]]] = {}
    with (
        sandbox(n) as (url, key),
        sandbox(slow_n, LATENCY) as (slow_url, slow_key),
        tempfile.TemporaryDirectory() as folder,
    ):
        measure("cache", url, key, folder)  # fills the cache folder the "cache" runs read
        plan = [
            ("impactframe", ("impactframe", url, key)),
            ("naive", ("naive", url, key)),
            ("sdk", ("sdk", url, key)),
            ("convert", ("convert", url, key, "numpy_nullable")),
            ("convert pyarrow", ("convert", url, key, "pyarrow")),
            ("reference", ("reference", url, key)),
            ("cache", ("cache", url, key, folder)),
            ("concurrency 1", ("concurrency", slow_url, slow_key, "1")),
            ("concurrency 8", ("concurrency", slow_url, slow_key, "8")),
        ]
        for _ in range(runs):  # interleaved: a busy moment slows one run of each, not one kind
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                done = pool.map(lambda item: (item[0], measure(*item[1])), plan)
                for name, result in done:
                    results.setdefault(name, []).append(result)
    return results


def _median(results: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(r[field] for r in results))


def _rate(results: list[dict[str, Any]]) -> float:
    return float(statistics.median(r["rows"] / r["seconds"] for r in results))


def _spread(results: list[dict[str, Any]]) -> str:
    rates = [r["rows"] / r["seconds"] for r in results]
    return f"{min(rates):,.0f}–{max(rates):,.0f}"


def _time_spread(results: list[dict[str, Any]]) -> str:
    times = [r["seconds"] for r in results]
    return f"{min(times):.2f}–{max(times):.2f}"


def _per_row(results: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(r[field] / r["rows"] for r in results))


def tables(results: dict[str, list[dict[str, Any]]], n: int, runs: int) -> str:
    others = [r["others"] for rows in results.values() for r in rows]
    lines = [
        f"{n:,} customer records, {1000} per page, median of {runs} run(s), each in a fresh "
        "process; sandbox in its own process. Other processes used a median "
        f"{statistics.median(others):.0%} (max {max(others):.0%}) of the machine's CPU "
        "during the measurements.",
        "",
        "| contender (end to end, HTTP on loopback) | records/s (median; min–max) | "
        "CPU s per 1M records | peak B/record | frame B/record |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "impactframe": "impactframe `load_customer_records` (validated, typed frame)",
        "naive": "naive: `requests` page loop + `json.loads` + `pd.json_normalize`",
        "sdk": "official SDK `makeimpact` walk + `pd.json_normalize`",
    }
    for kind, label in names.items():
        rows = results[kind]
        if "missing" in rows[0]:
            lines.append(f"| {label} | {rows[0]['missing']} | | | |")
            continue
        frame = (
            _per_row(rows, "frame") if "frame" in rows[0] else _per_row(results["convert"], "frame")
        )
        rates = [r["rows"] / r["seconds"] for r in rows]
        cpu = _per_row(rows, "cpu") * 1e6
        lines.append(
            f"| {label} | {_rate(rows):,.0f}; {min(rates):,.0f}–{max(rates):,.0f} | {cpu:.2f} | "
            f"{_per_row(rows, 'peak'):,.0f} | {frame:,.0f} |"
        )

    convert, arrow = results["convert"], results["convert pyarrow"]
    e2e = results["impactframe"]
    e2e_rate, e2e_peak = _rate(e2e), _per_row(e2e, "peak")
    speedup = _median(results["naive"], "seconds") / _median(e2e, "seconds")
    convert_rate, reference_rate = _rate(convert), _rate(results["reference"])
    frame, arrow_frame, arrow_held = (
        _per_row(convert, "frame"),
        _per_row(arrow, "frame"),
        _per_row(arrow, "held"),
    )
    validate_share = statistics.median(r["validate"] / r["seconds"] for r in convert)
    validate_share = round(validate_share, 3)  # judged as printed
    cached = results["cache"]
    if not all(r["hit"] for r in cached):
        msg = "the cache runs must read, not fill"
        raise RuntimeError(msg)
    cache_ratio = _median(convert, "seconds") / _median(cached, "seconds")
    on_disk = _per_row(cached, "disk")
    slow, fast = results["concurrency 1"], results["concurrency 8"]
    concurrency = _median(slow, "seconds") / _median(fast, "seconds")
    latency = f"{LATENCY * 1000:.0f} ms latency per request, {slow[0]['rows']:,} records"
    checks: list[tuple[str, str, str, bool | None]] = [
        ("end to end, impactframe", f"{e2e_rate:,.0f} records/s ({_spread(e2e)})",
         "≥ 400,000 records/s", e2e_rate >= 400_000),
        ("end to end, speed-up over the naive baseline", f"{speedup:.1f}×", "≥ 6×",
         speedup >= 6),
        ("end to end, peak memory above the start", f"{e2e_peak:,.0f} B/record",
         "≤ 550 B/record", e2e_peak <= 550),
        ("conversion alone (page bytes in memory → validated frame)",
         f"{convert_rate:,.0f} records/s ({_spread(convert)}; "
         f"{_per_row(convert, 'cpu') * 1e6:.2f} CPU s per 1M)",
         "≥ 600,000 records/s", convert_rate >= 600_000),
        ("conversion alone, reference path (`json.loads` + `FrameBuilder`)",
         f"{reference_rate:,.0f} records/s", "", None),
        ("final frame, numpy_nullable (`memory_usage(deep=True)`)", f"{frame:,.0f} B/record",
         "≤ 250 B/record", frame <= 250),
        ("final frame, pyarrow (`memory_usage(deep=True)`: a shared buffer once per column)",
         f"{arrow_frame:,.0f} B/record", "", None),
        ("final frame, pyarrow (bytes held: a shared buffer once)", f"{arrow_held:,.0f} B/record",
         "≤ 180 B/record", arrow_held <= 180),
        ("validation share of the conversion", f"{validate_share:.1%}", "≤ 10 %",
         validate_share <= 0.10),
        ("cache: reading the rows (fresh process) vs re-converting them",
         f"{cache_ratio:.1f}× (read {_median(cached, 'seconds'):.2f} s, {_time_spread(cached)}; "
         f"re-convert {_median(convert, 'seconds'):.2f} s)", "≥ 5×", cache_ratio >= 5),
        ("cache: on disk", f"{on_disk:,.1f} B/record", "≤ 40 B/record", on_disk <= 40),
        (f"concurrency 8 vs 1 ({latency})", f"{concurrency:.1f}×", "≥ 5×", concurrency >= 5),
    ]  # fmt: skip
    lines += ["", "| measurement | measured | target | met |", "|---|---:|---|---|"]
    for label, value, target, met in checks:
        verdict = "" if met is None else ("yes" if met else "no")
        lines.append(f"| {label} | {value} | {target} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="records (default 1e6)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke check: 5,000 records")
    parser.add_argument("--output", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args(argv)
    if args.records < 1 or args.runs < 1:
        parser.error("--records and --runs must be at least 1")
    n, runs, jobs = args.records, args.runs, 1
    slow_n = min(200_000, n)
    if args.quick:
        n, runs, jobs, slow_n = 5_000, 1, 4, 5_000
    header = f"Machine: {machine()}"
    print(f"running {runs} run(s) of each measurement on {n:,} records...", file=sys.stderr)
    results = run_all(n, runs, slow_n, jobs)
    if args.quick:
        header += "\n\n**Quick mode: a smoke check; its numbers mean nothing.**"
    text = f"{header}\n\n{tables(results, n, runs)}\n"
    print(text)
    if args.output:
        write_results(args.output, text)


def write_results(path: Path, text: str) -> None:
    """Write ``text`` as the "## Latest run" section of ``path``, keeping the file's other
    sections (how it measures, how to read the results); a new file holds just the run."""
    old = path.read_text() if path.exists() else ""
    head, marker, rest = old.partition(LATEST_RUN)
    if marker:
        _, next_heading, tail = rest.partition("\n## ")
        text = f"{head}{LATEST_RUN}\n\n{text}\n{next_heading}{tail}"
    _replace_file(path, text)


def _replace_file(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: an
    interrupted run leaves the old results whole, never half a file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        # mkstemp makes the file 0600; keep the mode write_text would have given it.
        if path.exists():
            shutil.copymode(path, temporary)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


LATEST_RUN = "## Latest run"


if __name__ == "__main__":
    main()
