"""Tests of the Parquet cache (SPEC §6, §10): storage, keys, locks, refresh merge, end to end."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from impactframe._cache._store import (
    SCHEMA_VERSION,
    CacheKey,
    CacheWarning,
    ParquetCache,
    merge,
    refresh_start,
    resolve_cache_dir,
)
from impactframe._constants import IMPACT_TYPES
from impactframe._frame._builder import empty_frame, records_to_frame
from impactframe._params import normalize_query
from impactframe.client import Client
from impactframe.errors import APIError, ImpactFrameWarning, SchemaDriftWarning
from impactframe.loaders import load_customer_records, load_records
from impactframe.sandbox import Fault, SandboxServer, generate_records
from impactframe.schemas import validate

REPO = pathlib.Path(__file__).resolve().parents[1]
FINGERPRINT = "0123456789abcdef"


def make_key(**changes: object) -> CacheKey:
    fields: dict[str, object] = {
        "fingerprint": FINGERPRINT,
        "endpoint": "records",
        "query": normalize_query("records"),
        "max_records": None,
        "metadata": "columns",
        "metadata_prefix": "metadata_",
        "dtype_backend": "numpy_nullable",
    }
    fields.update(changes)
    return CacheKey(**fields)  # type: ignore[arg-type]


def assert_same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    assert_frame_equal(
        left, right, check_dtype=True, check_categorical=True, check_exact=True, check_flags=True
    )
    assert left.attrs == right.attrs
    for name in left.columns:
        if isinstance(left[name].dtype, pd.CategoricalDtype):
            # assert_frame_equal compares values; the dtype must also keep unused categories.
            assert left[name].dtype == right[name].dtype
            assert list(left[name].cat.categories) == list(right[name].cat.categories)


@pytest.fixture
def store(tmp_path: pathlib.Path) -> ParquetCache:
    return ParquetCache(resolve_cache_dir(tmp_path / "cache"))


# -- hand-built frames: one per dtype case the cache must keep exactly ---------------------------

TIMES = pd.to_datetime(
    ["2024-01-01T00:00:00.123Z", "2024-01-02T23:59:59.999Z", "2024-01-03T01:00:00.000Z"]
).as_unit("ms")
IMPACT_DTYPE = pd.CategoricalDtype([*IMPACT_TYPES, "kelp_planted"])


def nullable_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.array(["U1", "U2", "U3"], dtype="string"),
            "time_utc": TIMES,
            # unused categories, a new type, the known order: all must survive
            "impact_type": pd.Series(["waste_removed", "kelp_planted", "tree_planted"]).astype(
                IMPACT_DTYPE
            ),
            "amount": pd.array([3, 0, 2**40], dtype="Int64"),
            "tree_planted": pd.array([None, None, 2**40], dtype="Int64"),
            "waste_removed": pd.array([3, None, None], dtype="Int64"),
            "kelp_planted": pd.array([None, 0, None], dtype="Int64"),
            "category": pd.array([None, "food", "ünïcode ✓"], dtype="string"),
            "metadata_a b": pd.array(["x", None, ""], dtype="string"),
            "drift_float": pd.array([1.5, None, -0.0], dtype="Float64"),
            "drift_int": pd.array([None, 7, -1], dtype="Int64"),
            "drift_text": pd.array(["t", None, "u"], dtype="string"),
        }
    )


def other_dtypes_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "python_string": pd.array(["a", None, "c"], dtype=pd.StringDtype("python")),
            "nan_string": pd.Series(["a", None, "c"], dtype="str"),
            "numpy_int": np.array([1, 2, 3]),
            "numpy_float": np.array([1.0, np.nan, 3.0]),
            "boolean": pd.array([True, None, False], dtype="boolean"),
            "ordered": pd.Categorical(["b", "a", None], categories=["b", "a", "z"], ordered=True),
            "interval": pd.arrays.IntervalArray.from_breaks([0, 1, 2, 3]),
            "period": pd.period_range("2024-01", periods=3, freq="M"),
            "naive_ns": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
        }
    )


def dict_metadata_frame() -> pd.DataFrame:
    metadata = np.empty(3, dtype=object)
    metadata[:] = [{"order": "7", "nested": {"n": 1.5, "l": [1, "2"]}}, None, {}]
    return pd.DataFrame(
        {
            "user_id": pd.array(["U1", "U2", "U3"], dtype="string"),
            "time_utc": TIMES,
            "metadata": metadata,
        }
    )


def arrow_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.array(["U1", "U2", "U3"], dtype=pd.ArrowDtype(pa.string())),
            "time_utc": pd.array(TIMES, dtype=pd.ArrowDtype(pa.timestamp("ms", tz="UTC"))),
            "impact_type": pd.Series(["waste_removed", "kelp_planted", None]).astype(IMPACT_DTYPE),
            "amount": pd.array([3, None, 1], dtype="int64[pyarrow]"),
            "large": pd.array(["x", None, "z"], dtype=pd.ArrowDtype(pa.large_string())),
            "dictionary": pd.array(
                ["x", "y", "x"], dtype=pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string()))
            ),
            "map": pd.Series(
                [[("k", "v")], None, []], dtype=pd.ArrowDtype(pa.map_(pa.string(), pa.string()))
            ),
            "float": pd.array([1.5, None, 2.0], dtype="double[pyarrow]"),
        }
    )


HAND_BUILT = {
    "nullable": nullable_frame,
    "other-dtypes": other_dtypes_frame,
    "dict-metadata": dict_metadata_frame,
    "arrow": arrow_frame,
}


@pytest.mark.parametrize("build", HAND_BUILT.values(), ids=HAND_BUILT.keys())
@pytest.mark.parametrize("rows", [None, 0, 1], ids=["all-rows", "empty", "one-row"])
def test_round_trip_keeps_values_and_dtypes(
    store: ParquetCache, build: object, rows: int | None
) -> None:
    frame = build()  # type: ignore[operator]
    if rows is not None:
        frame = frame.iloc[:rows].reset_index(drop=True)
    key = make_key()
    store.put(key, frame)
    got = store.get(key)
    assert got is not None
    assert_same(got, frame)
    assert isinstance(got.index, pd.RangeIndex)


def test_round_trip_keeps_column_index_dtype_and_attrs(store: ParquetCache) -> None:
    frame = nullable_frame()
    frame.columns = pd.Index(list(frame.columns), dtype=object)
    frame.attrs = {"source": "sandbox", "pages": 3}
    store.put(make_key(), frame)
    got = store.get(make_key())
    assert got is not None
    assert got.columns.dtype == object
    assert_same(got, frame)


def test_dict_metadata_comes_back_as_new_dict_objects(store: ParquetCache) -> None:
    frame = dict_metadata_frame()
    store.put(make_key(), frame)
    got = store.get(make_key())
    assert got is not None
    assert got["metadata"].iloc[0] == {"order": "7", "nested": {"n": 1.5, "l": [1, "2"]}}
    assert got["metadata"].iloc[1] is None
    assert got["metadata"].iloc[0] is not frame["metadata"].iloc[0]


def test_frame_the_cache_cannot_store_warns_and_writes_nothing(store: ParquetCache) -> None:
    frame = pd.DataFrame({"when": pd.Series([dt.date(2024, 1, 1)], dtype=object)})
    with pytest.warns(CacheWarning, match="not cached: column 'when'"):
        store.put(make_key(), frame)
    assert store.get(make_key()) is None
    assert store.entries() == []


def test_column_without_an_arrow_form_is_not_cached(store: ParquetCache) -> None:
    frame = pd.DataFrame({"sparse": pd.arrays.SparseArray([0, 1])})
    with pytest.warns(CacheWarning, match="not cached: column 'sparse'"):
        store.put(make_key(), frame)
    assert store.get(make_key()) is None


def test_non_range_index_is_not_cached(store: ParquetCache) -> None:
    frame = nullable_frame().iloc[[2, 0]]
    with pytest.warns(CacheWarning, match="RangeIndex"):
        store.put(make_key(), frame)
    assert store.get(make_key()) is None


# -- keys ----------------------------------------------------------------------------------------


def test_digest_is_stable_and_ignores_page_size() -> None:
    key = make_key(query=normalize_query("records", page_size=10))
    assert key.digest == make_key(query=normalize_query("records", page_size=1000)).digest
    # Pinned: a changed digest silently orphans every user's cache, so it must be deliberate.
    assert key.digest == "2af75cb2dc4183493db7fcf7519da5964f8695727ca68f154b50652d36d2d638"


def test_digest_canonicalises_filter_by_order() -> None:
    one = make_key(query=normalize_query("records", filter_by=["waste_removed", "tree_planted"]))
    two = make_key(query=normalize_query("records", filter_by=["tree_planted", "waste_removed"]))
    assert one.digest == two.digest
    assert one.describe()["query"]["filter_by"] == ["tree_planted", "waste_removed"]


@pytest.mark.parametrize(
    "change",
    [
        {"fingerprint": "fedcba9876543210"},
        {"endpoint": "customer_records", "query": normalize_query("customer_records")},
        {"query": normalize_query("records", start_date="2024-01-01")},
        {"query": normalize_query("records", end_date="2024-01-01")},
        {"query": normalize_query("records", sort_order="desc")},
        {"query": normalize_query("records", filter_by="coral_restored")},
        {
            "endpoint": "customer_records",
            "query": normalize_query("customer_records", customer_email="a@example.com"),
        },
        {"max_records": 5},
        {"metadata": "dict"},
        {"metadata_prefix": "m_"},
        {"dtype_backend": "pyarrow"},
    ],
)
def test_digest_changes_with_everything_that_changes_the_result(change: dict) -> None:
    assert make_key(**change).digest != make_key().digest


@pytest.mark.parametrize("fingerprint", ["../../etc", "ABCDEF0123456789", "", "12"])
def test_key_refuses_a_fingerprint_that_is_not_hex(fingerprint: str) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        make_key(fingerprint=fingerprint)


def test_key_refuses_an_unknown_endpoint() -> None:
    with pytest.raises(ValueError, match="endpoint: 'users'"):
        make_key(endpoint="users")


# -- folders and permissions ---------------------------------------------------------------------


def test_resolve_cache_dir_uses_env_var_then_platform_folder(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPACTFRAME_CACHE_DIR", str(tmp_path / "from-env"))
    assert resolve_cache_dir(True) == tmp_path / "from-env"
    monkeypatch.delenv("IMPACTFRAME_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert resolve_cache_dir(True) == tmp_path / "xdg" / "impactframe"
    assert resolve_cache_dir(str(tmp_path / "given")) == tmp_path / "given"
    assert resolve_cache_dir(tmp_path / "as-path").is_dir()


@pytest.mark.parametrize("cache", [False, "", 0, None])
def test_resolve_cache_dir_refuses_bad_values(cache: object) -> None:
    with pytest.raises(ValueError, match=r"cache: .* expected True or a folder path"):
        resolve_cache_dir(cache)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_files_are_0600_and_folders_0700_whatever_the_umask(tmp_path: pathlib.Path) -> None:
    # The folders the cache creates; the user's folder keeps its mode (SPEC §6).
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    old = os.umask(0)
    try:
        store = ParquetCache(resolve_cache_dir(existing))
        store.put(make_key(), nullable_frame())
        store.put(make_key(), nullable_frame().iloc[:1])  # a replacement keeps the modes too
    finally:
        os.umask(old)
    paths = list(existing.rglob("*"))
    assert {p.suffix for p in paths if p.is_file()} == {".parquet", ".json", ".lock"}
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755
    for path in paths:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# -- corruption and versions ---------------------------------------------------------------------


def entry_dir(store: ParquetCache, key: CacheKey) -> pathlib.Path:
    return store.root / key.fingerprint / key.endpoint / key.digest


def manifest_of(store: ParquetCache, key: CacheKey) -> dict:
    return json.loads((entry_dir(store, key) / "manifest.json").read_text())


def rewrite_manifest(store: ParquetCache, key: CacheKey, **changes: object) -> None:
    manifest = manifest_of(store, key) | changes
    (entry_dir(store, key) / "manifest.json").write_text(json.dumps(manifest))


def test_missing_entry_or_manifest_is_a_silent_miss(store: ParquetCache) -> None:
    key = make_key()
    assert store.get(key) is None
    store.put(key, nullable_frame())
    (entry_dir(store, key) / "manifest.json").unlink()
    assert store.get(key) is None


def test_flipped_byte_in_the_data_is_detected(store: ParquetCache) -> None:
    key = make_key()
    store.put(key, nullable_frame())
    data = entry_dir(store, key) / manifest_of(store, key)["data_file"]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match="does not match the manifest's sha256"):
        assert store.get(key) is None


def test_unreadable_parquet_with_a_matching_sha_is_corrupt(store: ParquetCache) -> None:
    key = make_key()
    store.put(key, nullable_frame())
    garbage = b"PAR1 not parquet at all"
    sha = hashlib.sha256(garbage).hexdigest()
    name = f"data-{sha}.parquet"
    (entry_dir(store, key) / name).write_bytes(garbage)
    rewrite_manifest(store, key, data_file=name, data_sha256=sha, data_bytes=len(garbage))
    with pytest.warns(CacheWarning, match="cannot be read back"):
        assert store.get(key) is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "manifest.json").write_text("{not json"), "manifest is unreadable"),
        (lambda d: (d / "manifest.json").write_text("[]"), "manifest is unreadable"),
        (
            lambda d: [p.unlink() for p in d.glob("data-*.parquet")],
            "data file is missing",
        ),
    ],
    ids=["garbage-manifest", "manifest-not-an-object", "data-file-gone"],
)
def test_damaged_entry_warns_and_misses(store: ParquetCache, damage: object, message: str) -> None:
    key = make_key()
    store.put(key, nullable_frame())
    damage(entry_dir(store, key))  # type: ignore[operator]
    with pytest.warns(CacheWarning, match=message) as record:
        assert store.get(key) is None
    assert len(record) == 1  # one warning per get, not one per problem


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_version": 0}, "schema version 0"),
        ({"schema_version": SCHEMA_VERSION + 1}, f"schema version {SCHEMA_VERSION + 1}"),
        ({"digest": "0" * 64}, "another query"),
        ({"data_file": "../../escape.parquet"}, "unexpected data file"),
        ({"data_bytes": 1}, "sha256"),
        ({"layout": {"columns": [], "rows": 3, "columns_dtype": "str"}}, "cannot be read"),
    ],
    ids=["old-version", "newer-version", "other-digest", "bad-name", "bad-size", "bad-layout"],
)
def test_manifest_that_does_not_fit_warns_and_misses(
    store: ParquetCache, changes: dict, message: str
) -> None:
    key = make_key()
    store.put(key, nullable_frame())
    rewrite_manifest(store, key, **changes)
    with pytest.warns(CacheWarning, match=message):
        assert store.get(key) is None


def test_tampered_dtype_in_layout_is_never_served(store: ParquetCache) -> None:
    key = make_key()
    store.put(key, nullable_frame())
    manifest = manifest_of(store, key)
    for spec in manifest["layout"]["columns"]:
        if spec["name"] == "impact_type":
            spec["categories"] = ["tree_planted"]  # would turn other values into NaN
    rewrite_manifest(store, key, layout=manifest["layout"])
    with pytest.warns(CacheWarning, match="cannot be read back"):
        assert store.get(key) is None


def test_cache_warning_is_an_impactframe_warning() -> None:
    assert issubclass(CacheWarning, ImpactFrameWarning)


# -- manifests, replacement, atomicity -----------------------------------------------------------


def test_manifest_records_what_the_issue_lists(store: ParquetCache) -> None:
    import impactframe

    key = make_key(query=normalize_query("records", filter_by="tree_planted", page_size=7))
    store.put(key, nullable_frame())
    manifest = manifest_of(store, key)
    data = entry_dir(store, key) / manifest["data_file"]
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["package_version"] == impactframe.__version__
    assert manifest["endpoint"] == "records"
    assert manifest["query"] == {
        "filter_by": ["tree_planted"],
        "start_date": None,
        "end_date": None,
        "sort_order": "asc",
        "customer_email": None,
    }
    assert manifest["max_records"] is None
    assert (manifest["metadata"], manifest["metadata_prefix"]) == ("columns", "metadata_")
    assert manifest["dtype_backend"] == "numpy_nullable"
    assert manifest["rows"] == 3
    assert manifest["last_synced_day"] == "2024-01-03"
    assert manifest["created"] == manifest["updated"]
    assert manifest["data_bytes"] == data.stat().st_size
    assert manifest["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()


def test_put_replaces_the_entry_and_leaves_one_data_file(store: ParquetCache) -> None:
    key = make_key()
    store.put(key, nullable_frame())
    first = manifest_of(store, key)
    store.put(key, nullable_frame().iloc[:2].reset_index(drop=True))
    second = manifest_of(store, key)
    assert second["rows"] == 2
    assert second["created"] == first["created"]
    assert second["updated"] >= first["updated"]
    assert sorted(p.name for p in entry_dir(store, key).iterdir()) == sorted(
        ["manifest.json", second["data_file"]]
    )
    got = store.get(key)
    assert got is not None
    assert len(got) == 2


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


def test_crash_before_the_manifest_is_replaced_keeps_the_old_entry(
    store: ParquetCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key()
    old = nullable_frame()
    store.put(key, old)
    real_replace = os.replace

    def crashing_replace(src: object, dst: object) -> None:
        if pathlib.Path(str(dst)).name == "manifest.json":
            raise Crash
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(Crash):
        store.put(key, nullable_frame().iloc[:1].reset_index(drop=True))
    monkeypatch.setattr(os, "replace", real_replace)
    got = store.get(key)
    assert got is not None
    assert_same(got, old)
    # The next successful write sweeps away the orphaned data file.
    store.put(key, old)
    assert len(list(entry_dir(store, key).glob("data-*.parquet"))) == 1
    assert not list(entry_dir(store, key).glob(".tmp-*"))


def test_failing_disk_warns_keeps_old_entry_and_leaves_no_temp_files(
    store: ParquetCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key()
    old = nullable_frame()
    store.put(key, old)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.warns(CacheWarning, match="could not be written.*No space left"):
        store.put(key, old.iloc[:1].reset_index(drop=True))
    monkeypatch.undo()
    got = store.get(key)
    assert got is not None
    assert_same(got, old)
    assert not list(entry_dir(store, key).glob(".tmp-*"))


# -- entries and clear ---------------------------------------------------------------------------


def test_entries_and_clear(store: ParquetCache) -> None:
    keys = [make_key(), make_key(max_records=1), make_key(fingerprint="fedcba9876543210")]
    for key in keys:
        store.put(key, nullable_frame())
    foreign = store.root / "notes.txt"
    foreign.write_text("not ours")
    entries = store.entries()
    assert sorted(e["digest"] for e in entries) == sorted(k.digest for k in keys)
    assert all("layout" not in e and pathlib.Path(e["path"]).is_dir() for e in entries)
    assert store.clear() == 3
    assert store.entries() == []
    assert all(store.get(k) is None for k in keys)
    assert sorted(p.name for p in store.root.iterdir()) == ["notes.txt"]
    assert store.clear() == 0


def test_entries_skips_unreadable_manifests(store: ParquetCache) -> None:
    store.put(make_key(), nullable_frame())
    store.put(make_key(max_records=2), nullable_frame())
    (entry_dir(store, make_key()) / "manifest.json").write_text("{")
    assert [e["max_records"] for e in store.entries()] == [2]


# -- locks ---------------------------------------------------------------------------------------


def test_lock_is_reentrant_in_one_thread_and_put_takes_it(store: ParquetCache) -> None:
    key = make_key()
    with store.lock(key), store.lock(key):
        store.put(key, nullable_frame())
        assert store.get(key) is not None


def test_lock_excludes_other_threads(store: ParquetCache) -> None:
    key = make_key()
    inside = threading.Event()
    events: list[str] = []

    def other() -> None:
        inside.wait(5)
        with store.lock(key):
            events.append("other")

    thread = threading.Thread(target=other)
    with store.lock(key):
        thread.start()
        inside.set()
        thread.join(0.2)
        assert thread.is_alive()  # blocked while we hold the lock
        events.append("owner")
    thread.join(5)
    assert events == ["owner", "other"]


def test_two_threads_putting_the_same_key_both_succeed(store: ParquetCache) -> None:
    key = make_key()
    frames = [nullable_frame(), nullable_frame().iloc[:1].reset_index(drop=True)]
    errors: list[BaseException] = []

    def writer(frame: pd.DataFrame) -> None:
        try:
            for _ in range(5):
                with store.lock(key):
                    got = store.get(key)
                    assert got is None or any(got.equals(f) for f in frames)
                    store.put(key, frame)
        except BaseException as exc:  # reported below, with the failing thread's error
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f,)) for f in frames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    got = store.get(key)
    assert got is not None
    assert any(got.equals(f) for f in frames)
    assert len(list(entry_dir(store, key).glob("data-*.parquet"))) == 1


def test_reader_without_the_lock_sees_old_or_new_never_a_mix(store: ParquetCache) -> None:
    key = make_key()
    frames = [nullable_frame(), nullable_frame().iloc[1:].reset_index(drop=True)]
    store.put(key, frames[0])
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(40):
                store.put(key, frames[i % 2])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads < 10:
        got = store.get(key)  # a CacheWarning here would fail the test (warnings are errors)
        assert got is not None
        assert any(got.equals(f) for f in frames)
        reads += 1
    thread.join(30)
    assert errors == []


def test_reader_that_loses_a_race_with_a_writer_reads_again(
    store: ParquetCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deterministic form of the race above: a writer replaces the entry (and deletes the old
    # data file) right after this reader has read the old manifest.
    key = make_key()
    old, new = nullable_frame(), nullable_frame().iloc[1:].reset_index(drop=True)
    store.put(key, old)
    real_read_bytes = pathlib.Path.read_bytes
    raced: list[str] = []

    def read_bytes(path: pathlib.Path) -> bytes:
        if path.name.startswith("data-") and not raced:
            raced.append(path.name)
            store.put(key, new)
        return real_read_bytes(path)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    got = store.get(key)
    assert raced
    assert got is not None
    assert_same(got, new)


CHILD = textwrap.dedent(
    """
    import pathlib, sys
    sys.path.insert(0, {repo!r})
    import pandas as pd
    from impactframe._cache._store import CacheKey, ParquetCache
    from impactframe._params import normalize_query
    store = ParquetCache(pathlib.Path({root!r}))
    key = CacheKey({fingerprint!r}, "records", normalize_query("records"), None,
                   "columns", "metadata_", "numpy_nullable")
    rows = int(sys.argv[1])
    frame = pd.DataFrame({{"n": pd.array(range(rows), dtype="Int64")}})
    for _ in range(20):
        with store.lock(key):
            got = store.get(key)
            assert got is None or list(got["n"]) == list(range(len(got))), got
            store.put(key, frame)
    print("ok")
    """
)


def test_two_processes_putting_the_same_key_both_succeed(store: ParquetCache) -> None:
    code = CHILD.format(repo=str(REPO), root=str(store.root), fingerprint=FINGERPRINT)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(rows)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rows in (1000, 3)
    ]
    results = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], results
    assert [out.strip() for out, _ in results] == ["ok", "ok"]
    got = store.get(make_key())
    assert got is not None
    assert len(got) in (1000, 3)
    assert list(got["n"]) == list(range(len(got)))


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_lock_excludes_another_process(store: ParquetCache) -> None:
    key = make_key()
    code = CHILD.split("rows =")[0] + "with store.lock(key):\n    print('acquired', flush=True)\n"
    code = code.format(repo=str(REPO), root=str(store.root), fingerprint=FINGERPRINT)
    with store.lock(key):
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 1.5  # long enough for the child to import and block
        while time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert child.poll() is None, child.communicate()
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.strip() == "acquired"


# -- refresh_start -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.datetimes(
            min_value=dt.datetime(2000, 1, 1),
            max_value=dt.datetime(2100, 1, 1),
            timezones=st.just(dt.UTC),
        ),
        max_size=20,
    ),
    st.booleans(),
)
def test_refresh_start_is_the_day_of_the_newest_time(times: list[dt.datetime], arrow: bool) -> None:
    series = pd.Series(pd.to_datetime(times, utc=True)).astype("datetime64[ms, UTC]")
    if arrow:
        series = series.astype(pd.ArrowDtype(pa.timestamp("ms", tz="UTC")))
    today = dt.date(2050, 6, 1)
    # A day after today (a skewed clock at the source) never moves the start past today.
    expected = min(max(times).astimezone(dt.UTC).date(), today) if times else None
    if times:
        # ms precision can move 23:59:59.9999 back, never across a day
        assert refresh_start(pd.DataFrame({"time_utc": series}), today=today) == expected
    else:
        assert refresh_start(pd.DataFrame({"time_utc": series})) is None


def test_refresh_start_ignores_row_order() -> None:
    frame = nullable_frame().iloc[::-1].reset_index(drop=True)
    assert refresh_start(frame) == dt.date(2024, 1, 3)


# -- frames built by the frame module from sandbox records ---------------------------------------

METADATA_MODES = ("columns", "dict", "json", "drop")
BACKENDS = ("numpy_nullable", "pyarrow")


def build(records: list[dict], endpoint: str = "records", **options: str) -> pd.DataFrame:
    """records_to_frame, with the drift warnings the tests provoke on purpose silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaDriftWarning)
        return records_to_frame(records, endpoint, **options)


