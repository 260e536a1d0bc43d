"""Soak and fault runs: prove that nothing is lost, doubled or left half-written.

Four parts, the first three against the real sandbox over loopback HTTP, the fourth against
hostile servers (``make soak`` runs them all)::

    python -m benchmarks.soak                  # 200k records, 15 % faults, 8 kills each
    python benchmarks/soak.py --records 20000  # a quicker pass
    python -m benchmarks.soak --json soak.json # also write the figures as JSON
    python -m benchmarks.soak --hostile        # only the hostile servers

1. **Soak.** A sandbox of ``--records`` records faults ``--fault-rate`` of the requests at random
   (429 with ``Retry-After``, 500, 502, 503, dropped connections, truncated bodies, a record
   repeated across a page boundary). Loads with ``concurrency`` 1 and 4, without and with the
   cache (a first load, a cache hit that must send nothing, a refresh), and exports with
   ``concurrency`` 1 and 4 must each equal the ground truth exactly: the records given to the
   server, built with ``records_to_frame``. Retries do not sleep (the wait asked for is summed).
2. **Kills.** A child process loading into a cache (``refresh="full"`` over an old entry) or
   exporting over an old dataset is killed with SIGKILL, at file operations picked from a trace
   of a complete run (the decisive renames and removals, plus seeded random ones, found with an
   audit hook: nothing is patched) and at seeded random moments. The entry and the dataset must
   be the old complete state or the new one; the rerun must equal the truth and leave nothing
   behind.
3. **Contention.** Two processes load the same query into the same cache at once: both must get
   the truth, the second from the first's entry, and the entry must be the truth afterwards.
4. **Hostile servers** (``benchmarks/hostile.py``). Servers that ignore the query, walk without
   end, bomb, drip or echo the key, through the loaders (``concurrency`` 1, 4, ``"auto"``), the
   export and the cache, each in a fresh child process with a time limit and a memory
   measurement: a clear impactframe error or the exact truth, within bounded time and memory.

The report gives, per run: requests sent, faults injected by kind, retries, records lost and
duplicated (both must be 0), and the time; the hostile runs a table of attack, entry point,
outcome, seconds and peak MB. The exit status is 1 if anything was lost, duplicated, different
from the truth or left partial, or a hostile run hung, exceeded its memory bound, raised
anything but an impactframe error or returned wrong rows, else 0.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import logging
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

import impactframe as ifr
from benchmarks import hostile
from benchmarks._datasets import comparable as _comparable
from benchmarks._datasets import equal_loose as _equal_loose
from benchmarks._datasets import read_dataset as _read_dataset
from impactframe._cache._store import CacheKey, ParquetCache
from impactframe._frame._builder import records_to_frame
from impactframe._params import normalize_query
from impactframe.sandbox import SandboxServer, generate_records

ROOT = Path(__file__).resolve().parents[1]


# -- bookkeeping ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One soak run: what it cost and whether it got exactly the truth."""

    name: str
    records: int = 0
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    lost: int = 0
    duplicates: int = 0
    equal: bool = False
    seconds: float = 0.0
    backoff_seconds: float = 0.0

    @property
    def faulted(self) -> int:
        return sum(self.faults.values())

    @property
    def ok(self) -> bool:
        return self.equal and self.lost == 0 and self.duplicates == 0


@dataclass
class Kills:
    """Kill runs of one kind: where each landed and what state it left."""

    name: str
    outcomes: dict[str, int] = field(default_factory=dict)
    points: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def _keys(frame: pd.DataFrame) -> collections.Counter[tuple[Any, Any]]:
    return collections.Counter(zip(frame["user_id"], frame["time_utc"], strict=True))


def _tally(run: Run, server: SandboxServer, truth: pd.DataFrame, got: pd.DataFrame) -> Run:
    faults: collections.Counter[str] = collections.Counter()
    log = server.requests
    for request in log:
        if request.fault:
            faults[str(request.status) if request.fault == "status" else request.fault] += 1
    run.requests = len(log)
    run.faults = dict(sorted(faults.items()))
    run.retries = run.faulted - faults["repeat"]
    expected, seen = _keys(truth), _keys(got)
    run.records = len(got)
    run.lost = sum((expected - seen).values())
    run.duplicates = sum((seen - expected).values())
    try:
        pd.testing.assert_frame_equal(got, truth)
    except AssertionError:
        run.equal = False
    else:
        run.equal = True
    return run


# -- 1. the soak ---------------------------------------------------------------------------------


