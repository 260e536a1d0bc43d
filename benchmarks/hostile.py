"""Hostile-server runs: every load ends in a clear error or the exact truth, in bounded time
and memory (``python -m benchmarks.soak --hostile``; part of ``make soak``).

Misbehaving servers on loopback (`benchmarks._hostile`): one that ignores ``sort_order``, counts
days in UTC−5, ignores ``filter_by``, the dates or ``customer_email``, replays the same records
with new cursors, answers empty pages for ever, or gives the record list twice in one body; and
raw ones: a gzip bomb (1 MB inflating to 1 GiB), an endless chunked body, a drip (a byte every
0.5 s) and an error body that echoes the key. Each attack is run through the loaders with
``concurrency`` 1, 4 and ``"auto"``, ``export_parquet`` and the cache (``cache=`` then
``refresh=True``), each in a fresh child process (``python -m benchmarks.hostile --child
SPEC``) with a wall-clock limit; the child measures its peak resident set above its baseline
after the imports (as ``benchmarks/_measure.py`` does).

A run passes when it raises an impactframe error (``ValidationError``, ``PaginationError``,
``APIError`` and its subclasses) whose message does not hold the key, or returns exactly what
an honest server gives for the same query, within its time and memory bounds.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

import impactframe as ifr
from benchmarks import _hostile
from benchmarks._datasets import comparable, equal_loose, read_dataset
from benchmarks._measure import peak_memory, start_memory
from impactframe._frame._builder import empty_frame
from impactframe.errors import ImpactFrameError

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-hostile-soak-DO-NOT-LEAK-1a2b3c4d"
N_RECORDS = 400
PAGE_SIZE = 20
#: The client's ``timeout`` in the children: its deadline (3 x timeout) ends a drip in 6 s.
TIMEOUT = 2.0
#: Seconds a child may take (imports included) before it counts as hung.
LIMIT = 60.0
#: Peak memory above the baseline, MB: page attacks; body attacks (the 256 MiB body cap, and a
#: body joined once: "peak about twice the cap").
PAGE_MB, BODY_MB = 150.0, 2 * 256 + 150.0

#: attack -> (server, endpoint, query). A page server's bug is its name.
ATTACKS: dict[str, tuple[str | None, str, dict[str, Any]]] = {
    "none (honest server)": (None, "customer_records", {}),
    "wrong order, asc asked": ("ignore_sort", "records", {}),
    "wrong order": ("ignore_sort", "records", {"sort_order": "desc"}),
    "wrong days (UTC-5)": ("utc_minus_5", "records", {"start_date": "2024-03-10",
                                                        "end_date": "2024-05-20"}),
    "ignored filter_by": ("ignore_filter", "records", {"filter_by": "tree_planted"}),
    "ignored dates": ("ignore_dates", "records", {"start_date": "2024-03-20"}),
    "ignored customer_email": ("ignore_email", "customer_records",
                               {"customer_email": "c1@example.com"}),
    "same records, new cursors": ("replay", "records", {}),
    "endless empty pages": ("empty_forever", "records", {}),
    "names given twice": ("names_twice", "customer_records", {}),
    "gzip bomb (1 MB -> 1 GiB)": ("bomb", "records", {}),
    "endless chunked body": ("chunks", "records", {}),
    "drip (a byte / 0.5 s)": ("drip", "records", {}),
    "key-echoing error body": ("echo", "records", {}),
}  # fmt: skip
ENTRIES = ("load c=1", "load c=4", "load auto", "export", "cache + refresh")
#: The short run (the test): one of each family, one chain.
QUICK = {
    "wrong order, asc asked": ("load auto",),
    "wrong order": ("load c=1", "load auto"),
    "same records, new cursors": ("load c=1",),
    "names given twice": ("load c=1",),
    "gzip bomb (1 MB -> 1 GiB)": ("load c=1",),
    "key-echoing error body": ("load c=1",),
}
PASSING = ("ValidationError", "PaginationError", "APIError", "TransportError", "RateLimitError",
           "AuthenticationError", "truth")  # fmt: skip


@dataclass
class Result:
    """One child: what it met, how it ended, what it cost."""

    attack: str
    entry: str
    outcome: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0
    detail: str = ""
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.failure


# -- the child ---------------------------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one entry point against one server; the outcome, seconds and peak memory."""
    for endpoint in ("records", "customer_records"):  # warm-up: pandera's schema, lazy imports
        empty_frame(endpoint)
    client = ifr.Client(spec["key"], base_url=spec["url"], timeout=TIMEOUT)
    loader = ifr.load_customer_records if spec["endpoint"] == "customer_records" else (
        ifr.load_records
    )  # fmt: skip
    options = {"client": client, "page_size": PAGE_SIZE, "progress": False, **spec["query"]}
    out = Path(spec["out"])
    entry = spec["entry"]
    baseline = start_memory()
    began = time.perf_counter()
    result: dict[str, Any] = {}
    try:
        if entry.startswith("load"):
            c = entry.split()[-1].removeprefix("c=")
            frame = loader(concurrency=c if c == "auto" else int(c), **options)
        elif entry == "export":
            ifr.export_parquet(out / "dataset", spec["endpoint"], partition_by=("year",),
                               **options)  # fmt: skip
            frame = None
        else:
            loader(cache=out / "cache", **options)
            frame = loader(cache=out / "cache", refresh=True, **options)
        result["outcome"] = "frame"
        if frame is not None:
            with (out / "frame.pkl").open("wb") as file:
                pickle.dump(frame, file)
    except ImpactFrameError as exc:
        text = f"{exc} {exc!r}"
        result["outcome"] = type(exc).__name__
        result["detail"] = str(exc)[:160].replace("\n", " ")
        result["leaked"] = spec["key"] in text or spec["key"][-10:] in text
    except BaseException as exc:  # reported, not raised: the parent judges
        result["outcome"] = f"other: {type(exc).__name__}"
        result["detail"] = traceback.format_exc()[-600:]
    result["seconds"] = time.perf_counter() - began
    result["peak"] = peak_memory() - baseline
    return result


