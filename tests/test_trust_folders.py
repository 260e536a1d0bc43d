"""What impactframe may delete, change or write (SPEC §6, §7, §9, §10), against the sandbox.

An export replaces only a dataset it marked as its own; the working folder, the home folder
and a filesystem root are never replaced. The cache changes the mode of no folder it did not
create. A refresh is never blinded by a record dated in the future. A bad path is a clear
error naming it, before any request; the CLI creates no folder for ``fetch --out``. CSV cells
that a spreadsheet would run are neutralised. CLI cases run ``python -m impactframe``.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import os
import pty
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pytest

from impactframe import load_customer_records, load_records
from impactframe.export import export_parquet
from impactframe.export._place import MARKER
from impactframe.sandbox import SandboxServer, generate_records

ROOT = Path(__file__).resolve().parents[1]
RECORDS = generate_records(120, seed=41, start="2024-01-01", end="2024-12-31")


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(records=RECORDS, customer_records=[]) as srv:
        yield srv


@pytest.fixture
def conn(server: SandboxServer) -> dict[str, Any]:
    server.clear_log()
    return {"api_key": server.api_key, "base_url": server.url, "progress": False}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    """``python -m impactframe ARGS`` in a real child process."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "impactframe", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` made unwritable, for root too (the immutable flag), restored afterwards."""
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a folder read-only here")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


# -- export: overwrite replaces only impactframe's own datasets -----------------------------------


def test_overwrite_keeps_a_folder_of_the_users(
    server: SandboxServer, conn: dict[str, Any], tmp_path: Path
) -> None:
    # Every file here "looked like a dataset" before: Parquet, or a name starting with _ or .
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "results_final.parquet").write_bytes(b"PAR1 the user's results PAR1")
    (folder / "_NOTES.md").write_text("what I found")
    (folder / ".env").write_text("SECRET=1")
    before = snapshot(folder)
    with pytest.raises(ValueError, match="not a dataset impactframe wrote") as info:
        export_parquet(folder, **conn, overwrite=True)
    assert str(folder) in str(info.value)
    assert snapshot(folder) == before
    assert server.requests == []


