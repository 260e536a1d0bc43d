"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import importlib
import inspect
import types
from pathlib import Path

import impactframe as ifr

EXPECTED = [
    "APIError",
    "AuthenticationError",
    "CacheWarning",
    "Client",
    "CustomerRecordsSchema",
    "DailyImpactSchema",
    "DuplicateRecordWarning",
    "ExportResult",
    "ImpactFrameError",
    "ImpactFrameWarning",
    "PaginationError",
    "RateLimitError",
    "Reconciliation",
    "RecordsSchema",
    "SchemaDriftWarning",
    "TransportError",
    "ValidationError",
    "__version__",
    "aggregate",
    "export_parquet",
    "load_customer_records",
    "load_daily_impact",
    "load_impact",
    "load_records",
    "pseudonymize",
    "reconcile",
    "schemas",
]


def test_all_is_pinned_and_sorted() -> None:
    assert ifr.__all__ == EXPECTED
    assert ifr.__all__ == sorted(ifr.__all__, key=lambda name: (name[0].islower(), name))


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(ifr).items()
        if not name.startswith("_")
        and name != "annotations"  # from __future__
        and not (isinstance(value, types.ModuleType) and name not in ifr.__all__)
    }
    assert public | {"__version__"} == set(ifr.__all__)


def test_keywords_only_and_documented() -> None:
    names = ("load_records", "load_customer_records", "export_parquet", "pseudonymize")
    names += ("load_impact", "load_daily_impact", "reconcile")
    for name in names:
        func = getattr(ifr, name)
        params = list(inspect.signature(func).parameters.values())
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        expected = ([], ["path", "endpoint"], ["df"], ["records", "customer_records"])
        assert positional in expected, (name, positional)
        doc = inspect.getdoc(func) or ""
        assert "Parameters" in doc
        assert "Examples" in doc
    client_params = inspect.signature(ifr.Client).parameters
    assert [p.name for p in client_params.values() if p.kind is p.POSITIONAL_OR_KEYWORD] == [
        "api_key"
    ]


def test_loader_signatures_match_the_spec() -> None:
    expected = {
        "filter_by": None,
        "start_date": None,
        "end_date": None,
        "sort_order": "asc",
        "page_size": 1000,
        "max_records": None,
        "metadata": "columns",
        "cache": False,
        "refresh": False,
        "concurrency": "auto",
        "progress": None,
        "dtype_backend": "numpy_nullable",
        "client": None,
        "api_key": None,
        "base_url": None,
    }
    cases = ((ifr.load_records, {}), (ifr.load_customer_records, {"customer_email": None}))
    for func, extra in cases:
        defaults = {n: p.default for n, p in inspect.signature(func).parameters.items()}
        for name, default in {**expected, **extra}.items():
            assert defaults[name] == default, (func.__name__, name)


def test_typed_package() -> None:
    assert (Path(ifr.__file__).parent / "py.typed").exists()
    assert isinstance(ifr.__version__, str)
    assert ifr.__version__ != "0.0.0"


PUBLIC_MODULES = (
    "impactframe",
    "impactframe.aggregate",
    "impactframe.schemas",
    "impactframe.dask",
    "impactframe.plot",
    "impactframe.sandbox",
    "impactframe.errors",
    "impactframe.export",
    "impactframe.loaders",
    "impactframe.client",
    "impactframe.account",
)


def _public_callables() -> dict[str, object]:
    """Every public function, class and public method or property of the public modules."""
    found: dict[str, object] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj in found.values():
                continue
            found[f"{module_name}.{name}"] = obj
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for attr, value in vars(obj).items():
                    if not attr.startswith("_") and (
                        inspect.isfunction(value) or isinstance(value, property)
                    ):
                        found[f"{module_name}.{name}.{attr}"] = value
    return found


def test_every_public_callable_has_a_numpy_docstring_with_an_example() -> None:
    missing = []
    for name, obj in _public_callables().items():
        doc = inspect.getdoc(obj) or ""
        wanted = []
        if not isinstance(obj, property) and not (
            inspect.isclass(obj) and issubclass(obj, BaseException)
        ):
            wanted.append("Examples\n--------")
        if inspect.isfunction(obj):
            params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
            if params:
                wanted.append("Parameters\n----------")
        gaps = [section.split()[0] for section in wanted if section not in doc]
        if not doc or gaps:
            missing.append((name, gaps or ["docstring"]))
    assert len(_public_callables()) > 40  # the walk found the surface
    assert missing == []


def test_account_signatures_match_the_spec() -> None:
    connection = {"client": None, "api_key": None, "base_url": None}
    cases = (
        (ifr.load_impact, connection),
        (ifr.load_daily_impact, {"start_date": None, "end_date": None, **connection}),
        (
            ifr.reconcile,
            {"records": None, "customer_records": None, "start_date": None, "end_date": None}
            | connection,
        ),
    )
    for func, expected in cases:
        defaults = {n: p.default for n, p in inspect.signature(func).parameters.items()}
        assert defaults == expected, func.__name__
