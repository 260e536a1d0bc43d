"""The per-record checks of the reference frame builder (SPEC §3, §5).

`PageChecker.check` takes one page of records as the API sent them and either fills page-local
column buffers (`impactframe._frame_columns._Columns`) with their values and the page's
timestamps in milliseconds, or raises ``ValidationError`` naming the field and the record.
Nothing is coerced or skipped. The field checks below raise `_Bad`, which the checker turns into
that error; the messages' wording is the contract the tests pin.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn

import pyarrow as pa
import pyarrow.compute as pc

from .._constants import ENDPOINTS, IMPACT_TYPES
from .._dtypes import CUSTOMER_COLUMNS
from ..errors import ValidationError
from ._columns import _add_sparse, _Columns, _Sparse

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


class _Bad(Exception):
    """A field of one record is wrong (becomes a ValidationError naming the record)."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {_short(value)}"


def _missing_or(reason: str, record: dict[str, Any], name: str) -> str:
    return f"{reason}, {_got(record[name])}" if name in record else "is missing"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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


# -- metadata and unknown fields ------------------------------------------------------------


def _flatten(meta: dict[Any, Any], out: dict[str, str | None], parent: str) -> None:
    """Flatten metadata into ``out``: nested keys joined by ".", non-strings as JSON text."""
    for key, value in meta.items():
        if not isinstance(key, str):
            raise _Bad(field="metadata", reason=f"has a key that is not a string: {_short(key)}")
        path = parent + key
        if isinstance(value, dict) and value:
            _flatten(value, out, path + ".")
            continue
        if path in out:
            raise _Bad(field="metadata", reason=f"has two keys that both flatten to {path!r}")
        out[path] = _leaf(value)


