"""A lazy Dask DataFrame of a query, one partition per date window (SPEC §7).

Needs the extra ``impactframe[dask]``; Dask is imported only when a reader is called.

The reader asks the API for the first and last day of the query (one ``limit=1`` request per
open end, as ``concurrency=N`` does), splits that range into day windows and builds one
partition per window with ``dask.dataframe.from_map``. Each partition is fetched, validated
and typed by the loaders' pipeline (`load_records`, without a cache) on whichever worker runs
it. Dask must know the columns before any partition is fetched, so metadata comes as one JSON
column ``metadata`` unless ``metadata_keys`` names the ``metadata_<key>`` columns wanted; a
partition warns about each column it finds beyond them, which the Dask frame leaves out.

The API key travels inside the task graph (workers need it) wrapped in an object whose
``repr`` is ``***`` and whose Dask token is the key's fingerprint, so printing the frame, its
graph or its expression never shows the key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._constants import DEFAULTS, DTYPE_BACKENDS, ENDPOINTS, IMPACT_TYPES
from ._frame._builder import FrameBuilder
from ._frame._drift import Findings
from ._paging._concurrent import date_bounds, open_windows
from ._paging._windows import split_windows
from ._params import Query, check_choice, normalize_query
from ._prepare import fill_doc, prepare
from ._readers import (
    PREFIX,
    HiddenKey,
    check_metadata_keys,
    check_npartitions,
    conform,
    meta_frame,
    months,
)
from ._warn import warn_all
from .client._client import Client
from .client._secrets import _resolve_api_key
from .errors import SchemaDriftWarning
from .loaders import load_with

if TYPE_CHECKING:
    import dask.dataframe

__all__ = ["read_customer_records", "read_records"]


def _require_dask() -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        msg = "impactframe.dask needs Dask: install impactframe[dask]"
        raise ImportError(msg) from exc
    return dd


def _build(builder: FrameBuilder, found: list[Findings]) -> pd.DataFrame:
    """``builder.finish()`` without its warnings: its findings go to `_report`."""
    frame = builder.finish(warn=False)
    found.append(builder.findings)
    return frame


def _report(endpoint: str, frame: pd.DataFrame, meta: pd.DataFrame, findings: Findings) -> None:
    """Warn about each column of `frame` that `meta` leaves out; pass the other findings on.

    The builder's drift findings say the loader's frame keeps such a column; the Dask frame
    does not, so those are replaced by one `SchemaDriftWarning` per column saying so.
    """
    records_key = ENDPOINTS[endpoint][1]
    why = "the Dask frame's columns (meta) are fixed before any partition is fetched"
    left_out = [name for name in frame.columns if name not in meta.columns]
    findings.drift = [(k, v) for k, v in findings.drift if k not in left_out]
    findings.new_types = {k: v for k, v in findings.new_types.items() if k not in left_out}
    messages = findings.messages()
    new_types = set(frame["impact_type"].cat.categories).difference(IMPACT_TYPES)
    for name in left_out:
        if name in new_types:
            n = int((frame["impact_type"] == name).sum())
            msg = (
                f"{records_key}: unknown impact type {name!r} in {n} record(s), kept as a "
                f"category of impact_type with its amount; its column {name!r} is left out: {why}"
            )
        elif name.startswith(PREFIX) and "metadata" not in meta.columns:
            continue  # a metadata key the caller did not name in metadata_keys: their choice
        else:
            msg = f"{records_key}: unknown field {name!r} is left out: {why}"
        messages.append((msg, SchemaDriftWarning))
    warn_all(messages)


class _WindowReader:
    """Loads one date window on a worker and shapes it like the Dask frame's meta."""

    def __init__(
        self,
        endpoint: str,
        query: Query,
        *,
        key: HiddenKey,
        base_url: str,
        metadata_keys: tuple[str, ...] | None,
        dtype_backend: str,
    ) -> None:
        self.endpoint = endpoint
        self.query = query
        self.key = key
        self.base_url = base_url
        self.metadata_keys = metadata_keys
        self.dtype_backend = dtype_backend

    def __repr__(self) -> str:
        return f"_WindowReader(endpoint={self.endpoint!r}, base_url={self.base_url!r})"

    def __dask_tokenize__(self) -> tuple[object, ...]:
        return (
            "impactframe-window-reader",
            self.endpoint,
            self.query.key(),
            self.key.__dask_tokenize__(),
            self.base_url,
            self.metadata_keys,
            self.dtype_backend,
        )

    def __call__(self, window: tuple[str, str]) -> pd.DataFrame:
        plan = prepare(
            self.endpoint,
            customer_email=self.query.customer_email,
            filter_by=self.query.filter_by,
            start_date=window[0],
            end_date=window[1],
            sort_order=self.query.sort_order,
            page_size=self.query.page_size,
            metadata="json" if self.metadata_keys is None else "columns",
            metadata_prefix=PREFIX,
            dtype_backend=self.dtype_backend,
            progress=False,
            concurrency=1,  # Dask runs the partitions in parallel already
        )
        found: list[Findings] = []
        frame = load_with(
            plan,
            lambda builder: _build(builder, found),
            api_key=self.key.get(),
            base_url=self.base_url,
        )
        meta = meta_frame(self.endpoint, self.metadata_keys, self.dtype_backend)
        _report(self.endpoint, frame, meta, found[0])
        return conform(frame, meta)


