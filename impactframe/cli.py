"""The ``impactframe`` command line (SPEC §9); also ``python -m impactframe``.

Each subcommand lives in an ``_add_<name>`` function that registers its parser and sets
``handler`` (a function ``argparse.Namespace -> int``). :func:`main` maps errors to exit codes:
usage errors 2 (argparse errors and the ``ValueError`` of our argument checks),
:class:`~impactframe.errors.ImpactFrameError` 1, Ctrl-C 130; each is one line on stderr and
never a traceback unless ``--debug``. The API key is read from ``IMPACTFRAME_API_KEY`` or
``--api-key-file`` and never printed; there is deliberately no ``--api-key`` (a key on the
command line leaks into shell history and ``ps``), and no parser accepts abbreviated options,
so ``--api-key`` cannot silently mean ``--api-key-file`` either.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import re
import signal
import sys
import threading
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import pandas as pd

from . import __version__
from ._constants import ENV_API_KEY, ENV_CACHE_DIR, IMPACT_TYPES, SORT_ORDERS, UNITS
from .errors import AuthenticationError, ImpactFrameError
from .export import PARTITION_KEYS as _PARTITION_KEYS

__all__ = [
    "FRAME_SUFFIXES",
    "atomic_output",
    "build_parser",
    "format_table",
    "main",
    "summary_lines",
    "write_frame",
]

PROG = "impactframe"
#: Output formats of ``fetch --out``, by file suffix.
FRAME_SUFFIXES = (".parquet", ".csv")
#: ``--metadata`` modes a file can hold (``dict`` has no portable Parquet or CSV form).
_FILE_METADATA_MODES = ("columns", "json", "drop")
_ENDPOINT_NAMES = {
    "records": "records",
    "customer-records": "customer_records",
    "customer_records": "customer_records",
}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

logger = logging.getLogger("impactframe")


# -- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 on an API, validation or file error, 2 on a usage error, 130 when
        interrupted (Ctrl-C).

    Examples
    --------
    >>> main(["fetch", "records", "--out", "records.txt"])  # a usage error, on stderr
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg == "--api-key" or arg.startswith("--api-key=") for arg in argv):
        # Refused before argparse, which would echo the key in its error message.
        print(
            f"{PROG}: error: there is no --api-key option (a key on the command line leaks "
            f"into shell history and process lists); set {ENV_API_KEY} or use --api-key-file",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    prefix = f"{PROG} {args.command}"
    with _cli_logging(debug), _cli_warnings():
        try:
            return int(args.handler(args))
        except ImpactFrameError as exc:  # before ValueError: ValidationError is both
            hint = ""
            if isinstance(exc, AuthenticationError):
                hint = f" (check {ENV_API_KEY} or --api-key-file)"
            return _fail(f"{PROG}: error: {_one_line(exc)}{hint}", 1, debug)
        except ValueError as exc:  # a bad argument the parser could not see (SPEC §2)
            return _fail(f"{prefix}: error: {_one_line(exc)}", 2, debug)
        except KeyboardInterrupt:
            return _fail(f"{PROG}: interrupted", 130, debug)
        except BrokenPipeError:  # e.g. `impactframe summary ... | head`
            # Nothing more can reach the reader; keep the interpreter's final flush quiet.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except OSError as exc:  # a file we could not read or write
            return _fail(f"{prefix}: error: {_one_line(exc)}", 1, debug)
        except Exception as exc:  # a bug: still one line; the traceback is one flag away
            message = f"unexpected {type(exc).__name__}: {_one_line(exc)} (--debug shows where)"
            return _fail(f"{PROG}: error: {message}", 1, debug)


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc(file=sys.stderr)
    print(message, file=sys.stderr)
    return code


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line; longer ones point at ``--debug``."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0]} [{len(lines) - 1} more lines: run with --debug]"


class _LogHandler(logging.Handler):
    """Log lines on stderr that do not tear through a running progress bar."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own contract: report through handleError, never raise
            self.handleError(record)


@contextlib.contextmanager
def _cli_logging(debug: bool) -> Iterator[None]:
    """Show the library's warnings (e.g. retries) as ``impactframe: warning: ...`` lines.

    The CLI is an application, so it may configure logging; the handler is removed again so
    that in-process callers (tests) keep a clean logger.
    """
    handler = _LogHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(_PrefixFormatter())
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class _PrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


