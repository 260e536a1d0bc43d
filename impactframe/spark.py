"""A Spark data source of the Records API, one partition per date window (SPEC §13).

Needs the extra ``impactframe[spark]`` (pyspark 4: its Python data source API). Register it
once per session, then read with options that mirror the loaders' query::

    import impactframe.spark
    impactframe.spark.register(spark)
    df = (spark.read.format("impactframe")
          .option("endpoint", "customer_records")
          .option("start_date", "2024-01-01")
          .option("filter_by", "tree_planted,carbon_captured")
          .load())

How it works: the schema is fixed before anything is fetched (metadata is one JSON string
column ``metadata`` unless ``metadata_keys`` names the ``metadata_<key>`` columns wanted, as
:mod:`impactframe.dask` does). When Spark plans the read, one ``limit=1`` request per open end
finds the first and last day, and the range is split into day windows (the windows of
``concurrency=N`` and Dask), one partition each. Each partition is fetched on an executor by
:func:`impactframe.load_records` (retries, page checks, validation), and handed to Spark as Arrow
record batches. Rows equal ``load_records``' rows for the same query.

The API key never travels with the query: Spark's Python workers (the planner's and the
executors') read it from ``IMPACTFRAME_API_KEY``, or from the variable the ``api_key_env``
option names, so it is in no option, plan, ``explain()`` output, partition or log line. An
``api_key`` option is refused.

Filter pushdown (pyspark 4.1 and later): ``impact_type = 'x'`` or ``impact_type IN (...)`` on
known types becomes the API's ``filter_by``; comparisons of ``time_utc`` with a timestamp
narrow the days asked for (Spark still applies them, as the API counts whole UTC days).
pyspark 4.0's data source API has no filter pushdown: there Spark filters after the fetch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from ._constants import ENDPOINTS, IMPACT_TYPES
from ._dtypes import INT, fixed_dtypes
from ._paging._concurrent import date_bounds
from ._paging._windows import split_windows
from ._params import check_choice, reject
from ._readers import PREFIX, SparkConfig, months, spark_config
from .client._client import Client
from .errors import SchemaDriftWarning
from .loaders import load_customer_records, load_records

try:
    from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType
except ImportError as exc:  # pragma: no cover - the extra is missing
    msg = (
        "impactframe.spark needs pyspark 4 (its Python data source API): install impactframe[spark]"
    )
    raise ImportError(msg) from exc

try:  # filter pushdown came with pyspark 4.1
    from pyspark.sql.datasource import (
        EqualTo,
        Filter,
        GreaterThan,
        GreaterThanOrEqual,
        In,
        LessThan,
        LessThanOrEqual,
    )

    FILTER_PUSHDOWN = True
except ImportError:  # pragma: no cover - pyspark 4.0
    FILTER_PUSHDOWN = False

__all__ = ["FILTER_PUSHDOWN", "ImpactFrameDataSource", "register", "spark_schema"]

NAME = "impactframe"
PUSHDOWN_CONF = "spark.sql.python.filterPushdown.enabled"
# Never null (SPEC §3): Spark may rely on it, and the Arrow batches say so too.
_REQUIRED = frozenset(
    {"user_id", "customer_id", "customer_email", "time_utc", "impact_type", "amount"}
)


def spark_schema(endpoint: str = "records", metadata_keys: Sequence[str] | None = None) -> Any:
    """The Spark schema of a read: the loaders' fixed columns, then the metadata column(s).

    Parameters
    ----------
    endpoint : {"records", "customer_records"}
    metadata_keys : list of str, optional
        ``None``: one JSON string column ``metadata``; else one ``metadata_<key>`` per key.

    Returns
    -------
    pyspark.sql.types.StructType

    Examples
    --------
    >>> spark_schema("records", ["order_id"]).fieldNames()[-3:]
    ['money_donated', 'category', 'metadata_order_id']
    """
    check_choice(endpoint, "endpoint", ENDPOINTS)
    fields = []
    for name, dtype in fixed_dtypes(endpoint).items():
        if name == "time_utc":
            kind: Any = TimestampType()
        elif dtype == INT:
            kind = LongType()
        else:  # strings, and the impact_type category
            kind = StringType()
        fields.append(StructField(name, kind, nullable=name not in _REQUIRED))
    names = ["metadata"] if metadata_keys is None else [f"{PREFIX}{k}" for k in metadata_keys]
    fields += [StructField(name, StringType(), nullable=True) for name in names]
    return StructType(fields)


class _Window(InputPartition):  # type: ignore[misc]
    """One partition: an inclusive range of UTC days (ISO strings, ``None`` for open)."""

    def __init__(self, start: str | None, end: str | None, base_url: str) -> None:
        super().__init__((start, end))
        self.base_url = base_url


def _api_key(env: str) -> str:
    key = os.environ.get(env, "").strip()
    if not key:
        msg = (
            f"{env} is not set for Spark's Python workers: set it in the environment before "
            "the Spark session starts (local mode), or in the executors' environment"
        )
        raise ValueError(msg)
    return key


class _Reader(DataSourceReader):  # type: ignore[misc]
    """Plans the date windows (on the driver) and fetches one window per partition."""

    def __init__(self, config: SparkConfig, schema: Any) -> None:
        self.config = config
        self.schema = schema
        self.empty = False  # a pushed filter that no record can pass

    def __repr__(self) -> str:
        return f"_Reader(endpoint={self.config.endpoint!r})"

    def partitions(self) -> list[_Window]:
        config, query = self.config, self.config.query
        if self.empty:
            return []
        with Client(_api_key(config.api_key_env), base_url=config.base_url) as client:
            base_url = client.base_url
            bounds = date_bounds(client, config.endpoint, query)
        if bounds is None:  # nothing matches now: one partition asks again when read
            spans = [(query.start_date, query.end_date)]
        else:
            spans = list(split_windows(*bounds, config.npartitions or months(*bounds)))
            if query.sort_order == "desc":
                spans.reverse()
        return [
            _Window(a.isoformat() if a else None, b.isoformat() if b else None, base_url)
            for a, b in spans
        ]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        if not isinstance(partition, _Window):  # Spark's stand-in for "no partitions"
            return iter(())
        config, query = self.config, self.config.query
        start, end = partition.value
        options: dict[str, Any] = {
            "filter_by": query.filter_by,
            "start_date": start,
            "end_date": end,
            "sort_order": query.sort_order,
            "page_size": query.page_size,
            "metadata": "json" if config.metadata_keys is None else "columns",
            "metadata_prefix": PREFIX,
            "dtype_backend": "pyarrow",
            "progress": False,
            "api_key": _api_key(config.api_key_env),
            "base_url": partition.base_url,
        }
        load: Callable[..., pd.DataFrame] = load_records
        if config.endpoint == "customer_records":
            options["customer_email"] = query.customer_email
            load = load_customer_records
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = load(**options)
        _report(config.endpoint, frame, self.schema.fieldNames(), caught)
        return iter(_to_arrow(frame, self.schema).to_batches(max_chunksize=50_000))


def _to_arrow(frame: pd.DataFrame, schema: Any) -> pa.Table:
    """Exactly the batch layout Spark expects for `schema` (it compares the Arrow schemas)."""
    target = to_arrow_schema(schema, timezone="UTC")
    columns = []
    for field in target:
        if field.name in frame.columns:
            array = pa.array(frame[field.name], from_pandas=True)
            if pa.types.is_dictionary(array.type):  # impact_type
                array = array.dictionary_decode()
            columns.append(array.cast(field.type))
        else:  # a named metadata key no record of this window has
            columns.append(pa.nulls(len(frame), field.type))
    return pa.Table.from_arrays(columns, schema=target)


def _report(
    endpoint: str,
    frame: pd.DataFrame,
    names: list[str],
    caught: list[warnings.WarningMessage],
) -> None:
    """Pass the load's warnings on, except that what the Spark frame leaves out says so."""
    records_key = ENDPOINTS[endpoint][1]
    why = "the Spark schema is fixed before any partition is fetched"
    left_out = [name for name in frame.columns if name not in names]
    replaced = tuple(
        f"{records_key}: unknown {w} {n!r}" for n in left_out for w in ("field", "impact type")
    )
    for warning in caught:
        drift = issubclass(warning.category, SchemaDriftWarning)
        if not (drift and str(warning.message).startswith(replaced)):
            warnings.warn(warning.message, stacklevel=2)
    new_types = set(frame["impact_type"].cat.categories).difference(IMPACT_TYPES)
    for name in left_out:
        if name in new_types:
            msg = (
                f"{records_key}: unknown impact type {name!r}, kept in impact_type and amount; "
                f"its column {name!r} is left out: {why}"
            )
        elif name.startswith(PREFIX) and "metadata" not in names:
            continue  # a metadata key not named in metadata_keys: the caller's choice
        else:
            msg = f"{records_key}: unknown field {name!r} is left out: {why}"
        warnings.warn(msg, SchemaDriftWarning, stacklevel=2)


