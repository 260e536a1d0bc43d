"""The argument checks that `load_records`, `load_customer_records` and `export_parquet` share.

Each public function keeps its explicit keywords (for IDEs and docs), with the defaults of
`impactframe._constants.DEFAULTS`, and passes them on by name. `prepare` checks the query,
``max_records`` and the options, in that order, and returns them as one `Plan`; `connect`
checks ``client=``/``api_key=``/``base_url=`` and opens a `Client` only when none was given.
Everything here raises before any request is sent (SPEC §2). `fill_doc` puts the numpydoc
text that several public functions share into their docstrings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import textwrap
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from ._constants import DEFAULTS
from ._dtypes import check_options
from ._frame._outputs import OUTPUTS
from ._paging._concurrent import Concurrency, check_concurrency
from ._params import Query, check_choice, normalize_max_records, normalize_query, reject
from .client._client import Client

__all__ = ["CacheOption", "DateLike", "Plan", "Refresh", "connect", "fill_doc", "prepare"]

DateLike = str | Any  # str, datetime.date, datetime.datetime or pandas.Timestamp
Refresh = bool | Literal["full"]
CacheOption = bool | str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked call: what to read, how to fetch it and how to build the frame.

    Building one checks the options (the query and `max_records` come checked, from
    `normalize_query` and `normalize_max_records`). Holds no credentials, so it can be shown
    as it is.
    """

    endpoint: str
    query: Query
    max_records: int | None
    concurrency: Concurrency
    progress: bool | None
    cache: CacheOption
    refresh: Refresh
    metadata: str
    metadata_prefix: str
    dtype_backend: str
    output: str = "pandas"

    def __post_init__(self) -> None:
        # The options in the loaders' order: with several bad, the same one is named first.
        check_options(
            metadata=self.metadata,
            metadata_prefix=self.metadata_prefix,
            dtype_backend=self.dtype_backend,
        )
        concurrency, progress = self.concurrency, self.progress
        cache, refresh = self.cache, self.refresh
        check_concurrency(concurrency)
        if progress is not None and not isinstance(progress, bool):
            reject("progress", progress, "True, False or None (automatic)")
        if not isinstance(cache, bool | str | os.PathLike) or cache == "":
            reject("cache", cache, "True, False or a folder path")
        if refresh not in (False, True, "full") or not isinstance(refresh, bool | str):
            reject("refresh", refresh, "False, True or 'full'")
        if refresh is not False and cache is False:
            # A refresh updates a cached result; without a cache it would silently do nothing.
            reject("refresh", refresh, "False when cache=False (it updates a cache)")
        self._check_output()

    def _check_output(self) -> None:
        """``output=``, and the options it fixes: Arrow and polars have one set of types (a
        pandas ``dtype_backend`` means nothing there) and no column type for a dict of any
        JSON values (``metadata="json"`` keeps them as text)."""
        output = self.output
        check_choice(output, "output", OUTPUTS)
        if output == "pandas":
            return
        if self.dtype_backend != "numpy_nullable":
            reject(
                "dtype_backend",
                self.dtype_backend,
                f"the default 'numpy_nullable' with output={output!r} (Arrow types are fixed)",
            )
        if self.metadata == "dict":
            reject("metadata", "dict", f"'columns', 'json' or 'drop' with output={output!r}")
        if output == "polars" and importlib.util.find_spec("polars") is None:
            msg = "output='polars' needs polars: pip install 'impactframe[polars]'"
            raise ImportError(msg)

    @property
    def builder_output(self) -> str:
        """The builder's ``output``: polars frames are made from its Arrow table."""
        return "pandas" if self.output == "pandas" else "arrow"

    @property
    def builder_options(self) -> dict[str, Any]:
        """The keywords of `FrameBuilder` (and of the cache key) that shape the frame."""
        return {
            "metadata": self.metadata,
            "metadata_prefix": self.metadata_prefix,
            "dtype_backend": self.dtype_backend,
        }


