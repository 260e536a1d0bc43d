"""Secrets and privacy (SPEC §6, §10): the key never shows, http is refused, files are private.

``test_the_key_appears_nowhere`` runs every path with DEBUG logging on for every logger
(impactframe's tree and the libraries under it): loads that succeed (one chain, several
windows, the customer endpoint), that retry (429, 503, dropped, truncated), that fail (a
refused key, servers that echo the key in a JSON error, an HTML page and a 200 body, a dead
host, a bad argument, a bad record, a repeated cursor, a redirect), cached loads (new, hit,
refresh, a corrupt entry), exports, the Dask reader, and the CLI (fetch, export, summary, cache
list, a refused key, all with ``--debug``) in subprocesses. Then it looks for the key, and for
its last ten characters, in every log record (message, arguments, traceback), every exception
(str, repr, args and attributes along the cause and context chain), every warning, the reprs
of clients, frames, results, stores and Dask graphs, the names and bytes of every file under
the cache and export folders, and the CLI's output.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import stat
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import impactframe as ifr
from impactframe._cache._store import ParquetCache
from impactframe.sandbox import Fault, SandboxServer, generate_records

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-DO-NOT-LEAK-9f3c8e1a7b"
TAIL = KEY[-10:]


class Evidence:
    """Every text the key could hide in, with where it came from."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: object) -> None:
        self.texts.append((where, text if isinstance(text, str) else repr(text)))

    def exception(self, where: str, exc: BaseException) -> None:
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            name = f"{where}: {type(current).__name__}"
            self.add(name, str(current))
            self.add(name, repr(current))
            self.add(name, repr(current.args))
            self.add(name, repr(getattr(current, "__dict__", {})))
            # The chain a traceback shows: the cause, else the context unless suppressed.
            current = current.__cause__ or (
                None if current.__suppress_context__ else current.__context__
            )
        self.add(f"{where}: traceback", "".join(traceback.format_exception(exc)))

    def files(self, where: str, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            self.add(f"{where}: name", str(path.relative_to(root)))
            if path.is_file():
                self.add(f"{where}: {path.name}", path.read_bytes().decode("latin-1"))

    def leaks(self) -> list[str]:
        return [where for where, text in self.texts if KEY in text or TAIL in text]


@pytest.fixture
def evidence() -> Evidence:
    return Evidence()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """DEBUG for every logger (the root level reaches impactframe's tree and urllib3's)."""
    previous = {name: logging.getLogger(name).level for name in ("impactframe", "urllib3")}
    for name in previous:
        logging.getLogger(name).setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for name, level in previous.items():
        logging.getLogger(name).setLevel(level)


def expect_error(
    evidence: Evidence, where: str, error: type[BaseException], call: Callable[[], Any]
):
    with pytest.raises(error) as info:
        call()
    evidence.exception(where, info.value)
    return info.value


@pytest.fixture
def run_cli() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``python -m impactframe --debug ...``; whatever still runs at the end is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTFRAME_")}
        environment |= {"PYTHONPATH": str(ROOT), **env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "impactframe", "--debug", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=environment,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_the_key_appears_nowhere(
    tmp_path: Path,
    debug_logs: pytest.LogCaptureFixture,
    evidence: Evidence,
    fake_sleep: Any,
    run_cli: Callable[..., subprocess.Popen[str]],
) -> None:
    cache, exports = tmp_path / "cache", tmp_path / "exports"
    cli_cache = tmp_path / "cli-cache"
    with (
        SandboxServer(api_key=KEY, n_records=400, n_customer_records=200, seed=3) as server,
        SandboxServer(api_key="someone-else", n_records=5, n_customer_records=0) as other,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        client = ifr.Client(KEY, base_url=server.url)
        client._sleep = fake_sleep
        client._rng = random.Random(0)
        conn: dict[str, Any] = {"api_key": KEY, "base_url": server.url, "progress": False}

        # The CLI runs alongside, in subprocesses.
        cli_env = {"IMPACTFRAME_API_KEY": KEY, "IMPACTFRAME_BASE_URL": server.url}
        # Its own cache folder: a CLI writing into ours while we corrupt an entry would race.
        cli_env["IMPACTFRAME_CACHE_DIR"] = str(cli_cache)
        commands = {
            "fetch": ["fetch", "records", "--out", str(exports / "cli.parquet"), "--cache"],
            "export": ["export", "customer-records", "--out", str(exports / "cli-dataset")],
            "summary": ["summary", "records", "--freq", "YS", "--no-progress"],
            "cache list": ["cache", "list"],
        }
        procs = {name: run_cli(args, cli_env, tmp_path) for name, args in commands.items()}
        refused = run_cli(
            ["fetch", "records", "--out", "x.csv"],
            cli_env | {"IMPACTFRAME_BASE_URL": other.url},
            tmp_path,
        )

        # Success: one chain, windows, customers; reprs of what comes back.
        frames = [
            ifr.load_records(client=client, page_size=50),
            ifr.load_records(concurrency=4, **conn),
            ifr.load_customer_records(**conn),
        ]
        # Retries of every kind.
        for fault in (
            Fault("status", status=429, retry_after="1"),
            Fault("status", status=503),
            Fault("drop"),
            Fault("truncate"),
        ):
            server.inject(fault, times=1)
        frames.append(ifr.load_records(client=client, page_size=100))
        assert len(fake_sleep) == 4
        # The cache: new entry, hit, refresh, full refresh, a corrupt entry.
        for refresh in (False, False, True, "full"):
            frames.append(ifr.load_records(client=client, cache=cache, refresh=refresh))
        data = next(cache.rglob("data-*.parquet"))
        data.write_bytes(data.read_bytes()[:-20] + b"\0" * 20)
        frames.append(ifr.load_records(client=client, cache=cache))
        # Exports, the Dask reader.
        results = [
            ifr.export_parquet(exports / "a", client=client, page_size=100),
            ifr.export_parquet(exports / "b", "customer_records", **conn),
        ]
        from impactframe.dask import read_records

        ddf = read_records(npartitions=3, **{k: v for k, v in conn.items() if k != "progress"})
        frames.append(ddf.compute(scheduler="sync"))

        # Failures.
        expect_error(evidence, "refused key", ifr.AuthenticationError,
                     lambda: ifr.load_records(api_key=KEY, base_url=other.url))  # fmt: skip
        echo = json.dumps({"type": "key_error", "message": f"API Key {KEY} does not exist"})
        server.inject(Fault("status", status=401, body=echo), times=1)
        expect_error(evidence, "echoed in JSON", ifr.AuthenticationError,
                     lambda: ifr.load_records(client=client))  # fmt: skip
        server.inject(Fault("status", status=500, body=f"<html>key={KEY}</html>"), times=None)
        expect_error(evidence, "echoed in HTML", ifr.APIError,
                     lambda: ifr.load_records(client=client))  # fmt: skip
        server.clear_faults()
        server.inject(Fault("status", status=200, body=f"not json {KEY}"), times=1)
        expect_error(evidence, "echoed in a 200", ifr.APIError,
                     lambda: ifr.load_records(client=client))  # fmt: skip
        server.inject(Fault("status", status=302, body=b"moved"), times=1)
        expect_error(evidence, "redirect", ifr.APIError, lambda: ifr.load_records(client=client))
        other.inject(Fault("repeat"), times=1)
        expect_error(evidence, "repeated cursor", ifr.PaginationError,
                     lambda: ifr.load_records(api_key="someone-else", base_url=other.url,
                                              page_size=1, concurrency=1))  # fmt: skip
        for where, call in {
            "page_size": lambda: ifr.load_records(page_size=0, **conn),
            "key with a space": lambda: ifr.Client(KEY + " x", base_url=server.url),
            "key with a tab": lambda: ifr.load_records(api_key=KEY + "\tx", base_url=server.url),
            "http remote": lambda: ifr.Client(KEY, base_url="http://example.com"),
            "export exists": lambda: ifr.export_parquet(exports / "a", **conn),
        }.items():
            expect_error(evidence, where, ValueError, call)
        bad = SandboxServer(api_key=KEY, records=[{"user_id": "U1", "tree_planted": 1}])
        with bad:
            expect_error(evidence, "bad record", ifr.ValidationError,
                         lambda: ifr.load_records(api_key=KEY, base_url=bad.url))  # fmt: skip
        dead = SandboxServer(api_key=KEY, n_records=0).start()
        dead_url = dead.url
        dead.stop()
        dead_client = ifr.Client(KEY, base_url=dead_url, max_retries=1)
        dead_client._sleep = fake_sleep
        expect_error(evidence, "dead host", ifr.APIError,
                     lambda: ifr.load_records(client=dead_client))  # fmt: skip

        outputs = {name: proc.communicate(timeout=120) for name, proc in procs.items()}
        refused_out = refused.communicate(timeout=120)

    # Everything the key could hide in.
    for name, (out, err) in outputs.items():
        evidence.add(f"cli {name} stdout", out)
        evidence.add(f"cli {name} stderr", err)
        assert procs[name].returncode == 0, err[-2000:]
    evidence.add("cli refused stdout", refused_out[0])
    evidence.add("cli refused stderr", refused_out[1])
    assert refused.returncode == 1
    assert "Traceback" in refused_out[1]  # --debug: the traceback is there, the key is not
    for record in debug_logs.records:
        where = f"log {record.name}:{record.levelname}"
        evidence.add(where, record.getMessage())
        evidence.add(where, repr(record.args))
        if record.exc_info:
            evidence.add(where, "".join(traceback.format_exception(*record.exc_info)))
    assert any(r.name.startswith("urllib3") for r in debug_logs.records)
    assert any(r.name == "impactframe" and "retry" in r.getMessage() for r in debug_logs.records)
    for warning in caught:
        evidence.add(f"warning {warning.category.__name__}", str(warning.message))
    assert any(w.category is ifr.CacheWarning for w in caught)  # the corrupt entry was seen
    for thing in [client, dead_client, ParquetCache(cache), server, ddf, *results, *frames]:
        evidence.add(f"repr {type(thing).__name__}", repr(thing))
        evidence.add(f"str {type(thing).__name__}", str(thing))
    evidence.add("vars Client", repr(vars(client)))
    evidence.add("dask graph", repr(dict(ddf.__dask_graph__())))
    evidence.files("cache", cache)
    evidence.files("cli cache", cli_cache)
    evidence.files("exports", exports)
    evidence.files("tmp", tmp_path)
    assert len(evidence.texts) > 200
    assert evidence.leaks() == []


def test_the_key_is_not_reachable_from_a_network_error(fake_sleep: Any) -> None:
    dead = SandboxServer(api_key=KEY, n_records=0).start()
    url = dead.url
    dead.stop()
    client = ifr.Client(KEY, base_url=url, max_retries=0)
    client._sleep = fake_sleep
    with pytest.raises(ifr.APIError) as info:
        ifr.load_records(client=client)
    reachable = []
    current: BaseException | None = info.value
    while current is not None:
        request = getattr(current, "request", None)
        reachable.append(repr(getattr(request, "headers", None)))
        current = current.__cause__ or current.__context__
    formatted = traceback.TracebackException.from_exception(info.value, capture_locals=True)
    reachable.append("".join(formatted.format()))
    assert not [text for text in reachable if KEY in text]


# --- plain http, file modes, pseudonyms ------------------------------------------------------


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (for a sandbox others could reach)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))  # no packet is sent for UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_plain_http_to_a_remote_host_is_refused_before_any_connection(tmp_path: Path) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with SandboxServer(api_key=KEY, host=address, allow_remote=True, n_records=20) as server:
        assert not server.url.startswith("http://127.")
        for call in (
            lambda: ifr.Client(KEY, base_url=server.url),
            lambda: ifr.load_records(api_key=KEY, base_url=server.url),
            lambda: ifr.export_parquet(tmp_path / "out", api_key=KEY, base_url=server.url),
        ):
            with pytest.raises(ValueError, match="base_url") as info:
                call()
            assert "allow_insecure" in str(info.value)
        assert server.requests == []
        assert not (tmp_path / "out").exists()
        # The explicit opt-in works, and only then does a request go out.
        with ifr.Client(KEY, base_url=server.url, allow_insecure=True) as client:
            assert len(ifr.load_records(client=client, progress=False)) == 20
        assert server.requests


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.8.9.10:8000", True),
        ("http://LOCALHOST:8000", True),
        ("http://[::1]:8000", True),
        ("http://[::ffff:127.0.0.1]:8000", True),
        ("https://api.example.com", True),
        ("http://example.com", False),
        ("HTTP://EXAMPLE.COM", False),
        ("http://localhost.example.com", False),
        ("http://127.0.0.1.nip.io", False),
        ("http://0.0.0.0:8000", False),
        ("http://10.0.0.1", False),
        ("http://[fe80::1]", False),
    ],
)
def test_which_hosts_may_be_plain_http(url: str, accepted: bool) -> None:
    if accepted:
        with ifr.Client(KEY, base_url=url) as client:
            assert KEY not in repr(client)
        return
    with pytest.raises(ValueError, match="base_url") as info:
        ifr.Client(KEY, base_url=url)
    assert KEY not in str(info.value)
    with ifr.Client(KEY, base_url=url, allow_insecure=True) as client:
        assert client.base_url.lower() == url.lower()