def with_drift(records: list[dict]) -> list[dict]:
    """Copies of `records` with an unknown field, a float field and a new impact type."""
    out = [json.loads(json.dumps(r)) for r in records]
    for i, record in enumerate(out):
        if i % 5 == 2:
            # alone among unknown fields, so the builder can tell it is the record's impact
            for impact in IMPACT_TYPES:
                record.pop(impact, None)
            record["kelp_planted"] = i
            continue
        if i % 3 == 0:
            record["loyalty_tier"] = "gold" if i % 2 else "silver"
        if i % 4 == 1:
            record["score"] = i / 8
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metadata", METADATA_MODES)
@pytest.mark.parametrize("endpoint", ["records", "customer_records"])
def test_round_trip_of_built_frames(
    store: ParquetCache, endpoint: str, metadata: str, backend: str
) -> None:
    records = with_drift(generate_records(60, seed=5, customers=endpoint == "customer_records"))
    options = {"metadata": metadata, "dtype_backend": backend}
    key = make_key(
        endpoint=endpoint,
        query=normalize_query(endpoint),
        metadata=metadata,
        dtype_backend=backend,
    )
    for frame in (build(records, endpoint, **options), empty_frame(endpoint, **options)):
        store.put(key, frame)
        got = store.get(key)
        assert got is not None
        assert_same(got, frame)
        validate(got, endpoint, dtype_backend=backend, metadata=metadata)


