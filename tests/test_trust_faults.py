"""Faults, kills and contention: nothing lost, nothing doubled, never a partial state.

The short version of ``benchmarks/soak.py`` (which runs the same checks on 200k records):

- **Soak.** A sandbox faults 15 % of requests at random (429 with ``Retry-After``, 500, 502,
  503, dropped connections, truncated bodies, a record repeated across a page boundary). Every
  load, with ``concurrency`` 1 and 4, with and without the cache, and every export, must equal
  the ground truth exactly: the records handed to the server, filtered and ordered here, built
  with ``records_to_frame``. Each run is tallied from the server's log (requests, faults by
  kind) and checked against the client's retries (one sleep and one warning per fault).
- **Kills.** A child process loading into a cache (or exporting over an old dataset) is killed
  with SIGKILL: at file operations picked from a trace of a complete run (every rename and
  removal, plus seeded random ones) and at a seeded random moment. The cache entry and the
  dataset must then be the old complete state or the new one, and the rerun must equal the
  truth and leave no temporary files or folders behind. The child pauses at the chosen file
  operation through an audit hook (``sys.addaudithook``): nothing in impactframe is patched.
- **Contention.** Two processes load the same query into the same cache at once.

Retries never sleep for real (the clients' ``_sleep`` is replaced).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import impactframe as ifr
from impactframe._cache._store import CacheKey, ParquetCache
from impactframe._frame._builder import records_to_frame
from impactframe._params import normalize_query
from impactframe.sandbox import Fault, SandboxServer, generate_records

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(120)

# --- ground truth and tallies -------------------------------------------------------------------


def truth_records(
    server: SandboxServer,
    endpoint: str = "records",
    *,
    filter_by: tuple[str, ...] | None = None,
    start: str | None = None,
    end: str | None = None,
    sort_order: str = "asc",
) -> list[dict[str, Any]]:
    """The records a query must return, computed from what the server was given."""
    records = server.served_records(endpoint)
    if filter_by is not None:
        records = [r for r in records if any(kind in r for kind in filter_by)]
    if start is not None:
        records = [r for r in records if r["time_utc"][:10] >= start]
    if end is not None:
        records = [r for r in records if r["time_utc"][:10] <= end]
    if sort_order == "desc":
        records.reverse()
    return records


def keys(frame: pd.DataFrame) -> collections.Counter[tuple[str, pd.Timestamp]]:
    return collections.Counter(zip(frame["user_id"], frame["time_utc"], strict=True))


@dataclass
class Tally:
    """What one run cost and what it got; ``lost`` and ``duplicates`` must be zero."""

    requests: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    lost: int = 0
    duplicates: int = 0

    @property
    def faulted(self) -> int:
        return sum(self.faults.values())

    @property
    def retries(self) -> int:
        # A repeated record is a fault of the data, not of the exchange: nothing to retry.
        return self.faulted - self.faults["repeat"]


def tally(server: SandboxServer, truth: pd.DataFrame, got: pd.DataFrame) -> Tally:
    result = Tally()
    for request in server.requests:
        result.requests += 1
        if request.fault:
            label = request.fault
            result.faults[str(request.status) if label == "status" else label] += 1
    expected, seen = keys(truth), keys(got)
    result.lost = sum((expected - seen).values())
    result.duplicates = sum((seen - expected).values())
    return result


# --- the short soak -----------------------------------------------------------------------------

FAULT_RATE = 0.15


@pytest.fixture(scope="module")
def soak_server() -> Iterator[SandboxServer]:
    with SandboxServer(
        n_records=8000, n_customer_records=3000, seed=11, fault_rate=FAULT_RATE, fault_seed=3
    ) as server:
        yield server


@pytest.fixture
def soak_client(soak_server: SandboxServer, fake_sleep: Any) -> Iterator[ifr.Client]:
    with ifr.Client(soak_server.api_key, base_url=soak_server.url) as client:
        client._sleep = fake_sleep
        client._rng = random.Random(0)
        yield client


def check_run(
    server: SandboxServer,
    truth: pd.DataFrame,
    got: pd.DataFrame,
    *,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> Tally:
    """The run equals the truth; every fault the server logged was retried exactly once."""
    assert_frame_equal(got, truth)
    result = tally(server, truth, got)
    assert (result.lost, result.duplicates) == (0, 0)
    # 15 % on average; 5 % is the floor of a run (benchmarks/soak.py checks >= 10 % overall).
    assert result.faulted >= 0.05 * result.requests, result
    assert len(sleeps) == result.retries, result
    warned = [r for r in caplog.records if r.name == "impactframe" and "retry" in r.getMessage()]
    assert len(warned) == result.retries
    sleeps.clear()
    caplog.clear()
    server.clear_log()
    return result


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_soak_load_equals_the_truth(
    soak_server: SandboxServer,
    soak_client: ifr.Client,
    fake_sleep: Any,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    concurrency: int,
    cache: bool,
) -> None:
    soak_server.clear_log()
    truth = records_to_frame(truth_records(soak_server))
    options: dict[str, Any] = {"concurrency": concurrency, "page_size": 50, "progress": False}
    if cache:
        options["cache"] = tmp_path / "cache"
    got = ifr.load_records(client=soak_client, **options)
    first = check_run(soak_server, truth, got, sleeps=fake_sleep, caplog=caplog)
    assert len(first.faults) >= 4, first  # of 429, 500, 502, 503, drop, truncate, repeat
    if not cache:
        return
    # Cached: the same frame, values and dtypes, with zero requests.
    again = ifr.load_records(client=soak_client, **options)
    assert soak_server.requests == []
    assert_frame_equal(again, truth)
    # A refresh under faults merges the newest day again: still exactly the truth.
    refreshed = ifr.load_records(client=soak_client, refresh=True, **options)
    assert soak_server.requests
    assert_frame_equal(refreshed, truth)
    assert len(fake_sleep) == tally(soak_server, truth, refreshed).retries


def test_soak_customer_records_filtered_descending(
    soak_server: SandboxServer,
    soak_client: ifr.Client,
    fake_sleep: Any,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    soak_server.clear_log()
    kinds = ("tree_planted", "coral_restored", "money_donated")
    truth = records_to_frame(
        truth_records(soak_server, "customer_records", filter_by=kinds, sort_order="desc"),
        "customer_records",
    )
    got = ifr.load_customer_records(
        client=soak_client,
        filter_by=list(kinds),
        sort_order="desc",
        concurrency=4,
        page_size=20,
        cache=tmp_path / "cache",
        progress=False,
    )
    check_run(soak_server, truth, got, sleeps=fake_sleep, caplog=caplog)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_soak_short_and_empty_pages_with_a_date_range(
    soak_server: SandboxServer,
    soak_client: ifr.Client,
    fake_sleep: Any,
    caplog: pytest.LogCaptureFixture,
    concurrency: int,
) -> None:
    # filter_by applied after limit (DynamoDB style): short and empty pages carry cursors.
    soak_server.clear_log()
    soak_server.filter_after_limit = True
    try:
        kinds = ("coral_restored",)  # the rarest: a third of the pages come back empty
        truth = records_to_frame(
            truth_records(
                soak_server,
                filter_by=kinds,
                start="2022-03-01",
                end="2024-10-31",
                sort_order="desc",
            )
        )
        got = ifr.load_records(
            client=soak_client,
            filter_by=kinds,
            start_date="2022-03-01",
            end_date="2024-10-31",
            sort_order="desc",
            page_size=20,
            concurrency=concurrency,
            progress=False,
        )
        assert any(r.records == 0 for r in soak_server.requests)  # empty pages did occur
        check_run(soak_server, truth, got, sleeps=fake_sleep, caplog=caplog)
    finally:
        soak_server.filter_after_limit = False


def read_dataset(path: Path, partition_by: tuple[str, ...]) -> pd.DataFrame:
    """An exported dataset as a frame in ``(time_utc, user_id)`` order, partitions dropped."""
    frame = pd.read_parquet(path).drop(columns=list(partition_by))
    frame["impact_type"] = frame["impact_type"].astype(str)
    return frame.sort_values(["time_utc", "user_id"], ignore_index=True)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as `read_dataset` gives it back."""
    frame = frame.copy()
    frame["impact_type"] = frame["impact_type"].astype(str)
    return frame.sort_values(["time_utc", "user_id"], ignore_index=True)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_soak_export_equals_the_truth(
    soak_server: SandboxServer,
    soak_client: ifr.Client,
    fake_sleep: Any,
    tmp_path: Path,
    concurrency: int,
) -> None:
    soak_server.clear_log()
    truth = records_to_frame(truth_records(soak_server))
    out = tmp_path / "records"
    # Batches of 700 records over pages of 50: repeats land on batch boundaries too.
    result = ifr.export_parquet(
        out,
        client=soak_client,
        partition_by=("year",),
        page_size=50,
        batch_records=700,
        concurrency=concurrency,
        progress=False,
    )
    back = read_dataset(out, ("year",))
    counts = tally(soak_server, truth, back)
    assert result.records == len(truth)
    assert (counts.lost, counts.duplicates) == (0, 0)
    assert counts.faults["repeat"] > 0
    assert len(fake_sleep) == counts.retries
    assert_frame_equal(back, comparable(truth)[list(back.columns)], check_dtype=False)
    assert [p.name for p in tmp_path.iterdir()] == ["records"]


