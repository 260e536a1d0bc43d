"""The command line's parser pieces: the parser class, argument types and shared options.

Every argument type raises :class:`argparse.ArgumentTypeError`, which argparse turns into a
one-line usage error naming the flag (``argument --records: must be ...``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._constants import ENV_API_KEY, ENV_CACHE_DIR, IMPACT_TYPES, SORT_ORDERS
from .._params import _DATE_RE
from ..export._export import PARTITION_KEYS
from ._output import FRAME_SUFFIXES

__all__ = [
    "COMMANDS",
    "PROG",
    "Parser",
    "cache_dir_hint",
    "cache_parser",
    "command",
    "connection_options",
    "date",
    "endpoint",
    "frame_path",
    "freq",
    "impact_types",
    "int_range",
    "metadata_option",
    "non_negative_int",
    "parent_parser",
    "partition_by",
    "port",
    "probability",
    "query_parser",
    "redact_secrets",
    "seconds",
]

PROG = "impactframe"
#: ``--metadata`` modes a file can hold (``dict`` has no portable Parquet or CSV form).
_FILE_METADATA_MODES = ("columns", "json", "drop")
_ENDPOINT_NAMES = {
    "records": "records",
    "customer-records": "customer_records",
    "customer_records": "customer_records",
}
_SECRET_OPTION = re.compile(
    r"(?P<option>--?[\w-]*(?:key|token|secret|password)[\w-]*)(?P<sep>=|\s+)(?P<value>\S+)",
    re.IGNORECASE,
)

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``impactframe fetch: error: ...``."""

    #: The arguments being parsed (set by ``main``), for hints about what went wrong.
    argv: tuple[str, ...] = ()

    def error(self, message: str) -> Any:  # argparse's signature returns NoReturn
        if message.startswith("unrecognized arguments"):
            message = redact_secrets(message)
            if re.search(r"(^|\s)--api-key(=|\s|$)", message):
                message += f" (there is no --api-key: set {ENV_API_KEY} or use --api-key-file)"
        message += cache_dir_hint(Parser.argv)
        self.exit(2, f"{self.prog}: error: {message}\n")


def cache_dir_hint(argv: tuple[str, ...] | list[str]) -> str:
    """A hint when ``--cache`` is followed by a folder, or ``--refresh`` by the endpoint.

    ``--cache`` is a flag; the folder is ``--cache-dir DIR``. Only said when a usage error
    happened, since ``--cache records`` (the endpoint after the flag) is right.

    Examples
    --------
    >>> cache_dir_hint(["fetch", "records", "--cache", "/tmp/c", "--out", "x.parquet"])
    ' (--cache takes no folder: use --cache-dir DIR, e.g. --cache-dir /tmp/c)'
    >>> cache_dir_hint(["fetch", "--cache", "records"])
    ''
    >>> cache_dir_hint(["fetch", "--cache", "--refresh", "records"])
    " (--refresh takes only 'full': put records before the options)"
    """
    for i, arg in enumerate(argv[:-1]):
        following = argv[i + 1]
        if arg == "--cache" and not following.startswith("-") and following not in _ENDPOINT_NAMES:
            return f" (--cache takes no folder: use --cache-dir DIR, e.g. --cache-dir {following})"
        if arg == "--refresh" and following in _ENDPOINT_NAMES:
            return f" (--refresh takes only 'full': put {following} before the options)"
    return ""


if TYPE_CHECKING:
    #: What ``Parser.add_subparsers`` returns: each command is registered on it.
    Commands = argparse._SubParsersAction[Parser]


def redact_secrets(text: str) -> str:
    """Mask the value after an option that looks like it carries a secret (``--api-key X``).

    argparse echoes unrecognized arguments; a key typed as ``--api-key sk-...`` must not
    reach the terminal, logs or CI output.

    Examples
    --------
    >>> redact_secrets("unrecognized arguments: --api-key sk-123 --token=abc --seed 1")
    'unrecognized arguments: --api-key *** --token=*** --seed 1'
    """
    return _SECRET_OPTION.sub(lambda m: f"{m['option']}{m['sep']}***", text)