@contextlib.contextmanager
def _cli_warnings() -> Iterator[None]:
    """Show warnings (schema drift, duplicates, cache) as one line each, without source code."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        print(f"{PROG}: warning: {category.__name__}: {text}", file=file or sys.stderr)

    with warnings.catch_warnings():  # restores showwarning (and the filters) afterwards
        warnings.showwarning = show
        yield


# -- the parser ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``impactframe fetch: error: ...``."""

    def error(self, message: str) -> Any:  # argparse's signature returns NoReturn
        if message.startswith("unrecognized arguments"):
            message = _redact_secrets(message)
            if re.search(r"(^|\s)--api-key(=|\s|$)", message):
                message += f" (there is no --api-key: set {ENV_API_KEY} or use --api-key-file)"
        self.exit(2, f"{self.prog}: error: {message}\n")


_SECRET_OPTION = re.compile(
    r"(?P<option>--?[\w-]*(?:key|token|secret|password)[\w-]*)(?P<sep>=|\s+)(?P<value>\S+)",
    re.IGNORECASE,
)


def _redact_secrets(text: str) -> str:
    """Mask the value after an option that looks like it carries a secret (``--api-key X``).

    argparse echoes unrecognized arguments; a key typed as ``--api-key sk-...`` must not
    reach the terminal, logs or CI output.

    Examples
    --------
    >>> _redact_secrets("unrecognized arguments: --api-key sk-123 --token=abc --seed 1")
    'unrecognized arguments: --api-key *** --token=*** --seed 1'
    """
    return _SECRET_OPTION.sub(lambda m: f"{m['option']}{m['sep']}***", text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    No parser accepts abbreviated long options (``allow_abbrev=False``).

    Examples
    --------
    >>> build_parser().parse_args(["sandbox", "--records", "5"]).records
    5
    >>> args = build_parser().parse_args(["fetch", "customer-records", "--out", "c.csv"])
    >>> args.endpoint, args.out.suffix
    ('customer_records', '.csv')
    """
    parser = _Parser(
        prog=PROG,
        description="The 1ClickImpact Records API as typed, validated pandas DataFrames.",
        epilog=(
            f"The API key comes from {ENV_API_KEY} or --api-key-file (never the command "
            "line). Exit codes: 0 ok, 1 API/validation/file error, 2 usage error, "
            "130 interrupted."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="log at DEBUG level and show tracebacks"
    )
    # --debug is accepted after the subcommand too; SUPPRESS keeps it from resetting the above.
    common = _Parser(add_help=False, allow_abbrev=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="as above")
    query = _query_parser()
    cache = _cache_parser()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_fetch(commands, [common, query, cache])
    _add_export(commands, [common, query])
    _add_summary(commands, [common, query, cache])
    _add_demo(commands, [common])
    _add_sandbox(commands, [common])
    _add_cache(commands, [common])
    return parser


# -- argument types (each raises ArgumentTypeError: a one-line usage error naming the flag) -----


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"must be a non-negative integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            accepted = f"from {low} to {high}" if high is not None else f">= {low}"
            msg = f"must be an integer {accepted}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        msg = f"must be a port number between 0 and 65535 (0: any free port), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        msg = f"must be a number of seconds >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        msg = f"must be a probability between 0 and 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _endpoint(text: str) -> str:
    if text not in _ENDPOINT_NAMES:
        msg = f"{text!r} is not an endpoint; expected records or customer-records"
        raise argparse.ArgumentTypeError(msg)
    return _ENDPOINT_NAMES[text]


def _date(text: str) -> dt.date:
    if not _DATE_RE.fullmatch(text):
        msg = f"{text!r} is not a date; expected YYYY-MM-DD (a UTC day)"
        raise argparse.ArgumentTypeError(msg)
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        msg = f"{text!r} is not a real calendar date ({exc}); expected YYYY-MM-DD"
        raise argparse.ArgumentTypeError(msg) from None


def _impact_types(text: str) -> list[str]:
    """One type, or several separated by commas (``--filter-by a,b`` = ``--filter-by a -f b``)."""
    types = [part.strip() for part in text.split(",")]
    for name in types:
        if name not in IMPACT_TYPES:
            msg = f"{name!r} is not an impact type; expected one of {', '.join(IMPACT_TYPES)}"
            raise argparse.ArgumentTypeError(msg)
    return types


def _frame_path(text: str) -> Path:
    path = Path(text).expanduser()
    if path.suffix.lower() not in FRAME_SUFFIXES:
        msg = (
            f"{text!r} has no accepted suffix; expected a file name ending in "
            f"{' or '.join(FRAME_SUFFIXES)}"
        )
        raise argparse.ArgumentTypeError(msg)
    return path


def _partition_by(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    keys = tuple(part.strip() for part in text.split(","))
    if any(key not in _PARTITION_KEYS for key in keys) or len(set(keys)) != len(keys):
        msg = (
            f"{text!r} is not accepted; expected distinct names from "
            f"{', '.join(_PARTITION_KEYS)} separated by commas, or none"
        )
        raise argparse.ArgumentTypeError(msg)
    return keys


def _freq(text: str) -> str:
    from pandas.tseries.frequencies import to_offset

    try:
        offset = to_offset(text)
    except ValueError:
        offset = None
    if offset is None or offset.n <= 0:
        msg = f"{text!r} is not a pandas offset alias; expected e.g. D, W, MS, QS or YS"
        raise argparse.ArgumentTypeError(msg)
    return text


# -- shared options -----------------------------------------------------------------------------


def _query_parser() -> argparse.ArgumentParser:
    parser = _Parser(add_help=False, allow_abbrev=False)
    group = parser.add_argument_group("query options")
    group.add_argument(
        "endpoint",
        type=_endpoint,
        metavar="{records,customer-records}",
        help="which endpoint: /v1/records or /v1/customer_records",
    )
    group.add_argument(
        "--filter-by",
        type=_impact_types,
        action="extend",
        metavar="TYPE",
        help=f"only this impact type; repeatable, or comma-separated ({', '.join(IMPACT_TYPES)})",
    )
    group.add_argument("--start", type=_date, metavar="YYYY-MM-DD", help="first UTC day (incl.)")
    group.add_argument("--end", type=_date, metavar="YYYY-MM-DD", help="last UTC day (incl.)")
    group.add_argument(
        "--customer-email", metavar="E", help="one customer's records (customer-records only)"
    )
    group.add_argument(
        "--sort", choices=SORT_ORDERS, default="asc", help="row order by time (default asc)"
    )
    group.add_argument(
        "--max-records", type=_int_range(1), metavar="N", help="at most N rows (default: all)"
    )
    group.add_argument(
        "--page-size",
        type=_int_range(1, 1000),
        default=1000,
        metavar="N",
        help="records per request, 1-1000 (default %(default)s)",
    )
    group.add_argument(
        "--concurrency",
        type=_int_range(1, 64),
        default=1,
        metavar="N",
        help="date windows fetched at once (default %(default)s)",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="API host (default: IMPACTFRAME_BASE_URL, else https://api.1clickimpact.com)",
    )
    group.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help=f"read the API key from this file (default: the {ENV_API_KEY} variable)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _metadata_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metadata",
        choices=_FILE_METADATA_MODES,
        default="columns",
        help="metadata as one column per key (default), one JSON column, or dropped",
    )


def _cache_parser() -> argparse.ArgumentParser:
    parser = _Parser(add_help=False, allow_abbrev=False)
    group = parser.add_argument_group("cache options")
    group.add_argument(
        "--cache",
        nargs="?",
        const=True,
        default=False,
        metavar="DIR",
        help=(
            f"use the Parquet cache: a repeated query makes no request (DIR default: "
            f"{ENV_CACHE_DIR}, else the user cache folder); give DIR after the endpoint"
        ),
    )
    group.add_argument(
        "--refresh",
        nargs="?",
        const=True,
        default=False,
        choices=["full"],
        metavar="full",
        help="with --cache: fetch from the newest cached day on; 'full' rebuilds the entry",
    )
    return parser


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


def _check_cache_options(args: argparse.Namespace) -> None:
    if args.refresh is not False and args.cache is False:
        msg = "--refresh needs --cache (it refreshes a cached result)"
        raise ValueError(msg)


def _load(args: argparse.Namespace, **options: Any) -> pd.DataFrame:
    from .loaders import load_customer_records, load_records

    loader = load_records if args.endpoint == "records" else load_customer_records
    return loader(**_query_kwargs(args), **options)


# -- output helpers -----------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` when the block succeeds.

    A reader never sees a half-written file, and a failure (or Ctrl-C) leaves any old file
    untouched. Missing parent folders are created; the file gets the usual permissions.

    Parameters
    ----------
    path : str or os.PathLike
        The final file.

    Yields
    ------
    pathlib.Path
        Where to write; it keeps `path`'s suffix, so writers that look at it still work.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_text("hi")
    >>> target.read_text()
    'hi'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.stem}.tmp-{uuid.uuid4().hex[:12]}{target.suffix}")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_frame(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a records frame to ``.parquet`` or ``.csv`` (by suffix), atomically.

    Parquet keeps every dtype (a read with :func:`pandas.read_parquet` gives the frame back).
    CSV writes ``time_utc`` as the API does (``2024-01-31T12:00:00.000Z``), missing values
    as empty fields and no index.

    Parameters
    ----------
    df : pandas.DataFrame
        The frame (a ``metadata`` column of dicts cannot be written: use another mode).
    path : str or os.PathLike
        Ends in ``.parquet`` or ``.csv`` (any case).

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    ValueError
        If the suffix is neither, or the frame holds dict values.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> df = pd.DataFrame({"time_utc": pd.to_datetime(["2024-01-31T12:00:00Z"]).as_unit("ms"),
    ...                    "amount": pd.array([3], dtype="Int64")})
    >>> out = write_frame(df, pathlib.Path(tempfile.mkdtemp()) / "records.csv")
    >>> out.read_text().splitlines()
    ['time_utc,amount', '2024-01-31T12:00:00.000Z,3']
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        msg = f"path: {str(target)!r} is not accepted; expected a name ending in "
        msg += " or ".join(FRAME_SUFFIXES)
        raise ValueError(msg)
    if "metadata" in df and df["metadata"].map(lambda v: isinstance(v, dict)).any():
        msg = "metadata holds dicts, which no file format here keeps; use metadata='json'"
        raise ValueError(msg)
    with atomic_output(target) as temporary:
        if suffix == ".parquet":
            df.to_parquet(temporary, index=False)
        else:
            out = df.copy(deep=False)
            if "time_utc" in out and isinstance(out["time_utc"].dtype, pd.DatetimeTZDtype):
                times = out["time_utc"].dt.tz_convert("UTC")
                # The API's own form, which every CSV reader parses as UTC.
                out["time_utc"] = times.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
            out.to_csv(temporary, index=False)
    return target


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None
) -> list[str]:
    """Align text cells in columns separated by two spaces.

    Parameters
    ----------
    header : sequence of str
        Column titles (an empty sequence prints no header line).
    rows : sequence of sequences of str
        The cells.
    right : sequence of bool, optional
        Right-align that column (numbers); default left for the first column, right for the
        others.

    Returns
    -------
    list of str
        One string per line, trailing spaces removed.

    Examples
    --------
    >>> print("\\n".join(format_table(["type", "total"], [["trees", "1,204"], ["coral", "7"]])))
    type   total
    trees  1,204
    coral      7
    """
    lines = [list(header), *map(list, rows)] if header else [list(r) for r in rows]
    if not lines:
        return []
    n = max(len(line) for line in lines)
    lines = [line + [""] * (n - len(line)) for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(n)]
    aligns = list(right) if right is not None else [i > 0 for i in range(n)]
    out = []
    for line in lines:
        cells = [
            cell.rjust(w) if aligns[i] else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def _size(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError  # pragma: no cover - the loop always returns


# -- fetch --------------------------------------------------------------------------------------


def _add_fetch(commands: argparse._SubParsersAction, parents: list[Any]) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "fetch",
        parents=parents,
        allow_abbrev=False,
        help="load every record of a query into a Parquet or CSV file",
        description=(
            "Page through every record of the query and write one typed, validated table: "
            "Parquet keeps every dtype, CSV writes times as the API does. The file is "
            "written atomically (a temporary file, then a rename)."
        ),
    )
    parser.add_argument(
        "--out",
        type=_frame_path,
        required=True,
        metavar="FILE",
        help="FILE.parquet or FILE.csv",
    )
    _metadata_option(parser)
    parser.set_defaults(handler=_run_fetch)


def _run_fetch(args: argparse.Namespace) -> int:
    _check_cache_options(args)
    df = _load(args, metadata=args.metadata, cache=args.cache, refresh=args.refresh)
    path = write_frame(df, args.out)
    rows = f"{len(df):,} row" + ("" if len(df) == 1 else "s")
    print(f"{rows}, {df.shape[1]} columns -> {path}")
    return 0


# -- export -------------------------------------------------------------------------------------


def _add_export(commands: argparse._SubParsersAction, parents: list[Any]) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "export",
        parents=parents,
        allow_abbrev=False,
        help="stream a whole history into a partitioned Parquet dataset",
        description=(
            "Stream every record of the query into a hive-partitioned Parquet dataset "
            "(year=2024/month=9/...), with memory bounded by one batch; readable by pandas, "
            "pyarrow, DuckDB, Dask and Spark."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder")
    parser.add_argument(
        "--partition-by",
        type=_partition_by,
        default=("year", "month"),
        metavar="KEYS",
        help=(
            f"comma-separated folders from {', '.join(_PARTITION_KEYS)}, or none "
            "(default year,month)"
        ),
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset at DIR"
    )
    _metadata_option(parser)
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .export import export_parquet

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


# -- summary ------------------------------------------------------------------------------------


def _add_summary(commands: argparse._SubParsersAction, parents: list[Any]) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "summary",
        parents=parents,
        allow_abbrev=False,
        help="print the amount of each impact type per period",
        description=(
            "Load the query and print the amount of each impact type per period "
            "(impactframe.aggregate.summarize) with a totals line and the units."
        ),
    )
    parser.add_argument(
        "--freq", type=_freq, default="MS", help="period: a pandas alias, e.g. D, W, MS, QS, YS"
    )
    parser.add_argument(
        "--by", metavar="COLUMN", help="one table per value of this column, e.g. customer_email"
    )
    parser.set_defaults(handler=_run_summary)


def _run_summary(args: argparse.Namespace) -> int:
    _check_cache_options(args)
    df = _load(args, cache=args.cache, refresh=args.refresh)
    for line in summary_lines(df, freq=args.freq, by=args.by, endpoint=args.endpoint):
        print(line)
    return 0


def _period_labels(index: pd.DatetimeIndex) -> list[str]:
    at_midnight = bool((index == index.normalize()).all())
    return [t.strftime("%Y-%m-%d" if at_midnight else "%Y-%m-%d %H:%M") for t in index]


def summary_lines(
    df: pd.DataFrame, *, freq: str = "MS", by: str | None = None, endpoint: str = "records"
) -> list[str]:
    """The text ``impactframe summary`` prints for a records frame.

    Parameters
    ----------
    df : pandas.DataFrame
        A records frame (SPEC §3).
    freq : str, default "MS"
        Period alias, as for :func:`impactframe.aggregate.summarize`.
    by : str, optional
        Group by this column; periods in which a group has no record are left out.
    endpoint : str, default "records"
        Named in the heading.

    Returns
    -------
    list of str
        A heading, the aligned table ending in a ``total`` row, and a units line (with
        ``money_donated`` also in dollars).

    Raises
    ------
    ValueError
        A bad ``freq`` or a ``by`` column that the frame lacks.

    Examples
    --------
    >>> df = pd.DataFrame({
    ...     "time_utc": pd.to_datetime(["2024-01-05", "2024-03-09"], utc=True),
    ...     "impact_type": pd.Categorical(["tree_planted", "money_donated"]),
    ...     "amount": pd.array([2, 1250], dtype="Int64"),
    ... })
    >>> print("\\n".join(summary_lines(df, freq="MS")[2:7]))
    period      tree_planted  waste_removed  carbon_captured  coral_restored  money_donated
    2024-01-01             2              0                0               0              0
    2024-02-01             0              0                0               0              0
    2024-03-01             0              0                0               0          1,250
    total                  2              0                0               0          1,250
    """
    from . import aggregate

    if df.empty:
        return [f"No {endpoint.replace('_', ' ')} match the query."]
    table = aggregate.summarize(df, freq=freq, by=by)
    totals = aggregate.totals(df)
    types = [str(t) for t in table.columns]
    times = df["time_utc"]
    first, last = times.min(), times.max()
    label = "records" if endpoint == "records" else "customer records"
    heading = (
        f"{len(df):,} {label} from {first:%Y-%m-%d} to {last:%Y-%m-%d} (UTC), "
        f"per period of freq={freq}" + (f", by {by}" if by else "")
    )
    keys: list[list[str]]
    if by is None:
        keys = [[label] for label in _period_labels(pd.DatetimeIndex(table.index))]
        header = ["period", *types]
    else:
        # Long form: a group's empty periods say nothing, and there may be many groups.
        table = table.loc[(table.to_numpy(dtype="int64") != 0).any(axis=1)]
        index = pd.MultiIndex.from_frame(table.index.to_frame(index=False))
        groups = ["<NA>" if pd.isna(v) else str(v) for v in index.get_level_values(0)]
        periods = _period_labels(pd.DatetimeIndex(index.get_level_values(-1)))
        keys = [[g, p] for g, p in zip(groups, periods, strict=True)]
        header = [by, "period", *types]
    values = table.to_numpy(dtype="int64")
    rows = [[*key, *(f"{v:,}" for v in row)] for key, row in zip(keys, values, strict=True)]
    n_keys = len(header) - len(types)
    total = [f"{int(totals.get(t, 0)):,}" for t in types]
    rows.append(["total", *[""] * (n_keys - 1), *total])
    right = [False] * n_keys + [True] * len(types)
    units = []
    for t in types:
        unit = UNITS.get(t, "unknown unit")
        if t == "money_donated":
            unit += f" (${int(totals.get(t, 0)) / 100:,.2f})"
        units.append(f"{t}: {unit}")
    return [heading, "", *format_table(header, rows, right=right), "", "units: " + "; ".join(units)]


# -- demo ---------------------------------------------------------------------------------------


def _add_demo(commands: argparse._SubParsersAction, parents: list[Any]) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "demo",
        parents=parents,
        allow_abbrev=False,
        help="the whole job on an embedded sandbox: no key, no network",
        description=(
            "Start an embedded sandbox with seeded data and a few injected faults, load both "
            "endpoints over HTTP, and write Parquet files, a partitioned dataset, a chart and "
            "a monthly summary into DIR; then print what was done."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("impactframe-demo"),
        metavar="DIR",
        help="output folder (default ./impactframe-demo)",
    )
    parser.add_argument(
        "--records", type=_non_negative_int, default=5000, metavar="N", help="(default 5000)"
    )
    parser.add_argument(
        "--customer-records",
        type=_non_negative_int,
        default=3000,
        metavar="N",
        help="(default 3000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    run_demo(
        args.out,
        n_records=args.records,
        n_customer_records=args.customer_records,
        seed=args.seed,
        progress=False if args.no_progress else None,
    )
    return 0


# -- cache --------------------------------------------------------------------------------------


def _add_cache(commands: argparse._SubParsersAction, parents: list[Any]) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "cache",
        parents=parents,
        allow_abbrev=False,
        help="list or clear the Parquet cache",
        description=(
            "list: one line per cached query (endpoint, query, rows, last synced day, size, "
            "folder). clear: remove every entry. Keys are never stored, only a fingerprint."
        ),
    )
    parser.add_argument("action", choices=("list", "clear"), help="what to do")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help=f"the cache folder (default: {ENV_CACHE_DIR}, else the user cache folder)",
    )
    parser.set_defaults(handler=_run_cache)


def _default_cache_dir() -> Path:
    # resolve_cache_dir(True) would create the folder; listing should not.
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("impactframe"))


def _describe_query(entry: dict[str, Any]) -> str:
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


def _run_cache(args: argparse.Namespace) -> int:
    from ._cache import ParquetCache

    root = args.cache_dir.expanduser() if args.cache_dir else _default_cache_dir()
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
            _size(entry.get("data_bytes", 0)),
            str(entry["path"]),
        ]
        for entry in entries
    ]
    right = [False, False, True, False, True, False]
    for line in format_table([], rows, right=right):
        print(line)
    return 0


# -- sandbox ------------------------------------------------------------------------------------


def _add_sandbox(commands: argparse._SubParsersAction, parents: list[Any]) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "sandbox",
        parents=parents,
        allow_abbrev=False,
        help="serve a local fake of the Records API with generated data",
        description=(
            "Serve /v1/records and /v1/customer_records on loopback from seeded, generated "
            "data, until Ctrl-C. Point impactframe at it with the printed environment variables."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=8000, help="port, 0 for any free one (default %(default)s)"
    )
    parser.add_argument(
        "--records",
        type=_non_negative_int,
        default=10_000,
        metavar="N",
        help="generated records (default %(default)s)",
    )
    parser.add_argument(
        "--customer-records",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="generated customer records (default: as many as --records)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed (default %(default)s)")
    parser.add_argument(
        "--filter-after-limit",
        action="store_true",
        help="apply filter_by after limit, DynamoDB style (short and empty pages)",
    )
    parser.add_argument(
        "--latency", type=_seconds, default=0.0, metavar="SECONDS", help="delay every answer"
    )
    parser.add_argument(
        "--fault-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability of a random fault per request: 429, 5xx, drop, truncate, repeat",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=0, help="seed of the random faults (default 0)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (e.g. 0.0.0.0 in a container); it is a test server",
    )
    parser.set_defaults(handler=_run_sandbox)


def _run_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import SandboxServer  # only this command pays for the import

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