# --- faults that outlast the retries ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault("status", status=503), ifr.APIError),
        (Fault("status", status=429, retry_after="1"), ifr.RateLimitError),
        (Fault("drop"), ifr.APIError),
        (Fault("truncate"), ifr.APIError),
    ],
    ids=["503", "429", "drop", "truncate"],
)
def test_persistent_fault_raises_and_leaves_cache_and_export_as_they_were(
    make_sandbox: Callable[..., SandboxServer],
    fake_sleep: Any,
    tmp_path: Path,
    fault: Fault,
    error: type[Exception],
) -> None:
    server = make_sandbox(n_records=600, n_customer_records=0)
    client = ifr.Client(server.api_key, base_url=server.url, max_retries=3)
    client._sleep = fake_sleep
    cache = tmp_path / "cache"
    old = ifr.load_records(client=client, cache=cache, page_size=100, progress=False)
    ifr.export_parquet(tmp_path / "out", client=client, page_size=100, progress=False)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    server.clear_log()

    def two_pages_then_the_fault() -> None:
        # Two valid pages of new records come through, then every request fails.
        new = generate_records(200, seed=1, start="2026-01-01", end="2026-12-31")
        for i in range(2):
            page = {"user_records": new[100 * i : 100 * (i + 1)], "cursor": f"c{i}"}
            server.inject(Fault("status", status=200, body=json.dumps(page)), times=1)
        server.inject(fault, times=None)

    two_pages_then_the_fault()
    with pytest.raises(error) as info:
        # One chain: the injected pages answer its requests in order.
        ifr.load_records(
            client=client, cache=cache, refresh="full", page_size=100, concurrency=1
        )
    assert len(server.requests) - 2 == 4  # the first try and max_retries: then the error
    assert len(fake_sleep) == 3
    server.clear_faults()
    two_pages_then_the_fault()
    with pytest.raises(error):
        ifr.export_parquet(
            tmp_path / "out", client=client, page_size=100, overwrite=True, progress=False,
            concurrency=1,
        )  # fmt: skip
    assert isinstance(info.value, ifr.ImpactFrameError)
    server.clear_faults()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    server.clear_log()
    assert_frame_equal(ifr.load_records(client=client, cache=cache, page_size=100), old)
    assert server.requests == []