def _read(
    endpoint: str,
    query: Query,
    *,
    metadata_keys: Iterable[str] | None,
    npartitions: int | None,
    dtype_backend: str,
    api_key: str | None,
    base_url: str | None,
) -> dask.dataframe.DataFrame:
    # Every argument is checked before a client (and so any connection) exists; the query
    # came checked by the caller's `normalize_query`.
    keys = check_metadata_keys(metadata_keys)
    n = check_npartitions(npartitions)
    check_choice(dtype_backend, "dtype_backend", DTYPE_BACKENDS)
    dd = _require_dask()

    key = _resolve_api_key(api_key)
    with Client(key, base_url=base_url) as client:
        resolved_url = client.base_url
        bounds = date_bounds(client, endpoint, query)
    if bounds is None:
        # Nothing matches now; one partition asks again when computed.
        windows = [(query.start_date, query.end_date)]
    else:
        # The outer windows stay as open as the query: the probed edge days only balance the
        # partitions, and a server that misreports them cannot drop records (SPEC §4).
        windows = open_windows(split_windows(*bounds, n or months(*bounds)), query)
        if query.sort_order == "desc":
            windows.reverse()
    reader = _WindowReader(
        endpoint,
        query,
        key=HiddenKey(key, resolved_url),
        base_url=resolved_url,
        metadata_keys=keys,
        dtype_backend=dtype_backend,
    )
    spans = [(a.isoformat() if a else None, b.isoformat() if b else None) for a, b in windows]
    return dd.from_map(
        reader,
        spans,
        meta=meta_frame(endpoint, keys, dtype_backend),
        divisions=None,
        label=f"impactframe-{endpoint.replace('_', '-')}",
        enforce_metadata=True,
    )


_COMMON_DOC = """
    filter_by : str or list of str, optional
        One impact type or several.
    start_date, end_date : str, datetime.date, datetime.datetime or pandas.Timestamp, optional
        First and last UTC day, both inclusive. An open end is found with one ``limit=1``
        request when the frame is built.
    sort_order : {"asc", "desc"}
        Row order by ``time_utc``, inside each partition and across partitions.
    page_size : int
        Records per request (the API's ``limit``), 1 to 1000.
    metadata_keys : list of str, optional
        ``None``: metadata as one JSON string column ``metadata`` (as ``metadata="json"``).
        A list: exactly one string column ``metadata_<key>`` per key (sorted), present even in
        windows where no record has it; the keys not named are left out (your selection,
        so without a warning).
    npartitions : int, optional
        Number of date windows (fewer if the range has fewer days); default one per calendar
        month of the range. Windows split the days evenly, not the records.
    dtype_backend : {"numpy_nullable", "pyarrow"}
        As for `load_records`.
    api_key : str, optional
        Defaults to ``IMPACTFRAME_API_KEY`` (read here, not on the workers).
    base_url : str, optional
        Defaults to ``IMPACTFRAME_BASE_URL``, then the production host.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy, with unknown divisions; each partition has a RangeIndex of its own.
        ``impact_type`` is categorical with the known types (SPEC §1) in ``meta``. A window
        that holds a type this version does not know keeps it as an extra category of that
        partition (nothing is lost; Dask unions categories when partitions are combined),
        but ``meta`` does not list it: call ``.cat.as_unknown()`` before relying on the
        categories. Dask fixes the columns (``meta``) before any partition is fetched, so
        what a partition finds beyond them is left out, and the partition says so with one
        ``SchemaDriftWarning`` per column: fields a record adds beyond the schema (schema
        drift) and a new impact type's own column.

    Raises
    ------
    ImportError
        Dask is not installed (``pip install 'impactframe[dask]'``).
    ValueError
        A bad argument, before any request is sent.
    impactframe.APIError
        Finding the bounds failed; partitions raise the loaders' errors when computed.
"""


