"""The command line (SPEC §9): fetch, export, summary, demo, cache; exit codes; the key.

The real entry point runs in subprocesses (``python -m impactframe`` and the installed
``impactframe`` script) against a sandbox started here; the many argument cases run in-process
through ``cli.main``, which is what the script calls. Every run checks that the API key
appears nowhere in what the command printed. (The sandbox command is tested in
tests/test_sandbox.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import impactframe as ifr
from impactframe import aggregate
from impactframe._constants import IMPACT_TYPES
from impactframe._fs import atomic_output
from impactframe.cli import build_parser, main
from impactframe.cli._args import redact_secrets
from impactframe.cli._output import write_frame
from impactframe.sandbox import SandboxServer, generate_records

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-7731-Zq9xSECRETkey"
WRONG_KEY = "sk-wrong-4242-SECRETtoo"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_RECORDS = 600
N_CUSTOMER_RECORDS = 400

MakeSandbox = Callable[..., SandboxServer]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    """One sandbox for the module, with a key worth leaking (nothing may print it)."""
    with SandboxServer(
        seed=5, n_records=N_RECORDS, n_customer_records=N_CUSTOMER_RECORDS, api_key=KEY
    ) as instance:
        yield instance


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key in the environment; no stray base URL; a private cache folder."""
    monkeypatch.setenv("IMPACTFRAME_API_KEY", KEY)
    monkeypatch.delenv("IMPACTFRAME_BASE_URL", raising=False)
    monkeypatch.setenv("IMPACTFRAME_CACHE_DIR", str(tmp_path / "user-cache"))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``impactframe *args`` in-process; return (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    assert KEY not in out + err
    assert WRONG_KEY not in out + err
    assert "Traceback" not in err or "--debug" in args
    return code, out, err


def run(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str | None] | None = None,
    script: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the real entry point in a subprocess; the source tree under test comes first."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    if script:
        command = [str(Path(sys.executable).parent / "impactframe"), *args]
    else:
        command = [sys.executable, "-m", "impactframe", *args]
    result = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )
    assert KEY not in result.stdout + result.stderr
    assert WRONG_KEY not in result.stdout + result.stderr
    return result


def load(server: SandboxServer, endpoint: str = "records", **query: object) -> pd.DataFrame:
    loader = ifr.load_records if endpoint == "records" else ifr.load_customer_records
    return loader(api_key=server.api_key, base_url=server.url, progress=False, **query)  # type: ignore[arg-type]


# -- the real entry point (subprocesses) --------------------------------------------------------


