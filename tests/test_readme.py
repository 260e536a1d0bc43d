"""The README's promises, executed: every example runs and the cheap claims are checked.

- Every ```python block of README.md runs against the real ``sandbox`` (a ``SandboxServer`` on
  loopback), with the key and host in ``IMPACTFRAME_API_KEY`` / ``IMPACTFRAME_BASE_URL``, the
  cache folder and ``HOME`` (for ``cache="~/..."``) in ``tmp_path``, and ``tmp_path`` as the
  working directory, so bare calls such as ``ifr.load_records()`` work offline. The blocks of
  one ``##`` section share one namespace and run in README order. A block that uses a name the
  README leaves to the reader gets a ``PRELUDES`` entry; a block that cannot run at all is in
  ``ALLOWLIST`` with the reason and the test that checks it instead. Warnings are errors
  (pytest's filterwarnings), so an example that warns fails here.
- Every command line of a shell block (```, ```sh, ```bash, ```console) that runs
  ``impactframe ...`` or ``python -m impactframe ...`` runs: in-process through ``cli.main``
  (what the installed script calls), or in a subprocess for ``sandbox``, which serves until
  Ctrl-C. The synopsis block (a grammar: ``[...]``, ``a|b``) is checked against the parser and
  ``--help`` instead of being run.
- Claims of the prose and tables: the dtype table against real loads of both endpoints, the
  keyword table and signature, the error tree, exit codes, the demo's files, the environment
  variables, the Makefile targets, the paths named, the cache's files, the soak table's sums.

"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import impactframe as ifr
from impactframe import _constants
from impactframe._dtypes import DTYPES
from impactframe.cli import build_parser, main
from impactframe.sandbox import Fault, SandboxServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

# -- the README's fenced blocks ------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced block: its ``##`` section, language tag, text and first line number."""

    section: str
    lang: str
    code: str
    line: int


def _blocks() -> list[Block]:
    blocks: list[Block] = []
    section, lang, start = "", None, 0
    body: list[str] = []
    for number, line in enumerate(README.splitlines(), 1):
        fence = re.match(r"```(\w*)\s*$", line)
        if lang is None and fence:
            lang, start, body = fence.group(1), number + 1, []
        elif lang is not None and line.startswith("```"):
            blocks.append(Block(section, lang, "\n".join(body) + "\n", start))
            lang = None
        elif lang is not None:
            body.append(line)
        elif line.startswith("## "):
            section = line[3:].strip()
    assert lang is None, "an unclosed code fence in README.md"
    return blocks


BLOCKS = _blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in {"", "sh", "bash", "console", "shell"}]


def block_with(text: str, blocks: list[Block] = BLOCKS) -> Block:
    """The one block containing ``text`` (a stable substring), failing if not exactly one."""
    found = [b for b in blocks if text in b.code]
    assert len(found) == 1, f"{len(found)} README blocks contain {text!r}"
    return found[0]


# Code run before a block, keyed by a stable substring of the block. Sections after the
# Quickstart rely on its `import impactframe as ifr`; other names are the reader's to supply.
IMPORT_IFR = "import impactframe as ifr\n"
PRELUDES = {
    # `api_key` is the reader's own key: the sandbox's, from the environment the test set.
    "client = ifr.Client(api_key,": (
        IMPORT_IFR + "import os\napi_key = os.environ['IMPACTFRAME_API_KEY']\n"
    ),
    "df = ifr.load_records(cache=True)": IMPORT_IFR,
    "ifr.export_parquet(": IMPORT_IFR,
    # `df` and `cdf` are the frames of the Quickstart, here over the whole sandbox history (its
    # cdf is of an e-mail the sandbox does not know, so it is empty offline).
    "df.impact.totals()": (
        IMPORT_IFR + "df = ifr.load_records()\ncdf = ifr.load_customer_records()\n"
    ),
    "server.inject(Fault(": IMPORT_IFR,
}

# Blocks that cannot run as they stand, with the reason and what checks them instead.
ALLOWLIST = {
    "ifr.load_records(*, filter_by=None,": (
        "a signature, not a call (`*,` and `<the same keywords>`); "
        "test_loading_signature_is_the_code checks it against the code"
    ),
}

# Command lines changed before they run: the README's port may be taken on a shared machine.
SHELL_REWRITES = {"--port 8000": "--port 0"}


