"""The Python reader: one page of decoded records to a checked `Chunk` (SPEC §3, §5).

The builder reads pages with Arrow first (`_arrow_reader`); a page Arrow declines comes here.
`PageChecker.read` checks every record as the API sent it and returns a chunk of its values, or
raises ``ValidationError`` naming the field and the record: this module is the wording of
every record error. Nothing is coerced or skipped. Values the frame types later (metadata that
is not a string, unknown fields) are kept as their JSON text as sent (`json_text`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._constants import ENDPOINTS, IMPACT_TYPES
from .._dtypes import CUSTOMER_COLUMNS
from ..errors import ValidationError
from ._batch import Chunk
from ._values import _add_metadata, _Bad, _got, _meta_json, _short, _Sparse, _unknown

__all__ = ["PageChecker"]

_INT64_MAX: Final = 2**63 - 1
# Arrow's ISO 8601 cast is lenient (offsets, dates without a time): this is the shape we accept.
# Sub-millisecond digits are allowed only when they are zeros (never truncate a real value).
_TIME_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,3}0{0,6})?(Z|\+00:00)$"
)
# The same shape with any fraction, to explain a rejected timestamp.
_TIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:Z|\+00:00)"
)
_TIME_EXAMPLE: Final = "2024-09-16T20:30:13.391Z"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS: Final = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_IMPACT_CODES: Final = tuple(enumerate(IMPACT_TYPES))
_TEXT: Final = pa.large_string()


def _missing_or(reason: str, record: dict[str, Any], name: str) -> str:
    return f"{reason}, {_got(record[name])}" if name in record else "is missing"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _amount_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid impact amount (a non-negative int64), or None.

    Examples
    --------
    >>> _amount_problem(3) is None, _amount_problem(True)
    (True, 'must be a non-negative integer, got bool True')
    """
    if not _is_int(value):
        return f"must be a non-negative integer, {_got(value)}"
    if value < 0:
        return f"must be a non-negative integer, got {value}"
    if value > _INT64_MAX:
        return f"does not fit in a 64-bit integer: {value}"
    return None


def _time_problem(text: str) -> str | None:
    """Why ``text`` is not an accepted ``time_utc``, or None (the slow path, for messages).

    Examples
    --------
    >>> _time_problem("2024-02-30T00:00:00Z")
    "'2024-02-30T00:00:00Z' is not a real date and time"
    """
    match = _TIME_RE.fullmatch(text)
    if match is None:
        return f"{_short(text)} is not an ISO 8601 UTC timestamp like {_TIME_EXAMPLE!r}"
    if (match[7] or "")[3:].strip("0"):
        return f"{_short(text)} has sub-millisecond digits; the API's precision is milliseconds"
    try:
        year, month, day, hour, minute, second = (int(match[k]) for k in range(1, 7))
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return f"{_short(text)} is not a real date and time"
    return None


