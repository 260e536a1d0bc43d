"""The one-call loaders: every record of a query as a typed, validated DataFrame (SPEC §2, §3).

Each call runs the same short pipeline: check the arguments (before any request), serve from
the Parquet cache when it holds the query, otherwise walk the pages (one cursor chain, or
several date windows at once), build the frame and validate it against the pandera schema.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from ._cache import _store as _cache
from ._constants import DEFAULTS
from ._frame._builder import FrameBuilder
from ._frame._outputs import as_output, table_from_frame
from ._paging._concurrent import Concurrency, iter_pages
from ._params import Query
from ._prepare import CacheOption, DateLike, Plan, Refresh, connect, fill_doc, prepare
from ._progress import _progress_bar, page_progress
from .client._client import Client

__all__ = ["load_customer_records", "load_records", "load_with"]

logger = logging.getLogger("impactframe")


def _fetch_frame(
    client: Client,
    plan: Plan,
    query: Query,
    *,
    finish: Callable[[FrameBuilder], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    # Pages stay bytes until the builder parses them in batches. ``finish`` replaces
    # ``builder.finish`` (impactframe.dask reports the builder's findings itself).
    builder = FrameBuilder(plan.endpoint, output=plan.builder_output, **plan.builder_options)
    with _progress_bar(plan.progress, f"impactframe {plan.endpoint}") as bar:
        pages = iter_pages(
            client,
            plan.endpoint,
            query,
            max_records=plan.max_records,
            concurrency=plan.concurrency,
            on_page=page_progress(bar),
        )
        failure: Exception | None = None
        try:
            while failure is None:
                try:
                    page = next(pages)
                except StopIteration:
                    break
                except Exception as exc:  # raised below, once the pages before it are taken
                    failure = exc
                else:
                    builder.add_raw(page)
        finally:
            pages.close()  # stops the fetch thread when the builder raised
        if failure is not None:
            # A bad record in a page fetched before the failure is reported first, as the
            # page-by-page Python reader reports it.
            builder.flush()
            raise failure
    frame = builder.finish() if finish is None else finish(builder)  # warns at the user's line
    if plan.max_records is not None and len(frame) > plan.max_records:
        # Duplicates dropped by the builder can leave more than enough after the cap was
        # requested; the cap is on the rows returned.
        frame = (
            frame.slice(0, plan.max_records)
            if plan.builder_output == "arrow"
            else frame.iloc[: plan.max_records].reset_index(drop=True)
        )
    return frame


def _load(
    plan: Plan,
    *,
    client: Client | None,
    api_key: str | None,
    base_url: str | None,
) -> Any:
    # Every argument, the cache folder too, is checked before a client (and so any
    # connection) exists: the caller's `prepare` checked the rest.
    endpoint, query = plan.endpoint, plan.query
    root = None if plan.cache is False else _cache.resolve_cache_dir(plan.cache)
    if root is not None and plan.output != "pandas":
        # The cache keeps (and refreshes, and merges) pandas frames: the one conversion.
        frame = _load(
            dataclasses.replace(plan, output="pandas"),
            client=client, api_key=api_key, base_url=base_url,
        )  # fmt: skip
        return as_output(table_from_frame(frame), plan.output)
    with connect(client, api_key, base_url) as active:
        if root is None:
            frame = _fetch_frame(active, plan, query)
            return frame if plan.output == "pandas" else as_output(frame, plan.output)
        # The cache's warnings point at the user's call: user -> load_* -> _load -> cache.
        store = _cache.ParquetCache(root)
        key = _cache.CacheKey(
            fingerprint=active.fingerprint,
            endpoint=endpoint,
            query=query,
            max_records=plan.max_records,
            **plan.builder_options,
        )
        with store.try_lock(key) as usable:
            if not usable:  # the disk refused the entry (warned): load without the cache
                return _fetch_frame(active, plan, query)
            cached = None if plan.refresh == "full" else store.get(key)
            if cached is not None and plan.refresh is False:
                logger.info("served %d %s from the cache", len(cached), endpoint)
                return cached
            since = None
            if cached is not None and plan.max_records is None:
                since = _cache.refresh_start(cached)
            if since is None:
                frame = _fetch_frame(active, plan, query)
            else:
                # The date filter is inclusive: the newest cached day is read again whole,
                # replacing the cached rows of that day (SPEC §6).
                start = max(since, query.start_date) if query.start_date else since
                fresh = _fetch_frame(active, plan, dataclasses.replace(query, start_date=start))
                frame = _cache.merge(
                    cached,
                    fresh,
                    since=start,
                    endpoint=endpoint,
                    sort_order=query.sort_order,
                    **plan.builder_options,
                )
            store.put(key, frame, full=since is None)  # `built`: the last full fetch
            return frame


def load_with(
    plan: Plan,
    finish: Callable[[FrameBuilder], pd.DataFrame],
    *,
    api_key: str | None,
    base_url: str | None,
) -> pd.DataFrame:
    """`load_records` (or `load_customer_records`) of a checked `plan`, built by ``finish``.

    For impactframe.dask: its partitions must say what the Dask frame leaves out instead of
    passing on the builder's warnings (which describe the loader's frame). No cache: the
    plan's ``cache`` is ignored.

    Parameters
    ----------
    plan : Plan
        The checked call, from `prepare`.
    finish : callable
        Takes the `FrameBuilder` once every page is in; returns the frame.
    api_key, base_url : str, optional
        As for `load_records`.

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> with SandboxServer(n_records=5) as server:
    ...     frame = load_with(prepare("records", progress=False), lambda b: b.finish(),
    ...                       api_key=server.api_key, base_url=server.url)
    >>> len(frame)
    5
    """
    with connect(None, api_key, base_url) as active:
        return _fetch_frame(active, plan, plan.query, finish=finish)


_COMMON_DOC = """
    filter_by : str or list of str, optional
        One impact type or several (``"tree_planted"``, ``"waste_removed"``,
        ``"carbon_captured"``, ``"coral_restored"``, ``"money_donated"``).
    start_date, end_date : str, datetime.date, datetime.datetime or pandas.Timestamp, optional
        First and last UTC day, both inclusive; ``str`` as ``YYYY-MM-DD``; aware datetimes
        count by their UTC day.
    sort_order : {"asc", "desc"}
        Row order by ``time_utc``.
    page_size : int
        Records per request (the API's ``limit``), 1 to 1000.
    max_records : int, optional
        Return at most this many rows; no page beyond the last one needed is fetched.
    metadata : {"columns", "dict", "json", "drop"}
        ``"columns"``: one string column per metadata key, named ``metadata_prefix + key``;
        ``"dict"``: one ``metadata`` column of dicts; ``"json"``: one ``metadata`` column of
        JSON text; ``"drop"``: no metadata.
    metadata_prefix : str
        Prefix of the metadata columns in ``"columns"`` mode.
    cache : bool or path
        ``True`` uses the Parquet cache in ``IMPACTFRAME_CACHE_DIR`` (else the platform's user
        cache folder); a path uses that folder. A cached query is served with no request.
    refresh : bool or "full"
        With a cache: ``True`` fetches from the newest cached day on and merges;
        ``"full"`` rebuilds the cached result.
    concurrency : "auto" or int
        Cursor chains walked at once over disjoint date windows; the rows and their order are
        the same. ``"auto"``: a history longer than one page is walked on up to 8 chains,
        fewer while the API answers 429 (more again after successes); ``1``: one chain.
    progress : bool, optional
        A progress bar of records fetched; ``None`` shows it in notebooks and terminals.
    dtype_backend : {"numpy_nullable", "pyarrow"}
        Pandas nullable dtypes, or Arrow-backed dtypes (pandas output only).
    output : {"pandas", "arrow", "polars"}
        A ``pandas.DataFrame``, a ``pyarrow.Table`` or a ``polars.DataFrame`` (extra
        ``impactframe[polars]``) of the same columns, checked by the same rules; Arrow and
        polars are built from the parsed Arrow arrays, not through pandas (but for a cached
        query), and take neither ``dtype_backend="pyarrow"`` nor ``metadata="dict"``.
    client : Client, optional
        A configured client; alternative to ``api_key``/``base_url``.
    api_key : str, optional
        Defaults to ``IMPACTFRAME_API_KEY``.
    base_url : str, optional
        Defaults to ``IMPACTFRAME_BASE_URL``, then the production host.

    Returns
    -------
    pandas.DataFrame, pyarrow.Table or polars.DataFrame
        Validated against the schema of :mod:`impactframe.schemas` (SPEC §3).

    Raises
    ------
    ValueError
        A bad argument, before any request is sent.
    impactframe.AuthenticationError
        The key was refused.
    impactframe.APIError
        The API failed, even after the retries.
    impactframe.PaginationError
        The cursor chain repeated itself.
    impactframe.ValidationError
        The API sent data that breaks the contract.
"""


@fill_doc(common=_COMMON_DOC)
def load_records(
    *,
    filter_by: str | Iterable[str] | None = DEFAULTS["filter_by"],
    start_date: DateLike | None = DEFAULTS["start_date"],
    end_date: DateLike | None = DEFAULTS["end_date"],
    sort_order: str = DEFAULTS["sort_order"],
    page_size: int = DEFAULTS["page_size"],
    max_records: int | None = DEFAULTS["max_records"],
    metadata: str = DEFAULTS["metadata"],
    metadata_prefix: str = DEFAULTS["metadata_prefix"],
    cache: CacheOption = DEFAULTS["cache"],
    refresh: Refresh = DEFAULTS["refresh"],
    concurrency: Concurrency = DEFAULTS["concurrency"],
    progress: bool | None = DEFAULTS["progress"],
    dtype_backend: str = DEFAULTS["dtype_backend"],
    output: str = DEFAULTS["output"],
    client: Client | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> Any:
    """Load every impact record of the account (``/v1/records``) as a DataFrame.

    Parameters
    ----------
    {common}
    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> import impactframe as ifr
    >>> with SandboxServer(n_records=50) as server:
    ...     df = ifr.load_records(api_key=server.api_key, base_url=server.url,
    ...                           filter_by="tree_planted", progress=False)
    >>> df["impact_type"].unique().tolist()
    ['tree_planted']
    """
    plan = prepare(
        "records",
        filter_by=filter_by,
        start_date=start_date,
        end_date=end_date,
        sort_order=sort_order,
        page_size=page_size,
        max_records=max_records,
        metadata=metadata,
        metadata_prefix=metadata_prefix,
        cache=cache,
        refresh=refresh,
        concurrency=concurrency,
        progress=progress,
        dtype_backend=dtype_backend,
        output=output,
    )
    return _load(plan, client=client, api_key=api_key, base_url=base_url)


@fill_doc(common=_COMMON_DOC)
def load_customer_records(
    *,
    customer_email: str | None = DEFAULTS["customer_email"],
    filter_by: str | Iterable[str] | None = DEFAULTS["filter_by"],
    start_date: DateLike | None = DEFAULTS["start_date"],
    end_date: DateLike | None = DEFAULTS["end_date"],
    sort_order: str = DEFAULTS["sort_order"],
    page_size: int = DEFAULTS["page_size"],
    max_records: int | None = DEFAULTS["max_records"],
    metadata: str = DEFAULTS["metadata"],
    metadata_prefix: str = DEFAULTS["metadata_prefix"],
    cache: CacheOption = DEFAULTS["cache"],
    refresh: Refresh = DEFAULTS["refresh"],
    concurrency: Concurrency = DEFAULTS["concurrency"],
    progress: bool | None = DEFAULTS["progress"],
    dtype_backend: str = DEFAULTS["dtype_backend"],
    output: str = DEFAULTS["output"],
    client: Client | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> Any:
    """Load the impact records made for customers (``/v1/customer_records``) as a DataFrame.

    The frame adds ``customer_id``, ``customer_email`` and ``customer_name`` after ``user_id``.

    Parameters
    ----------
    customer_email : str, optional
        Only this customer's records.
    {common}
    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> import impactframe as ifr
    >>> with SandboxServer(n_customer_records=50) as server:
    ...     df = ifr.load_customer_records(api_key=server.api_key, base_url=server.url,
    ...                                    progress=False)
    >>> list(df.columns[:4])
    ['user_id', 'customer_id', 'customer_email', 'customer_name']
    """
    plan = prepare(
        "customer_records",
        customer_email=customer_email,
        filter_by=filter_by,
        start_date=start_date,
        end_date=end_date,
        sort_order=sort_order,
        page_size=page_size,
        max_records=max_records,
        metadata=metadata,
        metadata_prefix=metadata_prefix,
        cache=cache,
        refresh=refresh,
        concurrency=concurrency,
        progress=progress,
        dtype_backend=dtype_backend,
        output=output,
    )
    return _load(plan, client=client, api_key=api_key, base_url=base_url)