@pytest.mark.parametrize("where", ["load", "export"])
def test_max_records_with_a_repeated_boundary_record_returns_the_cap(
    make_sandbox: Callable[..., SandboxServer], tmp_path: Path, where: str
) -> None:
    server = make_sandbox(n_records=5000, n_customer_records=0)
    truth = records_to_frame(server.served_records()[:2500])
    server.inject(Fault("repeat"), times=1)
    options: dict[str, Any] = {"api_key": server.api_key, "base_url": server.url}
    options["progress"] = False
    if where == "load":
        got = ifr.load_records(page_size=1000, max_records=2500, **options)
        assert_frame_equal(got, truth)
    else:
        result = ifr.export_parquet(tmp_path / "out", page_size=1000, max_records=2500, **options)
        assert result.records == len(truth)


# --- kills --------------------------------------------------------------------------------------

#: The child that loads into a cache or exports over a dataset, counting its file operations
#: with an audit hook: it pauses at ``stop_at`` (for the kill), prints them all with ``trace``,
#: and with ``wait_go`` waits for a line on stdin. The soak runs the same child; its protocol is
#: in benchmarks/_kill_child.py (run from the repository root, so no import is needed here).
CHILD = [sys.executable, "-m", "benchmarks._kill_child"]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTFRAME_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