def test_cache_files_are_0600_and_folders_0700_whatever_the_umask(
    tmp_path: Path, sandbox: SandboxServer
) -> None:
    root = tmp_path / "made" / "for" / "cache"  # three folders impactframe creates
    previous = os.umask(0)
    try:
        conn: dict[str, Any] = {"api_key": sandbox.api_key, "base_url": sandbox.url}
        conn["progress"] = False
        for refresh in (False, True, "full"):
            ifr.load_records(cache=root, refresh=refresh, **conn)
        ifr.load_customer_records(cache=root, filter_by="tree_planted", **conn)
    finally:
        os.umask(previous)
    created = [tmp_path / "made", tmp_path / "made" / "for", *root.parent.rglob("*")]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in created}
    assert len([p for p in created if p.is_file()]) >= 6  # locks, manifests, data
    assert {p: m for p, m in modes.items() if p.is_dir() and m != 0o700} == {}
    assert {p: m for p, m in modes.items() if p.is_file() and m != 0o600} == {}


def test_pseudonymize_is_stable_per_salt_and_different_across_salts() -> None:
    from impactframe._frame._builder import records_to_frame

    records = generate_records(300, seed=9, customers=True)
    frame = records_to_frame(records, "customer_records")
    shuffled = frame.sample(frac=1, random_state=1).reset_index(drop=True)
    a1 = ifr.pseudonymize(frame, salt="salt-a")
    a2 = ifr.pseudonymize(shuffled, salt="salt-a")
    b = ifr.pseudonymize(frame, salt="salt-b")
    columns = ["customer_email", "customer_name"]
    # Stable: the same value maps to the same pseudonym, whatever the frame or the order.
    mapping = dict(zip(frame["customer_email"], a1["customer_email"], strict=True))
    assert dict(zip(shuffled["customer_email"], a2["customer_email"], strict=True)) == mapping
    assert len(set(mapping.values())) == len(mapping)  # one pseudonym per address
    assert a1.equals(ifr.pseudonymize(frame, salt=b"salt-a"))
    for column in columns:
        present = frame[column].notna()
        # Different across salts, for every value; missing stays missing.
        assert (a1.loc[present, column] != b.loc[present, column]).all()
        assert a1[column].isna().equals(frame[column].isna())
        # Nothing of the original survives, and the salt is not in the output.
        originals = set(frame.loc[present, column])
        assert not originals & set(a1[column].dropna())
        assert not a1[column].dropna().str.contains("salt-a").any()
    assert frame["customer_name"].isna().any()  # the generated data has nameless customers
    # Everything else is untouched, and the input is not modified.
    rest = [c for c in frame.columns if c not in columns]
    pd.testing.assert_frame_equal(a1[rest], frame[rest])
    assert frame.equals(records_to_frame(records, "customer_records"))
