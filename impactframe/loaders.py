"""The one-call loaders: every record of a query as a typed, validated DataFrame (SPEC §2, §3).

Each call runs the same short pipeline: check the arguments (before any request), serve from
the Parquet cache when it holds the query, otherwise walk the pages (one cursor chain, or
several date windows at once), build the frame and validate it against the pandera schema.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import pandas as pd

from . import _cache
from ._constants import DEFAULT_METADATA_PREFIX, DTYPE_BACKENDS, METADATA_MODES
from ._fetch import iter_raw_pages
from ._frame_fast import FastFrameBuilder
from ._params import Query, check_choice, normalize_max_records, normalize_query
from .client import Client

__all__ = ["load_customer_records", "load_records"]

logger = logging.getLogger("impactframe")

DateLike = str | Any  # str, datetime.date, datetime.datetime or pandas.Timestamp
Refresh = bool | Literal["full"]
CacheOption = bool | str | os.PathLike[str]


def _check_options(
    *,
    metadata: str,
    metadata_prefix: str,
    dtype_backend: str,
    concurrency: int,
    progress: bool | None,
    cache: CacheOption,
    refresh: Refresh,
) -> None:
    check_choice(metadata, "metadata", METADATA_MODES)
    check_choice(dtype_backend, "dtype_backend", DTYPE_BACKENDS)
    if not isinstance(metadata_prefix, str) or not metadata_prefix:
        msg = f"metadata_prefix must be a non-empty string; got {metadata_prefix!r}"
        raise ValueError(msg)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        msg = f"concurrency must be an integer >= 1; got {concurrency!r}"
        raise ValueError(msg)
    if progress is not None and not isinstance(progress, bool):
        msg = f"progress must be True, False or None (automatic); got {progress!r}"
        raise ValueError(msg)
    if not isinstance(cache, bool | str | os.PathLike) or cache == "":
        msg = f"cache must be True, False or a folder path; got {cache!r}"
        raise ValueError(msg)
    if refresh not in (False, True, "full") or not isinstance(refresh, bool | str):
        msg = f"refresh must be False, True or 'full'; got {refresh!r}"
        raise ValueError(msg)


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
    if _in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:  # tqdm.auto would warn in a notebook without ipywidgets; a text bar works anywhere
        from tqdm.std import tqdm  # type: ignore[assignment]

    bar = tqdm(desc=description, unit=" records", unit_scale=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()


def _fetch_frame(
    client: Client,
    endpoint: str,
    query: Query,
    *,
    max_records: int | None,
    concurrency: int,
    progress: bool | None,
    builder_options: dict[str, Any],
) -> pd.DataFrame:
    # The fast path: pages stay bytes until Arrow parses them in batches (FastFrameBuilder
    # gives exactly the reference FrameBuilder's frame, warnings and errors).
    builder = FastFrameBuilder(endpoint, **builder_options)
    with _progress_bar(progress, f"impactframe {endpoint}") as bar:
        pages = iter_raw_pages(
            client,
            endpoint,
            query,
            max_records=max_records,
            concurrency=concurrency,
            on_page=bar.update if bar is not None else None,
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
            # page-by-page reference path reports it.
            builder.flush()
            raise failure
    # Warnings point at the user's call: user -> load_* -> _load -> fetch -> _fetch_frame.
    frame = builder.finish(stacklevel=6)
    if max_records is not None and len(frame) > max_records:
        # Duplicates dropped by the builder can leave more than enough after the cap was
        # requested; the cap is on the rows returned.
        frame = frame.iloc[:max_records].reset_index(drop=True)
    return frame


def _load(
    endpoint: str,
    *,
    customer_email: str | None = None,
    filter_by: str | Iterable[str] | None,
    start_date: DateLike | None,
    end_date: DateLike | None,
    sort_order: str,
    page_size: int,
    max_records: int | None,
    metadata: str,
    metadata_prefix: str,
    cache: CacheOption,
    refresh: Refresh,
    concurrency: int,
    progress: bool | None,
    dtype_backend: str,
    client: Client | None,
    api_key: str | None,
    base_url: str | None,
) -> pd.DataFrame:
    # Every argument is checked before a client (and so any connection) exists.
    query = normalize_query(
        endpoint,
        filter_by=filter_by,
        start_date=start_date,
        end_date=end_date,
        sort_order=sort_order,
        page_size=page_size,
        customer_email=customer_email,
    )
    max_records = normalize_max_records(max_records)
    _check_options(
        metadata=metadata,
        metadata_prefix=metadata_prefix,
        dtype_backend=dtype_backend,
        concurrency=concurrency,
        progress=progress,
        cache=cache,
        refresh=refresh,
    )
    if client is not None and (api_key is not None or base_url is not None):
        msg = "pass either client= or api_key=/base_url=, not both"
        raise ValueError(msg)
    if client is not None and not isinstance(client, Client):
        msg = f"client must be an impactframe.Client; got {type(client).__name__}"
        raise ValueError(msg)

    builder_options = {
        "metadata": metadata,
        "metadata_prefix": metadata_prefix,
        "dtype_backend": dtype_backend,
    }
    owned = client is None
    active = Client(api_key, base_url=base_url) if client is None else client
    try:

        def fetch(q: Query) -> pd.DataFrame:
            return _fetch_frame(
                active,
                endpoint,
                q,
                max_records=max_records,
                concurrency=concurrency,
                progress=progress,
                builder_options=builder_options,
            )

        if cache is False:
            return fetch(query)
        store = _cache.ParquetCache(_cache.resolve_cache_dir(cache))
        key = _cache.CacheKey(
            fingerprint=active.fingerprint,
            endpoint=endpoint,
            query=query,
            max_records=max_records,
            **builder_options,
        )
        with store.lock(key):
            cached = None if refresh == "full" else store.get(key)
            if cached is not None and refresh is False:
                logger.info("served %d %s from the cache", len(cached), endpoint)
                return cached
            since = None
            if cached is not None and max_records is None:
                since = _cache.refresh_start(cached)
            if since is None:
                frame = fetch(query)
            else:
                # The date filter is inclusive: the newest cached day is read again whole,
                # replacing the cached rows of that day (SPEC §6).
                start = max(since, query.start_date) if query.start_date else since
                fresh = fetch(dataclasses.replace(query, start_date=start))
                frame = _cache.merge(
                    cached,
                    fresh,
                    since=start,
                    endpoint=endpoint,
                    sort_order=query.sort_order,
                    **builder_options,
                )
            store.put(key, frame)
            return frame
    finally:
        if owned:
            active.close()


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
    concurrency : int
        Cursor chains walked at once over disjoint date windows; the rows are the same.
    progress : bool, optional
        A progress bar of records fetched; ``None`` shows it in notebooks and terminals.
    dtype_backend : {"numpy_nullable", "pyarrow"}
        Pandas nullable dtypes, or Arrow-backed dtypes.
    client : Client, optional
        A configured client; alternative to ``api_key``/``base_url``.
    api_key : str, optional
        Defaults to ``IMPACTFRAME_API_KEY``.
    base_url : str, optional
        Defaults to ``IMPACTFRAME_BASE_URL``, then the production host.

    Returns
    -------
    pandas.DataFrame
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


def load_records(
    *,
    filter_by: str | Iterable[str] | None = None,
    start_date: DateLike | None = None,
    end_date: DateLike | None = None,
    sort_order: str = "asc",
    page_size: int = 1000,
    max_records: int | None = None,
    metadata: str = "columns",
    metadata_prefix: str = DEFAULT_METADATA_PREFIX,
    cache: CacheOption = False,
    refresh: Refresh = False,
    concurrency: int = 1,
    progress: bool | None = None,
    dtype_backend: str = "numpy_nullable",
    client: Client | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> pd.DataFrame:
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
    return _load(
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
        client=client,
        api_key=api_key,
        base_url=base_url,
    )


def load_customer_records(
    *,
    customer_email: str | None = None,
    filter_by: str | Iterable[str] | None = None,
    start_date: DateLike | None = None,
    end_date: DateLike | None = None,
    sort_order: str = "asc",
    page_size: int = 1000,
    max_records: int | None = None,
    metadata: str = "columns",
    metadata_prefix: str = DEFAULT_METADATA_PREFIX,
    cache: CacheOption = False,
    refresh: Refresh = False,
    concurrency: int = 1,
    progress: bool | None = None,
    dtype_backend: str = "numpy_nullable",
    client: Client | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> pd.DataFrame:
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
    return _load(
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
        client=client,
        api_key=api_key,
        base_url=base_url,
    )


load_records.__doc__ = (load_records.__doc__ or "").replace("{common}", _COMMON_DOC.strip())
load_customer_records.__doc__ = (load_customer_records.__doc__ or "").replace(
    "{common}", _COMMON_DOC.strip()
)