# -- merge ---------------------------------------------------------------------------------------


def day_of(record: dict) -> dt.date:
    return dt.date.fromisoformat(record["time_utc"][:10])


def refresh_by_hand(
    old: list[dict], now: list[dict], sort_order: str, **options: str
) -> tuple[pd.DataFrame, pd.DataFrame, dt.date | None]:
    """(merge of a cache of `old` with what a refresh fetches from `now`, full load of `now`)."""
    options = {"metadata": "columns", "dtype_backend": "numpy_nullable", **options}
    order = (lambda rs: rs) if sort_order == "asc" else (lambda rs: rs[::-1])
    cached = build(order(old), **options)
    since = refresh_start(cached)
    full = build(order(now), **options)
    if since is None:
        return full, full, None
    fresh = build(order([r for r in now if day_of(r) >= since]), **options)
    merged = merge(
        cached,
        fresh,
        since=since,
        endpoint="records",
        metadata_prefix="metadata_",
        sort_order=sort_order,
        **options,
    )
    return merged, full, since


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 40),
    seed=st.integers(0, 5),
    cut=st.floats(0, 1),
    added=st.integers(0, 10),
    sort_order=st.sampled_from(["asc", "desc"]),
    metadata=st.sampled_from(METADATA_MODES),
    backend=st.sampled_from(BACKENDS),
    drift=st.booleans(),
)
def test_refresh_merge_equals_a_full_load(
    n: int,
    seed: int,
    cut: float,
    added: int,
    sort_order: str,
    metadata: str,
    backend: str,
    drift: bool,
) -> None:
    # The cache holds the records up to some moment; by the refresh, more have arrived
    # (some on the newest cached day: those must be picked up too).
    everything = generate_records(n + added, seed=seed, start="2024-01-01", end="2024-01-20")
    if drift:
        everything = with_drift(everything)
    old = everything[: int(n * cut)]
    merged, full, _ = refresh_by_hand(
        old, everything, sort_order, metadata=metadata, dtype_backend=backend
    )
    assert_same(merged, full)
    assert isinstance(merged.index, pd.RangeIndex)


