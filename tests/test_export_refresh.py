"""export_parquet(path, ..., refresh=True) against the sandbox (SPEC §7): a nightly update."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
from pandas.testing import assert_frame_equal

from impactframe.export import export_parquet
from impactframe.sandbox import SandboxServer, generate_records

ROOT = Path(__file__).resolve().parents[1]
OLD = generate_records(500, seed=31, start="2024-01-01", end="2024-06-15")
#: New records from the old newest day on, some on that very day, with a new metadata key.
NEW = generate_records(150, seed=32, start="2024-06-15", end="2024-08-20")
for _i, _record in enumerate(NEW):
    if _i % 3 == 0:
        _record["metadata"] = {**(_record.get("metadata") or {}), "campaign": f"c{_i}"}


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(records=OLD, n_customer_records=0) as srv:
        yield srv


def _conn(server: SandboxServer, **more: Any) -> dict[str, Any]:
    return {"api_key": server.api_key, "base_url": server.url, "progress": False, **more}


def _files(path: Path) -> dict[str, pd.DataFrame]:
    """Each data file's rows, by folder and position of the file in name order."""
    out = {}
    folders: dict[str, list[Path]] = {}
    for file in sorted(path.rglob("*.parquet")):
        folders.setdefault(file.parent.relative_to(path).as_posix(), []).append(file)
    for folder, files in folders.items():
        for i, file in enumerate(files):
            out[f"{folder}#{i}"] = pq.ParquetFile(file).read().to_pandas()
    return out


def _marker(path: Path) -> dict[str, Any]:
    marker = json.loads((path / "_impactframe.json").read_text())
    return {k: v for k, v in marker.items() if k not in ("files", "created", "refreshed")}


def _assert_same_dataset(got: Path, expected: Path) -> None:
    """What readers see: the rows in reading order, the schema, the sidecars, the marker."""
    assert_frame_equal(pd.read_parquet(got), pd.read_parquet(expected))
    common = pq.read_schema(got / "_common_metadata")
    assert common.equals(pq.read_schema(expected / "_common_metadata"), check_metadata=True)
    for file in got.rglob("*.parquet"):
        assert pq.read_schema(file).equals(common, check_metadata=False), file
    rows = pq.read_metadata(got / "_metadata").num_rows
    assert rows == pq.read_metadata(expected / "_metadata").num_rows == len(pd.read_parquet(got))
    assert _marker(got) == _marker(expected)


@pytest.mark.parametrize(
    ("partition_by", "sort_order"),
    [
        (("year", "month"), "asc"),
        (("year", "month"), "desc"),
        (None, "asc"),
        (("impact_type",), "desc"),
        (("month", "day"), "asc"),
    ],
)
def test_refresh_after_new_records_equals_a_full_export(
    server: SandboxServer, tmp_path: Path, partition_by: Any, sort_order: str
) -> None:
    options = _conn(server, partition_by=partition_by, sort_order=sort_order, batch_records=70)
    first = export_parquet(tmp_path / "nightly", **options)
    assert first.records == len(OLD)
    server.set_records(OLD + NEW)
    result = export_parquet(tmp_path / "nightly", refresh=True, **options)
    full = export_parquet(tmp_path / "full", **options)
    assert result.records == full.records == len(OLD) + len(NEW)
    assert result.columns == full.columns
    assert "metadata_campaign" in result.columns
    _assert_same_dataset(tmp_path / "nightly", tmp_path / "full")


def test_refresh_asks_only_from_the_newest_day(server: SandboxServer, tmp_path: Path) -> None:
    options = _conn(server, concurrency=1)
    export_parquet(tmp_path / "d", **options)
    newest = max(r["time_utc"] for r in OLD)[:10]
    server.set_records(OLD + NEW)
    server.clear_log()
    export_parquet(tmp_path / "d", refresh=True, **options)
    pages = [r for r in server.requests if r.path == "/v1/records"]
    assert pages
    assert {r.params.get("start_date", [None])[0] for r in pages} == {newest}


def test_refresh_twice_gives_the_same_dataset(server: SandboxServer, tmp_path: Path) -> None:
    options = _conn(server, batch_records=80)
    export_parquet(tmp_path / "d", **options)
    server.set_records(OLD + NEW)
    export_parquet(tmp_path / "d", refresh=True, **options)
    once, marker = _files(tmp_path / "d"), _marker(tmp_path / "d")
    export_parquet(tmp_path / "d", refresh=True, **options)
    twice = _files(tmp_path / "d")
    assert once.keys() == twice.keys()
    for name, frame in once.items():
        assert_frame_equal(twice[name], frame, obj=name)
    assert _marker(tmp_path / "d") == marker


