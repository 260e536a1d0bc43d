"""No first-call tax and no noise from optional libraries (SPEC §14; issue 13, issue 15).

Each check runs in a fresh interpreter (what is imported, warned or printed is process state),
against the session sandbox, which for that interpreter is a server in another process.
pandera on its own imports dask on the first schema build and tries ``import pyspark.pandas``
when it is imported (a ``FutureWarning`` on pandas 3): the tests hold where both are installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from impactframe.sandbox import SandboxServer

OPTIONAL = ("dask", "pyspark", "modin", "polars")
needs_dask_and_pyspark = pytest.mark.skipif(
    importlib.util.find_spec("dask") is None or importlib.util.find_spec("pyspark") is None,
    reason="dask and pyspark must be installed for pandera to reach for them",
)


def run(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh ``python -W error``; the environment without Spark's variables."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


LOAD_AND_REPORT = """
    import json, os, sys
    import impactframe as ifr
    after_import = set(sys.modules)
    url = sys.argv[1]
    ifr.load_customer_records(api_key="sandbox-key", base_url=url, progress=False)
    after_first = set(sys.modules)
    ifr.load_records(api_key="sandbox-key", base_url=url, progress=False,
                     metadata="json", dtype_backend="pyarrow")
    ifr.RecordsSchema.to_schema(); ifr.CustomerRecordsSchema.to_schema()
    print(json.dumps({
        "optional": sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL),
        "first_call_imports": sorted(after_first - after_import),
        "environment": {
            k: os.environ.get(k) for k in ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")
        },
    }))
""".replace("OPTIONAL", repr(OPTIONAL))


@needs_dask_and_pyspark
def test_import_is_silent_under_warnings_as_errors() -> None:
    done = run("import impactframe")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@needs_dask_and_pyspark
def test_a_load_imports_no_optional_library_and_nothing_on_the_first_call(
    sandbox: SandboxServer,
) -> None:
    done = run(LOAD_AND_REPORT, sandbox.url)
    assert (done.returncode, done.stderr) == (0, "")
    report = json.loads(done.stdout)
    assert report["optional"] == []
    # Whatever the first call needs is imported with the package: the first call pays
    # nothing the second does not (the schema backends were 0.2 s, dask 0.9 s).
    assert report["first_call_imports"] == []
    # pandera sets these for pandas-on-Spark; left behind they would bind a later Spark
    # driver of the process to loopback.
    assert report["environment"] == {"SPARK_LOCAL_IP": None, "PYARROW_IGNORE_TIMEZONE": None}


@needs_dask_and_pyspark
def test_the_users_own_pyspark_imports_still_work() -> None:
    done = run(
        """
        import sys
        import impactframe
        import pyspark, pyspark.sql
        assert sys.modules["pyspark"] is pyspark and pyspark.__version__
        print("ok")
        """
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "ok", "")


@needs_dask_and_pyspark
def test_pyspark_imported_before_impactframe_is_left_as_it_is(sandbox: SandboxServer) -> None:
    done = run(
        """
        import sys
        import pyspark.sql
        import impactframe as ifr
        ifr.load_records(api_key="sandbox-key", base_url=sys.argv[1], progress=False)
        print(sorted(m for m in sys.modules if m.startswith("pyspark.pandas")))
        """,
        sandbox.url,
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "[]", "")


@needs_dask_and_pyspark
def test_the_cli_is_silent_under_warnings_as_errors() -> None:
    done = run("from impactframe.cli import main; main(['--version'])")
    assert done.returncode == 0
    assert done.stderr == ""
    assert done.stdout.strip().endswith(importlib.metadata.version("impactframe"))


SIGNATURES = """
    import itertools, json, re, warnings
    from pandera.api.pandas.model import DataFrameModel
    import pandera.pandas as pa
    from impactframe import schemas
    from impactframe._validation import ExactDtype
    from impactframe._dtypes import METADATA_COLUMN, METADATA_DTYPES, backend_dtype, fixed_columns
    from impactframe._dtypes import fixed_dtypes

    def signature(schema):
        columns = {
            name: (str(c.dtype), type(c.dtype).__name__, c.nullable, c.required, c.regex,
                   c.unique, [(k.name, k.element_wise, k.ignore_na, sorted(k.statistics.items()))
                              for k in c.checks])
            for name, c in schema.columns.items()
        }
        return json.dumps(
            [list(columns.items()), [(k.name, k.element_wise) for k in schema.checks], schema.name,
             schema.strict, schema.coerce, schema.unique_column_names, schema.ordered,
             str(schema.index)],
            default=str,
        )

    def pandera_build(model):
        # pandera's own build from the class annotations (imports dask: not on the hot path)
        config = model.__config__
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyspark.pandas on pandas 3, reached by pandera
            return DataFrameModel.build_schema_.__func__(
                model, name=config.name, strict=config.strict, coerce=config.coerce,
                unique_column_names=config.unique_column_names,
            )

    def derived(endpoint, backend, metadata, prefix):
        # what validate() used before: the class's schema, adjusted to the options
        schema = pandera_build(schemas._MODELS[endpoint]).update_columns({
            name: {"dtype": ExactDtype(dtype)}
            for name, dtype in fixed_dtypes(endpoint, backend).items() if name != "impact_type"
        }).remove_columns([r"^metadata_.+"])
        if metadata == "drop":
            return schema
        dtype = ExactDtype(backend_dtype(METADATA_DTYPES[metadata], backend))
        if metadata == "columns":
            fixed = "|".join(map(re.escape, fixed_columns(endpoint)))
            regex = f"^(?!(?:{fixed})$){re.escape(prefix)}.+"
            column = pa.Column(dtype, nullable=True, regex=True, required=False, name=regex)
            schema = schema.add_columns({regex: column})
        elif metadata in ("dict", "json"):
            schema = schema.add_columns({METADATA_COLUMN: pa.Column(dtype, nullable=True)})
        return schema

    mismatches = [
        model.__name__ for model in schemas._MODELS.values()
        if signature(model.to_schema()) != signature(pandera_build(model))
    ]
    for options in itertools.product(["records", "customer_records"],
                                     ["numpy_nullable", "pyarrow"],
                                     ["columns", "dict", "json", "drop"], ["metadata_", "m"]):
        if signature(schemas._schema(*options)) != signature(derived(*options)):
            mismatches.append(options)
    print(json.dumps(mismatches))
"""


def test_the_schemas_built_from_the_dtype_map_equal_pandera_builds_from_the_classes() -> None:
    # The classes' annotations stay the declaration; both fast builds must say the same.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SIGNATURES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