# -- the parent --------------------------------------------------------------------------------


def _honest(endpoint: str, query: dict[str, Any], records: list[dict[str, Any]]) -> Any:
    """What an honest server gives for the query (one chain, in this process)."""
    with _hostile.serving(_hostile.PageServer(records, None, key=KEY)) as server:
        loader = ifr.load_customer_records if endpoint == "customer_records" else ifr.load_records
        return loader(api_key=KEY, base_url=server.url, page_size=PAGE_SIZE, progress=False,
                      concurrency=1, **query)  # fmt: skip


def _raw(kind: str, bomb: bytes) -> _hostile.RawServer:
    handlers = {
        "bomb": _hostile.bomb(bomb),
        "chunks": _hostile.endless_chunks,
        "drip": _hostile.drip(0.5),
        "echo": _hostile.echo(400, lambda key: json.dumps(
            {"type": "validation_error", "message": f"bad key {key}, check it"}).encode()),
    }  # fmt: skip
    return _hostile.RawServer(handlers[kind])


def _judge(result: Result, got: dict[str, Any], truth: Any, out: Path, entry: str) -> None:
    result.outcome = got["outcome"]
    result.detail = got.get("detail", "")
    if result.outcome == "frame":
        if truth is None:
            result.failure = "a frame from a server that sent none"
        elif entry == "export":
            back = read_dataset(out / "dataset")
            ok = len(back) == len(truth) and equal_loose(back, comparable(truth, list(back)))
            result.outcome = "truth" if ok else "wrong rows"
        else:
            frame = pd.read_pickle(out / "frame.pkl")
            result.outcome = "truth" if frame.equals(truth) else "wrong rows"
    if result.outcome not in PASSING:
        result.failure = result.failure or f"{result.outcome}: {result.detail}"
    if got.get("leaked"):
        result.failure = "the key is in the error's message"