def test_merge_replaces_the_rows_of_the_refreshed_day() -> None:
    records = generate_records(30, seed=2, start="2024-01-01", end="2024-01-05")
    changed = json.loads(json.dumps(records))
    last_day = day_of(records[-1])
    for record in changed:
        if day_of(record) == last_day:
            record["category"] = "changed-on-the-server"
    changed.pop(-1)  # and one record of that day was deleted
    merged, full, since = refresh_by_hand(records, changed, "asc")
    assert since == last_day
    assert_same(merged, full)
    assert len(merged) == 29


def test_merge_drops_columns_and_types_only_the_replaced_rows_had() -> None:
    # The server changed the newest cached day's records: the cache had a new impact type,
    # a drift field and a metadata key there, the refreshed records have none of them.
    records = generate_records(10, seed=3, start="2024-01-01", end="2024-01-02")
    old = json.loads(json.dumps(records))
    last_day = [r for r in old if day_of(r) == day_of(old[-1])]
    assert len(last_day) >= 2
    for impact in IMPACT_TYPES:
        last_day[-1].pop(impact, None)
    last_day[-1]["kelp_planted"] = 4
    last_day[-2]["loyalty_tier"] = "gold"
    last_day[-2]["metadata"] = {"only_here": "x"}
    merged, full, _ = refresh_by_hand(old, records, "asc")
    assert "loyalty_tier" not in merged
    assert "kelp_planted" not in merged
    assert "metadata_only_here" not in merged
    assert list(merged["impact_type"].cat.categories) == list(IMPACT_TYPES)
    assert_same(merged, full)


