"""notebooks/quickstart.ipynb runs top to bottom against the sandbox (SPEC §11).

The notebook is executed with nbclient on the ``python3`` kernel, in a temporary working
folder. jupyter_client starts a kernelspec whose command is ``python`` with ``sys.executable``,
so the kernel is this test's interpreter; ``PYTHONPATH`` puts the source tree under test first,
whatever way the package is installed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _text(output: dict[str, object]) -> str:
    """Everything readable in one cell output: stream text, text/plain and text/html."""
    if output.get("output_type") == "stream":
        return str(output.get("text", ""))
    data = output.get("data", {})
    assert isinstance(data, dict)
    return "".join(str(data.get(kind, "")) for kind in ("text/plain", "text/html"))


def test_committed_notebook_has_no_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.timeout(120)
def test_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for name in ("IMPACTFRAME_API_KEY", "IMPACTFRAME_BASE_URL", "IMPACTFRAME_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # One more cell, in memory only: which interpreter and which impactframe ran.
    probe = "import sys, impactframe\nprint(sys.executable); print(impactframe.__file__)"
    notebook.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=90,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    *cells, probe_cell = [cell for cell in notebook.cells if cell.cell_type == "code"]
    executable, package = probe_cell.outputs[0]["text"].split()
    assert Path(executable) == Path(sys.executable)
    assert Path(package) == ROOT / "impactframe" / "__init__.py"
    outputs = [[output for output in cell.outputs] for cell in cells]
    text = ["".join(_text(output) for output in cell) for cell in outputs]
    assert all(output.get("output_type") != "error" for cell in outputs for output in cell)
    # No warnings or tracebacks on stderr anywhere.
    stderr = [o for cell in outputs for o in cell if o.get("name") == "stderr"]
    assert stderr == []

    def cell_with(snippet: str) -> int:
        matches = [i for i, cell in enumerate(cells) if snippet in cell.source]
        assert len(matches) == 1, snippet
        return matches[0]

    assert (
        "3,000 records and 2,000 customer records"
        in text[cell_with("cdf = ifr.load_customer_records(")]
    )
    dtypes = text[cell_with("df.dtypes")]
    assert "datetime64[ms, UTC]" in dtypes
    assert "Int64" in dtypes
    assert "category" in dtypes
    assert "trees planted in 2024" in text[cell_with('filter_by="tree_planted"')]
    assert "money_donated" in text[cell_with('summarize("MS")')]
    assert "donated: $" in text[cell_with("totals()")]
    plot_outputs = outputs[cell_with("impact.plot(")]
    assert any("image/png" in o.get("data", {}) for o in plot_outputs)
    assert "@" in text[cell_with("top_customers(n=5)")]
    # Money is labelled: cents and dollars, never a bare amount column.
    money = text[cell_with('impact_type="money_donated"')]
    assert "amount_cents" in money
    assert "amount_usd" in money
    assert "(3000, " in text[cell_with("export_parquet(")]
    # What the notebook wrote went to its temporary folder, which it removes at the end;
    # nothing lands in the working folder (the repository, when run from notebooks/).
    written = Path(text[cell_with("tempfile.mkdtemp(")].split("writing to ", 1)[1].split()[0])
    assert written.name.startswith("impactframe-quickstart-")
    assert "['impact_by_quarter.png', 'records_dataset']" in text[cell_with("shutil.rmtree(")]
    assert not written.exists()
    assert list(tmp_path.iterdir()) == []