def _format_ms(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _customer_fields(rec: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """The checked ``(customer_id, customer_email, customer_name)`` and any unknown keys."""
    customer = rec.get("customer")
    if not isinstance(customer, dict):
        raise _Bad(field="customer", reason=_missing_or("must be an object", rec, "customer"))
    values = []
    for name in CUSTOMER_COLUMNS:
        value = customer.get(name)
        if not isinstance(value, str) and (name != "customer_name" or value is not None):
            raise _Bad(field=name, reason=_missing_or("must be a string", customer, name))
        values.append(value)
    extra = None
    if len(customer) > 2 + ("customer_name" in customer):
        extra = {k: v for k, v in customer.items() if k not in CUSTOMER_COLUMNS}
    return tuple(values), extra


class _Rows:
    """One page's checked values, column by column, before they become a `Chunk`."""

    def __init__(self) -> None:
        self.user_id: list[str] = []
        self.time: list[str] = []
        self.impact: list[int] = []
        self.amount: list[int] = []
        self.category: list[str | None] = []
        self.customer: list[list[Any]] = [[], [], []]
        self.meta_json: list[str | None] = []
        self.meta: dict[str, _Sparse] = {}
        self.extra: dict[str, _Sparse] = {}
        self.customer_extra: dict[str, _Sparse] = {}


# -- one page -------------------------------------------------------------------------------


class PageChecker:
    """Checks pages of one endpoint's records into chunks.

    Parameters
    ----------
    endpoint : {"records", "customer_records"}
    metadata : {"columns", "dict", "json", "drop"}
        As for :class:`impactframe._frame._builder.FrameBuilder` (already checked).
    string_type : pyarrow.DataType
        The frame's Arrow string type.

    Examples
    --------
    >>> chunk = PageChecker("records", "json").read(
    ...     [{"user_id": "U1", "time_utc": "1970-01-01T00:00:01.500Z", "tree_planted": 2}], 0)
    >>> chunk.user_id.to_pylist(), chunk.time.tolist(), chunk.meta_json.to_pylist()
    (['U1'], [1500], [None])
    """

    def __init__(self, endpoint: str, metadata: str, string_type: pa.DataType = _TEXT) -> None:
        self._records_key = ENDPOINTS[endpoint][1]
        self._customers = endpoint == "customer_records"
        self._metadata = metadata
        self._string_type = string_type
        self._known = frozenset(
            {"user_id", "time_utc", *IMPACT_TYPES, "category", "metadata"}
            | ({"customer"} if self._customers else set())
        )

    def read(self, records: list[Any], n_added: int) -> Chunk:
        """Check a page into a chunk, changing nothing; messages count records from
        ``n_added`` on (the records added before)."""
        if not isinstance(records, list):
            kind = "float" if isinstance(records, float) else type(records).__name__
            msg = f"{self._records_key} must be a list of records, got {kind}"
            raise ValidationError(msg, field=self._records_key, record=_short(records))
        page = _Rows()
        take = self._take
        for i, record in enumerate(records):
            try:
                take(page, record, i)
            except _Bad as bad:
                # an earlier bad timestamp is reported first
                self._parse_times(page.time, records, n_added)
                raise _record_error(bad, i, record, n_added) from None
        times = self._parse_times(page.time, records, n_added)
        try:
            return self._chunk(page, times)
        except _BadText as bad:
            record = records[bad.row]
            raise _record_error(bad.bad, bad.row, record, n_added) from None

    def _take(self, page: _Rows, rec: Any, row: int) -> None:
        """Check one record's known fields, then append its values to ``page``."""
        if not isinstance(rec, dict):
            raise _Bad(field=self._records_key, reason=f"must hold JSON objects, {_got(rec)}")
        user_id = rec.get("user_id")
        if not isinstance(user_id, str):
            raise _Bad(field="user_id", reason=_missing_or("must be a string", rec, "user_id"))
        time_utc = rec.get("time_utc")
        if not isinstance(time_utc, str):
            raise _Bad(
                field="time_utc", reason=_missing_or("must be a timestamp string", rec, "time_utc")
            )
        n_known = 2
        impact, amount = -1, 0
        for code, name in _IMPACT_CODES:
            if name in rec:
                if impact >= 0:
                    raise _Bad(
                        field=name,
                        reason=f"is a second impact field besides {IMPACT_TYPES[impact]}; "
                        "a record has exactly one",
                    )
                amount = rec[name]
                if type(amount) is not int or not 0 <= amount <= _INT64_MAX:
                    problem = _amount_problem(amount)  # the slow path, also for int subclasses
                    if problem:
                        raise _Bad(field=name, reason=problem)
                impact = code
                n_known += 1
        category = rec.get("category")
        if "category" in rec:
            n_known += 1
            if category is not None and not isinstance(category, str):
                raise _Bad(field="category", reason=f"must be a string or null, {_got(category)}")
        meta = rec.get("metadata")
        if "metadata" in rec:
            n_known += 1
            if meta is not None and not isinstance(meta, dict):
                raise _Bad(field="metadata", reason=f"must be an object or null, {_got(meta)}")
        customer = customer_extra = None
        if self._customers:
            customer, customer_extra = _customer_fields(rec)
            n_known += 1
        extra = None
        if len(rec) > n_known:
            extra = {key: value for key, value in rec.items() if key not in self._known}
        if impact < 0 and not extra:
            raise _Bad(
                field="impact_type",
                reason="is missing: the record has none of the impact fields "
                + ", ".join(IMPACT_TYPES),
            )
        # may raise: the page is dropped
        if extra:
            _unknown(page.extra, extra, self._records_key, row)
        if customer_extra:
            _unknown(page.customer_extra, customer_extra, "customer", row)
        mode = self._metadata
        try:
            if mode == "columns":
                if meta:
                    _add_metadata(page.meta, meta, row)
            elif mode != "drop":
                page.meta_json.append(None if meta is None else _meta_json(meta))
        except RecursionError:
            raise _Bad(field="metadata", reason="is nested too deeply to flatten") from None
        page.user_id.append(user_id)
        page.time.append(time_utc)
        page.impact.append(impact)
        page.amount.append(amount)
        page.category.append(category)
        if customer is not None:
            for column, value in zip(page.customer, customer, strict=True):
                column.append(value)

    def _chunk(self, page: _Rows, times: list[int]) -> Chunk:
        n = len(page.user_id)
        text = self._string_type

        def dense(values: list[Any], field: str) -> pa.ChunkedArray:
            return pa.chunked_array([_arrow_text(values, field, range(n), text)])

        def sparse(stores: dict[str, _Sparse], field: str | None) -> dict[str, pa.ChunkedArray]:
            out = {}
            for key, store in stores.items():
                values = _arrow_text(store.values, field or key, store.rows, text)
                if len(store.rows) < n:
                    index = np.full(n, -1, dtype=np.int64)
                    index[store.rows] = np.arange(len(store.rows))
                    values = values.take(pa.array(index, mask=index < 0))
                out[key] = pa.chunked_array([values])
            return out

        kinds = {}
        for key, store in page.meta.items():
            if store.kinds is not None:
                kind = np.zeros(n, dtype=np.int8)
                kind[store.rows] = store.kinds
                kinds[key] = kind
        customers = None
        if self._customers:
            customers = tuple(
                dense(values, name)
                for values, name in zip(page.customer, CUSTOMER_COLUMNS, strict=True)
            )
        mode = self._metadata
        return Chunk(
            dense(page.user_id, "user_id"),
            customers,
            np.array(times, dtype=np.int64),
            np.array(page.impact, dtype=np.int8),
            np.array(page.amount, dtype=np.int64),
            dense(page.category, "category"),
            sparse(page.meta, "metadata") if mode == "columns" else None,
            meta_kind=kinds,
            meta_json=dense(page.meta_json, "metadata") if mode in ("dict", "json") else None,
            extra=sparse(page.extra, None),
            customer_extra=sparse(page.customer_extra, None),
            starts=np.zeros(1, dtype=np.int64),
        )

    def _parse_times(self, times: list[str], records: list[Any], n_added: int) -> list[int]:
        """Milliseconds since the epoch of a page's timestamps (vectorized, checked)."""
        if not times:
            return []
        try:
            text = pa.array(times, type=pa.string())
        except UnicodeEncodeError:  # a lone surrogate: not a timestamp either
            self._raise_time_error(times, records, n_added)
        if not pc.all(pc.match_substring_regex(text, _TIME_PATTERN)).as_py():
            self._raise_time_error(times, records, n_added)
        text = pc.replace_substring_regex(text, r"(\.[0-9]{3})0+", r"\1")
        try:
            stamps = text.cast(pa.timestamp("ms", tz="UTC"))
        except pa.ArrowInvalid:  # a well-formed but impossible date (2023-02-29, 24:00:00)
            self._raise_time_error(times, records, n_added)
        ms = stamps.view(pa.int64()).to_numpy()
        if ms.min() < _MIN_MS:  # year 0000 parses in Arrow but is no date Python knows
            self._raise_time_error(times, records, n_added)
        return ms.tolist()  # type: ignore[no-any-return]

    def _raise_time_error(self, times: list[str], records: list[Any], n_added: int) -> NoReturn:
        for i, text in enumerate(times):
            problem = _time_problem(text)
            if problem:
                bad = _Bad(field="time_utc", reason=problem)
                raise _record_error(bad, i, records[i], n_added)
        msg = f"time_utc of a record in this page of {self._records_key} could not be parsed"
        raise ValidationError(msg, field="time_utc")  # pragma: no cover - Arrow and re disagree


class _BadText(Exception):
    def __init__(self, bad: _Bad, row: int) -> None:
        super().__init__(bad.reason)
        self.bad, self.row = bad, row


def _arrow_text(values: list[Any], field: str, rows: Any, text: pa.DataType) -> pa.Array:
    """An Arrow string array; a string Arrow cannot hold (a lone surrogate) is reported."""
    try:
        return pa.array(values, text)
    except UnicodeEncodeError:
        for i, value in enumerate(values):
            try:
                value is None or value.encode("utf-8")
            except UnicodeEncodeError:
                reason = f"{_short(value)} is not valid Unicode text (it holds a lone surrogate)"
                raise _BadText(_Bad(field=field, reason=reason), rows[i]) from None
        raise


def _record_error(bad: _Bad, i: int, record: Any, n_added: int) -> ValidationError:
    where = f"record {i} of the page (record {n_added + i} overall"
    if isinstance(record, dict):
        for name in ("user_id", "time_utc"):
            value = record.get(name)
            if isinstance(value, str):
                where += f", {name}={_short(value)}"
    msg = f"{where}): {bad.field} {bad.reason}"
    return ValidationError(msg, field=bad.field, record=record)
