"""The commands that query the API: ``fetch``, ``export`` and ``summary``.

They share the query options (:func:`~impactframe._cli_args.query_parser`) and turn them into
loader keywords here, checked before any request; the API key is read last, from
``--api-key-file`` or the environment, and never echoed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._constants import ENV_API_KEY
from ..export._export import PARTITION_KEYS
from ._args import (
    Parser,
    cache_parser,
    command,
    frame_path,
    freq,
    metadata_option,
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
        "--out", type=frame_path, required=True, metavar="FILE", help="FILE.parquet or FILE.csv"
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
    metadata_option(parser)


# -- handlers ------------------------------------------------------------------------------------


def _run_fetch(args: argparse.Namespace) -> int:
    df = _load_cached(args, metadata=args.metadata)
    path = write_frame(df, args.out)
    rows = f"{len(df):,} row" + ("" if len(df) == 1 else "s")
    print(f"{rows}, {df.shape[1]} columns -> {path}")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from ..export._export import export_parquet

    result = export_parquet(
        args.out,
        args.endpoint,
        partition_by=args.partition_by,
        overwrite=args.overwrite,
        metadata=args.metadata,
        **_query_kwargs(args),
    )
    print(result)
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    df = _load_cached(args)
    for line in summary_lines(df, freq=args.freq, by=args.by, endpoint=args.endpoint):
        print(line)
    return 0


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


def _load_cached(args: argparse.Namespace, **options: Any) -> pd.DataFrame:
    """Load the query with the cache options (and `options`) through the endpoint's loader."""
    from ..loaders import load_customer_records, load_records

    if args.refresh is not False and args.cache is False:
        msg = "--refresh needs --cache (it refreshes a cached result)"
        raise ValueError(msg)
    loader = load_records if args.endpoint == "records" else load_customer_records
    return loader(**_query_kwargs(args), cache=args.cache, refresh=args.refresh, **options)