def prepare(
    endpoint: str,
    *,
    customer_email: str | None = DEFAULTS["customer_email"],
    filter_by: object = DEFAULTS["filter_by"],
    start_date: DateLike | None = DEFAULTS["start_date"],
    end_date: DateLike | None = DEFAULTS["end_date"],
    sort_order: str = DEFAULTS["sort_order"],
    page_size: int = DEFAULTS["page_size"],
    max_records: int | None = DEFAULTS["max_records"],
    metadata: str = DEFAULTS["metadata"],
    metadata_prefix: str = DEFAULTS["metadata_prefix"],
    dtype_backend: str = DEFAULTS["dtype_backend"],
    concurrency: Concurrency = DEFAULTS["concurrency"],
    progress: bool | None = DEFAULTS["progress"],
    cache: CacheOption = DEFAULTS["cache"],
    refresh: Refresh = DEFAULTS["refresh"],
    output: str = DEFAULTS["output"],
) -> Plan:
    """Check a call's query and options, in the order the loaders always have, as a `Plan`.

    Parameters
    ----------
    endpoint : {"records", "customer_records"}
        The endpoint the call reads.
    customer_email, filter_by, start_date, end_date, sort_order, page_size
        The query, checked by `normalize_query` (``customer_email`` only for
        ``customer_records``).
    max_records, metadata, metadata_prefix, dtype_backend, concurrency, progress, cache, refresh,
    output
        As for `load_records`; the defaults are the loaders' (`DEFAULTS`).

    Returns
    -------
    Plan

    Raises
    ------
    ValueError
        Naming the argument and the accepted values: the query's arguments are checked first,
        then `max_records`, then the options.

    Examples
    --------
    >>> plan = prepare("records", filter_by="tree_planted", max_records=5)
    >>> plan.query.filter_by, plan.max_records, plan.builder_options["metadata"]
    (('tree_planted',), 5, 'columns')
    >>> prepare("records", concurrency=0)
    Traceback (most recent call last):
    ...
    ValueError: concurrency: 0 is not accepted; expected 'auto' or an int >= 1
    >>> prepare("records", refresh=True)
    Traceback (most recent call last):
    ...
    ValueError: refresh: True is not accepted; expected False when cache=False (it updates a cache)
    """
    checked_query = normalize_query(
        endpoint,
        filter_by=filter_by,
        start_date=start_date,
        end_date=end_date,
        sort_order=sort_order,
        page_size=page_size,
        customer_email=customer_email,
    )
    checked_max = normalize_max_records(max_records)
    return Plan(
        endpoint=endpoint,
        query=checked_query,
        max_records=checked_max,
        concurrency=concurrency,
        progress=progress,
        cache=cache,
        refresh=refresh,
        metadata=metadata,
        metadata_prefix=metadata_prefix,
        dtype_backend=dtype_backend,
        output=output,
    )


@contextlib.contextmanager
def connect(client: Client | None, api_key: str | None, base_url: str | None) -> Iterator[Client]:
    """The given `client`, or a new one from `api_key` and `base_url`, closed on exit.

    The checks run on entering the ``with`` block; a client the caller gave is left open.

    Raises
    ------
    ValueError
        `client` together with `api_key` or `base_url`, a `client` that is not a `Client`, or
        (from `Client`) no key anywhere or a bad base URL.

    Examples
    --------
    >>> with connect(None, "my-key", "http://127.0.0.1:8000") as client:
    ...     client.base_url
    'http://127.0.0.1:8000'
    >>> with connect(client, "my-key", None):
    ...     pass
    Traceback (most recent call last):
    ...
    ValueError: pass either client= or api_key=/base_url=, not both
    """
    if client is not None and (api_key is not None or base_url is not None):
        msg = "pass either client= or api_key=/base_url=, not both"
        raise ValueError(msg)
    if client is not None and not isinstance(client, Client):
        # Its type only: a key passed here by mistake must not be echoed.
        reject(
            "client",
            client,
            "an impactframe.Client",
            shown=f"a value of type {type(client).__name__}",
        )
    if client is not None:
        yield client
        return
    with Client(api_key, base_url=base_url) as owned:
        yield owned


_F = TypeVar("_F", bound=Callable[..., Any])
_SLOT = re.compile(r"^( *)\{(\w+)\}\n", re.MULTILINE)


def fill_doc(**fragments: str) -> Callable[[_F], _F]:
    r"""Put shared numpydoc text into the docstring of the function it decorates.

    A line of the docstring that holds only ``{name}`` is replaced by the fragment `name`,
    indented like that line (pandas' ``@doc`` idea, without ``str.format``, so the rest of
    the docstring may hold braces). A slot without a fragment fails at import.

    Examples
    --------
    >>> def f(x):
    ...     pass
    >>> f.__doc__ = "Parameters\n    ----------\n    {common}\n"
    >>> print(fill_doc(common="x : int\n    Anything.")(f).__doc__)
    Parameters
        ----------
        x : int
            Anything.
    <BLANKLINE>
    """
    texts = {name: textwrap.dedent(text).strip("\n") for name, text in fragments.items()}

    def indent(match: re.Match[str]) -> str:
        pad = match[1]
        return "".join(f"{pad}{line}\n" if line else "\n" for line in texts[match[2]].split("\n"))

    def decorate(func: _F) -> _F:
        func.__doc__ = _SLOT.sub(indent, func.__doc__ or "")
        return func

    return decorate
