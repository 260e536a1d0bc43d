"""Peak memory of ``export_parquet`` at 200k and 1M records (SPEC §7: it must not grow).

Each size runs twice over: a sandbox in its own process (so the server's records are not
counted), and the export in a fresh Python process that reports its peak resident set size
above the baseline it had after importing everything. Prints one line per size, in bytes::

    python -m benchmarks.export_memory               # 200000 and 1000000 records
    python -m benchmarks.export_memory 50000 100000  # other sizes
    python -m benchmarks.export_memory --batch-records 10000 200000 1000000

Run by hand as above: neither the tests nor ``make bench`` run it (it takes minutes).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import multiprocessing.queues
import multiprocessing.synchronize
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (200_000, 1_000_000)
BATCH_RECORDS = 50_000


def _serve(
    n: int,
    ready: multiprocessing.queues.Queue[tuple[str, str]],
    stop: multiprocessing.synchronize.Event,
) -> None:
    from impactframe.sandbox import SandboxServer

    with SandboxServer(n_records=n, n_customer_records=0, seed=7) as server:
        ready.put((server.url, server.api_key))
        stop.wait()


def _peak_rss() -> int:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _child(url: str, key: str, out: str, batch_records: str) -> None:
    """Runs in the fresh process: import, take the baseline, export, report."""
    import impactframe.export as export

    baseline = _peak_rss()
    started = time.perf_counter()
    result = export.export_parquet(
        out, api_key=key, base_url=url, progress=False, batch_records=int(batch_records)
    )
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    print(
        json.dumps(
            {
                "records": result.records,
                "files": result.files,
                "baseline_bytes": baseline,
                "peak_bytes": peak,
                "peak_above_baseline_bytes": peak - baseline,
                "seconds": round(seconds, 1),
            }
        )
    )


def measure(n: int, batch_records: int = BATCH_RECORDS) -> dict[str, object]:
    """Export ``n`` sandbox records in a fresh process; return its measurements."""
    context = mp.get_context("spawn")
    ready = context.Queue()
    stop = context.Event()
    server = context.Process(target=_serve, args=(n, ready, stop), daemon=True)
    server.start()
    try:
        url, key = ready.get(timeout=600)
        with tempfile.TemporaryDirectory() as folder:
            out = str(Path(folder) / "records")
            done = subprocess.run(
                [sys.executable, __file__, "--child", url, key, out, str(batch_records)],
                check=True,
                capture_output=True,
                text=True,
            )
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        stop.set()
        server.join(timeout=30)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        _child(*argv[1:5])
        return
    batch_records = BATCH_RECORDS
    if argv[:1] == ["--batch-records"]:
        batch_records, argv = int(argv[1]), argv[2:]
    sizes = [int(a) for a in argv] or list(SIZES)
    for n in sizes:
        report = measure(n, batch_records)
        print(
            f"records={report['records']} files={report['files']} "
            f"batch_records={batch_records} "
            f"peak_rss_above_baseline_bytes={report['peak_above_baseline_bytes']} "
            f"baseline_bytes={report['baseline_bytes']} seconds={report['seconds']}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