def test_merge_unions_new_types_and_columns_in_order_of_appearance() -> None:
    records = generate_records(40, seed=4, start="2024-01-01", end="2024-01-10")
    now = records[:20] + with_drift(records[20:])  # the drift arrives with the new records
    for sort_order in ("asc", "desc"):
        merged, full, _ = refresh_by_hand(records[:20], now, sort_order)
        assert {"kelp_planted", "loyalty_tier", "score"} <= set(merged.columns)
        assert "kelp_planted" in merged["impact_type"].cat.categories
        assert_same(merged, full)


def test_merge_gives_a_drift_column_of_ints_and_floats_the_float_type() -> None:
    records = generate_records(12, seed=6, start="2024-01-01", end="2024-01-04")
    newest = day_of(records[-1])
    for i, record in enumerate(records):
        record["score"] = i if day_of(record) < newest else i + 0.5
    merged, full, _ = refresh_by_hand(records[:-1], records, "asc")
    assert merged["score"].dtype == "Float64"
    assert_same(merged, full)


def test_merge_turns_a_drift_column_of_text_and_numbers_into_text() -> None:
    records = generate_records(12, seed=6, start="2024-01-01", end="2024-01-04")
    newest = day_of(records[-1])
    for i, record in enumerate(records):
        record["ref"] = i if day_of(record) < newest else f"R{i}"
    for backend in BACKENDS:
        merged, full, _ = refresh_by_hand(records, records, "asc", dtype_backend=backend)
        assert merged["ref"].dtype == full["ref"].dtype
        assert merged["ref"].iloc[0] == "0"  # the number's text, as the full load has it
        assert merged["ref"].iloc[-1] == "R11"
        assert_same(merged, full)


