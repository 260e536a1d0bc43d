"""The progress bar of the loaders and of ``export_parquet``: tqdm, shown only where seen.

The bar's last state stays on screen when the work ends (how many records, how long), and a
terminal that reports a size of 0 x 0 (a fresh pty, some CI runners) gets an 80-column bar
instead of an invisible one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["_progress_bar", "page_progress"]


#: Bar width and screen height assumed when the terminal reports 0 (tqdm would draw nothing).
FALLBACK_SIZE = (80, 24)


def _screen() -> dict[str, int]:
    """tqdm's ``ncols``/``nrows`` for a terminal that reports 0 x 0; empty: tqdm measures."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # not a terminal, or no fileno
        return {}
    fixed = {}
    if size.columns <= 0:
        fixed["ncols"] = FALLBACK_SIZE[0]
    if size.lines <= 0:
        fixed["nrows"] = FALLBACK_SIZE[1]
    return fixed


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


@contextlib.contextmanager
def _progress_bar(progress: bool | None, description: str) -> Iterator[Any]:
    """A tqdm bar counting records, or ``None`` when progress is off.

    ``progress=None`` shows a bar in notebooks and interactive terminals only.
    """
    if progress is None:
        progress = _in_notebook() or sys.stderr.isatty()
    if not progress:
        yield None
        return
    options: dict[str, Any] = {}
    if _in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:  # tqdm.auto would warn in a notebook without ipywidgets; a text bar works anywhere
        from tqdm.std import tqdm  # type: ignore[assignment]

        options.update(_screen())
    # leave=True: the final count and time stay as one line once the work is done.
    bar = tqdm(desc=description, unit=" records", unit_scale=True, leave=True, **options)
    try:
        yield bar
    finally:
        bar.close()


def page_progress(bar: Any) -> Callable[[int, tuple[int, int] | None], None] | None:
    """The ``on_page(records, days)`` of a walk that moves ``bar`` (``None`` when no bar).

    While the days of the query's range are unknown the bar counts records; once a walk knows
    them (dates given, or probed for date windows), it shows the days covered out of the total,
    so tqdm can give an ETA, with the records counted beside.
    """
    if bar is None:
        return None
    records = 0

    def update(count: int, days: tuple[int, int] | None) -> None:
        nonlocal records
        records += count
        if days is None:
            bar.update(count)
            return
        done, total = days
        if bar.total != total:
            bar.reset(total=total)
            bar.unit = " days"
            bar.unit_scale = False
        bar.n = done
        bar.set_postfix_str(f"{records:,} records", refresh=False)
        bar.refresh()

    return update
