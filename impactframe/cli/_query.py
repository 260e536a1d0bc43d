"""The commands that query the API: ``fetch``, ``export``, ``summary`` and ``reconcile``.

They share the query options (:func:`~impactframe._cli_args.query_parser`) and turn them into
loader keywords here, checked before any request; the API key is read last, from
``--api-key-file`` or the environment, and never echoed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._constants import ENV_API_KEY
from ..account import reconcile
from ..client._client import Client
from ..export._export import PARTITION_KEYS, export_parquet
from ..loaders import load_customer_records, load_records
from ._args import (
    Parser,
    cache_parser,
    command,
    connection_options,
    date,
    frame_path,
    freq,
    metadata_option,
    parent_parser,
    partition_by,
    query_parser,
)
from ._output import summary_lines, write_frame

if TYPE_CHECKING:
    from ._args import Commands

__all__ = ["add_commands"]


def add_commands(commands: Commands, common: Parser) -> None:
    """Register ``fetch``, ``export`` and ``summary``; `common` holds the options of all."""
    query, cache = query_parser(), cache_parser()
    fetch = command(commands, "fetch", [common, query, cache], _run_fetch)
    fetch.add_argument(
        "--out",
        type=frame_path,
        required=True,
        metavar="FILE",
        help="FILE.parquet or FILE.csv, in an existing folder",
    )
    fetch.add_argument(
        "--csv-raw",
        action="store_true",
        help=(
            "write CSV cells as they are, even those a spreadsheet would run as a formula "
            "(by default a cell starting with = + - @ tab or CR gets a leading ')"
        ),
    )
    metadata_option(fetch)
    export = command(commands, "export", [common, query], _run_export)
    _export_options(export)
    summary = command(commands, "summary", [common, query, cache], _run_summary)
    summary.add_argument(
        "--freq", type=freq, default="MS", help="period: a pandas alias, e.g. D, W, MS, QS, YS"
    )
    summary.add_argument(
        "--by", metavar="COLUMN", help="one table per value of this column, e.g. customer_email"
    )
    checked, group = parent_parser("reconcile options")
    group.add_argument("--start", type=date, metavar="YYYY-MM-DD", help="first UTC day (incl.)")
    group.add_argument("--end", type=date, metavar="YYYY-MM-DD", help="last UTC day (incl.)")
    connection_options(group)
    command(commands, "reconcile", [common, checked], _run_reconcile)


def _export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder")
    parser.add_argument(
        "--partition-by",
        type=partition_by,
        default=("year", "month"),
        metavar="KEYS",
        help=(
            f"comma-separated folders from {', '.join(PARTITION_KEYS)}, or none "
            "(default year,month)"
        ),
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset at DIR"
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help=(
            "bring the dataset at DIR up to date: fetch from its newest day on, rewrite the "
            "partitions that day touches (same query and options as the export that made it)"
        ),
    )
    metadata_option(parser)


# -- handlers ------------------------------------------------------------------------------------


def _run_fetch(args: argparse.Namespace) -> int:
    _check_out_file(args.out)  # before any request: a typo must not cost a whole load
    df = _load_cached(args, metadata=args.metadata)
    path = write_frame(df, args.out, neutralize_formulas=not args.csv_raw)
    rows = f"{len(df):,} row" + ("" if len(df) == 1 else "s")
    print(f"{rows}, {df.shape[1]} columns -> {path}")
    return 0


def _check_out_file(path: Path) -> None:
    """``fetch --out``: its folder must exist and be writable; nothing is created for it."""
    folder = path.parent
    if path.is_dir():
        msg = f"--out: {str(path)!r} is a folder; expected a file name"
        raise ValueError(msg)
    if not folder.is_dir():
        why = "is a file" if folder.exists() else "does not exist (create it first)"
        msg = f"--out: {str(path)!r}: the folder {str(folder)!r} {why}"
        raise ValueError(msg)
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"--out: {str(path)!r}: no permission to write in {str(folder)!r}"
        raise ValueError(msg)


def _run_export(args: argparse.Namespace) -> int:

    with _connection(args) as connection:
        result = export_parquet(
            args.out,
            args.endpoint,
            partition_by=args.partition_by,
            overwrite=args.overwrite,
            refresh=args.refresh,
            metadata=args.metadata,
            **connection,
        )
    print(result)
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    df = _load_cached(args)
    for line in summary_lines(df, freq=args.freq, by=args.by, endpoint=args.endpoint):
        print(line)
    return 0


def _run_reconcile(args: argparse.Namespace) -> int:
    if args.start and args.end and args.start > args.end:
        msg = f"--start {args.start} is after --end {args.end}; expected start <= end"
        raise ValueError(msg)
    key = _read_api_key(args)
    with Client(key, base_url=args.base_url, allow_insecure=args.allow_insecure) as client:
        result = reconcile(start_date=args.start, end_date=args.end, client=client)
    print(result)
    return 0 if result.ok else 1


# -- from options to loader keywords -------------------------------------------------------------


def _read_api_key(args: argparse.Namespace) -> str:
    """The key from ``--api-key-file`` (stripped) or the environment; never echoed."""
    path: Path | None = args.api_key_file
    if path is None:
        key = os.environ.get(ENV_API_KEY, "").strip()
        if not key:
            msg = f"no API key: set {ENV_API_KEY} or pass --api-key-file PATH"
            raise ValueError(msg)
        return key
    try:
        key = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:  # its message would quote a byte of the file
        msg = f"--api-key-file: cannot read {str(path)!r}: it is not UTF-8 text"
        raise ValueError(msg) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        msg = f"--api-key-file: cannot read {str(path)!r}: {reason}"
        raise ValueError(msg) from None
    if not key:
        msg = f"--api-key-file: {str(path)!r} is empty; expected the API key"
        raise ValueError(msg)
    return key


def _query_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The loader keywords of the query options (key included), checked before any request."""
    if args.customer_email is not None and args.endpoint != "customer_records":
        msg = "--customer-email: only the customer-records endpoint accepts it"
        raise ValueError(msg)
    if args.start and args.end and args.start > args.end:
        msg = f"--start {args.start} is after --end {args.end}; expected start <= end"
        raise ValueError(msg)
    kwargs: dict[str, Any] = {
        "filter_by": args.filter_by or None,
        "start_date": args.start,
        "end_date": args.end,
        "sort_order": args.sort,
        "page_size": args.page_size,
        "max_records": args.max_records,
        "concurrency": args.concurrency,
        "progress": False if args.no_progress else None,
        "base_url": args.base_url,
    }
    if args.endpoint == "customer_records":
        kwargs["customer_email"] = args.customer_email
    kwargs["api_key"] = _read_api_key(args)  # last: a usage error above needs no key
    return kwargs


@contextlib.contextmanager
def _connection(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """`_query_kwargs`; with ``--allow-insecure``, a `Client` allowing plain http (closed after)."""
    kwargs = _query_kwargs(args)
    if not args.allow_insecure:
        yield kwargs
        return
    key, base_url = kwargs.pop("api_key"), kwargs.pop("base_url")
    with Client(key, base_url=base_url, allow_insecure=True) as client:
        yield {**kwargs, "client": client}


def _cache_option(args: argparse.Namespace) -> bool | Path:
    """``--cache`` (the default folder) or ``--cache-dir DIR``, as the loaders' ``cache=``."""
    if args.cache_dir is not None:
        return Path(args.cache_dir).expanduser()
    return bool(args.cache)


def _load_cached(args: argparse.Namespace, **options: Any) -> pd.DataFrame:
    """Load the query with the cache options (and `options`) through the endpoint's loader."""

    cache = _cache_option(args)
    if args.refresh is not False and cache is False:
        msg = "--refresh needs --cache or --cache-dir DIR (it refreshes a cached result)"
        raise ValueError(msg)
    loader = load_records if args.endpoint == "records" else load_customer_records
    with _connection(args) as connection:
        return loader(**connection, cache=cache, refresh=args.refresh, **options)
