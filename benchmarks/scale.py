"""Cache and refresh figures: cache hit vs network fetch, incremental refresh vs full reload.

Run ``python -m benchmarks.scale [--records 100000] [--runs 3]``. The timing sandbox runs in
its own process (``impactframe sandbox``) so that its work does not compete with the loader
for the GIL; the request counts come from an in-process sandbox, whose log sees every request.
Medians of ``--runs`` runs; every figure is measured in this one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import impactframe as ifr
from impactframe.sandbox import SandboxServer, generate_records


@contextmanager
def sandbox_process(records: int) -> Iterator[tuple[str, str]]:
    """A sandbox in a child process; yields (url, key)."""
    command = [sys.executable, "-m", "impactframe", "sandbox", "--port", "0"]
    command += ["--records", str(records), "--customer-records", str(records)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout is None:  # not with stdout=PIPE; a clear error if it ever is
            msg = "the sandbox process has no stdout pipe"
            raise RuntimeError(msg)
        for line in proc.stdout:
            if line.startswith("export "):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                yield fields["IMPACTFRAME_BASE_URL"], fields["IMPACTFRAME_API_KEY"]
                return
        msg = "the sandbox process did not start"
        raise RuntimeError(msg)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def median_seconds(func: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cache_hit_vs_network(records: int, runs: int) -> tuple[float, float]:
    with sandbox_process(records) as (url, key), tempfile.TemporaryDirectory() as cache:
        conn: dict[str, Any] = {"api_key": key, "base_url": url, "progress": False}

        def network() -> object:
            return ifr.load_customer_records(**conn)

        ifr.load_customer_records(**conn, cache=cache)  # fill the cache

        def hit() -> object:
            return ifr.load_customer_records(**conn, cache=cache)

        return median_seconds(network, runs), median_seconds(hit, runs)


def refresh_requests(records: int) -> tuple[int, int, int]:
    """Requests of a full reload vs ``refresh=True`` after a day of new records."""
    history = generate_records(records, seed=3, customers=True, end="2025-12-31")
    newest = max(r["time_utc"] for r in history)
    day = dt.date.fromisoformat(newest[:10]) + dt.timedelta(days=1)
    new = [
        {**r, "time_utc": f"{day.isoformat()}T{r['time_utc'][11:]}"}
        for r in generate_records(300, seed=4, customers=True, start="2025-01-01")
    ]
    with SandboxServer(customer_records=history) as server, tempfile.TemporaryDirectory() as cache:
        conn: dict[str, Any] = {
            "api_key": server.api_key,
            "base_url": server.url,
            "progress": False,
        }
        ifr.load_customer_records(**conn, cache=cache)
        server.set_records(history + new, endpoint="customer_records")
        server.clear_log()
        df = ifr.load_customer_records(**conn, cache=cache, refresh=True)
        refreshed = len(server.requests)
        server.clear_log()
        full = ifr.load_customer_records(**conn)
        if not df.equals(full):
            msg = "the refreshed frame must equal a full reload"
            raise RuntimeError(msg)
        return len(server.requests), refreshed, len(df)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    network, hit = cache_hit_vs_network(args.records, args.runs)
    print(
        f"| cache hit vs network, {args.records:,} customer records | network {network:.2f} s |"
        f" cache {hit:.3f} s | {network / hit:.0f}x faster |"
    )
    full, refreshed, rows = refresh_requests(args.records)
    print(
        f"| incremental refresh, {rows:,} rows, one new day | full reload {full} requests |"
        f" refresh {refreshed} requests | {full / refreshed:.0f}x fewer |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
