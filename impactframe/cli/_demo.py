"""``impactframe demo``: the whole job on an embedded sandbox, with no key and no network.

It starts a seeded :class:`~impactframe.sandbox.SandboxServer`, injects a few transient faults
(HTTP 503s and a 429 with ``Retry-After``) so the retries can be seen working, loads both
endpoints through the real HTTP path, writes what a user would keep (two Parquet files, a
partitioned dataset, a chart and a monthly summary) and prints a short report. The banner,
which says the faults are injected on purpose, comes before the retry warnings they cause.

The demo replaces only what it wrote itself: its folder carries a marker
(``_impactframe_demo.json``), and a folder without one in which a file of the demo's names
already exists is refused before anything starts; the dataset subfolder is an impactframe
dataset, which `export_parquet` replaces only when it is one (see
`impactframe.export._place`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from .. import aggregate
from .._constants import RETRY_STATUSES, UNITS
from .._fs import atomic_output
from ..account import reconcile
from ..export._export import export_parquet
from ..export._place import check_target
from ..loaders import load_customer_records, load_records
from ..plot import plot
from ..sandbox import Fault, SandboxServer
from ._output import format_table, write_frame

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DemoResult", "run_demo"]

#: The files the demo writes into its folder, in the order reported.
RECORDS_FILE = "records.parquet"
CUSTOMER_FILE = "customer_records.parquet"
DATASET_DIR = "records_dataset"
CHART_FILE = "impact_by_month.png"
SUMMARY_FILE = "summary.csv"
#: The marker of a folder the demo wrote: the demo may replace its own files there.
DEMO_MARKER = "_impactframe_demo.json"
_DEMO_NAMES = (RECORDS_FILE, CUSTOMER_FILE, DATASET_DIR, CHART_FILE, SUMMARY_FILE)

#: Faults injected before loading: (fault, times, path, how the report describes it).
_FAULTS = (
    (Fault("status", status=503), 2, "/v1/records", "2 x HTTP 503 on /v1/records"),
    (
        Fault("status", status=429, retry_after="1"),
        1,
        "/v1/customer_records",
        "1 x HTTP 429 (Retry-After: 1 s) on /v1/customer_records",
    ),
)


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did.

    Attributes
    ----------
    out : pathlib.Path
        The output folder.
    files : tuple of pathlib.Path
        Files and folders written, in the order reported.
    records, customer_records : int
        Rows loaded from each endpoint.
    requests : int
        HTTP requests the sandbox received (retries included).
    retries : int
        Requests answered with a transient error and retried.
    seconds : float
        Wall time of the whole run.
    """

    out: Path
    files: tuple[Path, ...]
    records: int
    customer_records: int
    requests: int
    retries: int
    seconds: float


def _money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def _total_lines(df: pd.DataFrame) -> list[str]:
    totals = aggregate.totals(df)
    rows = []
    for impact_type, amount in totals.items():
        value = int(amount)
        shown = _money(value) if impact_type == "money_donated" else f"{value:,}"
        unit = "donated" if impact_type == "money_donated" else UNITS.get(str(impact_type), "")
        rows.append([str(impact_type), shown, unit])
    return format_table([], rows, right=[False, True, False])


def _dtype_lines(df: pd.DataFrame, shown: int = 9) -> list[str]:
    rows = [[str(c), str(t)] for c, t in df.dtypes.iloc[:shown].items()]
    lines = format_table([], rows, right=[False, False])
    rest = df.columns[shown:]
    if len(rest):
        kinds = sorted({str(t) for t in df.dtypes.iloc[shown:]})
        lines.append(f"... and {len(rest)} more ({', '.join(rest[:3])}, ...: {', '.join(kinds)})")
    return lines


def _customer_lines(cdf: pd.DataFrame, n: int = 5) -> list[str]:
    top = aggregate.top_customers(cdf, n=n)
    rows = []
    for email, row in top.iterrows():
        name = row["customer_name"]
        rows.append(
            [
                str(email),
                "-" if pd.isna(name) else str(name),
                f"{int(row['records']):,}",
                f"{int(row['tree_planted']):,}",
                _money(int(row["money_donated"])),
            ]
        )
    header = ["customer_email", "name", "records", "trees", "donated"]
    return format_table(header, rows, right=[False, False, True, True, True])