def _sections() -> dict[str, list[Block]]:
    sections: dict[str, list[Block]] = {}
    for block in PYTHON:
        if not any(key in block.code for key in ALLOWLIST):
            sections.setdefault(block.section, []).append(block)
    return sections


def _command_lines() -> list[str]:
    lines = []
    for block in SHELL:
        commands = [
            line.split(" #")[0].removeprefix("$ ").strip()
            for line in block.code.splitlines()
            if re.match(r"(\$ )?(impactframe|python -m impactframe) ", line)
        ]
        if not any("[" in c or "|" in c for c in commands):  # the synopsis is a grammar
            lines += commands
    return lines


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def readme_env(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SandboxServer:
    """The environment a README reader has, pointed at the session sandbox, inside tmp_path."""
    monkeypatch.setenv("IMPACTFRAME_API_KEY", sandbox.api_key)
    monkeypatch.setenv("IMPACTFRAME_BASE_URL", sandbox.url)
    monkeypatch.setenv("IMPACTFRAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    return sandbox


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``impactframe *args`` in-process; return (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def python_m(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """``python -m impactframe *args`` on the source tree under test, without a key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTFRAME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "impactframe", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def table_rows(anchor: str) -> list[list[str]]:
    """Cells of the first Markdown table after ``anchor``, without header and rule."""
    lines = README[README.index(anchor) :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def number(text: str) -> float:
    return float(text.strip("*×").replace(",", ""))


# -- the examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("section", list(_sections()))
def test_python_examples_run(section: str, readme_env: SandboxServer) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    try:
        for block in _sections()[section]:
            for key, prelude in PRELUDES.items():
                if key in block.code:
                    exec(
                        compile(prelude, f"<prelude of README.md:{block.line}>", "exec"), namespace
                    )
            exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        client = namespace.get("client")
        if isinstance(client, ifr.Client):
            client.close()


def test_preludes_and_allowlist_stay_small_and_current() -> None:
    assert len(ALLOWLIST) <= 2, "run blocks (with a prelude if need be) rather than allowlist"
    for key in [*PRELUDES, *ALLOWLIST]:
        block = block_with(key, PYTHON)  # the block is still in the README, exactly once
        assert not (key in ALLOWLIST and key in PRELUDES), block
    assert sum(map(len, _sections().values())) + len(ALLOWLIST) == len(PYTHON)
    assert len(_command_lines()) >= 3
    for old in SHELL_REWRITES:
        assert any(old in line for line in _command_lines()), old


@pytest.mark.parametrize("line", [c for c in _command_lines() if " sandbox " not in c + " "])
def test_command_line_examples_run(
    line: str, readme_env: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    words = shlex.split(line)
    args = words[3:] if words[0] == "python" else words[1:]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert "error" not in err
    if "--out" in args:
        written = Path(args[args.index("--out") + 1])
        assert written.exists()
        assert len(pd.read_parquet(written)) > 0
    else:
        assert out.strip()


def test_sandbox_command_serves_until_ctrl_c(readme_env: SandboxServer, tmp_path: Path) -> None:
    (line,) = [c for c in _command_lines() if " sandbox " in c]
    for old, new in SHELL_REWRITES.items():
        line = line.replace(old, new)
    process = python_m(*shlex.split(line)[1:], cwd=tmp_path)
    try:
        assert process.stdout is not None
        printed = [process.stdout.readline() for _ in range(2)]
        found = re.search(r"IMPACTFRAME_BASE_URL=(\S+) IMPACTFRAME_API_KEY=(\S+)", printed[1])
        assert found, printed  # "prints the URL and the key to use"
        df = ifr.load_records(api_key=found[2], base_url=found[1], max_records=5, progress=False)
        assert len(df) == 5
        assert "10000 records" in printed[0]
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0  # Ctrl-C is how this command ends, not an interruption


# -- Loading and the DataFrame -------------------------------------------------------------------


def test_loading_signature_is_the_code() -> None:
    text = block_with("ifr.load_records(*, filter_by=None,").code
    records, customers = (re.sub(r"\s+", "", part) for part in text.split("\nifr."))
    written = dict(re.findall(r"(\w+)=([^,()]+|\"[^\"]*\")", records))
    code = inspect.signature(ifr.load_records).parameters
    assert list(written) == list(code)
    assert all(p.kind is p.KEYWORD_ONLY for p in code.values())
    for name, default in written.items():
        assert default == repr(code[name].default).replace("'", '"'), name
    assert customers.startswith("load_customer_records(*,customer_email=None,<thesamekeywords>")
    customer_code = inspect.signature(ifr.load_customer_records).parameters
    assert list(customer_code) == ["customer_email", *code]


def _table_keywords() -> set[str]:
    return {n for row in table_rows("| keyword | accepts |") for n in ticked(row[0])}


def test_keyword_table_names_real_parameters() -> None:
    assert _table_keywords() <= set(inspect.signature(ifr.load_records).parameters)


def test_keyword_table_covers_every_parameter() -> None:
    assert set(inspect.signature(ifr.load_records).parameters) <= _table_keywords()


def _accepted(keyword: str) -> list[str]:
    """The quoted literals the keyword table lists for ``keyword`` (its accepted values)."""
    for row in table_rows("| keyword | accepts |"):
        if keyword in ticked(row[0]):
            return [t.strip('"') for t in ticked(row[1]) if t.startswith('"')]
    return []


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("filter_by", "trees"),
        ("start_date", "2024-02-30"),
        ("end_date", "yesterday"),
        ("sort_order", "up"),
        ("page_size", 0),
        ("page_size", 1001),
        ("max_records", -1),
        ("metadata", "flat"),
        ("dtype_backend", "arrow"),
        ("concurrency", 0),
        ("refresh", "yes"),
        ("progress", "yes"),
    ],
)
def test_bad_arguments_raise_before_any_request(
    keyword: str, value: object, readme_env: SandboxServer
) -> None:
    # "raises ValueError naming the argument and what it accepts, before any request is sent"
    with pytest.raises(ValueError, match=keyword) as caught:
        ifr.load_records(**{keyword: value})  # type: ignore[arg-type]
    for accepted in _accepted(keyword):
        assert accepted in str(caught.value)
    assert readme_env.requests == []


def _keys(df: pd.DataFrame) -> list[tuple[str, pd.Timestamp]]:
    return list(zip(df["user_id"], df["time_utc"], strict=True))


def test_keyword_table_values(readme_env: SandboxServer) -> None:
    full = ifr.load_records()
    assert ifr.load_records(concurrency=3).equals(full)  # "same rows, same order"
    desc = ifr.load_records(sort_order="desc")
    assert _keys(desc) == _keys(full)[::-1]
    readme_env.clear_log()
    assert len(ifr.load_records(max_records=250, page_size=100)) == 250
    assert len(readme_env.requests) == 3  # "no page beyond the last one needed"
    for mode in ("dict", "json"):
        assert "metadata" in ifr.load_records(metadata=mode).columns
    assert not ifr.load_records(metadata="drop").columns.str.startswith("metadata").any()
    with ifr.Client() as client, pytest.raises(ValueError, match="client"):
        ifr.load_records(client=client, api_key=readme_env.api_key)  # "not both"
    # Dates: inclusive days; an aware datetime counts by its UTC day.
    days = full["time_utc"].dt.strftime("%Y-%m-%d")
    first, last = sorted(set(days))[100], sorted(set(days))[130]
    inside = full[(days >= first) & (days <= last)]
    # 23:00 at UTC-5 on the day before `first` is 04:00 UTC on `first`
    aware = dt.datetime.fromisoformat(f"{first}T23:00:00-05:00") - dt.timedelta(days=1)
    for start in (first, dt.date.fromisoformat(first), pd.Timestamp(first), aware):
        assert _keys(ifr.load_records(start_date=start, end_date=last)) == _keys(inside), start


def _dtype_table() -> list[tuple[list[str], str, str]]:
    rows = table_rows("<!-- Mirrors impactframe/_dtypes.py DTYPES")
    return [(ticked(names), ticked(dtype)[0], rule) for names, dtype, rule in rows]


def _check_frame(df: pd.DataFrame, customers: bool) -> None:
    fixed = {}
    for names, dtype, rule in _dtype_table():
        if customers or "customer endpoint only" not in rule:
            fixed.update(dict.fromkeys(names, dtype))
    (metadata_dtype,) = {d for names, d, _ in _dtype_table() if names == ["metadata_<key>"]}
    fixed.pop("metadata_<key>")
    assert list(df.columns[: len(fixed)]) == list(fixed)  # in the table's order
    metadata = list(df.columns[len(fixed) :])
    assert metadata == sorted(metadata)
    assert all(name.startswith("metadata_") for name in metadata)
    expected = {**fixed, **dict.fromkeys(metadata, metadata_dtype)}
    assert {c: str(t) for c, t in df.dtypes.items()} == expected
    assert isinstance(df.index, pd.RangeIndex)


def test_dtype_table_is_the_frame_of_both_endpoints(readme_env: SandboxServer) -> None:
    for customers, loader in ((False, ifr.load_records), (True, ifr.load_customer_records)):
        df = loader()
        assert len(df) > 0
        assert len(df.columns) > (13 if customers else 10)  # some metadata columns too
        _check_frame(df, customers)
        _check_frame(loader(start_date="2099-01-01"), customers)  # empty, every column typed
        required = ["user_id", "time_utc", "amount"] + (["customer_id"] if customers else [])
        assert df[required].notna().all().all()
        assert (df["amount"] >= 0).all()
        impacts = df[list(_constants.IMPACT_TYPES)]
        assert (impacts.notna().sum(axis=1) == 1).all()
        assert (impacts.sum(axis=1) == df["amount"]).all()
        types = next(names for names, *_ in _dtype_table() if "tree_planted" in names)
        assert list(df["impact_type"].cat.categories[: len(types)]) == types
    table = [n for names, *_ in _dtype_table() for n in names if n != "metadata_<key>"]
    assert table == list(DTYPES)  # "Mirrors impactframe/_dtypes.py DTYPES"


def _load(server: SandboxServer) -> pd.DataFrame:
    return ifr.load_records(api_key=server.api_key, base_url=server.url, progress=False)


def test_frame_rules_on_unusual_records(make_sandbox: Callable[..., SandboxServer]) -> None:
    day = {"time_utc": "2024-05-01T10:00:00.000Z"}
    twins = make_sandbox([{"user_id": "U1", **day, "tree_planted": n} for n in (1, 2)], [])
    with pytest.warns(ifr.DuplicateRecordWarning):
        assert len(_load(twins)) == 2  # "both kept"
    records: list[dict[str, Any]] = [
        {"user_id": f"U{n}", **day, "tree_planted": 1, "new_count": n, "new_thing": {"n": n}}
        for n in (1, 2)
    ]
    records[0]["metadata"] = {"shop": {"id": "S1"}, "qty": 3}
    with pytest.warns(ifr.SchemaDriftWarning) as caught:
        df = _load(make_sandbox(records, []))
    assert list(df.columns[-2:]) == ["new_count", "new_thing"]  # extra columns at the end
    assert str(df["new_count"].dtype) == "Int64"
    assert str(df["new_thing"].dtype) == "string"
    assert json.loads(df["new_thing"][1]) == {"n": 2}  # other values as their JSON text
    assert sum("new_count" in str(w.message) for w in caught) == 1  # once a load
    # metadata: nested keys joined with `.`, non-string values as JSON text
    assert df.loc[0, ["metadata_qty", "metadata_shop.id"]].tolist() == ["3", "S1"]
    kelp = make_sandbox([{"user_id": "U1", **day, "kelp_planted": 4}], [])
    with pytest.warns(ifr.SchemaDriftWarning, match="kelp_planted"):
        df = _load(kelp)
    assert "kelp_planted" in df["impact_type"].cat.categories
    assert str(df["kelp_planted"].dtype) == "Int64"
    bad = make_sandbox([{"user_id": "U1", **day, "tree_planted": "3"}], [])
    with pytest.raises(ifr.ValidationError, match="tree_planted") as error:
        _load(bad)
    assert "U1" in str(error.value)  # names the field and the record


def test_pyarrow_backend_keeps_impact_type_a_category(readme_env: SandboxServer) -> None:
    df = ifr.load_records(dtype_backend="pyarrow")
    assert str(df["impact_type"].dtype) == "category"
    assert all(str(t).endswith("[pyarrow]") for c, t in df.dtypes.items() if c != "impact_type")


def test_units_line_is_the_code() -> None:
    line = next(x for x in README.splitlines() if x.startswith("Units: "))
    units = [u.strip() for u in line.removeprefix("Units: ").split("(")[0].split(",")]
    assert units == [_constants.UNITS[t] for t in _constants.IMPACT_TYPES]


def test_environment_variables_and_hosts(
    readme_env: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = set(re.findall(r"IMPACTFRAME_[A-Z_]+", README))
    code = {v for k, v in vars(_constants).items() if k.startswith("ENV_")}
    assert named == code
    monkeypatch.delenv("IMPACTFRAME_BASE_URL")
    with ifr.Client(environment="sandbox") as client:
        assert client.base_url == _constants.SANDBOX_URL
    with ifr.Client() as client:
        assert client.base_url == _constants.PRODUCTION_URL


def test_security_claims(readme_env: SandboxServer) -> None:
    with pytest.raises(ValueError, match="allow_insecure"):
        ifr.Client("k", base_url="http://example.com")
    for url in ("http://example.com", "http://localhost:1", "http://127.0.0.9", "http://[::1]"):
        with ifr.Client("secret-key", base_url=url, allow_insecure="example" in url) as client:
            assert "secret-key" not in repr(client)
    cdf = ifr.load_customer_records()
    once, again = ifr.pseudonymize(cdf, salt="a"), ifr.pseudonymize(cdf, salt="a")
    other = ifr.pseudonymize(cdf, salt="b")
    for column in ("customer_email", "customer_name"):
        assert once[column].equals(again[column])
        kept = cdf[column].notna()
        assert not once.loc[kept, column].isin(cdf[column]).any()
        assert (once.loc[kept, column] != other.loc[kept, column]).all()


# -- Errors --------------------------------------------------------------------------------------


def test_error_tree_is_the_code(readme_env: SandboxServer) -> None:
    parents: dict[int, type] = {}
    for line in block_with("ImpactFrameError\n├──").code.splitlines():
        name = re.search(r"\w+", line)
        assert name
        cls = getattr(ifr, name.group())
        depth = name.start() // 4
        parents[depth] = cls
        if depth:
            assert cls.__bases__[0] is parents[depth - 1], line
        instance = cls("message")
        for attribute in re.findall(r"\.(\w+)", line[name.end() :]):
            assert hasattr(instance, attribute), (line, attribute)
    with pytest.raises(ifr.AuthenticationError) as caught:
        ifr.load_records(api_key="wrong-key")
    assert caught.value.status == 401
    readme_env.inject(Fault("status", status=429, retry_after="0"), times=1)
    with ifr.Client(max_retries=0) as client, pytest.raises(ifr.RateLimitError):
        ifr.load_records(client=client)


# -- Caching and big histories -------------------------------------------------------------------


def test_cache_claims(readme_env: SandboxServer, tmp_path: Path) -> None:
    network = ifr.load_records(cache=True)
    readme_env.clear_log()
    cached = ifr.load_records(cache=True)
    assert readme_env.requests == []  # "zero requests"
    pd.testing.assert_frame_equal(cached, network)
    last_day = network["time_utc"].max().strftime("%Y-%m-%d")
    ifr.load_records(cache=True, refresh=True)  # "only from the UTC day of the newest record on"
    assert readme_env.requests[0].params["start_date"] == [last_day]
    root = tmp_path / "cache"
    (manifest,) = root.rglob("manifest.json")
    fields = json.loads(manifest.read_text())
    # query, row count, last synced day, schema version, package version, dtypes, checksum
    for key in ("query", "rows", "last_synced_day", "schema_version", "package_version"):
        assert key in fields
    assert fields["layout"]["columns"][0]["dtype"] == "string"
    assert len(fields["data_sha256"]) == 64
    (data,) = manifest.parent.glob("*.parquet")
    assert pq.ParquetFile(data).metadata.row_group(0).column(0).compression == "ZSTD"
    for path in [root, *root.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
        assert readme_env.api_key not in str(path)
        assert path.is_dir() or readme_env.api_key.encode() not in path.read_bytes()


def _shape(text: str, path: str) -> str:
    """``text`` with ``path`` and every count made generic."""
    return re.sub(r"\d[\d,]*", "N", text.replace(path, "PATH"))


def test_export_result_prints_as_the_readme_shows(
    readme_env: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    block = block_with("ifr.export_parquet(")
    code = block.code.split("\n\n")[0]  # the export and its print(result)
    namespace: dict[str, Any] = {}
    exec(compile(IMPORT_IFR + code, f"README.md:{block.line}", "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    shown = next(x for x in code.splitlines() if x.startswith("print(result)")).split("# ")[1]
    for token in re.findall(r"\d[\d,]*", shown):  # counts written as the code prints them
        assert token == f"{int(token.replace(',', '')):,}", token
    shown_path = Path(re.findall(r"-> (\S+) \(", shown)[0])
    result_path = namespace["result"].path
    assert shown_path.name == result_path.name
    assert shown_path.is_absolute() == result_path.is_absolute()
    assert _shape(printed, str(result_path)) == _shape(shown, str(shown_path))


def test_export_claims(readme_env: SandboxServer) -> None:
    assert inspect.signature(ifr.export_parquet).parameters["batch_records"].default == 50_000
    result = ifr.export_parquet("impact/", partition_by=("year", "month"))
    assert {"_common_metadata", "_metadata"} <= {p.name for p in result.path.iterdir()}
    assert next(result.path.glob("year=*/month=*/*.parquet"))
    import impactframe.dask as ifd

    readme_env.clear_log()
    keys = ifd.read_records(metadata_keys=["order_id", "source"]).columns
    assert list(keys[-2:]) == ["metadata_order_id", "metadata_source"]
    assert "metadata" in ifd.read_records().columns  # one JSON column by default
    # "Dask needs the columns before any fetch": only the one-record probes of the date range
    assert {tuple(r.params["limit"]) for r in readme_env.requests} == {("1",)}


def test_aggregation_claims(readme_env: SandboxServer) -> None:
    for backend in ("numpy_nullable", "pyarrow"):
        df = ifr.load_records(dtype_backend=backend)
        assert isinstance(df.impact.totals(), pd.Series)
        for method in (df.impact.summarize, df.impact.cumulative):
            table = method(freq="MS", by="metadata_source")
            groups, periods = (
                table.index.get_level_values(i).nunique(dropna=False) for i in (0, 1)
            )
            assert table.index.nlevels == 2
            assert len(table) == groups * periods  # every period for every group
            assert {str(t) for t in table.dtypes} == {"Int64"}
        assert {"money_donated_usd", "unit"} <= set(df.impact.with_units().columns)


# -- Command line --------------------------------------------------------------------------------

SYNOPSIS = block_with("impactframe fetch   records|customer-records").code
PLACEHOLDERS = {"N", "S", "P", "E", "DIR", "FILE", "COLUMN", "SECONDS", "PATH", "URL", "TYPE"}
MINIMAL = {
    "fetch": ["fetch", "records", "--out", "x.parquet"],
    "export": ["export", "records", "--out", "x"],
    "summary": ["summary", "records"],
    "demo": ["demo"],
    "sandbox": ["sandbox"],
    "reconcile": ["reconcile"],
    "cache": ["cache", "list"],
}


def _synopsis() -> dict[str, str]:
    """Command (or ``query``, ``global``) to its synopsis text, continuation lines joined."""
    parts: dict[str, str] = {}
    current = ""
    for line in SYNOPSIS.splitlines():
        head = re.match(r"impactframe (\w+)|(query|global):", line)
        if head:
            current = head.group(1) or head.group(2)
            line = line[head.end() :]
        parts[current] = parts.get(current, "") + " " + line
    return parts


def _options(command: str) -> dict[str, argparse.Action]:
    """Option string to its action, for one subcommand."""
    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {o: a for a in commands.choices[command]._actions for o in a.option_strings}


def _parse(args: list[str]) -> Any:
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"the parser refuses {args}")


@pytest.mark.parametrize("command", list(MINIMAL))
def test_synopsis_matches_the_parser(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _synopsis()[command]
    if "[query]" in text:
        text += _synopsis()["query"]
    code, help_text, _ = cli(capsys, command, "--help")
    assert code == 0
    positional = text.split()[0]
    for choice in positional.split("|") if "|" in positional else []:
        _parse([command, choice, *MINIMAL[command][2:]])
    actions = _options(command)
    for option, written in re.findall(r"(--[a-z][\w-]*)(?: (\[\w+\]|[\w.,|-]+))?", text):
        assert re.search(rf"{option}\b", help_text), option
        value = written.strip("[]")
        if value in {"", *PLACEHOLDERS} or value.startswith("YYYY"):
            continue
        if "|" in value or written.startswith("["):  # `--sort asc|desc`, `--refresh [full]`
            for choice in value.split("|"):
                _parse([*MINIMAL[command], option, choice])
        else:  # `[--records 5000]`: the default
            default = getattr(_parse(MINIMAL[command]), actions[option].dest)
            assert str(default) == value, option


def test_global_options_and_no_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for option in re.findall(r"--[a-z][\w-]*", _synopsis()["global"]):
        assert option in out
    listed = set(re.findall(r"^    (\w+)(?: |$)", out, re.M))  # the COMMAND lines of --help
    assert listed == set(MINIMAL) == set(_synopsis()) - {"query", "global"}
    helps = "".join(cli(capsys, c, "--help")[1] for c in MINIMAL)
    assert "--api-key-file" in helps
    assert "--api-key " not in helps
    code, _, err = cli(capsys, "summary", "records", "--api-key", "sk-123")
    assert code == 2
    assert "sk-123" not in err
    assert _parse(["demo"]).out == Path("impactframe-demo")  # "into ./impactframe-demo"


def test_exit_codes_and_one_line_errors(
    readme_env: SandboxServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for usage in (["--start", "2024-02-30"], ["--filter-by", "bogus"]):
        code, _, err = cli(capsys, "summary", "records", *usage)
        assert code == 2, err
        assert err.count("\n") == 1, err
    assert cli(capsys, "fetch", "records", "--out", "r.csv")[0] == 0
    assert len(pd.read_csv("r.csv")) == len(ifr.load_records())  # CSV by suffix
    monkeypatch.setenv("IMPACTFRAME_API_KEY", "wrong-key")
    code, _, err = cli(capsys, "summary", "records")
    assert (code, err.count("\n")) == (1, 1), err
    assert "Traceback" not in err
    code, _, err = cli(capsys, "summary", "records", "--debug")
    assert code == 1
    assert "Traceback" in err


def test_ctrl_c_exits_130(readme_env: SandboxServer, capsys: pytest.CaptureFixture[str]) -> None:
    # A server that accepts and never answers; Ctrl-C (SIGINT to this, the main thread) comes
    # once the fetch is surely waiting inside its request.
    done = threading.Event()
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def interrupt(silent: socket.socket) -> None:
        connection, _ = silent.accept()
        with connection:
            signal.pthread_kill(main_thread, signal.SIGINT)
            done.wait(30)

    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        thread = threading.Thread(target=interrupt, args=(silent,), daemon=True)
        thread.start()
        try:
            code, out, err = cli(
                capsys, "fetch", "records", "--out", "r.parquet", "--base-url", url
            )
        finally:
            done.set()
            thread.join(10)
    assert (code, out, err) == (130, "", "impactframe: interrupted\n")


def test_cache_list_shows_one_line_per_entry(
    readme_env: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind in ("tree_planted", "money_donated"):
        assert (
            cli(capsys, "fetch", "records", "--filter-by", kind, "--out", "x.parquet", "--cache")[0]
            == 0
        )
    code, out, _ = cli(capsys, "cache", "list")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:  # endpoint, query, rows, last synced day, last built, size, folder
        assert re.fullmatch(
            r"records +filter_by=\w+ +[\d,]+ rows +synced [\d-]+ +built [\d-]+ [\d:]+ UTC"
            r" +\S+ \S+ +/\S+",
            line,
        ), line
        assert Path(line.split()[-1]).is_dir()


def test_demo_writes_the_files_the_readme_names(tmp_path: Path) -> None:
    paragraph = README[README.index("`make demo` runs") :].split("\n\n")[0]
    assert "`impactframe demo`" in paragraph
    named = [n for n in ticked(paragraph) if re.fullmatch(r"\w+(\.\w+|/)", n)]
    assert len(named) == 5, named
    process = python_m("demo", "--out", str(tmp_path / "demo"), "--no-progress")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    for name in named:
        assert (tmp_path / "demo" / name.rstrip("/")).exists(), name
    assert "Totals per impact type" in out
    assert "lbs of CO2" in out  # with units
    assert "Top 5 customers" in out
    assert "HTTP 429" in err
    assert "HTTP 503" in err  # the injected faults, retried


# -- the repository around the README ------------------------------------------------------------


def _makefile_rules() -> dict[str, tuple[str, str]]:
    """Makefile target -> (prerequisites, recipe)."""
    rules = {}
    text = (ROOT / "Makefile").read_text()
    for found in re.finditer(r"^([\w$()]+):(.*)\n((?:\t.*\n?)*)", text, re.M):
        rules[found[1]] = (found[2].strip(), found[3])
    return rules


def test_makefile_targets_named_exist() -> None:
    named = set(re.findall(r"\bmake (\w+)", README))
    assert named == {"demo", "test", "lint", "bench", "soak"}
    rules = _makefile_rules()
    for target in named:
        assert "$(STAMP)" in rules[target][0], target  # "each creates .venv itself"
    assert "impactframe demo" in rules["demo"][1]
    assert "ruff" in rules["test"][1]
    assert "pytest" in rules["test"][1]
    assert "ruff" in rules["lint"][1]
    assert "mypy" in rules["lint"][1]
    assert "-m benchmarks\n" in rules["bench"][1]
    assert "-m benchmarks.soak" in rules["soak"][1]  # "make soak (python -m benchmarks.soak)"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# Paths of this repository the README names (each asserted to be named, so the list cannot rot).
REPO_PATHS = (
    "impactframe/_dtypes.py",
    "notebooks/quickstart.ipynb",
    "data-samples/",
    "make_samples.py",
    "tests/test_trust_*.py",
    "benchmarks/RESULTS.md",
    ".ci/run",
)


def test_paths_named_exist() -> None:
    for name in REPO_PATHS:
        assert name in README, name
    for name in REPO_PATHS:
        assert list(ROOT.glob(name)) or (ROOT / "data-samples" / name).exists(), name
    assert "quickstart.ipynb" in (ROOT / "tests" / "test_notebook.py").read_text()
    samples = ROOT / "data-samples"
    assert len(list(samples.glob("*.json"))) == 2  # the documentation's two example responses
    assert {p.stem.split("_sample")[0] for p in samples.glob("*.parquet")} == {
        "records",
        "customer_records",
    }


def test_soak_table_adds_up() -> None:
    rows = table_rows("| run | requests | faults |")
    runs, (total,) = rows[:-1], rows[-1:]
    for column in (1, 2, 3, 4, 5):
        assert sum(number(row[column]) for row in runs) == number(total[column]), column
    assert all(row[6] == "yes" for row in runs)
    prose = re.sub(r"\s+", " ", README)
    kinds = re.search(r"Faults injected, by kind: (.*?); ([\d.]+) % of the requests", prose)
    assert kinds
    by_kind = [int(re.findall(r"\d+", item.split("(")[0])[-1]) for item in kinds[1].split(", ")]
    assert sum(by_kind) == number(total[2])
    assert round(100 * number(total[2]) / number(total[1]), 1) == float(kinds[2])
    # "Every fault was retried exactly once", except the repeated records, dropped instead
    assert number(total[3]) == number(total[2]) - by_kind[-1]
    for row in table_rows("| run | kills |")[:2]:
        assert number(row[2]) + number(row[3]) + number(row[4]) == number(row[1])


def test_benchmark_figures_are_in_results() -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    rows = table_rows("| contender (end to end) |")
    for _, rate, memory in rows:
        assert rate in results
        assert memory.split()[0] in results
    rates = [number(row[1]) for row in rows]
    paragraph = README[README.index("That is ") :].split("\n\n")[0]
    speedups = re.findall(r"([\d.]+)× the (naive|SDK)", re.sub(r"\s+", " ", paragraph))
    assert [float(s) for s, _ in speedups] == [
        round(rates[0] / rates[1], 1),
        round(rates[0] / rates[2]),
    ]


def test_benchmark_memory_fraction() -> None:
    rows = table_rows("| contender (end to end) |")
    ratio = number(rows[1][2].split()[0]) / number(rows[0][2].split()[0])
    fraction = re.search(r"in (a \w+|half) of the naive loop's memory", README)
    assert fraction
    words = {"half": 2, "a third": 3, "a quarter": 4, "a fifth": 5, "a sixth": 6}
    assert words[fraction[1]] == round(ratio)


def test_extras_named_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = set(re.findall(r"impactframe\[(\w+)\]|\(extra: (\w+)\)", README))
    assert {a or b for a, b in named} <= set(extras["optional-dependencies"])
    assert extras["scripts"]["impactframe"] == "impactframe.cli:main"