def test_merge_infers_the_order_when_not_told() -> None:
    records = generate_records(20, seed=7, start="2024-01-01", end="2024-01-06")
    cached = build(records[:15][::-1])
    since = refresh_start(cached)
    assert since is not None
    fresh = build([r for r in records if day_of(r) >= since][::-1])
    merged = merge(
        cached,
        fresh,
        since=since,
        endpoint="records",
        metadata="columns",
        metadata_prefix="metadata_",
        dtype_backend="numpy_nullable",
    )
    assert_same(merged, build(records[::-1]))


def test_merge_refuses_an_unknown_sort_order() -> None:
    frame = build(generate_records(3))
    with pytest.raises(ValueError, match="sort_order: 'up'"):
        merge(
            frame,
            frame,
            since=dt.date(2024, 1, 1),
            endpoint="records",
            metadata="columns",
            metadata_prefix="metadata_",
            dtype_backend="numpy_nullable",
            sort_order="up",
        )


# -- end to end: the loaders against the sandbox ------------------------------------------------

SECRET_KEY = "sk-cache-test-7f3a9c1e5b"


@pytest.fixture
def server(make_sandbox: Callable[..., SandboxServer]) -> SandboxServer:
    records = generate_records(240, seed=8, start="2024-01-01", end="2024-02-29")
    customers = generate_records(120, seed=9, customers=True, start="2024-01-01", end="2024-02-29")
    return make_sandbox(records=records, customer_records=customers, api_key=SECRET_KEY)


