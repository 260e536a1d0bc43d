"""The ``impactframe`` command line (SPEC §9); also ``python -m impactframe``.

:func:`build_parser` registers the subcommands: those that query the API (``fetch``,
``export``, ``summary``) in :mod:`impactframe.cli._query`, the others (``demo``, ``sandbox``,
``cache``) in :mod:`impactframe.cli._local`; each sets ``handler`` (a function
``argparse.Namespace -> int``). Argument types and shared options are in
:mod:`impactframe._cli_args`, file and table output in :mod:`impactframe._cli_output`.

:func:`main` maps errors to exit codes: usage errors 2 (argparse errors and the
``ValueError`` of our argument checks), :class:`~impactframe.errors.ImpactFrameError` 1,
Ctrl-C 130; each is one line on stderr and never a traceback unless ``--debug``. The API key
is read from ``IMPACTFRAME_API_KEY`` or ``--api-key-file`` and never printed; there is
deliberately no ``--api-key`` (a key on the command line leaks into shell history and
``ps``), and no parser accepts abbreviated options, so ``--api-key`` cannot silently mean
``--api-key-file`` either.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import TextIO

from .._constants import ENV_API_KEY
from .._version import package_version
from ..errors import AuthenticationError, ImpactFrameError
from . import _local, _query
from ._args import PROG, Parser
from ._output import FRAME_SUFFIXES, format_table, summary_lines, write_frame

__all__ = [
    "FRAME_SUFFIXES",
    "build_parser",
    "for_cli",
    "format_table",
    "main",
    "summary_lines",
    "write_frame",
]

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
    Parser.argv = tuple(argv)  # for the hints of usage errors
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
            return _fail(f"{PROG}: error: {for_cli(_one_line(exc))}{hint}", 1, debug)
        except ValueError as exc:  # a bad argument the parser could not see (SPEC §2)
            return _fail(f"{prefix}: error: {for_cli(_one_line(exc))}", 2, debug)
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


#: The library's messages name Python keywords; on the command line they are flags.
_CLI_WORDS = (
    ("pass overwrite=True", "pass --overwrite"),
    ("pass allow_insecure=True", "pass --allow-insecure"),
    ("pass the key as api_key=", f"set {ENV_API_KEY} or use --api-key-file"),
    ("use metadata='json'", "use --metadata json"),
    ("base_url: ", "--base-url: "),
    ("path: ", "--out: "),
    ("out: ", "--out: "),
    ("cache: ", "--cache-dir: "),
    ("start_date: ", "--start: "),
    ("end_date: ", "--end: "),
    ("customer_email: ", "--customer-email: "),
    ("page_size: ", "--page-size: "),
    ("max_records: ", "--max-records: "),
    ("partition_by: ", "--partition-by: "),
)


def for_cli(message: str) -> str:
    """`message` with the Python keywords it names replaced by the CLI's flags.

    Examples
    --------
    >>> for_cli("path: 'out' already exists; pass overwrite=True to replace a dataset")
    "--out: 'out' already exists; pass --overwrite to replace a dataset"
    """
    for python, cli in _CLI_WORDS:
        if python.endswith(": "):
            if message.startswith(python):
                message = cli + message[len(python) :]
        else:
            message = message.replace(python, cli)
    return message


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
    parser = Parser(
        prog=PROG,
        description="The 1ClickImpact Records API as typed, validated pandas DataFrames.",
        epilog=(
            f"The API key comes from {ENV_API_KEY} or --api-key-file (never the command "
            "line). Exit codes: 0 ok, 1 API/validation/file error, 2 usage error, "
            "130 interrupted."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    debug_help = "log at DEBUG level and show tracebacks"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # --debug is accepted after the subcommand too; SUPPRESS keeps it from resetting the above.
    common = Parser(add_help=False, allow_abbrev=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _query.add_commands(commands, common)
    _local.add_commands(commands, common)
    return parser
