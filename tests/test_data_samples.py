"""The generated Parquet samples in data-samples/ (SPEC §11): dtypes, schema, freshness."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from impactframe._constants import IMPACT_TYPES
from impactframe.schemas import validate

SAMPLES = Path(__file__).resolve().parent.parent / "data-samples"
FILES = {
    "records": SAMPLES / "records_sample.parquet",
    "customer_records": SAMPLES / "customer_records_sample.parquet",
}
CUSTOMER_COLUMNS = ["customer_id", "customer_email", "customer_name"]
IMPACT_COLUMNS = list(IMPACT_TYPES)


def documented_dtypes() -> dict[str, str]:
    """The dtype of each column as data-samples/README.md's table states it."""
    dtypes: dict[str, str] = {}
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    for row in re.findall(r"^\| (`[^|]+`) \| `([^`]+)` \|", readme, flags=re.MULTILINE):
        names, dtype = row
        for name in re.findall(r"`([^`]+)`", names):
            dtypes[name] = dtype
    return dtypes


def expected_columns(endpoint: str, frame: pd.DataFrame) -> list[str]:
    metadata = sorted(c for c in frame.columns if c.startswith("metadata_"))
    customer = CUSTOMER_COLUMNS if endpoint == "customer_records" else []
    fixed = ["user_id", *customer, "time_utc", "impact_type", "amount", *IMPACT_COLUMNS]
    return [*fixed, "category", *metadata]


@pytest.mark.parametrize("endpoint", list(FILES))
def test_samples_read_back_with_the_documented_dtypes(endpoint: str) -> None:
    frame = pd.read_parquet(FILES[endpoint])
    assert len(frame) == 200
    assert list(frame.columns) == expected_columns(endpoint, frame)
    documented = documented_dtypes()
    assert {str(frame[c].dtype) for c in frame.columns} <= set(documented.values())
    for column in frame.columns:
        assert str(frame[column].dtype) == documented[column], column
    assert list(frame["impact_type"].cat.categories) == IMPACT_COLUMNS
    assert set(frame["impact_type"].astype(str)) == set(IMPACT_COLUMNS)  # every type occurs
    assert isinstance(frame.index, pd.RangeIndex)
    assert frame["time_utc"].is_monotonic_increasing
    validate(frame, endpoint)  # raises impactframe.ValidationError if not


def test_customer_sample_has_customers_with_and_without_names() -> None:
    frame = pd.read_parquet(FILES["customer_records"])
    assert frame["customer_id"].notna().all()
    assert frame["customer_name"].isna().any()
    assert frame["customer_name"].notna().any()


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_samples_regenerates_the_committed_files(tmp_path: Path) -> None:
    script = _load_script()
    assert script.main(["--out", str(tmp_path)]) == 0
    for committed in FILES.values():
        fresh = tmp_path / committed.name
        pd.testing.assert_frame_equal(pd.read_parquet(fresh), pd.read_parquet(committed))


def test_readme_cites_nothing_users_do_not_have() -> None:
    # SPEC.md is the project's internal contract; users of the samples never see it.
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    assert "SPEC" not in readme
