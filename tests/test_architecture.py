"""The package's shape, as README "How it is built" describes it (issue "One pipeline").

The import-linter contract itself runs in ``make test`` (``lint-imports``); these tests keep
the README's map true: every module it names exists, the package root stays small, and no
import hides inside a function except an optional extra's.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import impactframe as ifr
import impactframe.dask as ifr_dask
from impactframe._constants import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "impactframe"
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## How it is built", 1)[1].split("\n## ", 1)[0]
#: Imported only where used: optional extras, platform modules and slow-to-import helpers.
LAZY = {
    "dask", "distributed", "matplotlib", "pyspark", "polars", "tqdm", "platformdirs",
    "fcntl", "msvcrt", "ctypes", "pandas.tseries", "IPython", "ipywidgets",
}  # fmt: skip


def _named_modules() -> set[Path]:
    """Files the section names: ``pkg/`` folders, ``pkg/_x.py`` paths and bare ``_x.py`` names
    under the last folder named before them."""
    named: set[Path] = set()
    folder = PACKAGE
    for token in re.findall(r"`([\w/]+(?:\.py)?)`", SECTION):
        token = token.removeprefix("impactframe/")
        if token.endswith("/"):
            folder = PACKAGE / token.rstrip("/")
            named.add(folder)
        elif token.endswith(".py"):
            path = PACKAGE / token if "/" in token else folder / token
            if not path.exists() and "/" not in token:
                path = PACKAGE / token  # a root module named inside a folder's paragraph
            named.add(path)
    return named


def test_every_module_the_readme_names_exists() -> None:
    named = _named_modules()
    assert len(named) >= 30  # the map names the layers' modules, not just a few
    missing = sorted(str(p.relative_to(ROOT)) for p in named if not p.exists())
    assert missing == []


def test_every_subpackage_is_on_the_map() -> None:
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    for folder in folders:
        assert f"`{folder}/`" in SECTION, folder


def test_the_package_root_holds_at_most_20_modules() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 20, root


def _function_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    module = "." * inner.level + (inner.module or "")
                    found.append((inner.lineno, module))
    return found


def _lazy(module: str) -> bool:
    return any(module == lazy or module.startswith(lazy + ".") for lazy in LAZY)


def test_no_import_inside_a_function_but_an_optional_one() -> None:
    hidden = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in PACKAGE.rglob("*.py")
        for line, module in _function_imports(path)
        if not _lazy(module)
    ]
    assert hidden == []


def test_arguments_are_passed_by_name_and_docstrings_filled_by_fill_doc() -> None:
    # Issue 11 point 5: `**locals()` breaks silently when a local is added, and docstrings
    # patched after the fact by ``str.replace`` drift; `_prepare.fill_doc` is the one way.
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "**locals()" in line or re.search(r"__doc__.*\.replace\(", line)
    ]
    assert found == []


def test_public_defaults_are_the_one_mapping() -> None:
    functions = (
        ifr.load_records,
        ifr.load_customer_records,
        ifr.export_parquet,
        ifr_dask.read_records,
        ifr_dask.read_customer_records,
    )
    for func in functions:
        for name, parameter in inspect.signature(func).parameters.items():
            if name in DEFAULTS:
                assert parameter.default == DEFAULTS[name], (func.__name__, name)