def _leaf(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _json(value)  # numbers, booleans, lists; an empty object stays "{}": nothing is lost


def _add_metadata(stores: dict[str, _Sparse], meta: dict[Any, Any], row: int) -> None:
    """Add one record's metadata to the column stores, flattened as :func:`_flatten` does.

    The common flat, all-string case goes straight to the stores (no intermediate dict)."""
    nested = False
    for key, value in meta.items():
        if type(key) is not str and not isinstance(key, str):
            raise _Bad(field="metadata", reason=f"has a key that is not a string: {_short(key)}")
        if type(value) is not str:
            if isinstance(value, dict) and value:
                nested = True  # flattened below, where its paths can meet the direct keys
                continue
            value = _leaf(value)
        store = stores.get(key)
        if store is None:
            store = stores[key] = _Sparse()
        store.rows.append(row)
        store.values.append(value)
    if nested:
        flat: dict[str, str | None] = {}
        _flatten({k: v for k, v in meta.items() if isinstance(v, dict) and v}, flat, "")
        for path in flat:
            if path in meta and not (isinstance(meta[path], dict) and meta[path]):
                raise _Bad(field="metadata", reason=f"has two keys that both flatten to {path!r}")
        _add_sparse(stores, flat, row)


def _json_metadata(meta: dict[Any, Any]) -> str:
    if not all(isinstance(key, str) for key in meta):  # json.dumps would turn 1 into "1"
        raise _Bad(field="metadata", reason="has a key that is not a string")
    try:
        return _json(meta)
    except (TypeError, ValueError) as exc:
        raise _Bad(field="metadata", reason=f"holds a value JSON cannot represent: {exc}") from None


def _check_unknown(field: Any, value: Any, where: str) -> None:
    """An unknown field needs a string name (it names a column) and a value JSON can hold."""
    if not isinstance(field, str):
        raise _Bad(field=where, reason=f"has a field name that is not a string: {_short(field)}")
    if value is None or isinstance(value, (str, int, float)):
        return
    if isinstance(value, (dict, list)):
        try:
            _json(value)
        except (TypeError, ValueError) as exc:
            raise _Bad(field=field, reason=f"holds a value JSON cannot represent: {exc}") from None
        return
    raise _Bad(field=field, reason=f"holds a value JSON cannot represent: {_got(value)}")


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
        for key, value in extra.items():
            _check_unknown(key, value, "customer")
    return tuple(values), extra


# -- one page -------------------------------------------------------------------------------


class PageChecker:
    """Checks pages of one endpoint's records into page-local column buffers.

    Parameters
    ----------
    endpoint : {"records", "customer_records"}
    metadata : {"columns", "dict", "json", "drop"}
        As for :class:`impactframe._frame.FrameBuilder` (already checked).

    Examples
    --------
    >>> page, times = PageChecker("records", "json").check(
    ...     [{"user_id": "U1", "time_utc": "1970-01-01T00:00:01.500Z", "tree_planted": 2}], 0)
    >>> page.user_id, times, page.meta_values
    (['U1'], [1500], [None])
    """

    def __init__(self, endpoint: str, metadata: str) -> None:
        self._records_key = ENDPOINTS[endpoint][1]
        self._customers = endpoint == "customer_records"
        self._metadata = metadata
        self._known = frozenset(
            {"user_id", "time_utc", *IMPACT_TYPES, "category", "metadata"}
            | ({"customer"} if self._customers else set())
        )
        self._meta_mode = None if metadata == "drop" else metadata

    def check(self, records: list[Any], n_added: int) -> tuple[_Columns, list[int]]:
        """Check a page into page-local buffers and its timestamps, changing nothing.

        Error messages count records from ``n_added`` on (the records added before)."""
        if not isinstance(records, list):
            msg = f"{self._records_key} must be a list of records, got {type(records).__name__}"
            raise ValidationError(msg, field=self._records_key, record=_short(records))
        page = _Columns(self._customers, self._metadata)
        take = self._take
        for i, record in enumerate(records):
            try:
                take(page, record)
            except _Bad as bad:
                # an earlier bad timestamp is reported first
                self._parse_times(page.time, records, n_added)
                raise self._record_error(bad, i, record, n_added) from None
        return page, self._parse_times(page.time, records, n_added)

    def _take(self, page: _Columns, rec: Any) -> None:
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
            for key, value in extra.items():
                _check_unknown(key, value, self._records_key)
        if impact < 0 and not extra:
            raise _Bad(
                field="impact_type",
                reason="is missing: the record has none of the impact fields "
                + ", ".join(IMPACT_TYPES),
            )

        row = len(page.user_id)
        if meta is not None and self._meta_mode is not None:  # may raise: the page is dropped
            try:
                if self._meta_mode == "columns":
                    _add_metadata(page.meta, meta, row)
                else:
                    page.meta_values.append(
                        _json_metadata(meta) if self._meta_mode == "json" else meta
                    )
            except RecursionError:
                raise _Bad(field="metadata", reason="is nested too deeply to flatten") from None
        elif self._meta_mode in ("dict", "json"):
            page.meta_values.append(None)
        page.user_id.append(user_id)
        page.time.append(time_utc)
        page.impact.append(impact)
        page.amount.append(amount)
        page.category.append(category)
        if customer is not None:
            for column, value in zip(page.customer, customer, strict=True):
                column.append(value)
        if extra:
            _add_sparse(page.extra, extra, row)
            if impact < 0:
                page.orphans.append((row, extra))
        if customer_extra:
            _add_sparse(page.customer_extra, customer_extra, row)

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
                raise self._record_error(bad, i, records[i], n_added)
        msg = f"time_utc of a record in this page of {self._records_key} could not be parsed"
        raise ValidationError(msg, field="time_utc")  # pragma: no cover - Arrow and re disagree

    @staticmethod
    def _record_error(bad: _Bad, i: int, record: Any, n_added: int) -> ValidationError:
        where = f"record {i} of the page (record {n_added + i} overall"
        if isinstance(record, dict):
            for name in ("user_id", "time_utc"):
                value = record.get(name)
                if isinstance(value, str):
                    where += f", {name}={_short(value)}"
        msg = f"{where}): {bad.field} {bad.reason}"
        return ValidationError(msg, field=bad.field, record=record)