def soak(n_records: int, fault_rate: float, page_size: int, seed: int, work: Path) -> list[Run]:
    """Load and export ``n_records`` under random faults; one `Run` per pass."""
    runs: list[Run] = []
    with SandboxServer(
        n_records=n_records, n_customer_records=0, seed=seed, fault_rate=fault_rate,
        fault_seed=seed,
    ) as server:  # fmt: skip
        truth = records_to_frame(server.served_records())
        waits: list[float] = []
        client = ifr.Client(server.api_key, base_url=server.url)
        client._sleep = waits.append  # count the backoff, never wait
        client._rng = random.Random(seed)

        def timed(name: str, load: Callable[[], Any], exported: bool = False) -> Run:
            server.clear_log()
            waits.clear()
            started = time.perf_counter()
            got = load()
            seconds = time.perf_counter() - started  # the load (or export) only, not the checks
            if exported:
                got = _read_dataset(got)
            run = _tally(Run(name), server, truth, got)
            if exported:  # files hold no partition column and store categories their own way
                run.equal = _equal_loose(got, _comparable(truth, list(got.columns)))
            run.seconds = round(seconds, 2)
            run.backoff_seconds = round(sum(waits), 1)
            if len(waits) != run.retries:  # every fault must have been retried once
                run.equal = False
            print(_row(run), flush=True)
            runs.append(run)
            return run

        def export(concurrency: int) -> Path:
            out = work / f"export-c{concurrency}"
            ifr.export_parquet(
                out, partition_by=("year",), batch_records=25_000, concurrency=concurrency,
                **options,
            )  # fmt: skip
            return out

        options: dict[str, Any] = {"client": client, "page_size": page_size, "progress": False}
        load = functools.partial(ifr.load_records, **options)
        for c in (1, 4):
            timed(f"load c={c}", functools.partial(load, concurrency=c))
            cached = functools.partial(load, concurrency=c, cache=work / f"cache-c{c}")
            timed(f"load c={c} cache: first", cached)
            hit = timed(f"load c={c} cache: hit", cached)
            if hit.requests:
                hit.equal = False  # a cached query must send nothing
            timed(f"load c={c} cache: refresh", functools.partial(cached, refresh=True))
        for c in (1, 4):
            timed(f"export c={c}", functools.partial(export, c), exported=True)
    return runs


# -- 2. kills ------------------------------------------------------------------------------------

#: The child that loads into a cache or exports over a dataset, pausing (for the kill) at a
#: file operation; its protocol is in benchmarks/_kill_child.py.
CHILD = [sys.executable, "-m", "benchmarks._kill_child"]