def _utc_day(value: object) -> dt.date | None:
    """The UTC day of a pushed timestamp literal (aware; a naive one is taken as UTC)."""
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.date()


class _PushdownReader(_Reader):
    """`_Reader` plus filter pushdown (registered only where Spark enables it)."""

    def pushFilters(self, filters: list[Filter]) -> Iterable[Filter]:
        query = self.config.query
        start, end, types = query.start_date, query.end_date, query.filter_by
        for item in filters:
            column = getattr(item, "attribute", None)  # every filter class has one
            if column == ("impact_type",) and isinstance(item, EqualTo | In):
                values = (item.value,) if isinstance(item, EqualTo) else tuple(item.value)
                if all(v in IMPACT_TYPES for v in values):  # exact: the API filters these
                    types = tuple(t for t in (types or IMPACT_TYPES) if t in values)
                    continue
            elif column == ("time_utc",):
                day = _utc_day(getattr(item, "value", None))
                if day is not None and isinstance(item, GreaterThan | GreaterThanOrEqual | EqualTo):
                    start = max(start, day) if start else day
                if day is not None and isinstance(item, LessThan | LessThanOrEqual | EqualTo):
                    end = min(end, day) if end else day
            yield item  # Spark applies it (time_utc: the API only counts whole days)
        self.empty = types == () or (start is not None and end is not None and start > end)
        if not self.empty:
            query = dataclasses.replace(query, start_date=start, end_date=end, filter_by=types)
            self.config = dataclasses.replace(self.config, query=query)