#: Each command's line in ``impactframe --help`` and its ``impactframe NAME --help`` text, in
#: the order listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch": (
        "load every record of a query into a Parquet or CSV file",
        "Page through every record of the query and write one typed, validated table: "
        "Parquet keeps every dtype, CSV writes times as the API does. The file is "
        "written atomically (a temporary file, then a rename).",
    ),
    "export": (
        "stream a whole history into a partitioned Parquet dataset",
        "Stream every record of the query into a hive-partitioned Parquet dataset "
        "(year=2024/month=09/...), with memory bounded by one batch; readable by pandas, "
        "pyarrow, DuckDB, Dask and Spark.",
    ),
    "summary": (
        "print the amount of each impact type per period",
        "Load the query and print the amount of each impact type per period "
        "(impactframe.aggregate.summarize) with a totals line and the units.",
    ),
    "demo": (
        "the whole job on an embedded sandbox: no key, no network",
        "Start an embedded sandbox with seeded data and a few injected faults, load both "
        "endpoints over HTTP, and write Parquet files, a partitioned dataset, a chart and "
        "a monthly summary into DIR; then print what was done.",
    ),
    "sandbox": (
        "serve a local fake of the Records API with generated data",
        "Serve /v1/records and /v1/customer_records on loopback from seeded, generated "
        "data, until Ctrl-C. Point impactframe at it with the printed environment variables.",
    ),
    "reconcile": (
        "prove a load complete: the records against the API's own figures",
        "Load both endpoints and compare their sums with the API's own figures: the lifetime "
        "totals (user and customer) without dates, the daily figures with --start/--end. "
        "Prints each difference (where, impact type, loaded, reported); exit 0 when the "
        "records are complete, 1 when not.",
    ),
    "cache": (
        "list or clear the Parquet cache",
        "list: one line per cached query (endpoint, query, rows, last synced day, when last "
        "built whole, size, "
        "folder). clear: remove every entry. Keys are never stored, only a fingerprint.",
    ),
}


def command(
    commands: Commands,
    name: str,
    parents: list[Parser],
    handler: Callable[[argparse.Namespace], int],
) -> Parser:
    """Register the command `name` of :data:`COMMANDS`, run by ``handler(args)``.

    Returns its parser, for the options of its own.
    """
    brief, description = COMMANDS[name]
    parser = commands.add_parser(
        name, parents=parents, allow_abbrev=False, help=brief, description=description
    )
    parser.set_defaults(handler=handler)
    return parser


def parent_parser(title: str) -> tuple[Parser, argparse._ArgumentGroup]:
    """Options that several commands share (their ``parents=``), listed under ``title``."""
    parser = Parser(add_help=False, allow_abbrev=False)
    return parser, parser.add_argument_group(title)


# -- argument types ------------------------------------------------------------------------------


