"""Pages into batches for the export: one `FrameBuilder` per batch, one repeat rule across them.

Each batch is validated by its own builder. The next batch's builder continues the repeat rule
from the last page of the previous batch (`FrameBuilder.handoff`), so a record repeated across
a page boundary that is also a batch boundary is dropped as the loader drops it. The batches'
findings are added up and warned once per export, as the loader warns once per query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pandas as pd

from .._frame._builder import FrameBuilder
from .._frame._drift import Findings
from .._frame._repeats import Repeats
from .._paging._concurrent import check_concurrency, iter_pages
from .._paging._pages import Page
from .._params import Query
from .._prepare import Plan
from .._progress import _progress_bar, page_progress
from ..client._client import Client

__all__ = ["PAGES_AHEAD_PER_WORKER", "stream_frames"]

#: With concurrency, pages fetched ahead of the writer per worker (at most about twice this
#: waits in memory; see `impactframe._handoff`).
PAGES_AHEAD_PER_WORKER = 4


def _batches(
    pages: Iterable[list[object] | Page],
    new_builder: Callable[[Repeats | None], FrameBuilder],
    found: Findings,
    batch_records: int,
) -> Iterator[pd.DataFrame]:
    """Feed pages to one builder after another; yield a frame whenever one holds a batch.

    Pages go into the builder as they arrive (it keeps compact column chunks, not the record
    dicts), and a builder is dropped as soon as its frame is built, so a batch costs its typed
    columns only (and the next one the previous batch's last page). What each batch's frame
    holds that the caller must hear of is added to ``found`` (warned by the caller, once).
    """
    builder: FrameBuilder | None = new_builder(None)
    repeats: Repeats | None = None
    waiting = 0  # records of the pages the builder holds unparsed (Arrow parses them together)
    for page in pages:
        if builder is None:
            builder = new_builder(repeats)
        if isinstance(page, Page):  # the fast path: bodies parsed by Arrow in batches
            builder.add_raw(page)
            waiting += page.count
            if len(builder) + waiting < batch_records:
                continue
            builder.flush()  # the batch may be complete: count exactly
            waiting = 0
        else:
            builder.add(page)
        if len(builder) >= batch_records:
            frame = builder.finish(warn=False)
            found.update(builder.findings)
            repeats = builder.handoff()
            builder = None
            yield frame
    if builder is not None and (len(builder) or waiting):
        frame = builder.finish(warn=False)
        found.update(builder.findings)
        yield frame


def stream_frames(
    client: Client, plan: Plan, query: Query, found: Findings, batch_records: int
) -> Iterator[pd.DataFrame]:
    """The export's stream: `query`'s pages, with a progress bar, as frames of a batch each.

    The query is the plan's, or (a refresh) the plan's from a later first day.
    """
    endpoint, options = plan.endpoint, plan.builder_options
    with _progress_bar(plan.progress, f"impactframe export {endpoint}") as bar:
        pages = iter_pages(
            client,
            endpoint,
            query,
            max_records=plan.max_records,
            concurrency=plan.concurrency,
            on_page=page_progress(bar),
            # Window walks may run this far ahead of the writer: memory stays bounded
            # however long the history (SPEC §7), and the workers still overlap.
            page_budget=PAGES_AHEAD_PER_WORKER * check_concurrency(plan.concurrency),
        )
        try:
            yield from _batches(
                pages,
                lambda repeats: FrameBuilder(endpoint, **options, repeats=repeats),
                found,
                batch_records,
            )
        finally:  # end the walk's threads now, not whenever the garbage collector runs
            pages.close()