class ImpactFrameDataSource(DataSource):  # type: ignore[misc]
    """The ``"impactframe"`` data source: register it with :func:`register`.

    Options (all strings, as Spark passes them): ``endpoint`` (``records``, the default, or
    ``customer_records``), ``filter_by`` (comma-separated impact types), ``start_date``,
    ``end_date`` (``YYYY-MM-DD``, inclusive UTC days), ``customer_email``, ``sort_order``,
    ``page_size``, ``metadata_keys`` (comma-separated, or a JSON list), ``npartitions``
    (default: one per calendar month), ``base_url`` (default ``IMPACTFRAME_BASE_URL``, then
    the production host) and ``api_key_env`` (default ``IMPACTFRAME_API_KEY``). A bad option
    raises ``ValueError`` when ``load()`` runs, before any request.
    """

    pushdown = False

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        self.config = spark_config(dict(options))

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> Any:
        return spark_schema(self.config.endpoint, self.config.metadata_keys)

    def reader(self, schema: Any) -> _Reader:
        expected = self.schema()
        if schema != expected:
            reject("schema", schema.simpleString(), f"impactframe's own: {expected.simpleString()}")
        return (_PushdownReader if self.pushdown else _Reader)(self.config, expected)


class _PushdownDataSource(ImpactFrameDataSource):
    pushdown = True


def register(spark: Any, *, filter_pushdown: bool = True) -> None:
    """Register the ``"impactframe"`` data source with a Spark session.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    filter_pushdown : bool, default True
        Push filters on ``impact_type`` and ``time_utc`` to the API (pyspark 4.1+). Spark
        refuses a source that can push filters unless ``spark.sql.python.filterPushdown.enabled``
        is true, so this sets it for the session (it only concerns Python data sources).
        ``False`` leaves the setting alone and Spark filters after the fetch.

    Examples
    --------
    >>> import impactframe.spark
    >>> impactframe.spark.register(spark)  # doctest: +SKIP
    >>> spark.read.format("impactframe").option("start_date", "2024-01-01").load()  # doctest: +SKIP
    """
    if not isinstance(filter_pushdown, bool):
        reject("filter_pushdown", filter_pushdown, "True or False")
    if filter_pushdown and FILTER_PUSHDOWN:
        spark.conf.set(PUSHDOWN_CONF, "true")
        spark.dataSource.register(_PushdownDataSource)
    else:
        spark.dataSource.register(ImpactFrameDataSource)