def _write_chart(df: pd.DataFrame, path: Path) -> str | None:
    """Draw the monthly chart into `path`; return why not when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install 'impactframe[plot]')"
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt


    axes = plot(df, freq="MS", title="Impact per month (sandbox data)")
    first = axes.flat[0] if isinstance(axes, np.ndarray) else axes  # one panel per type
    figure = cast("Figure", first.figure)  # plot() draws on a top-level figure of its own
    try:
        with atomic_output(path) as temporary:
            figure.savefig(temporary, dpi=100, format="png")
    finally:
        plt.close(figure)
    return None


def _write_summary(df: pd.DataFrame, path: Path) -> int:
    """Monthly totals, one column per impact type; money in cents and in dollars, labelled."""
    monthly = aggregate.summarize(df, freq="MS")
    table = pd.DataFrame(monthly.to_numpy(dtype="int64"), columns=list(monthly.columns))
    if "money_donated" in table:
        at = table.columns.get_loc("money_donated")
        cents = table.pop("money_donated")
        table.insert(at, "money_donated_cents", cents)
        table.insert(at + 1, "money_donated_usd", cents / 100)
    table.insert(0, "month", monthly.index.strftime("%Y-%m-%d"))
    with atomic_output(path) as temporary:
        table.to_csv(temporary, index=False)
    return len(table)


def run_demo(
    out: str | os.PathLike[str] = "impactframe-demo",
    *,
    n_records: int = 5000,
    n_customer_records: int = 3000,
    seed: int = 0,
    progress: bool | None = None,
    echo: Callable[[str], Any] = print,
) -> DemoResult:
    """Run the demo: sandbox, faults, both loads, files, report.

    Parameters
    ----------
    out : str or os.PathLike, default "impactframe-demo"
        Folder for the files (created and marked as the demo's; the demo's own files in it
        are replaced, a file of the same name that the demo did not write is not).
    n_records, n_customer_records : int
        Generated records per endpoint.
    seed : int
        Seed of the generated data.
    progress : bool, optional
        Progress bars, as for :func:`impactframe.load_records`.
    echo : callable, default print
        Receives each line of the report.

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> import tempfile
    >>> result = run_demo(tempfile.mkdtemp(), n_records=300, n_customer_records=200,
    ...                   progress=False, echo=lambda line: None)  # doctest: +SKIP
    >>> result.records, result.retries  # doctest: +SKIP
    (300, 3)
    """
    started = time.perf_counter()
    folder = _demo_folder(out)
    banner = [
        "impactframe demo: the Records API on an embedded sandbox (no key, no network)",
        "",
        f"Sandbox  {server_summary(n_records, n_customer_records, seed)}",
        "Faults   injected on purpose: " + "; ".join(desc for *_, desc in _FAULTS),
        "         (the retry warnings they cause follow; every one is retried)",
        "",
    ]
    for line in banner:
        echo(line)
    if echo is print:
        sys.stdout.flush()  # before the warnings on stderr, when both go to one terminal
    server = SandboxServer(seed=seed, n_records=n_records, n_customer_records=n_customer_records)
    with server:
        for fault, times, path, _ in _FAULTS:
            server.inject(fault, times=times, path=path)
        connection: dict[str, Any] = {
            "api_key": server.api_key,
            "base_url": server.url,
            "progress": progress,
        }
        df = load_records(concurrency=4, **connection)
        cdf = load_customer_records(**connection)
        dataset = export_parquet(folder / DATASET_DIR, overwrite=True, **connection)
        log = server.requests
        # The proof, from the API's own figures: every record of the account arrived once.
        check = reconcile(df, cdf, api_key=server.api_key, base_url=server.url)
    requests = len(log)
    retries = sum(1 for entry in log if entry.fault or entry.status in RETRY_STATUSES)

    files: list[tuple[Path, str]] = []
    write_frame(df, folder / RECORDS_FILE)
    files.append((folder / RECORDS_FILE, f"{len(df):,} rows x {df.shape[1]} columns"))
    write_frame(cdf, folder / CUSTOMER_FILE)
    files.append((folder / CUSTOMER_FILE, f"{len(cdf):,} rows x {cdf.shape[1]} columns"))
    files.append(
        (
            folder / DATASET_DIR,
            f"{dataset.records:,} rows in {dataset.files} file{'' if dataset.files == 1 else 's'}"
            " (hive year=/month= folders)",
        )
    )
    skipped = _write_chart(df, folder / CHART_FILE) if len(df) else "no records to draw"
    if skipped is None:
        files.append((folder / CHART_FILE, "one panel per impact type, money in dollars"))
    months = _write_summary(df, folder / SUMMARY_FILE) if len(df) else 0
    if len(df):
        files.append(
            (
                folder / SUMMARY_FILE,
                f"{months} months x {df['impact_type'].nunique()} "
                "impact types, money in cents and USD",
            )
        )
    seconds = time.perf_counter() - started

    complete = check.ok and len(df) == n_records and len(cdf) == n_customer_records
    outcome = "every record arrived, none twice" if complete else "some records are missing"
    lines = [
        f"Loaded   {len(df):,} records (concurrency=4) and {len(cdf):,} customer records over HTTP",
        f"Retries  {retries} transient errors retried with backoff; {outcome}",
        "",
        f"Records frame ({len(df.columns)} columns, validated by impactframe.schemas):",
        *("  " + line for line in _dtype_lines(df)),
    ]
    if len(df):
        first, last = df["time_utc"].min(), df["time_utc"].max()
        lines += [
            "",
            f"Totals per impact type ({first:%Y-%m-%d} to {last:%Y-%m-%d}):",
            *("  " + line for line in _total_lines(df)),
        ]
    if len(cdf):
        lines += ["", "Top 5 customers (by records):"]
        lines += ["  " + line for line in _customer_lines(cdf)]
    lines += ["", f"Files in {folder}:"]
    file_rows = [[p.name + ("/" if p.is_dir() else ""), what] for p, what in files]
    lines += ["  " + line for line in format_table([], file_rows, right=[False, False])]
    if skipped is not None:
        lines.append(f"  ({CHART_FILE} skipped: {skipped})")
    lines += [
        "",
        f"Reconciled  {check}",
        f"Done in {seconds:.1f} s: {requests} HTTP requests, {retries} of them retried.",
        f"Next: pd.read_parquet({str(folder / RECORDS_FILE)!r}), or see notebooks/quickstart.ipynb",
    ]
    for line in lines:
        echo(line)
    return DemoResult(
        out=folder,
        files=tuple(p for p, _ in files),
        records=len(df),
        customer_records=len(cdf),
        requests=requests,
        retries=retries,
        seconds=seconds,
    )


def _demo_folder(out: str | os.PathLike[str]) -> Path:
    """The demo's folder, created and marked; refused if it holds files of its names not its own.

    Raises
    ------
    ValueError
        Naming ``out``: it is a file, or a folder without the demo's marker in which a file
        or folder of the demo's names exists (the user's: it is left as it is).
    """
    folder = Path(out).expanduser()
    shown = repr(str(out))
    if folder.exists() and not folder.is_dir():
        msg = f"out: {shown} is a file; expected a folder for the demo's files"
        raise ValueError(msg)
    if (folder / DEMO_MARKER).is_file():
        # The demo's own folder: still, a name of its files taken by the wrong kind (a
        # folder where it writes a file) is not one it wrote.
        taken = [
            name
            for name in _DEMO_NAMES
            if (folder / name).exists() and (folder / name).is_dir() != (name == DATASET_DIR)
        ]
    else:
        taken = [name for name in _DEMO_NAMES if (folder / name).exists()]
    if taken:
        msg = (
            f"out: {shown} already holds {taken[0]!r}, which the demo did not write; "
            "nothing was changed: choose a new folder (--out DIR), or remove a demo folder "
            "of an older impactframe, which had no marker"
        )
        raise ValueError(msg)
    # The dataset subfolder is checked like any export target before anything starts.
    check_target(folder / DATASET_DIR, overwrite=True)
    folder.mkdir(parents=True, exist_ok=True)
    marker = {"written_by": "impactframe demo", "files": list(_DEMO_NAMES)}
    (folder / DEMO_MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return folder


def server_summary(n_records: int, n_customer_records: int, seed: int) -> str:
    """One line describing the demo's sandbox.

    Examples
    --------
    >>> server_summary(5000, 3000, 0)
    'SandboxServer on 127.0.0.1, 5,000 records + 3,000 customer records (seed 0)'
    """
    return (
        f"SandboxServer on 127.0.0.1, {n_records:,} records + {n_customer_records:,} customer "
        f"records (seed {seed})"
    )