def run_one(attack: str, entry: str, url: str, endpoint: str, query: dict[str, Any], truth: Any,
            limit_mb: float, work: Path) -> Result:  # fmt: skip
    """One child: start it, wait up to `LIMIT`, judge what it did."""
    result = Result(attack, entry)
    out = work / f"{len(list(work.iterdir()))}"
    out.mkdir()
    spec = {"key": KEY, "url": url, "endpoint": endpoint, "query": query, "entry": entry,
            "out": str(out)}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTFRAME_")}
    env["PYTHONPATH"] = str(ROOT)
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.hostile", "--child", json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        result.outcome, result.failure = "hung", f"still running after {LIMIT:.0f} s"
        result.seconds = round(time.perf_counter() - began, 2)
        return result
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        result.outcome = f"crashed ({proc.returncode})"
        result.failure = stderr[-600:]
        return result
    got = json.loads(lines[-1])
    result.seconds = round(got["seconds"], 2)
    result.peak_mb = round(got["peak"] / 2**20, 1)
    _judge(result, got, truth, out, entry)
    if result.peak_mb > limit_mb:
        result.failure = f"peak {result.peak_mb} MB above the bound {limit_mb:.0f} MB"
    return result


HEADER = f"{'attack':<28} {'entry point':<16} {'outcome':<16} {'seconds':>8} {'peak MB':>8}"


def row(result: Result) -> str:
    """One line of the table."""
    flag = "" if result.ok else f"  FAILED: {result.failure[:200]}"
    return (f"{result.attack:<28} {result.entry:<16} {result.outcome:<16} "
            f"{result.seconds:>8.2f} {result.peak_mb:>8.1f}{flag}")  # fmt: skip


def hostile(quick: bool = False) -> list[Result]:
    """Run every attack through every entry point (`QUICK` only with `quick`); print the table.

    Examples
    --------
    >>> results = hostile(quick=True)  # doctest: +SKIP
    >>> all(r.ok for r in results)  # doctest: +SKIP
    True
    """
    records = _hostile.page_records(N_RECORDS)
    attacks = {a: ATTACKS[a] for a in QUICK} if quick else ATTACKS
    bomb = _hostile.gzip_bomb(1 << 30, members=64)  # 1 GiB of spaces in about 1 MB
    results: list[Result] = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="impactframe-hostile-") as folder:
        work = Path(folder)
        for attack, (server_kind, endpoint, query) in attacks.items():
            page = server_kind is None or server_kind in _hostile.PAGE_BUGS
            truth = _honest(endpoint, query, records) if page else None
            if page:
                server: Any = _hostile.serving(_hostile.PageServer(records, server_kind, key=KEY))
            else:
                server = _raw(str(server_kind), bomb)
            with server as running:
                for entry in QUICK[attack] if quick else ENTRIES:
                    result = run_one(attack, entry, running.url, endpoint, query, truth,
                                     PAGE_MB if page else BODY_MB, work)  # fmt: skip
                    print(row(result), flush=True)
                    results.append(result)
    return results


def summary(results: list[Result]) -> list[tuple[str, str, float, float]]:
    """Per attack: (attack, outcomes, max seconds, max peak MB)."""
    rows = []
    for attack in dict.fromkeys(r.attack for r in results):
        mine = [r for r in results if r.attack == attack]
        outcomes = ", ".join(dict.fromkeys(r.outcome for r in mine))
        rows.append((attack, outcomes, max(r.seconds for r in mine),
                     max(r.peak_mb for r in mine)))  # fmt: skip
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(json.loads(sys.argv[2]))), flush=True)
        os._exit(0)  # skip pyarrow's teardown (see benchmarks/_measure.py)
    ok = all(r.ok for r in hostile(quick="--quick" in sys.argv))
    sys.exit(0 if ok else 1)