_CHILDREN: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_children() -> Iterator[None]:
    """A test that fails half-way must not leave its children paused for ten minutes."""
    yield
    while _CHILDREN:
        proc = _CHILDREN.pop()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def start_child(spec: dict[str, Any], log: Path) -> subprocess.Popen[str]:
    with log.open("a") as stderr:
        proc = subprocess.Popen(
            [*CHILD, json.dumps(spec)],
            stdin=subprocess.PIPE if spec.get("wait_go") else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=ROOT,
            env=child_env(),
        )
    _CHILDREN.append(proc)
    return proc


def finish_child(proc: subprocess.Popen[str], log: Path, timeout: float = 60) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    assert proc.returncode == 0, log.read_text()[-3000:]
    return out


def run_child(spec: dict[str, Any], log: Path) -> Any:
    """Run a child to the end; returns what it printed after DONE."""
    out = finish_child(start_child(spec, log), log)
    return json.loads(out.split("DONE", 1)[1])


def kill_children(specs: list[dict[str, Any]], log: Path, rng: random.Random) -> list[str]:
    """Start one child per spec at once; SIGKILL each at its ``stop_at`` file operation or,
    without one, at a random moment. Returns where each was killed."""
    started = time.monotonic()
    procs = [start_child(spec, log) for spec in specs]
    wheres = [""] * len(specs)
    # Timed kills first: the others wait, paused, at their file operation.
    order = sorted(range(len(specs)), key=lambda i: specs[i].get("stop_at") is not None)
    for i in order:
        proc = procs[i]
        assert proc.stdout is not None
        if specs[i].get("stop_at") is None:
            after = rng.uniform(0.8, 1.4)  # after the import, while pages are fetched
            time.sleep(max(0.0, started + after - time.monotonic()))
            wheres[i] = f"killed after {after:.2f} s"
        else:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "a child never reached its kill point"
            wheres[i] = proc.stdout.readline().strip()
            assert wheres[i].startswith(("PAUSED", "DONE")), log.read_text()[-3000:]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return wheres


def pick_kill_points(ops: list[list[str]], rng: random.Random, n_random: int) -> list[int]:
    """File operations of a traced run to kill at: those that decide between old and new
    (the last folder made, the last two renames, the first tree removal, the last file
    removal), plus `n_random` others."""

    def at(event: str) -> list[int]:
        return [i for i, (name, _) in enumerate(ops, 1) if name == event]

    chosen = {*at("os.mkdir")[-1:], *at("os.rename")[-2:], *at("shutil.rmtree")[:1]}
    chosen |= {*at("os.remove")[-1:]}
    others = [i for i in range(1, len(ops) + 1) if i not in chosen]
    chosen |= set(rng.sample(others, min(n_random, len(others))))
    return sorted(chosen)


@pytest.fixture(scope="module")
def kill_server() -> Iterator[SandboxServer]:
    records = generate_records(2000, seed=21, end="2025-06-30")
    with SandboxServer(records=records, customer_records=[], fault_rate=0.1, latency=0.002) as s:
        yield s


NEWER = generate_records(300, seed=22, start="2025-07-01", end="2025-12-31")


def records_key(client: ifr.Client) -> CacheKey:
    """The cache key of ``load_records`` with default options."""
    query = normalize_query("records")
    return CacheKey(
        client.fingerprint, "records", query, None, "columns", "metadata_", "numpy_nullable"
    )


def quiet_client(server: SandboxServer) -> ifr.Client:
    """A client of `server` whose retries do not sleep."""
    client = ifr.Client(server.api_key, base_url=server.url)
    client._sleep = lambda _s: None
    return client


@pytest.fixture
def kill_client(kill_server: SandboxServer) -> ifr.Client:
    """A client of the kill server whose retries do not sleep."""
    return quiet_client(kill_server)


