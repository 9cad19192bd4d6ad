"""The walkthrough notebooks execute top to bottom without an error, and the committed .ipynb match them.

Each notebook runs in a fresh kernel through tools/build_notebooks.py (the same code that writes the committed
.ipynb), so a notebook that breaks when the library changes fails here, and so does a committed notebook whose
text outputs differ from what the code prints now (stale outputs; timings, addresses and rounding noise aside).
The committed .ipynb must also hold the same code as its source. Needs the `notebooks` extra; skipped with the
reason otherwise.
"""

from __future__ import annotations

import copy
import importlib.util
import os
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
    reason = _why_outputs_may_differ()
    if reason:
        pytest.skip(f"executed without an error; outputs not compared: {reason}")
    import nbformat

    committed = source.with_suffix(".ipynb")
    stale = tool.stale_outputs(nb, nbformat.read(committed, as_version=4))
    assert not stale, (
        f"{committed.name} shows outputs the code no longer prints; rebuild it with "
        f"python tools/build_notebooks.py {source.stem}\n" + "\n".join(stale)
    )


def _why_outputs_may_differ() -> str | None:
    """Why this environment may legitimately print other outputs than the committed build, if it may."""
    if os.environ.get("GROUPVIT_WEIGHTS"):
        return "GROUPVIT_WEIGHTS selects other weights than the shipped ones"
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:  # notebooks 3 and 6 print their torch/transformers checks, or that they skipped them
        return f"the committed notebooks were built with {' and '.join(missing)} installed"
    return None


def _committed_notebooks():
    _needs("nbformat")
    import nbformat

    return [nbformat.read(p.with_suffix(".ipynb"), as_version=4) for p in SOURCES]


def test_output_normalisation_ignores_noise_only():
    """Addresses, timings and rounding-level floats are masked; every other change in a printed value shows."""
    tool = _build_tool()
    assert tool.normalise("<Figure at 0x7f3a2c1d>  took 1.25 s, err 8.9e-16") == tool.normalise(
        "<Figure at 0x55aa01>  took 3 ms, err 1.1e-13"
    )
    assert tool.normalise("difference 0.0e+00") == tool.normalise("difference 2.2e-16")
    assert tool.normalise("error 2.8e-07") != tool.normalise("error 3.1e-07")  # float32 sizes are not noise
    assert tool.normalise("cosine 0.93") != tool.normalise("cosine 0.94")
    assert tool.normalise("stage 1: 16 groups\x1b[0m  ") == "stage 1: 16 groups"


def test_staleness_check_sees_a_hand_edited_output():
    """A committed notebook equals itself, and no longer does after one printed number is edited by hand."""
    tool = _build_tool()
    for nb in _committed_notebooks():
        assert tool.stale_outputs(nb, nb) == []
    nb = next(nb for nb in _committed_notebooks() if any(_streams(nb)))
    edited = copy.deepcopy(nb)
    out = next(_streams(edited))
    out.text = out.text.replace("0", "1", 1) if "0" in out.text else out.text + "!"
    stale = tool.stale_outputs(nb, edited)
    assert len(stale) == 1 and "stdout" in stale[0], stale


def _streams(nb):
    return (o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("name") == "stdout")


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