@fill_doc(common=_COMMON_DOC)
def read_records(
    *,
    filter_by: str | Iterable[str] | None = DEFAULTS["filter_by"],
    start_date: Any = DEFAULTS["start_date"],
    end_date: Any = DEFAULTS["end_date"],
    sort_order: str = DEFAULTS["sort_order"],
    page_size: int = DEFAULTS["page_size"],
    metadata_keys: Iterable[str] | None = None,
    npartitions: int | None = None,
    dtype_backend: str = DEFAULTS["dtype_backend"],
    api_key: str | None = None,
    base_url: str | None = None,
) -> dask.dataframe.DataFrame:
    """Read the account's impact records (``/v1/records``) as a lazy Dask DataFrame.

    Parameters
    ----------
    {common}
    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> from impactframe.dask import read_records
    >>> with SandboxServer(n_records=100) as server:
    ...     ddf = read_records(api_key=server.api_key, base_url=server.url, npartitions=4)
    ...     frame = ddf.compute(scheduler="sync")
    >>> ddf.npartitions, len(frame), "metadata" in frame.columns
    (4, 100, True)
    """
    query = normalize_query(
        "records",
        filter_by=filter_by,
        start_date=start_date,
        end_date=end_date,
        sort_order=sort_order,
        page_size=page_size,
    )
    return _read(
        "records",
        query,
        metadata_keys=metadata_keys,
        npartitions=npartitions,
        dtype_backend=dtype_backend,
        api_key=api_key,
        base_url=base_url,
    )


@fill_doc(common=_COMMON_DOC)
def read_customer_records(
    *,
    customer_email: str | None = DEFAULTS["customer_email"],
    filter_by: str | Iterable[str] | None = DEFAULTS["filter_by"],
    start_date: Any = DEFAULTS["start_date"],
    end_date: Any = DEFAULTS["end_date"],
    sort_order: str = DEFAULTS["sort_order"],
    page_size: int = DEFAULTS["page_size"],
    metadata_keys: Iterable[str] | None = None,
    npartitions: int | None = None,
    dtype_backend: str = DEFAULTS["dtype_backend"],
    api_key: str | None = None,
    base_url: str | None = None,
) -> dask.dataframe.DataFrame:
    """Read the records made for customers (``/v1/customer_records``) as a lazy Dask DataFrame.

    Parameters
    ----------
    customer_email : str, optional
        Only this customer's records.
    {common}
    Examples
    --------
    >>> from impactframe.sandbox import SandboxServer
    >>> from impactframe.dask import read_customer_records
    >>> with SandboxServer(n_customer_records=60) as server:
    ...     ddf = read_customer_records(api_key=server.api_key, base_url=server.url,
    ...                                 metadata_keys=["order_id"])
    ...     frame = ddf.compute(scheduler="sync")
    >>> list(frame.columns[:2]), list(frame.columns[-1:])
    (['user_id', 'customer_id'], ['metadata_order_id'])
    """
    query = normalize_query(
        "customer_records",
        customer_email=customer_email,
        filter_by=filter_by,
        start_date=start_date,
        end_date=end_date,
        sort_order=sort_order,
        page_size=page_size,
    )
    return _read(
        "customer_records",
        query,
        metadata_keys=metadata_keys,
        npartitions=npartitions,
        dtype_backend=dtype_backend,
        api_key=api_key,
        base_url=base_url,
    )
