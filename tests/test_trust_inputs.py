"""Bad input from the user: every bad argument is a ValueError naming it, and sends nothing.

Each case calls a public function against the shared sandbox with one bad argument (the
others valid) and checks: ``ValueError`` (never a ``TypeError``, ``KeyError`` or a library
error), the argument's name in the message, and no request in the sandbox's log. The CLI
cases check exit code 2, the argument in the one-line error, no traceback, and no request.

What was tried (the parametrization ids repeat it, as ``function-argument-what``):

=================================  ==============================================================
argument                           values tried
=================================  ==============================================================
``filter_by``                      unknown type, list with an unknown type, ``[]``, int, bytes,
                                   dict, ``[None]``
``start_date``, ``end_date``       month 13, Feb 30, ``01/02/2024``, a time, ``2024-1-1``, ``""``,
                                   int, float, ``NaT``; start after end
``sort_order``                     ``"ascending"``, ``"ASC"``, ``None``
``page_size``                      0, 1001, -1, 10.0, ``"100"``, ``True``, ``None``
``max_records``                    0, -5, 1.5, ``"10"``, ``True``
``metadata``, ``metadata_prefix``  unknown mode, ``None``; ``""``, int
``cache``, ``refresh``             ``""``, int, ``None``; ``"yes"``, ``"FULL"``, 2
``concurrency``, ``progress``      0, -1, 1.5, ``True``, ``"4"``; ``"yes"``, 1
``dtype_backend``                  ``"arrow"``, ``None``
``customer_email``                 ``""``, blank, int; on the records endpoint (export)
``client`` / ``api_key``           not a Client; both given; empty, blank, with a space,
                                   non-ASCII, int, none at all (names IMPACTFRAME_API_KEY)
``base_url``                       ftp, no scheme, plain http to a remote host, credentials,
                                   a bad port, a query string, int
``path``, ``overwrite`` (export)   ``""``, int, ``None``, an existing file, a folder that is not
                                   a dataset, an existing dataset without overwrite; ``"yes"``, 1
``endpoint``, ``partition_by``     unknown, with a space; an unknown str, duplicated, unknown, int
``batch_records``                  0, -1, 1.5, ``True``
``Client`` options                 environment, timeout (0, -1, NaN, inf, str, bool),
                                   max_retries (-1, 1.5, bool, str), session, allow_insecure
``dask.read_*``                    metadata_keys (``[""]``, int, ``[1]``), npartitions (0, -1,
                                   bool, 1.5), dtype_backend, and the query arguments above
``aggregate.*``                    df not a frame or without the columns, by (unknown, ``[]``,
                                   twice), freq (unknown, ``None``, negative, int), n (-1, 1.5,
                                   str), impact_type unknown
``pseudonymize``                   df not a frame, salt (``""``, ``None``, int), columns unknown
``SandboxServer``, ``Fault``       every keyword out of range or of the wrong type
CLI                                unknown command, bad numbers, an impossible date, an unknown
                                   impact type, a bad sort order, a missing key file
=================================  ==============================================================
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import impactframe as ifr
from impactframe import aggregate
from impactframe._frame._builder import records_to_frame
from impactframe.sandbox import Fault, SandboxServer, generate_records

ROOT = Path(__file__).resolve().parents[1]

# Bad values of the query arguments, shared by every function that takes a query.
QUERY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("filter_by-unknown", {"filter_by": "trees"}, "filter_by"),
    ("filter_by-one-unknown", {"filter_by": ["tree_planted", "plastic"]}, "filter_by"),
    ("filter_by-empty", {"filter_by": []}, "filter_by"),
    ("filter_by-int", {"filter_by": 5}, "filter_by"),
    ("filter_by-bytes", {"filter_by": b"tree_planted"}, "filter_by"),
    ("filter_by-dict", {"filter_by": {"tree_planted": 1}}, "filter_by"),
    ("filter_by-none-item", {"filter_by": [None]}, "filter_by"),
    ("start_date-month-13", {"start_date": "2024-13-01"}, "start_date"),
    ("start_date-feb-30", {"start_date": "2024-02-30"}, "start_date"),
    ("start_date-us-format", {"start_date": "01/02/2024"}, "start_date"),
    ("start_date-with-time", {"start_date": "2024-01-01T00:00:00"}, "start_date"),
    ("start_date-unpadded", {"start_date": "2024-1-1"}, "start_date"),
    ("start_date-empty", {"start_date": ""}, "start_date"),
    ("start_date-int", {"start_date": 20240101}, "start_date"),
    ("start_date-nat", {"start_date": pd.NaT}, "start_date"),
    ("end_date-word", {"end_date": "tomorrow"}, "end_date"),
    ("end_date-float", {"end_date": 3.5}, "end_date"),
    ("start_date-after-end", {"start_date": "2024-03-01", "end_date": "2024-02-01"}, "start_date"),
    ("sort_order-word", {"sort_order": "ascending"}, "sort_order"),
    ("sort_order-upper", {"sort_order": "ASC"}, "sort_order"),
    ("sort_order-none", {"sort_order": None}, "sort_order"),
    ("page_size-0", {"page_size": 0}, "page_size"),
    ("page_size-1001", {"page_size": 1001}, "page_size"),
    ("page_size-negative", {"page_size": -1}, "page_size"),
    ("page_size-float", {"page_size": 10.0}, "page_size"),
    ("page_size-str", {"page_size": "100"}, "page_size"),
    ("page_size-bool", {"page_size": True}, "page_size"),
    ("page_size-none", {"page_size": None}, "page_size"),
]
# Connection arguments, for every function that builds its own client.
CONNECTION_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("api_key-empty", {"api_key": ""}, "api_key"),
    ("api_key-blank", {"api_key": "   "}, "api_key"),
    ("api_key-space", {"api_key": "two words"}, "api_key"),
    ("api_key-non-ascii", {"api_key": "ключ-123"}, "api_key"),
    ("api_key-int", {"api_key": 12345}, "api_key"),
    ("base_url-ftp", {"base_url": "ftp://example.com"}, "base_url"),
    ("base_url-no-scheme", {"base_url": "api.1clickimpact.com"}, "base_url"),
    ("base_url-http-remote", {"base_url": "http://example.com"}, "base_url"),
    ("base_url-credentials", {"base_url": "https://user:pw@example.com"}, "base_url"),
    ("base_url-bad-port", {"base_url": "http://127.0.0.1:notaport"}, "base_url"),
    ("base_url-query", {"base_url": "https://example.com/?x=1"}, "base_url"),
    ("base_url-int", {"base_url": 5}, "base_url"),
    ("base_url-broken-ipv6", {"base_url": "http://[::1"}, "base_url"),
]
# The loaders' and the export's own options.
LOAD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("max_records-0", {"max_records": 0}, "max_records"),
    ("max_records-negative", {"max_records": -5}, "max_records"),
    ("max_records-float", {"max_records": 1.5}, "max_records"),
    ("max_records-str", {"max_records": "10"}, "max_records"),
    ("max_records-bool", {"max_records": True}, "max_records"),
    ("metadata-unknown", {"metadata": "flat"}, "metadata"),
    ("metadata-none", {"metadata": None}, "metadata"),
    ("metadata_prefix-empty", {"metadata_prefix": ""}, "metadata_prefix"),
    ("metadata_prefix-int", {"metadata_prefix": 5}, "metadata_prefix"),
    ("concurrency-0", {"concurrency": 0}, "concurrency"),
    ("concurrency-negative", {"concurrency": -1}, "concurrency"),
    ("concurrency-float", {"concurrency": 1.5}, "concurrency"),
    ("concurrency-bool", {"concurrency": True}, "concurrency"),
    ("concurrency-str", {"concurrency": "4"}, "concurrency"),
    ("progress-str", {"progress": "yes"}, "progress"),
    ("progress-int", {"progress": 1}, "progress"),
    ("client-str", {"client": "a client"}, "client"),
    ("client-object", {"client": object()}, "client"),
]
LOADER_ONLY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("cache-empty", {"cache": ""}, "cache"),
    ("cache-int", {"cache": 5}, "cache"),
    ("cache-none", {"cache": None}, "cache"),
    ("refresh-str", {"refresh": "yes"}, "refresh"),
    ("refresh-upper", {"refresh": "FULL"}, "refresh"),
    ("refresh-int", {"refresh": 2}, "refresh"),
    ("dtype_backend-unknown", {"dtype_backend": "arrow"}, "dtype_backend"),
    ("dtype_backend-none", {"dtype_backend": None}, "dtype_backend"),
]
CUSTOMER_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("customer_email-empty", {"customer_email": ""}, "customer_email"),
    ("customer_email-blank", {"customer_email": "  "}, "customer_email"),
    ("customer_email-int", {"customer_email": 5}, "customer_email"),
]
EXPORT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("path-empty", {"path": ""}, "path"),
    ("path-int", {"path": 5}, "path"),
    ("path-none", {"path": None}, "path"),
    ("path-existing-file", {"path": "<file>", "overwrite": True}, "path"),
    ("path-not-a-dataset", {"path": "<folder>", "overwrite": True}, "path"),
    ("path-exists-no-overwrite", {"path": "<dataset>"}, "path"),
    ("overwrite-str", {"overwrite": "yes"}, "overwrite"),
    ("overwrite-int", {"overwrite": 1}, "overwrite"),
    ("endpoint-unknown", {"endpoint": "users"}, "endpoint"),
    ("endpoint-space", {"endpoint": "customer records"}, "endpoint"),
    ("partition_by-str", {"partition_by": "week"}, "partition_by"),  # "year" is accepted
    ("partition_by-twice", {"partition_by": ("year", "year")}, "partition_by"),
    ("partition_by-unknown", {"partition_by": ("week",)}, "partition_by"),
    ("partition_by-int", {"partition_by": 5}, "partition_by"),
    ("batch_records-0", {"batch_records": 0}, "batch_records"),
    ("batch_records-negative", {"batch_records": -1}, "batch_records"),
    ("batch_records-float", {"batch_records": 1.5}, "batch_records"),
    ("batch_records-bool", {"batch_records": True}, "batch_records"),
    ("customer_email-on-records", {"customer_email": "a@b.io"}, "customer_email"),
]
CLIENT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("environment-unknown", {"environment": "prod"}, "environment"),
    ("timeout-0", {"timeout": 0}, "timeout"),
    ("timeout-negative", {"timeout": -1}, "timeout"),
    ("timeout-nan", {"timeout": math.nan}, "timeout"),
    ("timeout-inf", {"timeout": math.inf}, "timeout"),
    ("timeout-str", {"timeout": "30"}, "timeout"),
    ("timeout-bool", {"timeout": True}, "timeout"),
    ("max_retries-negative", {"max_retries": -1}, "max_retries"),
    ("max_retries-float", {"max_retries": 1.5}, "max_retries"),
    ("max_retries-bool", {"max_retries": True}, "max_retries"),
    ("max_retries-str", {"max_retries": "3"}, "max_retries"),
    ("session-str", {"session": "s"}, "session"),
    ("session-object", {"session": object()}, "session"),
]
DASK_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("metadata_keys-empty-key", {"metadata_keys": [""]}, "metadata_keys"),
    ("metadata_keys-int", {"metadata_keys": 5}, "metadata_keys"),
    ("metadata_keys-int-key", {"metadata_keys": [1]}, "metadata_keys"),
    ("npartitions-0", {"npartitions": 0}, "npartitions"),
    ("npartitions-negative", {"npartitions": -1}, "npartitions"),
    ("npartitions-bool", {"npartitions": True}, "npartitions"),
    ("npartitions-float", {"npartitions": 1.5}, "npartitions"),
    ("dtype_backend-unknown", {"dtype_backend": "arrow"}, "dtype_backend"),
]
SANDBOX_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("records-not-dicts", {"records": [5]}, "records"),
    ("n_records-negative", {"n_records": -1}, "n_records"),
    ("n_records-float", {"n_records": 1.5}, "n_records"),
    ("n_customer_records-str", {"n_customer_records": "10"}, "n_customer_records"),
    ("seed-str", {"seed": "x"}, "seed"),
    ("api_key-empty", {"api_key": ""}, "api_key"),
    ("api_key-padded", {"api_key": " k "}, "api_key"),
    ("host-name", {"host": "example.com"}, "host"),
    ("host-remote", {"host": "8.8.8.8"}, "host"),
    ("port-negative", {"port": -1}, "port"),
    ("port-too-big", {"port": 70000}, "port"),
    ("port-str", {"port": "80"}, "port"),
    ("fault_rate-above-1", {"fault_rate": 1.5}, "fault_rate"),
    ("fault_rate-negative", {"fault_rate": -0.1}, "fault_rate"),
    ("fault_kinds-unknown", {"fault_kinds": ["boom"]}, "fault_kinds"),
    ("fault_kinds-str", {"fault_kinds": "429"}, "fault_kinds"),
    ("latency-negative", {"latency": -1}, "latency"),
    ("latency-inf", {"latency": math.inf}, "latency"),
    ("filter_after_limit-str", {"filter_after_limit": "yes"}, "filter_after_limit"),
]
FAULT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("kind-unknown", {"kind": "boom"}, "kind"),
    ("status-too-low", {"kind": "status", "status": 99}, "status"),
    ("status-too-high", {"kind": "status", "status": 700}, "status"),
    ("delay-negative", {"kind": "latency", "delay": -1}, "delay"),
    ("retry_after-negative", {"kind": "status", "retry_after": -1}, "retry_after"),
    ("body-int", {"kind": "status", "body": 5}, "body"),
]


def _records_frame() -> pd.DataFrame:
    return records_to_frame(generate_records(20, seed=1))


def _customer_frame() -> pd.DataFrame:
    return records_to_frame(generate_records(20, seed=1, customers=True), "customer_records")


AGGREGATE_CASES: list[tuple[str, Callable[[], object], str]] = [
    ("totals-df-str", lambda: aggregate.totals("frame"), "df"),  # type: ignore[arg-type]
    ("totals-df-no-columns", lambda: aggregate.totals(pd.DataFrame({"a": [1]})), "df"),
    ("totals-by-unknown", lambda: aggregate.totals(_records_frame(), by="nope"), "by"),
    ("totals-by-empty", lambda: aggregate.totals(_records_frame(), by=[]), "by"),
    ("totals-by-twice", lambda: aggregate.totals(_records_frame(), by=["category"] * 2), "by"),
    (
        "summarize-freq-unknown",
        lambda: aggregate.summarize(_records_frame(), freq="fortnight"),
        "freq",
    ),
    ("summarize-freq-none", lambda: aggregate.summarize(_records_frame(), freq=None), "freq"),
    ("summarize-freq-negative", lambda: aggregate.summarize(_records_frame(), freq="-1D"), "freq"),
    ("summarize-freq-int", lambda: aggregate.summarize(_records_frame(), freq=5), "freq"),
    ("summarize-by-unknown", lambda: aggregate.summarize(_records_frame(), by="nope"), "by"),
    ("cumulative-freq-unknown", lambda: aggregate.cumulative(_records_frame(), freq="x"), "freq"),
    ("cumulative-df-list", lambda: aggregate.cumulative([1, 2]), "df"),  # type: ignore[arg-type]
    ("top_customers-n-negative", lambda: aggregate.top_customers(_customer_frame(), n=-1), "n"),
    ("top_customers-n-float", lambda: aggregate.top_customers(_customer_frame(), n=1.5), "n"),  # type: ignore[arg-type]
    ("top_customers-n-str", lambda: aggregate.top_customers(_customer_frame(), n="3"), "n"),  # type: ignore[arg-type]
    (
        "top_customers-impact_type-unknown",
        lambda: aggregate.top_customers(_customer_frame(), impact_type="trees"),
        "impact_type",
    ),
    ("top_customers-df-records", lambda: aggregate.top_customers(_records_frame()), "df"),
    ("with_units-df-none", lambda: aggregate.with_units(None), "df"),  # type: ignore[arg-type]
    ("pseudonymize-df-dict", lambda: ifr.pseudonymize({}, salt="s"), "df"),  # type: ignore[arg-type]
    ("pseudonymize-salt-empty", lambda: ifr.pseudonymize(_customer_frame(), salt=""), "salt"),
    ("pseudonymize-salt-none", lambda: ifr.pseudonymize(_customer_frame(), salt=None), "salt"),  # type: ignore[arg-type]
    ("pseudonymize-salt-int", lambda: ifr.pseudonymize(_customer_frame(), salt=5), "salt"),  # type: ignore[arg-type]
    (
        "pseudonymize-columns-unknown",
        lambda: ifr.pseudonymize(_customer_frame(), salt="s", columns=["nope"]),
        "columns",
    ),
]


def check(info: pytest.ExceptionInfo[ValueError], argument: str, server: SandboxServer) -> None:
    """A plain ValueError (or our ValidationError, also one) naming `argument`; no request."""
    assert isinstance(info.value, ValueError)
    assert type(info.value) is ValueError, type(info.value)
    assert argument in str(info.value), str(info.value)
    assert server.requests == []


def params(function: str, *groups: list[tuple[str, dict[str, Any], str]]) -> list[Any]:
    return [
        pytest.param(kwargs, argument, id=f"{function}-{case_id}")
        for group in groups
        for case_id, kwargs, argument in group
    ]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    params("load_records", QUERY_CASES, CONNECTION_CASES, LOAD_CASES, LOADER_ONLY_CASES)
    + params("load_customer_records", QUERY_CASES[:3], CUSTOMER_CASES, LOADER_ONLY_CASES[:2]),
)
def test_loaders_refuse_bad_arguments(
    sandbox: SandboxServer, tmp_path: Path, kwargs: dict[str, Any], argument: str, request: Any
) -> None:
    customers = request.node.callspec.id.startswith("load_customer_records")
    load = ifr.load_customer_records if customers else ifr.load_records
    options = {"api_key": sandbox.api_key, "base_url": sandbox.url, "progress": False}
    if "client" in kwargs:
        options = {"progress": False}
    with pytest.raises(ValueError, match=re.escape(argument)) as info:
        load(**{**options, **kwargs})
    check(info, argument, sandbox)
    if argument == "api_key" and isinstance(kwargs["api_key"], str) and kwargs["api_key"].strip():
        assert kwargs["api_key"] not in str(info.value)  # a key is never echoed, even a bad one


def test_loaders_refuse_client_and_api_key_together(sandbox: SandboxServer) -> None:
    client = ifr.Client(sandbox.api_key, base_url=sandbox.url)
    argument = "client"
    for load in (ifr.load_records, ifr.load_customer_records):
        with pytest.raises(ValueError, match=re.escape(argument)) as info:
            load(client=client, api_key=sandbox.api_key)
        check(info, "client", sandbox)
    with pytest.raises(ValueError, match=re.escape(argument)) as info:
        ifr.export_parquet("unused", client=client, base_url=sandbox.url)
    check(info, "client", sandbox)


def test_no_key_anywhere_names_the_environment_variable(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMPACTFRAME_API_KEY", raising=False)
    argument = "IMPACTFRAME_API_KEY"
    for call in (
        lambda: ifr.load_records(base_url=sandbox.url),
        lambda: ifr.load_customer_records(base_url=sandbox.url),
        lambda: ifr.export_parquet("unused", base_url=sandbox.url),
        lambda: ifr.Client(base_url=sandbox.url),
    ):
        with pytest.raises(ValueError, match=re.escape(argument)) as info:
            call()
        check(info, "IMPACTFRAME_API_KEY", sandbox)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    params("export_parquet", EXPORT_CASES, QUERY_CASES, CONNECTION_CASES, LOAD_CASES),
)
def test_export_refuses_bad_arguments(
    sandbox: SandboxServer, tmp_path: Path, kwargs: dict[str, Any], argument: str
) -> None:
    options: dict[str, Any] = {"progress": False}
    if "client" not in kwargs:
        options |= {"api_key": sandbox.api_key, "base_url": sandbox.url}
    kwargs = dict(kwargs)
    path = kwargs.pop("path", tmp_path / "out")
    if path == "<file>":
        path = tmp_path / "file.txt"
        path.write_text("not a dataset")
    elif path == "<folder>":
        path = tmp_path / "notes"
        path.mkdir()
        (path / "todo.txt").write_text("keep me")
    elif path == "<dataset>":
        path = tmp_path / "dataset"
        conn: dict[str, Any] = {"api_key": sandbox.api_key, "base_url": sandbox.url}
        ifr.export_parquet(path, max_records=3, progress=False, **conn)
        sandbox.clear_log()
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=re.escape(argument)) as info:
        ifr.export_parquet(path, **{**options, **kwargs})
    check(info, argument, sandbox)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created, nothing removed


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    params(
        "Client",
        CLIENT_CASES,
        CONNECTION_CASES,
        [
            ("allow_insecure-str", {"allow_insecure": "no"}, "allow_insecure"),
            ("base_url-space-in-host", {"base_url": "https://exa mple.com"}, "base_url"),
        ],
    ),
)
def test_client_refuses_bad_arguments(
    sandbox: SandboxServer, kwargs: dict[str, Any], argument: str
) -> None:
    options: dict[str, Any] = {"api_key": sandbox.api_key, "base_url": sandbox.url}
    if "allow_insecure" in kwargs:
        options["base_url"] = "http://example.com"
    with pytest.raises(ValueError, match=re.escape(argument)) as info:
        ifr.Client(**{**options, **kwargs})
    check(info, argument, sandbox)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    params("read_records", DASK_CASES, QUERY_CASES, CONNECTION_CASES)
    + params("read_customer_records", CUSTOMER_CASES),
)
def test_dask_readers_refuse_bad_arguments(
    sandbox: SandboxServer, kwargs: dict[str, Any], argument: str, request: Any
) -> None:
    dask = pytest.importorskip("impactframe.dask")
    customers = request.node.callspec.id.startswith("read_customer_records")
    read = dask.read_customer_records if customers else dask.read_records
    with pytest.raises(ValueError, match=re.escape(argument)) as info:
        read(**{"api_key": sandbox.api_key, "base_url": sandbox.url, **kwargs})
    check(info, argument, sandbox)


@pytest.mark.parametrize(
    ("call", "argument"),
    [pytest.param(call, argument, id=case_id) for case_id, call, argument in AGGREGATE_CASES],
)
def test_aggregate_and_pseudonymize_refuse_bad_arguments(
    sandbox: SandboxServer, call: Callable[[], object], argument: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(argument)) as info:
        call()
    check(info, argument, sandbox)


@pytest.mark.parametrize(
    ("kwargs", "argument"), params("SandboxServer", SANDBOX_CASES) + params("Fault", FAULT_CASES)
)
def test_sandbox_and_fault_refuse_bad_arguments(
    sandbox: SandboxServer, kwargs: dict[str, Any], argument: str, request: Any
) -> None:
    fault = request.node.callspec.id.startswith("Fault")

    def build() -> object:
        if fault:
            return Fault(**kwargs)
        return SandboxServer(**{"n_records": 5, "n_customer_records": 5, **kwargs})

    with pytest.raises(ValueError, match=re.escape(argument)) as info:
        build()
    check(info, argument, sandbox)


# --- the command line -----------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "impactframe", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
        check=False,
    )


CLI_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # id, arguments, any of these must be in the error line
    ("no-command", [], ("COMMAND",)),  # the help, on stderr
    ("unknown-command", ["fetch-all"], ("fetch-all",)),
    ("fetch-no-out", ["fetch", "records"], ("--out",)),
    ("fetch-no-endpoint", ["fetch", "--out", "x.parquet"], ("records",)),
    ("fetch-unknown-endpoint", ["fetch", "users", "--out", "x.parquet"], ("users",)),
    ("fetch-out-txt", ["fetch", "records", "--out", "x.txt"], ("--out", "out")),
    (
        "fetch-impossible-date",
        ["fetch", "records", "--out", "x.parquet", "--start", "2024-02-30"],
        ("--start", "start_date"),
    ),
    (
        "fetch-bad-date",
        ["fetch", "records", "--out", "x.parquet", "--end", "31/12/2024"],
        ("--end", "end_date"),
    ),
    (
        "fetch-start-after-end",
        ["fetch", "records", "--out", "x.parquet", "--start", "2024-03-01", "--end", "2024-02-01"],
        ("start",),
    ),
    (
        "fetch-unknown-type",
        ["fetch", "records", "--out", "x.parquet", "--filter-by", "plastic"],
        ("--filter-by", "filter_by"),
    ),
    ("fetch-bad-sort", ["fetch", "records", "--out", "x.parquet", "--sort", "up"], ("--sort",)),
    (
        "fetch-page-size-0",
        ["fetch", "records", "--out", "x.parquet", "--page-size", "0"],
        ("--page-size", "page_size"),
    ),
    (
        "fetch-page-size-big",
        ["fetch", "records", "--out", "x.parquet", "--page-size", "5000"],
        ("--page-size", "page_size"),
    ),
    (
        "fetch-page-size-word",
        ["fetch", "records", "--out", "x.parquet", "--page-size", "many"],
        ("--page-size", "page_size"),
    ),
    (
        "fetch-max-records-0",
        ["fetch", "records", "--out", "x.parquet", "--max-records", "0"],
        ("--max-records", "max_records"),
    ),
    (
        "fetch-concurrency-0",
        ["fetch", "records", "--out", "x.parquet", "--concurrency", "0"],
        ("--concurrency", "concurrency"),
    ),
    (
        "fetch-email-on-records",
        ["fetch", "records", "--out", "x.parquet", "--customer-email", "a@b.io"],
        ("--customer-email", "customer_email"),
    ),
    (
        "fetch-http-remote",
        ["fetch", "records", "--out", "x.parquet", "--base-url", "http://example.com"],
        ("--base-url", "base_url"),
    ),
    (
        "fetch-api-key-option",
        ["fetch", "records", "--out", "x.parquet", "--api-key", "secret"],
        ("--api-key",),
    ),
    (
        "fetch-refresh-bad",
        ["fetch", "records", "--out", "x.parquet", "--cache", "--refresh", "half"],
        ("--refresh", "refresh", "half"),
    ),
    ("export-no-out", ["export", "records"], ("--out",)),
    (
        "export-partition-unknown",
        ["export", "records", "--out", "ds", "--partition-by", "week"],
        ("--partition-by", "partition_by"),
    ),
    ("summary-bad-freq", ["summary", "records", "--freq", "fortnight"], ("--freq", "freq")),
    ("cache-unknown-action", ["cache", "purge"], ("purge",)),
    ("sandbox-negative-records", ["sandbox", "--records", "-1"], ("--records",)),
    ("sandbox-port-too-big", ["sandbox", "--port", "70000"], ("--port",)),
    ("sandbox-fault-rate", ["sandbox", "--fault-rate", "2"], ("--fault-rate",)),
    ("demo-negative-records", ["demo", "--records", "-5"], ("--records",)),
]


@pytest.mark.parametrize(
    ("args", "names"), [pytest.param(args, names, id=case) for case, args, names in CLI_CASES]
)
def test_cli_usage_errors_exit_2_and_send_nothing(
    sandbox: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    names: tuple[str, ...],
) -> None:
    from impactframe.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMPACTFRAME_API_KEY", sandbox.api_key)
    monkeypatch.setenv("IMPACTFRAME_BASE_URL", sandbox.url)
    monkeypatch.setenv("IMPACTFRAME_CACHE_DIR", str(tmp_path / "cache"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # The error line names the argument (argparse's usage lines above it name them all).
    last = err.strip().splitlines()[-1] if args else err.splitlines()[0]
    assert any(name in last for name in names), err
    assert "secret" not in err
    assert sandbox.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["cache"])


def test_cli_without_a_key_names_the_variable_and_sends_nothing(
    sandbox: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from impactframe.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMPACTFRAME_API_KEY", raising=False)
    code = main(["fetch", "records", "--out", "x.parquet", "--base-url", sandbox.url])
    err = capsys.readouterr().err
    assert code == 2
    assert "IMPACTFRAME_API_KEY" in err
    assert sandbox.requests == []
    missing = tmp_path / "no-such-key-file"
    code = main(["fetch", "records", "--out", "x.parquet", "--api-key-file", str(missing)])
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert str(missing) in err or "api-key-file" in err
    assert "Traceback" not in err
    assert sandbox.requests == []


def test_cli_entry_point_exits_2_on_a_usage_error(sandbox: SandboxServer, tmp_path: Path) -> None:
    # The real console entry (``python -m impactframe``), once: exit status and stderr.
    result = run_cli(
        "fetch", "records", "--out", str(tmp_path / "x.parquet"), "--start", "2024-13-01",
        env={"IMPACTFRAME_API_KEY": sandbox.api_key, "IMPACTFRAME_BASE_URL": sandbox.url},
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "start" in result.stderr.strip().splitlines()[-1]
    assert result.stdout == ""
    assert sandbox.requests == []
