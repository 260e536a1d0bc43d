"""The ``impactframe`` command line (SPEC §9); also ``python -m impactframe``.

Each subcommand lives in an ``_add_<name>`` function that registers its parser and sets
``handler`` (a function ``argparse.Namespace -> int``). :func:`main` maps errors to exit codes:
argument and usage errors 2, :class:`~impactframe.errors.ImpactFrameError` 1 (a one-line message,
no traceback unless ``--debug``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from . import __version__
from .errors import ImpactFrameError

__all__ = ["build_parser", "main"]

PROG = "impactframe"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 on an API or validation error, 2 on a usage error.

    Examples
    --------
    >>> main(["sandbox", "--records", "-1"])  # doctest: +SKIP
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    if debug:
        logging.basicConfig(
            level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
    try:
        return int(args.handler(args))
    except ImpactFrameError as exc:
        if debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad argument the parser could not see (SPEC §2)
        if debug:
            raise
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    Examples
    --------
    >>> build_parser().parse_args(["sandbox", "--records", "5"]).records
    5
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The 1ClickImpact Records API as typed, validated pandas DataFrames.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="log at DEBUG level and show tracebacks"
    )
    # --debug is accepted after the subcommand too; SUPPRESS keeps it from resetting the above.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="as above")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_sandbox(commands, common)
    return parser


# -- argument types -----------------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"must be a non-negative integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


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


# -- sandbox ------------------------------------------------------------------------------------


def _add_sandbox(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "sandbox",
        parents=[common],
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