def load(server: SandboxServer, endpoint: str = "records", **options: object) -> pd.DataFrame:
    client = Client(api_key=server.api_key, base_url=server.url, max_retries=2)
    client._sleep = lambda seconds: None  # retries never sleep in tests
    loader = load_records if endpoint == "records" else load_customer_records
    options.setdefault("page_size", 50)
    try:
        return loader(client=client, progress=False, **options)  # type: ignore[arg-type]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("endpoint", "options"),
    [
        ("records", {}),
        ("records", {"metadata": "dict", "dtype_backend": "pyarrow", "sort_order": "desc"}),
        ("records", {"filter_by": ["tree_planted", "money_donated"], "start_date": "2024-02-01"}),
        ("customer_records", {"metadata": "json"}),
        ("records", {"start_date": "2030-01-01"}),  # an empty result is cached too
    ],
    ids=["default", "dict-pyarrow-desc", "filtered", "customers-json", "empty"],
)
def test_repeated_query_is_served_with_zero_requests(
    server: SandboxServer, tmp_path: pathlib.Path, endpoint: str, options: dict
) -> None:
    network = load(server, endpoint, **options)
    first = load(server, endpoint, cache=tmp_path, **options)
    assert_same(first, network)
    server.clear_log()
    again = load(server, endpoint, cache=tmp_path, page_size=7, **options)  # page_size: same key
    assert server.requests == []
    assert_same(again, network)


def test_refresh_fetches_from_the_newest_cached_day_and_equals_a_full_load(
    server: SandboxServer, tmp_path: pathlib.Path
) -> None:
    old = server.served_records()
    for sort_order in ("asc", "desc"):
        server.set_records(old)
        cache = tmp_path / sort_order
        cached = load(server, cache=cache, sort_order=sort_order)
        newest = refresh_start(cached)
        assert newest == day_of(old[-1])
        # New records: later on the newest cached day, and on the days after it.
        late = generate_records(5, seed=8, start=newest.isoformat(), end=newest.isoformat())
        late = [r for r in late if r["time_utc"] > old[-1]["time_utc"]]
        later = generate_records(30, seed=8, start="2024-03-01", end="2024-03-31")
        server.set_records(old + late + later)
        server.clear_log()
        refreshed = load(server, cache=cache, sort_order=sort_order, refresh=True)
        assert server.requests
        assert {tuple(r.params.get("start_date", [])) for r in server.requests} == {
            (newest.isoformat(),)
        }
        assert_same(refreshed, load(server, sort_order=sort_order))
        assert len(refreshed) == len(old) + len(late) + len(later)
        server.clear_log()
        assert_same(load(server, cache=cache, sort_order=sort_order), refreshed)
        assert server.requests == []