def _start(spec: dict[str, Any], log: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTFRAME_")}
    env["PYTHONPATH"] = str(ROOT)
    with log.open("a") as stderr:
        return subprocess.Popen(
            [*CHILD, json.dumps(spec)],
            stdin=subprocess.PIPE if spec.get("wait_go") else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env=env,
        )  # fmt: skip


def _finish(proc: subprocess.Popen[str], log: Path) -> str:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        msg = f"child failed ({proc.returncode}):\n{log.read_text()[-3000:]}"
        raise RuntimeError(msg)
    return out


def _trace(spec: dict[str, Any], log: Path) -> list[list[str]]:
    out = _finish(_start({**spec, "trace": True}, log), log)
    return json.loads(out.split("DONE", 1)[1])  # type: ignore[no-any-return]


def _kill_all(specs: list[dict[str, Any]], log: Path, rng: random.Random, span: float) -> list[str]:
    """Start every child at once; SIGKILL each at its ``stop_at`` or at a random moment."""
    started = time.monotonic()
    procs = [_start(spec, log) for spec in specs]
    wheres = [""] * len(specs)
    order = sorted(range(len(specs)), key=lambda i: specs[i].get("stop_at") is not None)
    try:
        for i in order:
            proc = procs[i]
            assert proc.stdout is not None
            if specs[i].get("stop_at") is None:
                after = rng.uniform(0.2 * span, 1.1 * span)
                time.sleep(max(0.0, started + after - time.monotonic()))
                wheres[i] = f"at {after:.2f} s"
            else:
                ready, _, _ = select.select([proc.stdout], [], [], 600)
                wheres[i] = proc.stdout.readline().strip() if ready else "never paused"
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:  # also when interrupted: no child is left paused
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    return wheres


def _points(ops: list[list[str]], rng: random.Random, n: int) -> list[int]:
    """Up to `n` file operations to kill at: the decisive ones first, then random others."""

    def at(event: str) -> list[int]:
        return [i for i, (name, _) in enumerate(ops, 1) if name == event]

    decisive = {*at("os.mkdir")[-1:], *at("os.rename")[-2:], *at("shutil.rmtree")[:1]}
    decisive |= {*at("os.remove")[-1:]}
    others = [i for i in range(1, len(ops) + 1) if i not in decisive]
    chosen = sorted(decisive)[:n]
    chosen += rng.sample(others, min(n - len(chosen), len(others)))
    return sorted(chosen)


def kills(n_records: int, n_kills: int, seed: int, work: Path) -> list[Kills]:
    """SIGKILL cached loads and exports `n_kills` times each; check old-or-new, then rerun."""
    rng = random.Random(seed)
    old_records = generate_records(n_records, seed=seed + 1, end="2025-06-30")
    newer = generate_records(max(1, n_records // 10), seed=seed + 2, start="2025-07-01")
    log = work / "children.log"
    results = []
    with SandboxServer(records=old_records, customer_records=[], fault_rate=0.1) as server:
        client = ifr.Client(server.api_key, base_url=server.url)
        client._sleep = lambda _s: None
        old = records_to_frame(server.served_records())
        snapshot_cache, snapshot_export = work / "old-cache", work / "old-export"
        ifr.load_records(client=client, cache=snapshot_cache, progress=False)
        ifr.export_parquet(snapshot_export, client=client, partition_by=("year",), progress=False)
        server.set_records(old_records + newer)
        new = records_to_frame(server.served_records())
        key = CacheKey(
            client.fingerprint, "records", normalize_query("records"), None,
            "columns", "metadata_", "numpy_nullable",
        )  # fmt: skip
        base = {"key": server.api_key, "url": server.url, "page_size": 500}

        # Cached loads.
        result = Kills("cached load (refresh='full' over an old entry)")
        started = time.perf_counter()

        def cache_spec(folder: Path) -> dict[str, Any]:
            shutil.copytree(snapshot_cache, folder)
            return {**base, "mode": "load", "cache": str(folder), "refresh": "full",
                    "watch": str(folder)}  # fmt: skip

        began = time.perf_counter()
        ops = _trace(cache_spec(work / "cache-traced"), log)
        span = time.perf_counter() - began
        points: list[int | None] = [*_points(ops, rng, n_kills - n_kills // 4)]
        points += [None] * (n_kills - len(points))  # the rest at random moments
        folders = [work / f"cache-kill{i}" for i in range(len(points))]
        specs = [{**cache_spec(f), "stop_at": p} for f, p in zip(folders, points, strict=True)]
        for folder, where in zip(folders, _kill_all(specs, log, rng, span), strict=True):
            result.points.append(where)
            state = _cache_state(ParquetCache(folder).get(key), old, new)
            result.outcomes[state] = result.outcomes.get(state, 0) + 1
            if state not in ("old", "new"):
                result.failures.append(f"{where}: the entry is {state}")
            rerun = ifr.load_records(client=client, cache=folder, refresh="full", progress=False)
            if not rerun.equals(new):
                result.failures.append(f"{where}: the rerun differs from the truth")
            entry = next(
                p for p in (folder / client.fingerprint / "records").iterdir() if p.is_dir()
            )
            if len(list(entry.iterdir())) != 2:
                result.failures.append(
                    f"{where}: leftovers {sorted(p.name for p in entry.iterdir())}"
                )
        result.seconds = round(time.perf_counter() - started, 1)
        results.append(result)

        # Exports.
        result = Kills("export (overwrite=True over an old dataset)")
        started = time.perf_counter()

        def export_spec(parent: Path) -> dict[str, Any]:
            shutil.copytree(snapshot_export, parent / "records")
            return {**base, "mode": "export", "out": str(parent / "records"),
                    "batch_records": max(500, n_records // 8), "watch": str(parent)}  # fmt: skip

        began = time.perf_counter()
        ops = _trace(export_spec(work / "export-traced"), log)
        span = time.perf_counter() - began
        points = [*_points(ops, rng, n_kills - n_kills // 4)]
        points += [None] * (n_kills - len(points))
        parents = [work / f"export-kill{i}" for i in range(len(points))]
        specs = [{**export_spec(p), "stop_at": s} for p, s in zip(parents, points, strict=True)]
        for parent, where in zip(parents, _kill_all(specs, log, rng, span), strict=True):
            result.points.append(where)
            state = _dataset_state(parent / "records", old, new)
            result.outcomes[state] = result.outcomes.get(state, 0) + 1
            if state not in ("old", "new"):
                result.failures.append(f"{where}: the dataset is {state}")
            ifr.export_parquet(
                parent / "records", client=client, overwrite=True, partition_by=("year",),
                progress=False,
            )  # fmt: skip
            if _dataset_state(parent / "records", old, new) != "new":
                result.failures.append(f"{where}: the rerun differs from the truth")
            left = sorted(p.name for p in parent.iterdir())
            if left != ["records"]:
                result.failures.append(f"{where}: leftovers beside the dataset: {left}")
        result.seconds = round(time.perf_counter() - started, 1)
        results.append(result)
    return results


def _cache_state(got: pd.DataFrame | None, old: pd.DataFrame, new: pd.DataFrame) -> str:
    if got is None:
        return "absent"
    if got.equals(old):
        return "old"
    if got.equals(new):
        return "new"
    return f"partial ({len(got)} rows)"


def _dataset_state(path: Path, old: pd.DataFrame, new: pd.DataFrame) -> str:
    if not path.is_dir():
        return "absent"
    if not (path / "_common_metadata").is_file():
        return "incomplete (no _common_metadata)"
    try:
        back = _read_dataset(path)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError: reported, not raised
        return f"unreadable ({type(exc).__name__})"
    for name, frame in (("old", old), ("new", new)):
        if len(back) == len(frame) and _equal_loose(back, _comparable(frame, list(back.columns))):
            return name
    return f"partial ({len(back)} rows)"


# -- 3. contention -------------------------------------------------------------------------------


def _walk_starts(server: SandboxServer) -> int:
    """Chains started (first pages served, no cursor) in the server's log."""
    return sum(
        1 for r in server.requests if r.status == 200 and not r.fault and "cursor" not in r.params
    )


def contention(n_records: int, rounds: int, seed: int, work: Path) -> Kills:
    """Two processes load one query into one cache at once, `rounds` times."""
    result = Kills("two processes, one cache")
    started = time.perf_counter()
    log = work / "children.log"
    records = generate_records(n_records, seed=seed + 3)
    with SandboxServer(records=records, customer_records=[], fault_rate=0.1) as server:
        truth = records_to_frame(server.served_records())
        client = ifr.Client(server.api_key, base_url=server.url)
        # One load walks several date windows (concurrency="auto"): count the chains one load
        # starts, so that "one process fetched, the other read the cache" stays checkable.
        server.clear_log()
        ifr.load_records(client=client, page_size=500, progress=False)
        one_load = _walk_starts(server)
        for round_ in range(rounds):
            cache = work / f"shared-cache{round_}"
            spec = {
                "mode": "load", "key": server.api_key, "url": server.url, "cache": str(cache),
                "refresh": False, "page_size": 500, "watch": str(cache),
                "wait_go": True,
            }  # fmt: skip
            server.clear_log()
            procs = [
                _start({**spec, "pickle": str(work / f"c{round_}-{i}.pkl")}, log) for i in range(2)
            ]
            for proc in procs:  # both have imported impactframe: let them go at once
                assert proc.stdout is not None
                proc.stdout.readline()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            spans = [json.loads(_finish(p, log).split("SPAN", 1)[1].split("\n")[0]) for p in procs]
            overlapped = max(s for s, _ in spans) < min(e for _, e in spans)
            walks = round(_walk_starts(server) / one_load, 2)
            both = all(pd.read_pickle(work / f"c{round_}-{i}.pkl").equals(truth) for i in range(2))
            server.clear_log()
            after = ifr.load_records(client=client, cache=cache, progress=False)
            cached_ok = after.equals(truth) and not server.requests
            state = "ok" if both and cached_ok and walks <= 1 else "wrong"
            result.outcomes[state] = result.outcomes.get(state, 0) + 1
            result.points.append(f"round {round_}: overlapped={overlapped} walks={walks}")
            if state != "ok":
                result.failures.append(
                    f"round {round_}: both correct={both}, cache correct={cached_ok}, walks={walks}"
                )
    result.seconds = round(time.perf_counter() - started, 1)
    return result


# -- report --------------------------------------------------------------------------------------

_HEADER = (
    f"{'run':<28} {'records':>8} {'requests':>8} {'faults':>7} {'retries':>7} "
    f"{'lost':>5} {'dups':>5} {'equal':>6} {'seconds':>8}  faults by kind"
)


def _row(run: Run) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in run.faults.items()) or "-"
    return (
        f"{run.name:<28} {run.records:>8} {run.requests:>8} {run.faulted:>7} {run.retries:>7} "
        f"{run.lost:>5} {run.duplicates:>5} {'yes' if run.equal else 'NO':>6} "
        f"{run.seconds:>8.2f}  {kinds}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the soak, the kills and the contention runs; print the report.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (``--help`` lists them); ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        0 when every run equals the truth with nothing lost, doubled or left partial, else 1.

    Examples
    --------
    >>> main(["--records", "2000", "--kills", "2", "--rounds", "1"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=200_000, help="soak records (200000)")
    parser.add_argument("--fault-rate", type=float, default=0.15, help="share of faulted requests")
    parser.add_argument("--page-size", type=int, default=500, help="records per request (500)")
    parser.add_argument("--kills", type=int, default=8, help="kills per kind (8)")
    parser.add_argument("--kill-records", type=int, default=20_000, help="records for kills")
    parser.add_argument("--rounds", type=int, default=3, help="contention rounds (3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, faults and kills")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--verbose", action="store_true", help="show the retry warnings")
    parser.add_argument("--hostile", action="store_true", help="run only the hostile servers")
    args = parser.parse_args(argv)
    if sys.platform == "win32":
        parser.error("the kill runs need POSIX signals and flock")
    if not args.verbose:  # the retries are counted in the report; one line each is noise
        logging.getLogger("impactframe").addHandler(logging.NullHandler())
        logging.getLogger("impactframe").propagate = False

    started = time.perf_counter()
    report: dict[str, Any] = {}
    ok = True
    if not args.hostile:
        ok = _sandbox_runs(args, report)
    n_attacks, n_entries = len(hostile.ATTACKS), len(hostile.ENTRIES)
    print(f"\nhostile servers: {n_attacks} attacks x {n_entries} entry points")
    attacked = hostile.hostile()
    report["hostile"] = [asdict(r) for r in attacked]
    failed = [r for r in attacked if not r.ok]
    print(f"hostile runs: {len(attacked)}, failed {len(failed)}; per attack (max s, max peak MB):")
    for attack, outcomes, most_seconds, most_mb in hostile.summary(attacked):
        print(f"    {attack:<28} {outcomes:<40} {most_seconds:>6.2f} {most_mb:>7.1f}")
    ok = ok and not failed
    seconds = round(time.perf_counter() - started, 1)
    print(f"\n{'OK' if ok else 'FAILED'}: {seconds} s")
    if args.json is not None:
        report["arguments"] = {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        }
        report |= {"ok": ok, "seconds": seconds}
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


def _sandbox_runs(args: argparse.Namespace, report: dict[str, Any]) -> bool:
    """Parts 1 to 3 (soak, kills, contention); fills `report`; True when all passed."""
    print(f"soak: {args.records} records, fault rate {args.fault_rate}, page size {args.page_size}")
    print(_HEADER)
    with tempfile.TemporaryDirectory(prefix="impactframe-soak-") as folder:
        work = Path(folder)
        runs = soak(args.records, args.fault_rate, args.page_size, args.seed, work)
        faulted = [r for r in runs if r.requests and not r.name.endswith("hit")]
        total_requests = sum(r.requests for r in faulted)
        total_faults = sum(r.faulted for r in faulted)
        print(
            f"{'total':<28} {sum(r.records for r in runs):>8} {sum(r.requests for r in runs):>8} "
            f"{sum(r.faulted for r in runs):>7} {sum(r.retries for r in runs):>7} "
            f"{sum(r.lost for r in runs):>5} {sum(r.duplicates for r in runs):>5}"
        )
        share = total_faults / max(1, total_requests)
        print(f"faulted share of requests (runs that sent any): {share:.1%}")
        print(f"\nkills: {args.kills} per kind on {args.kill_records} records")
        killed = kills(args.kill_records, args.kills, args.seed, work)
        killed.append(contention(args.kill_records, args.rounds, args.seed, work))
        for result in killed:
            states = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
            print(f"{result.name:<48} {states:<24} failures {len(result.failures)}  "
                  f"{result.seconds:.1f} s")  # fmt: skip
            for where in result.points:
                print(f"    {where}")
            for failure in result.failures:
                print(f"  FAILED: {failure}")
    # The share of faulted requests is a property of the run; judge it when there are enough.
    enough_faults = share >= 0.10 or total_requests < 1000
    ok = all(r.ok for r in runs) and all(k.ok for k in killed) and enough_faults
    report |= {
        "runs": [asdict(r) | {"faulted": r.faulted} for r in runs],
        "faulted_share": round(share, 4),
        "kills": [asdict(k) for k in killed],
    }
    return ok


if __name__ == "__main__":
    sys.exit(main())
