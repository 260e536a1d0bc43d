"""The commands that need no API key: ``demo``, ``sandbox`` and ``cache``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._cache._files import resolve_cache_dir
from .._cache._store import ParquetCache
from .._constants import ENV_CACHE_DIR
from ..sandbox import SandboxServer
from ._args import PROG, Parser, _checked, command, non_negative_int, port, probability, seconds
from ._demo import run_demo
from ._output import byte_size, format_table

if TYPE_CHECKING:
    from ._args import Commands

__all__ = ["add_commands"]


def add_commands(commands: Commands, common: Parser) -> None:
    """Register ``demo``, ``sandbox`` and ``cache``; `common` holds the options of all."""
    _add_demo(commands, [common])
    _add_sandbox(commands, [common])
    _add_cache(commands, [common])


def _data_options(
    parser: argparse.ArgumentParser,
    records: int,
    customer_records: int | None,
    helps: tuple[str, str],
) -> None:
    """``--records``, ``--customer-records`` and ``--seed``: the sandbox's generated data."""
    parser.add_argument(
        "--records", type=non_negative_int, default=records, metavar="N", help=helps[0]
    )
    parser.add_argument(
        "--customer-records",
        type=non_negative_int,
        default=customer_records,
        metavar="N",
        help=helps[1],
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed (default %(default)s)")


# -- demo ----------------------------------------------------------------------------------------


def _add_demo(commands: Commands, parents: list[Parser]) -> None:
    parser = command(commands, "demo", parents, _run_demo)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("impactframe-demo"),
        metavar="DIR",
        help="output folder (default ./impactframe-demo)",
    )
    _data_options(parser, 5000, 3000, ("(default %(default)s)", "(default %(default)s)"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_demo(args: argparse.Namespace) -> int:

    run_demo(
        args.out,
        n_records=args.records,
        n_customer_records=args.customer_records,
        seed=args.seed,
        progress=False if args.no_progress else None,
    )
    return 0


# -- sandbox -------------------------------------------------------------------------------------


def _add_sandbox(commands: Commands, parents: list[Parser]) -> None:
    parser = command(commands, "sandbox", parents, _run_sandbox)
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=port, default=8000, help="port, 0 for any free one (default %(default)s)"
    )
    helps = (
        "generated records, SandboxServer(n_records=N) in Python (default %(default)s)",
        "generated customer records, n_customer_records= in Python (default: as many as --records)",
    )
    _data_options(parser, 10_000, None, helps)
    parser.add_argument(
        "--filter-after-limit",
        action="store_true",
        help="apply filter_by after limit, DynamoDB style (short and empty pages)",
    )
    parser.add_argument(
        "--latency", type=seconds, default=0.0, metavar="SECONDS", help="delay every answer"
    )
    parser.add_argument(
        "--fault-rate",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability of a random fault per request: 429, 5xx, drop, truncate, repeat",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=0, help="seed of the random faults (default 0)"
    )
    parser.add_argument(
        "--rate-limit",
        type=_checked(float, lambda v: 0.0 < v < float("inf"), "requests per second > 0"),
        default=None,
        metavar="N",
        help="past N requests per second, answer 429 with Retry-After (a gateway's limit)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (e.g. 0.0.0.0 in a container); it is a test server",
    )


def _run_sandbox(args: argparse.Namespace) -> int:

    customer_records = args.records if args.customer_records is None else args.customer_records
    server = SandboxServer(
        seed=args.seed,
        n_records=args.records,
        n_customer_records=customer_records,
        host=args.host,
        port=args.port,
        filter_after_limit=args.filter_after_limit,
        latency=args.latency,
        fault_rate=args.fault_rate,
        fault_seed=args.fault_seed,
        rate_limit=args.rate_limit,
        allow_remote=args.allow_remote,
    )
    try:
        server.start()
    except OSError as exc:
        print(
            f"{PROG} sandbox: error: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    stopping = threading.Event()
    previous = _on_sigterm(stopping)
    try:
        print(
            f"Sandbox serving {args.records} records and {customer_records} customer records "
            f"(seed {args.seed}) at {server.url}",
            flush=True,
        )
        # The sandbox's fixed, non-secret key: printing it is the point.
        print(f"export IMPACTFRAME_BASE_URL={server.url} IMPACTFRAME_API_KEY={server.api_key}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stopping.wait(0.5):  # short waits keep Ctrl-C responsive
            pass
    except KeyboardInterrupt:
        print("Stopping.", file=sys.stderr)
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _on_sigterm(stopping: threading.Event) -> signal.Handlers | None:
    """Stop cleanly on SIGTERM too; returns the previous handler (``None`` if not installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, handler)
    return previous  # type: ignore[return-value]


# -- cache ---------------------------------------------------------------------------------------


def _add_cache(commands: Commands, parents: list[Parser]) -> None:
    parser = command(commands, "cache", parents, _run_cache)
    parser.add_argument("action", choices=("list", "clear"), help="what to do")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help=f"the cache folder (default: {ENV_CACHE_DIR}, else the user cache folder)",
    )


def _run_cache(args: argparse.Namespace) -> int:

    # Named, not created: listing or clearing must not leave an empty cache folder behind.
    root = args.cache_dir.expanduser() if args.cache_dir else resolve_cache_dir(True, create=False)
    store = ParquetCache(root)
    if args.action == "clear":
        removed = store.clear()
        print(f"Removed {removed} cache entr{'y' if removed == 1 else 'ies'} from {root}")
        return 0
    entries = store.entries()
    if not entries:
        print(f"No cache entries in {root}", file=sys.stderr)
        return 0
    rows = [
        [
            str(entry.get("endpoint", "?")).replace("_", "-"),
            _describe_query(entry),
            f"{entry.get('rows', 0):,} rows",
            f"synced {entry.get('last_synced_day') or '-'}",
            f"built {_day_and_time(entry.get('built') or entry.get('created'))}",
            byte_size(entry.get("data_bytes", 0)),
            str(entry["path"]),
        ]
        for entry in entries
    ]
    right = [False, False, True, False, False, True, False]
    for line in format_table([], rows, right=right):
        print(line)
    return 0


def _day_and_time(stamp: object) -> str:
    """``2024-05-01T12:34:56.789Z`` as ``2024-05-01 12:34 UTC``; ``-`` when unknown."""
    if not isinstance(stamp, str) or len(stamp) < 16:
        return "-"
    return f"{stamp[:10]} {stamp[11:16]} UTC"


def _describe_query(entry: dict[str, Any]) -> str:
    """The cached query's options that differ from the defaults, e.g. ``filter_by=...``."""
    query = entry.get("query") or {}
    parts = []
    if query.get("filter_by"):
        parts.append("filter_by=" + ",".join(query["filter_by"]))
    for name in ("start_date", "end_date", "customer_email"):
        if query.get(name):
            parts.append(f"{name}={query[name]}")
    if query.get("sort_order", "asc") != "asc":
        parts.append(f"sort_order={query['sort_order']}")
    if entry.get("max_records") is not None:
        parts.append(f"max_records={entry['max_records']}")
    for name, default in (("metadata", "columns"), ("dtype_backend", "numpy_nullable")):
        if entry.get(name, default) != default:
            parts.append(f"{name}={entry[name]}")
    return " ".join(parts) or "all"