def test_refresh_full_rebuilds(server: SandboxServer, tmp_path: pathlib.Path) -> None:
    old = server.served_records()
    load(server, cache=tmp_path)
    server.set_records(old[1:])  # a record of an old day disappeared: only a rebuild sees it
    assert len(load(server, cache=tmp_path, refresh=True)) == len(old)
    server.clear_log()
    rebuilt = load(server, cache=tmp_path, refresh="full")
    # The whole range again (the date windows of concurrency="auto" follow a first request
    # for all of it; a refresh would start at the newest cached day).
    assert "start_date" not in server.requests[0].params
    assert_same(rebuilt, load(server))
    assert len(rebuilt) == len(old) - 1


def test_failed_refresh_leaves_the_old_entry(server: SandboxServer, tmp_path: pathlib.Path) -> None:
    cached = load(server, cache=tmp_path)
    server.inject(Fault("status", status=503), times=None)
    with pytest.raises(APIError):
        load(server, cache=tmp_path, refresh=True)
    with pytest.raises(APIError):
        load(server, cache=tmp_path, refresh="full")
    server.clear_faults()
    server.clear_log()
    assert_same(load(server, cache=tmp_path), cached)
    assert server.requests == []


def test_corrupt_entry_is_refetched_with_a_warning(
    server: SandboxServer, tmp_path: pathlib.Path
) -> None:
    network = load(server)
    load(server, cache=tmp_path)
    (data,) = tmp_path.rglob("data-*.parquet")
    data.write_bytes(data.read_bytes()[:-100])
    server.clear_log()
    with pytest.warns(CacheWarning, match="does not match") as caught:
        again = load(server, cache=tmp_path)
    assert caught[0].filename == __file__  # the warning points at the caller of the loader
    assert server.requests
    assert_same(again, network)
    server.clear_log()
    assert_same(load(server, cache=tmp_path), network)  # and the entry was repaired
    assert server.requests == []


@pytest.mark.parametrize("where", ["a file", "under a file", "env var names a file"])
def test_an_unusable_cache_folder_is_a_value_error_before_any_request(
    server: SandboxServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    cache: object = {"a file": a_file, "under a file": a_file / "sub"}.get(where, True)
    monkeypatch.setenv("IMPACTFRAME_CACHE_DIR", str(a_file))
    server.clear_log()
    with pytest.raises(ValueError, match=r"^cache.*cannot be used as the cache folder") as info:
        load(server, cache=cache)
    message = str(info.value)
    assert f"{str(a_file)!r} is a file, not a folder" in message
    assert "expected a folder path (created if missing), True" in message
    assert "or False (no cache)" in message
    if cache is True:
        assert "IMPACTFRAME_CACHE_DIR" in message
    assert server.requests == []
    assert a_file.read_text() == ""  # nothing written over it


def test_a_file_where_the_account_folder_goes_loads_without_the_cache(
    server: SandboxServer, tmp_path: pathlib.Path
) -> None:
    network = load(server)
    client = Client(api_key=server.api_key, base_url=server.url)
    (tmp_path / client.fingerprint).write_text("in the way")
    client.close()
    server.clear_log()
    with pytest.warns(CacheWarning, match="not using the cache: its entry cannot be locked") as w:
        frame = load(server, cache=tmp_path)
    assert [x.filename for x in w] == [__file__]  # one warning, at the caller of the loader
    assert server.requests  # fetched
    assert_same(frame, network)
    assert (tmp_path / client.fingerprint).read_text() == "in the way"


def test_a_file_where_the_entry_folder_goes_loads_with_warnings(
    server: SandboxServer, tmp_path: pathlib.Path
) -> None:
    network = load(server)
    load(server, cache=tmp_path)
    (entry,) = (p.parent for p in tmp_path.rglob("manifest.json"))
    shutil.rmtree(entry)
    entry.write_text("in the way")  # the lock (beside it) works; reading and writing do not
    server.clear_log()
    with pytest.warns(CacheWarning) as caught:
        frame = load(server, cache=tmp_path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "manifest cannot be read" in messages[0]
    assert "not cached: the cache entry could not be written" in messages[1]
    assert {w.filename for w in caught} == {__file__}
    assert server.requests
    assert_same(frame, network)


def test_cache_true_honours_the_env_var(
    server: SandboxServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPACTFRAME_CACHE_DIR", str(tmp_path / "env-cache"))
    frame = load(server, cache=True)
    entries = ParquetCache(tmp_path / "env-cache").entries()
    assert [e["rows"] for e in entries] == [len(frame)]
    server.clear_log()
    load(server, cache=True)
    assert server.requests == []


def test_the_key_never_reaches_the_cache_or_the_logs(
    server: SandboxServer, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    load(server, cache=tmp_path, metadata="dict")
    load(server, cache=tmp_path, refresh=True, metadata="dict")
    (data,) = tmp_path.rglob("data-*.parquet")
    data.write_bytes(b"corrupt")
    with pytest.warns(CacheWarning) as caught:
        load(server, cache=tmp_path, metadata="dict")
    store = ParquetCache(tmp_path)
    texts = [str(w.message) for w in caught] + [caplog.text, repr(store), str(store.entries())]
    for path in tmp_path.rglob("*"):
        texts.append(str(path))
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    assert len(texts) > 5
    assert all(SECRET_KEY not in text for text in texts)
    assert "in entry" in caplog.text  # the cache's own log lines were captured