def test_fetch_parquet_equals_load_records(server: SandboxServer, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "records.parquet"
    out.parent.mkdir()  # fetch creates no folder (a typo must not make one, even at /)
    result = run(
        "fetch", "records", "--out", str(out), "--base-url", server.url,
        "--concurrency", "3", "--filter-by", "tree_planted,carbon_captured",
        "--start", "2022-01-01", "--end", "2024-06-30",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = load(
        server,
        filter_by=["tree_planted", "carbon_captured"],
        start_date="2022-01-01",
        end_date="2024-06-30",
    )
    assert 0 < len(expected) < N_RECORDS
    assert result.stdout == f"{len(expected):,} rows, {expected.shape[1]} columns -> {out}\n"
    assert result.stderr == ""  # no progress bar off a terminal, no noise
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)
    assert [p.name for p in out.parent.iterdir()] == ["records.parquet"]  # no temp file left


def test_fetch_csv_with_key_file(server: SandboxServer, tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"  {KEY}\n", encoding="utf-8")
    out = tmp_path / "customers.CSV"
    result = run(
        "fetch", "customer-records", "--out", str(out), "--base-url", server.url,
        "--api-key-file", str(key_file), "--sort", "desc", "--metadata", "drop",
        env={"IMPACTFRAME_API_KEY": None},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = load(server, "customer_records", sort_order="desc", metadata="drop")
    got = pd.read_csv(out, dtype={"user_id": "string", "customer_id": "string"})
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected) == N_CUSTOMER_RECORDS
    times = pd.to_datetime(got["time_utc"], utc=True, format="ISO8601").dt.as_unit("ms")
    pd.testing.assert_series_equal(times, expected["time_utc"], check_names=False)
    assert got["time_utc"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z").all()
    assert got["user_id"].tolist() == expected["user_id"].tolist()
    assert got["amount"].tolist() == expected["amount"].tolist()
    assert got["impact_type"].tolist() == expected["impact_type"].astype(str).tolist()
    names = expected["customer_name"].fillna("").tolist()
    assert got["customer_name"].fillna("").tolist() == names


def test_export_writes_a_readable_dataset(server: SandboxServer, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    result = run(
        "export", "records", "--out", str(out), "--base-url", server.url,
        "--partition-by", "year", "--page-size", "250",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{N_RECORDS} records -> {out} (")
    assert {p.name for p in out.iterdir() if p.is_dir()} == {f"year={y}" for y in range(2021, 2026)}
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == N_RECORDS
    frame = pd.read_parquet(out)
    assert sorted(frame["amount"].tolist()) == sorted(load(server)["amount"].tolist())


def test_summary_prints_a_table_with_totals(server: SandboxServer) -> None:
    result = run("summary", "records", "--freq", "YS", "--base-url", server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    frame = load(server)
    totals = aggregate.totals(frame)
    assert lines[0].startswith(f"{N_RECORDS} records from ")
    header = lines[2].split()
    assert header == ["period", *totals.index]
    years = [line.split()[0] for line in lines[3:8]]
    assert years == [f"{y}-01-01" for y in range(2021, 2026)]
    total_line = next(line for line in lines if line.startswith("total"))
    assert total_line.split()[1:] == [f"{int(v):,}" for v in totals]
    dollars = f"${int(totals['money_donated']) / 100:,.2f}"
    assert lines[-1].startswith("units: tree_planted: trees;")
    assert dollars in lines[-1]


def test_reconcile_is_exit_0_when_complete(server: SandboxServer) -> None:
    result = run("reconcile", "--base-url", server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"Complete: {N_RECORDS} records and {N_CUSTOMER_RECORDS} customer records match"
    )
    dates = ("--start", "2021-01-01", "--end", "2025-12-31")
    daily = run("reconcile", *dates, "--base-url", server.url)
    assert daily.returncode == 0, daily.stderr
    assert "daily figures" in daily.stdout


def test_reconcile_is_exit_1_and_names_the_difference(tmp_path: Path) -> None:
    # A record served twice, identical: the loader keeps it once (and warns), while the API's
    # totals count it twice. reconcile must say where, by how much, and exit 1.
    records = generate_records(n=30, seed=3)
    doubled = records[7]
    with SandboxServer(records=[*records, dict(doubled)], customer_records=[], api_key=KEY) as s:
        result = run("reconcile", "--base-url", s.url)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("Incomplete:")
    kind = next(t for t in IMPACT_TYPES if t in doubled)
    row = next(line.split() for line in result.stdout.splitlines() if kind in line.split())
    assert row[0] == "user"
    assert int(row[-1]) == -doubled[kind]  # loaded - reported: the second copy


@pytest.mark.timeout(120)
def test_demo_from_the_installed_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "impactframe"
    if not script.exists():
        pytest.skip("the impactframe script is not installed beside this interpreter")
    result = run("demo", "--no-progress", cwd=tmp_path, env={"IMPACTFRAME_API_KEY": None},
                 script=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "impactframe-demo"
    records = pd.read_parquet(out / "records.parquet")
    customers = pd.read_parquet(out / "customer_records.parquet")
    assert (len(records), len(customers)) == (5000, 3000)
    assert str(records["time_utc"].dtype) == "datetime64[ms, UTC]"
    assert len(pd.read_parquet(out / "records_dataset")) == 5000
    assert (out / "records_dataset" / "_common_metadata").is_file()
    assert (out / "impact_by_month.png").read_bytes()[:8] == PNG_MAGIC
    summary = pd.read_csv(out / "summary.csv")
    totals = aggregate.totals(records)
    # Money is labelled: cents, and dollars beside them (the demo prints dollars).
    names = [f"{t}_cents" if t == "money_donated" else t for t in totals.index]
    assert list(summary.columns) == ["month", *names, "money_donated_usd"]
    sums = summary.drop(columns=["month", "money_donated_usd"]).sum().tolist()
    assert sums == totals.tolist()
    assert summary["money_donated_usd"].sum() == pytest.approx(totals["money_donated"] / 100)

    text = result.stdout
    money = int(aggregate.totals(records)["money_donated"])
    assert "no key, no network" in text
    assert "Totals per impact type" in text
    assert f"${money / 100:,.2f}" in text
    assert "lbs of CO2" in text
    assert "Top 5 customers" in text
    for name in ("records.parquet", "records_dataset/", "impact_by_month.png", "summary.csv"):
        assert name in text
    match = re.search(r"Done in [\d.]+ s: (\d+) HTTP requests, (\d+) of them retried", text)
    assert match, text
    assert int(match[2]) == 3  # the injected 503, 503 and 429 were all retried
    # The banner that explains the injected faults comes before the retries.
    assert text.startswith("impactframe demo: the Records API on an embedded sandbox")
    assert "injected on purpose" in text.split("\n\n")[1]
    # The retries were logged on stderr as one-line warnings, nothing else was.
    assert result.stderr.count("impactframe: warning: GET /v1/") == 3
    assert "Traceback" not in result.stderr


def test_wrong_key_is_exit_1_with_one_line(server: SandboxServer, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    result = run("fetch", "records", "--out", str(out), "--base-url", server.url,
                 env={"IMPACTFRAME_API_KEY": WRONG_KEY})  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("impactframe: error: HTTP 401: key_error: ")
    assert "IMPACTFRAME_API_KEY" in result.stderr
    assert not out.exists()


def test_debug_shows_the_traceback(server: SandboxServer, tmp_path: Path) -> None:
    result = run("--debug", "fetch", "records", "--out", str(tmp_path / "r.csv"),
                 "--base-url", server.url, env={"IMPACTFRAME_API_KEY": WRONG_KEY})  # fmt: skip
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "AuthenticationError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("impactframe: error: HTTP 401")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--start", "2024-02-30"], "argument --start: '2024-02-30' is not a real calendar date"),
        (["--filter-by", "trees"], "argument --filter-by: 'trees' is not an impact type"),
        (["--api-key", KEY], "there is no --api-key option"),
    ],
)
def test_usage_errors_are_exit_2(
    server: SandboxServer, tmp_path: Path, args: list[str], expected: str
) -> None:
    server.clear_log()
    result = run("fetch", "records", "--out", str(tmp_path / "r.parquet"),
                 "--base-url", server.url, *args)  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert expected in result.stderr
    assert server.requests == []  # refused before any request


def test_unknown_suffix_is_exit_2() -> None:
    result = run("fetch", "records", "--out", "records.xlsx")
    assert result.returncode == 2
    assert result.stderr == (
        "impactframe fetch: error: argument --out: 'records.xlsx' has no accepted suffix; "
        "expected a file name ending in .parquet or .csv\n"
    )


@pytest.mark.timeout(60)
def test_ctrl_c_is_exit_130_with_one_line(tmp_path: Path) -> None:
    # A server that accepts the connection and never answers: the fetch is surely waiting
    # in a request when the signal comes.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(45)
        port = silent.getsockname()[1]
        environment = dict(os.environ, PYTHONPATH=str(ROOT))
        out = tmp_path / "r.parquet"
        # -X faulthandler: a child that hangs is sent SIGABRT below and prints every thread's
        # stack, so a failure shows where it was stuck.
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-X", "faulthandler", "-m", "impactframe", "fetch",
                   "records", "--out", str(out), "--base-url", url]  # fmt: skip
        process = subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            connection, _ = silent.accept()
            with connection:
                # Once the request is read the child is surely waiting for the answer.
                connection.recv(4096)
                process.send_signal(signal.SIGINT)
                try:
                    stdout, stderr = process.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGABRT)
                    stdout, stderr = process.communicate(timeout=30)
                    pytest.fail(f"the child did not end within 30 s of SIGINT; stacks:\n{stderr}")
        finally:
            # Never leave a child behind: a running one fails a later test (ResourceWarning).
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert process.returncode == 130
    assert stderr == "impactframe: interrupted\n"
    assert stdout == ""
    assert list(tmp_path.iterdir()) == []


def _blocked_signals(native_id: int) -> set[int]:
    """The signals a thread of this process blocks, from Linux's /proc."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    mask = int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc")
def test_every_thread_impactframe_starts_leaves_ctrl_c_to_the_main_thread() -> None:
    # A Ctrl-C that the kernel hands to a worker only sets Python's flag: a main thread
    # blocked in the first page's socket read then waits out the whole timeout (the race of
    # the test above, seen once under load). Workers block SIGINT, so the main thread gets it.
    seen: dict[str, set[int]] = {}
    stop = threading.Event()

    def watch() -> None:  # samples the threads while the loads run in the main thread
        while not stop.wait(0.002):
            for thread in threading.enumerate():
                client_side = not thread.name.startswith("impactframe-sandbox")
                if client_side and thread.name.startswith("impactframe") and thread.native_id:
                    with contextlib.suppress(OSError, AttributeError):  # it just ended
                        seen[thread.name.split("_")[0]] = _blocked_signals(thread.native_id)

    watcher = threading.Thread(target=watch)
    with SandboxServer(n_customer_records=6000, seed=3, latency=0.01) as server:
        watcher.start()
        try:
            for concurrency in ("auto", 1):
                ifr.load_customer_records(
                    api_key=server.api_key, base_url=server.url, progress=False,
                    page_size=500, concurrency=concurrency,
                )  # fmt: skip
        finally:
            stop.set()
            watcher.join()
    # The window walkers, the parser, the deadline watchdog and the one-chain reader.
    assert {"impactframe", "impactframe-parse", "impactframe-deadline", "impactframe-fetch"} <= set(
        seen
    )
    for name, blocked in seen.items():
        assert {signal.SIGINT, signal.SIGTERM} <= blocked, name
    assert signal.SIGINT not in _blocked_signals(threading.main_thread().native_id or 0)


# -- in-process: arguments, cache, formats ------------------------------------------------------


def test_no_parser_accepts_abbreviations() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(subparsers, dict)
    assert parser.allow_abbrev is False
    commands = {"fetch", "export", "summary", "demo", "sandbox", "cache", "reconcile"}
    assert set(subparsers) == commands
    assert all(p.allow_abbrev is False for p in subparsers.values())
    options = {o for p in subparsers.values() for a in p._actions for o in a.option_strings}
    assert "--api-key" not in options
    assert "--api-key-file" in options


@pytest.mark.parametrize(
    "args",
    [
        ["--api-key", "sk-live-abc"],
        ["--api-key=sk-live-abc"],
        ["--api-key-fil", "sk-live-abc"],  # an abbreviation of --api-key-file: refused
        ["--api-keyx", "sk-live-abc"],
    ],
)
def test_no_api_key_option_and_the_value_is_not_echoed(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = cli(capsys, "fetch", "records", "--out", "r.parquet", *args)
    assert code == 2
    assert out == ""
    assert "sk-live-abc" not in err
    assert err.count("\n") == 1


def test_redact_secrets_masks_key_like_options() -> None:
    text = "unrecognized arguments: --token abc --password=hunter2 --seed 3"
    assert redact_secrets(text) == "unrecognized arguments: --token *** --password=*** --seed 3"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--start", "2024-1-5"], "argument --start: '2024-1-5' is not a date; expected YYYY"),
        (["--start", "2024-03-02", "--end", "2024-03-01"], "--start 2024-03-02 is after --end"),
        (["--filter-by", "tree_planted,trees"], "'trees' is not an impact type; expected one of"),
        (["--sort", "up"], "argument --sort: invalid choice: 'up'"),
        (["--page-size", "1001"], "argument --page-size: must be an integer from 1 to 1000"),
        (["--max-records", "0"], "argument --max-records: must be an integer >= 1"),
        (["--concurrency", "0"], "argument --concurrency: must be an integer from 1 to 64"),
        (["--customer-email", "a@b.c"], "--customer-email: only the customer-records endpoint"),
        (["--refresh"], "--refresh needs --cache"),
        (["--metadata", "dict"], "argument --metadata: invalid choice: 'dict'"),
        (["--base-url", "http://api.example.com"], "--base-url: 'http://api.example.com' is plain"),
    ],
)
def test_argument_errors_name_the_option(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, out, err = cli(capsys, "fetch", "records", "--out", "r.parquet", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("impactframe fetch: error: ")
    assert expected in err
    assert err.count("\n") == 1


def test_other_commands_check_their_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "summary", "records", "--freq", "M")
    assert code == 2
    assert "argument --freq: 'M' is not a pandas offset alias" in err
    code, _, err = cli(capsys, "export", "records", "--out", "x", "--partition-by", "week")
    assert code == 2
    assert "argument --partition-by: 'week' is not accepted" in err
    code, _, err = cli(capsys, "cache", "show")
    assert code == 2
    assert "invalid choice: 'show'" in err
    code, _, err = cli(capsys, "fetch", "invoices", "--out", "x.csv")
    assert code == 2
    assert "'invoices' is not an endpoint; expected records or customer-records" in err


def test_key_sources(
    capsys: pytest.CaptureFixture[str],
    server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMPACTFRAME_API_KEY")
    out = str(tmp_path / "r.parquet")
    base = ["fetch", "records", "--out", out, "--base-url", server.url, "--max-records", "5"]
    code, _, err = cli(capsys, *base)
    assert code == 2
    assert "no API key: set IMPACTFRAME_API_KEY or pass --api-key-file PATH" in err
    code, _, err = cli(capsys, *base, "--api-key-file", str(tmp_path / "missing.txt"))
    assert code == 2
    assert f"--api-key-file: cannot read '{tmp_path / 'missing.txt'}'" in err
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe" + KEY.encode())
    code, _, err = cli(capsys, *base, "--api-key-file", str(binary))
    assert code == 2
    assert "is not UTF-8 text" in err
    empty = tmp_path / "empty.key"
    empty.write_text(" \n", encoding="utf-8")
    code, _, err = cli(capsys, *base, "--api-key-file", str(empty))
    assert code == 2
    assert "is empty" in err
    assert not Path(out).exists()
    good = tmp_path / "good.key"
    good.write_text(f"\n{KEY}  \n", encoding="utf-8")
    code, stdout, _ = cli(capsys, *base, "--api-key-file", str(good))
    assert code == 0
    assert stdout.startswith("5 rows, ")


def test_fetch_options_reach_the_loader(
    capsys: pytest.CaptureFixture[str], server: SandboxServer, tmp_path: Path
) -> None:
    out = tmp_path / "r.parquet"
    code, _, err = cli(
        capsys, "fetch", "records", "--out", str(out), "--base-url", server.url,
        "--sort", "desc", "--max-records", "25", "--page-size", "10", "--metadata", "json",
        "--no-progress",
    )  # fmt: skip
    assert (code, err) == (0, "")
    frame = pd.read_parquet(out)
    expected = load(server, sort_order="desc", max_records=25, metadata="json")
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["time_utc"].is_monotonic_decreasing
    assert json.loads(frame["metadata"].dropna().iloc[0])
    assert {r.params.get("limit", [""])[0] for r in server.requests} >= {"10"}


def test_cache_list_and_clear(
    capsys: pytest.CaptureFixture[str], server: SandboxServer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    out = str(tmp_path / "r.parquet")
    fetch = ["fetch", "records", "--out", out, "--base-url", server.url, "--cache-dir", str(cache)]
    assert cli(capsys, *fetch, "--filter-by", "coral_restored")[0] == 0
    first = pd.read_parquet(out)
    server.clear_log()
    assert cli(capsys, *fetch, "--filter-by", "coral_restored")[0] == 0
    assert server.requests == []  # served from the cache
    pd.testing.assert_frame_equal(pd.read_parquet(out), first)
    assert cli(capsys, *fetch, "--refresh")[0] == 0  # a second entry: the whole history
    assert cli(capsys, *fetch, "--refresh", "full")[0] == 0

    code, stdout, _ = cli(capsys, "cache", "list", "--cache-dir", str(cache))
    assert code == 0
    lines = stdout.splitlines()
    assert len(lines) == 2
    coral = next(line for line in lines if "filter_by=coral_restored" in line)
    assert coral.startswith("records")
    assert f"{len(first)} rows" in coral
    last_day = first["time_utc"].max().strftime("%Y-%m-%d")
    assert f"synced {last_day}" in coral
    assert re.search(r"\d+\.\d kB", coral)
    assert str(cache) in coral
    everything = next(line for line in lines if line is not coral)
    assert f"{N_RECORDS} rows" in everything
    assert " all " in everything

    code, stdout, _ = cli(capsys, "cache", "clear", "--cache-dir", str(cache))
    assert (code, stdout) == (0, f"Removed 2 cache entries from {cache}\n")
    code, stdout, err = cli(capsys, "cache", "list", "--cache-dir", str(cache))
    assert (code, stdout) == (0, "")
    assert err == f"No cache entries in {cache}\n"


def test_a_cache_problem_is_printed_once(
    capsys: pytest.CaptureFixture[str], server: SandboxServer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    out = str(tmp_path / "r.parquet")
    fetch = ["fetch", "records", "--out", out, "--base-url", server.url, "--cache-dir", str(cache)]
    assert cli(capsys, *fetch, "--max-records", "5")[0] == 0
    (data,) = cache.rglob("data-*.parquet")
    data.write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the CLI shows warnings; pytest would raise them
        code, stdout, err = cli(capsys, *fetch, "--max-records", "5")
    assert code == 0
    assert stdout.startswith("5 rows, ")
    assert err.startswith("impactframe: warning: CacheWarning: ignoring a cache entry because ")
    assert "does not match the manifest's sha256" in err
    assert err.count("\n") == 1  # the warning, not also a log line saying the same


def test_an_unusable_cache_folder_is_exit_2(
    capsys: pytest.CaptureFixture[str], server: SandboxServer, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out = tmp_path / "r.parquet"
    server.clear_log()
    code, stdout, err = cli(
        capsys, "fetch", "records", "--out", str(out), "--base-url", server.url,
        "--cache-dir", str(a_file / "cache"),
    )  # fmt: skip
    assert (code, stdout) == (2, "")
    assert err.startswith("impactframe fetch: error: --cache-dir: ")
    assert f"{str(a_file)!r} is a file, not a folder" in err
    assert err.count("\n") == 1
    assert server.requests == []
    assert not out.exists()


def test_cache_defaults_to_the_environment_folder(
    capsys: pytest.CaptureFixture[str], server: SandboxServer, tmp_path: Path
) -> None:
    out = str(tmp_path / "r.parquet")
    fetch = ["fetch", "customer-records", "--out", out, "--base-url", server.url, "--cache"]
    assert cli(capsys, *fetch, "--max-records", "7")[0] == 0
    default = tmp_path / "user-cache"  # IMPACTFRAME_CACHE_DIR, set by the fixture
    code, stdout, _ = cli(capsys, "cache", "list")
    assert code == 0
    assert stdout.startswith("customer-records  max_records=7  7 rows")
    assert str(default) in stdout
    assert cli(capsys, "cache", "clear")[2] == ""


def test_summary_by_a_column(capsys: pytest.CaptureFixture[str], server: SandboxServer) -> None:
    code, stdout, _ = cli(
        capsys, "summary", "customer-records", "--base-url", server.url,
        "--by", "customer_email", "--freq", "YS",
    )  # fmt: skip
    assert code == 0
    frame = load(server, "customer_records")
    lines = stdout.splitlines()
    assert lines[0].startswith(f"{N_CUSTOMER_RECORDS} customer records from ")
    assert lines[0].endswith("by customer_email")
    assert lines[2].split()[:2] == ["customer_email", "period"]
    body = [line for line in lines[3:] if "@" in line]
    assert {line.split()[0] for line in body} == set(frame["customer_email"])
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1:] == [f"{int(v):,}" for v in aggregate.totals(frame)]

    code, _, err = cli(capsys, "summary", "records", "--base-url", server.url, "--by", "nope")
    assert code == 2
    assert "by: 'nope' is not accepted; expected a column of the frame" in err


def test_summary_of_nothing(capsys: pytest.CaptureFixture[str], server: SandboxServer) -> None:
    code, stdout, _ = cli(
        capsys, "summary", "records", "--base-url", server.url, "--start", "2030-01-01"
    )
    assert (code, stdout) == (0, "No records match the query.\n")


def test_export_refuses_an_existing_folder_unless_overwrite(
    capsys: pytest.CaptureFixture[str], server: SandboxServer, tmp_path: Path
) -> None:
    out = tmp_path / "dataset"
    export = ["export", "customer-records", "--out", str(out), "--base-url", server.url]
    assert cli(capsys, *export, "--partition-by", "none")[0] == 0
    assert not [p for p in out.iterdir() if p.is_dir()]  # unpartitioned
    code, _, err = cli(capsys, *export)
    assert code == 2
    assert "already exists; pass --overwrite" in err
    code, stdout, _ = cli(capsys, *export, "--overwrite", "--metadata", "drop")
    assert code == 0
    assert stdout.startswith(f"{N_CUSTOMER_RECORDS} records -> ")
    assert not any(c.startswith("metadata") for c in pd.read_parquet(out).columns)


def test_bad_data_is_exit_1(
    capsys: pytest.CaptureFixture[str], make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    bad = {"user_id": "U1", "time_utc": "2024-01-01T00:00:00.000Z", "tree_planted": "5"}
    sandbox = make_sandbox(records=[bad], customer_records=[], api_key=KEY)
    out = tmp_path / "r.csv"
    code, stdout, err = cli(
        capsys, "fetch", "records", "--out", str(out), "--base-url", sandbox.url
    )
    assert (code, stdout) == (1, "")
    assert err.startswith("impactframe: error: ")
    assert "tree_planted" in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_schema_drift_is_one_warning_line(
    capsys: pytest.CaptureFixture[str], make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    record = {
        "user_id": "U1",
        "time_utc": "2024-01-01T00:00:00.000Z",
        "tree_planted": 5,
        "planted_by": "volunteers",
    }
    sandbox = make_sandbox(records=[record], customer_records=[], api_key=KEY)
    out = tmp_path / "r.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the CLI shows warnings; pytest would raise them
        code, stdout, err = cli(
            capsys, "fetch", "records", "--out", str(out), "--base-url", sandbox.url
        )
    assert code == 0
    assert stdout.startswith("1 row, ")
    assert err.startswith("impactframe: warning: SchemaDriftWarning: ")
    assert "planted_by" in err
    assert err.count("\n") == 1
    assert pd.read_parquet(out)["planted_by"].tolist() == ["volunteers"]


def test_an_unexpected_error_is_still_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug no server can provoke: make a handler fail from the inside.
    def broken(args: object) -> int:
        msg = "boom"
        raise RuntimeError(msg)

    monkeypatch.setattr("impactframe.cli._local._run_cache", broken)
    code, out, err = cli(capsys, "cache", "list")
    assert (code, out) == (1, "")
    assert err == "impactframe: error: unexpected RuntimeError: boom (--debug shows where)\n"
    code, _, err = cli(capsys, "--debug", "cache", "list")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "raise RuntimeError(msg)" in err


def test_write_frame_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "r.parquet"
    target.write_bytes(b"old")
    frame = pd.DataFrame({"metadata": [{"a": "b"}]})
    with pytest.raises(ValueError, match="metadata='json'"):
        write_frame(frame, target)
    broken = pd.DataFrame({"x": [object()]})  # pyarrow cannot write it
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_frame(broken, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.parquet"]
    with pytest.raises(ValueError, match=r"ending in \.parquet or \.csv"):
        write_frame(frame, tmp_path / "r.json")


def test_csv_times_are_in_the_api_form_for_both_backends(
    server: SandboxServer, tmp_path: Path
) -> None:
    query = {"end_date": "2023-06-30", "metadata": "drop"}
    texts = {}
    for backend in ("numpy_nullable", "pyarrow"):
        frame = load(server, dtype_backend=backend, **query)
        texts[backend] = write_frame(frame, tmp_path / f"{backend}.csv").read_text()
    assert texts["pyarrow"] == texts["numpy_nullable"]
    got = pd.read_csv(tmp_path / "pyarrow.csv", dtype={"time_utc": "string"})
    assert len(got) > 0
    assert got["time_utc"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z").all()
    # Arrow times in another zone are written in UTC, like numpy ones.
    stamp = pd.Timestamp("2024-01-31T12:00:00.123Z")
    for unit in ("s", "ms", "us", "ns"):
        paris = pd.ArrowDtype(pa.timestamp(unit, tz="Europe/Paris"))
        frame = pd.DataFrame({"time_utc": pd.Series([stamp], dtype=paris)})
        lines = write_frame(frame, tmp_path / "paris.csv").read_text().splitlines()
        expected = "2024-01-31T12:00:00.000Z" if unit == "s" else "2024-01-31T12:00:00.123Z"
        assert lines == ["time_utc", expected]


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "chart.png"
    target.write_bytes(b"old")

    def fail() -> None:
        with atomic_output(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail()
    assert target.read_bytes() == b"old"
    with atomic_output(target) as temporary:
        assert temporary.suffix == ".png"
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]


def test_demo_chart_is_skipped_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No environment here lacks matplotlib (the dev extra installs it): hide it.
    from impactframe.cli._demo import _write_chart

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    frame = pd.read_parquet(ROOT / "data-samples" / "records_sample.parquet")
    note = _write_chart(frame, tmp_path / "chart.png")
    assert note == "matplotlib is not installed (pip install 'impactframe[plot]')"
    assert list(tmp_path.iterdir()) == []


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--version")
    assert (code, out) == (0, f"impactframe {ifr.__version__}\n")
    code, out, _ = cli(capsys, "fetch", "--help")
    assert code == 0
    assert "--api-key-file PATH" in out
    assert "--cache-dir DIR" in out
    code, _, err = cli(capsys)
    assert code == 2
    assert all(name in err for name in ("fetch", "export", "summary", "demo", "cache"))