def test_home_working_folder_and_root_are_never_replaced(
    server: SandboxServer, conn: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("alias ll='ls -l'")
    work = home / "project"
    work.mkdir()
    (work / "part-0.parquet").write_bytes(b"PAR1")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    cases = {
        "~": "home folder",
        ".": "current working folder",
        str(work): "current working folder",
        "..": "home folder",
        str(tmp_path): "holds the current working folder",
        "/": "filesystem root",
    }
    for path, why in cases.items():
        with pytest.raises(ValueError, match=why) as info:
            export_parquet(path, **conn, overwrite=True)
        assert repr(path) in str(info.value)
        assert "nothing was deleted" in str(info.value)
    assert (home / ".bashrc").read_text() == "alias ll='ls -l'"
    assert (work / "part-0.parquet").read_bytes() == b"PAR1"
    assert server.requests == []


def test_a_marked_dataset_is_replaced_and_its_marker_says_what_wrote_it(
    conn: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "trees"
    first = export_parquet(out, **conn, filter_by="tree_planted", start_date="2024-03-01")
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "impactframe"
    assert marker["endpoint"] == "records"
    assert marker["query"]["filter_by"] == ["tree_planted"]
    assert marker["query"]["start_date"] == "2024-03-01"
    assert marker["package_version"]
    data = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert marker["files"] == data
    assert len(data) == first.files
    text = (out / MARKER).read_text()
    assert conn["api_key"] not in text
    assert conn["base_url"] not in text
    # Readers do not take the marker for data.
    assert len(pd.read_parquet(out)) == first.records

    second = export_parquet(out, **conn, overwrite=True, max_records=5)
    assert second.records == 5
    assert len(pd.read_parquet(out)) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["trees"]


def test_a_marked_dataset_holding_a_file_of_the_users_is_refused(
    server: SandboxServer, conn: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "records"
    export_parquet(out, **conn, max_records=20)
    month = next(p for p in (out / "year=2024").iterdir())
    (month / "my-analysis.parquet").write_bytes(b"PAR1 mine")
    (out / "README.md").write_text("mine too")
    before = snapshot(out)
    server.clear_log()
    with pytest.raises(ValueError, match="not a dataset impactframe wrote") as info:
        export_parquet(out, **conn, overwrite=True)
    assert "README.md" in str(info.value) or "my-analysis.parquet" in str(info.value)
    assert snapshot(out) == before
    assert server.requests == []


def test_demo_keeps_a_file_of_the_users_in_its_folders(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    (out / "records_dataset").mkdir(parents=True)
    (out / "records_dataset" / "keep.parquet").write_bytes(b"PAR1 mine")
    args = ("demo", "--out", str(out), "--records", "60", "--customer-records", "40")
    refused = cli(*args, "--no-progress", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1
    assert "--out" in refused.stderr
    assert (out / "records_dataset" / "keep.parquet").read_bytes() == b"PAR1 mine"
    assert not (out / "records.parquet").exists()

    # A new folder: the demo marks it, and a second run replaces only its own files there.
    fresh = tmp_path / "fresh"
    for _ in range(2):
        done = cli(*args[:2], str(fresh), *args[3:], "--no-progress", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    (fresh / "records.parquet").unlink()
    (fresh / "records.parquet").mkdir()  # now not the demo's: another run leaves it
    (fresh / "records.parquet" / "x").write_text("mine")
    again = cli(*args[:2], str(fresh), *args[3:], "--no-progress", cwd=tmp_path)
    assert again.returncode == 2, again.stderr  # refused before anything starts
    assert "'records.parquet'" in again.stderr
    assert (fresh / "records.parquet" / "x").read_text() == "mine"


# -- export: bad paths are clear errors, before any request ---------------------------------------


def test_bad_export_paths_name_the_path_before_any_request(
    server: SandboxServer, conn: dict[str, Any], tmp_path: Path
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with read_only(tmp_path / "locked") as locked:
        cases = {
            blocker / "out": "is a file, not a folder",
            blocker / "deeper" / "out": "is a file, not a folder",
            blocker: "exists and is not a folder",
            locked / "out": "no permission",
            locked / "missing" / "out": "no permission",
        }
        for path, why in cases.items():
            with pytest.raises(ValueError, match=why) as info:
                export_parquet(path, **conn)
            assert str(path) in str(info.value)
        assert list(locked.iterdir()) == []
    assert server.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "notes.txt"]


def test_fetch_creates_no_missing_folder(server: SandboxServer, tmp_path: Path) -> None:
    top = Path("/") / f"impactframe-test-{uuid.uuid4().hex[:12]}"
    env = {"IMPACTFRAME_API_KEY": server.api_key, "IMPACTFRAME_BASE_URL": server.url}
    server.clear_log()
    try:
        result = cli("fetch", "records", "--out", str(top / "dir" / "x.parquet"), "--no-progress",
                     cwd=tmp_path, env=env)  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1
        assert str(top / "dir") in result.stderr
        assert "does not exist" in result.stderr
        assert not top.exists()
        assert server.requests == []
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_cli_says_flags_not_python_keywords(server: SandboxServer, tmp_path: Path) -> None:
    env = {"IMPACTFRAME_API_KEY": server.api_key, "IMPACTFRAME_BASE_URL": server.url}
    args = ("export", "records", "--out", "ds", "--max-records", "3", "--no-progress")
    assert cli(*args, cwd=tmp_path, env=env).returncode == 0
    twice = cli(*args, cwd=tmp_path, env=env)
    assert twice.returncode == 2
    assert "--overwrite" in twice.stderr
    assert "overwrite=True" not in twice.stderr
    assert cli(*args, "--overwrite", cwd=tmp_path, env=env).returncode == 0

    insecure = cli("fetch", "records", "--out", "x.parquet", "--base-url", "http://example.com",
                   cwd=tmp_path, env=env)  # fmt: skip
    assert insecure.returncode == 2
    assert "--allow-insecure" in insecure.stderr
    assert "allow_insecure=True" not in insecure.stderr


# -- export: partitions -------------------------------------------------------------------------


def test_month_partitions_read_back_in_calendar_order_as_integers(
    conn: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "records"
    export_parquet(out, **conn)
    months = sorted({int(r["time_utc"][5:7]) for r in RECORDS})
    assert len(months) >= 10  # the text order 1, 10, 11, 12, 2 would show
    df = pd.read_parquet(out)
    assert list(df["month"].cat.categories) == months
    assert df["month"].cat.categories.dtype.kind == "i"
    assert list(pd.unique(df["month"].astype(int))) == months  # rows in calendar order
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert str(table.schema.field("month").type).startswith("int")
    assert list(dict.fromkeys(table.column("month").to_pylist())) == months
    duckdb = pytest.importorskip("duckdb")
    glob = f"{out}/**/*.parquet"
    rows = duckdb.sql(
        f"SELECT DISTINCT CAST(month AS INTEGER) AS m FROM read_parquet('{glob}', "
        "hive_partitioning = true) ORDER BY month"
    ).fetchall()
    assert [m for (m,) in rows] == months  # the folder text sorts in calendar order


def test_partition_by_none_or_one_name(conn: dict[str, Any], tmp_path: Path) -> None:
    flat = export_parquet(tmp_path / "flat", **conn, partition_by=None, max_records=7)
    assert flat.partitions == 1
    assert not any(p.is_dir() for p in (tmp_path / "flat").iterdir())
    years = export_parquet(tmp_path / "years", **conn, partition_by="year", max_records=7)
    assert [p.name for p in (tmp_path / "years").iterdir() if p.is_dir()] == ["year=2024"]
    assert years.columns[-1] == "year"


def test_result_plurals(conn: dict[str, Any], tmp_path: Path) -> None:
    result = export_parquet(tmp_path / "one", **conn, partition_by=(), max_records=1)
    text = str(result)
    assert text.startswith("1 record -> ")
    assert "(1 file, 1 partition, " in text


# -- the cache changes the mode of no folder it did not create -----------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_cache_keeps_the_mode_of_folders_it_did_not_create(
    conn: dict[str, Any], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2775)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    target = tmp_path / "target"
    target.mkdir()
    target.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(target)
    for folder, mode in ((shared, 0o2775), (sticky, 0o1777), (link, 0o755)):
        load_records(**conn, cache=folder, max_records=5)
        assert stat.S_IMODE(folder.stat().st_mode) == mode, folder
        made = [p for p in Path(folder).resolve().rglob("*")]
        assert made, folder
        for path in made:
            expected = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) == expected, path
    # A folder the cache creates, with its missing parents, is private.
    new = tmp_path / "a" / "b" / "cache"
    load_records(**conn, cache=new, max_records=5)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", new):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# -- refresh --------------------------------------------------------------------------------------


def test_a_future_record_does_not_blind_refresh(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    old = generate_records(30, seed=5, start="2024-01-01", end="2024-06-30")
    future = {**old[-1], "time_utc": "2099-01-01T00:00:00.000Z"}
    with socket.socket() as probe:  # one port for both servers: one account fingerprint
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = tmp_path / "cache"
    with SandboxServer(records=[*old, future], customer_records=[], port=port) as first:
        conn = {"api_key": first.api_key, "base_url": first.url, "progress": False}
        assert len(load_records(**conn, cache=cache)) == 31
    fresh = {**old[0], "time_utc": f"{today.isoformat()}T00:00:01.000Z"}
    with SandboxServer(records=[*old, fresh, future], customer_records=[], port=port) as second:
        refreshed = load_records(**conn, cache=cache, refresh=True)
        starts = {tuple(entry.params.get("start_date", ())) for entry in second.requests}
    assert starts == {(today.isoformat(),)}  # not 2099-01-01: the clamp to today
    assert len(refreshed) == 32
    assert pd.Timestamp(fresh["time_utc"]) in set(refreshed["time_utc"])

    listing = cli("cache", "list", "--cache-dir", str(cache), cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert f"synced {today.isoformat()}" in listing.stdout
    assert "built " in listing.stdout
    assert " UTC" in listing.stdout


def test_refresh_without_cache_is_refused(server: SandboxServer, conn: dict[str, Any]) -> None:
    for refresh in (True, "full"):
        with pytest.raises(ValueError, match="refresh"):
            load_records(**conn, refresh=refresh)
        with pytest.raises(ValueError, match="refresh"):
            load_customer_records(**conn, refresh=refresh)
    assert server.requests == []


def test_cache_is_a_flag_and_the_folder_its_own_option(
    server: SandboxServer, tmp_path: Path
) -> None:
    env = {
        "IMPACTFRAME_API_KEY": server.api_key,
        "IMPACTFRAME_BASE_URL": server.url,
        "IMPACTFRAME_CACHE_DIR": str(tmp_path / "default-cache"),
    }
    done = cli("fetch", "--cache", "records", "--out", "x.parquet", "--no-progress",
               cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "default-cache").is_dir()
    mine = tmp_path / "my-cache"
    done = cli("fetch", "records", "--cache-dir", str(mine), "--out", "y.parquet",
               "--no-progress", cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert any(mine.rglob("manifest.json"))
    old_style = cli("fetch", "records", "--cache", str(mine), "--out", "z.parquet",
                    cwd=tmp_path, env=env)  # fmt: skip
    assert old_style.returncode == 2
    assert f"--cache-dir {mine}" in old_style.stderr
    swallowed = cli("fetch", "--cache", "--refresh", "records", "--out", "z.parquet",
                    cwd=tmp_path, env=env)  # fmt: skip
    assert swallowed.returncode == 2
    assert "put records before the options" in swallowed.stderr


# -- CSV cells a spreadsheet would run -------------------------------------------------------------


def test_csv_neutralises_formulas_unless_raw(tmp_path: Path) -> None:
    records = generate_records(3, seed=9, customers=True, start="2024-01-01", end="2024-01-31")
    records[0]["metadata"] = {"note": '=HYPERLINK("http://evil.example","open")'}
    records[1]["customer"]["customer_name"] = "@SUM(1+1)*cmd|' /C calc'!A0"
    records[2]["metadata"] = {"note": "-2+3", "tab": "\tx", "fine": "a=b"}
    with SandboxServer(records=[], customer_records=records) as srv:
        env = {"IMPACTFRAME_API_KEY": srv.api_key, "IMPACTFRAME_BASE_URL": srv.url}
        safe = cli("fetch", "customer-records", "--out", "safe.csv", cwd=tmp_path, env=env)
        raw = cli("fetch", "customer-records", "--out", "raw.csv", "--csv-raw",
                  cwd=tmp_path, env=env)  # fmt: skip
    assert safe.returncode == 0, safe.stderr
    assert raw.returncode == 0, raw.stderr
    got = pd.read_csv(tmp_path / "safe.csv", dtype=str, keep_default_na=False)
    assert '\'=HYPERLINK("http://evil.example","open")' in got["metadata_note"].tolist()
    assert "'-2+3" in got["metadata_note"].tolist()
    assert "'@SUM(1+1)*cmd|' /C calc'!A0" in got["customer_name"].tolist()
    assert "'\tx" in got["metadata_tab"].tolist()
    assert "a=b" in got["metadata_fine"].tolist()  # only the first character counts
    assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in got.stack())
    verbatim = pd.read_csv(tmp_path / "raw.csv", dtype=str, keep_default_na=False)
    assert '=HYPERLINK("http://evil.example","open")' in verbatim["metadata_note"].tolist()


# -- Ctrl-C --------------------------------------------------------------------------------------


def _tgkill(pid: int, tid: int, sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    sys_tgkill = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)
    if sys_tgkill is None:
        pytest.skip("tgkill syscall number unknown on this machine")
    if libc.syscall(sys_tgkill, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread-directed signals")
def test_ctrl_c_handled_by_another_thread_still_ends_the_fetch(tmp_path: Path) -> None:
    """A SIGINT whose C handler runs outside the main thread's wait (what a signal arriving
    just before the main thread blocks amounts to) must still end the command."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(60)
        port = silent.getsockname()[1]
        environment = dict(os.environ, PYTHONPATH=str(ROOT), IMPACTFRAME_API_KEY="k")
        out = str(tmp_path / "r.parquet")
        command = [sys.executable, "-m", "impactframe", "fetch", "records", "--out", out,
                   "--base-url", f"http://127.0.0.1:{port}"]  # fmt: skip
        process = subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            connection, _ = silent.accept()
            with connection:
                connection.recv(4096)  # the request is sent: the child waits for the answer
                tasks = sorted(int(t) for t in os.listdir(f"/proc/{process.pid}/task"))
                others = []
                for tid in tasks[1:]:
                    status = Path(f"/proc/{process.pid}/task/{tid}/status").read_text()
                    blocked = int(next(x for x in status.splitlines() if x.startswith("SigBlk"))
                                  .split()[1], 16)  # fmt: skip
                    if not blocked & (1 << (signal.SIGINT - 1)):
                        others.append(tid)
                assert others, "no other thread to deliver the signal to"
                _tgkill(process.pid, others[-1], signal.SIGINT)
                _, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert stderr == "impactframe: interrupted\n"
    assert list(tmp_path.iterdir()) == []


# -- the progress bar ---------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pty")
def test_progress_bar_shows_in_a_0x0_terminal_and_keeps_its_last_line(
    server: SandboxServer, tmp_path: Path
) -> None:
    primary, secondary = pty.openpty()  # a new pty reports 0 columns x 0 rows
    env = dict(os.environ, PYTHONPATH=str(ROOT), IMPACTFRAME_API_KEY=server.api_key,
               IMPACTFRAME_BASE_URL=server.url, TERM="xterm")  # fmt: skip
    env.pop("COLUMNS", None)
    command = [sys.executable, "-m", "impactframe", "fetch", "records", "--out", "x.parquet",
               "--page-size", "10"]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    assert process.returncode == 0, output
    text = output.decode(errors="replace")
    assert "impactframe records" in text
    final = text.replace("\r", "\n").rstrip("\n").rsplit("\n", 1)[-1]
    assert f"{len(RECORDS)}" in final, text[-500:]
    assert "records" in final


def test_files_added_during_an_export_stop_the_swap(conn: dict[str, Any], tmp_path: Path) -> None:
    from impactframe.export._place import _place

    out = tmp_path / "records"
    export_parquet(out, **conn, max_records=5)
    (out / "added-meanwhile.txt").write_text("mine")  # after the checks, before the swap
    before = snapshot(out)
    new = tmp_path / "records.tmp-new"
    new.mkdir()
    with pytest.raises(FileExistsError, match=r"added-meanwhile\.txt"):
        _place(new, out, True, "0" * 32)
    assert snapshot(out) == before
