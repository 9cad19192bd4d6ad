"""The walkthrough notebooks execute top to bottom without an error, and the committed .ipynb match their sources.

Each notebook runs in a fresh kernel through tools/build_notebooks.py (the same code that writes the committed
.ipynb), so a notebook that breaks when the library changes fails here. Needs the `notebooks` extra; skipped
with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def _build_tool():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _needs(*modules: str) -> None:
    for name in modules:
        pytest.importorskip(name, reason=f"the notebooks need {name}: pip install -e '.[notebooks]'")


def test_there_are_notebooks():
    assert len(SOURCES) >= 6, [p.name for p in SOURCES]


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_executes(source):
    _needs("jupytext", "nbclient", "ipykernel", "matplotlib")
    from nbclient.exceptions import CellExecutionError

    tool = _build_tool()
    try:
        nb, seconds = tool.execute(source, timeout=300)
    except CellExecutionError as err:  # the failing cell and its traceback, without the kernel's colour codes
        pytest.fail(f"{source.name} failed:\n{tool.plain(str(err))}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    print(f"{source.name}: {seconds:.1f} s")


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_committed_notebook_matches_its_source(source):
    """The .ipynb readers see on GitHub holds the same code as the .py source (rebuild with the tool if not)."""
    _needs("jupytext")
    import jupytext
    import nbformat

    target = source.with_suffix(".ipynb")
    assert target.is_file(), f"{target.name} is missing: run python tools/build_notebooks.py {source.stem}"
    want = [c.source for c in jupytext.read(source).cells]
    have = nbformat.read(target, as_version=4)
    assert [c.source for c in have.cells] == want, f"{target.name} is stale: python tools/build_notebooks.py"
    outputs = [o for c in have.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs, f"{target.name} has no outputs: it was not executed"
    assert not [o for o in outputs if o.output_type == "error"], f"{target.name} was saved with an error"
    assert target.stat().st_size < 1_500_000, f"{target.name} is {target.stat().st_size} bytes: shrink its figures"