def test_only_the_touched_partitions_are_rewritten(server: SandboxServer, tmp_path: Path) -> None:
    # New records without new metadata keys: the schema stays, so untouched files stay.
    new = generate_records(60, seed=33, start="2024-06-15", end="2024-07-31")
    for record in new:
        record.pop("metadata", None)
    options = _conn(server, batch_records=90)
    export_parquet(tmp_path / "d", **options)
    before = {
        p.relative_to(tmp_path / "d").as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (tmp_path / "d").rglob("*.parquet")
    }
    server.set_records(OLD + new)
    export_parquet(tmp_path / "d", refresh=True, **options)
    after = {
        p.relative_to(tmp_path / "d").as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (tmp_path / "d").rglob("*.parquet")
    }
    touched = ("year=2024/month=06/", "year=2024/month=07/")
    kept = {name: stat for name, stat in before.items() if not name.startswith(touched)}
    assert kept
    assert all(after[name] == stat for name, stat in kept.items())
    rewritten = [name for name in after if name.startswith(touched)]
    assert rewritten
    assert not set(rewritten) & set(before)
    full = export_parquet(tmp_path / "full", **options)
    assert full.records == len(pd.read_parquet(tmp_path / "d"))
    _assert_same_dataset(tmp_path / "d", tmp_path / "full")


def test_a_future_dated_record_does_not_blind_the_refresh(
    server: SandboxServer, tmp_path: Path
) -> None:
    skewed = {"user_id": "Ufuture", "time_utc": "2099-01-01T00:00:00.000Z", "tree_planted": 1}
    server.set_records([*OLD, skewed])
    options = _conn(server, concurrency=1)
    export_parquet(tmp_path / "d", **options)
    today = dt.datetime.now(dt.UTC).date()
    late = {"user_id": "Ulate", "time_utc": f"{today}T00:00:00.000Z", "tree_planted": 7}
    server.set_records([*OLD, late, skewed])
    server.clear_log()
    export_parquet(tmp_path / "d", refresh=True, **options)
    starts = {r.params.get("start_date", [None])[0] for r in server.requests}
    assert starts == {today.isoformat()}
    users = pd.read_parquet(tmp_path / "d")["user_id"].tolist()
    assert users.count("Ulate") == 1
    assert users.count("Ufuture") == 1


def test_no_dataset_yet_is_a_full_export(server: SandboxServer, tmp_path: Path) -> None:
    result = export_parquet(tmp_path / "new", refresh=True, **_conn(server))
    assert result.records == len(OLD)
    (tmp_path / "empty").mkdir()
    assert export_parquet(tmp_path / "empty", refresh=True, **_conn(server)).records == len(OLD)


def test_a_capped_query_is_rebuilt_whole(server: SandboxServer, tmp_path: Path) -> None:
    options = _conn(server, max_records=100, sort_order="desc")
    export_parquet(tmp_path / "d", **options)
    server.set_records(OLD + NEW)
    export_parquet(tmp_path / "d", refresh=True, **options)
    export_parquet(tmp_path / "full", **options)
    _assert_same_dataset(tmp_path / "d", tmp_path / "full")


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"start_date": "2024-02-01"}, "query"),
        ({"filter_by": "tree_planted"}, "query"),
        ({"partition_by": ("year",)}, "partition_by"),
        ({"metadata": "json"}, "metadata"),
        ({"metadata_prefix": "m_"}, "metadata_prefix"),
        ({"max_records": 10}, "max_records"),
    ],
)
def test_other_options_are_refused(
    server: SandboxServer, tmp_path: Path, changed: dict[str, Any], named: str
) -> None:
    export_parquet(tmp_path / "d", **_conn(server))
    before = _files(tmp_path / "d")
    server.clear_log()
    with pytest.raises(ValueError, match=rf"^refresh: .*{named} ") as info:
        export_parquet(tmp_path / "d", refresh=True, **_conn(server, **changed))
    assert "overwrite=True" in str(info.value)
    assert server.requests == []
    after = _files(tmp_path / "d")
    assert after.keys() == before.keys()


def test_other_endpoint_is_refused(server: SandboxServer, tmp_path: Path) -> None:
    export_parquet(tmp_path / "d", **_conn(server))
    with pytest.raises(ValueError, match=r"^refresh: .*endpoint 'records'"):
        export_parquet(tmp_path / "d", "customer_records", refresh=True, **_conn(server))


def test_a_folder_that_is_not_a_dataset_is_refused(server: SandboxServer, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.md").write_text("mine")
    with pytest.raises(ValueError, match=r"^refresh: .*is not a dataset impactframe wrote"):
        export_parquet(folder, refresh=True, **_conn(server))
    assert (folder / "notes.md").read_text() == "mine"
    export_parquet(tmp_path / "d", **_conn(server))
    (tmp_path / "d" / "extra.txt").write_text("x")
    with pytest.raises(ValueError, match=r"^refresh: "):
        export_parquet(tmp_path / "d", refresh=True, **_conn(server))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"^refresh: .*not a folder"):
        export_parquet(tmp_path / "file", refresh=True, **_conn(server))
    with pytest.raises(ValueError, match=r"^refresh: 'yes' is not accepted"):
        export_parquet(tmp_path / "d", refresh="yes", **_conn(server))  # type: ignore[arg-type]