def _checked(
    convert: Callable[[str], T], accept: Callable[[T], bool], expected: str
) -> Callable[[str], T]:
    """An argument type: ``convert`` the text, then ``accept`` the value, else a usage error.

    Examples
    --------
    >>> _checked(int, lambda v: v % 2 == 0, "an even integer")("3")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be an even integer, got '3'
    """

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:  # as for a value out of range: one message names what is accepted
            pass
        else:
            if accept(value):
                return value
        msg = f"must be {expected}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)

    return parse


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer type accepting ``low`` to ``high`` (inclusive; no upper bound if ``None``)."""
    accepted = f"from {low} to {high}" if high is not None else f">= {low}"
    return _checked(
        int, lambda v: v >= low and (high is None or v <= high), f"an integer {accepted}"
    )


non_negative_int = _checked(int, lambda v: v >= 0, "a non-negative integer")
# Built on non_negative_int, whose error (for "-1" or "x") passes through unchanged.
port = _checked(
    non_negative_int, lambda v: v <= 65535, "a port number between 0 and 65535 (0: any free port)"
)
seconds = _checked(float, lambda v: 0.0 <= v < float("inf"), "a number of seconds >= 0")
probability = _checked(float, lambda v: 0.0 <= v <= 1.0, "a probability between 0 and 1")


def endpoint(text: str) -> str:
    """``records`` or ``customer-records`` (also ``customer_records``), as the loaders name it."""
    if text not in _ENDPOINT_NAMES:
        msg = f"{text!r} is not an endpoint; expected records or customer-records"
        raise argparse.ArgumentTypeError(msg)
    return _ENDPOINT_NAMES[text]


def date(text: str) -> dt.date:
    """A ``YYYY-MM-DD`` calendar day."""
    if not _DATE_RE.fullmatch(text):
        msg = f"{text!r} is not a date; expected YYYY-MM-DD (a UTC day)"
        raise argparse.ArgumentTypeError(msg)
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        msg = f"{text!r} is not a real calendar date ({exc}); expected YYYY-MM-DD"
        raise argparse.ArgumentTypeError(msg) from None


def impact_types(text: str) -> list[str]:
    """One type, or several separated by commas (``--filter-by a,b`` = ``--filter-by a -f b``)."""
    types = [part.strip() for part in text.split(",")]
    for name in types:
        if name not in IMPACT_TYPES:
            msg = f"{name!r} is not an impact type; expected one of {', '.join(IMPACT_TYPES)}"
            raise argparse.ArgumentTypeError(msg)
    return types


def frame_path(text: str) -> Path:
    """A file name ending in one of :data:`FRAME_SUFFIXES`."""
    path = Path(text).expanduser()
    if path.suffix.lower() not in FRAME_SUFFIXES:
        msg = (
            f"{text!r} has no accepted suffix; expected a file name ending in "
            f"{' or '.join(FRAME_SUFFIXES)}"
        )
        raise argparse.ArgumentTypeError(msg)
    return path


def partition_by(text: str) -> tuple[str, ...]:
    """Distinct partition keys separated by commas, or ``none`` (no folders)."""
    if text.strip().lower() in ("", "none"):
        return ()
    keys = tuple(part.strip() for part in text.split(","))
    if any(key not in PARTITION_KEYS for key in keys) or len(set(keys)) != len(keys):
        msg = (
            f"{text!r} is not accepted; expected distinct names from "
            f"{', '.join(PARTITION_KEYS)} separated by commas, or none"
        )
        raise argparse.ArgumentTypeError(msg)
    return keys


def freq(text: str) -> str:
    """A positive pandas offset alias (``D``, ``MS``...), kept as text."""
    from pandas.tseries.frequencies import to_offset

    try:
        offset = to_offset(text)
    except ValueError:
        offset = None
    if offset is None or offset.n <= 0:
        msg = f"{text!r} is not a pandas offset alias; expected e.g. D, W, MS, QS or YS"
        raise argparse.ArgumentTypeError(msg)
    return text


# -- shared options ------------------------------------------------------------------------------


def query_parser() -> Parser:
    """The parent parser of the commands that query the API: endpoint, filters, connection."""
    parser, group = parent_parser("query options")
    group.add_argument(
        "endpoint",
        type=endpoint,
        metavar="{records,customer-records}",
        help="which endpoint: /v1/records or /v1/customer_records",
    )
    group.add_argument(
        "--filter-by",
        type=impact_types,
        action="extend",
        metavar="TYPE",
        help=f"only this impact type; repeatable, or comma-separated ({', '.join(IMPACT_TYPES)})",
    )
    group.add_argument("--start", type=date, metavar="YYYY-MM-DD", help="first UTC day (incl.)")
    group.add_argument("--end", type=date, metavar="YYYY-MM-DD", help="last UTC day (incl.)")
    group.add_argument(
        "--customer-email", metavar="E", help="one customer's records (customer-records only)"
    )
    group.add_argument(
        "--sort", choices=SORT_ORDERS, default="asc", help="row order by time (default asc)"
    )
    group.add_argument(
        "--max-records", type=int_range(1), metavar="N", help="at most N rows (default: all)"
    )
    group.add_argument(
        "--page-size",
        type=int_range(1, 1000),
        default=1000,
        metavar="N",
        help="records per request, 1-1000 (default %(default)s)",
    )
    group.add_argument(
        "--concurrency",
        type=int_range(1, 64),
        default=1,
        metavar="N",
        help="date windows fetched at once (default %(default)s)",
    )
    connection_options(group)
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def connection_options(group: argparse._ArgumentGroup) -> None:
    """Where the API is and how to authenticate: ``--base-url``, ``--allow-insecure`` and
    ``--api-key-file`` (never a plain ``--api-key``: it would show in the process list)."""
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="API host (default: IMPACTFRAME_BASE_URL, else https://api.1clickimpact.com)",
    )
    group.add_argument(
        "--allow-insecure",
        action="store_true",
        help="allow a plain-http --base-url to a host that is not loopback (sends the key in "
        "clear text)",
    )
    group.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help=f"read the API key from this file (default: the {ENV_API_KEY} variable)",
    )


def cache_parser() -> Parser:
    """The parent parser of the commands that can use the Parquet cache."""
    parser, group = parent_parser("cache options")
    group.add_argument(
        "--cache",
        action="store_true",
        help=(
            f"use the Parquet cache: a repeated query makes no request (folder: "
            f"{ENV_CACHE_DIR}, else the user cache folder)"
        ),
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="use the Parquet cache in this folder (implies --cache)",
    )
    group.add_argument(
        "--refresh",
        nargs="?",
        const=True,
        default=False,
        choices=["full"],
        metavar="full",
        help=(
            "with --cache: fetch from the newest cached day on (records changed before it "
            "are not seen); 'full' rebuilds the entry"
        ),
    )
    return parser


def metadata_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--metadata``: how a file holds the records' metadata."""
    parser.add_argument(
        "--metadata",
        choices=_FILE_METADATA_MODES,
        default="columns",
        help="metadata as one column per key (default), one JSON column, or dropped",
    )