@contextlib.contextmanager
def serving_newer(server: SandboxServer) -> Iterator[pd.DataFrame]:
    """Serve NEWER records too during the block; yields the frame of all the records."""
    old_records = server.served_records()
    server.set_records(old_records + NEWER)
    try:
        yield records_to_frame(server.served_records())
    finally:
        server.set_records(old_records)


def kill_at_traced_points(
    spec: Callable[[Path], dict[str, Any]], tmp_path: Path, rng: random.Random
) -> list[tuple[Path, str]]:
    """Run a child to the end in ``tmp_path / "traced"``, then one child per decisive file
    operation of that trace and one more killed at a random moment, each in a fresh folder
    that ``spec(folder)`` prepares. Returns each folder and where its child was killed."""
    log = tmp_path / "child.log"
    ops = run_child({**spec(tmp_path / "traced"), "trace": True}, log)
    points: list[int | None] = [*pick_kill_points(ops, rng, 0), None]
    folders = [tmp_path / f"run{i}" for i in range(len(points))]
    specs = [{**spec(f), "stop_at": point} for f, point in zip(folders, points, strict=True)]
    return list(zip(folders, kill_children(specs, log, rng), strict=True))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")
def test_killed_cached_load_leaves_the_old_or_the_new_entry(
    kill_server: SandboxServer, kill_client: ifr.Client, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot"
    old = ifr.load_records(client=kill_client, cache=snapshot, progress=False)
    with serving_newer(kill_server) as new:

        def spec(cache: Path) -> dict[str, Any]:
            shutil.copytree(snapshot, cache)
            return {
                "mode": "load", "key": kill_server.api_key, "url": kill_server.url,
                "cache": str(cache), "refresh": "full", "page_size": 100, "watch": str(cache),
            }  # fmt: skip

        killed = kill_at_traced_points(spec, tmp_path, random.Random(7))
        assert_frame_equal(ParquetCache(tmp_path / "traced").get(records_key(kill_client)), new)
        outcomes: collections.Counter[str] = collections.Counter()
        for cache, where in killed:
            got = ParquetCache(cache).get(records_key(kill_client))  # a CacheWarning fails the test
            assert got is not None, where
            outcomes["old" if got.equals(old) else "new"] += 1
            assert_frame_equal(got, old if got.equals(old) else new, obj=where)
            # The rerun completes, equals the truth and leaves one manifest and one data file.
            rerun = ifr.load_records(client=kill_client, cache=cache, refresh="full")
            assert_frame_equal(rerun, new)
            folder = cache / kill_client.fingerprint / "records"
            entry = next(p for p in folder.iterdir() if p.is_dir())
            names = sorted(p.name for p in entry.iterdir())
            assert len(names) == 2, (where, names)
            assert names[1] == "manifest.json", (where, names)
        assert outcomes["old"], outcomes
        assert outcomes["new"], outcomes


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")
def test_killed_first_cached_load_leaves_no_entry_or_a_complete_one(
    kill_server: SandboxServer, kill_client: ifr.Client, tmp_path: Path
) -> None:
    rng = random.Random(8)
    log = tmp_path / "child.log"
    truth = records_to_frame(kill_server.served_records())
    base: dict[str, Any] = {"mode": "load", "key": kill_server.api_key, "url": kill_server.url}
    base |= {"refresh": False, "page_size": 100, "watch": str(tmp_path)}
    specs = [
        {**base, "cache": str(tmp_path / f"cache{i}"), "stop_at": point}
        for i, point in enumerate([rng.randint(3, 12), None])
    ]
    for spec, where in zip(specs, kill_children(specs, log, rng), strict=True):
        got = ParquetCache(Path(spec["cache"])).get(records_key(kill_client))
        if got is not None:
            assert_frame_equal(got, truth, obj=where)
        rerun = ifr.load_records(client=kill_client, cache=spec["cache"])
        assert_frame_equal(rerun, truth)


def dataset_state(path: Path, old: pd.DataFrame, new: pd.DataFrame, where: str) -> str:
    """``"old"`` or ``"new"``: the dataset at `path` must be one of them, complete."""
    assert path.is_dir(), f"{where}: no dataset at the path"
    assert (path / "_common_metadata").is_file(), where
    back = read_dataset(path, ("year",))
    for name, frame in (("old", old), ("new", new)):
        expected = comparable(frame)[list(back.columns)]
        if len(back) == len(expected):
            assert_frame_equal(back, expected, check_dtype=False, obj=where)
            return name
    msg = f"{where}: {len(back)} rows, neither {len(old)} nor {len(new)}"
    raise AssertionError(msg)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")
def test_killed_export_leaves_the_old_or_the_new_dataset(
    kill_server: SandboxServer, kill_client: ifr.Client, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot"
    options: dict[str, Any] = {"batch_records": 800, "partition_by": ("year",)}
    ifr.export_parquet(snapshot, client=kill_client, progress=False, **options)
    old = records_to_frame(kill_server.served_records())
    with serving_newer(kill_server) as new:

        def spec(parent: Path) -> dict[str, Any]:
            shutil.copytree(snapshot, parent / "records")
            return {
                "mode": "export", "key": kill_server.api_key, "url": kill_server.url,
                "out": str(parent / "records"), "page_size": 100, "batch_records": 800,
                "watch": str(parent),
            }  # fmt: skip

        killed = kill_at_traced_points(spec, tmp_path, random.Random(9))
        assert dataset_state(tmp_path / "traced" / "records", old, new, "traced run") == "new"
        outcomes: collections.Counter[str] = collections.Counter()
        for parent, where in killed:
            out = parent / "records"
            outcomes[dataset_state(out, old, new, where)] += 1
            # The rerun removes what the killed export left and equals the truth.
            ifr.export_parquet(out, client=kill_client, overwrite=True, progress=False, **options)
            assert dataset_state(out, old, new, f"rerun after {where}") == "new"
            assert sorted(p.name for p in parent.iterdir()) == ["records"], where
        assert outcomes["old"], outcomes
        assert outcomes["new"], outcomes


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_two_processes_loading_into_one_cache(kill_server: SandboxServer, tmp_path: Path) -> None:
    cache, log = tmp_path / "cache", tmp_path / "child.log"
    truth = records_to_frame(kill_server.served_records())
    spec = {
        "mode": "load", "key": kill_server.api_key, "url": kill_server.url,
        "cache": str(cache), "refresh": False, "page_size": 100, "watch": str(cache),
        "wait_go": True,
    }  # fmt: skip
    kill_server.clear_log()
    procs = [start_child({**spec, "pickle": str(tmp_path / f"{i}.pkl")}, log) for i in range(2)]
    for proc in procs:  # both have imported impactframe: let them go at once
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY", log.read_text()[-3000:]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    spans = [
        json.loads(finish_child(proc, log).split("SPAN", 1)[1].split("\n")[0]) for proc in procs
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # they overlapped
    for i in range(2):
        assert_frame_equal(pd.read_pickle(tmp_path / f"{i}.pkl"), truth)
    # A load's first request: no cursor and the query's own (open) dates; the date windows
    # that follow it (concurrency="auto") carry dates.
    walks = [
        r
        for r in kill_server.requests
        if r.status == 200
        and not r.fault
        and not {"cursor", "start_date", "end_date"} & set(r.params)
        and r.params.get("limit") == ["100"]
    ]
    # The lock serialises them: the second waits, then is served by the first's entry.
    assert len(walks) == 1
    client = ifr.Client(kill_server.api_key, base_url=kill_server.url)
    kill_server.clear_log()
    assert_frame_equal(ifr.load_records(client=client, cache=cache, page_size=100), truth)
    assert kill_server.requests == []


def test_tally_counts_what_the_server_logged(make_sandbox: Callable[..., SandboxServer]) -> None:
    # The soak's bookkeeping itself: two injected faults, one retried, one repeat.
    server = make_sandbox(n_records=30, n_customer_records=0)
    server.inject(Fault("status", status=502), times=1)
    server.inject(Fault("repeat"), times=1)
    client = quiet_client(server)
    got = ifr.load_records(client=client, page_size=10, progress=False, concurrency=1)
    counts = tally(server, records_to_frame(server.served_records()), got)
    assert counts.faults == {"502": 1, "repeat": 1}
    assert (counts.requests, counts.retries, counts.lost, counts.duplicates) == (5, 1, 0, 0)
    counts = tally(server, records_to_frame(server.served_records()), got.iloc[1:])
    assert counts.lost == 1