# --- a refresh killed mid-way ------------------------------------------------------------------


def test_a_killed_refresh_leaves_the_old_dataset_whole(
    server: SandboxServer, tmp_path: Path
) -> None:
    target = tmp_path / "d"
    options = _conn(server, partition_by=("year",), batch_records=50)
    export_parquet(target, **options)
    old = pd.read_parquet(target)
    server.set_records(OLD + NEW)
    spec = {
        "mode": "export",
        "key": server.api_key,
        "url": server.url,
        "page_size": 50,
        "batch_records": 50,
        "out": str(target),
        "refresh": True,
        "watch": str(tmp_path) + os.sep,
        "stop_at": 12,  # some files into the temporary folder
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTFRAME_")}
    env["PYTHONPATH"] = str(ROOT)
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._kill_child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("PAUSED"), line
        assert ".tmp-" in line  # paused while building beside the old dataset
        assert_frame_equal(pd.read_parquet(target), old)  # a reader meanwhile: the old one
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert_frame_equal(pd.read_parquet(target), old)
    assert any(p.name.startswith("d.tmp-") for p in tmp_path.iterdir())
    export_parquet(target, refresh=True, **options)  # cleans up and completes
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    export_parquet(tmp_path / "full", **options)
    _assert_same_dataset(target, tmp_path / "full")


# --- the command line --------------------------------------------------------------------------


def test_cli_export_refresh(server: SandboxServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTFRAME_")}
    env["PYTHONPATH"] = str(ROOT)
    env["IMPACTFRAME_API_KEY"] = server.api_key
    command = [sys.executable, "-m", "impactframe", "export", "records", "--out",
               str(tmp_path / "d"), "--base-url", server.url, "--no-progress"]  # fmt: skip

    def run(*more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *more], env=env, capture_output=True, text=True, timeout=120
        )

    assert run().returncode == 0
    server.set_records(OLD + NEW)
    refreshed = run("--refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert f"{len(OLD) + len(NEW):,} records" in refreshed.stdout
    refused = run("--refresh", "--start", "2024-03-01")
    assert refused.returncode != 0
    assert "refresh:" in refused.stderr
    assert "Traceback" not in refused.stderr
    export_parquet(tmp_path / "full", **_conn(server))
    _assert_same_dataset(tmp_path / "d", tmp_path / "full")


def test_a_column_only_the_replaced_day_had_goes_with_it(
    server: SandboxServer, tmp_path: Path
) -> None:
    # The newest day's records carry a metadata key that is gone when they are fetched again.
    day = "2024-06-15"
    old = [dict(r) for r in OLD]
    newest = [r for r in old if r["time_utc"].startswith(day)]
    assert newest
    for record in newest:
        record["metadata"] = {"only_then": "x"}
    server.set_records(old)
    options = _conn(server, batch_records=100)
    export_parquet(tmp_path / "d", **options)
    assert "metadata_only_then" in pd.read_parquet(tmp_path / "d").columns
    server.set_records(OLD + NEW)
    export_parquet(tmp_path / "d", refresh=True, **options)
    export_parquet(tmp_path / "full", **options)
    assert "metadata_only_then" not in pd.read_parquet(tmp_path / "d").columns
    _assert_same_dataset(tmp_path / "d", tmp_path / "full")


def test_customer_records_after_impacts_posted(tmp_path: Path) -> None:
    customers = generate_records(200, seed=34, customers=True, start="2024-01-01")
    with SandboxServer(records=[], customer_records=customers) as srv:
        options = _conn(srv, partition_by=("year",))
        export_parquet(tmp_path / "d", "customer_records", **options)
        for amount in (3, 4):
            response = requests.post(
                f"{srv.url}/v1/plant_tree",
                json={"amount": amount, "customer_email": "ada@example.com", "customer_name": "A"},
                headers={"x-api-key": srv.api_key},
                timeout=10,
            )
            assert response.status_code == 200, response.text
        result = export_parquet(tmp_path / "d", "customer_records", refresh=True, **options)
        export_parquet(tmp_path / "full", "customer_records", **options)
    assert result.records == len(customers) + 2
    emails = pd.read_parquet(tmp_path / "d")["customer_email"].tolist()
    assert emails.count("ada@example.com") >= 2
    _assert_same_dataset(tmp_path / "d", tmp_path / "full")


def test_two_refreshes_at_once_both_succeed(server: SandboxServer, tmp_path: Path) -> None:
    options = _conn(server, batch_records=60)
    export_parquet(tmp_path / "d", **options)
    server.set_records(OLD + NEW)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(export_parquet, tmp_path / "d", refresh=True, **options)]
        runs.append(pool.submit(export_parquet, tmp_path / "d", refresh=True, **options))
        results = [run.result(timeout=120) for run in runs]
    assert [r.records for r in results] == [len(OLD) + len(NEW)] * 2
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    export_parquet(tmp_path / "full", **options)
    _assert_same_dataset(tmp_path / "d", tmp_path / "full")
